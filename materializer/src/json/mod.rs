//! JSON decoding and normalisation (issue 5): record values become typed rows under a schema
//! that is inferred and widened as new shapes arrive; records that cannot be decoded become
//! dead letters with a reason, never silently dropped.
//!
//! The flow for one view: `JsonNormaliser::push` decodes each record (`decode.rs`, walking it
//! with the serde visitor of `visit.rs`) straight into the columns of the batch in progress
//! (`columns.rs`; names found through `names.rs`) and widens the view's `InferredSchema`
//! (`schema.rs`, the type lattice), or records a `DeadLetter` (`dead_letters.rs`) with the
//! `DecodeError` (`error.rs`). `finish_batch` makes the rows an Arrow `RecordBatch` under the
//! current schema; batches built under an earlier version are brought to the current one by
//! `cast_batch` (`cast.rs`). `text.rs`: the canonical text of numbers in Utf8 columns.
//!
//! Which values are timestamps: date text in the formats of `datetime.rs` anywhere; epoch
//! numbers in fields picked by `EpochFields` (`epoch_fields.rs`), and in any column that also
//! holds dates (the lattice joins epoch-readable numbers and timestamps to Timestamp). All input
//! is bounded by `DecodeLimits` (`limits.rs`): hostile records are dead letters, never panics.

mod cast;
pub mod checks;
mod columns;
mod datetime;
mod dead_letters;
mod decode;
mod epoch_fields;
mod error;
mod limits;
mod names;
mod normaliser;
pub mod peer;
mod schema;
mod text;
mod visit;

pub use cast::{cast_batch, epochs_to_timestamps, CastError};
pub use datetime::{
    epoch_float_to_micros, epoch_integer_to_micros, epoch_text_to_micros, format_rfc3339,
    parse_datetime_text, EPOCH_SECONDS_MAGNITUDE_LIMIT,
};
pub use dead_letters::{DeadLetter, DeadLetterLimits, DeadLetters};
pub use decode::{DecodeOptions, JsonDecoder};
pub use epoch_fields::EpochFields;
pub use error::{DecodeError, DecodeErrorKind};
pub use limits::DecodeLimits;
pub use normaliser::JsonNormaliser;
pub use schema::{
    ColumnType, InferredSchema, SchemaField, NUMBER_RANGE_METADATA_KEY,
    SCHEMA_VERSION_METADATA_KEY, TIMESTAMP_ZONE,
};
pub use text::{bool_text, float_text};
