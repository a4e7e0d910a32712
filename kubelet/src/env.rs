//! A container's environment and command line, by Kubernetes' rules:
//! the image's env, then the Service variables (pkg/kubelet/envvars), then
//! `POD_IP`/`HOSTNAME`, then `spec.containers[].env` (literal values with
//! `$(VAR)` expansion, downward-API `fieldRef`s, `configMapKeyRef`s or
//! `secretKeyRef`s) after `envFrom` (every key of a ConfigMap or Secret,
//! under a prefix, keys that are no variable name skipped); `command`
//! replaces the image's entrypoint, `args` its default arguments.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Container, Pod, Service};

use crate::images::ImageConfig;

/// Expands `$(VAR)` references from `vars`; `$$` is a literal `$`, and an
/// unknown or unterminated reference is left as written (Kubernetes'
/// `expansion` package semantics).
pub fn expand(input: &str, vars: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(body) = after.strip_prefix('(') {
            match body.find(')') {
                Some(end) => {
                    let name = &body[..end];
                    match vars(name) {
                        Some(v) => out.push_str(&v),
                        None => {
                            out.push_str("$(");
                            out.push_str(name);
                            out.push(')');
                        }
                    }
                    rest = &body[end + 1..];
                }
                None => {
                    out.push_str("$(");
                    rest = body;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The value of a downward-API `fieldRef` path.
pub fn field_value(pod: &Pod, pod_ip: &str, host_ip: &str, path: &str) -> Result<String, String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    let quoted = |prefix: &str| -> Option<String> {
        let inner = path.strip_prefix(prefix)?.strip_suffix("']")?;
        Some(inner.to_string())
    };
    Ok(match path {
        "metadata.name" => meta.name.clone().unwrap_or_default(),
        "metadata.namespace" => meta.namespace.clone().unwrap_or_default(),
        "metadata.uid" => meta.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.podIP" | "status.podIPs" => pod_ip.to_string(),
        "status.hostIP" | "status.hostIPs" => host_ip.to_string(),
        _ => {
            if let Some(key) = quoted("metadata.labels['") {
                meta.labels
                    .as_ref()
                    .and_then(|l| l.get(&key).cloned())
                    .unwrap_or_default()
            } else if let Some(key) = quoted("metadata.annotations['") {
                meta.annotations
                    .as_ref()
                    .and_then(|l| l.get(&key).cloned())
                    .unwrap_or_default()
            } else {
                return Err(format!("unsupported fieldRef fieldPath {path:?}"));
            }
        }
    })
}

/// One ConfigMap's `data`, or one Secret's `data` decoded (as Go's
/// `string(bytes)`, invalid UTF-8 replaced).
pub type Data = BTreeMap<String, String>;

/// The ConfigMaps and Secrets a container's environment refers to, as the
/// kubelet read them just before creating it: name → data, or `None` when
/// the apiserver answered 404; and the Service variables of its pod.
#[derive(Debug, Clone, Default)]
pub struct EnvSources {
    pub config_maps: HashMap<String, Option<Data>>,
    pub secrets: HashMap<String, Option<Data>>,
    /// [`service_env`] for the pod: below everything the pod declares.
    pub services: Data,
}

/// Kubernetes' `IsEnvVarName`: `[-._a-zA-Z][-._a-zA-Z0-9]*`.
pub fn is_env_var_name(name: &str) -> bool {
    let mut chars = name.chars();
    let ok = |c: char| c.is_ascii_alphabetic() || matches!(c, '-' | '.' | '_');
    chars.next().is_some_and(ok) && chars.all(|c| ok(c) || c.is_ascii_digit())
}

/// The Service variables of a pod in `namespace`, as kubelet's
/// `getServiceEnvVarMap` and `envvars.FromServices`: the `kubernetes`
/// Service of `default` always, and with `enable_service_links` every
/// Service of the pod's own namespace (which wins over the master
/// service of the same name); Services without a cluster IP (headless,
/// ExternalName) give none. Per Service `<NAME>_SERVICE_HOST`,
/// `<NAME>_SERVICE_PORT` (the first port), `<NAME>_SERVICE_PORT_<PORT>` per
/// named port, and Docker's link variables `<NAME>_PORT` and
/// `<NAME>_PORT_<port>_<PROTO>{,_PROTO,_PORT,_ADDR}`; names upper-cased
/// with `-` as `_`.
pub fn service_env<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    namespace: &str,
    enable_service_links: bool,
) -> Data {
    let mut chosen: BTreeMap<String, &Service> = BTreeMap::new();
    for svc in services {
        let name = svc.metadata.name.clone().unwrap_or_default();
        let ns = svc.metadata.namespace.as_deref().unwrap_or_default();
        if ns == "default" && name == "kubernetes" {
            chosen.entry(name).or_insert(svc);
        } else if ns == namespace && enable_service_links {
            chosen.insert(name, svc);
        }
    }
    let mut out = Data::new();
    for (name, svc) in chosen {
        let Some(spec) = svc.spec.as_ref() else {
            continue;
        };
        let ip = spec.cluster_ip.as_deref().unwrap_or_default();
        let ports = spec.ports.as_deref().unwrap_or_default();
        if ip.is_empty() || ip == "None" || ports.is_empty() {
            continue;
        }
        let prefix = name.replace('-', "_").to_uppercase();
        out.insert(format!("{prefix}_SERVICE_HOST"), ip.to_string());
        out.insert(format!("{prefix}_SERVICE_PORT"), ports[0].port.to_string());
        for p in ports {
            if let Some(port_name) = p.name.as_deref().filter(|n| !n.is_empty()) {
                let key = format!(
                    "{prefix}_SERVICE_PORT_{}",
                    port_name.replace('-', "_").to_uppercase()
                );
                out.insert(key, p.port.to_string());
            }
        }
        for (i, p) in ports.iter().enumerate() {
            let proto = p.protocol.as_deref().unwrap_or("TCP");
            let host_port = if ip.contains(':') {
                format!("[{ip}]:{}", p.port)
            } else {
                format!("{ip}:{}", p.port)
            };
            let url = format!("{}://{host_port}", proto.to_lowercase());
            if i == 0 {
                out.insert(format!("{prefix}_PORT"), url.clone());
            }
            let port_prefix = format!("{prefix}_PORT_{}_{}", p.port, proto.to_uppercase());
            out.insert(format!("{port_prefix}_PROTO"), proto.to_lowercase());
            out.insert(format!("{port_prefix}_PORT"), p.port.to_string());
            out.insert(format!("{port_prefix}_ADDR"), ip.to_string());
            out.insert(port_prefix, url);
        }
    }
    out
}

/// The `InvalidEnvironmentVariableNames` warnings for `container`'s
/// `envFrom`, in kubelet's words: one per source whose keys (with the
/// prefix) are no variable names; [`container_env`] skips those keys.
pub fn invalid_env_from_keys(pod: &Pod, container: &Container, all: &EnvSources) -> Vec<String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    let mut out = Vec::new();
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or_default();
        let (kind, name) = match (&from.config_map_ref, &from.secret_ref) {
            (Some(r), _) => (Kind::ConfigMap, &r.name),
            (None, Some(r)) => (Kind::Secret, &r.name),
            (None, None) => continue,
        };
        let Some(Some(data)) = kind.sources(all).get(name) else {
            continue;
        };
        let mut invalid: Vec<String> = data
            .keys()
            .map(|k| format!("{prefix}{k}"))
            .filter(|k| !is_env_var_name(k))
            .collect();
        if invalid.is_empty() {
            continue;
        }
        invalid.sort();
        out.push(format!(
            "Keys [{}] from the EnvFrom {} {namespace}/{name} were skipped since they are considered invalid environment variable names.",
            invalid.join(", "),
            kind.noun()
        ));
    }
    out
}

/// The name the runtimes know [`EnvSources`] by.
pub type ConfigMaps = EnvSources;

impl EnvSources {
    /// Nothing read yet.
    pub fn new() -> EnvSources {
        EnvSources::default()
    }
}

/// Adds `name` to `names` once.
fn push_once(names: &mut Vec<String>, name: &str) {
    if !names.iter().any(|n| n == name) {
        names.push(name.to_string());
    }
}

/// The names of the ConfigMaps `container`'s environment refers to
/// (`envFrom[].configMapRef`, `env[].valueFrom.configMapKeyRef`), each
/// once, in order.
pub fn config_map_names(container: &Container) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for from in container.env_from.iter().flatten() {
        if let Some(r) = &from.config_map_ref {
            push_once(&mut names, &r.name);
        }
    }
    for var in container.env.iter().flatten() {
        if let Some(r) = var
            .value_from
            .as_ref()
            .and_then(|f| f.config_map_key_ref.as_ref())
        {
            push_once(&mut names, &r.name);
        }
    }
    names
}

/// The names of the Secrets `container`'s environment refers to
/// (`envFrom[].secretRef`, `env[].valueFrom.secretKeyRef`), each once, in
/// order.
pub fn secret_names(container: &Container) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for from in container.env_from.iter().flatten() {
        if let Some(r) = &from.secret_ref {
            push_once(&mut names, &r.name);
        }
    }
    for var in container.env.iter().flatten() {
        if let Some(r) = var
            .value_from
            .as_ref()
            .and_then(|f| f.secret_key_ref.as_ref())
        {
            push_once(&mut names, &r.name);
        }
    }
    names
}

/// ConfigMaps or Secrets, with kubelet's words for them.
#[derive(Clone, Copy)]
enum Kind {
    ConfigMap,
    Secret,
}

impl Kind {
    fn sources(self, all: &EnvSources) -> &HashMap<String, Option<Data>> {
        match self {
            Kind::ConfigMap => &all.config_maps,
            Kind::Secret => &all.secrets,
        }
    }

    /// The resource in a NotFound message (`configmap "x" not found`).
    fn resource(self) -> &'static str {
        match self {
            Kind::ConfigMap => "configmap",
            Kind::Secret => "secret",
        }
    }

    /// The kind in a missing key's message.
    fn kind(self) -> &'static str {
        match self {
            Kind::ConfigMap => "ConfigMap",
            Kind::Secret => "Secret",
        }
    }

    /// The name in a could-not-get message (`couldn't get configMap ns/x`).
    fn noun(self) -> &'static str {
        match self {
            Kind::ConfigMap => "configMap",
            Kind::Secret => "secret",
        }
    }
}

/// The data of one referenced ConfigMap or Secret: `Ok(None)` when it is
/// missing and the reference `optional`.
fn source_data<'a>(
    pod: &Pod,
    all: &'a EnvSources,
    kind: Kind,
    name: &str,
    optional: bool,
) -> Result<Option<&'a Data>, String> {
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    match kind.sources(all).get(name) {
        Some(Some(data)) => Ok(Some(data)),
        // kubelet's managers answer NotFound for "configmap" / "secret".
        Some(None) if optional => Ok(None),
        Some(None) => Err(format!("{} {name:?} not found", kind.resource())),
        None => Err(format!(
            "couldn't get {} {namespace}/{name}: it was not read",
            kind.noun()
        )),
    }
}

/// DNS-1123 subdomain (a ConfigMap's name): dot-separated
/// `[a-z0-9]([-a-z0-9]*[a-z0-9])?` labels, at most 253 characters. Checked
/// before a name from a pod becomes part of a request path.
pub fn is_dns1123_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|label| {
            let b = label.as_bytes();
            !b.is_empty()
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
                && b[0] != b'-'
                && b[b.len() - 1] != b'-'
        })
}

/// The value of a `configMapKeyRef` or `secretKeyRef`, as kubelet's
/// `makeEnvironmentVariables`: `Ok(None)` when the reference is optional
/// and the object or its key is missing (the variable is left out).
fn key_value(
    pod: &Pod,
    all: &EnvSources,
    kind: Kind,
    name: &str,
    key: &str,
    optional: bool,
) -> Result<Option<String>, String> {
    let Some(data) = source_data(pod, all, kind, name, optional)? else {
        return Ok(None);
    };
    let namespace = pod.metadata.namespace.as_deref().unwrap_or_default();
    match data.get(key) {
        Some(v) => Ok(Some(v.clone())),
        None if optional => Ok(None),
        None => Err(format!(
            "couldn't find key {key} in {} {namespace}/{name}",
            kind.kind()
        )),
    }
}

/// The environment of `container`, in order, later entries winning: the
/// image's, the Service variables, `POD_IP`/`HOSTNAME`, `envFrom`
/// (ConfigMaps and Secrets, keys under `prefix`), then `env`. Errors are `CreateContainerConfigError` messages (kubelet's
/// words: a missing ConfigMap is `configmap "x" not found`, a missing key
/// `couldn't find key k in ConfigMap ns/x`; for Secrets `secret "x" not
/// found` and `couldn't find key k in Secret ns/x`).
pub fn container_env(
    pod: &Pod,
    container: &Container,
    image: &ImageConfig,
    pod_ip: &str,
    host_ip: &str,
    sources: &EnvSources,
) -> Result<Vec<(String, String)>, String> {
    let mut env: Vec<(String, String)> = image.env.clone();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        env.retain(|(name, _)| *name != k);
        env.push((k, v));
    };
    for (k, v) in &sources.services {
        set(&mut env, k.clone(), v.clone());
    }
    set(&mut env, "POD_IP".into(), pod_ip.to_string());
    set(
        &mut env,
        "HOSTNAME".into(),
        pod.metadata.name.clone().unwrap_or_default(),
    );
    // envFrom first, in order, each key under its prefix; env wins.
    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.as_deref().unwrap_or_default();
        let (kind, name, optional) = match (&from.config_map_ref, &from.secret_ref) {
            (Some(r), _) => (Kind::ConfigMap, &r.name, r.optional.unwrap_or(false)),
            (None, Some(r)) => (Kind::Secret, &r.name, r.optional.unwrap_or(false)),
            (None, None) => continue,
        };
        let Some(data) = source_data(pod, sources, kind, name, optional)? else {
            continue;
        };
        for (k, v) in data {
            let k = format!("{prefix}{k}");
            if is_env_var_name(&k) {
                set(&mut env, k, v.clone());
            }
        }
    }
    for var in container.env.iter().flatten() {
        let value = if let Some(from) = &var.value_from {
            if let Some(field) = &from.field_ref {
                field_value(pod, pod_ip, host_ip, &field.field_path)?
            } else if let Some(r) = &from.config_map_key_ref {
                let optional = r.optional.unwrap_or(false);
                match key_value(pod, sources, Kind::ConfigMap, &r.name, &r.key, optional)? {
                    Some(v) => v,
                    None => continue,
                }
            } else if let Some(r) = &from.secret_key_ref {
                let optional = r.optional.unwrap_or(false);
                match key_value(pod, sources, Kind::Secret, &r.name, &r.key, optional)? {
                    Some(v) => v,
                    None => continue,
                }
            } else {
                return Err(format!("env {}: unsupported valueFrom", var.name));
            }
        } else {
            // Only variables defined before this one (or by the image) expand.
            let known: HashMap<String, String> = env.iter().cloned().collect();
            expand(var.value.as_deref().unwrap_or_default(), &|n| {
                known.get(n).cloned()
            })
        };
        set(&mut env, var.name.clone(), value);
    }
    Ok(env)
}

/// The command line: `command` (else the image's entrypoint) followed by
/// `args` (else, when `command` is unset, the image's default args), with
/// `$(VAR)` expanded from `env`.
pub fn command_line(
    container: &Container,
    image: &ImageConfig,
    env: &[(String, String)],
) -> Vec<String> {
    let vars: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let lookup = |n: &str| vars.get(n).map(|v| v.to_string());
    let expand_all = |v: &Vec<String>| v.iter().map(|s| expand(s, &lookup)).collect::<Vec<_>>();
    let command = container.command.as_ref().filter(|c| !c.is_empty());
    let args = container.args.as_ref().filter(|a| !a.is_empty());
    match (command, args) {
        (Some(c), Some(a)) => [expand_all(c), expand_all(a)].concat(),
        (Some(c), None) => expand_all(c),
        (None, Some(a)) => [image.entrypoint.clone(), expand_all(a)].concat(),
        (None, None) => [image.entrypoint.clone(), image.cmd.clone()].concat(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expansion_follows_kubernetes() {
        let vars = |n: &str| match n {
            "A" => Some("x".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        assert_eq!(expand("$(A)-$(A)", &vars), "x-x");
        assert_eq!(expand("$(B)", &vars), "$(B)");
        assert_eq!(expand("$$(A)", &vars), "$(A)");
        assert_eq!(expand("$$", &vars), "$");
        assert_eq!(expand("a$b", &vars), "a$b");
        assert_eq!(expand("$(A", &vars), "$(A");
        assert_eq!(expand("[$(EMPTY)]", &vars), "[]");
        assert_eq!(expand("$", &vars), "$");
    }

    #[test]
    fn subdomains() {
        for ok in ["a", "cm-1", "a.b.c", "0x"] {
            assert!(is_dns1123_subdomain(ok), "{ok}");
        }
        for bad in [
            "",
            "A",
            "-a",
            "a-",
            "a..b",
            ".a",
            "../x",
            "a/b",
            "a%2fb",
            &"a".repeat(254),
        ] {
            assert!(!is_dns1123_subdomain(bad), "{bad}");
        }
    }

    #[test]
    fn config_map_refs_follow_kubelet() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": []}
        }))
        .unwrap();
        let container = |env: serde_json::Value| -> Container {
            serde_json::from_value(serde_json::json!({"name": "c", "env": env})).unwrap()
        };
        let image = ImageConfig {
            name: "x".into(),
            entrypoint: vec![],
            cmd: vec![],
            env: vec![],
        };
        let key_ref = |name: &str, key: &str, optional: Option<bool>| serde_json::json!({"configMapKeyRef": {"name": name, "key": key, "optional": optional}});
        let c = container(serde_json::json!([
            {"name": "A", "valueFrom": key_ref("cm", "a", None)},
            {"name": "B", "value": "[$(A)]"},
            {"name": "C", "valueFrom": key_ref("cm", "nope", Some(true))},
            {"name": "D", "valueFrom": key_ref("gone", "d", Some(true))},
            {"name": "E", "valueFrom": key_ref("cm", "a", Some(false))},
        ]));
        assert_eq!(config_map_names(&c), vec!["cm", "gone"]);
        let mut cms = EnvSources::new();
        cms.config_maps.insert(
            "cm".into(),
            Some(BTreeMap::from([("a".to_string(), "1".to_string())])),
        );
        cms.config_maps.insert("gone".into(), None);
        let env = container_env(&pod, &c, &image, "10.0.0.1", "127.0.0.1", &cms).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("A"), Some("1"));
        assert_eq!(get("B"), Some("[1]"));
        assert_eq!(get("C"), None);
        assert_eq!(get("D"), None);
        assert_eq!(get("E"), Some("1"));
        let missing_key = container(serde_json::json!([
            {"name": "A", "valueFrom": key_ref("cm", "b", None)}
        ]));
        assert_eq!(
            container_env(&pod, &missing_key, &image, "", "", &cms).unwrap_err(),
            "couldn't find key b in ConfigMap ns/cm"
        );
        let missing_map = container(serde_json::json!([
            {"name": "A", "valueFrom": key_ref("gone", "a", None)}
        ]));
        assert_eq!(
            container_env(&pod, &missing_map, &image, "", "", &cms).unwrap_err(),
            "configmap \"gone\" not found"
        );
        let secret = container(serde_json::json!([
            {"name": "S", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}
        ]));
        assert_eq!(
            container_env(&pod, &secret, &image, "", "", &cms).unwrap_err(),
            "couldn't get secret ns/s: it was not read"
        );
    }

    #[test]
    fn secret_refs_and_env_from_follow_kubelet() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"containers": []}
        }))
        .unwrap();
        let image = ImageConfig {
            name: "x".into(),
            entrypoint: vec![],
            cmd: vec![],
            env: vec![("IMG".into(), "i".into())],
        };
        let c: Container = serde_json::from_value(serde_json::json!({
            "name": "c",
            "envFrom": [
                {"configMapRef": {"name": "cm"}, "prefix": "CM_"},
                {"secretRef": {"name": "s"}},
                {"secretRef": {"name": "gone", "optional": true}},
            ],
            "env": [
                {"name": "user", "value": "overridden"},
                {"name": "PW", "valueFrom": {"secretKeyRef": {"name": "s", "key": "password"}}},
                {"name": "NO", "valueFrom": {"secretKeyRef": {"name": "s", "key": "x", "optional": true}}},
                {"name": "NO2", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "x", "optional": true}}},
                {"name": "X", "value": "$(PW)-$(CM_a)"},
            ],
        }))
        .unwrap();
        assert_eq!(config_map_names(&c), ["cm"]);
        assert_eq!(secret_names(&c), ["s", "gone"]);
        let mut all = EnvSources::new();
        all.config_maps
            .insert("cm".into(), Some(Data::from([("a".into(), "1".into())])));
        all.secrets.insert(
            "s".into(),
            Some(Data::from([
                ("user".into(), "u".into()),
                ("password".into(), "pw".into()),
            ])),
        );
        all.secrets.insert("gone".into(), None);
        let env = container_env(&pod, &c, &image, "", "", &all).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("IMG"), Some("i"));
        assert_eq!(get("CM_a"), Some("1"));
        assert_eq!(get("a"), None, "only under the prefix");
        assert_eq!(get("user"), Some("overridden"), "env wins over envFrom");
        assert_eq!(get("password"), Some("pw"));
        assert_eq!(get("PW"), Some("pw"));
        assert_eq!(get("NO"), None);
        assert_eq!(get("NO2"), None);
        assert_eq!(get("X"), Some("pw-1"));
        let missing: Container = serde_json::from_value(serde_json::json!({
            "name": "c", "envFrom": [{"secretRef": {"name": "gone"}}]
        }))
        .unwrap();
        assert_eq!(
            container_env(&pod, &missing, &image, "", "", &all).unwrap_err(),
            "secret \"gone\" not found"
        );
        let no_key: Container = serde_json::from_value(serde_json::json!({
            "name": "c", "env": [{"name": "K", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]
        }))
        .unwrap();
        assert_eq!(
            container_env(&pod, &no_key, &image, "", "", &all).unwrap_err(),
            "couldn't find key k in Secret ns/s"
        );
    }

    #[test]
    fn command_overrides_entrypoint_args_override_cmd() {
        let image = ImageConfig {
            name: "x".into(),
            entrypoint: vec!["ep".into()],
            cmd: vec!["default".into()],
            env: vec![],
        };
        let env = vec![("N".to_string(), "5".to_string())];
        let mut c = Container::default();
        assert_eq!(command_line(&c, &image, &env), vec!["ep", "default"]);
        c.args = Some(vec!["$(N)".into()]);
        assert_eq!(command_line(&c, &image, &env), vec!["ep", "5"]);
        c.command = Some(vec!["sleep".into()]);
        assert_eq!(command_line(&c, &image, &env), vec!["sleep", "5"]);
        c.args = None;
        assert_eq!(command_line(&c, &image, &env), vec!["sleep"]);
    }

    #[test]
    fn service_variables_follow_envvars() {
        let svc = |ns: &str, name: &str, ip: &str, ports: serde_json::Value| -> Service {
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": name, "namespace": ns},
                "spec": {"clusterIP": ip, "ports": ports}
            }))
            .unwrap()
        };
        let all = [
            svc(
                "default",
                "kubernetes",
                "127.96.0.1",
                serde_json::json!([{"name": "https", "port": 443, "protocol": "TCP"}]),
            ),
            svc(
                "ns",
                "my-web",
                "127.96.0.7",
                serde_json::json!([
                    {"port": 80},
                    {"name": "dns-udp", "port": 53, "protocol": "UDP"}
                ]),
            ),
            svc("ns", "headless", "None", serde_json::json!([{"port": 80}])),
            svc(
                "other",
                "elsewhere",
                "127.96.0.9",
                serde_json::json!([{"port": 80}]),
            ),
        ];
        let env = service_env(all.iter(), "ns", true);
        let get = |k: &str| env.get(k).map(String::as_str);
        assert_eq!(get("KUBERNETES_SERVICE_HOST"), Some("127.96.0.1"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("443"));
        assert_eq!(get("KUBERNETES_SERVICE_PORT_HTTPS"), Some("443"));
        assert_eq!(get("KUBERNETES_PORT"), Some("tcp://127.96.0.1:443"));
        assert_eq!(get("MY_WEB_SERVICE_HOST"), Some("127.96.0.7"));
        assert_eq!(get("MY_WEB_SERVICE_PORT"), Some("80"));
        assert_eq!(get("MY_WEB_SERVICE_PORT_DNS_UDP"), Some("53"));
        assert_eq!(get("MY_WEB_PORT"), Some("tcp://127.96.0.7:80"));
        assert_eq!(get("MY_WEB_PORT_80_TCP"), Some("tcp://127.96.0.7:80"));
        assert_eq!(get("MY_WEB_PORT_80_TCP_PROTO"), Some("tcp"));
        assert_eq!(get("MY_WEB_PORT_80_TCP_PORT"), Some("80"));
        assert_eq!(get("MY_WEB_PORT_80_TCP_ADDR"), Some("127.96.0.7"));
        assert_eq!(get("MY_WEB_PORT_53_UDP"), Some("udp://127.96.0.7:53"));
        assert_eq!(get("MY_WEB_PORT_53_UDP_PROTO"), Some("udp"));
        assert!(env
            .keys()
            .all(|k| !k.starts_with("HEADLESS") && !k.starts_with("ELSEWHERE")));
        // enableServiceLinks: false keeps only the master service's.
        let env = service_env(all.iter(), "ns", false);
        assert!(env.contains_key("KUBERNETES_SERVICE_HOST"));
        assert!(!env.contains_key("MY_WEB_SERVICE_HOST"));
        // Explicit env wins, and $(VAR) sees the Service variables.
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": []}
        }))
        .unwrap();
        let c: Container = serde_json::from_value(serde_json::json!({"name": "c", "env": [
            {"name": "KUBERNETES_SERVICE_PORT", "value": "1"},
            {"name": "URL", "value": "http://$(MY_WEB_SERVICE_HOST):$(MY_WEB_SERVICE_PORT)"}
        ]}))
        .unwrap();
        let image = ImageConfig {
            name: "x".into(),
            entrypoint: vec![],
            cmd: vec![],
            env: vec![],
        };
        let sources = EnvSources {
            services: service_env(all.iter(), "ns", true),
            ..EnvSources::new()
        };
        let env = container_env(&pod, &c, &image, "", "", &sources).unwrap();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        assert_eq!(get("KUBERNETES_SERVICE_PORT"), Some("1"));
        assert_eq!(get("URL"), Some("http://127.96.0.7:80"));
    }

    #[test]
    fn env_from_skips_invalid_names_with_kubelets_warning() {
        for ok in ["A", "a_b", "-x", ".y", "_1", "A.b-c"] {
            assert!(is_env_var_name(ok), "{ok}");
        }
        for bad in ["", "1a", "a b", "a=b", "ä"] {
            assert!(!is_env_var_name(bad), "{bad}");
        }
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns"}, "spec": {"containers": []}
        }))
        .unwrap();
        let c: Container = serde_json::from_value(serde_json::json!({"name": "c", "envFrom": [
            {"configMapRef": {"name": "cm"}},
            {"secretRef": {"name": "s"}, "prefix": "P_"}
        ]}))
        .unwrap();
        let mut all = EnvSources::new();
        all.config_maps.insert(
            "cm".into(),
            Some(Data::from([
                ("2alsobad".into(), "x".into()),
                ("1badkey".into(), "x".into()),
                ("good".into(), "g".into()),
            ])),
        );
        all.secrets.insert(
            "s".into(),
            Some(Data::from([
                ("a b".into(), "x".into()),
                ("ok".into(), "o".into()),
            ])),
        );
        assert_eq!(
            invalid_env_from_keys(&pod, &c, &all),
            [
                "Keys [1badkey, 2alsobad] from the EnvFrom configMap ns/cm were skipped since they are considered invalid environment variable names.",
                "Keys [P_a b] from the EnvFrom secret ns/s were skipped since they are considered invalid environment variable names.",
            ]
        );
        let image = ImageConfig {
            name: "x".into(),
            entrypoint: vec![],
            cmd: vec![],
            env: vec![],
        };
        let env = container_env(&pod, &c, &image, "", "", &all).unwrap();
        let names: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["POD_IP", "HOSTNAME", "good", "P_ok"]);
    }
}
