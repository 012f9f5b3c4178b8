//! Idempotent producers' state in one partition: for each producer id, its epoch and its last
//! few batches' sequence ranges and offsets, as Kafka's `ProducerStateManager` keeps them.
//!
//! Why: a producer that does not hear back (a cut connection, a timeout) resends the same batch
//! with the same producer id, epoch and sequence numbers. A resend of one of the producer's last
//! `BATCHES_RETAINED` batches is answered with where the original went and not appended again;
//! a batch that skips sequence numbers is refused (OUT_OF_ORDER_SEQUENCE_NUMBER), so records are
//! neither duplicated nor reordered across retries.
//!
//! The rules are Kafka's (`ProducerAppendInfo`, `ProducerStateEntry`, 2.5+ semantics):
//! - a batch of the current epoch whose exact sequence range is one of the last five batches is
//!   a duplicate;
//! - a batch of an older epoch is refused (INVALID_PRODUCER_EPOCH, the retriable error clients
//!   since Kafka 2.7 expect on Produce);
//! - a batch of a newer epoch must start at sequence 0 (the producer reset its sequences);
//! - a batch of the current epoch must start right after the last batch's last sequence, and
//!   sequences wrap from i32::MAX to 0;
//! - an unknown producer id (never seen, expired, or its batches gone with retention or
//!   DeleteRecords before a restart) is accepted at any sequence (KIP-360: no
//!   UNKNOWN_PRODUCER_ID from the broker since Kafka 2.5).
//!
//! The log is the truth: the table is rebuilt at recovery from the producer fields of the batch
//! headers (`load`), with no side file. The table is a pure in-memory structure; `PartitionLog`
//! checks and updates it under the partition lock, together with the append.

use std::collections::{HashMap, VecDeque};

use super::batch::BatchHeader;

/// Batches remembered per producer: Kafka's NUM_BATCHES_TO_RETAIN. Kafka requires idempotent
/// producers to keep at most this many requests in flight per connection
/// (max.in.flight.requests.per.connection <= 5), so every batch a producer can resend is here.
pub const BATCHES_RETAINED: usize = 5;

/// Producers tracked per partition. Kafka has no such limit (only expiry, and it is a known
/// memory problem with many short-lived producers); here the least recently appended producer
/// is forgotten when a new one arrives at the limit. A forgotten producer is accepted at any
/// sequence, as after expiry. 4096 producers x ~250 bytes bounds the table near 1 MiB.
pub const PRODUCERS_PER_PARTITION_MAX: usize = 4096;

/// Kafka's producer.id.expiration.ms default (1 day): a producer with no append for this long
/// is forgotten.
pub const PRODUCER_ID_EXPIRATION_MS_DEFAULT: i64 = 86_400_000;

/// Kafka's NO_PRODUCER_EPOCH.
const NO_PRODUCER_EPOCH: i16 = -1;

/// Where one batch of a producer went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchMetadata {
    pub first_sequence: i32,
    pub last_sequence: i32,
    pub base_offset: i64,
    pub last_offset: i64,
    /// The batch's max timestamp as appended (the append time for LogAppendTime topics).
    pub max_timestamp_ms: i64,
}

#[derive(Clone, Debug)]
struct ProducerEntry {
    epoch: i16,
    /// Oldest first; at most BATCHES_RETAINED; never empty (an entry exists only after a batch).
    batches: VecDeque<BatchMetadata>,
    /// When the producer last appended, broker time (an estimate after recovery, see `load`).
    last_append_ms: i64,
}

/// What to do with a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Not from an idempotent producer, or in sequence: append it.
    Append,
    /// A resend of a batch already in the log: answer with the original, append nothing.
    Duplicate(BatchMetadata),
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProducerError {
    #[error("out of order sequence number for producer {producer_id}: {first_sequence} (incoming), {last_sequence} (last appended) at epoch {epoch}")]
    OutOfOrderSequence { producer_id: i64, epoch: i16, first_sequence: i32, last_sequence: i32 },
    #[error("invalid sequence number {first_sequence} for new epoch {epoch} of producer {producer_id} (current epoch {current_epoch}): a new epoch starts at 0")]
    NewEpochNotAtZero { producer_id: i64, epoch: i16, current_epoch: i16, first_sequence: i32 },
    #[error("epoch {epoch} of producer {producer_id} is smaller than the last seen epoch {current_epoch}")]
    StaleEpoch { producer_id: i64, epoch: i16, current_epoch: i16 },
}

impl ProducerError {
    /// The Kafka error code a Produce response carries for this error.
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            // OUT_OF_ORDER_SEQUENCE_NUMBER
            ProducerError::OutOfOrderSequence { .. } | ProducerError::NewEpochNotAtZero { .. } => 45,
            // INVALID_PRODUCER_EPOCH (Kafka's Produce answer since 2.7; PRODUCER_FENCED is fatal)
            ProducerError::StaleEpoch { .. } => 47,
        }
    }
}

/// The last sequence of a batch: Kafka's `DefaultRecordBatch.incrementSequence`, wrapping past
/// i32::MAX to 0.
pub fn last_sequence(header: &BatchHeader) -> i32 {
    increment_sequence(header.base_sequence, header.last_offset_delta)
}

fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    debug_assert!(increment >= 0);
    if sequence > i32::MAX - increment {
        increment - (i32::MAX - sequence) - 1
    } else {
        sequence + increment
    }
}

/// Kafka's `inSequence`: `next` follows `last`.
fn in_sequence(last: i32, next: i32) -> bool {
    i64::from(next) == i64::from(last) + 1 || (next == 0 && last == i32::MAX)
}

#[derive(Debug)]
pub struct ProducerStateTable {
    producers: HashMap<i64, ProducerEntry>,
    producers_max: usize,
}

impl Default for ProducerStateTable {
    fn default() -> ProducerStateTable {
        ProducerStateTable::new(PRODUCERS_PER_PARTITION_MAX)
    }
}

impl ProducerStateTable {
    pub fn new(producers_max: usize) -> ProducerStateTable {
        assert!(producers_max > 0);
        ProducerStateTable { producers: HashMap::new(), producers_max }
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    /// The epoch and last batch of a producer, if tracked.
    pub fn last_batch(&self, producer_id: i64) -> Option<(i16, BatchMetadata)> {
        let entry = self.producers.get(&producer_id)?;
        Some((entry.epoch, *entry.batches.back().expect("entries are never empty")))
    }

    /// Decides what to do with a validated client batch. Changes nothing: the caller appends,
    /// then calls `on_append`, under the same lock.
    pub fn check(&self, header: &BatchHeader) -> Result<Check, ProducerError> {
        if !header.has_producer_id() {
            return Ok(Check::Append);
        }
        let producer_id = header.producer_id;
        let Some(entry) = self.producers.get(&producer_id) else {
            // Unknown producer: accepted at any sequence (KIP-360).
            return Ok(Check::Append);
        };
        let epoch = header.producer_epoch;
        let first_sequence = header.base_sequence;
        if epoch == entry.epoch {
            let last = last_sequence(header);
            if let Some(original) = entry.batches.iter().find(|batch| batch.first_sequence == first_sequence && batch.last_sequence == last) {
                return Ok(Check::Duplicate(*original));
            }
        }
        if epoch < entry.epoch {
            return Err(ProducerError::StaleEpoch { producer_id, epoch, current_epoch: entry.epoch });
        }
        if epoch > entry.epoch {
            if first_sequence != 0 && entry.epoch != NO_PRODUCER_EPOCH {
                return Err(ProducerError::NewEpochNotAtZero { producer_id, epoch, current_epoch: entry.epoch, first_sequence });
            }
            return Ok(Check::Append);
        }
        if entry.epoch == NO_PRODUCER_EPOCH {
            // Kafka accepts any sequence while the producer has no epoch.
            return Ok(Check::Append);
        }
        let last_sequence = entry.batches.back().expect("entries are never empty").last_sequence;
        if !in_sequence(last_sequence, first_sequence) {
            return Err(ProducerError::OutOfOrderSequence { producer_id, epoch, first_sequence, last_sequence });
        }
        Ok(Check::Append)
    }

    /// Records a batch just appended (`header.base_offset` is the offset it got; `check` said
    /// Append). `now_ms` is the broker's clock.
    pub fn on_append(&mut self, header: &BatchHeader, now_ms: i64) {
        self.load(header, now_ms);
    }

    /// Records a batch found in the log at recovery, without checks: the log is the truth. A
    /// batch of a different epoch (newer, as the checks ensure) starts the producer's batches
    /// afresh, as in Kafka. `append_ms` estimates when it was appended.
    pub fn load(&mut self, header: &BatchHeader, append_ms: i64) {
        if !header.has_producer_id() {
            return;
        }
        let batch = BatchMetadata {
            first_sequence: header.base_sequence,
            last_sequence: last_sequence(header),
            base_offset: header.base_offset,
            last_offset: header.last_offset(),
            max_timestamp_ms: header.max_timestamp_ms,
        };
        self.push(header.producer_id, header.producer_epoch, std::iter::once(batch), append_ms);
    }

    fn push(&mut self, producer_id: i64, epoch: i16, batches: impl IntoIterator<Item = BatchMetadata>, append_ms: i64) {
        if !self.producers.contains_key(&producer_id) && self.producers.len() >= self.producers_max {
            self.evict_least_recent();
        }
        let entry = self.producers.entry(producer_id).or_insert_with(|| ProducerEntry {
            epoch,
            batches: VecDeque::with_capacity(BATCHES_RETAINED),
            last_append_ms: append_ms,
        });
        if entry.epoch != epoch {
            entry.epoch = epoch;
            entry.batches.clear();
        }
        for batch in batches {
            if entry.batches.len() == BATCHES_RETAINED {
                entry.batches.pop_front();
            }
            entry.batches.push_back(batch);
        }
        entry.last_append_ms = entry.last_append_ms.max(append_ms);
        assert!(!entry.batches.is_empty() && entry.batches.len() <= BATCHES_RETAINED);
        assert!(self.producers.len() <= self.producers_max);
    }

    fn evict_least_recent(&mut self) {
        // A scan: eviction only happens at the limit, and then once per new producer.
        let oldest = self.producers.iter().min_by_key(|(id, entry)| (entry.last_append_ms, **id)).map(|(id, _)| *id);
        if let Some(id) = oldest {
            self.producers.remove(&id);
        }
    }

    /// Appends the state of a later stretch of the same log (recovery scans zones separately,
    /// then chains them in order).
    pub fn absorb(&mut self, later: ProducerStateTable) {
        // Older producers first, so that eviction at the limit keeps the most recent ones.
        let mut entries: Vec<(i64, ProducerEntry)> = later.producers.into_iter().collect();
        entries.sort_by_key(|(id, entry)| (entry.last_append_ms, *id));
        for (producer_id, entry) in entries {
            self.push(producer_id, entry.epoch, entry.batches, entry.last_append_ms);
        }
    }

    /// Forgets producers with no append for `expiration_ms` (Kafka's producer.id.expiration.ms).
    /// Returns how many.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) -> usize {
        let before = self.producers.len();
        let cutoff = now_ms.saturating_sub(expiration_ms.max(0));
        self.producers.retain(|_, entry| entry.last_append_ms > cutoff);
        before - self.producers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::batch::{encode_batch, parse_header, Compression, SimpleRecord};

    /// A header of an idempotent batch of `records` records at `base_offset`.
    fn header(producer_id: i64, epoch: i16, base_sequence: i32, records: i32, base_offset: i64) -> BatchHeader {
        let value = [0u8; 4];
        let records: Vec<SimpleRecord> = (0..records).map(|_| SimpleRecord::new(None, Some(&value), &[], 1000)).collect();
        let batch = encode_batch(&records, Compression::None).unwrap();
        let parsed = parse_header(&batch).unwrap();
        BatchHeader { base_offset, producer_id, producer_epoch: epoch, base_sequence, ..parsed }
    }

    /// Checks, and appends at `*next_offset` if the check says so.
    fn append(table: &mut ProducerStateTable, next_offset: &mut i64, mut h: BatchHeader) -> Result<Check, ProducerError> {
        let check = table.check(&h)?;
        if check == Check::Append {
            h.base_offset = *next_offset;
            *next_offset = h.last_offset() + 1;
            table.on_append(&h, 1);
        }
        Ok(check)
    }

    #[test]
    fn duplicates_of_each_of_the_last_five_batches_get_their_original_offsets() {
        let mut table = ProducerStateTable::default();
        let mut next = 100;
        for i in 0..8 {
            assert_eq!(append(&mut table, &mut next, header(7, 0, i * 3, 3, 0)), Ok(Check::Append));
        }
        // Batches 3..8 (sequences 9..24) are retained; offsets 100 + 3 * i.
        for i in 3..8 {
            match table.check(&header(7, 0, i * 3, 3, 0)) {
                Ok(Check::Duplicate(original)) => {
                    assert_eq!(original.base_offset, 100 + 3 * i64::from(i));
                    assert_eq!(original.last_offset, 102 + 3 * i64::from(i));
                    assert_eq!((original.first_sequence, original.last_sequence), (i * 3, i * 3 + 2));
                }
                other => panic!("batch {i}: {other:?}"),
            }
        }
        // Older than the last five: not recognised, and out of sequence.
        assert!(matches!(table.check(&header(7, 0, 6, 3, 0)), Err(ProducerError::OutOfOrderSequence { .. })));
        // Same first sequence, different range: not a duplicate.
        assert!(matches!(table.check(&header(7, 0, 21, 2, 0)), Err(ProducerError::OutOfOrderSequence { .. })));
        // Next in sequence.
        assert_eq!(table.check(&header(7, 0, 24, 1, 0)), Ok(Check::Append));
        assert_eq!(next, 124);
    }

    #[test]
    fn gaps_are_out_of_order() {
        let mut table = ProducerStateTable::default();
        let mut next = 0;
        append(&mut table, &mut next, header(1, 0, 0, 2, 0)).unwrap();
        let error = table.check(&header(1, 0, 3, 1, 0)).unwrap_err();
        assert_eq!(error, ProducerError::OutOfOrderSequence { producer_id: 1, epoch: 0, first_sequence: 3, last_sequence: 1 });
        assert_eq!(error.kafka_error_code(), 45);
        assert_eq!(table.check(&header(1, 0, 2, 1, 0)), Ok(Check::Append));
        // Another producer is independent.
        assert_eq!(table.check(&header(2, 0, 0, 1, 0)), Ok(Check::Append));
    }

    #[test]
    fn unknown_producers_are_accepted_at_any_sequence() {
        let table = ProducerStateTable::default();
        assert_eq!(table.check(&header(9, 3, 12345, 1, 0)), Ok(Check::Append));
        // Not idempotent at all.
        assert_eq!(table.check(&header(-1, -1, -1, 1, 0)), Ok(Check::Append));
    }

    #[test]
    fn epochs_bump_at_zero_and_stale_epochs_are_refused() {
        let mut table = ProducerStateTable::default();
        let mut next = 0;
        append(&mut table, &mut next, header(5, 2, 0, 1, 0)).unwrap();
        append(&mut table, &mut next, header(5, 2, 1, 1, 0)).unwrap();
        // A new epoch must restart the sequence at 0.
        let error = table.check(&header(5, 3, 2, 1, 0)).unwrap_err();
        assert!(matches!(error, ProducerError::NewEpochNotAtZero { .. }));
        assert_eq!(error.kafka_error_code(), 45);
        assert_eq!(append(&mut table, &mut next, header(5, 3, 0, 1, 0)), Ok(Check::Append));
        // The old epoch is fenced, even for what was a duplicate before.
        let error = table.check(&header(5, 2, 1, 1, 0)).unwrap_err();
        assert_eq!(error, ProducerError::StaleEpoch { producer_id: 5, epoch: 2, current_epoch: 3 });
        assert_eq!(error.kafka_error_code(), 47);
        // The new epoch's batches are the ones remembered.
        assert!(matches!(table.check(&header(5, 3, 0, 1, 0)), Ok(Check::Duplicate(BatchMetadata { base_offset: 2, .. }))));
        assert_eq!(table.check(&header(5, 3, 1, 1, 0)), Ok(Check::Append));
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(increment_sequence(5, 0), 5);
        let mut table = ProducerStateTable::default();
        let mut next = 0;
        // An unknown producer starts anywhere: right below the wrap.
        append(&mut table, &mut next, header(3, 0, i32::MAX - 2, 3, 0)).unwrap();
        assert_eq!(table.last_batch(3).unwrap().1.last_sequence, i32::MAX);
        assert_eq!(append(&mut table, &mut next, header(3, 0, 0, 2, 0)), Ok(Check::Append));
        // A batch that itself wraps.
        append(&mut table, &mut next, header(3, 0, 2, 1, 0)).unwrap();
        let mut wrap_table = ProducerStateTable::default();
        append(&mut wrap_table, &mut next, header(4, 0, i32::MAX - 1, 4, 0)).unwrap();
        assert_eq!(wrap_table.last_batch(4).unwrap().1.last_sequence, 1);
        assert!(matches!(wrap_table.check(&header(4, 0, i32::MAX - 1, 4, 0)), Ok(Check::Duplicate(_))));
        assert_eq!(wrap_table.check(&header(4, 0, 2, 1, 0)), Ok(Check::Append));
        assert!(wrap_table.check(&header(4, 0, 0, 1, 0)).is_err());
    }

    #[test]
    fn transactional_batches_are_sequenced_as_idempotent_ones() {
        // Whether the batch belongs to an ongoing transaction is the coordinator's check; the
        // partition checks its sequence and epoch like any producer's.
        let mut table = ProducerStateTable::default();
        let mut next = 0;
        let mut h = header(1, 0, 0, 1, 0);
        h.attributes |= 0x10;
        append(&mut table, &mut next, h).unwrap();
        assert!(matches!(table.check(&h), Ok(Check::Duplicate(_))));
    }

    #[test]
    fn the_least_recent_producer_is_forgotten_at_the_limit_and_expiry_forgets_idle_ones() {
        let mut table = ProducerStateTable::new(3);
        for (id, time) in [(1, 10), (2, 5), (3, 20)] {
            table.on_append(&header(id, 0, 0, 1, id), time);
        }
        table.on_append(&header(4, 0, 0, 1, 4), 30);
        assert_eq!(table.len(), 3);
        assert!(table.last_batch(2).is_none(), "producer 2 appended least recently");
        // A forgotten producer is accepted at any sequence.
        assert_eq!(table.check(&header(2, 0, 77, 1, 0)), Ok(Check::Append));
        assert_eq!(table.expire(50, 25), 2, "producers 1 and 3 last appended at 10 and 20");
        assert!(table.last_batch(4).is_some() && table.last_batch(3).is_none());
        assert_eq!(table.expire(1_000, 25), 1);
        assert!(table.is_empty());
    }

    #[test]
    fn absorbing_later_zones_equals_loading_in_order() {
        let mut batches = Vec::new();
        for i in 0..40i32 {
            let producer = i64::from(i % 3);
            let epoch = if i >= 30 && producer == 0 { 1 } else { 0 };
            let sequence = if epoch == 1 { (i - 30) / 3 } else { i / 3 };
            batches.push(header(producer, epoch, sequence, 1, i64::from(i)));
        }
        let mut whole = ProducerStateTable::default();
        for h in &batches {
            whole.load(h, h.base_offset);
        }
        let mut chained = ProducerStateTable::default();
        for zone in batches.chunks(7) {
            let mut table = ProducerStateTable::default();
            for h in zone {
                table.load(h, h.base_offset);
            }
            chained.absorb(table);
        }
        for producer in 0..3 {
            assert_eq!(whole.last_batch(producer), chained.last_batch(producer));
            for h in &batches[batches.len() - 9..] {
                assert_eq!(whole.check(h), chained.check(h), "{h:?}");
            }
        }
        assert_eq!(whole.last_batch(0).unwrap().0, 1);
    }
}
