//! What a view's maintenance calls for each record: decode under the view's schema, or keep the
//! record as a dead letter. One normaliser per view, so schemas and dead letters are per view.
//!
//! A record without a value (a tombstone) is not JSON and never reaches `normalise`: what it
//! means (a delete in an upsert view, nothing in an append view) is the view's to decide.

use arrow_array::RecordBatch;
use arrow_schema::ArrowError;

use super::dead_letters::{DeadLetterLimits, DeadLetters};
use super::decode::{DecodeOptions, JsonDecoder};
use super::schema::InferredSchema;

#[derive(Debug)]
pub struct JsonNormaliser {
    decoder: JsonDecoder,
    dead_letters: DeadLetters,
}

impl JsonNormaliser {
    pub fn new(options: DecodeOptions, dead_letter_limits: DeadLetterLimits) -> Self {
        JsonNormaliser {
            decoder: JsonDecoder::new(options),
            dead_letters: DeadLetters::new(dead_letter_limits),
        }
    }

    /// Resumes with a schema restored from a checkpoint (`InferredSchema::from_arrow_schema`).
    pub fn with_schema(mut self, schema: InferredSchema) -> Self {
        assert_eq!(
            self.decoder.rows(),
            0,
            "a schema is restored before any record"
        );
        self.decoder = JsonDecoder::with_schema(self.decoder.options().clone(), schema);
        self
    }

    /// Decodes the record at (`partition`, `offset`) into the batch in progress: true when it
    /// became a row, false when it became a dead letter.
    pub fn push(&mut self, partition: i32, offset: i64, value: &[u8]) -> bool {
        match self.decoder.decode(value) {
            Ok(()) => true,
            Err(error) => {
                self.dead_letters.record(partition, offset, value, error);
                false
            }
        }
    }

    /// The rows pushed since the last call, as one batch under the current schema.
    pub fn finish_batch(&mut self) -> Result<RecordBatch, ArrowError> {
        self.decoder.finish()
    }

    /// Rows pushed since the last `finish_batch`.
    pub fn rows(&self) -> usize {
        self.decoder.rows()
    }

    pub fn decoder(&self) -> &JsonDecoder {
        &self.decoder
    }

    pub fn options(&self) -> &DecodeOptions {
        self.decoder.options()
    }

    pub fn schema(&self) -> &InferredSchema {
        self.decoder.schema()
    }

    pub fn dead_letters(&self) -> &DeadLetters {
        &self.dead_letters
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::json::error::DecodeErrorKind;

    #[test]
    fn good_records_become_rows_and_bad_ones_dead_letters() {
        let mut normaliser =
            JsonNormaliser::new(DecodeOptions::default(), DeadLetterLimits::default());
        let values: [&[u8]; 4] = [br#"{"a": 1}"#, b"not json", br#"{"a": 2.5}"#, b"[]"];
        let rows: Vec<bool> = values
            .iter()
            .enumerate()
            .map(|(offset, value)| normaliser.push(3, offset as i64, value))
            .collect();
        assert_eq!(rows, [true, false, true, false]);
        assert_eq!(normaliser.rows(), 2);
        assert_eq!(
            normaliser
                .dead_letters()
                .count(DecodeErrorKind::InvalidJson),
            1
        );
        assert_eq!(
            normaliser
                .dead_letters()
                .count(DecodeErrorKind::NotAnObject),
            1
        );
        let positions: Vec<(i32, i64)> = normaliser
            .dead_letters()
            .recent()
            .map(|letter| (letter.partition, letter.offset))
            .collect();
        assert_eq!(positions, [(3, 1), (3, 3)]);
        assert_eq!(normaliser.schema().version(), 2);
        let batch = normaliser.finish_batch().unwrap();
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(normaliser.rows(), 0);
    }
}
