//! Field ownership across the `scale` subresource: a write of an
//! `autoscaling/v1 Scale` is managed on the Scale (so an apply there
//! conflicts with whoever owns the replicas, and may force them), and
//! recorded on the parent, whose only field a Scale writes is its
//! replicas (`spec.replicas`, or a CRD's `specReplicasPath`). Kubernetes'
//! `ScaleHandler` does the same.
//!
//! Worked example: a Deployment whose `spec.replicas` `apply_test` owns
//! (it applied it) is applied through its Scale by `apply_scale` with
//! `force`:
//!
//! ```text
//! parent entries        apply_test  Apply              {spec.replicas, spec.selector, …}
//! to_subresource   →    apply_test  Apply              {spec.replicas}   (of the Scale)
//! the apply        →    apply_scale Apply  scale       {spec.replicas}   (apply_test lost it, gone)
//! to_parent        →    apply_test  Apply              {spec.selector, …}
//!                       apply_scale Apply  scale apps/v1 {spec.replicas}
//! ```
//!
//! Entries keep their identity (manager, operation, subresource, and an
//! update's apiVersion) across the conversion, so a conflict names the
//! parent's owner as it is recorded there.

use super::set::{Element, Path};
use super::{Entry, FieldSet};

/// `spec.replicas` in a Scale.
fn scale_replicas() -> Path {
    vec!["f:spec".into(), "f:replicas".into()]
}

/// The field path of a simple JSONPath (`.spec.replicas`).
pub fn path(json_path: &str) -> Path {
    json_path
        .split('.')
        .filter(|s| !s.is_empty())
        .map(|s| -> Element { format!("f:{s}") })
        .collect()
}

fn same(a: &Entry, b: &Entry) -> bool {
    a.manager == b.manager
        && a.operation == b.operation
        && a.subresource == b.subresource
        && (a.operation == super::Operation::Apply || a.api_version == b.api_version)
}

/// The Scale's entries of the parent's `entries`: each that owns the
/// parent's `replicas` owns the Scale's `spec.replicas`, and nothing else.
pub fn to_subresource(entries: &[Entry], replicas: &Path) -> Vec<Entry> {
    entries
        .iter()
        .filter(|e| e.fields.contains(replicas))
        .map(|e| Entry {
            fields: [scale_replicas()].into_iter().collect(),
            ..e.clone()
        })
        .collect()
}

/// The parent's entries after a write of its Scale left `scale` (the
/// Scale's entries): a parent entry whose manager lost the Scale's
/// replicas loses the parent's (and goes when it owned nothing else), and
/// a Scale entry that owns the replicas and is new to the parent owns
/// them there, at the parent's `api_version`.
pub fn to_parent(
    entries: &[Entry],
    scale: &[Entry],
    replicas: &Path,
    api_version: &str,
) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut matched = vec![false; scale.len()];
    for e in entries {
        if !e.fields.contains(replicas) {
            out.push(e.clone());
            continue;
        }
        match scale.iter().position(|s| same(s, e)) {
            Some(i) if scale[i].fields.contains(&scale_replicas()) => {
                matched[i] = true;
                out.push(Entry {
                    time: scale[i].time.clone(),
                    ..e.clone()
                });
            }
            _ => {
                let rest = e
                    .fields
                    .difference(&[replicas.clone()].into_iter().collect());
                if !rest.is_empty() {
                    out.push(Entry {
                        fields: rest,
                        ..e.clone()
                    });
                }
            }
        }
    }
    for (s, _) in scale.iter().zip(matched).filter(|(_, m)| !m) {
        if !s.fields.contains(&scale_replicas()) {
            continue;
        }
        let fields: FieldSet = [replicas.clone()].into_iter().collect();
        match out.iter_mut().find(|e| same(e, s)) {
            // The same manager owns other fields of the parent already.
            Some(e) if e.api_version == api_version => {
                e.fields = e.fields.union(&fields);
                e.time = s.time.clone();
            }
            _ => out.push(Entry {
                api_version: api_version.to_string(),
                fields,
                ..s.clone()
            }),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::super::{apply, update, Operation, Types, Writer};
    use super::*;

    fn writer<'a>(manager: &'a str, subresource: &'a str, api_version: &'a str) -> Writer<'a> {
        Writer {
            manager,
            api_version,
            subresource,
            types: Types::built_in(),
            now: "2026-01-01T00:00:00Z",
        }
    }

    fn scale(replicas: i64) -> serde_json::Value {
        json!({"apiVersion": "autoscaling/v1", "kind": "Scale",
               "metadata": {"name": "d"}, "spec": {"replicas": replicas},
               "status": {"replicas": 0}})
    }

    #[test]
    fn applies_through_the_scale_conflict_force_and_move_ownership() {
        let deployment = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "d"},
            "spec": {"replicas": 1, "selector": {"matchLabels": {"a": "b"}}}});
        let parent = apply(
            Vec::new(),
            &json!({}),
            &deployment,
            &writer("apply_test", "", "apps/v1"),
            false,
        )
        .unwrap()
        .entries;
        let replicas = path(".spec.replicas");
        let on_scale = to_subresource(&parent, &replicas);
        assert_eq!(on_scale.len(), 1);
        assert_eq!(on_scale[0].fields.len(), 1);

        let w = writer("apply_scale", "scale", "autoscaling/v1");
        let conflicts = apply(on_scale.clone(), &scale(1), &scale(17), &w, false).unwrap_err();
        assert_eq!(conflicts[0].manager, "\"apply_test\"");
        assert_eq!(conflicts[0].field, ".spec.replicas");

        let forced = apply(on_scale, &scale(1), &scale(17), &w, true).unwrap();
        let back = to_parent(&parent, &forced.entries, &replicas, "apps/v1");
        let owners: Vec<&str> = back
            .iter()
            .filter(|e| e.fields.contains(&replicas))
            .map(|e| e.manager.as_str())
            .collect();
        assert_eq!(owners, ["apply_scale"]);
        let mine = back.iter().find(|e| e.manager == "apply_scale").unwrap();
        assert_eq!(
            (
                mine.operation,
                mine.subresource.as_str(),
                mine.api_version.as_str()
            ),
            (Operation::Apply, "scale", "apps/v1")
        );
        // apply_test keeps the selector.
        assert!(back
            .iter()
            .any(|e| e.manager == "apply_test" && !e.fields.is_empty()));

        // The same replicas applied by another manager: both own them.
        let on_scale = to_subresource(&back, &replicas);
        let co = writer("co_owning", "scale", "autoscaling/v1");
        let shared = apply(on_scale, &scale(17), &scale(17), &co, false).unwrap();
        let back = to_parent(&back, &shared.entries, &replicas, "apps/v1");
        let mut owners: Vec<&str> = back
            .iter()
            .filter(|e| e.fields.contains(&replicas))
            .map(|e| e.manager.as_str())
            .collect();
        owners.sort_unstable();
        assert_eq!(owners, ["apply_scale", "co_owning"]);

        // An update of the Scale takes them from both.
        let on_scale = to_subresource(&back, &replicas);
        let kubectl = writer("kubectl", "scale", "autoscaling/v1");
        let updated = update(on_scale, &scale(17), &scale(5), &kubectl);
        let back = to_parent(&back, &updated, &replicas, "apps/v1");
        let owners: Vec<(&str, &str)> = back
            .iter()
            .filter(|e| e.fields.contains(&replicas))
            .map(|e| (e.manager.as_str(), e.api_version.as_str()))
            .collect();
        assert_eq!(owners, [("kubectl", "apps/v1")]);
        assert!(!back.iter().any(|e| e.manager == "co_owning"));
    }

    #[test]
    fn custom_paths_convert() {
        assert_eq!(path(".spec.size"), vec!["f:spec", "f:size"]);
        let e = Entry {
            manager: "m".into(),
            operation: Operation::Update,
            api_version: "example.com/v1".into(),
            time: String::new(),
            subresource: String::new(),
            fields: [path(".spec.size"), path(".spec.other")]
                .into_iter()
                .collect(),
        };
        let on_scale = to_subresource(std::slice::from_ref(&e), &path(".spec.size"));
        assert!(on_scale[0].fields.contains(&scale_replicas()));
        // Nothing changed on the Scale: the parent is as it was.
        let back = to_parent(
            std::slice::from_ref(&e),
            &on_scale,
            &path(".spec.size"),
            "example.com/v1",
        );
        assert_eq!(back, vec![e]);
    }
}
