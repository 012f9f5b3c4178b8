//! The materializer: consumes partition logs and maintains materialized views (issue 5).

pub mod index;
pub mod json;
pub mod plan;
pub mod timestamp_cast;
pub mod view;

pub use view::{Materializer, MaterializerConfig};
