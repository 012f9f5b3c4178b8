//! Materialized views (issue 5): defined in SQL, maintained incrementally from the log, with
//! CAS linked-list indexes, checkpointed with the offsets they reflect.
//!
//! - `statement` — recognises and parses the view statements (CREATE/DROP MATERIALIZED VIEW,
//!   CREATE/DROP INDEX, SHOW MATERIALIZED VIEWS).
//! - `definition` — what a SELECT means: kind (append, upsert, aggregate), topic, the SQL run
//!   per micro-batch; invalid definitions refused with a reason.
//! - `eval` — runs that SQL with DataFusion on a micro-batch of normalised records.
//! - `maintain` — applies evaluated micro-batches to the rows; `aggregate` — accumulators.
//! - `store` — the writer's side of a view's Arrow state: chunks, tail, deletes, indexes;
//!   `snapshot` — what queries read (`ViewSnapshot`, `ViewIndex`); `chunk` — immutable
//!   record batches in memory or spilled to files, per-value row lists; `deletes` — deletion
//!   vectors; `budget` — the views' memory budget; `types` — output types, index keys.
//! - `runner` — one task per view: read, normalise, evaluate, apply, checkpoint.
//! - `checkpoint` — state and offsets in one atomic file; the Parquet snapshot.
//! - `freshness` — ack-to-visible times; `letters` — dead letters as shown to queries.
//! - `catalog` — `Materializer`: the views, their durable definitions, DDL.
//! - `progress` — a view's progress per partition (what `system.views` shows); `metrics` — the
//!   same as Prometheus metrics, computed at scrape time.

mod aggregate;
pub mod budget;
pub mod catalog;
pub mod checkpoint;
pub mod chunk;
pub mod definition;
pub mod deletes;
mod eval;
pub mod freshness;
pub mod letters;
mod maintain;
pub mod metrics;
pub mod progress;
mod runner;
pub mod snapshot;
pub mod statement;
pub mod store;
pub mod types;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

pub use catalog::{Materializer, MaterializerConfig};
pub use definition::{ViewDefinition, ViewKind};
pub use maintain::ViewLimits;
pub use snapshot::{ChunkRef, ViewIndex, ViewSnapshot};
pub use statement::{parse_statement, ViewStatement};
pub use store::ViewStore;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ViewError {
    /// A statement or definition that cannot be accepted; the message says why.
    #[error("{0}")]
    Invalid(String),
    /// A limit on rows or groups was reached: the view stops applying.
    #[error("{0}")]
    Limit(String),
    /// The topic went away or could not be read.
    #[error("reading the topic: {0}")]
    Source(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Progress of a view on one partition of its topic.
#[derive(Clone, Debug, Default)]
pub struct PartitionStatus {
    /// The next offset to apply (last applied + 1).
    pub next_offset: i64,
    /// The next offset as of the last checkpoint.
    pub checkpoint_offset: i64,
    pub freshness: freshness::Freshness,
}

#[derive(Debug, Default)]
pub struct ViewStatus {
    pub partitions: BTreeMap<i32, PartitionStatus>,
    pub dead_letters: letters::DeadLetterLog,
    /// Values skipped, reads that failed, checkpoints that failed, limits reached.
    pub errors: u64,
    /// Why the view stopped applying, if it did.
    pub failure: Option<String>,
}

/// A view as queries see it: definition, rows and indexes, progress.
pub struct ViewShared {
    pub definition: Arc<ViewDefinition>,
    pub store: Arc<ViewStore>,
    status: Mutex<ViewStatus>,
}

impl ViewShared {
    pub fn lock_status(&self) -> MutexGuard<'_, ViewStatus> {
        self.status.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
