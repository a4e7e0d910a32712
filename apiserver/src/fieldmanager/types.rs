//! How a field's value merges: lists atomic, as sets, or as maps keyed by
//! fields; maps granular or atomic.
//!
//! Built-in kinds answer from one table by field name — Kubernetes' list
//! map keys (`+listType=map`, `+listMapKey`), which are also the merge
//! keys of strategic merge patch (its first key) — and lists not named
//! there are atomic, as in Kubernetes. Custom resources answer from their
//! CRD version's OpenAPI schema (`x-kubernetes-list-type`,
//! `x-kubernetes-list-map-keys`, `x-kubernetes-map-type`), where lists are
//! atomic unless the schema says otherwise; their `metadata` is the
//! built-in ObjectMeta.

use serde_json::Value;

/// How a list's elements are told apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    /// Replaced whole; owned as one field.
    Atomic,
    /// Scalars, each its own member (`v:`).
    Set,
    /// Objects identified by these key fields (`k:`).
    Map(Vec<String>),
}

/// The keys of the built-in lists of objects merged element by element,
/// by the field name of the list (`ports` differs between container
/// ports and service ports, told apart by an element).
pub fn list_map_keys(field: &str, element: Option<&Value>) -> Option<&'static [&'static str]> {
    let has = |k: &str| element.is_some_and(|e| e.get(k).is_some());
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "env"
        | "volumes"
        | "imagePullSecrets"
        | "resourceClaims" => &["name"],
        "volumeMounts" => &["mountPath"],
        "volumeDevices" => &["devicePath"],
        "conditions" => &["type"],
        "ownerReferences" => &["uid"],
        "hostAliases" => &["ip"],
        "topologySpreadConstraints" => &["topologyKey", "whenUnsatisfiable"],
        "ports" if has("containerPort") => &["containerPort", "protocol"],
        "ports" if has("port") => &["port", "protocol"],
        _ => return None,
    })
}

/// The value a list map key takes when an element leaves it out
/// (Kubernetes defaults `protocol` to TCP before keying).
pub fn key_default(key: &str) -> Option<Value> {
    (key == "protocol").then(|| Value::String("TCP".into()))
}

/// Built-in maps replaced whole (`+mapType=atomic`, `+structType=atomic`):
/// label selectors and node selectors.
fn atomic_builtin_map(field: &str) -> bool {
    matches!(
        field,
        "selector" | "labelSelector" | "namespaceSelector" | "nodeSelector"
    )
}

/// What is known of one value's type while walking an object.
#[derive(Debug, Clone, Copy)]
pub enum Types<'a> {
    /// A built-in kind's value, reached through this field name.
    BuiltIn(&'a str),
    /// A custom resource's whole object, by its OpenAPI schema.
    CustomRoot(&'a Value),
    /// A value inside a custom resource (`None`: the schema says nothing).
    Schema(Option<&'a Value>),
}

impl<'a> Types<'a> {
    /// A built-in kind's object.
    pub fn built_in() -> Types<'static> {
        Types::BuiltIn("")
    }

    /// The value of field `name` of this (object) value.
    pub fn field(self, name: &'a str) -> Types<'a> {
        match self {
            Types::BuiltIn(_) => Types::BuiltIn(name),
            Types::CustomRoot(_) if name == "metadata" => Types::BuiltIn(name),
            Types::CustomRoot(s) => Types::Schema(Some(s)).field(name),
            Types::Schema(None) => Types::Schema(None),
            Types::Schema(Some(s)) => Types::Schema(
                s.get("properties")
                    .and_then(|p| p.get(name))
                    .or_else(|| s.get("additionalProperties").filter(|a| a.is_object())),
            ),
        }
    }

    /// The elements of this (list) value.
    pub fn items(self) -> Types<'a> {
        match self {
            Types::BuiltIn(name) => Types::BuiltIn(name),
            Types::CustomRoot(s) => Types::Schema(s.get("items")),
            Types::Schema(s) => Types::Schema(s.and_then(|s| s.get("items"))),
        }
    }

    /// How this list value merges, given its elements.
    pub fn list_type(self, items: &[Value]) -> ListType {
        match self {
            Types::BuiltIn("finalizers") => ListType::Set,
            Types::BuiltIn(name) => match list_map_keys(name, items.first()) {
                Some(keys) if items.iter().all(Value::is_object) => {
                    ListType::Map(keys.iter().map(|k| k.to_string()).collect())
                }
                _ => ListType::Atomic,
            },
            Types::CustomRoot(s) | Types::Schema(Some(s)) => {
                match s.get("x-kubernetes-list-type").and_then(Value::as_str) {
                    Some("set") => ListType::Set,
                    Some("map") => ListType::Map(
                        s.get("x-kubernetes-list-map-keys")
                            .and_then(Value::as_array)
                            .map(|ks| {
                                ks.iter()
                                    .filter_map(Value::as_str)
                                    .map(str::to_string)
                                    .collect()
                            })
                            .unwrap_or_default(),
                    ),
                    _ => ListType::Atomic,
                }
            }
            Types::Schema(None) => ListType::Atomic,
        }
    }

    /// Whether this (object) value is replaced whole.
    pub fn atomic_map(self) -> bool {
        match self {
            Types::BuiltIn(name) => atomic_builtin_map(name),
            Types::CustomRoot(_) | Types::Schema(None) => false,
            Types::Schema(Some(s)) => {
                s.get("x-kubernetes-map-type").and_then(Value::as_str) == Some("atomic")
            }
        }
    }
}
