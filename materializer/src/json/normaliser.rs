//! What a view's maintenance calls for each record: decode under the view's schema, or keep the
//! record as a dead letter. One normaliser per view, so schemas and dead letters are per view.
//!
//! A record without a value (a tombstone) is not JSON and never reaches `normalise`: what it
//! means (a delete in an upsert view, nothing in an append view) is the view's to decide.

use super::dead_letters::{DeadLetterLimits, DeadLetters};
use super::decode::{decode_record, DecodeOptions};
use super::row::Row;
use super::schema::InferredSchema;

#[derive(Clone, Debug)]
pub struct JsonNormaliser {
    options: DecodeOptions,
    schema: InferredSchema,
    dead_letters: DeadLetters,
}

impl JsonNormaliser {
    pub fn new(options: DecodeOptions, dead_letter_limits: DeadLetterLimits) -> Self {
        options.limits.assert_valid();
        JsonNormaliser {
            options,
            schema: InferredSchema::new(),
            dead_letters: DeadLetters::new(dead_letter_limits),
        }
    }

    /// Resumes with a schema restored from a checkpoint (`InferredSchema::from_arrow_schema`).
    pub fn with_schema(mut self, schema: InferredSchema) -> Self {
        self.schema = schema;
        self
    }

    /// The row for the record at (`partition`, `offset`), or `None` when it became a dead letter.
    pub fn normalise(&mut self, partition: i32, offset: i64, value: &[u8]) -> Option<Row> {
        match decode_record(value, &self.options, &mut self.schema) {
            Ok(row) => Some(row),
            Err(error) => {
                self.dead_letters.record(partition, offset, value, error);
                None
            }
        }
    }

    pub fn options(&self) -> &DecodeOptions {
        &self.options
    }

    pub fn schema(&self) -> &InferredSchema {
        &self.schema
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
        let rows: Vec<Option<Row>> = values
            .iter()
            .enumerate()
            .map(|(offset, value)| normaliser.normalise(3, offset as i64, value))
            .collect();
        assert_eq!(rows.iter().filter(|row| row.is_some()).count(), 2);
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
    }
}
