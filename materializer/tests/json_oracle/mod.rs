//! The decoder as it was before it wrote Arrow columns directly (issue 5's rules: a record
//! parsed into a `serde_json::Value`, flattened into a `Row` of typed cells, rows converted to a
//! batch under the final schema), kept as the test oracle of `JsonDecoder`, with the one rule
//! issue 14 changed: numbers that read as epochs are Int64/Float64 (others Int64Large/
//! Float64Large), and a Timestamp column reads them as epochs.

#![allow(dead_code)]

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, NullArray, RecordBatch, RecordBatchOptions};
use arrow_schema::ArrowError;
use materializer::json::{
    bool_text, epoch_float_to_micros, epoch_integer_to_micros, epoch_text_to_micros, float_text,
    parse_datetime_text, ColumnType, DecodeError, DecodeOptions, InferredSchema, TIMESTAMP_ZONE,
};
use serde_json::{Map, Value};

use materializer::json::checks::{
    check_depth, check_string, checked_text, json_error, json_kind, truncated,
    ERROR_FIELD_NAME_BYTES_MAX,
};

/// Decodes one record value into a row, widening `schema` with its fields. On error the schema
/// is unchanged.
pub fn decode_record(
    value: &[u8],
    options: &DecodeOptions,
    schema: &mut InferredSchema,
) -> Result<Row, DecodeError> {
    let limits = &options.limits;
    let text = checked_text(value, limits)?;
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
        check_string(name, string_bytes, &self.options.limits)
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

#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Null,
    Bool(bool),
    Int64(i64),
    Float64(f64),
    /// `text` is what the record held (date text, or the epoch number's JSON text), kept so that
    /// a column that later widens to strings shows the original, not a re-rendering.
    Timestamp {
        micros: i64,
        text: Box<str>,
    },
    /// A string, or an array's compact JSON text.
    Utf8(String),
}

impl Cell {
    pub fn column_type(&self) -> ColumnType {
        match self {
            Cell::Null => ColumnType::Null,
            Cell::Bool(_) => ColumnType::Bool,
            // Numbers are Int64/Float64 when they also read as epochs (issue 14), Large if not.
            Cell::Int64(value) if epoch_integer_to_micros(*value).is_some() => ColumnType::Int64,
            Cell::Int64(_) => ColumnType::Int64Large,
            Cell::Float64(value) if epoch_float_to_micros(*value).is_some() => ColumnType::Float64,
            Cell::Float64(_) => ColumnType::Float64Large,
            Cell::Timestamp { .. } => ColumnType::Timestamp,
            Cell::Utf8(_) => ColumnType::Utf8,
        }
    }

    /// The cell as a string in a column widened to Utf8: strings and date text as they were,
    /// numbers and booleans as canonical JSON text. `None` for null.
    pub fn text(&self) -> Option<Cow<'_, str>> {
        match self {
            Cell::Null => None,
            Cell::Bool(value) => Some(Cow::Borrowed(bool_text(*value))),
            Cell::Int64(value) => Some(Cow::Owned(value.to_string())),
            Cell::Float64(value) => Some(Cow::Owned(float_text(*value))),
            Cell::Timestamp { text, .. } => Some(Cow::Borrowed(text)),
            Cell::Utf8(text) => Some(Cow::Borrowed(text)),
        }
    }
}

/// A decoded record: `(column index, cell)` pairs in the record's field order, indices distinct.
/// Columns the record does not mention are null.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub cells: Vec<(u32, Cell)>,
    pub schema_version: u64,
}

impl Row {
    pub fn cells(&self) -> &[(u32, Cell)] {
        &self.cells
    }

    pub fn cell(&self, column_index: u32) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|(index, _)| *index == column_index)
            .map(|(_, cell)| cell)
    }

    /// The schema version right after this row was decoded: the row is valid under it and every
    /// later version.
    pub fn schema_version(&self) -> u64 {
        self.schema_version
    }
}

/// Builds one batch of `rows` under `schema`, with `schema.arrow_schema()` as its schema.
/// Errors (never panics) when a row does not belong to this schema: a column index beyond it, a
/// version after it, or a cell whose type the column has not widened to.
pub fn rows_to_batch(schema: &InferredSchema, rows: &[Row]) -> Result<RecordBatch, ArrowError> {
    let mut builders: Vec<ColumnBuilder> = schema
        .fields()
        .iter()
        .map(|field| ColumnBuilder::new(field.column_type, rows.len()))
        .collect();
    let mut column_filled = vec![false; builders.len()];
    for (row_index, row) in rows.iter().enumerate() {
        if row.schema_version() > schema.version() {
            return Err(ArrowError::InvalidArgumentError(format!(
                "row {row_index} was decoded under schema version {}, after this one ({})",
                row.schema_version(),
                schema.version()
            )));
        }
        column_filled.fill(false);
        for (column_index, cell) in row.cells() {
            let column_index = *column_index as usize;
            let Some(builder) = builders.get_mut(column_index) else {
                return Err(ArrowError::InvalidArgumentError(format!(
                    "row {row_index} has column {column_index}; the schema has {}",
                    schema.len()
                )));
            };
            if column_filled[column_index] {
                return Err(ArrowError::InvalidArgumentError(format!(
                    "row {row_index} has column {column_index} twice"
                )));
            }
            column_filled[column_index] = true;
            builder.append(cell).map_err(|column_type| {
                ArrowError::InvalidArgumentError(format!(
                    "row {row_index}: a {:?} cell does not fit column {:?} of type {column_type:?}",
                    cell.column_type(),
                    schema.fields()[column_index].name,
                ))
            })?;
        }
        for (builder, filled) in builders.iter_mut().zip(&column_filled) {
            if !filled {
                builder.append_null();
            }
        }
    }
    let columns: Vec<ArrayRef> = builders.into_iter().map(ColumnBuilder::finish).collect();
    assert!(columns.iter().all(|column| column.len() == rows.len()));
    RecordBatch::try_new_with_options(
        schema.arrow_schema(),
        columns,
        // A schema with no columns yet still has rows: `{}` records are rows too.
        &RecordBatchOptions::new().with_row_count(Some(rows.len())),
    )
}

enum ColumnBuilder {
    Null(usize),
    Bool(BooleanBuilder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Timestamp(TimestampMicrosecondBuilder),
    Utf8(StringBuilder),
}

impl ColumnBuilder {
    fn new(column_type: ColumnType, capacity: usize) -> Self {
        match column_type {
            ColumnType::Null => ColumnBuilder::Null(0),
            ColumnType::Bool => ColumnBuilder::Bool(BooleanBuilder::with_capacity(capacity)),
            ColumnType::Int64 | ColumnType::Int64Large => {
                ColumnBuilder::Int64(Int64Builder::with_capacity(capacity))
            }
            ColumnType::Float64 | ColumnType::Float64Large => {
                ColumnBuilder::Float64(Float64Builder::with_capacity(capacity))
            }
            ColumnType::Timestamp => ColumnBuilder::Timestamp(
                TimestampMicrosecondBuilder::with_capacity(capacity).with_timezone(TIMESTAMP_ZONE),
            ),
            ColumnType::Utf8 => ColumnBuilder::Utf8(StringBuilder::with_capacity(capacity, 0)),
        }
    }

    fn column_type(&self) -> ColumnType {
        match self {
            ColumnBuilder::Null(_) => ColumnType::Null,
            ColumnBuilder::Bool(_) => ColumnType::Bool,
            ColumnBuilder::Int64(_) => ColumnType::Int64,
            ColumnBuilder::Float64(_) => ColumnType::Float64,
            ColumnBuilder::Timestamp(_) => ColumnType::Timestamp,
            ColumnBuilder::Utf8(_) => ColumnType::Utf8,
        }
    }

    fn append_null(&mut self) {
        match self {
            ColumnBuilder::Null(count) => *count += 1,
            ColumnBuilder::Bool(builder) => builder.append_null(),
            ColumnBuilder::Int64(builder) => builder.append_null(),
            ColumnBuilder::Float64(builder) => builder.append_null(),
            ColumnBuilder::Timestamp(builder) => builder.append_null(),
            ColumnBuilder::Utf8(builder) => builder.append_null(),
        }
    }

    /// Appends `cell` converted to this column's type; the column's type if it does not fit.
    fn append(&mut self, cell: &Cell) -> Result<(), ColumnType> {
        if matches!(cell, Cell::Null) {
            self.append_null();
            return Ok(());
        }
        match (self, cell) {
            (ColumnBuilder::Bool(builder), Cell::Bool(value)) => builder.append_value(*value),
            (ColumnBuilder::Int64(builder), Cell::Int64(value)) => builder.append_value(*value),
            (ColumnBuilder::Float64(builder), Cell::Float64(value)) => builder.append_value(*value),
            (ColumnBuilder::Float64(builder), Cell::Int64(value)) => {
                builder.append_value(*value as f64)
            }
            (ColumnBuilder::Timestamp(builder), Cell::Timestamp { micros, .. }) => {
                builder.append_value(*micros)
            }
            // A number in a column that holds dates is an epoch (its type says it reads as one).
            (ColumnBuilder::Timestamp(builder), Cell::Int64(value)) => {
                builder.append_value(epoch_integer_to_micros(*value).ok_or(ColumnType::Timestamp)?)
            }
            (ColumnBuilder::Timestamp(builder), Cell::Float64(value)) => {
                builder.append_value(epoch_float_to_micros(*value).ok_or(ColumnType::Timestamp)?)
            }
            (ColumnBuilder::Utf8(builder), cell) => match cell.text() {
                Some(text) => builder.append_value(text),
                None => builder.append_null(),
            },
            (builder, _) => return Err(builder.column_type()),
        }
        Ok(())
    }

    fn finish(self) -> ArrayRef {
        match self {
            ColumnBuilder::Null(count) => Arc::new(NullArray::new(count)),
            ColumnBuilder::Bool(mut builder) => Arc::new(builder.finish()),
            ColumnBuilder::Int64(mut builder) => Arc::new(builder.finish()),
            ColumnBuilder::Float64(mut builder) => Arc::new(builder.finish()),
            ColumnBuilder::Timestamp(mut builder) => Arc::new(builder.finish()),
            ColumnBuilder::Utf8(mut builder) => Arc::new(builder.finish()),
        }
    }
}
