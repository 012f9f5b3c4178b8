//! Secondary indexes of views: per indexed column, per value, a lock-free sorted list of row
//! positions (`CasList`, after Harris), found through `CasIndex`. Writers (the materializer)
//! and readers (queries) never lock each other out; see each module for what a reader sees
//! while a writer runs.

pub mod cas_index;
pub mod cas_list;

pub use cas_index::{CasIndex, IndexFull};
pub use cas_list::CasList;
