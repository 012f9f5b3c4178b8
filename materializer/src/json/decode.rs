//! Record values (bytes) straight into the Arrow columns of a batch, under the view's schema,
//! widening the schema as needed.
//!
//! Nested objects are flattened into dotted column names (`{"a": {"b": 1}}` is column `a.b`),
//! so SQL sees plain columns; an empty object contributes no column. Arrays are kept as their
//! compact JSON text in a Utf8 cell: element types vary too freely to be columns. Two fields
//! that flatten to the same name (`{"a.b": 1, "a": {"b": 2}}`), like duplicate keys, keep the
//! last value at the first one's place. Integers beyond i64 become Float64, the type JSON
//! numbers widen to anyway.
//!
//! Checks run cheapest first (size, UTF-8, nesting by a byte scan, then the parse), and the
//! schema is only touched once the whole record has been accepted; a record refused leaves no
//! trace in the columns either.
//!
//! Two paths, one set of rules. The fast path walks the bytes with serde_json's streaming
//! deserializer (`visit.rs`) and writes each field into its column as it is met. Whatever it
//! cannot settle alone it hands to the exact path, which parses the record into a
//! `serde_json::Value` first (as the decoder did before it wrote columns) and walks that with
//! the same visitor: a name met twice in one record (duplicate keys keep their first place and
//! last value, which only the parsed object shows), any error (a syntax error later in the
//! record must win over a field error met earlier, as it does once the whole record is parsed),
//! and a nested object whose prefix the name table has no room for. Records that go the exact
//! way cost about twice as much; the others never build a tree.

use std::collections::HashMap;
use std::fmt::Write as _;

use arrow_array::{ArrayRef, RecordBatch, RecordBatchOptions};
use arrow_schema::ArrowError;
use serde::de::DeserializeSeed;
use serde_json::Value;

use super::checks::{check_depth, check_string, checked_text, json_error, json_kind, truncated};
use super::columns::ColumnBuffer;
use super::datetime::{
    epoch_float_to_micros, epoch_integer_to_micros, epoch_text_to_micros, parse_datetime_text,
};
use super::epoch_fields::EpochFields;
use super::error::DecodeError;
use super::limits::DecodeLimits;
use super::names::NameTable;
use super::schema::{ColumnType, InferredSchema};
use super::text::float_text;
use super::visit::ObjectSeed;

/// How a view decodes its records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DecodeOptions {
    pub limits: DecodeLimits,
    pub epoch_fields: EpochFields,
}

use super::checks::ERROR_FIELD_NAME_BYTES_MAX;

/// Decodes records into the columns of one batch at a time (`decode`, then `finish`).
#[derive(Debug)]
pub struct JsonDecoder {
    options: DecodeOptions,
    schema: InferredSchema,
    names: NameTable,
    /// One per schema column, plus the columns a record in progress adds.
    columns: Vec<ColumnBuffer>,
    /// Rows decoded since the last `finish`.
    rows: usize,
    scratch: Scratch,
    /// Records attempted, the stamp of `NameEntry`.
    records: u64,
    exact_records: u64,
}

/// Per-record state, kept between records for its allocations.
#[derive(Debug, Default)]
struct Scratch {
    /// Columns written by the record, in the order first written.
    touched: Vec<u32>,
    /// Names new to the schema, in the record's order: column `schema.len() + i` is `i`'s.
    pending: Vec<Box<str>>,
    pending_by_name: HashMap<Box<str>, u32>,
    name: String,
    array_text: Vec<u8>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    Fast,
    Exact,
}

/// Why a record's walk stopped.
#[derive(Debug)]
enum Stop {
    /// The exact path must decide.
    Exact,
    Error(DecodeError),
}

impl JsonDecoder {
    pub fn new(options: DecodeOptions) -> Self {
        options.limits.assert_valid();
        JsonDecoder::with_schema(options, InferredSchema::new())
    }

    /// Resumes with a schema restored from a checkpoint (`InferredSchema::from_arrow_schema`).
    pub fn with_schema(options: DecodeOptions, schema: InferredSchema) -> Self {
        options.limits.assert_valid();
        let prefixes_max = options.limits.schema_fields_max as usize;
        JsonDecoder {
            names: NameTable::new(&schema, &options.epoch_fields, prefixes_max),
            columns: (0..schema.len()).map(|_| ColumnBuffer::default()).collect(),
            options,
            schema,
            rows: 0,
            scratch: Scratch::default(),
            records: 0,
            exact_records: 0,
        }
    }

    pub fn options(&self) -> &DecodeOptions {
        &self.options
    }

    pub fn schema(&self) -> &InferredSchema {
        &self.schema
    }

    /// Rows decoded since the last `finish`.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Text bytes held by the batch in progress (strings, dates and arrays).
    pub fn text_bytes(&self) -> usize {
        self.columns.iter().map(ColumnBuffer::text_bytes).sum()
    }

    /// Records that took the exact path (see the module's comment).
    pub fn exact_records(&self) -> u64 {
        self.exact_records
    }

    /// Decodes one record value into the next row, widening the schema with its fields. On
    /// error neither the schema nor the batch changes.
    pub fn decode(&mut self, value: &[u8]) -> Result<(), DecodeError> {
        debug_assert_eq!(self.columns.len(), self.schema.len());
        let limits = &self.options.limits;
        let text = checked_text(value, limits)?;
        let depth_max = limits.depth_max;
        let mut deserializer = serde_json::Deserializer::from_str(text);
        let walked = self.walk(Path::Fast, &mut deserializer);
        let fast = match walked {
            Ok(()) => deserializer.end().map_err(|_| Stop::Exact),
            Err(stop) => Err(stop),
        };
        match fast.and_then(|()| self.commit()) {
            Ok(()) => return Ok(()),
            Err(stop) => {
                self.rollback();
                if let Stop::Error(error) = stop {
                    // The schema is full: what the exact path would find as well.
                    return Err(error);
                }
            }
        }
        self.exact_records += 1;
        check_depth(value, depth_max)?;
        let parsed: Value = serde_json::from_str(text).map_err(|error| json_error(text, &error))?;
        if !parsed.is_object() {
            return Err(DecodeError::NotAnObject {
                found: json_kind(&parsed),
            });
        }
        let walked = self.walk(Path::Exact, &parsed);
        match walked.and_then(|()| self.commit()) {
            Ok(()) => Ok(()),
            Err(stop) => {
                self.rollback();
                match stop {
                    Stop::Error(error) => Err(error),
                    // A walk of a parsed object meets no syntax; say so should it ever happen.
                    Stop::Exact => Err(DecodeError::InvalidJson {
                        line: 0,
                        column: 0,
                        byte_offset: 0,
                        message: "the parsed record could not be walked".to_string(),
                    }),
                }
            }
        }
    }

    /// Walks one record with the visitor into row `self.rows`.
    fn walk<'de, D>(&mut self, path: Path, deserializer: D) -> Result<(), Stop>
    where
        D: serde::Deserializer<'de, Error = serde_json::Error>,
    {
        self.records += 1;
        let mut name = std::mem::take(&mut self.scratch.name);
        name.clear();
        let array_text = std::mem::take(&mut self.scratch.array_text);
        let mut writer = Writer {
            path,
            options: &self.options,
            schema_len: self.schema.len(),
            names: &mut self.names,
            columns: &mut self.columns,
            scratch: &mut self.scratch,
            row: self.rows,
            stamp: self.records,
            stop: None,
            depth: 0,
            keys: 0,
            name,
            array_text,
        };
        let result = ObjectSeed(&mut writer).deserialize(deserializer);
        let stop = writer.stop.take();
        let (name, array_text) = (writer.name, writer.array_text);
        self.scratch.name = name;
        self.scratch.array_text = array_text;
        match (result, stop) {
            (Ok(()), None) => Ok(()),
            (_, Some(stop)) => Err(stop),
            // A syntax or type error of the deserializer itself.
            (Err(_), None) => Err(Stop::Exact),
        }
    }

    /// Makes the row written by `walk` part of the batch and widens the schema with it.
    fn commit(&mut self) -> Result<(), Stop> {
        let limits = &self.options.limits;
        let schema_len = self.schema.len();
        let scratch = &mut self.scratch;
        debug_assert!(scratch.touched.len() <= limits.record_fields_max as usize);
        self.schema
            .check_room(scratch.pending.len(), limits.schema_fields_max)
            .map_err(Stop::Error)?;
        let mut changed = false;
        for &column in &scratch.touched {
            let kind = self.columns[column as usize].last_kind();
            if (column as usize) < schema_len {
                changed |= self.schema.widen_column(column, kind);
            } else {
                let name = &scratch.pending[column as usize - schema_len];
                let index = self.schema.push_column(name, kind);
                assert_eq!(index, column, "new columns are numbered in order");
                self.names
                    .set_column(name, column, &self.options.epoch_fields);
                changed = true;
            }
        }
        if changed {
            self.schema.bump_version();
        }
        scratch.touched.clear();
        scratch.pending.clear();
        scratch.pending_by_name.clear();
        self.rows += 1;
        assert_eq!(self.columns.len(), self.schema.len());
        assert!(self.schema.len() <= limits.schema_fields_max as usize);
        Ok(())
    }

    /// Forgets what `walk` wrote for the current row.
    fn rollback(&mut self) {
        let schema_len = self.schema.len();
        self.columns.truncate(schema_len);
        for &column in &self.scratch.touched {
            if (column as usize) < schema_len {
                self.columns[column as usize].truncate(self.rows);
            }
        }
        self.scratch.touched.clear();
        self.scratch.pending.clear();
        self.scratch.pending_by_name.clear();
    }

    /// The rows decoded since the last `finish`, as one batch under the current schema (every
    /// row converted to the column's type of now), and an empty batch to come.
    pub fn finish(&mut self) -> Result<RecordBatch, ArrowError> {
        assert_eq!(
            self.columns.len(),
            self.schema.len(),
            "no record in progress"
        );
        let rows = std::mem::take(&mut self.rows);
        let columns: Vec<ArrayRef> = self
            .columns
            .iter_mut()
            .zip(self.schema.fields())
            .map(|(column, field)| column.finish(rows, field.column_type))
            .collect::<Result<_, _>>()?;
        RecordBatch::try_new_with_options(
            self.schema.arrow_schema(),
            columns,
            // A schema with no columns yet still has rows: `{}` records are rows too.
            &RecordBatchOptions::new().with_row_count(Some(rows)),
        )
    }
}

/// A field's value as the visitor met it.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Scalar<'a> {
    Null,
    Bool(bool),
    Integer(i64),
    Float(f64),
    Text(&'a str),
    /// An array's compact JSON text.
    Array(&'a str),
}

/// What the visitor writes one record through.
pub(crate) struct Writer<'a> {
    path: Path,
    options: &'a DecodeOptions,
    schema_len: usize,
    names: &'a mut NameTable,
    columns: &'a mut Vec<ColumnBuffer>,
    scratch: &'a mut Scratch,
    row: usize,
    stamp: u64,
    stop: Option<Stop>,
    /// Objects open around the current key, the record's own counting as 1.
    pub depth: u32,
    /// Keys met so far in the record.
    keys: usize,
    pub name: String,
    pub array_text: Vec<u8>,
}

impl Writer<'_> {
    fn stop(&mut self, stop: Stop) -> Result<(), ()> {
        self.stop = Some(stop);
        Err(())
    }

    /// A field error: final on the exact path; on the fast path the exact path decides, since
    /// a syntax error further on must win.
    fn fail(&mut self, error: DecodeError) -> Result<(), ()> {
        match self.path {
            Path::Fast => self.stop(Stop::Exact),
            Path::Exact => self.stop(Stop::Error(error)),
        }
    }

    /// A key completed the current name: checks its length and counts it.
    pub fn key(&mut self) -> Result<(), ()> {
        self.keys += 1;
        let field_name_bytes_max = self.options.limits.field_name_bytes_max;
        if self.name.len() > field_name_bytes_max as usize {
            let error = DecodeError::FieldNameTooLong {
                field_prefix: truncated(&self.name, ERROR_FIELD_NAME_BYTES_MAX),
                field_name_bytes: self.name.len(),
                field_name_bytes_max,
            };
            return self.fail(error);
        }
        Ok(())
    }

    /// On the fast path, containers `extra_depth` deep at the current key must fit
    /// `depth_max`; the exact path has checked the record's depth before parsing it (a
    /// record too deep is refused even when its JSON is broken too).
    pub fn check_depth(&mut self, extra_depth: u32) -> Result<(), ()> {
        if self.path == Path::Fast && self.depth + extra_depth > self.options.limits.depth_max {
            return self.stop(Stop::Exact);
        }
        Ok(())
    }

    /// The current name is a nested object's: on the fast path, a name met twice in a record
    /// (a duplicate key) goes to the exact path.
    pub fn object_prefix(&mut self) -> Result<(), ()> {
        self.check_depth(1)?;
        if self.path == Path::Exact {
            return Ok(());
        }
        if self
            .scratch
            .pending_by_name
            .contains_key(self.name.as_str())
        {
            return self.stop(Stop::Exact);
        }
        let epoch_fields = &self.options.epoch_fields;
        let id = match self.names.find(self.keys - 1, &self.name) {
            Some(id) => id,
            None => match self.names.insert_prefix(&self.name, epoch_fields) {
                Some(id) => id,
                None => return self.stop(Stop::Exact),
            },
        };
        let entry = self.names.entry(id);
        if entry.stamp == self.stamp {
            return self.stop(Stop::Exact);
        }
        entry.stamp = self.stamp;
        Ok(())
    }

    /// The current name's column (`None`: new to the schema and to this record) and whether it
    /// marks epoch numbers.
    fn resolve(&mut self) -> Result<(Option<u32>, bool), ()> {
        if let Some(id) = self.names.find(self.keys - 1, &self.name) {
            let entry = self.names.entry(id);
            if self.path == Path::Fast {
                if entry.stamp == self.stamp {
                    return self.stop(Stop::Exact).map(|()| (None, false));
                }
                entry.stamp = self.stamp;
            }
            if let Some(column) = entry.column {
                return Ok((Some(column), entry.epoch));
            }
        }
        let epoch = self.options.epoch_fields.contains(&self.name);
        Ok((
            self.scratch
                .pending_by_name
                .get(self.name.as_str())
                .copied(),
            epoch,
        ))
    }

    /// Writes the current field's value into its column.
    pub fn scalar(&mut self, scalar: Scalar<'_>) -> Result<(), ()> {
        let (column, epoch) = self.resolve()?;
        let mut number_text = String::new();
        let limits = &self.options.limits;
        match classify(scalar, epoch, limits, &self.name, &mut number_text) {
            Ok((kind, number, text)) => self.write(column, kind, number, text),
            Err(error) => self.fail(error),
        }
    }

    fn write(
        &mut self,
        column: Option<u32>,
        kind: ColumnType,
        number: i64,
        text: &str,
    ) -> Result<(), ()> {
        let row = self.row;
        let column = match column {
            Some(column) if self.columns[column as usize].len() > row => {
                // Met twice in this record: the last value wins, at the first one's place,
                // which only the exact path (duplicate keys resolved by the parse) can tell.
                if self.path == Path::Fast {
                    return self.stop(Stop::Exact);
                }
                column
            }
            Some(column) => {
                self.count_field()?;
                self.scratch.touched.push(column);
                column
            }
            None => {
                self.count_field()?;
                let column = self.columns.len() as u32;
                debug_assert_eq!(
                    column as usize,
                    self.schema_len + self.scratch.pending.len()
                );
                self.columns.push(ColumnBuffer::default());
                self.scratch.pending.push(self.name.as_str().into());
                self.scratch
                    .pending_by_name
                    .insert(self.name.as_str().into(), column);
                self.scratch.touched.push(column);
                column
            }
        };
        self.columns[column as usize].set(row, kind, number, text);
        Ok(())
    }

    /// One more distinct field in this record.
    fn count_field(&mut self) -> Result<(), ()> {
        let record_fields_max = self.options.limits.record_fields_max;
        if self.scratch.touched.len() >= record_fields_max as usize {
            return self.fail(DecodeError::TooManyFields { record_fields_max });
        }
        Ok(())
    }
}

/// A value's kind, number and text (see `ColumnBuffer`), by the rules of `epoch_fields.rs` and
/// `datetime.rs`: numbers are Int64/Float64 when they also read as epochs, Large otherwise, and
/// timestamps in a field whose name marks epochs; strings are timestamps when they are dates.
fn classify<'t>(
    scalar: Scalar<'t>,
    epoch_field: bool,
    limits: &DecodeLimits,
    name: &str,
    number_text: &'t mut String,
) -> Result<(ColumnType, i64, &'t str), DecodeError> {
    let check_string = |string_bytes: usize| check_string(name, string_bytes, limits);
    Ok(match scalar {
        Scalar::Null => (ColumnType::Null, 0, ""),
        Scalar::Bool(value) => (ColumnType::Bool, i64::from(value), ""),
        Scalar::Integer(value) => match epoch_integer_to_micros(value) {
            Some(micros) if epoch_field => {
                write!(number_text, "{value}").expect("writing to a String");
                let text: &'t String = number_text;
                (ColumnType::Timestamp, micros, text.as_str())
            }
            Some(_) => (ColumnType::Int64, value, ""),
            None => (ColumnType::Int64Large, value, ""),
        },
        Scalar::Float(value) => {
            debug_assert!(value.is_finite(), "serde_json parses only finite numbers");
            let bits = value.to_bits() as i64;
            match epoch_float_to_micros(value) {
                Some(micros) if epoch_field => {
                    number_text.push_str(&float_text(value));
                    let text: &'t String = number_text;
                    (ColumnType::Timestamp, micros, text.as_str())
                }
                Some(_) => (ColumnType::Float64, bits, ""),
                None => (ColumnType::Float64Large, bits, ""),
            }
        }
        Scalar::Text(text) => {
            check_string(text.len())?;
            let epoch = epoch_field.then(|| epoch_text_to_micros(text)).flatten();
            match epoch.or_else(|| parse_datetime_text(text)) {
                Some(micros) => (ColumnType::Timestamp, micros, text),
                None => (ColumnType::Utf8, 0, text),
            }
        }
        Scalar::Array(text) => {
            check_string(text.len())?;
            (ColumnType::Utf8, 0, text)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::error::DecodeErrorKind;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
    use arrow_array::Array;

    fn decode(json: &str, decoder: &mut JsonDecoder) -> Result<(), DecodeError> {
        decoder.decode(json.as_bytes())
    }

    fn new_decoder() -> JsonDecoder {
        JsonDecoder::new(DecodeOptions::default())
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
        let mut decoder = new_decoder();
        decode(
            r#"{"id": 7, "user": {"name": "ann", "address": {"city": "Oslo"}}, "tags": ["a", 1, {"b": null}], "empty": {}, "ok": true, "none": null, "price": 2.5}"#,
            &mut decoder,
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
        assert_eq!(column_types(decoder.schema()), expected);
        assert_eq!(decoder.schema().version(), 1);
        let batch = decoder.finish().unwrap();
        assert_eq!(batch.column(0).as_primitive::<Int64Type>().value(0), 7);
        assert_eq!(batch.column(2).as_string::<i32>().value(0), "Oslo");
        assert_eq!(
            batch.column(3).as_string::<i32>().value(0),
            r#"["a",1,{"b":null}]"#
        );
        assert!(batch.column(4).as_boolean().value(0));
        assert_eq!(batch.column(5).logical_null_count(), 1);
        assert_eq!(batch.column(6).as_primitive::<Float64Type>().value(0), 2.5);
    }

    #[test]
    fn strings_become_timestamps_only_when_they_parse_as_dates() {
        let mut decoder = new_decoder();
        decode(
            r#"{"when": "29/11/2026", "name": "29 apples"}"#,
            &mut decoder,
        )
        .unwrap();
        let schema = decoder.schema();
        assert_eq!(
            schema.field("when").unwrap().column_type,
            ColumnType::Timestamp
        );
        assert_eq!(schema.field("name").unwrap().column_type, ColumnType::Utf8);
        // A later non-date string widens the column to strings; the date keeps its text.
        decode(r#"{"when": "soon"}"#, &mut decoder).unwrap();
        assert_eq!(
            decoder.schema().field("when").unwrap().column_type,
            ColumnType::Utf8
        );
        let batch = decoder.finish().unwrap();
        let when: Vec<Option<&str>> = batch.column(0).as_string::<i32>().iter().collect();
        assert_eq!(when, [Some("29/11/2026"), Some("soon")]);
    }

    fn timestamps(batch: &RecordBatch, column: usize) -> Vec<Option<i64>> {
        let column = batch.column(column);
        column
            .as_primitive::<TimestampMicrosecondType>()
            .iter()
            .collect()
    }

    #[test]
    fn epoch_numbers_in_epoch_fields_and_in_columns_of_dates() {
        let mut decoder = new_decoder();
        decode(
            r#"{"created_at": 1764437991, "ts": "1764437991123", "count": 1764437991, "event_time": 1764437991.5, "id": "1764437991"}"#,
            &mut decoder,
        )
        .unwrap();
        use ColumnType::*;
        let types: Vec<ColumnType> = column_types(decoder.schema())
            .into_iter()
            .map(|(_, column_type)| column_type)
            .collect();
        assert_eq!(types, [Timestamp, Timestamp, Int64, Timestamp, Utf8]);
        let batch = decoder.finish().unwrap();
        assert_eq!(timestamps(&batch, 0), [Some(1_764_437_991_000_000)]);
        assert_eq!(timestamps(&batch, 1), [Some(1_764_437_991_123_000)]);
        assert_eq!(
            batch.column(2).as_primitive::<Int64Type>().value(0),
            1_764_437_991
        );
        assert_eq!(timestamps(&batch, 3), [Some(1_764_437_991_500_000)]);
        assert_eq!(batch.column(4).as_string::<i32>().value(0), "1764437991");

        // An epoch field's number outside the timestamp range stays a number, which no
        // timestamp column holds: the column becomes strings, each value its own text.
        decode(r#"{"created_at": 1764437991123456789}"#, &mut decoder).unwrap();
        assert_eq!(
            decoder.schema().field("created_at").unwrap().column_type,
            Utf8
        );

        // A field of any name holding dates reads its numbers as epochs, in either order.
        let mut decoder = new_decoder();
        for record in [
            r#"{"fix": 1764437991}"#,
            r#"{"fix": "2026-11-29T17:39:51Z"}"#,
            r#"{"fix": 1764437991123}"#,
            r#"{"fix": 1.5}"#,
        ] {
            decode(record, &mut decoder).unwrap();
        }
        assert_eq!(
            decoder.schema().field("fix").unwrap().column_type,
            Timestamp
        );
        let batch = decoder.finish().unwrap();
        assert_eq!(
            timestamps(&batch, 0),
            [
                Some(1_764_437_991_000_000),
                Some(1_795_973_991_000_000),
                Some(1_764_437_991_123_000),
                Some(1_500_000)
            ]
        );

        let options = DecodeOptions {
            epoch_fields: EpochFields::none(),
            ..DecodeOptions::default()
        };
        let mut decoder = JsonDecoder::new(options);
        decoder.decode(br#"{"ts": 1764437991}"#).unwrap();
        assert_eq!(decoder.schema().field("ts").unwrap().column_type, Int64);
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
            (&[r#"{"v": "2026-11-29"}"#, r#"{"v": 3}"#], Timestamp),
            (&[r#"{"v": 3.5}"#, r#"{"v": "2026-11-29"}"#], Timestamp),
            (&[r#"{"v": "2026-11-29"}"#, r#"{"v": true}"#], Utf8),
            (&[r#"{"v": true}"#, r#"{"v": false}"#], Bool),
            (&[r#"{"v": 18446744073709551615}"#], Float64Large),
            (
                &[r#"{"v": 1}"#, r#"{"v": 18446744073709551615}"#],
                Float64Large,
            ),
            (
                &[r#"{"v": 1}"#, r#"{"v": 9223372036854775807}"#],
                Int64Large,
            ),
            (
                &[r#"{"v": 9223372036854775807}"#, r#"{"v": "2026-11-29"}"#],
                Utf8,
            ),
            (&[r#"{"other": 1}"#, r#"{"v": "x"}"#], Utf8),
        ];
        for (records, expected) in table {
            let mut decoder = new_decoder();
            for record in *records {
                decode(record, &mut decoder).unwrap();
            }
            assert_eq!(
                decoder.schema().field("v").unwrap().column_type,
                *expected,
                "{records:?}"
            );
            let batch = decoder.finish().unwrap();
            assert_eq!(batch.num_rows(), records.len());
        }
    }

    #[test]
    fn new_fields_are_appended_and_versioned() {
        let mut decoder = new_decoder();
        decode(r#"{"a": 1}"#, &mut decoder).unwrap();
        decode(r#"{"a": 2, "b": "x"}"#, &mut decoder).unwrap();
        decode(r#"{"b": "y"}"#, &mut decoder).unwrap();
        assert_eq!(decoder.schema().version(), 2);
        assert_eq!(decoder.schema().field_index("b"), Some(1));
        let batch = decoder.finish().unwrap();
        let a: Vec<Option<i64>> = batch.column(0).as_primitive::<Int64Type>().iter().collect();
        assert_eq!(a, [Some(1), Some(2), None]);
    }

    #[test]
    fn colliding_names_keep_the_last_value_at_the_first_place() {
        let mut decoder = new_decoder();
        decode(r#"{"a.b": 1, "a": {"b": "two"}}"#, &mut decoder).unwrap();
        assert_eq!(decoder.schema().len(), 1);
        decode(r#"{"k": 1, "z": 0, "k": "2"}"#, &mut decoder).unwrap();
        // Duplicate keys: the parsed object holds the last value at the first key's place,
        // and an earlier object under the key contributes nothing.
        decode(r#"{"o": {"p": 1}, "q": 0, "o": {"r": 2}}"#, &mut decoder).unwrap();
        decode(r#"{"s": 1, "s": {}}"#, &mut decoder).unwrap();
        let names: Vec<&str> = decoder
            .schema()
            .fields()
            .iter()
            .map(|field| field.name.as_str())
            .collect();
        assert_eq!(names, ["a.b", "k", "z", "o.r", "q"]);
        assert!(decoder.exact_records() >= 4);
        let batch = decoder.finish().unwrap();
        let texts = |column: usize| -> Vec<Option<&str>> {
            batch.column(column).as_string::<i32>().iter().collect()
        };
        assert_eq!(texts(0), [Some("two"), None, None, None]);
        assert_eq!(texts(1), [None, Some("2"), None, None]);
        let o_r: Vec<Option<i64>> = batch.column(3).as_primitive::<Int64Type>().iter().collect();
        assert_eq!(o_r, [None, None, Some(2), None]);
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
        let mut decoder = JsonDecoder::new(options);
        decoder.decode(br#"{"a": 1, "b": 2}"#).unwrap();
        let version = decoder.schema().version();

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
            let error = decoder.decode(value).unwrap_err();
            assert_eq!(&error, expected, "{}", String::from_utf8_lossy(value));
            assert!(!error.to_string().is_empty());
            assert_eq!(decoder.schema().version(), version);
            assert_eq!(decoder.schema().len(), 2);
            assert_eq!(decoder.rows(), 1);
        }
        // Brackets inside strings do not count towards depth.
        decoder.decode(br#"{"a": "[[[[{{{{"}"#).unwrap();
        // Refused records left nothing in the batch.
        let batch = decoder.finish().unwrap();
        assert_eq!(batch.num_rows(), 2);
        // `a` holds a number and a string: strings, the number as its text.
        assert_eq!(batch.column(0).as_string::<i32>().value(0), "1");
    }

    #[test]
    fn hostile_records_under_default_limits_are_errors_not_panics() {
        let limits = DecodeLimits::default();
        let mut decoder = new_decoder();
        let mut expect_kind = |value: Vec<u8>, kind: DecodeErrorKind| {
            let error = decoder.decode(&value).unwrap_err();
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
        assert!(decoder.schema().is_empty());
        assert_eq!(decoder.rows(), 0);

        // One new column short of the schema limit, then a record that would pass it.
        let mut decoder = new_decoder();
        for index in 0..limits.schema_fields_max {
            decode(&format!(r#"{{"c{index}": {index}}}"#), &mut decoder).unwrap();
        }
        assert_eq!(decoder.schema().len(), limits.schema_fields_max as usize);
        let error = decode(r#"{"c0": 1, "one_more": 1}"#, &mut decoder).unwrap_err();
        assert_eq!(error.kind(), DecodeErrorKind::SchemaFull);
        // Known columns still decode.
        decode(r#"{"c0": 2.5}"#, &mut decoder).unwrap();
        let batch = decoder.finish().unwrap();
        assert_eq!(batch.num_rows(), limits.schema_fields_max as usize + 1);
    }

    #[test]
    fn invalid_json_reports_where() {
        let mut decoder = new_decoder();
        let error = decode("{\"a\": 1,\n \"b\": tru}", &mut decoder).unwrap_err();
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
            let error = decode(bad, &mut decoder).unwrap_err();
            assert!(
                matches!(error, DecodeError::InvalidJson { .. }),
                "{bad:?}: {error:?}"
            );
        }
        assert!(decoder.schema().is_empty());
    }
}
