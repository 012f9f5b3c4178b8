//! Records a view could not decode: counted by reason, and the most recent kept with their
//! position in the log and a prefix of their bytes, so that they stay visible (as a table) and
//! are never silently dropped. Memory is bounded whatever arrives: counters are fixed, and at most
//! `recent_max` letters of at most `value_prefix_bytes_max` bytes each are kept.

use std::collections::VecDeque;
use std::sync::Arc;

use arrow_array::builder::{
    BinaryBuilder, BooleanBuilder, Int32Builder, Int64Builder, StringBuilder, UInt64Builder,
};
use arrow_array::{ArrayRef, RecordBatch};
use arrow_schema::{ArrowError, DataType, Field, Schema, SchemaRef};

use super::error::{DecodeError, DecodeErrorKind};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeadLetterLimits {
    /// Letters kept; older ones are evicted but stay counted.
    pub recent_max: u32,
    /// Bytes of each record value kept, enough to recognise the record.
    pub value_prefix_bytes_max: u32,
}

impl Default for DeadLetterLimits {
    fn default() -> Self {
        DeadLetterLimits {
            recent_max: 1024,
            value_prefix_bytes_max: 1024,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct DeadLetter {
    pub partition: i32,
    pub offset: i64,
    pub error: DecodeError,
    /// The whole value's length, which `value_prefix` may fall short of.
    pub value_bytes: u64,
    pub value_prefix: Vec<u8>,
}

/// One view's dead letters.
#[derive(Clone, Debug)]
pub struct DeadLetters {
    limits: DeadLetterLimits,
    count_by_kind: [u64; DecodeErrorKind::COUNT],
    recent: VecDeque<DeadLetter>,
}

impl DeadLetters {
    pub fn new(limits: DeadLetterLimits) -> Self {
        assert!(limits.recent_max >= 1);
        DeadLetters {
            limits,
            count_by_kind: [0; DecodeErrorKind::COUNT],
            recent: VecDeque::with_capacity(limits.recent_max as usize),
        }
    }

    pub fn record(&mut self, partition: i32, offset: i64, value: &[u8], error: DecodeError) {
        self.count_by_kind[error.kind().index()] += 1;
        if self.recent.len() == self.limits.recent_max as usize {
            self.recent.pop_front();
        }
        let prefix_bytes = value.len().min(self.limits.value_prefix_bytes_max as usize);
        self.recent.push_back(DeadLetter {
            partition,
            offset,
            error,
            value_bytes: value.len() as u64,
            value_prefix: value[..prefix_bytes].to_vec(),
        });
        assert!(self.recent.len() <= self.limits.recent_max as usize);
    }

    pub fn count(&self, kind: DecodeErrorKind) -> u64 {
        self.count_by_kind[kind.index()]
    }

    /// Every dead letter ever recorded, kept or evicted.
    pub fn count_total(&self) -> u64 {
        self.count_by_kind.iter().sum()
    }

    /// Kept letters, oldest first.
    pub fn recent(&self) -> impl ExactSizeIterator<Item = &DeadLetter> {
        self.recent.iter()
    }

    /// Schema of `recent_batch`.
    pub fn recent_schema() -> SchemaRef {
        Arc::new(Schema::new(vec![
            Field::new("partition", DataType::Int32, false),
            Field::new("offset", DataType::Int64, false),
            Field::new("reason_kind", DataType::Utf8, false),
            Field::new("reason", DataType::Utf8, false),
            Field::new("value_bytes", DataType::UInt64, false),
            Field::new("value_truncated", DataType::Boolean, false),
            Field::new("value_prefix", DataType::Binary, false),
        ]))
    }

    /// The kept letters as a table, oldest first.
    pub fn recent_batch(&self) -> Result<RecordBatch, ArrowError> {
        let count = self.recent.len();
        let mut partition = Int32Builder::with_capacity(count);
        let mut offset = Int64Builder::with_capacity(count);
        let mut reason_kind = StringBuilder::new();
        let mut reason = StringBuilder::new();
        let mut value_bytes = UInt64Builder::with_capacity(count);
        let mut value_truncated = BooleanBuilder::with_capacity(count);
        let mut value_prefix = BinaryBuilder::new();
        for letter in &self.recent {
            partition.append_value(letter.partition);
            offset.append_value(letter.offset);
            reason_kind.append_value(letter.error.kind().as_str());
            reason.append_value(letter.error.to_string());
            value_bytes.append_value(letter.value_bytes);
            value_truncated.append_value((letter.value_prefix.len() as u64) < letter.value_bytes);
            value_prefix.append_value(&letter.value_prefix);
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(partition.finish()),
            Arc::new(offset.finish()),
            Arc::new(reason_kind.finish()),
            Arc::new(reason.finish()),
            Arc::new(value_bytes.finish()),
            Arc::new(value_truncated.finish()),
            Arc::new(value_prefix.finish()),
        ];
        RecordBatch::try_new(Self::recent_schema(), columns)
    }

    /// Counts by reason as a table: one row per reason, zeros included, in a fixed order.
    pub fn counts_batch(&self) -> Result<RecordBatch, ArrowError> {
        let schema = Arc::new(Schema::new(vec![
            Field::new("reason_kind", DataType::Utf8, false),
            Field::new("count", DataType::UInt64, false),
        ]));
        let mut reason_kind = StringBuilder::new();
        let mut count = UInt64Builder::with_capacity(DecodeErrorKind::COUNT);
        for kind in DecodeErrorKind::ALL {
            reason_kind.append_value(kind.as_str());
            count.append_value(self.count(kind));
        }
        RecordBatch::try_new(
            schema,
            vec![Arc::new(reason_kind.finish()), Arc::new(count.finish())],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int64Type, UInt64Type};

    #[test]
    fn counts_everything_and_keeps_the_last_few_truncated() {
        let mut letters = DeadLetters::new(DeadLetterLimits {
            recent_max: 2,
            value_prefix_bytes_max: 4,
        });
        letters.record(
            0,
            10,
            b"[1]",
            DecodeError::NotAnObject { found: "an array" },
        );
        letters.record(
            1,
            11,
            b"\xff\xfe",
            DecodeError::InvalidUtf8 { valid_up_to: 0 },
        );
        letters.record(
            0,
            12,
            b"{\"a\":",
            DecodeError::InvalidJson {
                line: 1,
                column: 6,
                byte_offset: 5,
                message: "EOF while parsing an object".to_string(),
            },
        );
        assert_eq!(letters.count_total(), 3);
        assert_eq!(letters.count(DecodeErrorKind::NotAnObject), 1);
        assert_eq!(letters.count(DecodeErrorKind::InvalidJson), 1);
        assert_eq!(letters.count(DecodeErrorKind::TooDeep), 0);
        let offsets: Vec<i64> = letters.recent().map(|letter| letter.offset).collect();
        assert_eq!(offsets, [11, 12]);

        let batch = letters.recent_batch().unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(
            batch
                .column(1)
                .as_primitive::<Int64Type>()
                .values()
                .to_vec(),
            [11, 12]
        );
        assert_eq!(batch.column(2).as_string::<i32>().value(1), "invalid_json");
        assert!(batch
            .column(3)
            .as_string::<i32>()
            .value(1)
            .contains("line 1 column 6"));
        assert_eq!(
            batch
                .column(4)
                .as_primitive::<UInt64Type>()
                .values()
                .to_vec(),
            [2, 5]
        );
        assert_eq!(
            batch.column(5).as_boolean().iter().collect::<Vec<_>>(),
            [Some(false), Some(true)]
        );
        assert_eq!(batch.column(6).as_binary::<i32>().value(1), b"{\"a\"");

        let counts = letters.counts_batch().unwrap();
        assert_eq!(counts.num_rows(), DecodeErrorKind::COUNT);
        let total: u64 = counts
            .column(1)
            .as_primitive::<UInt64Type>()
            .values()
            .iter()
            .sum();
        assert_eq!(total, 3);
    }

    #[test]
    fn memory_stays_bounded() {
        let limits = DeadLetterLimits {
            recent_max: 8,
            value_prefix_bytes_max: 16,
        };
        let mut letters = DeadLetters::new(limits);
        let value = vec![b'x'; 4096];
        for offset in 0..1000 {
            letters.record(0, offset, &value, DecodeError::TooDeep { depth_max: 1 });
        }
        assert_eq!(letters.count_total(), 1000);
        assert_eq!(letters.recent().len(), 8);
        assert!(letters
            .recent()
            .all(|letter| letter.value_prefix.len() == 16 && letter.value_bytes == 4096));
        assert_eq!(letters.recent().next().unwrap().offset, 992);
    }
}
