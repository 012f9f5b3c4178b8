//! Why a record could not be decoded: the reason a dead letter carries.

use std::fmt;

/// A record that cannot become a row. Each variant says what was wrong and the limit involved,
/// so a dead letter is actionable without the original record.
#[derive(Clone, Debug, PartialEq)]
pub enum DecodeError {
    ValueTooLarge {
        value_bytes: usize,
        value_bytes_max: u32,
    },
    InvalidUtf8 {
        valid_up_to: usize,
    },
    /// `line` and `column` are 1-based as serde_json reports them; `byte_offset` is 0-based.
    InvalidJson {
        line: usize,
        column: usize,
        byte_offset: usize,
        message: String,
    },
    NotAnObject {
        found: &'static str,
    },
    TooDeep {
        depth_max: u32,
    },
    TooManyFields {
        record_fields_max: u32,
    },
    SchemaFull {
        schema_fields: u32,
        fields_new: u32,
        schema_fields_max: u32,
    },
    StringTooLong {
        field: String,
        string_bytes: usize,
        string_bytes_max: u32,
    },
    FieldNameTooLong {
        field_prefix: String,
        field_name_bytes: usize,
        field_name_bytes_max: u32,
    },
}

/// The reason without its details: what dead letters are counted by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DecodeErrorKind {
    ValueTooLarge,
    InvalidUtf8,
    InvalidJson,
    NotAnObject,
    TooDeep,
    TooManyFields,
    SchemaFull,
    StringTooLong,
    FieldNameTooLong,
}

impl DecodeErrorKind {
    pub const COUNT: usize = 9;
    pub const ALL: [DecodeErrorKind; Self::COUNT] = [
        DecodeErrorKind::ValueTooLarge,
        DecodeErrorKind::InvalidUtf8,
        DecodeErrorKind::InvalidJson,
        DecodeErrorKind::NotAnObject,
        DecodeErrorKind::TooDeep,
        DecodeErrorKind::TooManyFields,
        DecodeErrorKind::SchemaFull,
        DecodeErrorKind::StringTooLong,
        DecodeErrorKind::FieldNameTooLong,
    ];

    /// Stable names: they are values of the dead-letter table's `reason_kind` column.
    pub fn as_str(self) -> &'static str {
        match self {
            DecodeErrorKind::ValueTooLarge => "value_too_large",
            DecodeErrorKind::InvalidUtf8 => "invalid_utf8",
            DecodeErrorKind::InvalidJson => "invalid_json",
            DecodeErrorKind::NotAnObject => "not_an_object",
            DecodeErrorKind::TooDeep => "too_deep",
            DecodeErrorKind::TooManyFields => "too_many_fields",
            DecodeErrorKind::SchemaFull => "schema_full",
            DecodeErrorKind::StringTooLong => "string_too_long",
            DecodeErrorKind::FieldNameTooLong => "field_name_too_long",
        }
    }

    /// Position in `ALL`, for per-kind counters kept in an array.
    pub fn index(self) -> usize {
        let index = self as usize;
        debug_assert_eq!(Self::ALL[index], self);
        index
    }
}

impl DecodeError {
    pub fn kind(&self) -> DecodeErrorKind {
        match self {
            DecodeError::ValueTooLarge { .. } => DecodeErrorKind::ValueTooLarge,
            DecodeError::InvalidUtf8 { .. } => DecodeErrorKind::InvalidUtf8,
            DecodeError::InvalidJson { .. } => DecodeErrorKind::InvalidJson,
            DecodeError::NotAnObject { .. } => DecodeErrorKind::NotAnObject,
            DecodeError::TooDeep { .. } => DecodeErrorKind::TooDeep,
            DecodeError::TooManyFields { .. } => DecodeErrorKind::TooManyFields,
            DecodeError::SchemaFull { .. } => DecodeErrorKind::SchemaFull,
            DecodeError::StringTooLong { .. } => DecodeErrorKind::StringTooLong,
            DecodeError::FieldNameTooLong { .. } => DecodeErrorKind::FieldNameTooLong,
        }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::ValueTooLarge {
                value_bytes,
                value_bytes_max,
            } => {
                write!(
                    f,
                    "value of {value_bytes} bytes exceeds value_bytes_max {value_bytes_max}"
                )
            }
            DecodeError::InvalidUtf8 { valid_up_to } => {
                write!(f, "invalid UTF-8 after byte {valid_up_to}")
            }
            DecodeError::InvalidJson {
                line,
                column,
                byte_offset,
                message,
            } => write!(
                f,
                "invalid JSON at line {line} column {column} (byte {byte_offset}): {message}"
            ),
            DecodeError::NotAnObject { found } => {
                write!(f, "top-level JSON value is {found}, not an object")
            }
            DecodeError::TooDeep { depth_max } => {
                write!(f, "nesting deeper than depth_max {depth_max}")
            }
            DecodeError::TooManyFields { record_fields_max } => {
                write!(
                    f,
                    "record has more than record_fields_max {record_fields_max} fields"
                )
            }
            DecodeError::SchemaFull {
                schema_fields,
                fields_new,
                schema_fields_max,
            } => write!(
                f,
                "record adds {fields_new} fields to a schema of {schema_fields}, \
                 beyond schema_fields_max {schema_fields_max}"
            ),
            DecodeError::StringTooLong {
                field,
                string_bytes,
                string_bytes_max,
            } => write!(
                f,
                "field {field:?}: string of {string_bytes} bytes exceeds \
                 string_bytes_max {string_bytes_max}"
            ),
            DecodeError::FieldNameTooLong {
                field_prefix,
                field_name_bytes,
                field_name_bytes_max,
            } => {
                write!(
                    f,
                    "field name starting {field_prefix:?} has {field_name_bytes} bytes, \
                     beyond field_name_bytes_max {field_name_bytes_max}"
                )
            }
        }
    }
}

impl std::error::Error for DecodeError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_indexed_in_order_and_named_uniquely() {
        let mut names = std::collections::HashSet::new();
        for (index, kind) in DecodeErrorKind::ALL.iter().enumerate() {
            assert_eq!(kind.index(), index);
            assert!(names.insert(kind.as_str()));
        }
    }
}
