//! Transactions (KIP-98): the transaction coordinator.
//!
//! `coordinator.rs` is the state machine of every transactional id, pure and sans-io, as the
//! group coordinator is: requests and a clock in; answers, the records to make durable and the
//! markers to write out. What it decides is Kafka's `TransactionCoordinator`:
//! InitProducerId with a transactional id (epoch bumps, fencing, KIP-360 retries),
//! AddPartitionsToTxn, AddOffsetsToTxn, EndTxn and transaction.timeout.ms expiry.
//!
//! `service.rs` is its async layer: the coordinator's log (`__yotta_txns`), markers written
//! through `TxnHost` (the cluster), recovery and expiry.

pub mod coordinator;
pub mod service;

pub use service::{Transactions, TxnHost, TXNS_TOPIC};
