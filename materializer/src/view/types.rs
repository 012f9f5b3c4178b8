//! Output column types of views and the text of indexed values.
//!
//! A view's output types follow its source's inferred schema, which only widens: an output
//! column takes the wider of what it was and what the latest micro-batch produced (along the
//! JSON lattice where both are JSON types, numbers to Float64, anything else to Utf8). Stored
//! values keep the type they were computed with and are cast when read.

use datafusion::arrow::array::{Array, ArrayRef, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::arrow::error::ArrowError;
use datafusion::common::ScalarValue;

use crate::json::ColumnType;

pub fn widen(a: &DataType, b: &DataType) -> DataType {
    if a == b || *b == DataType::Null {
        return a.clone();
    }
    if *a == DataType::Null {
        return b.clone();
    }
    match (ColumnType::from_arrow(a), ColumnType::from_arrow(b)) {
        (Some(x), Some(y)) => x.widen(y).arrow_type(),
        _ if a.is_numeric() && b.is_numeric() => DataType::Float64,
        _ => DataType::Utf8,
    }
}

/// `value` as `data_type`; NULL if it cannot be cast (a value computed under a narrower type
/// always casts to a wider one, so this only loses what was never representable).
pub fn cast_value(value: &ScalarValue, data_type: &DataType) -> ScalarValue {
    if value.data_type() == *data_type {
        return value.clone();
    }
    if *data_type == ColumnType::Timestamp.arrow_type() {
        // Numbers in a column that came to hold dates are epochs (the JSON lattice).
        let micros = match value {
            ScalarValue::Int64(Some(number)) => Some(crate::json::epoch_integer_to_micros(*number)),
            ScalarValue::Float64(Some(number)) => Some(crate::json::epoch_float_to_micros(*number)),
            _ => None,
        };
        if let Some(micros) = micros {
            return ScalarValue::TimestampMicrosecond(micros, Some(crate::json::TIMESTAMP_ZONE.into()));
        }
    }
    value.cast_to(data_type).unwrap_or_else(|_| ScalarValue::try_from(data_type).unwrap_or(ScalarValue::Null))
}

/// Column types whose values compare equal exactly when their texts are equal, so an index
/// keyed by text answers `=` and `IN` without missing a row. Floats are left out (0 = -0).
pub fn indexable(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8
            | DataType::LargeUtf8
            | DataType::Utf8View
            | DataType::Boolean
            | DataType::Int8
            | DataType::Int16
            | DataType::Int32
            | DataType::Int64
            | DataType::UInt8
            | DataType::UInt16
            | DataType::UInt32
            | DataType::UInt64
            | DataType::Timestamp(_, _)
            | DataType::Date32
    )
}

/// The index keys of `values` in a column of `data_type`: each value's text once cast to the
/// column's type (what `col = literal` compares in); NULL for NULL, which `=` never matches.
/// Chunks' value lists and the tail's CAS lists are keyed by these, and lookups by the same
/// function applied to the literal, so both sides agree by construction.
pub fn key_texts(values: &ArrayRef, data_type: &DataType) -> Result<StringArray, ArrowError> {
    let typed = if values.data_type() == data_type {
        values.clone()
    } else {
        cast(values, data_type)?
    };
    let texts = cast(&typed, &DataType::Utf8)?;
    Ok(texts.as_any().downcast_ref::<StringArray>().expect("cast to Utf8 gives a StringArray").clone())
}

/// The index key of one value (a query's literal). See `key_texts`.
pub fn index_key(value: &ScalarValue, data_type: &DataType) -> Option<String> {
    let array = value.to_array().ok()?;
    let texts = key_texts(&array, data_type).ok()?;
    texts.is_valid(0).then(|| texts.value(0).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widening() {
        assert_eq!(widen(&DataType::Null, &DataType::Int64), DataType::Int64);
        assert_eq!(widen(&DataType::Int64, &DataType::Float64), DataType::Float64);
        assert_eq!(widen(&DataType::Int32, &DataType::Float64), DataType::Float64);
        assert_eq!(widen(&DataType::Boolean, &DataType::Int64), DataType::Utf8);
        assert_eq!(widen(&DataType::Utf8, &DataType::Utf8), DataType::Utf8);
        let timestamp = ColumnType::Timestamp.arrow_type();
        assert_eq!(widen(&DataType::Int64, &timestamp), timestamp);
        let micros = cast_value(&ScalarValue::Int64(Some(1_764_437_991)), &timestamp);
        assert_eq!(micros, ScalarValue::TimestampMicrosecond(Some(1_764_437_991_000_000), Some("UTC".into())));
    }

    #[test]
    fn keys() {
        assert_eq!(index_key(&ScalarValue::Int64(Some(5)), &DataType::Utf8).as_deref(), Some("5"));
        assert_eq!(index_key(&ScalarValue::Utf8(Some("north".into())), &DataType::Utf8).as_deref(), Some("north"));
        assert_eq!(index_key(&ScalarValue::Int64(None), &DataType::Int64), None);
    }
}
