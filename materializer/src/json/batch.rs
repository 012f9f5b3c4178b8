//! Accumulated rows to an Arrow `RecordBatch` under the current schema. Rows decoded under an
//! earlier version are converted cell by cell: a missing column is null, an Int64 cell in a
//! Float64 column becomes a float, any cell in a Utf8 column becomes its text (`Cell::text`).

use std::sync::Arc;

use arrow_array::builder::{
    BooleanBuilder, Float64Builder, Int64Builder, StringBuilder, TimestampMicrosecondBuilder,
};
use arrow_array::{ArrayRef, NullArray, RecordBatch, RecordBatchOptions};
use arrow_schema::ArrowError;

use super::row::{Cell, Row};
use super::schema::{ColumnType, InferredSchema, TIMESTAMP_ZONE};

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
            ColumnType::Int64 => ColumnBuilder::Int64(Int64Builder::with_capacity(capacity)),
            ColumnType::Float64 => ColumnBuilder::Float64(Float64Builder::with_capacity(capacity)),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::decode::{decode_record, DecodeOptions};
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
    use arrow_array::Array;

    fn decode_all(records: &[&str]) -> (InferredSchema, Vec<Row>) {
        let mut schema = InferredSchema::new();
        let rows = records
            .iter()
            .map(|record| {
                decode_record(record.as_bytes(), &DecodeOptions::default(), &mut schema).unwrap()
            })
            .collect();
        (schema, rows)
    }

    #[test]
    fn rows_of_every_version_become_one_batch() {
        let (schema, rows) = decode_all(&[
            r#"{"id": 1, "price": 10, "flag": true, "at": "2026-11-29T17:39:51Z", "mixed": 5}"#,
            r#"{"id": 2, "price": 10.5, "note": "n", "mixed": "text"}"#,
            r#"{"id": 3, "flag": null, "at": "01/02/2026", "mixed": "29/11/2026", "nothing": null}"#,
            r#"{}"#,
        ]);
        let batch = rows_to_batch(&schema, &rows).unwrap();
        assert_eq!(batch.num_rows(), 4);
        assert_eq!(batch.schema(), schema.arrow_schema());
        let names: Vec<&str> = batch
            .schema_ref()
            .fields()
            .iter()
            .map(|field| field.name().as_str())
            .collect();
        assert_eq!(
            names,
            ["id", "price", "flag", "at", "mixed", "note", "nothing"]
        );

        let id = batch.column(0).as_primitive::<Int64Type>();
        assert_eq!(
            id.iter().collect::<Vec<_>>(),
            [Some(1), Some(2), Some(3), None]
        );
        let price = batch.column(1).as_primitive::<Float64Type>();
        assert_eq!(
            price.iter().collect::<Vec<_>>(),
            [Some(10.0), Some(10.5), None, None]
        );
        let flag = batch.column(2).as_boolean();
        assert_eq!(
            flag.iter().collect::<Vec<_>>(),
            [Some(true), None, None, None]
        );
        let at = batch.column(3).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(
            at.iter().collect::<Vec<_>>(),
            [
                Some(1_795_973_991_000_000),
                None,
                Some(1_769_904_000_000_000),
                None
            ]
        );
        // Conflicting types became strings; the date keeps its original text.
        let mixed = batch.column(4).as_string::<i32>();
        assert_eq!(
            mixed.iter().collect::<Vec<_>>(),
            [Some("5"), Some("text"), Some("29/11/2026"), None]
        );
        assert_eq!(batch.column(6).logical_null_count(), 4);
        assert_eq!(batch.column(6).data_type(), &arrow_schema::DataType::Null);
    }

    #[test]
    fn empty_schema_and_no_rows() {
        let (schema, rows) = decode_all(&[r#"{}"#, r#"{}"#]);
        let batch = rows_to_batch(&schema, &rows).unwrap();
        assert_eq!((batch.num_rows(), batch.num_columns()), (2, 0));
        let (schema, _) = decode_all(&[r#"{"a": 1}"#]);
        let batch = rows_to_batch(&schema, &[]).unwrap();
        assert_eq!((batch.num_rows(), batch.num_columns()), (0, 1));
    }

    #[test]
    fn rows_from_another_schema_are_refused() {
        let (_, rows) = decode_all(&[r#"{"a": 1, "b": 2}"#]);
        let (schema, _) = decode_all(&[r#"{"a": true}"#]);
        assert!(rows_to_batch(&schema, &rows).is_err());
        let (schema, _) = decode_all(&[r#"{"a": "x"}"#]);
        assert!(rows_to_batch(&schema, &rows).is_err());
        let narrow_row = Row {
            cells: vec![(0, Cell::Utf8("x".into()))],
            schema_version: 1,
        };
        let (schema, _) = decode_all(&[r#"{"a": 1}"#]);
        assert!(rows_to_batch(&schema, &[narrow_row]).is_err());
        let twice = Row {
            cells: vec![(0, Cell::Int64(1)), (0, Cell::Int64(2))],
            schema_version: 1,
        };
        assert!(rows_to_batch(&schema, &[twice]).is_err());
    }
}
