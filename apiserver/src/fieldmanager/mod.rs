//! Field management for server-side apply: which manager owns which
//! fields of an object (`metadata.managedFields`), kept on every write.
//!
//! Kubernetes' model (structured-merge-diff, and the apiserver's
//! `fieldmanager`), with one entry per manager identity — its name, its
//! operation (`Apply` or `Update`), its subresource, and for `Update` the
//! apiVersion it wrote:
//!
//! - an **update** (create, PUT, a non-apply PATCH) takes ownership of
//!   every field it changed, from whoever owned it, and nobody owns a
//!   removed field any longer;
//! - an **apply** merges its configuration into the live object, owns
//!   exactly the configuration's fields, and removes the fields it owned
//!   before and left out now unless another manager owns them too; a
//!   field it changes that another manager owns is a conflict (409),
//!   unless forced, which takes the field over.
//!
//! At most [`MAX_UPDATE_MANAGERS`] update entries are kept: the oldest
//! are merged into one `ancient-changes` entry, as Kubernetes does.
//!
//! # Layout
//! - `set` — [`FieldSet`] and its `FieldsV1` encoding.
//! - `types` — list and map types: the built-in table of list map keys
//!   (shared with strategic merge patch) and CRD schemas.
//! - `merge` — field sets of objects, merge, compare, removal.
//! - `scale` — entries carried between a parent and its `scale`
//!   subresource (kube's `ScaleHandler`).

mod merge;
pub mod scale;
mod set;
mod types;

pub use set::FieldSet;
pub use types::{list_map_keys, Types};

use serde_json::{json, Map, Value};

/// The most update entries one object keeps (Kubernetes' `DefaultMaxUpdateManagers`).
pub const MAX_UPDATE_MANAGERS: usize = 10;

/// The entry the oldest update entries are merged into.
const ANCIENT_CHANGES: &str = "ancient-changes";

/// The update entry that owns an object's fields on its first apply when
/// no write recorded managers before.
const BEFORE_FIRST_APPLY: &str = "before-first-apply";

/// The longest manager name (`FieldManagerMaxLength`).
pub const MAX_MANAGER_LEN: usize = 128;

/// The manager `kubectl apply --server-side` applies as.
pub const KUBECTL: &str = "kubectl";

/// The annotation client-side apply keeps its configuration in.
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The operation of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Apply,
    Update,
}

/// One `managedFields` entry.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub manager: String,
    pub operation: Operation,
    pub api_version: String,
    /// RFC 3339, seconds.
    pub time: String,
    /// `""` for the main resource, else e.g. `status`.
    pub subresource: String,
    pub fields: FieldSet,
}

/// Who writes, and how an object's fields are typed.
#[derive(Debug, Clone, Copy)]
pub struct Writer<'a> {
    pub manager: &'a str,
    pub api_version: &'a str,
    pub subresource: &'a str,
    pub types: Types<'a>,
    /// The write's time, RFC 3339.
    pub now: &'a str,
}

impl Writer<'_> {
    fn is(&self, e: &Entry, operation: Operation) -> bool {
        e.manager == self.manager
            && e.operation == operation
            && e.subresource == self.subresource
            && (operation == Operation::Apply || e.api_version == self.api_version)
    }

    fn entry(&self, operation: Operation, fields: FieldSet) -> Entry {
        Entry {
            manager: self.manager.to_string(),
            operation,
            api_version: self.api_version.to_string(),
            time: self.now.to_string(),
            subresource: self.subresource.to_string(),
            fields,
        }
    }
}

/// The entries of `obj`'s `metadata.managedFields`; `Err` says what is
/// malformed.
pub fn decode(obj: &Value) -> Result<Vec<Entry>, String> {
    let list = match obj.pointer("/metadata/managedFields") {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(list)) => list,
        Some(_) => return Err("managedFields must be a list".into()),
    };
    list.iter()
        .map(|e| {
            let text = |k: &str| {
                e.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            let operation = match e.get("operation").and_then(Value::as_str) {
                Some("Apply") => Operation::Apply,
                Some("Update") => Operation::Update,
                other => return Err(format!("unknown operation {other:?}")),
            };
            match e.get("fieldsType").and_then(Value::as_str) {
                None | Some("FieldsV1") => {}
                Some(other) => return Err(format!("unknown fieldsType {other:?}")),
            }
            let fields = match e.get("fieldsV1") {
                None | Some(Value::Null) => FieldSet::default(),
                Some(tree) => FieldSet::from_fields_v1(tree)?,
            };
            Ok(Entry {
                manager: text("manager"),
                operation,
                api_version: text("apiVersion"),
                time: text("time"),
                subresource: text("subresource"),
                fields,
            })
        })
        .collect()
}

/// The `managedFields` list of `entries`.
pub fn encode(entries: &[Entry]) -> Value {
    Value::Array(
        entries
            .iter()
            .map(|e| {
                let mut m = Map::new();
                m.insert("manager".into(), json!(e.manager));
                let op = match e.operation {
                    Operation::Apply => "Apply",
                    Operation::Update => "Update",
                };
                m.insert("operation".into(), json!(op));
                m.insert("apiVersion".into(), json!(e.api_version));
                m.insert("time".into(), json!(e.time));
                m.insert("fieldsType".into(), json!("FieldsV1"));
                m.insert("fieldsV1".into(), e.fields.to_fields_v1());
                if !e.subresource.is_empty() {
                    m.insert("subresource".into(), json!(e.subresource));
                }
                Value::Object(m)
            })
            .collect(),
    )
}

/// `obj` without `metadata.managedFields` (what field sets are taken of).
pub fn without_managed_fields(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(m) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        m.remove("managedFields");
    }
    v
}

/// Stores `entries` as `obj`'s `metadata.managedFields` (none: removed).
pub fn set_entries(obj: &mut Value, entries: &[Entry]) {
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if entries.is_empty() {
        meta.remove("managedFields");
    } else {
        meta.insert("managedFields".into(), encode(entries));
    }
}

/// The entries a write starts from: those the client sent when it sent
/// other ones than stored (`[{}]` clears them), else the stored ones.
/// Malformed entries from a client are ignored, as Kubernetes resets them.
pub fn base_entries(old: Option<&Value>, new: &Value) -> Vec<Entry> {
    let stored = || {
        old.map(|o| decode(o).unwrap_or_default())
            .unwrap_or_default()
    };
    let given = new.pointer("/metadata/managedFields");
    let old_given = old.and_then(|o| o.pointer("/metadata/managedFields"));
    match given {
        Some(Value::Array(list)) if !list.is_empty() && given != old_given => {
            if list
                .iter()
                .all(|e| e.as_object().is_some_and(Map::is_empty))
            {
                return Vec::new();
            }
            decode(new).unwrap_or_else(|_| stored())
        }
        _ => stored(),
    }
}

/// Records an update from `old` to `new` (both without managed fields;
/// `old` is `{}` for a create) by `w` over `entries`.
pub fn update(mut entries: Vec<Entry>, old: &Value, new: &Value, w: &Writer) -> Vec<Entry> {
    let c = merge::compare(old, new, w.types);
    if c.is_empty() {
        return entries;
    }
    for e in entries.iter_mut().filter(|e| !w.is(e, Operation::Update)) {
        e.fields = e
            .fields
            .difference(&c.added_or_modified)
            .difference(&c.removed);
    }
    match entries.iter_mut().find(|e| w.is(e, Operation::Update)) {
        Some(mine) => {
            mine.fields = mine
                .fields
                .difference(&c.removed)
                .union(&c.added_or_modified);
            mine.time = w.now.to_string();
        }
        None => entries.push(w.entry(Operation::Update, c.added_or_modified)),
    }
    entries.retain(|e| !e.fields.is_empty());
    cap(entries)
}

/// A field an apply would change that another manager owns.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Conflict {
    /// The owner as Kubernetes prints it: `"kubectl-client-side-apply" using apps/v1`.
    pub manager: String,
    /// The field as Kubernetes prints it: `.spec.replicas`.
    pub field: String,
}

fn print_manager(e: &Entry) -> String {
    let mut s = Value::String(e.manager.clone()).to_string();
    if !e.subresource.is_empty() {
        s += &format!(" with subresource {}", Value::String(e.subresource.clone()));
    }
    if e.operation == Operation::Update {
        s += &format!(" using {}", e.api_version);
    }
    s
}

/// The outcome of an apply: the new object and its entries.
#[derive(Debug)]
pub struct Applied {
    pub object: Value,
    pub entries: Vec<Entry>,
}

/// Applies `config` to `live` (both without managed fields; `live` is `{}`
/// when the object does not exist yet) as `w` over `entries`; the
/// conflicts, sorted, when another manager owns a field it changes and
/// `force` is off.
pub fn apply(
    mut entries: Vec<Entry>,
    live: &Value,
    config: &Value,
    w: &Writer,
    force: bool,
) -> Result<Applied, Vec<Conflict>> {
    let exists = live.as_object().is_some_and(|m| !m.is_empty());
    if exists && entries.is_empty() {
        let mut first = w.entry(Operation::Update, merge::field_set(live, w.types));
        first.manager = BEFORE_FIRST_APPLY.into();
        entries.push(first);
    }
    let mut object = merge::merge(live, config, w.types);
    let owned = merge::field_set(config, w.types);
    let mine = entries.iter().position(|e| w.is(e, Operation::Apply));
    let last = mine.map(|i| entries[i].fields.clone()).unwrap_or_default();
    let others = entries
        .iter()
        .filter(|e| !w.is(e, Operation::Apply))
        .fold(FieldSet::default(), |all, e| all.union(&e.fields));
    let disowned = last.difference(&owned).difference(&others);
    merge::remove(&mut object, &disowned, w.types);

    let c = merge::compare(live, &object, w.types);
    let mut conflicts = Vec::new();
    for e in entries.iter_mut().filter(|e| !w.is(e, Operation::Apply)) {
        let taken = e.fields.intersection(&c.added_or_modified);
        if !force {
            conflicts.extend(taken.iter().map(|p| Conflict {
                manager: print_manager(e),
                field: set::display(p),
            }));
        }
        e.fields = e.fields.difference(&taken).difference(&c.removed);
    }
    if !conflicts.is_empty() {
        conflicts.sort();
        return Err(conflicts);
    }
    let mut entry = w.entry(Operation::Apply, owned);
    if let Some(before) = mine.map(|i| &entries[i]) {
        // A no-op apply leaves its entry as it was (time included).
        if c.is_empty() && before.fields == entry.fields && before.api_version == entry.api_version
        {
            entry.time = before.time.clone();
        }
    }
    match mine {
        Some(i) => entries[i] = entry,
        None => entries.push(entry),
    }
    entries.retain(|e| !e.fields.is_empty());
    Ok(Applied {
        object,
        entries: cap(entries),
    })
}

/// Kubernetes' `lastAppliedManager`: the first `kubectl apply
/// --server-side` of an object kubectl applied client-side conflicts with
/// `kubectl-client-side-apply` on the fields it set; those conflicts are
/// allowed (the apply forced) when each conflicting field is one the
/// object's last-applied configuration sets, to the value it still has.
pub fn last_applied_allows(live: &Value, conflicts: &[Conflict], types: Types<'_>) -> bool {
    let Some(text) = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED))
        .and_then(Value::as_str)
    else {
        return false;
    };
    let Ok(last) = serde_json::from_str::<Value>(text) else {
        return false;
    };
    let current = merge::leaves(live, types);
    let unchanged: std::collections::HashSet<String> = merge::leaves(&last, types)
        .into_iter()
        .filter(|(path, v)| current.get(path) == Some(v))
        .map(|(path, _)| set::display(&path))
        .collect();
    !conflicts.is_empty() && conflicts.iter().all(|c| unchanged.contains(&c.field))
}

/// Merges the oldest update entries into `ancient-changes` until at most
/// [`MAX_UPDATE_MANAGERS`] are left (or only `ancient-changes` entries,
/// which a client may have sent several of, are left to merge).
fn cap(mut entries: Vec<Entry>) -> Vec<Entry> {
    let updates = |es: &[Entry]| {
        es.iter()
            .filter(|e| e.operation == Operation::Update)
            .count()
    };
    while updates(&entries) > MAX_UPDATE_MANAGERS {
        let Some(oldest) = entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.operation == Operation::Update && e.manager != ANCIENT_CHANGES)
            .min_by(|(_, a), (_, b)| a.time.cmp(&b.time))
            .map(|(i, _)| i)
        else {
            break;
        };
        let old = entries.remove(oldest);
        match entries
            .iter_mut()
            .find(|e| e.manager == ANCIENT_CHANGES && e.operation == Operation::Update)
        {
            Some(ancient) => ancient.fields = ancient.fields.union(&old.fields),
            None => entries.push(Entry {
                manager: ANCIENT_CHANGES.into(),
                subresource: String::new(),
                ..old
            }),
        }
    }
    entries
}

/// Kubernetes' message for apply conflicts: `Apply failed with 1 conflict:
/// conflict with "m" using apps/v1: .spec.replicas`, or for several, one
/// line per field under each manager.
pub fn conflict_message(conflicts: &[Conflict]) -> String {
    if let [one] = conflicts {
        return format!(
            "Apply failed with 1 conflict: conflict with {}: {}",
            one.manager, one.field
        );
    }
    let mut lines = Vec::new();
    let mut last: Option<&str> = None;
    for c in conflicts {
        if last != Some(c.manager.as_str()) {
            lines.push(format!("conflicts with {}:", c.manager));
            last = Some(&c.manager);
        }
        lines.push(format!("- {}", c.field));
    }
    format!(
        "Apply failed with {} conflicts: {}",
        conflicts.len(),
        lines.join("\n")
    )
}

/// The 409 `Status` of apply conflicts: reason Conflict, one cause of type
/// FieldManagerConflict per field.
pub fn conflict_status(conflicts: &[Conflict]) -> Value {
    let causes: Vec<Value> = conflicts
        .iter()
        .map(|c| {
            json!({"reason": "FieldManagerConflict",
                   "message": format!("conflict with {}", c.manager),
                   "field": c.field})
        })
        .collect();
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": conflict_message(conflicts), "reason": "Conflict",
           "details": {"causes": causes}, "code": 409})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn writer<'a>(manager: &'a str, now: &'a str) -> Writer<'a> {
        Writer {
            manager,
            api_version: "apps/v1",
            subresource: "",
            types: Types::built_in(),
            now,
        }
    }

    fn deployment(replicas: i64, image: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
               "spec": {"replicas": replicas, "template": {"spec": {"containers": [
                   {"name": "a", "image": image}]}}}})
    }

    #[test]
    fn apply_after_an_update_conflicts_and_force_takes_over() {
        let created = deployment(1, "x:1");
        let w = writer("kubectl-client-side-apply", "2026-01-01T00:00:00Z");
        let entries = update(Vec::new(), &json!({}), &created, &w);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].fields.len(), 4);

        let ssa = writer("kubectl", "2026-01-01T00:00:01Z");
        let config = deployment(3, "x:1");
        let conflicts = apply(entries.clone(), &created, &config, &ssa, false).unwrap_err();
        assert_eq!(
            conflict_message(&conflicts),
            "Apply failed with 1 conflict: conflict with \"kubectl-client-side-apply\" using apps/v1: .spec.replicas"
        );
        assert_eq!(
            conflict_status(&conflicts)["details"]["causes"][0]["field"],
            ".spec.replicas"
        );

        let done = apply(entries, &created, &config, &ssa, true).unwrap();
        assert_eq!(done.object["spec"]["replicas"], 3);
        let (csa, mine) = (&done.entries[0], &done.entries[1]);
        assert!(!csa
            .fields
            .contains(&vec!["f:spec".into(), "f:replicas".into()]));
        // The same image is shared, not taken.
        assert_eq!(csa.fields.len(), 3);
        assert_eq!(mine.operation, Operation::Apply);
        assert_eq!(mine.fields.len(), 4);
        let listed = encode(&done.entries);
        assert_eq!(listed[1]["fieldsV1"]["f:spec"]["f:replicas"], json!({}));
        assert_eq!(
            decode(&json!({"metadata": {"managedFields": listed}})).unwrap(),
            done.entries
        );
    }

    #[test]
    fn fields_left_out_of_an_apply_go_unless_shared() {
        let ssa = writer("a", "2026-01-01T00:00:00Z");
        let config = json!({"metadata": {"name": "d", "labels": {"x": "1", "y": "2"}}});
        let first = apply(Vec::new(), &json!({}), &config, &ssa, false).unwrap();
        let other = writer("b", "2026-01-01T00:00:01Z");
        let second = apply(
            first.entries,
            &first.object,
            &json!({"metadata": {"name": "d", "labels": {"y": "2"}}}),
            &other,
            false,
        )
        .unwrap();
        let third = apply(
            second.entries,
            &second.object,
            &json!({"metadata": {"name": "d", "labels": {}}}),
            &ssa,
            false,
        )
        .unwrap();
        assert_eq!(third.object["metadata"]["labels"], json!({"y": "2"}));
    }

    #[test]
    fn first_apply_to_an_untracked_object_meets_before_first_apply() {
        let live = deployment(1, "x:1");
        let ssa = writer("kubectl", "2026-01-01T00:00:00Z");
        let conflicts = apply(Vec::new(), &live, &deployment(1, "x:2"), &ssa, false).unwrap_err();
        assert_eq!(conflicts[0].manager, "\"before-first-apply\" using apps/v1");
        let two = [
            Conflict {
                manager: "\"a\"".into(),
                field: ".x".into(),
            },
            Conflict {
                manager: "\"a\"".into(),
                field: ".y".into(),
            },
        ];
        assert_eq!(
            conflict_message(&two),
            "Apply failed with 2 conflicts: conflicts with \"a\":\n- .x\n- .y"
        );
    }

    #[test]
    fn update_managers_are_capped() {
        let mut entries = Vec::new();
        let mut obj = json!({});
        for i in 0..12 {
            let next = json!({"metadata": {"labels": {format!("l{i}"): "v"}}});
            let merged = merge::merge(&obj, &next, Types::built_in());
            let (name, now) = (format!("m{i}"), format!("2026-01-01T00:00:{i:02}Z"));
            entries = update(entries, &obj, &merged, &writer(&name, &now));
            obj = merged;
        }
        assert_eq!(entries.len(), MAX_UPDATE_MANAGERS);
        let ancient = entries
            .iter()
            .find(|e| e.manager == ANCIENT_CHANGES)
            .unwrap();
        assert_eq!(ancient.fields.len(), 3);
        assert!(!entries
            .iter()
            .any(|e| e.manager == "m0" || e.manager == "m2"));
    }

    #[test]
    fn conflicts_on_unchanged_last_applied_fields_are_allowed() {
        let last = json!({"apiVersion": "v1", "kind": "ConfigMap",
                          "metadata": {"name": "c"}, "data": {"k": "1"}});
        let mut live = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c",
            "annotations": {LAST_APPLIED: last.to_string()}}, "data": {"k": "1", "j": "2"}});
        let w = writer("kubectl-client-side-apply", "2026-01-01T00:00:00Z");
        let entries = update(Vec::new(), &json!({}), &live, &w);
        let ssa = writer(KUBECTL, "2026-01-01T00:00:01Z");
        let config = json!({"metadata": {"name": "c"}, "data": {"k": "2", "j": "3"}});
        let conflicts = apply(entries.clone(), &live, &config, &ssa, false).unwrap_err();
        assert_eq!(conflicts.len(), 2);
        // data.j was never client-side applied: not allowed.
        assert!(!last_applied_allows(&live, &conflicts, Types::built_in()));
        let config = json!({"metadata": {"name": "c"}, "data": {"k": "2"}});
        let conflicts = apply(entries, &live, &config, &ssa, false).unwrap_err();
        assert!(last_applied_allows(&live, &conflicts, Types::built_in()));
        // Changed since it was applied: not allowed.
        live["data"]["k"] = json!("0");
        assert!(!last_applied_allows(&live, &conflicts, Types::built_in()));
    }

    #[test]
    fn many_ancient_changes_entries_from_a_client_are_kept() {
        let sent: Vec<Value> = (0..11)
            .map(|i| {
                json!({"manager": ANCIENT_CHANGES, "operation": "Update",
                       "apiVersion": format!("v{i}"), "time": "2026-01-01T00:00:00Z",
                       "fieldsType": "FieldsV1",
                       "fieldsV1": {"f:metadata": {"f:labels": {format!("f:l{i}"): {}}}}})
            })
            .collect();
        let old = json!({"metadata": {"labels": {"a": "1"}}});
        let new = json!({"metadata": {"labels": {"a": "1"}, "managedFields": sent}});
        let base = base_entries(Some(&old), &new);
        assert_eq!(base.len(), 11);
        let w = writer("m", "2026-01-01T00:00:01Z");
        let changed = json!({"metadata": {"labels": {"a": "2"}}});
        // The one other update entry is merged in; nothing else is left to merge.
        let entries = update(base, &old, &changed, &w);
        assert_eq!(entries.len(), 11);
        assert!(entries.iter().all(|e| e.manager == ANCIENT_CHANGES));
        let label_a = vec!["f:metadata".into(), "f:labels".into(), "f:a".into()];
        assert!(entries.iter().any(|e| e.fields.contains(&label_a)));
    }
}
