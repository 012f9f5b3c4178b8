//! The partition log against a simple in-memory model: random appends, flushes, reads,
//! timestamp lookups, retention, delete-records, partition deletion, garbage collection (and
//! reads planned before it, run after it), injected faults (EIO, ENOSPC, torn writes, torn or
//! lost zone summaries), a full device, crashes and clean reopens, on six partitions whose
//! batches interleave in the same zones of a small device (zones seal with their summaries,
//! the index checkpoints recovery reads, every few appends). The model is the oracle:
//! acknowledged batches are never lost or changed, reads return exactly the model's batches.

use std::sync::Arc;

use broker::log::batch::{encode_batch, Compression, SimpleRecord};
use broker::log::{LogConfig, LogError, LogStore, PartitionId, PartitionLog};
use broker::zone::fault::{FaultControl, FaultyZonedDevice, WriteFault};
use broker::zone::mem::MemZonedDevice;
use broker::zone::{ZoneGeometry, ZonedDevice};
use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

const PARTITIONS: usize = 6;

fn geometry() -> ZoneGeometry {
    ZoneGeometry {
        zone_size_bytes: 64 << 10,
        zone_capacity_bytes: 56 << 10,
        zone_count: 96,
        max_open_zones: 2,
        max_active_zones: 8,
    }
}

fn config() -> LogConfig {
    LogConfig {
        write_chunk_bytes: 16 << 10,
        index_interval_bytes: 2048,
        recent_cache_bytes_max: 8 << 10,
        read_window_bytes: 8 << 10,
    }
}

/// A partition's id in its `generation` (a deleted partition comes back under a new topic id).
fn partition_id(partition: usize, generation: u8) -> PartitionId {
    PartitionId {
        topic: "model".into(),
        topic_id: [generation; 16],
        partition: partition as i32,
    }
}

#[derive(Clone, Debug)]
enum Op {
    Append {
        partition: usize,
        records: usize,
        value_bytes: usize,
        timestamp_ms: i64,
    },
    Flush {
        partition: usize,
    },
    Read {
        partition: usize,
        at: f64,
        max_bytes: usize,
    },
    Timestamp {
        partition: usize,
        timestamp_ms: i64,
    },
    Retention {
        partition: usize,
        bytes: u64,
    },
    RetentionTime {
        partition: usize,
        now_ms: i64,
        retention_ms: i64,
    },
    DeleteRecords {
        partition: usize,
        at: f64,
    },
    Reopen,
    /// Deletes the partition's log; it starts again, empty, under a new topic id.
    Delete {
        partition: usize,
    },
    /// A forced garbage collection pass.
    Gc,
    /// A fault armed before an append and flush to the partition, then a reopen.
    Fault {
        partition: usize,
        kind: u8,
        amount: u64,
    },
    /// A crash: the store dropped without a flush or a reclaim pass, then recovered.
    Crash,
    /// A read planned, then a forced GC and reclaim pass, then the read run.
    ReadAcrossGc {
        partition: usize,
        at: f64,
    },
    /// The next zone seal's last write (summary tail and trailer) torn or lost, appends to the
    /// partition until a zone seals, then a crash: recovery must scan that zone.
    TornSeal {
        partition: usize,
        lost: bool,
    },
    /// Appends to the partition until the device is full (refused with nothing changed), a
    /// log start moved on another partition (the internal stream's reserved zones), then the
    /// full partition deleted and appends working again.
    Fill {
        partition: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let partition = 0..PARTITIONS;
    prop_oneof![
        8 => (partition.clone(), 1..6usize, 0..6000usize, 0..2000i64)
            .prop_map(|(partition, records, value_bytes, timestamp_ms)| Op::Append { partition, records, value_bytes, timestamp_ms }),
        3 => partition.clone().prop_map(|partition| Op::Flush { partition }),
        4 => (partition.clone(), 0.0..1.0f64, 1..40_000usize).prop_map(|(partition, at, max_bytes)| Op::Read { partition, at, max_bytes }),
        2 => (partition.clone(), 0..2100i64).prop_map(|(partition, timestamp_ms)| Op::Timestamp { partition, timestamp_ms }),
        1 => (partition.clone(), 20_000..200_000u64).prop_map(|(partition, bytes)| Op::Retention { partition, bytes }),
        1 => (partition.clone(), 0..4000i64, 0..2000i64).prop_map(|(partition, now_ms, retention_ms)| Op::RetentionTime { partition, now_ms, retention_ms }),
        1 => (partition.clone(), 0.0..1.0f64).prop_map(|(partition, at)| Op::DeleteRecords { partition, at }),
        1 => Just(Op::Reopen),
        1 => partition.clone().prop_map(|partition| Op::Delete { partition }),
        2 => Just(Op::Gc),
        1 => (partition.clone(), 0..6u8, 0..4u64).prop_map(|(partition, kind, amount)| Op::Fault { partition, kind, amount }),
        1 => Just(Op::Crash),
        1 => (partition.clone(), 0.0..1.0f64).prop_map(|(partition, at)| Op::ReadAcrossGc { partition, at }),
        1 => (partition.clone(), any::<bool>()).prop_map(|(partition, lost)| Op::TornSeal { partition, lost }),
        1 => partition.clone().prop_map(|partition| Op::Fill { partition }),
    ]
}

/// One appended batch as the model knows it: its bytes as stored (base offset rewritten).
#[derive(Clone, Debug)]
struct ModelBatch {
    base: i64,
    last: i64,
    max_timestamp_ms: i64,
    bytes: Bytes,
}

#[derive(Default, Clone, Debug)]
struct ModelPartition {
    batches: Vec<ModelBatch>,
    log_start: i64,
    /// The log start as of the partition's last flush: retention records a new start in the
    /// log without flushing it, so after a crash the start may be anywhere from here to
    /// `log_start` (the batches in between are still there: zones are reset only after a flush).
    durable_log_start: i64,
    durable_end: i64,
}

impl ModelPartition {
    fn end(&self) -> i64 {
        self.batches
            .last()
            .map_or(self.log_start.max(self.durable_end), |b| b.last + 1)
    }
    fn durable(&self) -> impl Iterator<Item = &ModelBatch> {
        self.batches
            .iter()
            .filter(|b| b.last >= self.log_start && b.base < self.durable_end)
    }
    /// The offset at fraction `at` of the readable span.
    fn offset_at(&self, at: f64) -> i64 {
        let span = (self.durable_end - self.log_start) as f64;
        self.log_start + (span * at) as i64
    }
    /// Retention moved the log start to `after`: it must be on a batch boundary.
    fn move_start_to_boundary(&mut self, after: i64) -> Result<(), TestCaseError> {
        prop_assert!(
            after == self.log_start
                || after == self.end()
                || self.batches.iter().any(|b| b.base == after),
            "log start {} on a batch boundary",
            after
        );
        self.log_start = after;
        Ok(())
    }
    /// Records an acknowledged-to-be append.
    fn push(&mut self, info: &broker::log::AppendInfo, batch: &[u8]) {
        self.batches.push(ModelBatch {
            base: info.base_offset,
            last: info.last_offset,
            max_timestamp_ms: info.max_timestamp_ms,
            bytes: stored(batch, info.base_offset),
        });
    }
    /// A flush reported `hw` as the high watermark.
    fn flushed(&mut self, hw: i64) {
        self.durable_end = hw;
        self.durable_log_start = self.log_start;
    }
}

/// A read at `offset` returned `batches`: exactly the model's, from the one holding `offset`.
fn check_read(
    m: &ModelPartition,
    offset: i64,
    max_bytes: usize,
    batches: &[Bytes],
) -> Result<(), TestCaseError> {
    let expected: Vec<&ModelBatch> = m.durable().filter(|b| b.last >= offset).collect();
    if offset >= m.durable_end {
        prop_assert!(batches.is_empty());
    } else {
        prop_assert!(!batches.is_empty(), "no batch at offset {}", offset);
        let total: usize = batches.iter().map(|b| b.len()).sum();
        prop_assert!(batches.len() == 1 || total <= max_bytes);
        for (got, want) in batches.iter().zip(&expected) {
            prop_assert_eq!(got, &want.bytes, "batch at {}", want.base);
        }
        prop_assert!(batches.len() <= expected.len());
    }
    Ok(())
}

fn make_batch(records: usize, value_bytes: usize, timestamp_ms: i64, salt: u64) -> Vec<u8> {
    let records: Vec<SimpleRecord> = (0..records)
        .map(|i| {
            let value: Vec<u8> = (0..value_bytes / records.max(1))
                .map(|j| (salt as usize + i * 31 + j) as u8)
                .collect();
            let key = format!("key-{salt}-{i}");
            SimpleRecord::new(
                Some(key.as_bytes()),
                if i == 1 { None } else { Some(&value) },
                &[("h", Some(b"v"))],
                timestamp_ms + i as i64,
            )
        })
        .collect();
    encode_batch(&records, Compression::None).unwrap()
}

fn stored(bytes: &[u8], base: i64) -> Bytes {
    let mut copy = bytes.to_vec();
    copy[0..8].copy_from_slice(&base.to_be_bytes());
    Bytes::from(copy)
}

/// Recovers the device; logs of earlier generations (deleted partitions whose zones were not
/// reset yet) are deleted, as `Cluster::open` does.
fn open(device: &Arc<dyn ZonedDevice>, generations: &[u8]) -> (LogStore, Vec<PartitionLog>) {
    let recovered = broker::pending::block_on(LogStore::open(device.clone(), config())).unwrap();
    let mut logs: Vec<Option<PartitionLog>> = (0..PARTITIONS).map(|_| None).collect();
    for log in recovered.partitions {
        let index = log.id().partition as usize;
        if log.id().topic_id == partition_id(index, generations[index]).topic_id {
            logs[index] = Some(log);
        } else {
            log.delete();
        }
    }
    let store = recovered.store;
    let logs = logs
        .into_iter()
        .enumerate()
        .map(|(i, log)| {
            log.unwrap_or_else(|| store.create_partition(partition_id(i, generations[i])))
        })
        .collect();
    (store, logs)
}

/// Arms one of the faults the device wrapper can inject.
fn arm(control: &FaultControl, kind: u8, amount: u64) {
    let errno = if kind % 2 == 0 {
        libc::EIO
    } else {
        libc::ENOSPC
    };
    match kind / 2 {
        0 => control.fail_write_in(amount, errno, WriteFault::Torn),
        1 => control.fail_write_in(
            amount,
            errno,
            [WriteFault::Dropped, WriteFault::Written][amount as usize % 2],
        ),
        _ => control.fail_next_flush(errno),
    }
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let inner: Arc<dyn ZonedDevice> = Arc::new(MemZonedDevice::new(geometry()).unwrap());
    let (faulty, control) = FaultyZonedDevice::new(inner);
    let device: Arc<dyn ZonedDevice> = Arc::new(faulty);
    let mut generations = [1u8; PARTITIONS];
    let (mut store, mut logs) = open(&device, &generations);
    let mut model: Vec<ModelPartition> = vec![ModelPartition::default(); PARTITIONS];
    let mut salt = 0u64;
    for op in ops {
        match op {
            Op::Append {
                partition,
                records,
                value_bytes,
                timestamp_ms,
            } => {
                salt += 1;
                let batch = make_batch(records, value_bytes, timestamp_ms, salt);
                let info = logs[partition]
                    .append(BytesMut::from(&batch[..]), 0)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let m = &mut model[partition];
                prop_assert_eq!(info.base_offset, m.end());
                prop_assert_eq!(info.last_offset, info.base_offset + records as i64 - 1);
                m.push(&info, &batch);
            }
            Op::Flush { partition } => {
                let hw = logs[partition]
                    .start_flush()
                    .wait()
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(hw, model[partition].end());
                model[partition].flushed(hw);
                prop_assert_eq!(logs[partition].high_watermark(), hw);
            }
            Op::Read {
                partition,
                at,
                max_bytes,
            } => {
                let m = &model[partition];
                let log = &logs[partition];
                prop_assert_eq!(log.log_start_offset(), m.log_start);
                let offset = m.offset_at(at);
                let batches = log
                    .read(offset, max_bytes)
                    .unwrap()
                    .wait()
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                check_read(m, offset, max_bytes, &batches)?;
                // Below the log start: out of range, as Kafka answers.
                if m.log_start > 0 {
                    prop_assert!(
                        matches!(
                            log.read(m.log_start - 1, max_bytes),
                            Err(LogError::OffsetOutOfRange { .. })
                        ),
                        "read below start"
                    );
                }
                prop_assert!(
                    matches!(
                        log.read(m.durable_end + 1, max_bytes),
                        Err(LogError::OffsetOutOfRange { .. })
                    ),
                    "read above high watermark"
                );
            }
            Op::Timestamp {
                partition,
                timestamp_ms,
            } => {
                let m = &model[partition];
                let found = logs[partition]
                    .offset_for_timestamp(timestamp_ms)
                    .unwrap()
                    .wait()
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let expected = m.durable().find(|b| b.max_timestamp_ms >= timestamp_ms);
                match (found, expected) {
                    (None, None) => {}
                    (Some(found), Some(expected)) => {
                        prop_assert_eq!(found.offset, expected.base.max(m.log_start));
                        prop_assert_eq!(found.max_timestamp_ms, expected.max_timestamp_ms);
                        prop_assert_eq!(&found.batch, &expected.bytes);
                    }
                    (found, expected) => prop_assert!(
                        false,
                        "timestamp {} found {:?} expected {:?}",
                        timestamp_ms,
                        found.map(|f| f.offset),
                        expected.map(|e| e.base)
                    ),
                }
            }
            Op::Retention { partition, bytes } => {
                let log = &mut logs[partition];
                let before = log.log_start_offset();
                log.apply_retention(0, None, Some(bytes));
                prop_assert_eq!(
                    log.apply_retention(0, None, Some(bytes)),
                    0,
                    "retention is idempotent"
                );
                let m = &mut model[partition];
                let after = log.log_start_offset();
                prop_assert!(after >= before);
                m.move_start_to_boundary(after)?;
                prop_assert!(
                    log.size_bytes() < bytes
                        || log.zone_ids().len() == 1
                        || log.size_bytes() - 1 < bytes + 56 * 1024
                );
            }
            Op::RetentionTime {
                partition,
                now_ms,
                retention_ms,
            } => {
                let log = &mut logs[partition];
                let before = log.log_start_offset();
                log.apply_retention(now_ms, Some(retention_ms), None);
                prop_assert_eq!(
                    log.apply_retention(now_ms, Some(retention_ms), None),
                    0,
                    "retention is idempotent"
                );
                let after = log.log_start_offset();
                let m = &mut model[partition];
                // Only whole zones whose every batch is older than the retention go.
                for batch in m
                    .batches
                    .iter()
                    .filter(|b| b.base >= before && b.base < after)
                {
                    prop_assert!(
                        batch.max_timestamp_ms < now_ms - retention_ms,
                        "batch {} at {} ms released",
                        batch.base,
                        batch.max_timestamp_ms
                    );
                }
                m.move_start_to_boundary(after)?;
            }
            Op::DeleteRecords { partition, at } => {
                let m = &mut model[partition];
                let target = m.log_start + ((m.durable_end - m.log_start) as f64 * at) as i64;
                let flush = logs[partition]
                    .delete_records(target, 0)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                flush
                    .wait()
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                m.log_start = m.log_start.max(target);
                m.durable_log_start = m.log_start;
                m.durable_end = m.end();
                prop_assert_eq!(logs[partition].log_start_offset(), m.log_start);
            }
            Op::Reopen => {
                broker::pending::block_on(store.settle()).unwrap();
                drop(logs);
                drop(store);
                (store, logs) = open(&device, &generations);
                check_reopened(&logs, &mut model, false)?;
            }
            Op::Delete { partition } => {
                let fresh = partition_id(partition, generations[partition] + 1);
                generations[partition] += 1;
                let old = std::mem::replace(&mut logs[partition], store.create_partition(fresh));
                old.delete();
                model[partition] = ModelPartition::default();
            }
            Op::Gc => {
                store
                    .collect_garbage(0)
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
            }
            Op::Fault {
                partition,
                kind,
                amount,
            } => {
                arm(&control, kind, amount);
                salt += 1;
                let batch = make_batch(2, 3000, 7, salt);
                if let Ok(info) = logs[partition].append(BytesMut::from(&batch[..]), 0) {
                    model[partition].push(&info, &batch);
                    if let Ok(hw) = logs[partition].start_flush().wait() {
                        model[partition].flushed(hw);
                    }
                }
                control.clear();
                // The failed stream refuses work until the store is reopened; nothing
                // acknowledged may be lost by the fault.
                drop(logs);
                drop(store);
                (store, logs) = open(&device, &generations);
                check_reopened(&logs, &mut model, true)?;
            }
            Op::Crash => {
                drop(logs);
                drop(store);
                (store, logs) = open(&device, &generations);
                check_reopened(&logs, &mut model, true)?;
            }
            Op::ReadAcrossGc { partition, at } => {
                let m = &model[partition];
                let offset = m.offset_at(at);
                let plan = logs[partition].read(offset, 1 << 20).unwrap();
                for _ in 0..2 {
                    store
                        .collect_garbage(0)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    broker::pending::block_on(store.settle()).unwrap();
                }
                let batches = plan
                    .wait()
                    .map_err(|e| TestCaseError::fail(format!("a read across GC: {e}")))?;
                check_read(m, offset, 1 << 20, &batches)?;
            }
            Op::TornSeal { partition, lost } => {
                let mode = if lost {
                    WriteFault::Dropped
                } else {
                    WriteFault::Torn
                };
                control.fail_next_seal_write(libc::EIO, mode);
                let failed = control.counts().writes_failed;
                for _ in 0..40 {
                    if control.counts().writes_failed > failed {
                        break;
                    }
                    salt += 1;
                    let batch = make_batch(2, 5000, 9, salt);
                    let info = logs[partition]
                        .append(BytesMut::from(&batch[..]), 0)
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    model[partition].push(&info, &batch);
                    let hw = logs[partition]
                        .start_flush()
                        .wait()
                        .map_err(|e| TestCaseError::fail(e.to_string()))?;
                    model[partition].flushed(hw);
                    // The reclaimer writes the seal once a flush covers the zone's frames.
                    std::thread::sleep(std::time::Duration::from_millis(1));
                }
                for _ in 0..100 {
                    if control.counts().writes_failed > failed {
                        break;
                    }
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                prop_assert!(
                    control.counts().writes_failed > failed,
                    "a zone seal's write failed"
                );
                control.clear();
                drop(logs);
                drop(store);
                (store, logs) = open(&device, &generations);
                check_reopened(&logs, &mut model, true)?;
            }
            Op::Fill { partition } => {
                let mut full = false;
                // One batch appended again and again (made once: debug builds are slow at it).
                salt += 1;
                let batch = make_batch(4, 40_000, 11, salt);
                for _ in 0..400 {
                    let before = logs[partition].log_end_offset();
                    match logs[partition].append(BytesMut::from(&batch[..]), 0) {
                        Ok(info) => model[partition].push(&info, &batch),
                        Err(LogError::Io(error))
                            if error.kind() == std::io::ErrorKind::StorageFull =>
                        {
                            prop_assert_eq!(logs[partition].log_end_offset(), before);
                            full = true;
                            break;
                        }
                        // Zones sealed faster than the reclaimer writes their summaries
                        // hold the active budget for a moment (a retriable error): the
                        // pass writes them.
                        Err(LogError::Io(error))
                            if error.kind() == std::io::ErrorKind::ResourceBusy =>
                        {
                            prop_assert_eq!(logs[partition].log_end_offset(), before);
                            broker::pending::block_on(store.settle()).unwrap();
                        }
                        Err(error) => return Err(TestCaseError::fail(error.to_string())),
                    }
                }
                prop_assert!(full, "the device filled up");
                let hw = logs[partition]
                    .start_flush()
                    .wait()
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                model[partition].flushed(hw);
                // A full device still takes log start frames (reserved zones), once the
                // reclaimer wrote the summaries of the zones the fill sealed (until then they
                // hold the active budget).
                broker::pending::block_on(store.settle()).unwrap();
                let other = (partition + 1) % PARTITIONS;
                let m = &mut model[other];
                let target = m.offset_at(0.5);
                logs[other]
                    .delete_records(target, 0)
                    .and_then(|flush| flush.wait().map(|_| ()))
                    .map_err(|e| {
                        TestCaseError::fail(format!("delete-records on a full device: {e}"))
                    })?;
                m.log_start = m.log_start.max(target);
                m.durable_log_start = m.log_start;
                m.durable_end = m.end();
                // The full partition goes (topic deletion); its zones are reclaimed.
                let fresh = partition_id(partition, generations[partition] + 1);
                generations[partition] += 1;
                let old = std::mem::replace(&mut logs[partition], store.create_partition(fresh));
                old.delete();
                model[partition] = ModelPartition::default();
                broker::pending::block_on(store.settle()).unwrap();
                salt += 1;
                let batch = make_batch(1, 100, 0, salt);
                let info = logs[partition]
                    .append(BytesMut::from(&batch[..]), 0)
                    .map_err(|e| {
                        TestCaseError::fail(format!(
                            "append after the full partition's deletion: {e}"
                        ))
                    })?;
                model[partition].push(&info, &batch);
            }
        }
    }
    Ok(())
}

/// After a reopen: every acknowledged batch is there, unflushed ones may or may not be, but only
/// whole and in order; the model follows what survived.
/// After a crash (`crashed`), a log start recorded since the last flush may be lost.
fn check_reopened(
    logs: &[PartitionLog],
    model: &mut [ModelPartition],
    crashed: bool,
) -> Result<(), TestCaseError> {
    for (partition, m) in model.iter_mut().enumerate() {
        let log = &logs[partition];
        let end = log.log_end_offset();
        prop_assert!(
            end >= m.durable_end && end <= m.end(),
            "partition {}: end {} within [{}, {}]",
            partition,
            end,
            m.durable_end,
            m.end()
        );
        m.batches.retain(|b| b.base < end);
        prop_assert_eq!(m.end(), end.max(m.log_start));
        m.durable_end = end;
        prop_assert_eq!(log.high_watermark(), end);
        if crashed {
            let start = log.log_start_offset();
            prop_assert!(
                start >= m.durable_log_start.min(end) && start <= m.log_start,
                "partition {}: start {} within [{}, {}]",
                partition,
                start,
                m.durable_log_start,
                m.log_start
            );
            m.log_start = start;
        }
        prop_assert_eq!(
            log.log_start_offset(),
            m.log_start,
            "partition {}",
            partition
        );
        m.durable_log_start = m.log_start;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, max_shrink_iters: 2000, ..ProptestConfig::default() })]

    #[test]
    fn log_matches_model(ops in proptest::collection::vec(op(), 1..120)) {
        run(ops)?;
    }
}

#[test]
fn many_partitions_share_few_open_zones() {
    // 1,000 partitions, 14 open zones (a common ZNS drive's limit): every partition writes and
    // flushes in turn, so each flush needs its zone open.
    const PARTITION_COUNT: usize = 1000;
    let geometry = ZoneGeometry {
        zone_size_bytes: 64 << 10,
        zone_capacity_bytes: 64 << 10,
        zone_count: 1100,
        max_open_zones: 14,
        max_active_zones: 1024,
    };
    let device: Arc<dyn ZonedDevice> = Arc::new(MemZonedDevice::new(geometry).unwrap());
    let store = broker::pending::block_on(LogStore::open(device.clone(), config()))
        .unwrap()
        .store;
    let mut logs: Vec<PartitionLog> = (0..PARTITION_COUNT)
        .map(|p| store.create_partition(partition_id(p, 1)))
        .collect();
    for round in 0..3 {
        for (p, log) in logs.iter_mut().enumerate() {
            let batch = make_batch(2, 500, round, p as u64);
            log.append(BytesMut::from(&batch[..]), 0).unwrap();
            log.start_flush().wait().unwrap();
        }
        let open = device
            .report_zones()
            .iter()
            .filter(|z| z.state == broker::zone::ZoneState::Open)
            .count();
        assert!(open <= 14, "{open} zones open");
    }
    drop(logs);
    let recovered = broker::pending::block_on(LogStore::open(device.clone(), config())).unwrap();
    assert_eq!(recovered.partitions.len(), PARTITION_COUNT);
    assert!(recovered
        .partitions
        .iter()
        .all(|log| log.log_end_offset() == 6));
}

#[test]
fn dropped_flush_does_not_fail_the_log() {
    let device: Arc<dyn ZonedDevice> = Arc::new(MemZonedDevice::new(geometry()).unwrap());
    let store = broker::pending::block_on(LogStore::open(device, config()))
        .unwrap()
        .store;
    let mut log = store.create_partition(partition_id(0, 1));
    let batch = make_batch(3, 9000, 5, 1);
    log.append(BytesMut::from(&batch[..]), 0).unwrap();
    drop(log.start_flush());
    log.append(BytesMut::from(&batch[..]), 0).unwrap();
    assert_eq!(log.start_flush().wait().unwrap(), 6);
    assert!(log.failure().is_none());
    assert_eq!(log.read(0, 1).unwrap().wait().unwrap().len(), 1);
}

#[test]
fn cancelled_flush_future_does_not_fail_the_log() {
    use std::future::Future;
    let device: Arc<dyn ZonedDevice> = Arc::new(MemZonedDevice::new(geometry()).unwrap());
    let store = broker::pending::block_on(LogStore::open(device, config()))
        .unwrap()
        .store;
    let mut log = store.create_partition(partition_id(0, 1));
    let batch = make_batch(2, 3000, 5, 1);
    log.append(BytesMut::from(&batch[..]), 0).unwrap();
    let first = log.start_flush();
    log.append(BytesMut::from(&batch[..]), 0).unwrap();
    let second = log.start_flush();
    // The second flush waits for the first: poll it once (it parks on the first's outcome),
    // then cancel it mid-wait, as a dropped request would.
    let mut cancelled = Box::pin(second.complete());
    let mut context = std::task::Context::from_waker(std::task::Waker::noop());
    let polled = cancelled.as_mut().poll(&mut context);
    assert!(polled.is_pending(), "{polled:?}");
    drop(cancelled);
    assert_eq!(first.wait().unwrap(), 2);
    log.append(BytesMut::from(&batch[..]), 0).unwrap();
    assert_eq!(
        log.start_flush().wait().unwrap(),
        6,
        "a later flush confirms everything"
    );
    assert!(log.failure().is_none());
}

/// Two partitions' batches interleaved until a few zones seal, then one partition deleted, so
/// the sealed zones hold the other's runs at about half their capacity: GC victims.
fn half_dead_zones(store: &LogStore) -> (PartitionLog, Vec<Bytes>) {
    let mut kept = store.create_partition(partition_id(0, 1));
    let mut dropped = store.create_partition(partition_id(1, 1));
    let mut batches = Vec::new();
    for salt in 0..24u64 {
        let batch = make_batch(2, 4000, salt as i64, salt);
        let info = kept.append(BytesMut::from(&batch[..]), 0).unwrap();
        batches.push(stored(&batch, info.base_offset));
        dropped
            .append(BytesMut::from(&make_batch(2, 4000, 0, salt + 100)[..]), 0)
            .unwrap();
        kept.start_flush().wait().unwrap();
        dropped.start_flush().wait().unwrap();
    }
    dropped.delete();
    (kept, batches)
}

#[test]
fn a_read_planned_before_gc_reads_what_it_planned() {
    let device: Arc<dyn ZonedDevice> = Arc::new(MemZonedDevice::new(geometry()).unwrap());
    let store = broker::pending::block_on(LogStore::open(device.clone(), config()))
        .unwrap()
        .store;
    let (mut log, batches) = half_dead_zones(&store);
    let zones = log.zone_ids();
    assert!(zones.len() >= 3, "the log spans sealed zones: {zones:?}");
    // Planned from the index (a device read: the read cache holds only the tail), not run yet.
    let plan = log.read(0, 1 << 20).unwrap();
    // GC moves every run out of the planned zones and the reclaimer would reset them.
    for _ in 0..zones.len() * 2 {
        store.collect_garbage(0).unwrap();
        broker::pending::block_on(store.settle()).unwrap();
    }
    let moved: Vec<_> = zones
        .iter()
        .filter(|zone| !log.zone_ids().contains(zone))
        .collect();
    assert!(!moved.is_empty(), "GC moved runs out of {zones:?}");
    for &&zone in &moved {
        assert!(
            store.allocator().readers(zone) > 0,
            "zone {zone} pinned by the plan"
        );
        assert!(
            store.allocator().zone_uses()[zone as usize].is_some(),
            "zone {zone} not reset while a read of it is planned"
        );
    }
    // New appends take free zones, never a pinned one.
    for salt in 0..8u64 {
        let batch = make_batch(2, 4000, 0, 1000 + salt);
        let info = log.append(BytesMut::from(&batch[..]), 0).unwrap();
        log.start_flush().wait().unwrap();
        assert!(!moved.contains(&&info_zone(&log, info.base_offset)));
    }
    let read = plan.wait().expect("a read planned before GC never fails");
    assert!(!read.is_empty());
    for (got, want) in read.iter().zip(&batches) {
        assert_eq!(got, want);
    }
    // Unpinned: the next pass resets them.
    broker::pending::block_on(store.settle()).unwrap();
    for &&zone in &moved {
        assert_eq!(store.allocator().readers(zone), 0);
        assert!(
            store.allocator().zone_uses()[zone as usize].is_none(),
            "zone {zone} reset once unpinned"
        );
    }
    // Read again through the index: the copies.
    let again = log.read(0, 1 << 20).unwrap().wait().unwrap();
    for (got, want) in again.iter().zip(&batches) {
        assert_eq!(got, want);
    }
}

fn info_zone(log: &PartitionLog, offset: i64) -> u32 {
    log.zone_id_for_offset(offset).expect("offset in the log")
}

#[test]
fn reads_racing_gc_and_retention_never_fail_nor_change() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;
    // Active zones to spare: GC forced in a loop seals zones faster than their summaries are
    // written (each sealed zone stays active until then).
    let geometry = ZoneGeometry {
        max_active_zones: 32,
        ..geometry()
    };
    let device: Arc<dyn ZonedDevice> = Arc::new(MemZonedDevice::new(geometry).unwrap());
    let store = Arc::new(
        broker::pending::block_on(LogStore::open(device.clone(), config()))
            .unwrap()
            .store,
    );
    const LOGS: usize = 4;
    // Each log and the batches appended to it (stored bytes by base offset).
    let logs: Arc<Vec<Mutex<(PartitionLog, Vec<Bytes>)>>> = Arc::new(
        (0..LOGS)
            .map(|p| Mutex::new((store.create_partition(partition_id(p, 1)), Vec::new())))
            .collect(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let readers: Vec<_> = (0..2)
        .map(|reader| {
            let (logs, stop, reads) = (logs.clone(), stop.clone(), reads.clone());
            std::thread::spawn(move || {
                let mut turn = reader;
                while !stop.load(Ordering::Relaxed) {
                    turn += 1;
                    let (plan, expected) = {
                        let guard = logs[turn % LOGS].lock().unwrap();
                        let (log, batches) = &*guard;
                        let start = log.log_start_offset();
                        if start >= log.high_watermark() {
                            continue;
                        }
                        let plan = log.read(start, 64 << 10).unwrap();
                        (plan, batches.clone())
                    };
                    // Off the lock, as fetches run: GC and retention go on meanwhile.
                    let read = plan.wait().expect("a read racing GC never fails");
                    assert!(!read.is_empty());
                    for got in read {
                        let base = i64::from_be_bytes(got[0..8].try_into().unwrap());
                        let want = expected
                            .iter()
                            .find(|b| i64::from_be_bytes(b[0..8].try_into().unwrap()) == base)
                            .expect("a batch the log was given");
                        assert_eq!(&got, want, "batch at {base}");
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let collector = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                store.collect_garbage(0).unwrap();
                broker::pending::block_on(store.settle()).unwrap();
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        })
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    let mut salt = 0u64;
    while std::time::Instant::now() < deadline {
        salt += 1;
        let mut guard = logs[salt as usize % LOGS].lock().unwrap();
        let (log, batches) = &mut *guard;
        let batch = make_batch(2, 3000, 0, salt);
        let info = log.append(BytesMut::from(&batch[..]), 0).unwrap();
        batches.push(stored(&batch, info.base_offset));
        log.start_flush().wait().unwrap();
        log.apply_retention(0, None, Some(60 << 10));
    }
    stop.store(true, Ordering::Relaxed);
    for reader in readers {
        reader.join().expect("reader");
    }
    collector.join().expect("collector");
    assert!(
        store.allocator().written_bytes().2 > 0,
        "GC copied runs while reads ran"
    );
    assert!(reads.load(Ordering::Relaxed) > 100, "reads ran");
}
