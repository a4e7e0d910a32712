//! Services as kube-apiserver keeps them: the addresses they are given
//! (`spec.clusterIP`/`clusterIPs` from `--service-cluster-ip-range`,
//! `spec.ports[].nodePort` from `--service-node-port-range`, through the
//! registry's allocator), the IP family fields, the checks on both at
//! create and update (the default `kubernetes` Service is kept in
//! `kubernetes_service`).
//!
//! What a Service gets, by type:
//!
//! ```text
//! ClusterIP                 clusterIP(s) allocated or the requested one, ipFamilies [IPv4], SingleStack
//! ClusterIP, clusterIP None headless: no address
//! NodePort / LoadBalancer   as ClusterIP, plus a nodePort per port (requested or allocated)
//! LoadBalancer, externalTrafficPolicy Local
//!                           as LoadBalancer, plus a healthCheckNodePort from the same range
//! ExternalName              nothing
//! ```

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use rand::Rng;
use serde_json::{json, Value};

use super::AppState;
use crate::error::{Cause, Error, Result};
use crate::object::Object;
use crate::registry::{Claimed, ServiceRanges, IP_PREFIX, NODE_PORT_PREFIX};
use crate::resources::Resource;

/// Attempts at a create or update whose allocated address another
/// apiserver took between the read and the write.
const ALLOCATION_ATTEMPTS: usize = 8;

fn services() -> &'static Resource {
    Resource::find("", "services").expect("services are served")
}

fn type_of(spec: &Value) -> &str {
    spec["type"].as_str().unwrap_or("ClusterIP")
}

fn needs_cluster_ip(spec: &Value) -> bool {
    type_of(spec) != "ExternalName"
}

fn needs_node_ports(spec: &Value) -> bool {
    matches!(type_of(spec), "NodePort" | "LoadBalancer")
}

/// kube's `NeedsHealthCheck`: only these get a `healthCheckNodePort`.
fn needs_health_check(spec: &Value) -> bool {
    type_of(spec) == "LoadBalancer" && spec["externalTrafficPolicy"] == "Local"
}

fn is_headless(spec: &Value) -> bool {
    spec["clusterIP"] == "None"
}

fn cluster_ips(spec: &Value) -> Vec<String> {
    spec["clusterIPs"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_str().unwrap_or_default().to_string())
                .collect()
        })
        .unwrap_or_default()
}

fn cause(field: String, reason: &'static str, message: String) -> Cause {
    Cause {
        field,
        reason,
        message,
    }
}

fn invalid(name: &str, causes: Vec<Cause>) -> Error {
    Error::Invalid {
        group: "",
        kind: "Service",
        name: name.to_string(),
        causes,
    }
}

/// `[]string{"a", "b"}`, as Go prints a string slice in a message.
fn go_strings(v: &[String]) -> String {
    let inner: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
    format!("[]string{{{}}}", inner.join(", "))
}

/// Makes `clusterIP` and `clusterIPs` agree (either may be given) and
/// fills the IP family fields a Service that has addresses carries.
pub(super) fn default(obj: &mut Value) {
    let Some(spec) = obj.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    if !needs_cluster_ip(spec) {
        return;
    }
    let ip = spec["clusterIP"].as_str().unwrap_or_default().to_string();
    let ips = cluster_ips(spec);
    if ips.is_empty() && !ip.is_empty() {
        spec["clusterIPs"] = json!([ip]);
    } else if ip.is_empty() && !ips.is_empty() {
        spec["clusterIP"] = json!(ips[0]);
    }
    if spec.get("ipFamilyPolicy").is_none_or(Value::is_null) {
        spec["ipFamilyPolicy"] = json!("SingleStack");
    }
    if spec.get("ipFamilies").is_none_or(Value::is_null) {
        spec["ipFamilies"] = json!(["IPv4"]);
    }
    if spec.get("internalTrafficPolicy").is_none_or(Value::is_null) {
        spec["internalTrafficPolicy"] = json!("Cluster");
    }
    if needs_node_ports(spec) && spec.get("externalTrafficPolicy").is_none_or(Value::is_null) {
        spec["externalTrafficPolicy"] = json!("Cluster");
    }
    if type_of(spec) == "LoadBalancer"
        && spec
            .get("allocateLoadBalancerNodePorts")
            .is_none_or(Value::is_null)
    {
        spec["allocateLoadBalancerNodePorts"] = json!(true);
    }
}

/// kube-apiserver's checks of a Service's spec (types, ports, addresses,
/// families), create and update alike.
pub(super) fn validate(obj: &Value, causes: &mut Vec<Cause>) {
    let spec = &obj["spec"];
    let ty = type_of(spec);
    const TYPES: [&str; 4] = ["ClusterIP", "ExternalName", "LoadBalancer", "NodePort"];
    if !TYPES.contains(&ty) {
        causes.push(cause(
            "spec.type".into(),
            "FieldValueNotSupported",
            format!("Unsupported value: \"{ty}\": supported values: \"ClusterIP\", \"ExternalName\", \"LoadBalancer\", \"NodePort\""),
        ));
    }
    let ports = spec["ports"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if ty == "ExternalName" {
        if spec["externalName"].as_str().is_none_or(str::is_empty) {
            causes.push(cause(
                "spec.externalName".into(),
                "FieldValueRequired",
                "Required value".into(),
            ));
        }
        let ips = cluster_ips(spec);
        if !ips.is_empty() || spec["clusterIP"].as_str().is_some_and(|s| !s.is_empty()) {
            causes.push(cause(
                "spec.clusterIPs".into(),
                "FieldValueForbidden",
                "Forbidden: may not be set for ExternalName services".into(),
            ));
        }
    } else {
        let ip = spec["clusterIP"].as_str().unwrap_or_default();
        let ips = cluster_ips(spec);
        if !ips.is_empty() && ips[0] != ip {
            causes.push(cause(
                "spec.clusterIPs[0]".into(),
                "FieldValueInvalid",
                format!(
                    "Invalid value: {}: must be same as clusterIP",
                    go_strings(&ips)
                ),
            ));
        }
        if ips.len() > 1 {
            causes.push(cause(
                "spec.clusterIPs".into(),
                "FieldValueInvalid",
                format!(
                    "Invalid value: {}: may only hold up to 1 values when ipFamilyPolicy is SingleStack",
                    go_strings(&ips)
                ),
            ));
        }
        for (i, ip) in ips.iter().enumerate() {
            if ip == "None" {
                if needs_node_ports(spec) {
                    causes.push(cause(
                        format!("spec.clusterIPs[{i}]"),
                        "FieldValueInvalid",
                        format!(
                            "Invalid value: \"None\": may not be set to 'None' for {ty} services"
                        ),
                    ));
                }
            } else if !ip.is_empty() && ip.parse::<std::net::IpAddr>().is_err() {
                causes.push(cause(
                    format!("spec.clusterIPs[{i}]"),
                    "FieldValueInvalid",
                    format!("Invalid value: \"{ip}\": must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"),
                ));
            }
        }
        match spec["ipFamilyPolicy"].as_str() {
            None | Some("SingleStack" | "PreferDualStack") => {}
            Some("RequireDualStack") => causes.push(cause(
                "spec.ipFamilyPolicy".into(),
                "FieldValueInvalid",
                "Invalid value: \"RequireDualStack\": this cluster is not configured for dual-stack services".into(),
            )),
            Some(other) => causes.push(cause(
                "spec.ipFamilyPolicy".into(),
                "FieldValueNotSupported",
                format!("Unsupported value: \"{other}\": supported values: \"PreferDualStack\", \"RequireDualStack\", \"SingleStack\""),
            )),
        }
        for (i, f) in spec["ipFamilies"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            let f = f.as_str().unwrap_or_default();
            if f != "IPv4" {
                let msg = if f == "IPv6" {
                    "not configured on this cluster".to_string()
                } else {
                    "supported values: \"IPv4\", \"IPv6\"".to_string()
                };
                causes.push(cause(
                    format!("spec.ipFamilies[{i}]"),
                    "FieldValueInvalid",
                    format!("Invalid value: \"{f}\": {msg}"),
                ));
            }
        }
        if ips.iter().any(|ip| ip.contains(':')) {
            causes.push(cause(
                "spec.clusterIPs".into(),
                "FieldValueInvalid",
                format!(
                    "Invalid value: {}: IPv6 is not configured on this cluster",
                    go_strings(&ips)
                ),
            ));
        }
    }
    if !needs_health_check(spec) && spec["healthCheckNodePort"].as_i64().is_some_and(|n| n != 0) {
        causes.push(cause(
            "spec.healthCheckNodePort".into(),
            "FieldValueForbidden",
            "Forbidden: may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'".into(),
        ));
    }
    let mut names = HashSet::new();
    let mut node_ports = HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let at = format!("spec.ports[{i}]");
        let name = p["name"].as_str().unwrap_or_default();
        if ports.len() > 1 && name.is_empty() {
            causes.push(cause(
                format!("{at}.name"),
                "FieldValueRequired",
                "Required value".into(),
            ));
        }
        if !name.is_empty() && !names.insert(name) {
            causes.push(cause(
                format!("{at}.name"),
                "FieldValueDuplicate",
                format!("Duplicate value: \"{name}\""),
            ));
        }
        let port = p["port"].as_i64().unwrap_or(0);
        if !(1..=65535).contains(&port) {
            causes.push(cause(
                format!("{at}.port"),
                "FieldValueInvalid",
                format!("Invalid value: {port}: must be between 1 and 65535, inclusive"),
            ));
        }
        let protocol = p["protocol"].as_str().unwrap_or("TCP");
        if !["TCP", "UDP", "SCTP"].contains(&protocol) {
            causes.push(cause(
                format!("{at}.protocol"),
                "FieldValueNotSupported",
                format!("Unsupported value: \"{protocol}\": supported values: \"SCTP\", \"TCP\", \"UDP\""),
            ));
        }
        let Some(np) = p["nodePort"].as_i64().filter(|n| *n != 0) else {
            continue;
        };
        if !needs_node_ports(spec) {
            causes.push(cause(
                format!("{at}.nodePort"),
                "FieldValueForbidden",
                format!("Forbidden: may not be used when `type` is '{ty}'"),
            ));
        } else if !(1..=65535).contains(&np) {
            causes.push(cause(
                format!("{at}.nodePort"),
                "FieldValueInvalid",
                format!("Invalid value: {np}: must be between 1 and 65535, inclusive"),
            ));
        } else if !node_ports.insert((np, protocol)) {
            causes.push(cause(
                format!("{at}.nodePort"),
                "FieldValueDuplicate",
                format!("Duplicate value: {np}"),
            ));
        }
    }
}

/// kube-apiserver's update rules: a ClusterIP may not change once set
/// (headless stays headless), unless the type goes to or from
/// ExternalName.
pub(super) fn validate_update(old: &Value, new: &Value, causes: &mut Vec<Cause>) {
    let (o, n) = (&old["spec"], &new["spec"]);
    if !needs_cluster_ip(o) || !needs_cluster_ip(n) {
        return;
    }
    if is_headless(o) && is_headless(n) {
        return;
    }
    let (old_ips, new_ips) = (cluster_ips(o), cluster_ips(n));
    if new_ips.is_empty() && !old_ips.is_empty() {
        causes.push(cause(
            "spec.clusterIPs[0]".into(),
            "FieldValueInvalid",
            format!(
                "Invalid value: {}: primary clusterIP can not be unset",
                go_strings(&new_ips)
            ),
        ));
        return;
    }
    for (i, ip) in old_ips.iter().enumerate() {
        if new_ips.get(i).is_some_and(|n| n != ip) {
            causes.push(cause(
                format!("spec.clusterIPs[{i}]"),
                "FieldValueInvalid",
                format!(
                    "Invalid value: {}: may not change once set",
                    go_strings(&new_ips)
                ),
            ));
        }
    }
}

/// Before an update is checked: what the client left out is what the
/// Service has (kube's `patchAllocatedValues`: a PUT without `clusterIP`
/// or `nodePort` keeps them), a changed `clusterIP` alone moves
/// `clusterIPs[0]` with it (to be refused as a change), and the fields
/// a new type has no use for go (kube's `dropTypeDependentFields`).
pub(super) fn carry_over(old: &Value, new: &mut Value) {
    let o = &old["spec"];
    let Some(n) = new.get_mut("spec").filter(|s| s.is_object()) else {
        return;
    };
    if needs_cluster_ip(o) && needs_cluster_ip(n) {
        let ip = n["clusterIP"].as_str().unwrap_or_default().to_string();
        let ips = cluster_ips(n);
        if ip.is_empty() && ips.is_empty() {
            n["clusterIP"] = o["clusterIP"].clone();
            n["clusterIPs"] = o["clusterIPs"].clone();
        } else if !ip.is_empty() && ips == cluster_ips(o) && ip != o["clusterIP"] {
            let mut ips = ips;
            if let Some(first) = ips.first_mut() {
                *first = ip;
            }
            n["clusterIPs"] = json!(ips);
        }
        for f in ["ipFamilies", "ipFamilyPolicy"] {
            if n.get(f).is_none_or(Value::is_null) && o.get(f).is_some() {
                n[f] = o[f].clone();
            }
        }
    }
    if needs_cluster_ip(o) && !needs_cluster_ip(n) {
        // To ExternalName: the addresses go, unless the client changed them.
        let m = n.as_object_mut().expect("checked above");
        for f in ["clusterIP", "clusterIPs", "ipFamilies", "ipFamilyPolicy"] {
            if m.get(f) == o.get(f) {
                m.remove(f);
            }
        }
    }
    let old_ports: Vec<&Value> = o["ports"].as_array().into_iter().flatten().collect();
    if needs_node_ports(o) && needs_node_ports(n) {
        for p in n["ports"].as_array_mut().into_iter().flatten() {
            if p["nodePort"].as_i64().unwrap_or(0) != 0 {
                continue;
            }
            let same = old_ports.iter().find(|q| {
                q["port"] == p["port"]
                    && q["protocol"].as_str().unwrap_or("TCP")
                        == p["protocol"].as_str().unwrap_or("TCP")
            });
            if let Some(np) = same.and_then(|q| q["nodePort"].as_i64()) {
                p["nodePort"] = json!(np);
            }
        }
    }
    if needs_health_check(o) {
        let unset = n["healthCheckNodePort"].as_i64().unwrap_or(0) == 0;
        if needs_health_check(n) && unset && o["healthCheckNodePort"].is_i64() {
            n["healthCheckNodePort"] = o["healthCheckNodePort"].clone();
        } else if !needs_health_check(n) && n["healthCheckNodePort"] == o["healthCheckNodePort"] {
            // No longer Local (or LoadBalancer): the health check port goes.
            if let Some(m) = n.as_object_mut() {
                m.remove("healthCheckNodePort");
            }
        }
    }
    if needs_node_ports(o) && !needs_node_ports(n) {
        // To ClusterIP: the node ports go, unless the client changed them.
        for p in n["ports"].as_array_mut().into_iter().flatten() {
            let kept = old_ports
                .iter()
                .any(|q| q["port"] == p["port"] && q["nodePort"] == p["nodePort"]);
            if kept {
                if let Some(m) = p.as_object_mut() {
                    m.remove("nodePort");
                }
            }
        }
    }
}

/// One record the write needs, and whether the client asked for it (a
/// held requested address is the client's error; a held allocated one
/// means another apiserver was quicker, and we pick again).
#[derive(Debug)]
struct Claim {
    key: String,
    requested: Option<Cause>,
}

fn ip_cause(ips: &[String], ip: Ipv4Addr, why: &str) -> Cause {
    cause(
        "spec.clusterIPs".into(),
        "FieldValueInvalid",
        format!(
            "Invalid value: {}: failed to allocate IP {ip}: {why}",
            go_strings(ips)
        ),
    )
}

fn port_cause(i: usize, port: i64, why: &str) -> Cause {
    cause(
        format!("spec.ports[{i}].nodePort"),
        "FieldValueInvalid",
        format!("Invalid value: {port}: {why}"),
    )
}

/// A free offset in `1..=size-2`… given as `(lo, hi)`: dynamic picks
/// prefer the upper band above the `static_band` (kube's static
/// subrange, kept for requested addresses), starting at random.
fn pick(lo: u64, hi: u64, static_band: u64, free: impl Fn(u64) -> bool) -> Option<u64> {
    let split = (lo + static_band).min(hi);
    let mut rng = rand::rng();
    for (a, b) in [(split, hi), (lo, split.saturating_sub(1))] {
        if b < a {
            continue;
        }
        let n = b - a + 1;
        let start = rng.random_range(0..n);
        for i in 0..n {
            let off = a + (start + i) % n;
            if free(off) {
                return Some(off);
            }
        }
    }
    None
}

/// Fills in `obj`'s ClusterIP and NodePorts (requested ones checked
/// against the ranges, the others picked among those not in `held_ips`
/// / `held_ports`); the records the write must claim. `own` are keys the
/// Service holds already (an update).
fn fill(
    ranges: &ServiceRanges,
    obj: &mut Value,
    name: &str,
    held_ips: &HashSet<String>,
    held_ports: &HashSet<String>,
    own: &HashSet<String>,
) -> Result<Vec<Claim>> {
    let mut claims = Vec::new();
    let mut causes = Vec::new();
    let spec = &mut obj["spec"];
    if needs_cluster_ip(spec) && !is_headless(spec) {
        let requested = spec["clusterIP"].as_str().unwrap_or_default().to_string();
        if requested.is_empty() {
            let cidr = ranges.cluster_ip;
            let size = cidr.size();
            let band = (size / 16).clamp(16, 256);
            let free = |off: u64| !held_ips.contains(&cidr.nth(off).to_string());
            let Some(off) = pick(1, size - 2, band, free) else {
                return Err(Error::Internal(
                    "failed to allocate a serviceIP: range is full".into(),
                ));
            };
            let ip = cidr.nth(off);
            spec["clusterIP"] = json!(ip.to_string());
            spec["clusterIPs"] = json!([ip.to_string()]);
            claims.push(Claim {
                key: format!("{IP_PREFIX}{ip}"),
                requested: None,
            });
        } else if let Ok(ip) = requested.parse::<Ipv4Addr>() {
            let ips = vec![requested.clone()];
            let key = format!("{IP_PREFIX}{ip}");
            if !ranges.cluster_ip.usable(ip) {
                causes.push(ip_cause(
                    &ips,
                    ip,
                    &format!(
                        "the provided IP ({ip}) is not in the valid range. The range of valid IPs is {}",
                        ranges.cluster_ip
                    ),
                ));
            } else if !own.contains(&key) {
                let taken = ip_cause(&ips, ip, "provided IP is already allocated");
                if held_ips.contains(&ip.to_string()) {
                    causes.push(taken);
                } else {
                    claims.push(Claim {
                        key,
                        requested: Some(taken),
                    });
                }
            }
        }
    }
    if needs_node_ports(spec) {
        let range = ranges.node_ports;
        let mut mine: HashMap<(i64, String), i64> = HashMap::new();
        let mut used: HashSet<i64> = HashSet::new();
        let ports = spec["ports"].as_array_mut();
        let ports: &mut [Value] = match ports {
            Some(p) => p.as_mut_slice(),
            None => &mut [],
        };
        // Requested first, so allocated ones avoid them.
        for (i, p) in ports.iter().enumerate() {
            let Some(np) = p["nodePort"].as_i64().filter(|n| *n > 0) else {
                continue;
            };
            let protocol = p["protocol"].as_str().unwrap_or("TCP").to_string();
            mine.insert((p["port"].as_i64().unwrap_or(0), protocol), np);
            if !used.insert(np) {
                continue; // the same node port for another protocol
            }
            let key = format!("{NODE_PORT_PREFIX}{np}");
            if own.contains(&key) {
                continue;
            }
            if !range.contains(np) {
                causes.push(port_cause(
                    i,
                    np,
                    &format!("provided port is not in the valid range. The range of valid ports is {range}"),
                ));
            } else if held_ports.contains(&np.to_string()) {
                causes.push(port_cause(i, np, "provided port is already allocated"));
            } else {
                claims.push(Claim {
                    key,
                    requested: Some(port_cause(i, np, "provided port is already allocated")),
                });
            }
        }
        let size = u64::from(range.last - range.first) + 1;
        let band = (size / 32).clamp(16, 128);
        for p in ports.iter_mut() {
            if p["nodePort"].as_i64().is_some_and(|n| n > 0) {
                continue;
            }
            // Ports of one number share a node port across protocols.
            let port = p["port"].as_i64().unwrap_or(0);
            if let Some(np) = mine
                .iter()
                .find(|((q, _), _)| *q == port)
                .map(|(_, np)| *np)
            {
                p["nodePort"] = json!(np);
                continue;
            }
            let free = |off: u64| {
                let np = i64::from(range.first) + off as i64;
                !used.contains(&np) && !held_ports.contains(&np.to_string())
            };
            let Some(off) = pick(0, size - 1, band, free) else {
                return Err(Error::Internal(
                    "failed to allocate a nodePort: range is full".into(),
                ));
            };
            let np = i64::from(range.first) + off as i64;
            used.insert(np);
            let protocol = p["protocol"].as_str().unwrap_or("TCP").to_string();
            mine.insert((port, protocol), np);
            p["nodePort"] = json!(np);
            claims.push(Claim {
                key: format!("{NODE_PORT_PREFIX}{np}"),
                requested: None,
            });
        }
        if needs_health_check(spec) {
            let field = "spec.healthCheckNodePort".to_string();
            match spec["healthCheckNodePort"].as_i64().filter(|n| *n != 0) {
                Some(np) => {
                    let key = format!("{NODE_PORT_PREFIX}{np}");
                    let why = |why: &str| {
                        cause(
                            field.clone(),
                            "FieldValueInvalid",
                            format!("Invalid value: {np}: failed to allocate requested HealthCheck NodePort {np}: {why}"),
                        )
                    };
                    if used.contains(&np) {
                        // One of this Service's own node ports (also on update).
                        causes.push(why("provided port is already allocated"));
                    } else if own.contains(&key) {
                        // Held by this Service already (an update).
                    } else if !range.contains(np) {
                        causes.push(why(&format!(
                            "provided port is not in the valid range. The range of valid ports is {range}"
                        )));
                    } else if held_ports.contains(&np.to_string()) {
                        causes.push(why("provided port is already allocated"));
                    } else {
                        claims.push(Claim {
                            key,
                            requested: Some(why("provided port is already allocated")),
                        });
                    }
                }
                None => {
                    let free = |off: u64| {
                        let np = i64::from(range.first) + off as i64;
                        !used.contains(&np) && !held_ports.contains(&np.to_string())
                    };
                    let Some(off) = pick(0, size - 1, band, free) else {
                        return Err(Error::Internal(
                            "failed to allocate a HealthCheck NodePort 0: range is full".into(),
                        ));
                    };
                    let np = i64::from(range.first) + off as i64;
                    spec["healthCheckNodePort"] = json!(np);
                    claims.push(Claim {
                        key: format!("{NODE_PORT_PREFIX}{np}"),
                        requested: None,
                    });
                }
            }
        }
    }
    if !causes.is_empty() {
        return Err(invalid(name, causes));
    }
    Ok(claims)
}

/// What to do when the claim Txn found `taken` held: the client's error
/// for a requested record, `Ok` to pick again for an allocated one.
fn on_taken(name: &str, claims: Vec<Claim>, taken: &[String]) -> Result<()> {
    let causes: Vec<Cause> = claims
        .into_iter()
        .filter(|c| taken.contains(&c.key))
        .filter_map(|c| c.requested)
        .collect();
    if causes.is_empty() {
        Ok(())
    } else {
        Err(invalid(name, causes))
    }
}

async fn held_sets(s: &AppState) -> Result<(HashSet<String>, HashSet<String>)> {
    Ok((
        s.registry.held(IP_PREFIX).await?,
        s.registry.held(NODE_PORT_PREFIX).await?,
    ))
}

/// Stores a new Service with its addresses (the write and the records of
/// its addresses in one Txn); with `dry_run`, the Service it would be.
pub(crate) async fn create(
    s: &AppState,
    ns: &str,
    name: &str,
    obj: Value,
    dry_run: bool,
) -> Result<Object> {
    let r = services();
    for _ in 0..ALLOCATION_ATTEMPTS {
        let (ips, ports) = held_sets(s).await?;
        let mut o = obj.clone();
        let claims = fill(&s.services, &mut o, name, &ips, &ports, &HashSet::new())?;
        if dry_run {
            if s.registry.get(r, Some(ns), name).await.is_ok() {
                return Err(Error::AlreadyExists {
                    group: r.group,
                    resource: r.name,
                    name: name.to_string(),
                });
            }
            return Object::from_value(r.key(Some(ns), name), &mut o, 0);
        }
        let keys: Vec<String> = claims.iter().map(|c| c.key.clone()).collect();
        match s
            .registry
            .create_claiming(r, Some(ns), name, o, &keys)
            .await?
        {
            Claimed::Stored(o) => return Ok(o),
            Claimed::Taken(taken) => on_taken(name, claims, &taken)?,
        }
    }
    Err(Error::Internal(format!(
        "failed to allocate addresses for service {ns}/{name}: too many concurrent allocations"
    )))
}

/// Replaces a Service at `rv`: addresses the new spec needs are claimed,
/// those it no longer uses released, with the write.
pub(super) async fn update(
    s: &AppState,
    ns: &str,
    name: &str,
    old: &Value,
    obj: Value,
    rv: i64,
) -> Result<Object> {
    let r = services();
    let own: HashSet<String> = crate::registry::held_keys(old).into_iter().collect();
    for _ in 0..ALLOCATION_ATTEMPTS {
        let (ips, ports) = held_sets(s).await?;
        let mut o = obj.clone();
        let claims = fill(&s.services, &mut o, name, &ips, &ports, &own)?;
        let keys: Vec<String> = claims.iter().map(|c| c.key.clone()).collect();
        let now: HashSet<String> = crate::registry::held_keys(&o).into_iter().collect();
        let releases: Vec<String> = own.difference(&now).cloned().collect();
        match s
            .registry
            .update_claiming(r, Some(ns), name, o, rv, &keys, &releases)
            .await?
        {
            Claimed::Stored(o) => return Ok(o),
            Claimed::Taken(taken) => on_taken(name, claims, &taken)?,
        }
    }
    Err(Error::Internal(format!(
        "failed to allocate addresses for service {ns}/{name}: too many concurrent allocations"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges() -> ServiceRanges {
        ServiceRanges {
            cluster_ip: "127.96.0.0/24".parse().unwrap(),
            node_ports: "30000-30009".parse().unwrap(),
        }
    }

    #[test]
    fn fill_allocates_and_checks_requests() {
        let none = HashSet::new();
        let mut svc = json!({"spec": {"type": "NodePort", "ports": [
            {"port": 53, "protocol": "TCP"}, {"port": 53, "protocol": "UDP"},
            {"port": 80, "protocol": "TCP", "nodePort": 30005}]}});
        let claims = fill(&ranges(), &mut svc, "x", &none, &none, &none).unwrap();
        let ip: Ipv4Addr = svc["spec"]["clusterIP"].as_str().unwrap().parse().unwrap();
        assert!(ranges().cluster_ip.usable(ip));
        let ports = &svc["spec"]["ports"];
        assert_eq!(ports[0]["nodePort"], ports[1]["nodePort"]);
        assert_ne!(ports[0]["nodePort"], 30005);
        assert_eq!(claims.len(), 3, "one IP, two node ports");

        let mut out = json!({"spec": {"clusterIP": "10.0.0.1", "ports": [{"port": 1}]}});
        let err = fill(&ranges(), &mut out, "x", &none, &none, &none).unwrap_err();
        assert!(
            err.to_string()
                .contains("not in the valid range. The range of valid IPs is 127.96.0.0/24"),
            "{err}"
        );

        let held: HashSet<String> = ["127.96.0.7".to_string()].into();
        let mut taken = json!({"spec": {"clusterIP": "127.96.0.7", "ports": [{"port": 1}]}});
        let err = fill(&ranges(), &mut taken, "x", &held, &none, &none).unwrap_err();
        assert!(
            err.to_string().contains("provided IP is already allocated"),
            "{err}"
        );

        let full: HashSet<String> = (30000..=30009).map(|p: i64| p.to_string()).collect();
        let mut np = json!({"spec": {"type": "NodePort", "ports": [{"port": 1}]}});
        assert!(matches!(
            fill(&ranges(), &mut np, "x", &none, &full, &none),
            Err(Error::Internal(_))
        ));
        let mut headless = json!({"spec": {"clusterIP": "None"}});
        assert!(fill(&ranges(), &mut headless, "x", &none, &none, &none)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn updates_keep_addresses_and_refuse_changes() {
        let old = json!({"spec": {"type": "NodePort", "clusterIP": "127.96.0.5",
            "clusterIPs": ["127.96.0.5"], "ports": [{"port": 80, "protocol": "TCP", "nodePort": 30001}]}});
        let mut put =
            json!({"spec": {"type": "NodePort", "ports": [{"port": 80, "protocol": "TCP"}]}});
        carry_over(&old, &mut put);
        assert_eq!(put["spec"]["clusterIP"], "127.96.0.5");
        assert_eq!(put["spec"]["ports"][0]["nodePort"], 30001);
        let mut causes = Vec::new();
        validate_update(&old, &put, &mut causes);
        assert!(causes.is_empty());

        let mut moved = old.clone();
        moved["spec"]["clusterIP"] = json!("127.96.0.6");
        carry_over(&old, &mut moved);
        validate_update(&old, &moved, &mut causes);
        assert_eq!(causes[0].field, "spec.clusterIPs[0]");
        assert!(causes[0].message.ends_with("may not change once set"));

        let mut to_cluster_ip = old.clone();
        to_cluster_ip["spec"]["type"] = json!("ClusterIP");
        carry_over(&old, &mut to_cluster_ip);
        assert!(to_cluster_ip["spec"]["ports"][0].get("nodePort").is_none());
    }

    #[test]
    fn health_check_node_port_for_local_load_balancers() {
        let none = HashSet::new();
        let lb = |etp: &str| {
            json!({"spec": {"type": "LoadBalancer", "externalTrafficPolicy": etp,
                "ports": [{"port": 80, "protocol": "TCP"}]}})
        };
        let mut local = lb("Local");
        let claims = fill(&ranges(), &mut local, "x", &none, &none, &none).unwrap();
        let hc = local["spec"]["healthCheckNodePort"]
            .as_i64()
            .expect("allocated");
        assert!((30000..=30009).contains(&hc));
        assert_ne!(local["spec"]["ports"][0]["nodePort"], hc);
        assert_eq!(claims.len(), 3, "IP, node port, health check port");
        let mut cluster = lb("Cluster");
        fill(&ranges(), &mut cluster, "x", &none, &none, &none).unwrap();
        assert!(cluster["spec"].get("healthCheckNodePort").is_none());

        // Requested: range and holders checked, with kube's messages.
        let mut out = lb("Local");
        out["spec"]["healthCheckNodePort"] = json!(40000);
        let err = fill(&ranges(), &mut out, "x", &none, &none, &none).unwrap_err();
        assert!(err.to_string().contains("failed to allocate requested HealthCheck NodePort 40000: provided port is not in the valid range. The range of valid ports is 30000-30009"), "{err}");
        let held: HashSet<String> = ["30003".to_string()].into();
        let mut taken = lb("Local");
        taken["spec"]["healthCheckNodePort"] = json!(30003);
        let err = fill(&ranges(), &mut taken, "x", &none, &held, &none).unwrap_err();
        assert!(
            err.to_string()
                .contains("provided port is already allocated"),
            "{err}"
        );
        // Not one of the Service's own node ports, on create or update.
        let mut own_port = local.clone();
        own_port["spec"]["healthCheckNodePort"] = own_port["spec"]["ports"][0]["nodePort"].clone();
        let mine: HashSet<String> = [
            hc,
            own_port["spec"]["healthCheckNodePort"].as_i64().unwrap(),
        ]
        .map(|p| format!("{NODE_PORT_PREFIX}{p}"))
        .into();
        let err = fill(&ranges(), &mut own_port, "x", &none, &none, &mine).unwrap_err();
        assert!(
            err.to_string()
                .contains("failed to allocate requested HealthCheck NodePort"),
            "{err}"
        );
        // Only for Local load balancers.
        let mut causes = Vec::new();
        let mut np = json!({"spec": {"type": "NodePort", "healthCheckNodePort": 30002, "ports": [{"port": 1}]}});
        validate(&np, &mut causes);
        assert_eq!(causes[0].field, "spec.healthCheckNodePort");
        assert!(causes[0]
            .message
            .contains("may only be set when `type` is 'LoadBalancer'"));
        np["spec"]["type"] = json!("LoadBalancer");
        causes.clear();
        validate(&np, &mut causes);
        assert_eq!(causes.len(), 1, "externalTrafficPolicy is not Local");

        // Updates keep it; leaving Local drops it (released with the write).
        let mut put = lb("Local");
        carry_over(&local, &mut put);
        assert_eq!(put["spec"]["healthCheckNodePort"], hc);
        let mut to_cluster = local.clone();
        to_cluster["spec"]["externalTrafficPolicy"] = json!("Cluster");
        carry_over(&local, &mut to_cluster);
        assert!(to_cluster["spec"].get("healthCheckNodePort").is_none());
    }
}
