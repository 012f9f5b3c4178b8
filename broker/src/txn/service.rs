//! The transaction coordinator's async layer: each transition of the state machine
//! (`coordinator`) is written to the coordinator's log (`__yotta_txns`) and applied once
//! durable, then answered; a prepared transaction's markers are written to its partitions
//! (through `TxnHost`) and the transaction completed. Replayed at start: prepared
//! transactions are completed then (`recover`), open ones abort at their timeout (`expire`,
//! run by the server's timer).
//!
//! EndTxn answers once the markers are written and the transaction is complete (Kafka answers
//! after the prepare record and writes the markers behind): simpler, and a client's next
//! transaction then never meets CONCURRENT_TRANSACTIONS for this one.

use std::future::Future;
use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};

use super::coordinator::{InitProducerId, Markers, Reply, Transition, TxnConfig, TxnCoordinator, TxnRecord, TxnTarget};
use crate::cluster::{now_ms, ApiError, ResponseError};
use crate::log::{PartitionId, PartitionLog};
use crate::record_log::RecordLog;

/// The internal topic holding the transaction log (partition 0), Kafka's __transaction_state.
pub const TXNS_TOPIC: &str = "__yotta_txns";
pub const TXNS_TOPIC_ID: [u8; 16] = *b"yotta.txns.....0";

pub fn txns_partition_id() -> PartitionId {
    PartitionId { topic: TXNS_TOPIC.to_string(), topic_id: TXNS_TOPIC_ID, partition: 0 }
}

/// What the coordinator needs of the broker: implemented by the cluster, so that this module
/// depends on nothing above it.
pub trait TxnHost: Sync {
    /// A producer id never handed out before.
    fn allocate_producer_id(&self) -> impl Future<Output = Result<i64, ApiError>> + Send;
    /// Appends `markers` to their partitions and waits until they are durable. A partition
    /// deleted meanwhile is skipped (nothing is left to end there).
    fn write_markers(&self, markers: &Markers) -> impl Future<Output = Result<(), ApiError>> + Send;
}

pub struct Transactions {
    coordinator: Mutex<TxnCoordinator>,
    log: RecordLog<TxnRecord>,
    /// Ids whose markers are being written: one writer per transaction, so that a late
    /// duplicate marker can never end the producer's next transaction in a partition.
    finishing: Mutex<HashSet<String>>,
}

/// Removes an id from `finishing` when its finish ends, however it ends.
struct Finishing<'a> {
    set: &'a Mutex<HashSet<String>>,
    id: String,
}

impl Drop for Finishing<'_> {
    fn drop(&mut self) {
        self.set.lock().unwrap_or_else(|p| p.into_inner()).remove(&self.id);
    }
}

impl Transactions {
    /// Replays the transaction log.
    pub async fn open(log: PartitionLog, config: TxnConfig) -> Result<Transactions, String> {
        let mut coordinator = TxnCoordinator::new(config);
        let mut records = 0u64;
        crate::record_log::replay(&log, |record: TxnRecord| {
            records += 1;
            coordinator.apply(record);
        })
        .await?;
        tracing::info!(records, ids = coordinator.records().count(), "transaction log replayed");
        Ok(Transactions { coordinator: Mutex::new(coordinator), log: RecordLog::new(log), finishing: Mutex::default() })
    }

    /// The state machine, for reads. Do not hold across an await.
    pub fn coordinator(&self) -> MutexGuard<'_, TxnCoordinator> {
        self.coordinator.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Makes `transition` durable and applies it (or leaves the id as it was if the log fails).
    async fn commit(&self, transition: Transition) -> Result<Reply, ApiError> {
        let id = transition.record.transactional_id.clone();
        let written = self.log.write(transition.record, now_ms(), |record| self.coordinator().apply(record.clone())).await;
        if let Err(error) = written {
            self.coordinator().abandon(&id);
            return Err(error);
        }
        let compacted = self
            .log
            .compact_if_due(now_ms(), |record| self.coordinator().apply(record.clone()), || self.coordinator().records().cloned().collect())
            .await;
        if let Err(error) = compacted {
            tracing::error!(error = %error.message, "transaction log compaction failed");
        }
        Ok(transition.reply)
    }

    /// InitProducerId with a transactional id: the producer id and epoch to use.
    pub async fn init_producer_id(&self, host: &impl TxnHost, request: InitProducerId) -> Result<(i64, i16), ApiError> {
        // Taken first (the state machine is synchronous); unused when the id keeps its producer
        // id, which only skips one id.
        let spare = host.allocate_producer_id().await?;
        let transition = self.coordinator().init_producer_id(&request, now_ms(), || Ok(spare)).map_err(refused)?;
        match self.commit(transition).await? {
            Reply::Producer { producer_id, producer_epoch } => Ok((producer_id, producer_epoch)),
            Reply::RetryLater => {
                // The previous producer's transaction is being aborted: the client retries.
                self.finish(host, &request.transactional_id).await?;
                Err(ApiError::new(ResponseError::ConcurrentTransactions, "the previous producer's transaction was aborted; retry"))
            }
            Reply::Done => Err(ApiError::new(ResponseError::UnknownServerError, "InitProducerId completed without a producer")),
        }
    }

    /// AddPartitionsToTxn and AddOffsetsToTxn.
    pub async fn add_targets(&self, transactional_id: &str, producer_id: i64, producer_epoch: i16, targets: &[TxnTarget]) -> Result<(), ApiError> {
        let transition = self.coordinator().add_targets(transactional_id, producer_id, producer_epoch, targets, now_ms()).map_err(refused)?;
        if let Some(transition) = transition {
            self.commit(transition).await?;
        }
        Ok(())
    }

    /// EndTxn: prepares the commit or abort, writes the markers, completes the transaction.
    pub async fn end_txn(&self, host: &impl TxnHost, transactional_id: &str, producer_id: i64, producer_epoch: i16, commit: bool) -> Result<(), ApiError> {
        let transition = self.coordinator().end_txn(transactional_id, producer_id, producer_epoch, commit, now_ms()).map_err(refused)?;
        if let Some(transition) = transition {
            self.commit(transition).await?;
        }
        self.finish(host, transactional_id).await
    }

    /// Writes the markers of `transactional_id`'s prepared transaction and completes it
    /// (nothing if it is not prepared, or another call is completing it).
    async fn finish(&self, host: &impl TxnHost, transactional_id: &str) -> Result<(), ApiError> {
        if !self.finishing.lock().unwrap_or_else(|p| p.into_inner()).insert(transactional_id.to_string()) {
            return Ok(());
        }
        let _finishing = Finishing { set: &self.finishing, id: transactional_id.to_string() };
        let Some(markers) = self.coordinator().markers(transactional_id) else { return Ok(()) };
        host.write_markers(&markers).await?;
        let Some(transition) = self.coordinator().complete(transactional_id, now_ms()) else { return Ok(()) };
        self.commit(transition).await?;
        Ok(())
    }

    /// Completes the transactions a restart found prepared (their markers are written again:
    /// a partition that has one already ignores the second).
    pub async fn recover(&self, host: &impl TxnHost) {
        let prepared: Vec<String> = self.coordinator().prepared_markers().into_iter().map(|markers| markers.transactional_id).collect();
        for id in prepared {
            if let Err(error) = self.finish(host, &id).await {
                tracing::error!(transactional_id = %id, error = %error.message, "cannot complete a prepared transaction; retried by the timer");
            }
        }
    }

    /// Aborts the transactions open past their timeout (fencing their producers), removes
    /// ids expired, and completes prepared transactions left behind by a failed write.
    pub async fn expire(&self, host: &impl TxnHost) {
        let due = self.coordinator().expire(now_ms());
        for transition in due {
            let id = transition.record.transactional_id.clone();
            if let Err(error) = self.commit(transition).await {
                tracing::error!(transactional_id = %id, error = %error.message, "cannot record a transaction's expiry");
            }
        }
        self.recover(host).await;
    }

    /// Makes everything appended durable (shutdown).
    pub async fn flush(&self) -> Result<(), ApiError> {
        self.log.flush().await
    }
}

/// A refusal of the state machine, as an API error.
fn refused(error: ResponseError) -> ApiError {
    ApiError::new(error, "")
}
