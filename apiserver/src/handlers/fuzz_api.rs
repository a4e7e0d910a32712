//! Entry points for the fuzz targets in `fuzz/`: the apiserver's parsers of
//! untrusted input, reachable from outside the crate without making the
//! handlers public. Not a stable API.

use serde_json::Value;

use crate::Result;

/// Applies a PATCH body of `content_type` (merge, JSON or strategic merge
/// patch) to `original`, as a PATCH request would.
pub fn apply_patch(content_type: &str, original: &Value, patch: &[u8]) -> Result<Value> {
    let kind = super::patch::PatchType::from_media_type(content_type)?;
    super::patch::apply(kind, original, patch)
}
