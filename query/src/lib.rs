//! The query layer on DataFusion (issue 6): SQL over topics and the broker's own state.
//!
//! - `engine` — `QueryEngine`: the session template, catalogs and per-query limits.
//! - `topic_table` — every topic as a table, scans bounded by partition, offset and time.
//! - `bounds` — what a scan may skip, from the pushed-down filters.
//! - `dashboard` — the web dashboard, `GET /`, embedded in the binary.
//! - `system_tables` — `system.topics`, `topic_configs`, `partitions`, `zones`.
//! - `http` — `POST /sql` (JSON or Arrow IPC answers).

pub mod bounds;
pub mod dashboard;
pub mod engine;
pub mod http;
pub mod system_tables;
pub mod topic_table;

pub use engine::{QueryEngine, QueryError, QueryLimits, QueryOutput};

/// The DataFusion this crate is built on, for front ends that render its Arrow answers.
pub use datafusion;
