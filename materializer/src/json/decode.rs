//! A record value (bytes) to a row under the view's schema, widening the schema as needed.
//!
//! Nested objects are flattened into dotted column names (`{"a": {"b": 1}}` is column `a.b`),
//! so SQL sees plain columns; an empty object contributes no column. Arrays are kept as their
//! compact JSON text in a Utf8 cell: element types vary too freely to be columns. Two fields
//! that flatten to the same name (`{"a.b": 1, "a": {"b": 2}}`), like duplicate keys, keep the
//! last value. Integers beyond i64 become Float64, the type JSON numbers widen to anyway.
//!
//! Checks run cheapest first (size, UTF-8, nesting by a byte scan, then the parse), and the
//! schema is only touched once the whole record has been accepted.

use std::collections::HashMap;

use serde_json::{Map, Value};

use super::datetime::{
    epoch_float_to_micros, epoch_integer_to_micros, epoch_text_to_micros, parse_datetime_text,
};
use super::epoch_fields::EpochFields;
use super::error::DecodeError;
use super::limits::DecodeLimits;
use super::row::{float_text, Cell, Row};
use super::schema::{ColumnType, InferredSchema};

/// How a view decodes its records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodeOptions {
    pub limits: DecodeLimits,
    pub epoch_fields: EpochFields,
}

/// Field-name prefixes quoted in errors are cut to this, so a dead letter's reason stays small.
const ERROR_FIELD_NAME_BYTES_MAX: usize = 64;

/// Decodes one record value into a row, widening `schema` with its fields. On error the schema
/// is unchanged.
pub fn decode_record(
    value: &[u8],
    options: &DecodeOptions,
    schema: &mut InferredSchema,
) -> Result<Row, DecodeError> {
    let limits = &options.limits;
    if value.len() > limits.value_bytes_max as usize {
        return Err(DecodeError::ValueTooLarge {
            value_bytes: value.len(),
            value_bytes_max: limits.value_bytes_max,
        });
    }
    let text = std::str::from_utf8(value).map_err(|error| DecodeError::InvalidUtf8 {
        valid_up_to: error.valid_up_to(),
    })?;
    check_depth(value, limits.depth_max)?;
    let parsed: Value = serde_json::from_str(text).map_err(|error| json_error(text, &error))?;
    let object = match parsed {
        Value::Object(object) => object,
        other => {
            return Err(DecodeError::NotAnObject {
                found: json_kind(&other),
            })
        }
    };

    let mut flattener = Flattener {
        options,
        fields: Vec::new(),
        position_by_name: HashMap::new(),
    };
    flattener.object(None, object)?;
    let fields = flattener.fields;
    assert!(fields.len() <= limits.record_fields_max as usize);

    let observed: Vec<(&str, ColumnType)> = fields
        .iter()
        .map(|(name, cell)| (name.as_str(), cell.column_type()))
        .collect();
    let indices = schema.widen_with(&observed, limits.schema_fields_max)?;
    assert_eq!(indices.len(), fields.len());
    let cells = indices
        .into_iter()
        .zip(fields.into_iter().map(|(_, cell)| cell))
        .collect();
    Ok(Row {
        cells,
        schema_version: schema.version(),
    })
}

/// Fails when brackets nest deeper than `depth_max`. A byte scan (strings and escapes aware) so
/// that neither serde_json's recursion nor ours ever goes deeper than the limit.
fn check_depth(value: &[u8], depth_max: u32) -> Result<(), DecodeError> {
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

fn json_error(text: &str, error: &serde_json::Error) -> DecodeError {
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

fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn truncated(text: &str, bytes_max: usize) -> String {
    let mut end = text.len().min(bytes_max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_string()
}

struct Flattener<'a> {
    options: &'a DecodeOptions,
    /// Flattened fields in record order, names distinct.
    fields: Vec<(String, Cell)>,
    position_by_name: HashMap<String, usize>,
}

impl Flattener<'_> {
    fn object(
        &mut self,
        prefix: Option<&str>,
        object: Map<String, Value>,
    ) -> Result<(), DecodeError> {
        for (key, value) in object {
            let name = match prefix {
                Some(prefix) => format!("{prefix}.{key}"),
                None => key,
            };
            let field_name_bytes_max = self.options.limits.field_name_bytes_max;
            if name.len() > field_name_bytes_max as usize {
                return Err(DecodeError::FieldNameTooLong {
                    field_prefix: truncated(&name, ERROR_FIELD_NAME_BYTES_MAX),
                    field_name_bytes: name.len(),
                    field_name_bytes_max,
                });
            }
            match value {
                // Recursion is bounded by `check_depth`.
                Value::Object(inner) => self.object(Some(&name), inner)?,
                scalar_or_array => {
                    let cell = self.cell(&name, scalar_or_array)?;
                    self.push(name, cell)?;
                }
            }
        }
        Ok(())
    }

    fn push(&mut self, name: String, cell: Cell) -> Result<(), DecodeError> {
        if let Some(&position) = self.position_by_name.get(&name) {
            self.fields[position].1 = cell;
            return Ok(());
        }
        let record_fields_max = self.options.limits.record_fields_max;
        if self.fields.len() >= record_fields_max as usize {
            return Err(DecodeError::TooManyFields { record_fields_max });
        }
        self.position_by_name
            .insert(name.clone(), self.fields.len());
        self.fields.push((name, cell));
        Ok(())
    }

    fn check_string(&self, name: &str, string_bytes: usize) -> Result<(), DecodeError> {
        let string_bytes_max = self.options.limits.string_bytes_max;
        if string_bytes > string_bytes_max as usize {
            return Err(DecodeError::StringTooLong {
                field: truncated(name, ERROR_FIELD_NAME_BYTES_MAX),
                string_bytes,
                string_bytes_max,
            });
        }
        Ok(())
    }

    fn cell(&self, name: &str, value: Value) -> Result<Cell, DecodeError> {
        let epoch_field = self.options.epoch_fields.contains(name);
        let cell = match value {
            Value::Null => Cell::Null,
            Value::Bool(value) => Cell::Bool(value),
            Value::Number(number) => {
                if let Some(integer) = number.as_i64() {
                    match epoch_field
                        .then(|| epoch_integer_to_micros(integer))
                        .flatten()
                    {
                        Some(micros) => Cell::Timestamp {
                            micros,
                            text: integer.to_string().into(),
                        },
                        None => Cell::Int64(integer),
                    }
                } else {
                    // Beyond i64 (a large u64) or fractional: serde_json always has an f64.
                    let float = number.as_f64().unwrap_or(f64::NAN);
                    if !float.is_finite() {
                        // Unreachable without serde_json's arbitrary_precision; a string then.
                        Cell::Utf8(number.to_string())
                    } else {
                        match epoch_field.then(|| epoch_float_to_micros(float)).flatten() {
                            Some(micros) => Cell::Timestamp {
                                micros,
                                text: float_text(float).into(),
                            },
                            None => Cell::Float64(float),
                        }
                    }
                }
            }
            Value::String(text) => {
                self.check_string(name, text.len())?;
                let epoch = epoch_field.then(|| epoch_text_to_micros(&text)).flatten();
                match epoch.or_else(|| parse_datetime_text(&text)) {
                    Some(micros) => Cell::Timestamp {
                        micros,
                        text: text.into_boxed_str(),
                    },
                    None => Cell::Utf8(text),
                }
            }
            array @ Value::Array(_) => {
                let text = array.to_string();
                self.check_string(name, text.len())?;
                Cell::Utf8(text)
            }
            Value::Object(_) => unreachable!("objects are flattened by the caller"),
        };
        Ok(cell)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::error::DecodeErrorKind;

    fn decode(json: &str, schema: &mut InferredSchema) -> Result<Row, DecodeError> {
        decode_record(json.as_bytes(), &DecodeOptions::default(), schema)
    }

    fn column_types(schema: &InferredSchema) -> Vec<(String, ColumnType)> {
        schema
            .fields()
            .iter()
            .map(|field| (field.name.clone(), field.column_type))
            .collect()
    }

    #[test]
    fn flattens_objects_and_keeps_arrays_as_text() {
        let mut schema = InferredSchema::new();
        let row = decode(
            r#"{"id": 7, "user": {"name": "ann", "address": {"city": "Oslo"}}, "tags": ["a", 1, {"b": null}], "empty": {}, "ok": true, "none": null, "price": 2.5}"#,
            &mut schema,
        )
        .unwrap();
        use ColumnType::*;
        let expected = [
            ("id", Int64),
            ("user.name", Utf8),
            ("user.address.city", Utf8),
            ("tags", Utf8),
            ("ok", Bool),
            ("none", Null),
            ("price", Float64),
        ];
        let expected: Vec<(String, ColumnType)> = expected
            .iter()
            .map(|(name, column_type)| (name.to_string(), *column_type))
            .collect();
        assert_eq!(column_types(&schema), expected);
        assert_eq!(row.cell(0), Some(&Cell::Int64(7)));
        assert_eq!(row.cell(2), Some(&Cell::Utf8("Oslo".to_string())));
        assert_eq!(
            row.cell(3),
            Some(&Cell::Utf8(r#"["a",1,{"b":null}]"#.to_string()))
        );
        assert_eq!(row.cell(5), Some(&Cell::Null));
        assert_eq!(row.schema_version(), 1);
    }

    #[test]
    fn strings_become_timestamps_only_when_they_parse_as_dates() {
        let mut schema = InferredSchema::new();
        let row = decode(
            r#"{"when": "29/11/2026", "name": "29 apples"}"#,
            &mut schema,
        )
        .unwrap();
        assert_eq!(
            schema.field("when").unwrap().column_type,
            ColumnType::Timestamp
        );
        assert_eq!(schema.field("name").unwrap().column_type, ColumnType::Utf8);
        assert!(
            matches!(row.cell(0), Some(Cell::Timestamp { text, .. }) if &**text == "29/11/2026")
        );
        // A later non-date string widens the column to strings.
        decode(r#"{"when": "soon"}"#, &mut schema).unwrap();
        assert_eq!(schema.field("when").unwrap().column_type, ColumnType::Utf8);
    }

    #[test]
    fn epoch_numbers_only_in_epoch_fields() {
        let mut schema = InferredSchema::new();
        let row = decode(
            r#"{"created_at": 1764437991, "ts": "1764437991123", "count": 1764437991, "event_time": 1764437991.5, "id": "1764437991"}"#,
            &mut schema,
        )
        .unwrap();
        assert_eq!(
            row.cell(0),
            Some(&Cell::Timestamp {
                micros: 1_764_437_991_000_000,
                text: "1764437991".into()
            })
        );
        assert_eq!(
            row.cell(1),
            Some(&Cell::Timestamp {
                micros: 1_764_437_991_123_000,
                text: "1764437991123".into()
            })
        );
        assert_eq!(row.cell(2), Some(&Cell::Int64(1_764_437_991)));
        assert_eq!(
            row.cell(3),
            Some(&Cell::Timestamp {
                micros: 1_764_437_991_500_000,
                text: "1764437991.5".into()
            })
        );
        assert_eq!(row.cell(4), Some(&Cell::Utf8("1764437991".to_string())));
        // An epoch field's number outside the timestamp range stays a number.
        let row = decode(r#"{"created_at": 1764437991123456789}"#, &mut schema).unwrap();
        assert_eq!(row.cell(0), Some(&Cell::Int64(1_764_437_991_123_456_789)));
        assert_eq!(
            schema.field("created_at").unwrap().column_type,
            ColumnType::Utf8
        );

        let options = DecodeOptions {
            epoch_fields: EpochFields::none(),
            ..DecodeOptions::default()
        };
        let mut schema = InferredSchema::new();
        let row = decode_record(br#"{"ts": 1764437991}"#, &options, &mut schema).unwrap();
        assert_eq!(row.cell(0), Some(&Cell::Int64(1_764_437_991)));
    }

    #[test]
    fn widening_across_records() {
        use ColumnType::*;
        // (records in order, final type of column "v")
        let table: &[(&[&str], ColumnType)] = &[
            (&[r#"{"v": 1}"#, r#"{"v": 2}"#], Int64),
            (&[r#"{"v": 1}"#, r#"{"v": 2.5}"#], Float64),
            (&[r#"{"v": 2.5}"#, r#"{"v": 1}"#], Float64),
            (&[r#"{"v": null}"#, r#"{"v": 1}"#], Int64),
            (&[r#"{"v": 1}"#, r#"{"v": null}"#], Int64),
            (&[r#"{"v": null}"#], Null),
            (&[r#"{"v": 1}"#, r#"{"v": true}"#], Utf8),
            (&[r#"{"v": 1}"#, r#"{"v": "x"}"#], Utf8),
            (&[r#"{"v": 1.5}"#, r#"{"v": [1]}"#], Utf8),
            (
                &[r#"{"v": "2026-11-29"}"#, r#"{"v": "29/11/2026"}"#],
                Timestamp,
            ),
            (&[r#"{"v": "2026-11-29"}"#, r#"{"v": 3}"#], Utf8),
            (&[r#"{"v": true}"#, r#"{"v": false}"#], Bool),
            (&[r#"{"v": 18446744073709551615}"#], Float64),
            (&[r#"{"v": 1}"#, r#"{"v": 18446744073709551615}"#], Float64),
            (&[r#"{"other": 1}"#, r#"{"v": "x"}"#], Utf8),
        ];
        for (records, expected) in table {
            let mut schema = InferredSchema::new();
            for record in *records {
                decode(record, &mut schema).unwrap();
            }
            assert_eq!(
                schema.field("v").unwrap().column_type,
                *expected,
                "{records:?}"
            );
        }
    }

    #[test]
    fn new_fields_are_appended_and_versioned() {
        let mut schema = InferredSchema::new();
        decode(r#"{"a": 1}"#, &mut schema).unwrap();
        decode(r#"{"a": 2, "b": "x"}"#, &mut schema).unwrap();
        let row = decode(r#"{"b": "y"}"#, &mut schema).unwrap();
        assert_eq!(schema.version(), 2);
        assert_eq!(row.schema_version(), 2);
        assert_eq!(row.cells().len(), 1);
        assert_eq!(schema.field_index("b"), Some(1));
    }

    #[test]
    fn colliding_names_keep_the_last_value() {
        let mut schema = InferredSchema::new();
        let row = decode(r#"{"a.b": 1, "a": {"b": "two"}}"#, &mut schema).unwrap();
        assert_eq!(schema.len(), 1);
        assert_eq!(row.cells(), &[(0, Cell::Utf8("two".to_string()))]);
        let row = decode(r#"{"k": 1, "k": 2}"#, &mut schema).unwrap();
        assert_eq!(row.cells(), &[(1, Cell::Int64(2))]);
    }

    #[test]
    fn every_kind_of_bad_record_is_an_error_and_leaves_the_schema_alone() {
        let limits = DecodeLimits {
            value_bytes_max: 64,
            depth_max: 3,
            record_fields_max: 3,
            schema_fields_max: 4,
            string_bytes_max: 8,
            field_name_bytes_max: 8,
        };
        let options = DecodeOptions {
            limits,
            ..DecodeOptions::default()
        };
        let mut schema = InferredSchema::new();
        decode_record(br#"{"a": 1, "b": 2}"#, &options, &mut schema).unwrap();
        let version = schema.version();

        let long = format!(r#"{{"a": "{}"}}"#, "x".repeat(64));
        let cases: &[(&[u8], DecodeError)] = &[
            (
                long.as_bytes(),
                DecodeError::ValueTooLarge {
                    value_bytes: 73,
                    value_bytes_max: 64,
                },
            ),
            (
                b"{\"a\": \"\xff\"}",
                DecodeError::InvalidUtf8 { valid_up_to: 7 },
            ),
            (br#"[1, 2]"#, DecodeError::NotAnObject { found: "an array" }),
            (br#""text""#, DecodeError::NotAnObject { found: "a string" }),
            (b"null", DecodeError::NotAnObject { found: "null" }),
            (
                br#"{"a": {"b": {"c": {}}}}"#,
                DecodeError::TooDeep { depth_max: 3 },
            ),
            (br#"{"a": [[[1]]]}"#, DecodeError::TooDeep { depth_max: 3 }),
            (
                br#"{"c": 1, "d": 2, "e": 3, "f": 4}"#,
                DecodeError::TooManyFields {
                    record_fields_max: 3,
                },
            ),
            (
                br#"{"c": 1, "d": 2, "e": 3}"#,
                DecodeError::SchemaFull {
                    schema_fields: 2,
                    fields_new: 3,
                    schema_fields_max: 4,
                },
            ),
            (
                br#"{"a": "123456789"}"#,
                DecodeError::StringTooLong {
                    field: "a".to_string(),
                    string_bytes: 9,
                    string_bytes_max: 8,
                },
            ),
            (
                br#"{"a": [1, 2, 3, 4]}"#,
                DecodeError::StringTooLong {
                    field: "a".to_string(),
                    string_bytes: 9,
                    string_bytes_max: 8,
                },
            ),
            (
                br#"{"abcd": {"efgh": 1}}"#,
                DecodeError::FieldNameTooLong {
                    field_prefix: "abcd.efgh".to_string(),
                    field_name_bytes: 9,
                    field_name_bytes_max: 8,
                },
            ),
        ];
        for (value, expected) in cases {
            let error = decode_record(value, &options, &mut schema).unwrap_err();
            assert_eq!(&error, expected, "{}", String::from_utf8_lossy(value));
            assert!(!error.to_string().is_empty());
            assert_eq!(schema.version(), version);
            assert_eq!(schema.len(), 2);
        }
        // Brackets inside strings do not count towards depth.
        decode_record(br#"{"a": "[[[[{{{{"}"#, &options, &mut schema).unwrap();
    }

    #[test]
    fn hostile_records_under_default_limits_are_errors_not_panics() {
        let limits = DecodeLimits::default();
        let mut schema = InferredSchema::new();
        let mut expect_kind = |value: Vec<u8>, kind: DecodeErrorKind| {
            let error = decode_record(&value, &DecodeOptions::default(), &mut schema).unwrap_err();
            assert_eq!(error.kind(), kind, "{error}");
        };
        let deep_arrays = format!(r#"{{"a": {}"#, "[".repeat(100_000));
        expect_kind(deep_arrays.into_bytes(), DecodeErrorKind::TooDeep);
        let deep_objects = format!("{}1{}", r#"{"a":"#.repeat(200), "}".repeat(200));
        expect_kind(deep_objects.into_bytes(), DecodeErrorKind::TooDeep);
        let fields: Vec<String> = (0..=limits.record_fields_max)
            .map(|index| format!(r#""f{index}": 1"#))
            .collect();
        expect_kind(
            format!("{{{}}}", fields.join(",")).into_bytes(),
            DecodeErrorKind::TooManyFields,
        );
        let huge = vec![b' '; limits.value_bytes_max as usize + 1];
        expect_kind(huge, DecodeErrorKind::ValueTooLarge);
        // Escapes count after unescaping: the 6 bytes of `\u00e9` are the 2 bytes of `é`.
        let escaped = "\\u00e9".repeat(limits.string_bytes_max as usize / 2 + 1);
        expect_kind(
            format!(r#"{{"s": "{escaped}"}}"#).into_bytes(),
            DecodeErrorKind::StringTooLong,
        );
        let long_name = format!(
            r#"{{"{}": 1}}"#,
            "é".repeat(limits.field_name_bytes_max as usize)
        );
        expect_kind(long_name.into_bytes(), DecodeErrorKind::FieldNameTooLong);
        assert!(schema.is_empty());

        // One new column short of the schema limit, then a record that would pass it.
        let mut schema = InferredSchema::new();
        for index in 0..limits.schema_fields_max {
            decode(&format!(r#"{{"c{index}": {index}}}"#), &mut schema).unwrap();
        }
        assert_eq!(schema.len(), limits.schema_fields_max as usize);
        let error = decode(r#"{"c0": 1, "one_more": 1}"#, &mut schema).unwrap_err();
        assert_eq!(error.kind(), DecodeErrorKind::SchemaFull);
        // Known columns still decode.
        decode(r#"{"c0": 2.5}"#, &mut schema).unwrap();
    }

    #[test]
    fn invalid_json_reports_where() {
        let mut schema = InferredSchema::new();
        let error = decode("{\"a\": 1,\n \"b\": tru}", &mut schema).unwrap_err();
        match error {
            DecodeError::InvalidJson {
                line,
                column,
                byte_offset,
                message,
            } => {
                assert_eq!(line, 2);
                assert!(column >= 7, "{column}");
                assert!((15..=18).contains(&byte_offset), "{byte_offset}");
                assert!(!message.contains(" at line "), "{message}");
            }
            other => panic!("{other:?}"),
        }
        for bad in [
            "",
            "{",
            "{\"a\" 1}",
            "{\"a\": 1} x",
            "{\"a\": 1e999}",
            "{\"a\": 01}",
        ] {
            let error = decode(bad, &mut schema).unwrap_err();
            assert!(
                matches!(error, DecodeError::InvalidJson { .. }),
                "{bad:?}: {error:?}"
            );
        }
        assert!(schema.is_empty());
    }
}
