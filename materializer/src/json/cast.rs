//! Casts a batch built under an earlier schema version to a widened one, so that batches already
//! materialised need not be rebuilt from the log when a view's schema widens.
//!
//! Conversions are exactly the ones `widen` allows: a column missing from the batch becomes all
//! nulls, a Null column becomes nulls of the new type, integers become floats, epoch-readable
//! numbers (Int64, Float64) become timestamps (seconds or milliseconds by magnitude), and
//! anything becomes Utf8 as canonical JSON text (`5`, `2.5`, `true`). One loss is unavoidable: a batch no
//! longer has a timestamp's original text, so a Timestamp column widened to Utf8 shows RFC 3339
//! (`2026-11-29T17:39:51Z`) where rows converted before batching (`batch.rs`) show the original
//! text. A view that needs the original text everywhere rebuilds from the log, which has it.

use std::fmt;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::types::{Float64Type, Int64Type, TimestampMicrosecondType};
use arrow_array::{new_null_array, Array, ArrayRef, RecordBatch, RecordBatchOptions, StringArray};
use arrow_schema::{ArrowError, DataType, SchemaRef};

use super::datetime::{epoch_float_to_micros, epoch_integer_to_micros, format_rfc3339};
use super::schema::ColumnType;
use super::text::{bool_text, float_text};

#[derive(Debug)]
pub enum CastError {
    /// The target schema lacks a column the batch has: schemas only grow.
    ColumnDropped {
        name: String,
    },
    /// The target type is not the source type or wider.
    NotAWidening {
        name: String,
        from: DataType,
        to: DataType,
    },
    /// A type this module does not produce.
    UnknownType {
        name: String,
        data_type: DataType,
    },
    Arrow(ArrowError),
}

impl fmt::Display for CastError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CastError::ColumnDropped { name } => {
                write!(f, "column {name:?} is not in the target schema")
            }
            CastError::NotAWidening { name, from, to } => {
                write!(f, "column {name:?}: {from} does not widen to {to}")
            }
            CastError::UnknownType { name, data_type } => {
                write!(
                    f,
                    "column {name:?} has type {data_type}, which JSON decoding does not produce"
                )
            }
            CastError::Arrow(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for CastError {}

/// Returns `batch` under `target`, which must hold every column of the batch at the same or a
/// wider type.
pub fn cast_batch(batch: &RecordBatch, target: &SchemaRef) -> Result<RecordBatch, CastError> {
    let source = batch.schema();
    for field in source.fields() {
        if target.field_with_name(field.name()).is_err() {
            return Err(CastError::ColumnDropped {
                name: field.name().clone(),
            });
        }
    }
    let column_type = |field: &arrow_schema::Field| {
        ColumnType::from_field(field).ok_or_else(|| CastError::UnknownType {
            name: field.name().to_string(),
            data_type: field.data_type().clone(),
        })
    };
    let mut columns = Vec::with_capacity(target.fields().len());
    for target_field in target.fields() {
        let name = target_field.name();
        let to = column_type(target_field)?;
        let column = match source.index_of(name) {
            Err(_) => new_null_array(target_field.data_type(), batch.num_rows()),
            Ok(index) => {
                let from = column_type(source.field(index))?;
                if !from.widens_to(to) {
                    return Err(CastError::NotAWidening {
                        name: name.clone(),
                        from: from.arrow_type(),
                        to: to.arrow_type(),
                    });
                }
                widen_array(batch.column(index), from, to)
            }
        };
        assert_eq!(column.len(), batch.num_rows());
        columns.push(column);
    }
    RecordBatch::try_new_with_options(
        target.clone(),
        columns,
        &RecordBatchOptions::new().with_row_count(Some(batch.num_rows())),
    )
    .map_err(CastError::Arrow)
}

/// An Int64 or Float64 array of epoch-readable numbers as Timestamp (seconds or milliseconds by
/// magnitude): what a view's stored numbers become when their column came to hold dates.
/// `None` for other types.
pub fn epochs_to_timestamps(array: &ArrayRef) -> Option<ArrayRef> {
    let from = match array.data_type() {
        DataType::Int64 => ColumnType::Int64,
        DataType::Float64 => ColumnType::Float64,
        _ => return None,
    };
    Some(widen_array(array, from, ColumnType::Timestamp))
}

fn widen_array(array: &ArrayRef, from: ColumnType, to: ColumnType) -> ArrayRef {
    debug_assert!(from.widens_to(to));
    if from.arrow_type() == to.arrow_type() {
        return array.clone();
    }
    use ColumnType::*;
    match (from, to) {
        (Null, _) => new_null_array(&to.arrow_type(), array.len()),
        (Int64 | Int64Large, Float64 | Float64Large) => {
            let floats = array
                .as_primitive::<Int64Type>()
                .unary::<_, Float64Type>(|value| value as f64);
            Arc::new(floats)
        }
        // The types guarantee every value reads as an epoch; 0 is never reached.
        (Int64, Timestamp) => {
            let micros = array
                .as_primitive::<Int64Type>()
                .unary::<_, TimestampMicrosecondType>(|value| {
                    epoch_integer_to_micros(value).unwrap_or_default()
                });
            Arc::new(micros.with_timezone(super::schema::TIMESTAMP_ZONE))
        }
        (Float64, Timestamp) => {
            let micros = array
                .as_primitive::<Float64Type>()
                .unary::<_, TimestampMicrosecondType>(|value| {
                    epoch_float_to_micros(value).unwrap_or_default()
                });
            Arc::new(micros.with_timezone(super::schema::TIMESTAMP_ZONE))
        }
        (_, Utf8) => Arc::new(texts(array, from)),
        _ => unreachable!("{from:?} does not widen to {to:?}"),
    }
}

fn texts(array: &ArrayRef, from: ColumnType) -> StringArray {
    match from {
        ColumnType::Bool => array
            .as_boolean()
            .iter()
            .map(|value| value.map(bool_text))
            .collect(),
        ColumnType::Int64 | ColumnType::Int64Large => array
            .as_primitive::<Int64Type>()
            .iter()
            .map(|value| value.map(|value| value.to_string()))
            .collect(),
        ColumnType::Float64 | ColumnType::Float64Large => array
            .as_primitive::<Float64Type>()
            .iter()
            .map(|value| value.map(float_text))
            .collect(),
        ColumnType::Timestamp => array
            .as_primitive::<TimestampMicrosecondType>()
            .iter()
            .map(|value| value.map(format_rfc3339))
            .collect(),
        ColumnType::Null | ColumnType::Utf8 => unreachable!("handled by the caller"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::decode::{DecodeOptions, JsonDecoder};
    use arrow_schema::{Field, Schema};

    fn decode(decoder: &mut JsonDecoder, record: &str) {
        decoder.decode(record.as_bytes()).unwrap()
    }

    #[test]
    fn an_earlier_batch_casts_to_the_widened_schema() {
        let mut decoder = JsonDecoder::new(DecodeOptions::default());
        decode(
            &mut decoder,
            r#"{"n": 1, "b": true, "f": 1.5, "t": "2026-11-29T17:39:51Z", "z": null, "s": "x", "e": 1764437991}"#,
        );
        decode(
            &mut decoder,
            r#"{"n": 2, "b": false, "f": 2, "t": "29/11/2026", "z": null, "e": 2.5}"#,
        );
        let early = decoder.finish().unwrap();
        // Widen: n to Float64, b, f and t to Utf8, z to Int64, e to Timestamp, a new column.
        decode(
            &mut decoder,
            r#"{"n": 0.5, "b": "maybe", "f": "many", "t": "later", "z": 4, "new": true, "e": "2026-11-29"}"#,
        );
        let target = decoder.schema().arrow_schema();
        let cast = cast_batch(&early, &target).unwrap();
        assert_eq!(cast.schema(), target);
        assert_eq!(cast.num_rows(), 2);

        let column = |name: &str| cast.column(target.index_of(name).unwrap()).clone();
        let n = column("n");
        assert_eq!(
            n.as_primitive::<Float64Type>().iter().collect::<Vec<_>>(),
            [Some(1.0), Some(2.0)]
        );
        let b = column("b");
        assert_eq!(
            b.as_string::<i32>().iter().collect::<Vec<_>>(),
            [Some("true"), Some("false")]
        );
        let f = column("f");
        assert_eq!(
            f.as_string::<i32>().iter().collect::<Vec<_>>(),
            [Some("1.5"), Some("2")]
        );
        let t = column("t");
        assert_eq!(
            t.as_string::<i32>().iter().collect::<Vec<_>>(),
            [Some("2026-11-29T17:39:51Z"), Some("2026-11-29T00:00:00Z")]
        );
        assert_eq!(column("z").null_count(), 2);
        assert_eq!(column("z").data_type(), &DataType::Int64);
        assert_eq!(
            column("s").as_string::<i32>().iter().collect::<Vec<_>>(),
            [Some("x"), None]
        );
        assert_eq!(column("new").null_count(), 2);
        // Numbers in a column that came to hold dates are epochs, seconds by magnitude.
        let e = column("e");
        assert_eq!(
            e.as_primitive::<TimestampMicrosecondType>()
                .iter()
                .collect::<Vec<_>>(),
            [Some(1_764_437_991_000_000), Some(2_500_000)]
        );

        // The cast batch and a batch of the later rows concatenate: one schema.
        let later_batch = decoder.finish().unwrap();
        assert_eq!(later_batch.schema(), cast.schema());
    }

    #[test]
    fn a_cast_of_numbers_shows_what_converting_the_rows_shows() {
        let records = [r#"{"v": 5}"#, r#"{"v": 2.25}"#, r#"{"v": 12345678901234}"#];
        let mut early_decoder = JsonDecoder::new(DecodeOptions::default());
        let mut late_decoder = JsonDecoder::new(DecodeOptions::default());
        for record in records {
            decode(&mut early_decoder, record);
            decode(&mut late_decoder, record);
        }
        let early = early_decoder.finish().unwrap();
        assert_eq!(early.schema().field(0).data_type(), &DataType::Float64);
        decode(&mut late_decoder, r#"{"v": true}"#);
        let late = late_decoder.finish().unwrap();
        let from_batch = cast_batch(&early, &late_decoder.schema().arrow_schema()).unwrap();
        assert_eq!(from_batch, late.slice(0, records.len()));
        assert_eq!(late.column(0).as_string::<i32>().value(0), "5");
    }

    #[test]
    fn narrowing_dropping_and_foreign_types_are_refused() {
        let mut decoder = JsonDecoder::new(DecodeOptions::default());
        decode(&mut decoder, r#"{"a": "x", "b": 1}"#);
        let batch = decoder.finish().unwrap().slice(0, 0);
        let narrower = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("b", DataType::Int64, true),
        ]));
        assert!(matches!(
            cast_batch(&batch, &narrower),
            Err(CastError::NotAWidening { .. })
        ));
        let dropped = Arc::new(Schema::new(vec![Field::new("a", DataType::Utf8, true)]));
        assert!(matches!(
            cast_batch(&batch, &dropped),
            Err(CastError::ColumnDropped { .. })
        ));
        let foreign = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8, true),
            Field::new("b", DataType::Int32, true),
        ]));
        assert!(matches!(
            cast_batch(&batch, &foreign),
            Err(CastError::UnknownType { .. })
        ));
        // Casting to the same schema is the identity.
        assert_eq!(
            cast_batch(&batch, &decoder.schema().arrow_schema()).unwrap(),
            batch
        );
    }
}
