//! Fault tests of the partition log: a device that fails writes (dropped, torn or written but
//! reported failed), flushes and reads. The error must reach the caller of the flush (or read),
//! the log must refuse further appends until it is reopened, and after a reopen of the
//! underlying device the log must be consistent: every acknowledged batch reads back identical,
//! offsets are contiguous, nothing after a torn region is served, and new appends work and
//! survive another reopen.

use std::sync::Arc;

use broker::log::batch::{self, encode_batch, Compression, SimpleRecord};
use broker::log::{LogConfig, LogError, LogStore, PartitionId, PartitionLog};
use broker::pending::block_on;
use broker::zone::fault::{FaultControl, FaultyZonedDevice, WriteFault};
use broker::zone::file::FileZonedDevice;
use broker::zone::mem::MemZonedDevice;
use broker::zone::{ZoneGeometry, ZonedDevice};
use bytes::{Bytes, BytesMut};

/// Small zones and chunks so a few batches span chunks and zones (and faults hit both).
fn geometry() -> ZoneGeometry {
    ZoneGeometry {
        zone_size_bytes: 64 << 10,
        zone_capacity_bytes: 64 << 10,
        zone_count: 256,
        max_open_zones: 2,
        max_active_zones: 16,
    }
}

fn config() -> LogConfig {
    LogConfig {
        write_chunk_bytes: 16 << 10,
        index_interval_bytes: 2048,
        // Small, so reads go to the device rather than the in-memory cache.
        recent_cache_bytes_max: 8 << 10,
        read_window_bytes: 8 << 10,
    }
}

/// Largest value a test batch carries: below a zone's capacity, above a write chunk.
const VALUE_BYTES_MAX: usize = 40 << 10;
/// Bounds the steps of one scenario (each appends a few batches and flushes).
const STEPS_MAX: usize = 40;

fn partition_id() -> PartitionId {
    PartitionId {
        topic: "faults".into(),
        topic_id: [7; 16],
        partition: 0,
    }
}

/// A small deterministic generator: no dependency, reproducible from the printed seed.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
    fn below(&mut self, bound: u64) -> u64 {
        assert!(bound > 0);
        self.next() % bound
    }
}

/// A valid v2 batch of 1..=3 records with `value_bytes` in all, its content derived from `salt`.
fn make_batch(salt: u64, value_bytes: usize) -> Vec<u8> {
    assert!(value_bytes <= VALUE_BYTES_MAX);
    let records = 1 + (salt % 3) as usize;
    let records: Vec<SimpleRecord> = (0..records)
        .map(|i| {
            let value: Vec<u8> = (0..value_bytes / records)
                .map(|j| (salt as usize).wrapping_mul(31).wrapping_add(i * 7 + j) as u8)
                .collect();
            SimpleRecord::new(
                Some(&salt.to_be_bytes()),
                Some(&value),
                &[],
                1_000 + i as i64,
            )
        })
        .collect();
    encode_batch(&records, Compression::None).unwrap()
}

/// One appended batch as the log stores it (base offset rewritten).
#[derive(Clone, Debug)]
struct Appended {
    base: i64,
    last: i64,
    bytes: Bytes,
}

fn append(log: &mut PartitionLog, salt: u64, value_bytes: usize) -> Result<Appended, LogError> {
    let batch = make_batch(salt, value_bytes);
    let info = log.append(BytesMut::from(&batch[..]), 0)?;
    let mut stored = batch;
    batch::set_base_offset(&mut stored, info.base_offset).unwrap();
    Ok(Appended {
        base: info.base_offset,
        last: info.last_offset,
        bytes: Bytes::from(stored),
    })
}

/// Recovers the device; returns the store and the test partition (created if absent).
fn open(device: &Arc<dyn ZonedDevice>) -> (LogStore, PartitionLog) {
    let recovered = block_on(LogStore::open(device.clone(), config())).expect("recovery");
    assert!(recovered.partitions.len() <= 1);
    let store = recovered.store;
    let log = recovered
        .partitions
        .into_iter()
        .next()
        .unwrap_or_else(|| store.create_partition(partition_id()));
    (store, log)
}

/// Every batch the log serves, from its start to its high watermark.
fn read_all(log: &PartitionLog) -> Vec<Bytes> {
    let mut served = Vec::new();
    let mut offset = log.log_start_offset();
    // Bounded: each read returns at least one batch, and the log holds fewer than this.
    for _ in 0..100_000 {
        if offset >= log.high_watermark() {
            return served;
        }
        let batches = log.read(offset, 64 << 10).unwrap().wait().unwrap();
        assert!(!batches.is_empty(), "no batch at offset {offset}");
        for bytes in batches {
            let header = batch::parse_header(&bytes).unwrap();
            assert_eq!(header.base_offset, offset, "offsets are contiguous");
            offset = header.last_offset() + 1;
            served.push(bytes);
        }
    }
    panic!("read_all did not reach the high watermark");
}

/// After a reopen: the log serves a prefix of `appended` that includes every acknowledged
/// batch, byte for byte, and nothing else. Returns how many batches it serves.
fn check_consistent(
    log: &PartitionLog,
    acked: usize,
    appended: &[Appended],
    context: &str,
) -> usize {
    assert_eq!(log.failure(), None, "{context}: reopened log is healthy");
    assert_eq!(log.log_start_offset(), 0, "{context}");
    assert_eq!(
        log.high_watermark(),
        log.log_end_offset(),
        "{context}: recovered data is durable"
    );
    let served = read_all(log);
    assert!(
        served.len() >= acked,
        "{context}: {} batches served but {acked} were acknowledged",
        served.len()
    );
    assert!(
        served.len() <= appended.len(),
        "{context}: {} batches served but only {} appended",
        served.len(),
        appended.len()
    );
    for (index, (got, want)) in served.iter().zip(appended).enumerate() {
        assert_eq!(
            got, &want.bytes,
            "{context}: batch {index} at offset {}",
            want.base
        );
    }
    let end = served
        .len()
        .checked_sub(1)
        .map_or(0, |last| appended[last].last + 1);
    assert_eq!(
        log.log_end_offset(),
        end,
        "{context}: log end follows the served batches"
    );
    served.len()
}

/// The log after a storage error: every later operation reports the failure.
fn assert_failed(log: &mut PartitionLog, context: &str) {
    assert!(
        log.failure().is_some(),
        "{context}: log records its failure"
    );
    let result = log.append(BytesMut::from(&make_batch(1, 10)[..]), 0);
    assert!(
        matches!(result, Err(LogError::Failed(_))),
        "{context}: append after failure: {result:?}"
    );
    assert!(
        matches!(log.start_flush().wait(), Err(LogError::Failed(_))),
        "{context}: flush after failure"
    );
    assert!(
        matches!(log.read(0, 1024), Err(LogError::Failed(_))),
        "{context}: read after failure"
    );
}

/// After the check: new appends are accepted, acknowledged, and survive another reopen.
fn assert_accepts_new_appends(
    device: &Arc<dyn ZonedDevice>,
    mut log: PartitionLog,
    store: LogStore,
    served: usize,
    appended: &[Appended],
    salt: u64,
    context: &str,
) {
    let mut expected: Vec<Appended> = appended[..served].to_vec();
    for i in 0..3u64 {
        let batch = append(&mut log, salt + i, 3000 + 9000 * i as usize).unwrap();
        assert_eq!(
            batch.base,
            expected.last().map_or(0, |b| b.last + 1),
            "{context}"
        );
        expected.push(batch);
    }
    let high_watermark = log.start_flush().wait().unwrap();
    assert_eq!(
        high_watermark,
        expected.last().unwrap().last + 1,
        "{context}"
    );
    block_on(store.settle()).unwrap();
    drop(log);
    drop(store);
    let (_store, log) = open(device);
    let count = check_consistent(&log, expected.len(), &expected, context);
    assert_eq!(
        count,
        expected.len(),
        "{context}: every batch after the reopen"
    );
}

/// Appends and flushes on a faulty device until an armed fault fails a flush (or the steps run
/// out). Returns (acknowledged count, every appended batch, whether a fault was hit).
fn run_until_fault(
    log: &mut PartitionLog,
    rng: &mut XorShift,
    flush_fault_at: Option<(usize, &FaultControl)>,
) -> (usize, Vec<Appended>, bool) {
    let mut appended: Vec<Appended> = Vec::new();
    let mut acked = 0;
    for step in 0..STEPS_MAX {
        for _ in 0..1 + rng.below(3) {
            let value_bytes = if rng.below(4) == 0 {
                1 + rng.below(VALUE_BYTES_MAX as u64)
            } else {
                1 + rng.below(3000)
            } as usize;
            match append(log, rng.next(), value_bytes) {
                Ok(batch) => appended.push(batch),
                // A failed write seen early (the mem backend completes writes at once).
                Err(LogError::Failed(_)) => return (acked, appended, true),
                Err(error) => panic!("append: unexpected error {error}"),
            }
        }
        if let Some((at, control)) = flush_fault_at {
            if at == step {
                control.fail_next_flush(libc::EIO);
            }
        }
        match log.start_flush().wait() {
            Ok(high_watermark) => {
                assert_eq!(high_watermark, appended.last().unwrap().last + 1);
                acked = appended.len();
            }
            Err(LogError::Failed(message)) => {
                assert!(
                    message.contains("injected") || message.contains("write pointer"),
                    "the cause reaches the caller: {message}"
                );
                return (acked, appended, true);
            }
            Err(error) => panic!("flush: unexpected error kind {error}"),
        }
    }
    (acked, appended, false)
}

fn mem_device() -> Arc<dyn ZonedDevice> {
    Arc::new(MemZonedDevice::new(geometry()).unwrap())
}

fn faulty(inner: &Arc<dyn ZonedDevice>) -> (Arc<dyn ZonedDevice>, FaultControl) {
    let (device, control) = FaultyZonedDevice::new(inner.clone());
    (Arc::new(device), control)
}

/// One scenario on `inner`: some acknowledged batches, then the fault armed by `arm`, then a
/// reopen of `reopen()` (the inner device, or a fresh open of its file) and the checks.
fn scenario(
    inner: Arc<dyn ZonedDevice>,
    reopen: impl Fn(Arc<dyn ZonedDevice>) -> Arc<dyn ZonedDevice>,
    seed: u64,
    arm: impl FnOnce(&FaultControl, &mut XorShift) -> Option<usize>,
    context: &str,
) -> bool {
    let mut rng = XorShift::new(seed);
    let (device, control) = faulty(&inner);
    let (store, mut log) = open(&device);
    // Acknowledged data before any fault is armed.
    let mut appended = Vec::new();
    for _ in 0..1 + rng.below(4) {
        appended.push(append(&mut log, rng.next(), 1 + rng.below(20_000) as usize).unwrap());
    }
    log.start_flush().wait().unwrap();
    let flush_fault_at = arm(&control, &mut rng);
    let (acked, more, hit) =
        run_until_fault(&mut log, &mut rng, flush_fault_at.map(|at| (at, &control)));
    let acked = appended.len() + acked;
    appended.extend(more);
    if hit {
        assert_failed(&mut log, context);
        assert!(
            control.counts().writes_failed + control.counts().flushes_failed > 0,
            "{context}"
        );
    }
    // The wrapped device and everything holding it go before the reopen.
    drop(log);
    drop(store);
    drop(device);
    let inner = reopen(inner);
    let (store, log) = open(&inner);
    let served = check_consistent(&log, acked, &appended, context);
    assert_accepts_new_appends(&inner, log, store, served, &appended, seed << 8, context);
    hit
}

fn same(device: Arc<dyn ZonedDevice>) -> Arc<dyn ZonedDevice> {
    device
}

#[test]
fn write_error_reaches_the_flush_and_fails_the_log_in_every_flavour() {
    for mode in [WriteFault::Dropped, WriteFault::Torn, WriteFault::Written] {
        for writes_ok in 0..4 {
            let context = format!("{mode:?} after {writes_ok} writes");
            let hit = scenario(
                mem_device(),
                same,
                11 + writes_ok,
                |control, _| {
                    control.fail_write_in(writes_ok, libc::EIO, mode);
                    None
                },
                &context,
            );
            assert!(hit, "{context}: the fault was hit");
        }
    }
}

#[test]
fn torn_write_followed_by_valid_writes_serves_nothing_after_the_tear() {
    // A torn chunk write followed, within the same append, by a whole write after it: recovery
    // must stop at the tear and serve none of the later (valid) frames.
    let inner = mem_device();
    let (device, control) = faulty(&inner);
    let (store, mut log) = open(&device);
    let mut appended = vec![append(&mut log, 1, 500).unwrap()];
    log.start_flush().wait().unwrap();
    // The flush left the tail empty at block 1. A 10 KiB batch stays in the 16 KiB tail; the
    // 40 KiB batch after it does not fit, so the append first submits the tail's two whole
    // blocks (torn: only the first keeps its data), then the large frame as a second write that
    // lands whole after the tear.
    control.fail_write_in(0, libc::EIO, WriteFault::Torn);
    appended.push(append(&mut log, 2, 10 << 10).unwrap());
    let written_before_bytes = control.written_bytes();
    appended.push(append(&mut log, 3, VALUE_BYTES_MAX).unwrap());
    assert_eq!(
        control.counts().writes_failed,
        1,
        "the tail's write was torn"
    );
    assert!(
        control.written_bytes() > written_before_bytes,
        "a write landed after the tear"
    );
    let error = log.start_flush().wait().unwrap_err();
    assert!(
        matches!(&error, LogError::Failed(message) if message.contains("injected write fault")),
        "{error}"
    );
    assert_failed(&mut log, "torn");
    drop((log, store, device));
    let (store, log) = open(&inner);
    let served = check_consistent(&log, 1, &appended, "torn");
    assert_eq!(served, 1, "only the acknowledged batch survives the tear");
    assert_accepts_new_appends(&inner, log, store, served, &appended, 100, "torn");
}

#[test]
fn flush_error_reaches_the_caller_and_fails_the_log() {
    for at in 0..3 {
        let context = format!("flush fault at step {at}");
        let hit = scenario(
            mem_device(),
            same,
            21 + at as u64,
            |_, _| Some(at),
            &context,
        );
        assert!(hit, "{context}: the fault was hit");
    }
}

#[test]
fn read_errors_reach_the_reader_and_recovery() {
    let inner = mem_device();
    let (device, control) = faulty(&inner);
    let (store, mut log) = open(&device);
    let mut appended = Vec::new();
    for salt in 0..6 {
        appended.push(append(&mut log, salt, 10 << 10).unwrap());
    }
    log.start_flush().wait().unwrap();
    control.fail_reads(libc::EIO);
    // Offset 0 left the small in-memory cache: the read goes to the device and fails.
    let result = log.read(0, 1 << 20).unwrap().wait();
    assert!(
        matches!(&result, Err(LogError::Io(error)) if error.to_string().contains("injected read fault")),
        "{:?}",
        result.map(|b| b.len())
    );
    // Recovery reads every zone: the error reaches the caller of open, not a panic.
    let reopened = block_on(LogStore::open(device.clone(), config()));
    assert!(
        matches!(&reopened, Err(LogError::Io(_))),
        "open with failing reads"
    );
    drop(reopened);
    control.clear();
    assert_eq!(
        read_all(&log).len(),
        appended.len(),
        "reads work again once the device does"
    );
    drop((log, store, device));
    let (_store, log) = open(&inner);
    check_consistent(&log, appended.len(), &appended, "read faults");
}

#[test]
fn torn_write_on_the_file_device_then_reopen_of_the_file() {
    let dir = tempfile::Builder::new()
        .prefix("log-faults")
        .tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap();
    let io = broker::uring::IoBackendChoice::Auto;
    for (round, mode) in [WriteFault::Torn, WriteFault::Dropped, WriteFault::Written]
        .into_iter()
        .enumerate()
    {
        // A fresh device per flavour: the checks expect a log that starts empty.
        let path = dir.path().join(format!("zones-{round}.img"));
        let inner: Arc<dyn ZonedDevice> =
            Arc::new(FileZonedDevice::open_or_create(&path, geometry(), io).unwrap());
        let context = format!("file device, {mode:?}");
        // The file is reopened from disk: write pointers come from its extents, as after a crash.
        let reopen = |device: Arc<dyn ZonedDevice>| -> Arc<dyn ZonedDevice> {
            assert_eq!(
                Arc::strong_count(&device),
                1,
                "nothing else holds the device file open"
            );
            drop(device);
            Arc::new(FileZonedDevice::open(&path, io).unwrap())
        };
        let hit = scenario(
            inner,
            reopen,
            31 + round as u64,
            |control, _| {
                control.fail_write_in(1, libc::EIO, mode);
                None
            },
            &context,
        );
        assert!(hit, "{context}: the fault was hit");
    }
}

/// Iterations of the randomised fault test: bounded to keep the test under a few seconds.
const RANDOM_ITERATIONS: u64 = 150;

#[test]
fn random_fault_points_leave_a_consistent_log() {
    let modes = [WriteFault::Dropped, WriteFault::Torn, WriteFault::Written];
    let mut hits = 0;
    for seed in 0..RANDOM_ITERATIONS {
        let mut picker = XorShift::new(seed ^ 0xFA17);
        let kind = picker.below(3);
        let mode = modes[picker.below(3) as usize];
        let errno = [libc::EIO, libc::ENOSPC][picker.below(2) as usize];
        let amount = picker.below(12);
        let bytes = picker.below(400 << 10);
        let context = format!(
            "seed {seed}: kind {kind} mode {mode:?} errno {errno} amount {amount} bytes {bytes}"
        );
        let hit = scenario(
            mem_device(),
            same,
            seed,
            |control, _| match kind {
                0 => {
                    control.fail_write_in(amount, errno, mode);
                    None
                }
                1 => {
                    control.fail_writes_after_bytes(bytes, errno, mode);
                    None
                }
                _ => Some(amount as usize),
            },
            &context,
        );
        hits += u64::from(hit);
    }
    // Most fault points lie within the steps a scenario runs; a few may not, which is fine.
    assert!(
        hits > RANDOM_ITERATIONS * 2 / 3,
        "only {hits} of {RANDOM_ITERATIONS} scenarios hit their fault"
    );
}
