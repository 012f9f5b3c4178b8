//! Limits on what one record may cost to decode: every count that hostile input controls has a
//! maximum here, and exceeding one is a `DecodeError` (a dead letter), never a panic.

/// Bounds on one record and on the schema a view accumulates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeLimits {
    /// A record value longer than this is rejected before it is parsed, which bounds the memory
    /// the parser allocates for it.
    pub value_bytes_max: u32,
    /// Brackets open at once, the top-level object counting as 1. Checked by a byte scan before
    /// parsing, so the recursive parser and flattener never go deeper than this.
    pub depth_max: u32,
    /// Columns one record may contribute after flattening.
    pub record_fields_max: u32,
    /// Columns a view's schema may reach: a record that would add more is a dead letter.
    pub schema_fields_max: u32,
    /// Bytes of one string value after unescaping (and of an array's JSON text).
    pub string_bytes_max: u32,
    /// Bytes of one dotted column name.
    pub field_name_bytes_max: u32,
}

/// serde_json refuses to nest deeper than 128; staying below it keeps our own, clearer error.
const PARSER_DEPTH_LIMIT: u32 = 128;

impl Default for DecodeLimits {
    fn default() -> Self {
        DecodeLimits {
            value_bytes_max: 1024 * 1024,
            depth_max: 32,
            record_fields_max: 1024,
            schema_fields_max: 1024,
            string_bytes_max: 256 * 1024,
            field_name_bytes_max: 256,
        }
    }
}

impl DecodeLimits {
    /// Panics on limits that make no sense: they are configuration, not input.
    pub fn assert_valid(&self) {
        assert!(self.value_bytes_max >= 2, "a record needs at least '{{}}'");
        assert!(self.depth_max >= 1);
        assert!(
            self.depth_max < PARSER_DEPTH_LIMIT,
            "depth_max must stay below serde_json's limit"
        );
        assert!(self.record_fields_max >= 1);
        assert!(self.schema_fields_max >= 1);
        assert!(self.string_bytes_max >= 1);
        assert!(self.field_name_bytes_max >= 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_limits_are_valid() {
        DecodeLimits::default().assert_valid();
    }

    #[test]
    #[should_panic(expected = "serde_json")]
    fn depth_beyond_the_parser_is_refused() {
        DecodeLimits {
            depth_max: 128,
            ..DecodeLimits::default()
        }
        .assert_valid();
    }
}
