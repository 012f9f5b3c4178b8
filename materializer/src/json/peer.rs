//! What benchmarks measure the decoder against: serde_json parsing a value into a
//! `serde_json::Value`. It lives here so that it is compiled with the decoder's optimisation:
//! instantiated in the benchmark's own crate, an unoptimised dev build would measure a slow
//! peer and flatter the decoder.

/// Parses `value` into a `serde_json::Value`; the number of fields of the object it is.
pub fn parse_value_fields(value: &[u8]) -> serde_json::Result<usize> {
    let parsed: serde_json::Value = serde_json::from_slice(value)?;
    Ok(parsed.as_object().map_or(0, |object| object.len()))
}
