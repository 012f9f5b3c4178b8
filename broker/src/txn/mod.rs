//! Transactions (KIP-98): the transaction coordinator.
//!
//! `coordinator.rs` is the state machine of every transactional id, pure and sans-io, as the
//! group coordinator is: requests and a clock in; answers, the records to make durable and the
//! markers to write out. What it decides is Kafka's `TransactionCoordinator`:
//! InitProducerId with a transactional id (epoch bumps, fencing, KIP-360 retries),
//! AddPartitionsToTxn, AddOffsetsToTxn, EndTxn and transaction.timeout.ms expiry.
//!
//! Not wired yet: the coordinator's log, the transaction APIs, control batches, the last stable
//! offset and read_committed fetches are the rest of issue 15.

pub mod coordinator;
