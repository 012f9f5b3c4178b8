//! A partition log's side of transactions: markers appended by the broker, the last stable
//! offset and the aborted transactions a read_committed fetch needs (see `txn_index`).

use bytes::BytesMut;

use super::{AppendInfo, LogError, PartitionLog};
use crate::log::control;
use crate::log::txn_index::AbortedTxn;

impl PartitionLog {
    /// Appends the marker that commits or aborts `producer_id`'s transaction here (written by
    /// the transaction coordinator, never by a client). Durable, like any batch, once a flush
    /// started after it completes.
    pub fn append_marker(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        coordinator_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendInfo, LogError> {
        self.check_not_failed()?;
        let marker = control::encode_marker(producer_id, producer_epoch, commit, coordinator_epoch, now_ms);
        let header = control::validate_marker(&marker)?;
        self.place(BytesMut::from(&marker[..]), header, now_ms)
    }

    /// The offset below which no transaction is open and everything is durable: the end of
    /// what a read_committed consumer may read.
    pub fn last_stable_offset(&self) -> i64 {
        self.txns.last_stable_offset(self.high_watermark())
    }

    /// The aborted transactions whose records a read of `from..to` may hold.
    pub fn aborted_between(&self, from: i64, to: i64) -> Vec<AbortedTxn> {
        self.txns.aborted_between(from, to)
    }

    /// Transactions open here: (producer id, first offset), by first offset.
    pub fn ongoing_transactions(&self) -> Vec<(i64, i64)> {
        self.txns.ongoing()
    }
}
