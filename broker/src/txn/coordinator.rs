//! The transaction coordinator as a pure state machine, sans I/O: requests and a clock in;
//! records to make durable, answers and markers out. The async layer (to come) writes each
//! `Transition`'s record to the coordinator's log, `apply`s it once durable, then answers; after
//! a PrepareCommit or PrepareAbort is applied it writes the `Markers` to the partitions and
//! groups of the transaction and makes the transaction complete (`complete`).
//!
//! States follow Kafka's `TransactionState`: Empty -> Ongoing (partitions or offsets added) ->
//! PrepareCommit | PrepareAbort (EndTxn, a timeout, or a new producer fencing the old one) ->
//! CompleteCommit | CompleteAbort (markers written) -> Ongoing again, and Dead (an id expired
//! after transactional.id.expiration.ms without use: removed). Kafka's PrepareEpochFence is
//! folded into the PrepareAbort its fence starts (the bumped epoch is in the same record).
//!
//! Durable state changes only through `apply`, with a record the log has made durable first, so
//! memory never runs ahead of the log. While a transition is on its way to the log the id is
//! pending: other requests for it get CONCURRENT_TRANSACTIONS, as Kafka's `pendingState`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kafka_protocol::error::ResponseError;
use serde::{Deserialize, Serialize};

/// Kafka's transaction.max.timeout.ms default: a longer transaction.timeout.ms is refused.
pub const TRANSACTION_TIMEOUT_MAX_MS: i32 = 900_000;
/// Kafka's transactional.id.expiration.ms default: an id unused this long is removed.
pub const TRANSACTIONAL_ID_EXPIRATION_MS: i64 = 7 * 24 * 3_600_000;
/// Transactional ids this coordinator holds (Kafka has no limit; memory is ours to bound).
pub const TRANSACTIONAL_IDS_MAX: usize = 100_000;
/// Partitions and groups in one transaction (Kafka has no limit; each is a marker to write).
pub const TARGETS_PER_TRANSACTION_MAX: usize = 10_000;
/// Transactional ids longer than this are refused (Kafka does not bound them; we must).
pub const TRANSACTIONAL_ID_BYTES_MAX: usize = 1_024;
/// An epoch at this value is exhausted: the next InitProducerId gets a new producer id (Kafka's
/// `isEpochExhausted`, Short.MaxValue - 1).
const EPOCH_EXHAUSTED: i16 = i16::MAX - 1;
/// No producer id or epoch (Kafka's -1).
const NONE: i64 = -1;
const NO_EPOCH: i16 = -1;

#[derive(Clone, Debug)]
pub struct TxnConfig {
    pub timeout_max_ms: i32,
    pub id_expiration_ms: i64,
    pub ids_max: usize,
    pub targets_max: usize,
}

impl Default for TxnConfig {
    fn default() -> TxnConfig {
        TxnConfig {
            timeout_max_ms: TRANSACTION_TIMEOUT_MAX_MS,
            id_expiration_ms: TRANSACTIONAL_ID_EXPIRATION_MS,
            ids_max: TRANSACTIONAL_IDS_MAX,
            targets_max: TARGETS_PER_TRANSACTION_MAX,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    /// Removed (expired): the record is the id's tombstone.
    Dead,
}

impl TxnState {
    /// The state's name as Kafka reports it (DescribeTransactions, ListTransactions).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
        }
    }
}

/// What a transaction writes to: a partition (a marker batch ends its records there) or a
/// group (its transactional offset commits become committed or are dropped).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TxnTarget {
    Partition { topic: String, partition: i32 },
    Group(String),
}

/// One transactional id's whole durable state: the record its every transition writes (Kafka's
/// TransactionLogValue), the last one of an id being its state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnRecord {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    /// The producer id and epoch the last InitProducerId replaced: a client that did not get
    /// that answer retries with them and gets the current ones (KIP-360).
    pub last_producer_id: i64,
    pub last_producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    pub targets: BTreeSet<TxnTarget>,
    /// When the transaction in progress added its first target (-1: none in progress).
    pub start_ms: i64,
    pub update_ms: i64,
}

/// What a client is answered once a transition's record is durable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// InitProducerId: the producer id and epoch to use.
    Producer { producer_id: i64, producer_epoch: i16 },
    /// The request did what it asked.
    Done,
    /// InitProducerId found a transaction in progress: it is being aborted; retry
    /// (CONCURRENT_TRANSACTIONS, as Kafka answers).
    RetryLater,
}

/// A record to make durable and `apply`, then `reply` to the request that caused it (none for
/// timeouts, expiries and completions).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transition {
    pub record: TxnRecord,
    pub reply: Reply,
}

/// The control batches (and group offset decisions) that end a prepared transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Markers {
    pub transactional_id: String,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub commit: bool,
    pub targets: Vec<TxnTarget>,
}

/// An InitProducerId with a transactional id.
#[derive(Clone, Debug)]
pub struct InitProducerId {
    pub transactional_id: String,
    pub timeout_ms: i32,
    /// The producer id and epoch the client has (v3+, KIP-360), if any.
    pub expected: Option<(i64, i16)>,
}

#[derive(Clone, Debug)]
struct Txn {
    /// The durable state; `None` while the id's first record is on its way to the log.
    durable: Option<TxnRecord>,
    /// A transition of this id is on its way to the log.
    pending: bool,
}

#[derive(Default)]
pub struct TxnCoordinator {
    config: TxnConfig,
    txns: BTreeMap<String, Txn>,
    /// Each durable producer id's transactional id: Produce checks a transactional batch
    /// against its producer's transaction.
    by_producer: HashMap<i64, String>,
}

impl TxnCoordinator {
    pub fn new(config: TxnConfig) -> TxnCoordinator {
        TxnCoordinator { config, txns: BTreeMap::new(), by_producer: HashMap::new() }
    }

    /// Whether `producer_id` at `producer_epoch` may write to `target` now: a transactional
    /// batch to a partition (KIP-890's server-side check), or TxnOffsetCommit to a group. Its
    /// transaction must be ongoing and hold the target. Kafka's errors: an older epoch is
    /// fenced, anything else is outside a transaction.
    pub fn verify(&self, producer_id: i64, producer_epoch: i16, target: &TxnTarget) -> Result<(), ResponseError> {
        let current = self.by_producer.get(&producer_id).and_then(|id| self.get(id)).ok_or(ResponseError::InvalidTxnState)?;
        if producer_epoch < current.producer_epoch {
            return Err(ResponseError::ProducerFenced);
        }
        let ongoing = current.state == TxnState::Ongoing && current.producer_epoch == producer_epoch;
        match ongoing && current.targets.contains(target) {
            true => Ok(()),
            false => Err(ResponseError::InvalidTxnState),
        }
    }

    /// The durable state of `transactional_id`.
    pub fn get(&self, transactional_id: &str) -> Option<&TxnRecord> {
        self.txns.get(transactional_id).and_then(|txn| txn.durable.as_ref())
    }

    /// Every transactional id's durable state, by id.
    pub fn records(&self) -> impl Iterator<Item = &TxnRecord> {
        self.txns.values().filter_map(|txn| txn.durable.as_ref())
    }

    /// InitProducerId with a transactional id: a first producer id, an epoch bump that fences
    /// the previous producer, or the abort of the transaction that producer left open.
    /// `allocate` gives a new producer id (a new id, or an epoch exhausted).
    pub fn init_producer_id(
        &mut self,
        request: &InitProducerId,
        now_ms: i64,
        allocate: impl FnOnce() -> Result<i64, ResponseError>,
    ) -> Result<Transition, ResponseError> {
        let id = &request.transactional_id;
        if id.is_empty() || id.len() > TRANSACTIONAL_ID_BYTES_MAX {
            return Err(ResponseError::InvalidRequest);
        }
        if request.timeout_ms <= 0 || request.timeout_ms > self.config.timeout_max_ms {
            return Err(ResponseError::InvalidTransactionTimeout);
        }
        // A client without a producer id yet sends -1 and -1 (v3+): no expectation.
        let expected = request.expected.filter(|&(producer_id, _)| producer_id != NONE);
        let Some(txn) = self.txns.get(id) else {
            return self.create(request, now_ms, allocate);
        };
        let current = match (&txn.durable, txn.pending) {
            (Some(current), false) => current.clone(),
            _ => return Err(ResponseError::ConcurrentTransactions),
        };
        let retry_of_last = expected == Some((current.last_producer_id, current.last_producer_epoch));
        if let Some(expected) = expected {
            if !retry_of_last && expected != (current.producer_id, current.producer_epoch) {
                return Err(ResponseError::ProducerFenced);
            }
        }
        let transition = match current.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => return Err(ResponseError::ConcurrentTransactions),
            // The previous producer left a transaction open: fence it (epoch bump) and abort.
            TxnState::Ongoing => Transition { record: fenced_abort(&current, now_ms), reply: Reply::RetryLater },
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort | TxnState::Dead => {
                let record = if retry_of_last && current.state == TxnState::Empty {
                    // The answer to the last InitProducerId was lost: the same again, no bump.
                    current
                } else {
                    bumped(current, request.timeout_ms, now_ms, allocate)?
                };
                let reply = Reply::Producer { producer_id: record.producer_id, producer_epoch: record.producer_epoch };
                Transition { record, reply }
            }
        };
        self.set_pending(id);
        Ok(transition)
    }

    /// The first InitProducerId of an id: a new producer id at epoch 0.
    fn create(
        &mut self,
        request: &InitProducerId,
        now_ms: i64,
        allocate: impl FnOnce() -> Result<i64, ResponseError>,
    ) -> Result<Transition, ResponseError> {
        if self.txns.len() >= self.config.ids_max {
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        let producer_id = allocate()?;
        let record = TxnRecord {
            transactional_id: request.transactional_id.clone(),
            producer_id,
            producer_epoch: 0,
            last_producer_id: NONE,
            last_producer_epoch: NO_EPOCH,
            timeout_ms: request.timeout_ms,
            state: TxnState::Empty,
            targets: BTreeSet::new(),
            start_ms: -1,
            update_ms: now_ms,
        };
        self.txns.insert(request.transactional_id.clone(), Txn { durable: None, pending: true });
        Ok(Transition { record, reply: Reply::Producer { producer_id, producer_epoch: 0 } })
    }

    /// AddPartitionsToTxn and AddOffsetsToTxn: `targets` join the transaction (which starts
    /// now if none is in progress). `None`: they all are in it already, nothing to write.
    pub fn add_targets(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        targets: &[TxnTarget],
        now_ms: i64,
    ) -> Result<Option<Transition>, ResponseError> {
        let current = self.current(transactional_id, producer_id, producer_epoch)?;
        let in_progress = match current.state {
            TxnState::PrepareCommit | TxnState::PrepareAbort => return Err(ResponseError::ConcurrentTransactions),
            TxnState::Dead => return Err(ResponseError::InvalidProducerIdMapping),
            TxnState::Ongoing => true,
            TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort => false,
        };
        if in_progress && targets.iter().all(|target| current.targets.contains(target)) {
            return Ok(None);
        }
        let mut record = current.clone();
        if !in_progress {
            record.targets.clear();
            record.start_ms = now_ms;
        }
        record.targets.extend(targets.iter().cloned());
        if record.targets.len() > self.config.targets_max {
            return Err(ResponseError::InvalidRequest);
        }
        record.state = TxnState::Ongoing;
        record.update_ms = now_ms;
        self.set_pending(transactional_id);
        Ok(Some(Transition { record, reply: Reply::Done }))
    }

    /// EndTxn: prepares the commit or abort of the transaction in progress. `None`: a retry of
    /// an EndTxn already completed, answered at once.
    pub fn end_txn(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        now_ms: i64,
    ) -> Result<Option<Transition>, ResponseError> {
        let current = self.current(transactional_id, producer_id, producer_epoch)?;
        let same = |committing: bool| committing == commit;
        match current.state {
            TxnState::Ongoing => {}
            TxnState::CompleteCommit | TxnState::CompleteAbort if same(current.state == TxnState::CompleteCommit) => {
                return Ok(None);
            }
            TxnState::PrepareCommit | TxnState::PrepareAbort if same(current.state == TxnState::PrepareCommit) => {
                return Err(ResponseError::ConcurrentTransactions);
            }
            TxnState::Dead => return Err(ResponseError::InvalidProducerIdMapping),
            _ => return Err(ResponseError::InvalidTxnState),
        }
        let mut record = current.clone();
        record.state = if commit { TxnState::PrepareCommit } else { TxnState::PrepareAbort };
        record.update_ms = now_ms;
        self.set_pending(transactional_id);
        Ok(Some(Transition { record, reply: Reply::Done }))
    }

    /// The transitions due at `now_ms`: transactions open longer than their timeout are aborted
    /// with the epoch bumped (the producer is fenced, as Kafka does), and ids unused for
    /// transactional.id.expiration.ms are removed.
    pub fn expire(&mut self, now_ms: i64) -> Vec<Transition> {
        let mut due = Vec::new();
        for txn in self.txns.values().filter(|txn| !txn.pending) {
            let Some(current) = &txn.durable else { continue };
            let idle = matches!(current.state, TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort);
            if current.state == TxnState::Ongoing && current.start_ms + i64::from(current.timeout_ms) <= now_ms {
                due.push(Transition { record: fenced_abort(current, now_ms), reply: Reply::Done });
            } else if idle && current.update_ms + self.config.id_expiration_ms <= now_ms {
                let mut record = current.clone();
                record.state = TxnState::Dead;
                record.update_ms = now_ms;
                due.push(Transition { record, reply: Reply::Done });
            }
        }
        for transition in &due {
            self.set_pending(&transition.record.transactional_id);
        }
        due
    }

    /// The markers that end `transactional_id`'s prepared transaction (none unless prepared).
    pub fn markers(&self, transactional_id: &str) -> Option<Markers> {
        let current = self.get(transactional_id)?;
        let commit = match current.state {
            TxnState::PrepareCommit => true,
            TxnState::PrepareAbort => false,
            _ => return None,
        };
        Some(Markers {
            transactional_id: current.transactional_id.clone(),
            producer_id: current.producer_id,
            producer_epoch: current.producer_epoch,
            commit,
            targets: current.targets.iter().cloned().collect(),
        })
    }

    /// Every prepared transaction's markers: what a restarted coordinator writes (again) first.
    pub fn prepared_markers(&self) -> Vec<Markers> {
        self.txns.keys().filter_map(|id| self.markers(id)).collect()
    }

    /// Once `transactional_id`'s markers are written: the transaction completes.
    pub fn complete(&mut self, transactional_id: &str, now_ms: i64) -> Option<Transition> {
        let txn = self.txns.get(transactional_id).filter(|txn| !txn.pending)?;
        let mut record = txn.durable.clone()?;
        record.state = match record.state {
            TxnState::PrepareCommit => TxnState::CompleteCommit,
            TxnState::PrepareAbort => TxnState::CompleteAbort,
            _ => return None,
        };
        record.targets.clear();
        record.start_ms = -1;
        record.update_ms = now_ms;
        self.set_pending(transactional_id);
        Some(Transition { record, reply: Reply::Done })
    }

    /// A durable record (a transition's, or one replayed from the log at start) becomes the
    /// id's state; the id is no longer pending.
    pub fn apply(&mut self, record: TxnRecord) {
        let previous = self.txns.get(&record.transactional_id).and_then(|txn| txn.durable.as_ref()).map(|durable| durable.producer_id);
        if let Some(producer_id) = previous {
            self.by_producer.remove(&producer_id);
        }
        if record.state == TxnState::Dead {
            self.txns.remove(&record.transactional_id);
            return;
        }
        let id = record.transactional_id.clone();
        self.by_producer.insert(record.producer_id, id.clone());
        self.txns.insert(id, Txn { durable: Some(record), pending: false });
    }

    /// A transition's record could not be made durable: the id is as it was, not pending.
    pub fn abandon(&mut self, transactional_id: &str) {
        match self.txns.get_mut(transactional_id) {
            Some(Txn { durable: None, .. }) => {
                self.txns.remove(transactional_id);
            }
            Some(txn) => txn.pending = false,
            None => {}
        }
    }

    /// The durable state of an id a client names with its producer id and epoch, checked as
    /// Kafka's coordinator checks AddPartitionsToTxn and EndTxn.
    fn current(&self, transactional_id: &str, producer_id: i64, producer_epoch: i16) -> Result<&TxnRecord, ResponseError> {
        if transactional_id.is_empty() {
            return Err(ResponseError::InvalidRequest);
        }
        let txn = self.txns.get(transactional_id).ok_or(ResponseError::InvalidProducerIdMapping)?;
        let current = match (&txn.durable, txn.pending) {
            (Some(current), false) => current,
            (None, _) => return Err(ResponseError::InvalidProducerIdMapping),
            (Some(_), true) => return Err(ResponseError::ConcurrentTransactions),
        };
        if current.producer_id != producer_id {
            return Err(ResponseError::InvalidProducerIdMapping);
        }
        if current.producer_epoch != producer_epoch {
            return Err(ResponseError::ProducerFenced);
        }
        Ok(current)
    }

    fn set_pending(&mut self, transactional_id: &str) {
        if let Some(txn) = self.txns.get_mut(transactional_id) {
            txn.pending = true;
        }
    }
}

/// The abort of `current`'s open transaction with the epoch bumped, so that the producer that
/// opened it is fenced (a new producer took the id, or the transaction timed out).
fn fenced_abort(current: &TxnRecord, now_ms: i64) -> TxnRecord {
    let mut record = current.clone();
    // At an exhausted epoch the abort keeps it: the next InitProducerId moves to a new id.
    record.producer_epoch = current.producer_epoch.saturating_add(1).min(EPOCH_EXHAUSTED);
    record.last_producer_id = NONE;
    record.last_producer_epoch = NO_EPOCH;
    record.state = TxnState::PrepareAbort;
    record.update_ms = now_ms;
    record
}

/// An idle id's next producer: the epoch bumped, or a new producer id at epoch 0 once the epoch
/// is exhausted. The previous pair is kept for KIP-360 retries.
fn bumped(
    current: TxnRecord,
    timeout_ms: i32,
    now_ms: i64,
    allocate: impl FnOnce() -> Result<i64, ResponseError>,
) -> Result<TxnRecord, ResponseError> {
    let (producer_id, producer_epoch) = if current.producer_epoch >= EPOCH_EXHAUSTED {
        (allocate()?, 0)
    } else {
        (current.producer_id, current.producer_epoch + 1)
    };
    Ok(TxnRecord {
        last_producer_id: current.producer_id,
        last_producer_epoch: current.producer_epoch,
        producer_id,
        producer_epoch,
        timeout_ms,
        state: TxnState::Empty,
        targets: BTreeSet::new(),
        start_ms: -1,
        update_ms: now_ms,
        ..current
    })
}

#[cfg(test)]
mod tests;
