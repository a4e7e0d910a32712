//! Validation and defaulting as Kubernetes does them for the kinds served
//! here (the subset that exists so far): names, required fields, and the
//! pod and deployment defaults clients rely on.

use serde_json::{json, Map, Value};

use crate::error::{Cause, Error, Result};
use crate::resources::Resource;

const LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const PATH_SEGMENT_MSG: &str = "may not be '.' or '..' and may not contain '/' or '%'";
pub(super) const DNS1035_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character (e.g. 'my-name',  or 'abc-123', regex used for validation is '[a-z]([-a-z0-9]*[a-z0-9])?')";

/// DNS-1123 label: `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
pub fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// DNS-1123 subdomain: dot-separated labels, at most 253 characters.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

/// DNS-1035 label: a DNS-1123 label that starts with a letter.
pub fn is_dns1035_label(s: &str) -> bool {
    is_dns1123_label(s) && s.as_bytes()[0].is_ascii_lowercase()
}

fn invalid(field: &str, value: &str, msg: &str) -> Cause {
    Cause {
        field: field.into(),
        reason: "FieldValueInvalid",
        message: format!("Invalid value: \"{value}\": {msg}"),
    }
}

fn required(field: &str) -> Cause {
    Cause {
        field: field.into(),
        reason: "FieldValueRequired",
        message: "Required value".into(),
    }
}

/// Validates `obj` (already carrying its final name); 422 Invalid with every
/// cause found.
pub fn validate(r: &'static Resource, obj: &Value, name: &str) -> Result<()> {
    validate_change(r, obj, name, None)
}

/// [`validate`] for a create (`old` None) or an update of `old`, for the
/// kinds whose rules differ between the two (Events through events.k8s.io).
pub fn validate_change(
    r: &'static Resource,
    obj: &Value,
    name: &str,
    old: Option<&Value>,
) -> Result<()> {
    let mut causes = Vec::new();
    let (ok, msg) = match r.name {
        "namespaces" => (is_dns1123_label(name), LABEL_MSG),
        "services" => (is_dns1035_label(name), DNS1035_MSG),
        // RBAC names are path segments (`system:kube-scheduler`).
        "roles" | "rolebindings" | "clusterroles" | "clusterrolebindings" => (
            !name.is_empty()
                && name != "."
                && name != ".."
                && !name.contains('/')
                && !name.contains('%'),
            PATH_SEGMENT_MSG,
        ),
        _ => (is_dns1123_subdomain(name), SUBDOMAIN_MSG),
    };
    if !ok {
        causes.push(invalid("metadata.name", name, msg));
    }
    if let Some(labels) = obj["metadata"]["labels"].as_object() {
        for (k, v) in labels {
            if !v.is_string() {
                causes.push(invalid(
                    &format!("metadata.labels.{k}"),
                    &v.to_string(),
                    "must be a string",
                ));
            }
        }
    }
    match r.name {
        "pods" => validate_pod_spec(&obj["spec"], "spec", &mut causes),
        "deployments" | "replicasets" => validate_deployment(obj, &mut causes),
        "jobs" => super::jobs::validate(obj, &mut causes),
        "endpointslices" => super::endpointslices::validate(obj, old, &mut causes),
        "cronjobs" => super::cronjobs::validate(obj, old, &mut causes),
        "statefulsets" => super::statefulsets::validate(obj, &mut causes),
        "poddisruptionbudgets" => super::pdbs::validate(obj, &mut causes),
        "controllerrevisions" => super::controllerrevisions::validate(obj, &mut causes),
        "daemonsets" => super::daemonsets::validate(obj, &mut causes),
        "events" => super::events::validate(r, obj, old, &mut causes),
        "secrets" => super::secrets::validate(obj, old, &mut causes),
        "services" => {
            let ports = &obj["spec"]["ports"];
            let headless = obj["spec"]["clusterIP"] == "None";
            let external = obj["spec"]["type"] == "ExternalName";
            if !headless && !external && ports.as_array().is_none_or(|p| p.is_empty()) {
                causes.push(required("spec.ports"));
            }
            super::services::validate(obj, &mut causes);
            if let Some(old) = old {
                super::services::validate_update(old, obj, &mut causes);
            }
        }
        "roles" | "clusterroles" => validate_rules(obj, r.name == "roles", &mut causes),
        "rolebindings" | "clusterrolebindings" => {
            validate_binding(obj, r.name == "clusterrolebindings", &mut causes)
        }
        _ => {}
    }
    if causes.is_empty() {
        Ok(())
    } else {
        Err(Error::Invalid {
            group: r.group,
            kind: r.kind,
            name: name.to_string(),
            causes,
        })
    }
}

/// A Role's or ClusterRole's rules: verbs, and either resources with API
/// groups or (ClusterRoles only) non-resource URLs.
fn validate_rules(obj: &Value, namespaced: bool, causes: &mut Vec<Cause>) {
    let Some(rules) = obj["rules"].as_array() else {
        return;
    };
    let non_empty = |v: &Value| v.as_array().is_some_and(|a| !a.is_empty());
    for (i, rule) in rules.iter().enumerate() {
        let at = format!("rules[{i}]");
        if !non_empty(&rule["verbs"]) {
            causes.push(required(&format!("{at}.verbs")));
        }
        let urls = non_empty(&rule["nonResourceURLs"]);
        if urls && namespaced {
            causes.push(invalid(
                &format!("{at}.nonResourceURLs"),
                &rule["nonResourceURLs"].to_string(),
                "namespaced rules cannot apply to non-resource URLs",
            ));
        }
        if urls && (non_empty(&rule["resources"]) || non_empty(&rule["apiGroups"])) {
            causes.push(invalid(
                &format!("{at}.nonResourceURLs"),
                &rule["nonResourceURLs"].to_string(),
                "rules cannot apply to both regular resources and non-resource URLs",
            ));
        }
        if !urls {
            if !non_empty(&rule["apiGroups"]) {
                causes.push(required(&format!("{at}.apiGroups")));
            }
            if !non_empty(&rule["resources"]) {
                causes.push(required(&format!("{at}.resources")));
            }
        }
    }
}

/// A RoleBinding's or ClusterRoleBinding's roleRef and subjects.
fn validate_binding(obj: &Value, cluster: bool, causes: &mut Vec<Cause>) {
    let role_ref = &obj["roleRef"];
    let kind = role_ref["kind"].as_str().unwrap_or_default();
    let allowed: &[&str] = if cluster {
        &["ClusterRole"]
    } else {
        &["Role", "ClusterRole"]
    };
    if !allowed.contains(&kind) {
        causes.push(Cause {
            field: "roleRef.kind".into(),
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: \"{kind}\": supported values: {}",
                allowed
                    .iter()
                    .map(|k| format!("\"{k}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    if role_ref["name"].as_str().is_none_or(str::is_empty) {
        causes.push(required("roleRef.name"));
    }
    if role_ref["apiGroup"] != "rbac.authorization.k8s.io" {
        causes.push(Cause {
            field: "roleRef.apiGroup".into(),
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: {}: supported values: \"rbac.authorization.k8s.io\"",
                role_ref["apiGroup"]
            ),
        });
    }
    for (i, s) in obj["subjects"].as_array().into_iter().flatten().enumerate() {
        let kind = s["kind"].as_str().unwrap_or_default();
        if !["User", "Group", "ServiceAccount"].contains(&kind) {
            causes.push(Cause {
                field: format!("subjects[{i}].kind"),
                reason: "FieldValueNotSupported",
                message: format!("Unsupported value: \"{kind}\": supported values: \"ServiceAccount\", \"User\", \"Group\""),
            });
        }
        if s["name"].as_str().is_none_or(str::is_empty) {
            causes.push(required(&format!("subjects[{i}].name")));
        }
    }
}

/// `Invalid value: <n>: <msg>` at `field` unless the integer there (if
/// any) is within `min..=max`. A value of the wrong type never gets here:
/// the typed check refused it first.
fn check_range(v: &Value, field: &str, min: i64, max: i64, causes: &mut Vec<Cause>) {
    let Some(n) = v.as_i64() else {
        return;
    };
    if n < min || n > max {
        let msg = if max == i64::MAX {
            format!("must be greater than or equal to {min}")
        } else {
            format!("must be between {min} and {max}, inclusive")
        };
        causes.push(Cause {
            field: field.into(),
            reason: "FieldValueInvalid",
            message: format!("Invalid value: {n}: {msg}"),
        });
    }
}

pub(super) fn validate_pod_spec(spec: &Value, at: &str, causes: &mut Vec<Cause>) {
    check_range(
        &spec["terminationGracePeriodSeconds"],
        &format!("{at}.terminationGracePeriodSeconds"),
        0,
        i64::MAX,
        causes,
    );
    check_range(
        &spec["activeDeadlineSeconds"],
        &format!("{at}.activeDeadlineSeconds"),
        1,
        i64::from(i32::MAX),
        causes,
    );
    validate_scheduling(spec, at, causes);
    validate_dns(spec, at, causes);
    // Init containers first, as Kubernetes; names are DNS-1123 labels (a
    // kubelet turns them into paths) and unique across both lists.
    let mut seen = std::collections::HashSet::new();
    if let Some(init) = spec["initContainers"].as_array() {
        validate_containers(init, &format!("{at}.initContainers"), &mut seen, causes);
        validate_init_only(init, &format!("{at}.initContainers"), causes);
    }
    let containers = spec["containers"].as_array().filter(|c| !c.is_empty());
    let Some(containers) = containers else {
        causes.push(required(&format!("{at}.containers")));
        return;
    };
    validate_containers(containers, &format!("{at}.containers"), &mut seen, causes);
    for (i, c) in containers.iter().enumerate() {
        if !c["restartPolicy"].is_null() {
            causes.push(forbidden(
                &format!("{at}.containers[{i}].restartPolicy"),
                "may not be set for non-init containers",
            ));
        }
    }
}

/// What the scheduler reads besides selectors, as Kubernetes'
/// `validateAffinity` and `validateTopologySpreadConstraints` check it:
/// preferred terms weigh 1–100, pod affinity terms name a topology key, and
/// each spread constraint has a positive `maxSkew`, a topology key, a known
/// `whenUnsatisfiable`, `minDomains` only positive and with
/// `DoNotSchedule`, and no other constraint with the same key and action.
fn validate_scheduling(spec: &Value, at: &str, causes: &mut Vec<Cause>) {
    let weight = |term: &Value, field: String, causes: &mut Vec<Cause>| {
        let w = term["weight"].as_i64().unwrap_or(0);
        if !(1..=100).contains(&w) {
            causes.push(Cause {
                field,
                reason: "FieldValueInvalid",
                message: format!("Invalid value: {w}: must be in the range 1-100"),
            });
        }
    };
    let topology_key = |term: &Value, field: String, causes: &mut Vec<Cause>| {
        if term["topologyKey"].as_str().is_none_or(str::is_empty) {
            causes.push(Cause {
                field,
                reason: "FieldValueRequired",
                message: "Required value: can not be empty".into(),
            });
        }
    };
    let affinity = &spec["affinity"];
    let preferred = "preferredDuringSchedulingIgnoredDuringExecution";
    let required = "requiredDuringSchedulingIgnoredDuringExecution";
    let node = format!("{at}.affinity.nodeAffinity.{preferred}");
    for (i, t) in affinity["nodeAffinity"][preferred]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        weight(t, format!("{node}[{i}].weight"), causes);
    }
    for kind in ["podAffinity", "podAntiAffinity"] {
        let path = format!("{at}.affinity.{kind}");
        for (i, t) in affinity[kind][required]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            topology_key(t, format!("{path}.{required}[{i}].topologyKey"), causes);
        }
        for (i, t) in affinity[kind][preferred]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let term = format!("{path}.{preferred}[{i}]");
            weight(t, format!("{term}.weight"), causes);
            topology_key(
                &t["podAffinityTerm"],
                format!("{term}.podAffinityTerm.topologyKey"),
                causes,
            );
        }
    }
    let constraints = spec["topologySpreadConstraints"].as_array();
    let constraints = constraints.map(Vec::as_slice).unwrap_or_default();
    for (i, c) in constraints.iter().enumerate() {
        let field = format!("{at}.topologySpreadConstraints[{i}]");
        let max_skew = c["maxSkew"].as_i64().unwrap_or(0);
        if max_skew <= 0 {
            causes.push(Cause {
                field: format!("{field}.maxSkew"),
                reason: "FieldValueInvalid",
                message: format!("Invalid value: {max_skew}: must be greater than zero"),
            });
        }
        topology_key(c, format!("{field}.topologyKey"), causes);
        let action = c["whenUnsatisfiable"].as_str().unwrap_or_default();
        if action != "DoNotSchedule" && action != "ScheduleAnyway" {
            causes.push(Cause {
                field: format!("{field}.whenUnsatisfiable"),
                reason: "FieldValueNotSupported",
                message: format!(
                    "Unsupported value: \"{action}\": supported values: \"DoNotSchedule\", \"ScheduleAnyway\""
                ),
            });
        }
        let key = c["topologyKey"].as_str().unwrap_or_default();
        let repeated = constraints[i + 1..].iter().any(|o| {
            o["topologyKey"].as_str().unwrap_or_default() == key
                && o["whenUnsatisfiable"].as_str().unwrap_or_default() == action
        });
        if repeated {
            causes.push(Cause {
                field: format!("{field}.{{topologyKey, whenUnsatisfiable}}"),
                reason: "FieldValueDuplicate",
                message: format!("Duplicate value: \"{{{key}, {action}}}\""),
            });
        }
        if let Some(min) = c["minDomains"].as_i64() {
            let mut invalid_min = |msg: String| {
                causes.push(Cause {
                    field: format!("{field}.minDomains"),
                    reason: "FieldValueInvalid",
                    message: format!("Invalid value: {min}: {msg}"),
                })
            };
            if min <= 0 {
                invalid_min("must be greater than zero".into());
            }
            if action != "DoNotSchedule" {
                invalid_min(format!(
                    "can only use minDomains if whenUnsatisfiable=DoNotSchedule, not {action}"
                ));
            }
        }
    }
}

/// The resolver limits of Kubernetes' pod validation (glibc's).
const MAX_DNS_NAMESERVERS: usize = 3;
const MAX_DNS_SEARCH_PATHS: usize = 32;
const MAX_DNS_SEARCH_LIST_CHARS: usize = 2048;
const IP_MSG: &str = "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)";

/// What the kubelet writes into a pod's resolv.conf and /etc/hosts, checked
/// as Kubernetes' `validateDNSPolicy`, `validatePodDNSConfig` and
/// `validateHostAliases` do, with `hostname` and `subdomain` as DNS-1123
/// labels: nothing a user gives can add a line to either file.
fn validate_dns(spec: &Value, at: &str, causes: &mut Vec<Cause>) {
    const POLICIES: [&str; 4] = ["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
    let policy = spec["dnsPolicy"].as_str();
    if let Some(p) = policy.filter(|p| !POLICIES.contains(p)) {
        causes.push(Cause {
            field: format!("{at}.dnsPolicy"),
            reason: "FieldValueNotSupported",
            message: format!(
                "Unsupported value: {p:?}: supported values: {}",
                POLICIES.map(|v| format!("{v:?}")).join(", ")
            ),
        });
    }
    let config = &spec["dnsConfig"];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .map(|a| {
                a.iter()
                    .map(|s| s.as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    };
    let go_list = |v: &[String]| {
        let quoted: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
        format!("[]string{{{}}}", quoted.join(", "))
    };
    let nameservers = strings(&config["nameservers"]);
    if policy == Some("None") {
        let missing = if config.is_null() {
            Some((
                format!("{at}.dnsConfig"),
                "must provide `dnsConfig` when `dnsPolicy` is None",
            ))
        } else if nameservers.is_empty() {
            Some((
                format!("{at}.dnsConfig.nameservers"),
                "must provide at least one DNS nameserver when `dnsPolicy` is None",
            ))
        } else {
            None
        };
        if let Some((field, detail)) = missing {
            causes.push(Cause {
                field,
                reason: "FieldValueRequired",
                message: format!("Required value: {detail}"),
            });
            return;
        }
    }
    let cfg = format!("{at}.dnsConfig");
    if nameservers.len() > MAX_DNS_NAMESERVERS {
        causes.push(invalid(
            &format!("{cfg}.nameservers"),
            &go_list(&nameservers),
            &format!("must not have more than {MAX_DNS_NAMESERVERS} nameservers"),
        ));
    }
    for (i, ns) in nameservers.iter().enumerate() {
        if ns.parse::<std::net::IpAddr>().is_err() {
            causes.push(invalid(&format!("{cfg}.nameservers[{i}]"), ns, IP_MSG));
        }
    }
    let searches = strings(&config["searches"]);
    if searches.len() > MAX_DNS_SEARCH_PATHS {
        causes.push(invalid(
            &format!("{cfg}.searches"),
            &go_list(&searches),
            &format!("must not have more than {MAX_DNS_SEARCH_PATHS} search paths"),
        ));
    }
    if searches.join(" ").len() > MAX_DNS_SEARCH_LIST_CHARS {
        causes.push(invalid(
            &format!("{cfg}.searches"),
            &go_list(&searches),
            &format!(
                "must not have more than {MAX_DNS_SEARCH_LIST_CHARS} characters (including spaces) in the search list"
            ),
        ));
    }
    for (i, search) in searches.iter().enumerate() {
        // A trailing dot is fine; "." alone is the root domain.
        let name = search.strip_suffix('.').unwrap_or(search);
        if search != "." && !is_dns1123_subdomain(name) {
            causes.push(invalid(
                &format!("{cfg}.searches[{i}]"),
                name,
                SUBDOMAIN_MSG,
            ));
        }
    }
    if let Some(options) = config["options"].as_array() {
        for (i, o) in options.iter().enumerate() {
            if o["name"].as_str().unwrap_or_default().is_empty() {
                causes.push(Cause {
                    field: format!("{cfg}.options[{i}]"),
                    reason: "FieldValueRequired",
                    message: "Required value: must not be empty".into(),
                });
            }
        }
    }
    for key in ["hostname", "subdomain"] {
        if let Some(name) = spec[key].as_str().filter(|n| !n.is_empty()) {
            if !is_dns1123_label(name) {
                causes.push(invalid(&format!("{at}.{key}"), name, LABEL_MSG));
            }
        }
    }
    if let Some(aliases) = spec["hostAliases"].as_array() {
        for (i, alias) in aliases.iter().enumerate() {
            let ip = alias["ip"].as_str().unwrap_or_default();
            if ip.parse::<std::net::IpAddr>().is_err() {
                causes.push(invalid(&format!("{at}.hostAliases[{i}].ip"), ip, IP_MSG));
            }
            for (j, host) in strings(&alias["hostnames"]).iter().enumerate() {
                if !is_dns1123_subdomain(host) {
                    causes.push(invalid(
                        &format!("{at}.hostAliases[{i}].hostnames[{j}]"),
                        host,
                        SUBDOMAIN_MSG,
                    ));
                }
            }
        }
    }
}

fn forbidden(field: &str, msg: &str) -> Cause {
    Cause {
        field: field.into(),
        reason: "FieldValueForbidden",
        message: format!("Forbidden: {msg}"),
    }
}

/// Kubernetes' init-container rules: `restartPolicy` is `Always` (a
/// native sidecar) or unset; only a sidecar may have lifecycle hooks and
/// probes, as the kubelet would never run them on an init container.
fn validate_init_only(init: &[Value], at: &str, causes: &mut Vec<Cause>) {
    for (i, c) in init.iter().enumerate() {
        let field = format!("{at}[{i}]");
        let sidecar = match &c["restartPolicy"] {
            Value::Null => false,
            Value::String(p) if p == "Always" => true,
            other => {
                let shown = other
                    .as_str()
                    .map_or(other.to_string(), |p| format!("\"{p}\""));
                causes.push(Cause {
                    field: format!("{field}.restartPolicy"),
                    reason: "FieldValueNotSupported",
                    message: format!("Unsupported value: {shown}: supported values: \"Always\""),
                });
                false
            }
        };
        if sidecar {
            continue;
        }
        for key in [
            "lifecycle",
            "livenessProbe",
            "readinessProbe",
            "startupProbe",
        ] {
            if !c[key].is_null() {
                causes.push(forbidden(
                    &format!("{field}.{key}"),
                    "may not be set for init containers without restartPolicy=Always",
                ));
            }
        }
    }
}

fn validate_containers<'a>(
    containers: &'a [Value],
    at: &str,
    seen: &mut std::collections::HashSet<&'a str>,
    causes: &mut Vec<Cause>,
) {
    for (i, c) in containers.iter().enumerate() {
        let field = format!("{at}[{i}]");
        match c["name"].as_str() {
            None | Some("") => causes.push(required(&format!("{field}.name"))),
            Some(n) if !is_dns1123_label(n) => {
                causes.push(invalid(&format!("{field}.name"), n, LABEL_MSG))
            }
            Some(n) if !seen.insert(n) => causes.push(Cause {
                field: format!("{field}.name"),
                reason: "FieldValueDuplicate",
                message: format!("Duplicate value: \"{n}\""),
            }),
            _ => {}
        }
        if c["image"].as_str().is_none_or(str::is_empty) {
            causes.push(required(&format!("{field}.image")));
        }
    }
}

fn validate_deployment(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    for field in ["replicas", "minReadySeconds", "revisionHistoryLimit"] {
        check_range(&spec[field], &format!("spec.{field}"), 0, i64::MAX, causes);
    }
    let Some(match_labels) = spec["selector"]["matchLabels"].as_object() else {
        causes.push(required("spec.selector"));
        return;
    };
    let template_labels = spec["template"]["metadata"]["labels"].as_object();
    let selected = match_labels
        .iter()
        .all(|(k, v)| template_labels.is_some_and(|t| t.get(k) == Some(v)));
    if !selected || match_labels.is_empty() {
        causes.push(Cause {
            field: "spec.template.metadata.labels".into(),
            reason: "FieldValueInvalid",
            message: "Invalid value: `selector` does not match template `labels`".into(),
        });
    }
    validate_pod_spec(&spec["template"]["spec"], "spec.template.spec", causes);
}

/// Fills the defaults Kubernetes fills for `obj`'s kind, never overwriting
/// what is set and leaving alone a field of the wrong type (the typed
/// check in `schema` refuses the object afterwards).
pub fn default(r: &'static Resource, obj: &mut Value) {
    match r.name {
        "secrets" => super::secrets::default(obj),
        "namespaces" => {
            // Every namespace carries its name as a label (kube-apiserver's
            // defaulting since 1.21), so selectors can pick namespaces by name.
            if let Some(name) = obj["metadata"]["name"].as_str().map(str::to_string) {
                set_default(
                    obj,
                    &["metadata", "labels", "kubernetes.io/metadata.name"],
                    json!(name),
                );
                if let Some(labels) = obj
                    .get_mut("metadata")
                    .and_then(|m| m.get_mut("labels"))
                    .and_then(Value::as_object_mut)
                {
                    labels.insert("kubernetes.io/metadata.name".into(), json!(name));
                }
            }
            set_default(obj, &["spec", "finalizers"], json!(["kubernetes"]));
            set_default(obj, &["status", "phase"], json!("Active"));
        }
        "pods" => {
            default_pod_spec(obj.get_mut("spec"));
            if let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) {
                default_requests_from_limits(spec);
            }
            set_default(obj, &["status", "phase"], json!("Pending"));
            // Computed from the spec on every write, so it never changes.
            let qos = pod_qos_class(&obj["spec"]);
            if let Some(status) = obj.get_mut("status").and_then(Value::as_object_mut) {
                status.insert("qosClass".into(), json!(qos));
            }
        }
        "services" => {
            set_default(obj, &["spec", "type"], json!("ClusterIP"));
            set_default(obj, &["spec", "sessionAffinity"], json!("None"));
            let ports = obj.get_mut("spec").and_then(|s| s.get_mut("ports"));
            if let Some(ports) = ports.and_then(Value::as_array_mut) {
                for p in ports.iter_mut().filter(|p| p.is_object()) {
                    set_default(p, &["protocol"], json!("TCP"));
                    if p.get("targetPort").is_none() {
                        p["targetPort"] = p["port"].clone();
                    }
                }
            }
            super::services::default(obj);
        }
        "jobs" => super::jobs::default(obj),
        "daemonsets" => super::daemonsets::default(obj),
        "endpointslices" => super::endpointslices::default(obj),
        "cronjobs" => super::cronjobs::default(obj),
        "statefulsets" => super::statefulsets::default(obj),
        "poddisruptionbudgets" => super::pdbs::default(obj),
        "replicasets" => {
            set_default(obj, &["spec", "replicas"], json!(1));
            if let Some(t) = obj.get_mut("spec").and_then(|s| s.get_mut("template")) {
                default_pod_spec(t.get_mut("spec"));
            }
        }
        "deployments" => {
            set_default(obj, &["spec", "replicas"], json!(1));
            set_default(obj, &["spec", "revisionHistoryLimit"], json!(10));
            set_default(obj, &["spec", "progressDeadlineSeconds"], json!(600));
            set_default(
                obj,
                &["spec", "strategy"],
                json!({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}),
            );
            if let Some(t) = obj.get_mut("spec").and_then(|s| s.get_mut("template")) {
                default_pod_spec(t.get_mut("spec"));
            }
        }
        _ => {}
    }
}

pub(super) fn default_pod_spec(spec: Option<&mut Value>) {
    let Some(spec) = spec.filter(|s| s.is_object()) else {
        return;
    };
    set_default(spec, &["restartPolicy"], json!("Always"));
    set_default(spec, &["terminationGracePeriodSeconds"], json!(30));
    set_default(spec, &["dnsPolicy"], json!("ClusterFirst"));
    set_default(spec, &["schedulerName"], json!("default-scheduler"));
    set_default(spec, &["securityContext"], json!({}));
    if let Some(containers) = spec.get_mut("containers").and_then(Value::as_array_mut) {
        for c in containers.iter_mut().filter(|c| c.is_object()) {
            let image = c["image"].as_str().unwrap_or_default();
            let tag = image.rsplit('/').next().unwrap_or_default();
            let latest = !image.contains('@') && (!tag.contains(':') || tag.ends_with(":latest"));
            let policy = if latest { "Always" } else { "IfNotPresent" };
            set_default(c, &["imagePullPolicy"], json!(policy));
            set_default(
                c,
                &["terminationMessagePath"],
                json!("/dev/termination-log"),
            );
            set_default(c, &["terminationMessagePolicy"], json!("File"));
            set_default(c, &["resources"], json!({}));
        }
    }
}

/// A pod's containers' `resources.limits` stand for their unset
/// `resources.requests` (Kubernetes' pod defaulting).
fn default_requests_from_limits(spec: &mut Value) {
    for list in ["initContainers", "containers"] {
        let Some(containers) = spec.get_mut(list).and_then(Value::as_array_mut) else {
            continue;
        };
        for c in containers.iter_mut() {
            let limits = c.pointer("/resources/limits").and_then(Value::as_object);
            for (name, q) in limits.cloned().unwrap_or_default() {
                set_default(c, &["resources", "requests", &name], q);
            }
        }
    }
}

/// `status.qosClass` as Kubernetes computes it (`GetPodQOS`) from the cpu
/// and memory requests and limits of all containers, init containers
/// included: none anywhere is BestEffort; limits on both for every
/// container, and requests summing to the limits, is Guaranteed; anything
/// else Burstable.
fn pod_qos_class(spec: &Value) -> &'static str {
    let (mut requests, mut limits) = ([None::<i128>; 2], [None::<i128>; 2]);
    let mut guaranteed = true;
    let containers = ["containers", "initContainers"]
        .iter()
        .filter_map(|l| spec[*l].as_array())
        .flatten();
    for c in containers {
        for (i, name) in ["cpu", "memory"].iter().enumerate() {
            let request = c["resources"]["requests"][name]
                .as_str()
                .and_then(milli_value);
            if let Some(v) = request.filter(|v| *v > 0) {
                requests[i] = Some(requests[i].unwrap_or(0).saturating_add(v));
            }
            match c["resources"]["limits"][name]
                .as_str()
                .and_then(milli_value)
            {
                Some(v) if v > 0 => limits[i] = Some(limits[i].unwrap_or(0).saturating_add(v)),
                _ => guaranteed = false,
            }
        }
    }
    if requests == [None, None] && limits == [None, None] {
        "BestEffort"
    } else if guaranteed && requests == limits {
        "Guaranteed"
    } else {
        "Burstable"
    }
}

/// A quantity (`250m`, `1.5`, `64Mi`, `1e3`) in thousandths, rounded up;
/// `None` when it is not one.
fn milli_value(q: &str) -> Option<i128> {
    let number_end = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(number_end);
    let (exp10, exp2): (i32, u32) = match suffix {
        "" => (0, 0),
        "n" => (-9, 0),
        "u" => (-6, 0),
        "m" => (-3, 0),
        "k" => (3, 0),
        "M" => (6, 0),
        "G" => (9, 0),
        "T" => (12, 0),
        "P" => (15, 0),
        "E" => (18, 0),
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
            let power = "KMGTPE".find(&suffix[..1])? as u32 + 1;
            (0, 10 * power)
        }
        _ => (
            suffix
                .strip_prefix(['e', 'E'])?
                .parse::<i32>()
                .ok()?
                .clamp(-40, 40),
            0,
        ),
    };
    let (negative, digits) = match number.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, number.strip_prefix('+').unwrap_or(number)),
    };
    let (whole, fraction) = digits.split_once('.').unwrap_or((digits, ""));
    if (whole.is_empty() && fraction.is_empty())
        || !whole
            .bytes()
            .chain(fraction.bytes())
            .all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let digits = format!("{whole}{fraction}");
    let mantissa: i128 = digits.trim_start_matches('0').parse().unwrap_or(0);
    let scale = exp10 + 3 - fraction.len() as i32;
    let scaled = mantissa.checked_mul(1i128.checked_shl(exp2)?)?;
    let value = if scale >= 0 {
        scaled.checked_mul(10i128.checked_pow(scale as u32)?)?
    } else {
        let divisor = 10i128
            .checked_pow(scale.unsigned_abs())
            .unwrap_or(i128::MAX);
        (scaled + divisor - 1) / divisor
    };
    Some(if negative { -value } else { value })
}

/// Sets `path` in `obj` to `value` unless something is there already.
pub(super) fn set_default(obj: &mut Value, path: &[&str], value: Value) {
    let mut cur = obj;
    for (i, p) in path.iter().enumerate() {
        if !cur.is_object() {
            if !cur.is_null() {
                return;
            }
            *cur = Value::Object(Map::new());
        }
        let Some(map) = cur.as_object_mut() else {
            return;
        };
        if i + 1 == path.len() {
            map.entry(p.to_string()).or_insert(value);
            return;
        }
        cur = map.entry(p.to_string()).or_insert(Value::Null);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_and_qos_classes() {
        assert_eq!(milli_value("250m"), Some(250));
        assert_eq!(milli_value("1.5"), Some(1500));
        assert_eq!(milli_value("64Mi"), Some((64i128 << 20) * 1000));
        assert_eq!(milli_value("1e3"), Some(1_000_000));
        assert_eq!(milli_value("1n"), Some(1));
        assert_eq!(milli_value("x"), None);
        assert_eq!(milli_value("1Qi"), None);
        let pod = |containers: Value| {
            let mut obj = json!({"metadata": {"name": "p"}, "spec": {"containers": containers}});
            default(Resource::find("", "pods").unwrap(), &mut obj);
            obj
        };
        let qos = |containers: Value| pod(containers)["status"]["qosClass"].clone();
        assert_eq!(qos(json!([{"name": "a", "image": "i"}])), "BestEffort");
        let guaranteed = pod(json!([
            {"name": "a", "image": "i", "resources": {"limits": {"cpu": "1", "memory": "64Mi"}}},
            {"name": "b", "image": "i", "resources": {"requests": {"cpu": "1000m"}, "limits": {"cpu": "1", "memory": "67108864"}}},
        ]));
        assert_eq!(guaranteed["status"]["qosClass"], "Guaranteed");
        // Requests default to the limits.
        assert_eq!(
            guaranteed["spec"]["containers"][0]["resources"]["requests"],
            json!({"cpu": "1", "memory": "64Mi"})
        );
        assert_eq!(
            qos(json!([{"name": "a", "image": "i", "resources": {"limits": {"memory": "32Mi"}}}])),
            "Burstable"
        );
        assert_eq!(
            qos(
                json!([{"name": "a", "image": "i", "resources": {"requests": {"cpu": "500m"}, "limits": {"cpu": "1", "memory": "1Gi"}}}])
            ),
            "Burstable"
        );
    }

    #[test]
    fn dns_names() {
        assert!(is_dns1123_label("a-1") && !is_dns1123_label("-a") && !is_dns1123_label("A"));
        assert!(!is_dns1123_label(&"a".repeat(64)));
        assert!(is_dns1123_subdomain("a.b-c.d") && !is_dns1123_subdomain("a..b"));
        assert!(!is_dns1123_subdomain("Bad_Name"));
        assert!(is_dns1035_label("svc-1") && !is_dns1035_label("1svc"));
    }

    #[test]
    fn namespaces_are_labelled_with_their_name() {
        let ns = Resource::namespaces();
        let mut v = json!({"metadata": {"name": "team-a", "labels": {"kubernetes.io/metadata.name": "x", "k": "v"}}});
        default(ns, &mut v);
        assert_eq!(
            v["metadata"]["labels"],
            json!({"kubernetes.io/metadata.name": "team-a", "k": "v"})
        );
        let mut odd = json!({"metadata": {"name": "b", "labels": "not-a-map"}});
        default(ns, &mut odd);
        assert_eq!(odd["metadata"]["labels"], "not-a-map");
    }

    #[test]
    fn pods_get_defaults_and_need_containers() {
        let pods = Resource::find("", "pods").unwrap();
        let mut pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx:1.27"}, {"name": "d", "image": "busybox"}]}});
        default(pods, &mut pod);
        assert_eq!(pod["spec"]["restartPolicy"], "Always");
        assert_eq!(pod["spec"]["terminationGracePeriodSeconds"], 30);
        assert_eq!(
            pod["spec"]["containers"][0]["imagePullPolicy"],
            "IfNotPresent"
        );
        assert_eq!(pod["spec"]["containers"][1]["imagePullPolicy"], "Always");
        assert!(validate(pods, &pod, "p").is_ok());
        let bad = json!({"metadata": {"name": "P"}, "spec": {}});
        let Err(Error::Invalid { causes, .. }) = validate(pods, &bad, "P") else {
            panic!("expected Invalid")
        };
        let fields: Vec<_> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(fields, ["metadata.name", "spec.containers"]);
    }

    #[test]
    fn dns_settings_are_checked_as_kubernetes_does() {
        let pods = Resource::find("", "pods").unwrap();
        let causes = |spec: Value| -> Vec<(String, String)> {
            let mut spec = spec;
            spec["containers"] = json!([{"name": "c", "image": "i"}]);
            let pod = json!({"metadata": {"name": "p"}, "spec": spec});
            match validate(pods, &pod, "p") {
                Ok(()) => vec![],
                Err(Error::Invalid { causes, .. }) => {
                    causes.into_iter().map(|c| (c.field, c.message)).collect()
                }
                Err(e) => panic!("{e:?}"),
            }
        };
        let ok = json!({"dnsPolicy": "None", "hostname": "web-0", "subdomain": "web",
            "dnsConfig": {"nameservers": ["10.0.0.10", "fd00::a"], "searches": ["a.svc.cluster.local.", "."],
                          "options": [{"name": "ndots", "value": "2"}]},
            "hostAliases": [{"ip": "127.0.0.1", "hostnames": ["foo.local", "bar"]}]});
        assert_eq!(causes(ok), []);
        let c = |f: &str, m: &str| (f.to_string(), m.to_string());
        assert_eq!(
            causes(json!({"dnsPolicy": "Cluster"})),
            [c(
                "spec.dnsPolicy",
                "Unsupported value: \"Cluster\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\""
            )]
        );
        assert_eq!(
            causes(json!({"dnsPolicy": "None"})),
            [c(
                "spec.dnsConfig",
                "Required value: must provide `dnsConfig` when `dnsPolicy` is None"
            )]
        );
        assert_eq!(
            causes(json!({"dnsPolicy": "None", "dnsConfig": {"searches": ["a"]}})),
            [c(
                "spec.dnsConfig.nameservers",
                "Required value: must provide at least one DNS nameserver when `dnsPolicy` is None"
            )]
        );
        let long = "a".repeat(63);
        let too_long: Vec<String> = (0..33).map(|i| format!("{long}.d{i}")).collect();
        let got = causes(json!({"dnsConfig": {
            "nameservers": ["1.1.1.1", "2.2.2.2", "3.3.3.3", "10.0.0.x"],
            "searches": too_long,
            "options": [{"value": "1"}]},
            "hostname": "Web_0",
            "hostAliases": [{"ip": "localhost", "hostnames": ["ok", "bad\nline"]}]}));
        let fields: Vec<&str> = got.iter().map(|(f, _)| f.as_str()).collect();
        assert_eq!(
            fields,
            [
                "spec.dnsConfig.nameservers",
                "spec.dnsConfig.nameservers[3]",
                "spec.dnsConfig.searches",
                "spec.dnsConfig.searches",
                "spec.dnsConfig.options[0]",
                "spec.hostname",
                "spec.hostAliases[0].ip",
                "spec.hostAliases[0].hostnames[1]",
            ]
        );
        assert!(
            got[0].1.ends_with("must not have more than 3 nameservers"),
            "{got:?}"
        );
        assert_eq!(got[1].1, format!("Invalid value: \"10.0.0.x\": {IP_MSG}"));
        assert!(got[2]
            .1
            .ends_with("must not have more than 32 search paths"));
        assert!(got[3].1.ends_with("(including spaces) in the search list"));
        assert_eq!(got[4].1, "Required value: must not be empty");
        // A Deployment's template is checked the same way.
        let deployments = Resource::find("apps", "deployments").unwrap();
        let d = json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"dnsPolicy": "Nope",
            "containers": [{"name": "c", "image": "i"}]}}}});
        let Err(Error::Invalid { causes, .. }) = validate(deployments, &d, "d") else {
            panic!("expected Invalid")
        };
        assert!(
            causes
                .iter()
                .any(|c| c.field == "spec.template.spec.dnsPolicy"),
            "{causes:?}"
        );
    }

    #[test]
    fn container_names_are_unique_dns1123_labels() {
        let pods = Resource::find("", "pods").unwrap();
        let pod = json!({"metadata": {"name": "p"}, "spec": {
            "initContainers": [{"name": "../../x", "image": "busybox"}, {"name": "i", "image": "busybox"}],
            "containers": [{"name": "a/b", "image": "x"}, {"name": "i", "image": "x"}, {"name": "..", "image": "x"}]}});
        let Err(Error::Invalid { causes, .. }) = validate(pods, &pod, "p") else {
            panic!("expected Invalid")
        };
        let got: Vec<_> = causes
            .iter()
            .map(|c| (c.field.as_str(), c.reason, c.message.as_str()))
            .collect();
        let label = |v: &str| format!("Invalid value: \"{v}\": {LABEL_MSG}");
        assert_eq!(
            got,
            [
                (
                    "spec.initContainers[0].name",
                    "FieldValueInvalid",
                    label("../../x").as_str()
                ),
                (
                    "spec.containers[0].name",
                    "FieldValueInvalid",
                    label("a/b").as_str()
                ),
                (
                    "spec.containers[1].name",
                    "FieldValueDuplicate",
                    "Duplicate value: \"i\""
                ),
                (
                    "spec.containers[2].name",
                    "FieldValueInvalid",
                    label("..").as_str()
                ),
            ]
        );
        assert!(LABEL_MSG.starts_with("a lowercase RFC 1123 label must consist of"));
    }

    #[test]
    fn init_containers_take_hooks_and_probes_only_as_sidecars() {
        let pods = Resource::find("", "pods").unwrap();
        let probe = json!({"exec": {"command": ["true"]}});
        let pod = json!({"metadata": {"name": "p"}, "spec": {
            "initContainers": [
                {"name": "i", "image": "x", "startupProbe": probe, "livenessProbe": probe,
                 "readinessProbe": probe, "lifecycle": {"postStart": probe}},
                {"name": "s", "image": "x", "restartPolicy": "Always", "startupProbe": probe,
                 "readinessProbe": probe, "lifecycle": {"preStop": probe}},
                {"name": "o", "image": "x", "restartPolicy": "OnFailure"}
            ],
            "containers": [{"name": "c", "image": "x", "restartPolicy": "Always"}]}});
        let Err(Error::Invalid { causes, .. }) = validate(pods, &pod, "p") else {
            panic!("expected Invalid")
        };
        let got: Vec<_> = causes
            .iter()
            .map(|c| (c.field.as_str(), c.reason, c.message.as_str()))
            .collect();
        let init_only =
            "Forbidden: may not be set for init containers without restartPolicy=Always";
        assert_eq!(
            got,
            [
                (
                    "spec.initContainers[0].lifecycle",
                    "FieldValueForbidden",
                    init_only
                ),
                (
                    "spec.initContainers[0].livenessProbe",
                    "FieldValueForbidden",
                    init_only
                ),
                (
                    "spec.initContainers[0].readinessProbe",
                    "FieldValueForbidden",
                    init_only
                ),
                (
                    "spec.initContainers[0].startupProbe",
                    "FieldValueForbidden",
                    init_only
                ),
                (
                    "spec.initContainers[2].restartPolicy",
                    "FieldValueNotSupported",
                    "Unsupported value: \"OnFailure\": supported values: \"Always\""
                ),
                (
                    "spec.containers[0].restartPolicy",
                    "FieldValueForbidden",
                    "Forbidden: may not be set for non-init containers"
                ),
            ]
        );
    }

    #[test]
    fn integers_out_of_range_are_invalid() {
        let pods = Resource::find("", "pods").unwrap();
        let pod = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}],
                         "terminationGracePeriodSeconds": -1, "activeDeadlineSeconds": 0}});
        let Err(Error::Invalid { causes, .. }) = validate(pods, &pod, "p") else {
            panic!("expected Invalid")
        };
        let got: Vec<_> = causes
            .iter()
            .map(|c| (c.field.as_str(), c.message.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (
                    "spec.terminationGracePeriodSeconds",
                    "Invalid value: -1: must be greater than or equal to 0"
                ),
                (
                    "spec.activeDeadlineSeconds",
                    "Invalid value: 0: must be between 1 and 2147483647, inclusive"
                ),
            ]
        );
        let ok = json!({"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "x"}],
                        "terminationGracePeriodSeconds": i64::MAX, "activeDeadlineSeconds": 1}});
        assert!(validate(pods, &ok, "p").is_ok());
        let deployments = Resource::find("apps", "deployments").unwrap();
        let d = json!({"metadata": {"name": "d"}, "spec": {"replicas": -1, "selector": {"matchLabels": {"a": "b"}},
                       "template": {"metadata": {"labels": {"a": "b"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}}});
        let Err(Error::Invalid { causes, .. }) = validate(deployments, &d, "d") else {
            panic!("expected Invalid")
        };
        assert_eq!(causes.len(), 1);
        assert_eq!(causes[0].field, "spec.replicas");
    }

    #[test]
    fn scheduling_constraints_are_checked_as_kubernetes_does() {
        let pods = Resource::find("", "pods").unwrap();
        let term = |key: &str| json!({"labelSelector": {"matchLabels": {"app": "web"}}, "topologyKey": key});
        let pod = json!({"metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "c", "image": "x"}],
            "affinity": {
                "nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 0, "preference": {"matchExpressions": [{"key": "a", "operator": "Exists"}]}},
                    {"weight": 100, "preference": {"matchExpressions": [{"key": "a", "operator": "Exists"}]}}]},
                "podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("zone"), term("")]},
                "podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [
                    {"weight": 101, "podAffinityTerm": {"labelSelector": {}}}]}
            },
            "topologySpreadConstraints": [
                {"maxSkew": 0, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "minDomains": 0},
                {"maxSkew": 1, "whenUnsatisfiable": "Sometimes"},
                {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule"},
                {"maxSkew": 2, "topologyKey": "host", "whenUnsatisfiable": "ScheduleAnyway", "minDomains": 2}
            ]
        }});
        let Err(Error::Invalid { causes, .. }) = validate(pods, &pod, "p") else {
            panic!("expected Invalid")
        };
        let got: Vec<_> = causes
            .iter()
            .map(|c| (c.field.clone(), c.reason, c.message.as_str()))
            .collect();
        let (tsc, pref) = (
            "spec.topologySpreadConstraints",
            "preferredDuringSchedulingIgnoredDuringExecution",
        );
        assert_eq!(
            got,
            [
                (
                    format!("spec.affinity.nodeAffinity.{pref}[0].weight"),
                    "FieldValueInvalid",
                    "Invalid value: 0: must be in the range 1-100"
                ),
                (
                    "spec.affinity.podAffinity.requiredDuringSchedulingIgnoredDuringExecution[1].topologyKey"
                        .to_string(),
                    "FieldValueRequired",
                    "Required value: can not be empty"
                ),
                (
                    format!("spec.affinity.podAntiAffinity.{pref}[0].weight"),
                    "FieldValueInvalid",
                    "Invalid value: 101: must be in the range 1-100"
                ),
                (
                    format!("spec.affinity.podAntiAffinity.{pref}[0].podAffinityTerm.topologyKey"),
                    "FieldValueRequired",
                    "Required value: can not be empty"
                ),
                (
                    format!("{tsc}[0].maxSkew"),
                    "FieldValueInvalid",
                    "Invalid value: 0: must be greater than zero"
                ),
                (
                    format!("{tsc}[0].{{topologyKey, whenUnsatisfiable}}"),
                    "FieldValueDuplicate",
                    "Duplicate value: \"{zone, DoNotSchedule}\""
                ),
                (
                    format!("{tsc}[0].minDomains"),
                    "FieldValueInvalid",
                    "Invalid value: 0: must be greater than zero"
                ),
                (
                    format!("{tsc}[1].topologyKey"),
                    "FieldValueRequired",
                    "Required value: can not be empty"
                ),
                (
                    format!("{tsc}[1].whenUnsatisfiable"),
                    "FieldValueNotSupported",
                    "Unsupported value: \"Sometimes\": supported values: \"DoNotSchedule\", \"ScheduleAnyway\""
                ),
                (
                    format!("{tsc}[3].minDomains"),
                    "FieldValueInvalid",
                    "Invalid value: 2: can only use minDomains if whenUnsatisfiable=DoNotSchedule, not ScheduleAnyway"
                ),
            ]
        );
        // The same rules hold in a Deployment's template; valid ones pass.
        let deployments = Resource::find("apps", "deployments").unwrap();
        let d = json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"a": "b"}},
            "template": {"metadata": {"labels": {"a": "b"}}, "spec": {
                "containers": [{"name": "c", "image": "x"}],
                "affinity": {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term("kubernetes.io/hostname")]}},
                "topologySpreadConstraints": [
                    {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "DoNotSchedule", "minDomains": 3, "labelSelector": {}},
                    {"maxSkew": 1, "topologyKey": "zone", "whenUnsatisfiable": "ScheduleAnyway"}]}}}});
        assert!(validate(deployments, &d, "d").is_ok());
        let mut bad = d.clone();
        bad["spec"]["template"]["spec"]["topologySpreadConstraints"][1]["maxSkew"] = json!(-1);
        let Err(Error::Invalid { causes, .. }) = validate(deployments, &bad, "d") else {
            panic!("expected Invalid")
        };
        assert_eq!(
            causes[0].field,
            "spec.template.spec.topologySpreadConstraints[1].maxSkew"
        );
        assert_eq!(
            causes[0].message,
            "Invalid value: -1: must be greater than zero"
        );
    }
}
