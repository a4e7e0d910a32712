//! A container's environment and command line, by Kubernetes' rules:
//! the image's env, then `POD_IP`/`HOSTNAME`, then `spec.containers[].env`
//! (literal values with `$(VAR)` expansion, or downward-API `fieldRef`s);
//! `command` replaces the image's entrypoint, `args` its default arguments.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod};

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

/// The environment of `container`, in order, later entries winning.
/// Errors are `CreateContainerConfigError` messages.
pub fn container_env(
    pod: &Pod,
    container: &Container,
    image: &ImageConfig,
    pod_ip: &str,
    host_ip: &str,
) -> Result<Vec<(String, String)>, String> {
    let mut env: Vec<(String, String)> = image.env.clone();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        env.retain(|(name, _)| *name != k);
        env.push((k, v));
    };
    set(&mut env, "POD_IP".into(), pod_ip.to_string());
    set(
        &mut env,
        "HOSTNAME".into(),
        pod.metadata.name.clone().unwrap_or_default(),
    );
    for var in container.env.iter().flatten() {
        let value = if let Some(from) = &var.value_from {
            if let Some(field) = &from.field_ref {
                field_value(pod, pod_ip, host_ip, &field.field_path)?
            } else if from.config_map_key_ref.is_some() || from.secret_key_ref.is_some() {
                return Err(format!(
                    "env {}: configMapKeyRef and secretKeyRef are not supported by the ballast kubelet",
                    var.name
                ));
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
}
