//! The YottaStore broker: zoned storage, partition logs and (later) the Kafka protocol server.
//!
//! See ARCHITECTURE.md at the repository root for the code map.

pub mod api;
pub mod buf;
pub mod cluster;
pub mod group;
pub mod txn;
pub mod log;
pub mod malloc;
pub mod metrics;
pub mod pending;
pub mod record_log;
pub mod server;
pub mod protocol;
pub mod storage;
pub mod uring;
pub mod zone;
