//! Entry points for the fuzz targets in `fuzz/`: the apiserver's parsers of
//! untrusted input, reachable from outside the crate without making the
//! handlers public. Not a stable API.

use serde_json::Value;

use crate::error::{Error, Result};
use crate::resources::Resource;

/// Applies a PATCH body of `content_type` (merge, JSON or strategic merge
/// patch) to `original`, as a PATCH request would.
pub fn apply_patch(content_type: &str, original: &Value, patch: &[u8]) -> Result<Value> {
    let kind = super::patch::PatchType::from_media_type(content_type)?;
    super::patch::apply(kind, original, patch)
}

/// What a create of `body` as resource `resource` (plural, e.g. `pods`,
/// `deployments`) would store, without etcd: the JSON decode (the handlers' own), the kind and
/// apiVersion check, defaulting, the typed check and validation, plus the unknown fields a
/// `fieldValidation=Warn` create would warn about. 400 for a body that is
/// not an object of the kind, 422 for one that fails validation.
pub fn create_object(resource: &str, body: &[u8]) -> Result<(Value, Vec<String>)> {
    let r = resource_named(resource)?;
    // The same decoder a create request goes through.
    let mut obj = super::rest::decode(r, body)?;
    let warnings = super::fields::unknown_fields(r.kind, &obj);
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    super::validation::default(r, &mut obj);
    super::schema::check(r, &obj, super::schema::Source::Body)?;
    super::validation::validate(r, &obj, &name)?;
    Ok((obj, warnings))
}

/// The fields of `obj` that `kind` (e.g. `Pod`) does not define, as
/// `fieldValidation` reports them.
pub fn unknown_fields(kind: &str, obj: &Value) -> Vec<String> {
    super::fields::unknown_fields(kind, obj)
}

/// Decodes a Kubernetes protobuf request body (`k8s\0` envelope) into the
/// JSON object the handlers would see.
pub fn decode_protobuf(body: &[u8]) -> Result<Value> {
    super::protobuf::decode(body)
}

/// The plural resource names served (core and apps groups alike).
pub fn resource_names() -> Vec<&'static str> {
    crate::resources::RESOURCES.iter().map(|r| r.name).collect()
}

fn resource_named(name: &str) -> Result<&'static Resource> {
    crate::resources::RESOURCES
        .iter()
        .find(|r| r.name == name)
        .ok_or_else(|| Error::BadRequest(format!("no resource {name:?}")))
}
