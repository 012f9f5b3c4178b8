//! The checks of a whole record that come before its fields, and the words of their errors:
//! size, UTF-8, nesting depth (a byte scan, so that no parser recurses deeper than the limit),
//! and serde_json's syntax errors with where they are.

use serde_json::Value;

use super::error::DecodeError;
use super::limits::DecodeLimits;

/// Field-name prefixes quoted in errors are cut to this, so a dead letter's reason stays small.
pub const ERROR_FIELD_NAME_BYTES_MAX: usize = 64;

/// `StringTooLong` for a string (or an array's text) of field `name` past `string_bytes_max`.
pub fn check_string(
    name: &str,
    string_bytes: usize,
    limits: &DecodeLimits,
) -> Result<(), DecodeError> {
    let string_bytes_max = limits.string_bytes_max;
    if string_bytes > string_bytes_max as usize {
        return Err(DecodeError::StringTooLong {
            field: truncated(name, ERROR_FIELD_NAME_BYTES_MAX),
            string_bytes,
            string_bytes_max,
        });
    }
    Ok(())
}

/// The value as text, if it is within `value_bytes_max` and UTF-8.
pub fn checked_text<'v>(value: &'v [u8], limits: &DecodeLimits) -> Result<&'v str, DecodeError> {
    if value.len() > limits.value_bytes_max as usize {
        return Err(DecodeError::ValueTooLarge {
            value_bytes: value.len(),
            value_bytes_max: limits.value_bytes_max,
        });
    }
    std::str::from_utf8(value).map_err(|error| DecodeError::InvalidUtf8 {
        valid_up_to: error.valid_up_to(),
    })
}

/// Fails when brackets nest deeper than `depth_max`. A byte scan (strings and escapes aware) so
/// that neither serde_json's recursion nor ours ever goes deeper than the limit.
pub fn check_depth(value: &[u8], depth_max: u32) -> Result<(), DecodeError> {
    let mut depth = 0_u32;
    let mut in_string = false;
    let mut escaped = false;
    for &byte in value {
        if in_string {
            if escaped {
                escaped = false;
            } else if byte == b'\\' {
                escaped = true;
            } else if byte == b'"' {
                in_string = false;
            }
            continue;
        }
        match byte {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                if depth > depth_max {
                    return Err(DecodeError::TooDeep { depth_max });
                }
            }
            // Unbalanced closers are the parser's to report.
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

pub fn json_error(text: &str, error: &serde_json::Error) -> DecodeError {
    let (line, column) = (error.line(), error.column());
    // serde_json counts columns in bytes from the start of the line.
    let line_start: usize = text
        .split_inclusive('\n')
        .take(line.saturating_sub(1))
        .map(str::len)
        .sum();
    let byte_offset = (line_start + column.saturating_sub(1)).min(text.len());
    let message = error.to_string();
    let position_suffix = format!(" at line {line} column {column}");
    let message = message
        .strip_suffix(&position_suffix)
        .unwrap_or(&message)
        .to_string();
    DecodeError::InvalidJson {
        line,
        column,
        byte_offset,
        message,
    }
}

pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

pub fn truncated(text: &str, bytes_max: usize) -> String {
    let mut end = text.len().min(bytes_max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}
