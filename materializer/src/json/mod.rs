//! JSON decoding and normalisation (issue 5): record values become typed rows under a schema
//! that is inferred and widened as new shapes arrive; records that cannot be decoded become
//! dead letters with a reason, never silently dropped.
//!
//! The flow for one view: `JsonNormaliser::normalise` decodes each record (`decode.rs`) into a
//! `Row` (`row.rs`) and widens the view's `InferredSchema` (`schema.rs`, the type lattice), or
//! records a `DeadLetter` (`dead_letters.rs`) with the `DecodeError` (`error.rs`). Accumulated
//! rows become an Arrow `RecordBatch` under the current schema (`batch.rs`); batches built under
//! an earlier version are brought to the current one by `cast_batch` (`cast.rs`).
//!
//! Which values are timestamps: date text in the formats of `datetime.rs` anywhere, and epoch
//! numbers only in fields picked by `EpochFields` (`epoch_fields.rs`). All input is bounded by
//! `DecodeLimits` (`limits.rs`): hostile records are dead letters, never panics.

mod batch;
mod cast;
mod datetime;
mod dead_letters;
mod decode;
mod epoch_fields;
mod error;
mod limits;
mod normaliser;
mod row;
mod schema;

pub use batch::rows_to_batch;
pub use cast::{cast_batch, CastError};
pub use datetime::{
    epoch_float_to_micros, epoch_integer_to_micros, epoch_text_to_micros, format_rfc3339,
    parse_datetime_text, EPOCH_SECONDS_MAGNITUDE_LIMIT,
};
pub use dead_letters::{DeadLetter, DeadLetterLimits, DeadLetters};
pub use decode::{decode_record, DecodeOptions};
pub use epoch_fields::EpochFields;
pub use error::{DecodeError, DecodeErrorKind};
pub use limits::DecodeLimits;
pub use normaliser::JsonNormaliser;
pub use row::{Cell, Row};
pub use schema::{
    ColumnType, InferredSchema, SchemaField, SCHEMA_VERSION_METADATA_KEY, TIMESTAMP_ZONE,
};
