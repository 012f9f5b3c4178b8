//! The query layer on DataFusion (issue 6): SQL over topics and the broker's own state.
//!
//! - `engine` — `QueryEngine`: the session template, catalogs and per-query limits.
//! - `topic_table` — every topic as a table, scans bounded by partition, offset and time.
//! - `bounds` — what a scan may skip, from the pushed-down filters.
//! - `system_tables` — `system.topics`, `topic_configs`, `partitions`, `zones`.
//! - `http` — `POST /sql` (JSON or Arrow IPC answers).
//! - `pg` — the Postgres wire protocol (psql, psycopg, Grafana).

pub mod bounds;
pub mod engine;
pub mod http;
pub mod pg;
pub mod system_tables;
pub mod topic_table;

pub use engine::{PreparedStatement, QueryEngine, QueryError, QueryLimits, QueryOutput};

/// The DataFusion this crate is built on, for front ends that render its Arrow answers.
pub use datafusion;
