//! The query layer on DataFusion (issue 6): SQL over topics and the broker's own state.
//!
//! - `engine` — `QueryEngine`: the session template, catalogs and per-query limits.
//! - `topic_table` — every topic as a table, scans bounded by partition, offset and time.
//! - `bounds` — what a scan may skip, from the pushed-down filters.
//! - `dashboard` — the web dashboard, `GET /`, embedded in the binary.
//! - `system_tables` — `system.topics`, `topic_configs`, `partitions`, `zones`.
//! - `http` — `POST /sql` (JSON or Arrow IPC answers).
//! - `view_table` — materialized views as tables, with index pushdown.
//! - `direct` — indexed lookups on a view answered without DataFusion's planning, kept by SQL.
//! - `view_system_tables` — `system.views` and `system.dead_letters`.
//! - `pg` — the Postgres wire protocol (psql, psycopg, Grafana).

pub mod bounds;
pub mod dashboard;
mod direct;
pub mod engine;
pub mod http;
pub mod pg;
pub mod system_tables;
pub mod topic_table;
pub mod view_system_tables;
pub mod view_table;

pub use engine::{PreparedStatement, QueryEngine, QueryError, QueryLimits, QueryOutput};

/// The DataFusion this crate is built on, for front ends that render its Arrow answers.
pub use datafusion;
/// The materializer the engine serves views from (the binary wires it through this crate).
pub use materializer;
