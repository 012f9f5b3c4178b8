//! One column of the batch being decoded, before its final type is known.
//!
//! Each row keeps the type its own JSON value had (its kind), a number (an integer, a float's
//! bits, a timestamp's microseconds, a boolean as 0 or 1) and, for strings and timestamps, its
//! text. The Arrow array is made once, at `finish`, under the column's type in the schema of
//! that moment, which may have widened since a row was decoded: an integer in a Float64 column
//! becomes a float, a number in a Timestamp column an epoch (seconds or milliseconds by
//! magnitude), anything in a Utf8 column its text (a timestamp its original text, numbers and
//! booleans canonical JSON text). A column whose rows all have its own type is handed to Arrow
//! without a copy: that is the common case, and why rows are not built one by one.

use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, NullArray, StringArray,
    TimestampMicrosecondArray,
};
use arrow_buffer::{BooleanBuffer, Buffer, NullBuffer, OffsetBuffer, ScalarBuffer};
use arrow_schema::ArrowError;

use super::datetime::{epoch_float_to_micros, epoch_integer_to_micros};
use super::schema::{ColumnType, TIMESTAMP_ZONE};
use super::text::{bool_text, float_text};

/// Text bytes one column may hold in one batch: Arrow's 32-bit string offsets.
pub const COLUMN_TEXT_BYTES_MAX: usize = i32::MAX as usize;

#[derive(Debug, Default)]
pub(crate) struct ColumnBuffer {
    kinds: Vec<ColumnType>,
    numbers: Vec<i64>,
    /// Per row, the end of its text in `text` (the previous row's end when it has none).
    text_ends: Vec<u32>,
    text: Vec<u8>,
    /// Kinds present, a bit per `ColumnType` discriminant: picks the copy-free paths. Rows
    /// truncated away may leave a bit set, which only costs the general path.
    seen: u8,
}

impl ColumnBuffer {
    pub fn len(&self) -> usize {
        self.kinds.len()
    }

    /// The kind of the last row written.
    pub fn last_kind(&self) -> ColumnType {
        *self.kinds.last().expect("a written column has rows")
    }

    pub fn text_bytes(&self) -> usize {
        self.text.len()
    }

    fn text_end(&self) -> u32 {
        self.text_ends.last().copied().unwrap_or(0)
    }

    /// Nulls up to `rows` rows.
    fn pad_to(&mut self, rows: usize) {
        if self.kinds.len() < rows {
            let end = self.text_end();
            self.kinds.resize(rows, ColumnType::Null);
            self.numbers.resize(rows, 0);
            self.text_ends.resize(rows, end);
            self.seen |= 1 << ColumnType::Null as u8;
        }
    }

    /// Sets row `row` (the last row, or the next one after nulls): a row written twice in one
    /// record keeps the last value, as duplicate names do.
    pub fn set(&mut self, row: usize, kind: ColumnType, number: i64, text: &str) {
        if self.kinds.len() > row {
            debug_assert_eq!(
                self.kinds.len(),
                row + 1,
                "only the current row is rewritten"
            );
            self.truncate(row);
        }
        self.pad_to(row);
        self.kinds.push(kind);
        self.numbers.push(number);
        self.text.extend_from_slice(text.as_bytes());
        self.text_ends.push(self.text.len() as u32);
        self.seen |= 1 << kind as u8;
    }

    /// Forgets rows from `rows` on (a record that became a dead letter).
    pub fn truncate(&mut self, rows: usize) {
        if self.kinds.len() > rows {
            self.kinds.truncate(rows);
            self.numbers.truncate(rows);
            self.text_ends.truncate(rows);
            let end = self.text_end() as usize;
            self.text.truncate(end);
        }
    }

    /// The column's `rows` rows as an array of `column_type`, leaving the buffer empty. Errors
    /// (never panics) when a row's kind does not widen to `column_type` or the text is too long
    /// for Arrow's offsets.
    pub fn finish(&mut self, rows: usize, column_type: ColumnType) -> Result<ArrayRef, ArrowError> {
        assert!(
            self.kinds.len() <= rows,
            "a column has more rows than its batch"
        );
        self.pad_to(rows);
        let mut seen = std::mem::take(&mut self.seen);
        if !fits(seen, column_type) {
            // Perhaps only rows truncated away set the bit: look at the rows themselves.
            seen = self
                .kinds
                .iter()
                .fold(0, |seen, kind| seen | 1 << *kind as u8);
            if let Some(kind) = ColumnType::ALL
                .into_iter()
                .find(|kind| seen & (1 << *kind as u8) != 0 && !kind.widens_to(column_type))
            {
                return Err(ArrowError::InvalidArgumentError(format!(
                    "a {kind:?} value does not fit a {column_type:?} column"
                )));
            }
        }
        if self.text.len() > COLUMN_TEXT_BYTES_MAX {
            return Err(ArrowError::InvalidArgumentError(format!(
                "{} bytes of text in one column of one batch",
                self.text.len()
            )));
        }
        // The next batch is likely the size of this one: room for it now, not by doubling.
        let text_bytes = self.text.len();
        let kinds = std::mem::replace(&mut self.kinds, Vec::with_capacity(rows));
        let mut numbers = std::mem::replace(&mut self.numbers, Vec::with_capacity(rows));
        let text_ends = std::mem::replace(&mut self.text_ends, Vec::with_capacity(rows));
        let text = std::mem::replace(&mut self.text, Vec::with_capacity(text_bytes));
        let nulls = (seen & (1 << ColumnType::Null as u8) != 0).then(|| {
            NullBuffer::new(BooleanBuffer::collect_bool(rows, |row| {
                kinds[row] != ColumnType::Null
            }))
        });
        let array: ArrayRef = match column_type {
            ColumnType::Null => Arc::new(NullArray::new(rows)),
            ColumnType::Bool => {
                let values = BooleanBuffer::collect_bool(rows, |row| numbers[row] != 0);
                Arc::new(BooleanArray::new(values, nulls))
            }
            ColumnType::Int64 | ColumnType::Int64Large => {
                Arc::new(Int64Array::new(ScalarBuffer::from(numbers), nulls))
            }
            ColumnType::Float64 | ColumnType::Float64Large => {
                for (kind, number) in kinds.iter().zip(numbers.iter_mut()) {
                    if matches!(kind, ColumnType::Int64 | ColumnType::Int64Large) {
                        *number = (*number as f64).to_bits() as i64;
                    }
                }
                let floats = ScalarBuffer::<f64>::new(Buffer::from_vec(numbers), 0, rows);
                Arc::new(Float64Array::new(floats, nulls))
            }
            ColumnType::Timestamp => {
                for (kind, number) in kinds.iter().zip(numbers.iter_mut()) {
                    *number = match kind {
                        ColumnType::Int64 => epoch_integer_to_micros(*number).unwrap_or_default(),
                        ColumnType::Float64 => {
                            epoch_float_to_micros(f64::from_bits(*number as u64))
                                .unwrap_or_default()
                        }
                        _ => *number,
                    };
                }
                let micros = TimestampMicrosecondArray::new(ScalarBuffer::from(numbers), nulls);
                Arc::new(micros.with_timezone(TIMESTAMP_ZONE))
            }
            ColumnType::Utf8 => {
                let only_text = seen & !(1 << ColumnType::Null as u8 | 1 << ColumnType::Utf8 as u8);
                if only_text == 0 {
                    let offsets = std::iter::once(0)
                        .chain(text_ends.iter().map(|end| *end as i32))
                        .collect::<Vec<i32>>();
                    let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
                    Arc::new(StringArray::try_new(
                        offsets,
                        Buffer::from_vec(text),
                        nulls,
                    )?)
                } else {
                    Arc::new(texts(&kinds, &numbers, &text_ends, &text))
                }
            }
        };
        debug_assert_eq!(array.len(), rows);
        Ok(array)
    }
}

/// Whether every kind in the bit set `seen` widens to `column_type`.
fn fits(seen: u8, column_type: ColumnType) -> bool {
    ColumnType::ALL
        .into_iter()
        .all(|kind| seen & (1 << kind as u8) == 0 || kind.widens_to(column_type))
}

/// Every row as text, by its own kind.
fn texts(kinds: &[ColumnType], numbers: &[i64], text_ends: &[u32], text: &[u8]) -> StringArray {
    let mut builder = StringBuilder::with_capacity(kinds.len(), text.len());
    let mut start = 0_usize;
    for (row, kind) in kinds.iter().enumerate() {
        let end = text_ends[row] as usize;
        let number = numbers[row];
        match kind {
            ColumnType::Null => builder.append_null(),
            ColumnType::Bool => builder.append_value(bool_text(number != 0)),
            ColumnType::Int64 | ColumnType::Int64Large => builder.append_value(number.to_string()),
            ColumnType::Float64 | ColumnType::Float64Large => {
                builder.append_value(float_text(f64::from_bits(number as u64)))
            }
            ColumnType::Timestamp | ColumnType::Utf8 => {
                // Written from `&str` slices, so every row's bytes are UTF-8.
                let value = std::str::from_utf8(&text[start..end]).unwrap_or_default();
                builder.append_value(value)
            }
        }
        start = end;
    }
    builder.finish()
}
