//! discovery.k8s.io/v1 EndpointSlices: kube-apiserver's defaults and
//! validation (`ValidateEndpointSlice`), and their Table row (kubectl's
//! NAME ADDRESSTYPE PORTS ENDPOINTS AGE).

use serde_json::{json, Value};

use super::validation::{is_dns1123_label, is_dns1123_subdomain, set_default};
use crate::error::Cause;

/// Most endpoints one slice may hold.
pub const MAX_ENDPOINTS: usize = 1000;
/// Most ports one slice may hold.
pub const MAX_PORTS: usize = 20000;
/// Most addresses one endpoint may hold.
const MAX_ADDRESSES: usize = 100;

fn cause(field: String, reason: &'static str, message: String) -> Cause {
    Cause {
        field,
        reason,
        message,
    }
}

/// A port's protocol defaults to TCP and its name to `""`, as kube.
pub(super) fn default(obj: &mut Value) {
    for p in obj
        .get_mut("ports")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten()
        .filter(|p| p.is_object())
    {
        set_default(p, &["protocol"], json!("TCP"));
        set_default(p, &["name"], json!(""));
    }
}

/// `ValidateEndpointSlice` (and, with `old`, the update rule: the address
/// type is immutable).
pub(super) fn validate(obj: &Value, old: Option<&Value>, causes: &mut Vec<Cause>) {
    let address_type = obj["addressType"].as_str().unwrap_or_default();
    match address_type {
        "" => causes.push(cause(
            "addressType".into(),
            "FieldValueRequired",
            "Required value".into(),
        )),
        "IPv4" | "IPv6" | "FQDN" => {}
        other => causes.push(cause(
            "addressType".into(),
            "FieldValueNotSupported",
            format!(
                "Unsupported value: \"{other}\": supported values: \"FQDN\", \"IPv4\", \"IPv6\""
            ),
        )),
    }
    if let Some(old) = old {
        if old["addressType"] != obj["addressType"] {
            causes.push(cause(
                "addressType".into(),
                "FieldValueInvalid",
                format!("Invalid value: \"{address_type}\": field is immutable"),
            ));
        }
    }
    let endpoints = obj["endpoints"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if endpoints.len() > MAX_ENDPOINTS {
        causes.push(cause(
            "endpoints".into(),
            "FieldValueTooMany",
            format!(
                "Too many: {}: must have at most {MAX_ENDPOINTS} items",
                endpoints.len()
            ),
        ));
    }
    for (i, ep) in endpoints.iter().enumerate() {
        let at = format!("endpoints[{i}]");
        let addresses = ep["addresses"].as_array().map(Vec::as_slice).unwrap_or(&[]);
        if addresses.is_empty() {
            causes.push(cause(
                format!("{at}.addresses"),
                "FieldValueRequired",
                "Required value: must contain at least 1 address".into(),
            ));
        } else if addresses.len() > MAX_ADDRESSES {
            causes.push(cause(
                format!("{at}.addresses"),
                "FieldValueTooMany",
                format!(
                    "Too many: {}: must have at most {MAX_ADDRESSES} items",
                    addresses.len()
                ),
            ));
        }
        for (j, a) in addresses.iter().enumerate() {
            let a = a.as_str().unwrap_or_default();
            let ok = match address_type {
                "IPv4" => a.parse::<std::net::Ipv4Addr>().is_ok(),
                "IPv6" => a.parse::<std::net::Ipv6Addr>().is_ok(),
                "FQDN" => is_dns1123_subdomain(a),
                _ => true,
            };
            if !ok {
                let want = match address_type {
                    "IPv4" => "must be a valid IPv4 address",
                    "IPv6" => "must be a valid IPv6 address",
                    _ => "must be a valid DNS subdomain",
                };
                causes.push(cause(
                    format!("{at}.addresses[{j}]"),
                    "FieldValueInvalid",
                    format!("Invalid value: \"{a}\": {want}"),
                ));
            }
        }
        if let Some(node) = ep["nodeName"].as_str() {
            if !is_dns1123_subdomain(node) {
                causes.push(cause(
                    format!("{at}.nodeName"),
                    "FieldValueInvalid",
                    format!("Invalid value: \"{node}\": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"),
                ));
            }
        }
        if let Some(h) = ep["hostname"].as_str() {
            if !is_dns1123_label(h) {
                causes.push(cause(
                    format!("{at}.hostname"),
                    "FieldValueInvalid",
                    format!("Invalid value: \"{h}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"),
                ));
            }
        }
    }
    let ports = obj["ports"].as_array().map(Vec::as_slice).unwrap_or(&[]);
    if ports.len() > MAX_PORTS {
        causes.push(cause(
            "ports".into(),
            "FieldValueTooMany",
            format!(
                "Too many: {}: must have at most {MAX_PORTS} items",
                ports.len()
            ),
        ));
    }
    let mut names = std::collections::HashSet::new();
    for (i, p) in ports.iter().enumerate() {
        let at = format!("ports[{i}]");
        let name = p["name"].as_str().unwrap_or_default();
        if !name.is_empty() && !is_dns1123_label(name) {
            causes.push(cause(
                format!("{at}.name"),
                "FieldValueInvalid",
                format!("Invalid value: \"{name}\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character"),
            ));
        }
        if !names.insert(name) {
            causes.push(cause(
                format!("{at}.name"),
                "FieldValueDuplicate",
                format!("Duplicate value: \"{name}\""),
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
        if let Some(n) = p["port"].as_i64() {
            if !(1..=65535).contains(&n) {
                causes.push(cause(
                    format!("{at}.port"),
                    "FieldValueInvalid",
                    format!("Invalid value: {n}: must be between 1 and 65535, inclusive"),
                ));
            }
        }
    }
}

/// At most three items, then `+ N more...`, as kubectl prints lists.
fn at_most_three(items: Vec<String>) -> String {
    if items.is_empty() {
        return "<unset>".into();
    }
    let more = items.len().saturating_sub(3);
    let mut s = items.into_iter().take(3).collect::<Vec<_>>().join(",");
    if more > 0 {
        s += &format!(" + {more} more...");
    }
    s
}

/// The ADDRESSTYPE, PORTS and ENDPOINTS cells.
pub(super) fn cells(o: &Value) -> [Value; 3] {
    let ports: Vec<String> = o["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| match p["port"].as_i64() {
            Some(n) => n.to_string(),
            None => "<unset>".into(),
        })
        .collect();
    let addresses: Vec<String> = o["endpoints"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|e| {
            e["addresses"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str().map(str::to_string))
        })
        .collect();
    [
        o["addressType"].clone(),
        json!(at_most_three(ports)),
        json!(at_most_three(addresses)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slices_are_checked_and_printed_as_kube() {
        let ok = json!({"addressType": "IPv4",
            "endpoints": [{"addresses": ["127.1.0.2"], "conditions": {"ready": true}},
                          {"addresses": ["127.1.0.3"]}, {"addresses": ["127.1.0.4"]},
                          {"addresses": ["127.1.0.5"]}],
            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]});
        let mut causes = Vec::new();
        validate(&ok, None, &mut causes);
        assert!(causes.is_empty(), "{causes:?}");
        let [ty, ports, eps] = cells(&ok);
        assert_eq!((ty, ports), (json!("IPv4"), json!("80")));
        assert_eq!(eps, "127.1.0.2,127.1.0.3,127.1.0.4 + 1 more...");

        let bad = json!({"addressType": "IPv5",
            "endpoints": [{"addresses": []}],
            "ports": [{"port": 0, "protocol": "TCPX"}]});
        validate(&bad, None, &mut causes);
        let fields: Vec<&str> = causes.iter().map(|c| c.field.as_str()).collect();
        assert_eq!(
            fields,
            [
                "addressType",
                "endpoints[0].addresses",
                "ports[0].protocol",
                "ports[0].port"
            ]
        );
        causes.clear();
        let mut v6 = ok.clone();
        v6["addressType"] = json!("IPv6");
        validate(&v6, Some(&ok), &mut causes);
        assert!(causes
            .iter()
            .any(|c| c.message.ends_with("field is immutable")));
        assert!(causes
            .iter()
            .any(|c| c.field == "endpoints[0].addresses[0]"));
    }
}
