//! `yottastore bench storage`: partition-log append throughput and reopen time, each printed
//! beside the raw O_DIRECT bandwidth of the same file system measured in the same run.
//!
//! Every measurement runs for each I/O backend (io_uring and the pwritev fallback), `--runs`
//! times, interleaved (run 1 of everything, then run 2, ...) so slow drift of a shared machine
//! hits every row alike. The table prints the median and the spread (min..max); ratios are the
//! median of per-run ratios, each against the raw figure of the same run and backend.
//!
//! The raw limits, written through the same `IoDriver` into a file created (O_DIRECT, fully
//! preallocated with fallocate) exactly as the zoned device file is:
//! - `raw sync/MiB`: 1 MiB writes at queue depth 1 with an fdatasync after each MiB. This is the
//!   limit of an acks=all producer flushing every MiB, the policy of both single-partition
//!   append rows, so their ratio is taken against it.
//! - `raw stream`: up to 8 x 1 MiB writes in flight, one fdatasync at the end: what the disk can
//!   take when nobody waits for durability in between (the limit for group commit).
//!
//! Reopen (`--reopen-gib`, default 10): a log of that size is written once, then reopened
//! `--runs` times per backend, each time beside a raw sequential read rate measured just
//! before it; the time is printed beside what reading all of the log at that rate would take
//! (recovery reads sealed zones' summaries, not their frames). The log is deleted before the
//! other measurements. GC write amplification: 64 partitions with retention on a device half
//! their size, bytes written to the device per byte appended.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use broker::buf::AlignedBuf;
use broker::log::batch::{encode_batch, Compression, SimpleRecord};
use broker::log::{LogError, PartitionId, PartitionLog};
use broker::pending::Pending;
use broker::storage::StorageConfig;
use broker::uring::{IoBackendChoice, IoBackendKind, IoDriver, IoStats, QUEUE_DEPTH_MIN};
use broker::zone::file::{FileZonedDevice, DATA_OFFSET_BYTES};
use broker::zone::ZoneGeometry;
use clap::{Args, ValueEnum};

const MIB: usize = 1 << 20;
const ZONE_BYTES: u64 = 64 << 20;
/// Writes (or reads) in flight in the streaming raw measurements.
pub(crate) const RAW_QUEUE_DEPTH: usize = 8;
/// Batch sizes of the two single-partition append rows.
const BIG_BATCH_BYTES: usize = MIB;
const SMALL_BATCH_BYTES: usize = 16 << 10;
/// Record value size inside the benchmark batches (a typical event).
const RECORD_VALUE_BYTES: usize = 1000;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum IoSelection {
    /// io_uring and the pwritev fallback.
    Both,
    /// io_uring only.
    #[value(name = "io_uring", alias = "io-uring", alias = "uring")]
    IoUring,
    /// The pwritev fallback only.
    #[value(alias = "pwritev")]
    Sync,
}

#[derive(Args)]
pub struct StorageBenchArgs {
    /// Where to write (a fresh subdirectory is made inside it). Default: ./bench-data, else
    /// $TMPDIR. Must be on the file system you want to measure (not tmpfs: O_DIRECT).
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the benchmark's files instead of deleting them at the end.
    #[arg(long)]
    keep: bool,
    /// MiB written by each measurement.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(16..=1 << 20))]
    total_mib: u64,
    /// Repetitions of every measurement; the median is reported.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    runs: u32,
    /// I/O backends to measure.
    #[arg(long, value_enum, default_value_t = IoSelection::Both)]
    io: IoSelection,
    /// Size in GiB of the log whose reopen (recovery) is timed; 0 skips it. The log is written
    /// once, reopened `--runs` times per backend (each beside a raw sequential read of the same
    /// file system), and deleted before the other measurements start.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=1024))]
    reopen_gib: u64,
    /// Partitions appending 1 MiB batches concurrently, each flushing every batch, to show group
    /// commit; 0 skips it.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(0..=64))]
    partitions: u32,
}

pub fn run(args: StorageBenchArgs) -> anyhow::Result<()> {
    let work = super::limits::WorkDir::create(args.dir.as_deref(), args.keep, "storage-bench")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let backends = backends(args.io, work.path())?;
    let big = BenchBatch::build(BIG_BATCH_BYTES)?;
    let small = BenchBatch::build(SMALL_BATCH_BYTES)?;
    let total_bytes = args.total_mib << 20;
    let big_count = total_bytes.div_ceil(big.bytes.len() as u64);
    let small_count = total_bytes.div_ceil(small.bytes.len() as u64);
    let small_per_flush = (MIB / small.bytes.len()).max(1) as u64;
    let partitions = u64::from(args.partitions);
    let pattern = Arc::new(random_bytes(MIB, 0x5eed));

    println!(
        "storage bench: dir={} fs={} total={} MiB runs={} (median [min..max])",
        work.path().display(),
        file_system_of(work.path()),
        args.total_mib,
        args.runs
    );
    println!(
        "batches: {} B ({} records) and {} B ({} records) of {} B values, uncompressed Kafka v2; \
         64 MiB zones",
        big.bytes.len(),
        big.records,
        small.bytes.len(),
        small.records,
        RECORD_VALUE_BYTES
    );
    println!(
        "raw limits: 'sync/MiB' = 1 MiB O_DIRECT writes at queue depth 1 with fdatasync after each \
         MiB (the flush policy of the single-partition append rows: their ratio uses it); \
         'stream' = {RAW_QUEUE_DEPTH} x 1 MiB in flight, one fdatasync at the end"
    );

    println!("{}", cpu_costs(&big.bytes));

    let mut results: Vec<BackendResults> = backends
        .iter()
        .map(|&kind| BackendResults::new(kind))
        .collect();
    if args.reopen_gib > 0 {
        reopen_phase(&runtime, &args, work.path(), &big, &pattern, &mut results)?;
    }
    for run in 0..args.runs {
        for results in results.iter_mut() {
            let kind = results.kind;
            let choice = choice_of(kind);
            eprintln!(
                "run {}/{} {kind}: raw write, sync per MiB...",
                run + 1,
                args.runs
            );
            let raw_path = work.path().join("raw.img");
            let raw_sync = {
                let driver = raw_device(&raw_path, args.total_mib, choice)?;
                let elapsed =
                    runtime.block_on(raw_write(driver, args.total_mib, pattern.clone(), true))?;
                remove_file(&raw_path)?;
                mb_per_s(total_bytes, elapsed)
            };
            results.raw_sync.push(raw_sync);

            eprintln!(
                "run {}/{} {kind}: raw write, streaming; raw read...",
                run + 1,
                args.runs
            );
            let raw_stream = {
                let (write, read) =
                    raw_write_read(&runtime, &raw_path, args.total_mib, choice, &pattern)?;
                results.raw_read.push(mb_per_s(total_bytes, read));
                mb_per_s(total_bytes, write)
            };
            results.raw_stream.push(raw_stream);

            eprintln!(
                "run {}/{} {kind}: append 1 MiB batches...",
                run + 1,
                args.runs
            );
            let dir = work.path().join("append-big");
            let bytes = big.bytes.clone();
            let outcome = {
                let dir = dir.clone();
                runtime.block_on(async move {
                    tokio::spawn(
                        async move { append_single(&dir, choice, &bytes, big_count, 1).await },
                    )
                    .await?
                })?
            };
            remove_dir(&dir)?;
            results.append_big.record(&outcome, raw_sync, raw_stream);

            eprintln!(
                "run {}/{} {kind}: append 16 KiB batches...",
                run + 1,
                args.runs
            );
            let dir = work.path().join("append-small");
            let bytes = small.bytes.clone();
            let outcome = {
                let dir = dir.clone();
                runtime.block_on(async move {
                    tokio::spawn(async move {
                        append_single(&dir, choice, &bytes, small_count, small_per_flush).await
                    })
                    .await?
                })?
            };
            remove_dir(&dir)?;
            results.append_small.record(&outcome, raw_sync, raw_stream);

            if partitions > 0 {
                eprintln!(
                    "run {}/{} {kind}: {partitions} partitions...",
                    run + 1,
                    args.runs
                );
                let dir = work.path().join("append-multi");
                let per_partition = big_count.div_ceil(partitions);
                let outcome = runtime.block_on(append_multi(
                    &dir,
                    choice,
                    big.bytes.clone(),
                    partitions,
                    per_partition,
                ))?;
                remove_dir(&dir)?;
                results.append_multi.record(&outcome, raw_sync, raw_stream);
            }

            eprintln!(
                "run {}/{} {kind}: garbage collection churn...",
                run + 1,
                args.runs
            );
            let dir = work.path().join("gc-churn");
            let bytes = big.bytes.clone();
            let gc_bytes = 2 * u64::from(GC_ZONES) * GC_ZONE_BYTES;
            let gc = {
                let dir = dir.clone();
                runtime.block_on(async move {
                    tokio::spawn(async move { gc_churn(&dir, choice, &bytes, gc_bytes).await })
                        .await?
                })?
            };
            remove_dir(&dir)?;
            results.gc_write_amplification.push(gc.write_amplification);
            results
                .gc_copied_mib
                .push(gc.copied_bytes as f64 / MIB as f64);
            results.gc_mb_per_s.push(gc.appended_mb_per_s);
        }
    }
    drop(runtime);

    println!();
    println!(
        "{:<9} {:<44} {:>7} {:>15} {:>9} {:>9}",
        "backend", "measurement", "MB/s", "[min..max]", "vs sync", "vs stream"
    );
    for results in &results {
        results.print(args.partitions);
    }
    if args.reopen_gib > 0 {
        println!();
        for results in &results {
            results.print_reopen(args.reopen_gib);
        }
    }
    println!();
    for results in &results {
        results.print_gc();
    }
    println!();
    println!(
        "copy = BytesMut built from the encoded batch per append (append takes it by value); \
         append = PartitionLog::append (validate + CRC + copy into the tail); flush wait = \
         awaiting start_flush().complete()"
    );
    Ok(())
}

fn remove_file(path: &Path) -> anyhow::Result<()> {
    std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))
}

fn remove_dir(path: &Path) -> anyhow::Result<()> {
    std::fs::remove_dir_all(path).with_context(|| format!("removing {}", path.display()))
}

/// The backends to measure; io_uring is probed so `both` degrades to the fallback with a note.
fn backends(selection: IoSelection, dir: &Path) -> anyhow::Result<Vec<IoBackendKind>> {
    let uring = || -> std::io::Result<()> {
        let file = std::fs::File::open(dir)?;
        IoDriver::start(file, IoBackendChoice::IoUring, QUEUE_DEPTH_MIN).map(drop)
    };
    Ok(match selection {
        IoSelection::Sync => vec![IoBackendKind::Sync],
        IoSelection::IoUring => {
            uring().context("io_uring is not available here")?;
            vec![IoBackendKind::IoUring]
        }
        IoSelection::Both => {
            match uring() {
                Ok(()) => vec![IoBackendKind::IoUring, IoBackendKind::Sync],
                Err(error) => {
                    println!("note: io_uring is not available here ({error}); measuring the fallback only");
                    vec![IoBackendKind::Sync]
                }
            }
        }
    })
}

fn choice_of(kind: IoBackendKind) -> IoBackendChoice {
    match kind {
        IoBackendKind::IoUring => IoBackendChoice::IoUring,
        IoBackendKind::Sync => IoBackendChoice::Sync,
    }
}

/// One encoded batch, appended again and again (`append` rewrites only its base offset).
struct BenchBatch {
    bytes: Arc<Vec<u8>>,
    records: usize,
}

impl BenchBatch {
    /// A batch of exactly `target_bytes` (the last record's value absorbs the difference).
    fn build(target_bytes: usize) -> anyhow::Result<BenchBatch> {
        let now = now_ms();
        let value = random_bytes(RECORD_VALUE_BYTES, target_bytes as u64);
        let mut count = (target_bytes / (RECORD_VALUE_BYTES + 16)).max(1);
        let mut last_bytes = RECORD_VALUE_BYTES;
        let mut closest: Option<(Vec<u8>, usize)> = None;
        for _ in 0..16 {
            let mut records: Vec<SimpleRecord> = (0..count - 1)
                .map(|_| SimpleRecord::new(None, Some(&value), &[], now))
                .collect();
            let last = random_bytes(last_bytes, 7);
            records.push(SimpleRecord::new(None, Some(&last), &[], now));
            let encoded = encode_batch(&records, Compression::None)?;
            if encoded.len() == target_bytes {
                return Ok(BenchBatch {
                    bytes: Arc::new(encoded),
                    records: count,
                });
            }
            if encoded.len() < target_bytes
                && closest
                    .as_ref()
                    .is_none_or(|(best, _)| best.len() < encoded.len())
            {
                closest = Some((encoded.clone(), count));
            }
            let next = last_bytes as i64 + target_bytes as i64 - encoded.len() as i64;
            if next < 0 {
                count -= 1;
                last_bytes = RECORD_VALUE_BYTES;
            } else if next as usize > 4 * RECORD_VALUE_BYTES {
                count += 1;
                last_bytes = RECORD_VALUE_BYTES;
            } else {
                last_bytes = next as usize;
            }
        }
        match closest {
            Some((bytes, records)) => Ok(BenchBatch {
                bytes: Arc::new(bytes),
                records,
            }),
            None => bail!("could not encode a batch of {target_bytes} bytes"),
        }
    }
}

pub(crate) fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

pub(crate) fn mb_per_s(bytes: u64, elapsed: Duration) -> f64 {
    bytes as f64 / 1e6 / elapsed.as_secs_f64().max(1e-9)
}

// ---------------------------------------------------------------------------------------------
// Raw O_DIRECT bandwidth
// ---------------------------------------------------------------------------------------------

/// A raw streaming write of `total_mib` to a new file at `path`, then a sequential read of it
/// (the file is removed after): how long each took.
pub(crate) fn raw_write_read(
    runtime: &tokio::runtime::Runtime,
    path: &Path,
    total_mib: u64,
    choice: IoBackendChoice,
    pattern: &Arc<Vec<u8>>,
) -> anyhow::Result<(Duration, Duration)> {
    let driver = raw_device(path, total_mib, choice)?;
    let write = runtime.block_on(raw_write(driver.clone(), total_mib, pattern.clone(), false))?;
    let read = runtime.block_on(raw_read(driver, total_mib, pattern.clone()))?;
    remove_file(path)?;
    Ok((write, read))
}

/// A file made exactly as the zoned device makes its file (O_DIRECT, preallocated with
/// fallocate, superblock), driven past the zone table through its `IoDriver`.
pub(crate) fn raw_device(
    path: &Path,
    total_mib: u64,
    choice: IoBackendChoice,
) -> anyhow::Result<IoDriver> {
    let zone_count = ((total_mib << 20).div_ceil(ZONE_BYTES)) as u32;
    let device = FileZonedDevice::create(path, geometry(zone_count, 1), choice)?;
    // The driver handle keeps the storage thread (and the file) alive on its own.
    Ok(device.driver().clone())
}

/// Writes `total_mib` sequentially in 1 MiB O_DIRECT writes: with `sync_each`, one at a time
/// with an fdatasync after each; else up to `RAW_QUEUE_DEPTH` in flight and one fdatasync at
/// the end. The time includes the final sync.
pub(crate) async fn raw_write(
    driver: IoDriver,
    total_mib: u64,
    pattern: Arc<Vec<u8>>,
    sync_each: bool,
) -> anyhow::Result<Duration> {
    let mut free: Vec<AlignedBuf> = (0..RAW_QUEUE_DEPTH)
        .map(|_| {
            let mut buf = AlignedBuf::with_capacity(MIB);
            buf.extend_from_slice(&pattern);
            buf
        })
        .collect();
    let mut in_flight: VecDeque<Pending<AlignedBuf>> = VecDeque::new();
    let started = Instant::now();
    for mib in 0..total_mib {
        let offset = DATA_OFFSET_BYTES + (mib << 20);
        if sync_each {
            let buf = free.pop().expect("one buffer in use at a time");
            free.push(driver.write_at(offset, buf).await?);
            driver.sync_data().await?;
            continue;
        }
        if free.is_empty() {
            let oldest = in_flight.pop_front().expect("queue full");
            free.push(oldest.await?);
        }
        in_flight.push_back(driver.write_at(offset, free.pop().expect("a free buffer")));
    }
    for write in in_flight {
        write.await?;
    }
    driver.sync_data().await?;
    Ok(started.elapsed())
}

/// Reads back what `raw_write` wrote, 1 MiB at a time with `RAW_QUEUE_DEPTH` reads in flight.
pub(crate) async fn raw_read(
    driver: IoDriver,
    total_mib: u64,
    pattern: Arc<Vec<u8>>,
) -> anyhow::Result<Duration> {
    let mut free: Vec<AlignedBuf> = (0..RAW_QUEUE_DEPTH)
        .map(|_| AlignedBuf::with_capacity(MIB))
        .collect();
    let mut in_flight: VecDeque<Pending<AlignedBuf>> = VecDeque::new();
    let mut checked = false;
    let started = Instant::now();
    let mut next = 0u64;
    while next < total_mib || !in_flight.is_empty() {
        if next < total_mib && !free.is_empty() {
            let buf = free.pop().expect("non-empty");
            in_flight.push_back(driver.read_at(DATA_OFFSET_BYTES + (next << 20), buf, MIB));
            next += 1;
            continue;
        }
        let buf = in_flight.pop_front().expect("non-empty").await?;
        if !checked {
            anyhow::ensure!(
                buf[..] == pattern[..],
                "raw read returned other bytes than written"
            );
            checked = true;
        }
        free.push(buf);
    }
    Ok(started.elapsed())
}

/// CPU costs of the work `PartitionLog::append` and recovery do per 1 MiB, measured in isolation
/// (medians of 32), to explain the gap between the append rows and the raw limit.
fn cpu_costs(batch: &[u8]) -> String {
    fn time_us(mut work: impl FnMut()) -> f64 {
        work(); // warm up
        let samples: Vec<f64> = (0..32)
            .map(|_| {
                let started = Instant::now();
                work();
                started.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        median(&samples)
    }
    let validate = time_us(|| {
        std::hint::black_box(broker::log::batch::validate(std::hint::black_box(batch)).is_ok());
    });
    let mut reused = AlignedBuf::with_capacity(2 * batch.len());
    let copy = time_us(|| {
        reused.set_len(0);
        reused.extend_from_slice(std::hint::black_box(batch));
    });
    let fresh_chunk = time_us(|| {
        let mut buf = AlignedBuf::with_capacity(2 * batch.len());
        buf.extend_from_slice(batch);
        std::hint::black_box(&buf);
    });
    let fresh_zone_ms = time_us(|| {
        std::hint::black_box(AlignedBuf::with_capacity(ZONE_BYTES as usize));
    }) / 1e3;
    format!(
        "cpu per {} B batch (median of 32, in isolation): validate (CRC-32C + record walk) {validate:.0} us, \
         copy into a reused buffer {copy:.0} us, fresh zeroed 2x AlignedBuf + copy + free {fresh_chunk:.0} us; \
         fresh zeroed 64 MiB read buffer (recovery, per zone) {fresh_zone_ms:.1} ms",
        batch.len()
    )
}

// ---------------------------------------------------------------------------------------------
// Appends through PartitionLog
// ---------------------------------------------------------------------------------------------

fn geometry(zone_count: u32, max_active_extra: u32) -> ZoneGeometry {
    geometry_sized(ZONE_BYTES, zone_count, max_active_extra)
}

fn geometry_sized(zone_bytes: u64, zone_count: u32, max_active_extra: u32) -> ZoneGeometry {
    ZoneGeometry {
        zone_size_bytes: zone_bytes,
        zone_capacity_bytes: zone_bytes,
        zone_count,
        max_open_zones: 14.min(zone_count),
        max_active_zones: zone_count.max(max_active_extra),
    }
}

/// Zones for `batches` batches of `batch_bytes` spread over `partitions` partitions, with slack
/// for the zone header, frame and flush padding, and a partly filled last zone per partition.
fn zones_needed(batch_bytes: usize, batches: u64, _partitions: u64) -> u32 {
    // Partitions share zones: what counts is the bytes of all of them. A flush pads to a block
    // (a flushed 1 MiB batch takes 1 MiB + 1 block); each zone keeps a header, its summary and
    // its trailer; each stream holds a zone, and two are reserved for internal logs.
    let per_batch = (batch_bytes as u64 + 32).div_ceil(4096) * 4096;
    let usable = ZONE_BYTES - 4 * 4096 - (ZONE_BYTES / per_batch.max(1) + 1) * 76;
    let per_zone = (usable / per_batch).max(1);
    (batches.div_ceil(per_zone) + 3 + 2 + 2) as u32
}

fn storage_config(dir: &Path, choice: IoBackendChoice, zone_count: u32) -> StorageConfig {
    let mut config = StorageConfig::new(dir);
    config.geometry = geometry(zone_count, zone_count);
    config.io = choice;
    config
}

fn partition_id(partition: i32) -> PartitionId {
    PartitionId {
        topic: "bench".to_string(),
        topic_id: [7; 16],
        partition,
    }
}

/// What one append measurement saw.
#[derive(Clone, Copy, Debug, Default)]
struct AppendOutcome {
    bytes: u64,
    batches: u64,
    elapsed: Duration,
    /// Building the BytesMut handed to `append` (a copy of the encoded batch).
    copy: Duration,
    /// Inside `PartitionLog::append`.
    append: Duration,
    /// Awaiting flushes (device writes and fdatasync).
    flush_wait: Duration,
    stats: IoStats,
}

/// Appends `batches` copies of `batch` to one partition of a fresh device in `dir`, flushing
/// every `flush_every` batches and at the end, as an acks=all producer would.
async fn append_single(
    dir: &Path,
    choice: IoBackendChoice,
    batch: &[u8],
    batches: u64,
    flush_every: u64,
) -> anyhow::Result<AppendOutcome> {
    let config = storage_config(dir, choice, zones_needed(batch.len(), batches, 1));
    let (device, recovered) = broker::storage::open(&config).await?;
    let mut log = recovered.store.create_partition(partition_id(0));
    let mut outcome = append_loop(&mut log, batch, batches, flush_every).await?;
    anyhow::ensure!(
        log.high_watermark() == log.log_end_offset(),
        "everything appended is durable"
    );
    outcome.stats = device.driver().stats();
    drop(log);
    drop(recovered);
    drop(device);
    Ok(outcome)
}

async fn append_loop(
    log: &mut PartitionLog,
    batch: &[u8],
    batches: u64,
    flush_every: u64,
) -> anyhow::Result<AppendOutcome> {
    let now = now_ms();
    let mut outcome = AppendOutcome {
        bytes: batch.len() as u64 * batches,
        batches,
        ..AppendOutcome::default()
    };
    let started = Instant::now();
    for index in 0..batches {
        let at = Instant::now();
        let copy = From::from(batch);
        let copied = Instant::now();
        log.append(copy, now)?;
        let appended = Instant::now();
        outcome.copy += copied - at;
        outcome.append += appended - copied;
        if (index + 1) % flush_every == 0 || index + 1 == batches {
            log.start_flush().complete().await?;
            outcome.flush_wait += appended.elapsed();
        }
    }
    outcome.elapsed = started.elapsed();
    Ok(outcome)
}

/// `partitions` partitions of one device appending and flushing concurrently (one task each).
async fn append_multi(
    dir: &Path,
    choice: IoBackendChoice,
    batch: Arc<Vec<u8>>,
    partitions: u64,
    per_partition: u64,
) -> anyhow::Result<AppendOutcome> {
    let zone_count = zones_needed(batch.len(), per_partition * partitions, partitions);
    let config = storage_config(dir, choice, zone_count);
    let (device, recovered) = broker::storage::open(&config).await?;
    let logs: Vec<PartitionLog> = (0..partitions)
        .map(|partition| {
            recovered
                .store
                .create_partition(partition_id(partition as i32))
        })
        .collect();
    let started = Instant::now();
    let tasks: Vec<_> = logs
        .into_iter()
        .map(|mut log| {
            let batch = batch.clone();
            tokio::spawn(async move {
                let outcome = append_loop(&mut log, &batch, per_partition, 1).await;
                drop(log);
                outcome
            })
        })
        .collect();
    let mut total = AppendOutcome::default();
    for task in tasks {
        let outcome = task.await??;
        total.bytes += outcome.bytes;
        total.batches += outcome.batches;
        total.copy += outcome.copy;
        total.append += outcome.append;
        total.flush_wait += outcome.flush_wait;
    }
    total.elapsed = started.elapsed();
    total.stats = device.driver().stats();
    drop(recovered);
    drop(device);
    Ok(total)
}

/// What the garbage collection measurement saw.
struct GcOutcome {
    /// Bytes written to the device per byte appended (seals and GC copies included).
    write_amplification: f64,
    copied_bytes: u64,
    appended_mb_per_s: f64,
}

/// Partitions of this many...
const GC_PARTITIONS: u64 = 64;
/// ...on a device of this many zones of `GC_ZONE_BYTES`, each partition keeping 1/(2 x
/// partitions) of the device: retention leaves zones partly live, so the device fills with
/// half-dead zones unless the garbage collector copies their live batches forward. GC keeps
/// max(4, zones/16) free zones beyond the two reserved: on 16 zones that was 37% of the device
/// held free, so the sealed zones could hold little more than the live half and GC copied
/// nearly every byte (amplification 1.99); 64 zones hold 9% free, as the default device of
/// 128 zones holds 8%.
const GC_ZONES: u32 = 64;
/// 1 GiB in all, as before: 16 batches of 1 MiB per zone.
const GC_ZONE_BYTES: u64 = 16 << 20;

/// Appends `total_bytes` of 1 MiB batches to random partitions, each flushed (acks=all) and
/// followed by the partition's retention, on a device of half the size: GC write amplification.
async fn gc_churn(
    dir: &Path,
    choice: IoBackendChoice,
    batch: &[u8],
    total_bytes: u64,
) -> anyhow::Result<GcOutcome> {
    let mut config = storage_config(dir, choice, GC_ZONES);
    config.geometry = geometry_sized(GC_ZONE_BYTES, GC_ZONES, GC_ZONES);
    let (device, recovered) = broker::storage::open(&config).await?;
    let store = recovered.store;
    let retention_bytes = u64::from(GC_ZONES) * GC_ZONE_BYTES / 2 / GC_PARTITIONS;
    let mut logs: Vec<PartitionLog> = (0..GC_PARTITIONS)
        .map(|partition| store.create_partition(partition_id(partition as i32)))
        .collect();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let (mut appended, mut waits) = (0u64, 0u32);
    let started = Instant::now();
    while appended < total_bytes {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let log = &mut logs[(rng % GC_PARTITIONS) as usize];
        match log.append(From::from(batch), now_ms()) {
            Ok(_) => appended += batch.len() as u64,
            // Full for a moment: the reclaimer and the collector free zones in the background.
            Err(LogError::Io(error)) if error.kind() == std::io::ErrorKind::StorageFull => {
                waits += 1;
                anyhow::ensure!(
                    waits < 20_000,
                    "the device stayed full: garbage collection made no room"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
                continue;
            }
            Err(error) => return Err(error.into()),
        }
        log.start_flush().complete().await?;
        log.apply_retention(now_ms(), None, Some(retention_bytes));
    }
    let elapsed = started.elapsed();
    let (_, _, copied_bytes) = store.allocator().written_bytes();
    let outcome = GcOutcome {
        write_amplification: store.allocator().write_amplification(),
        copied_bytes,
        appended_mb_per_s: mb_per_s(appended, elapsed),
    };
    drop(logs);
    drop(store);
    drop(device);
    Ok(outcome)
}

/// The reopen measurement: a log of `--reopen-gib` written once (1 MiB batches, one partition,
/// a flush every 16 batches, so zones seal as they fill), then per run and backend a raw
/// sequential read of `--total-mib` (the rate a full scan of the device would go at) and a
/// reopen of the log; the log is deleted at the end of the phase, so the device of 10 GiB or
/// more exists only for as long as it is measured.
fn reopen_phase(
    runtime: &tokio::runtime::Runtime,
    args: &StorageBenchArgs,
    work: &Path,
    big: &BenchBatch,
    pattern: &Arc<Vec<u8>>,
    results: &mut [BackendResults],
) -> anyhow::Result<()> {
    let reopen_dir = work.join("reopen-log");
    let batches = (args.reopen_gib << 30).div_ceil(big.bytes.len() as u64);
    eprintln!(
        "writing the {} GiB log for the reopen measurement...",
        args.reopen_gib
    );
    let choice = choice_of(results[0].kind);
    let bytes = big.bytes.clone();
    let dir = reopen_dir.clone();
    let written = runtime.block_on(async move {
        tokio::spawn(async move { append_single(&dir, choice, &bytes, batches, 16).await }).await?
    })?;
    for results in results.iter_mut() {
        results.reopen_write_mb_per_s = mb_per_s(written.bytes, written.elapsed);
    }
    let raw_path = work.join("raw.img");
    for run in 0..args.runs {
        for results in results.iter_mut() {
            let kind = results.kind;
            let choice = choice_of(kind);
            eprintln!(
                "reopen run {}/{} {kind}: raw read; reopen...",
                run + 1,
                args.runs
            );
            let (_, read) = raw_write_read(runtime, &raw_path, args.total_mib, choice, pattern)?;
            let raw_read = mb_per_s(args.total_mib << 20, read);
            let reopen = runtime.block_on(reopen(&reopen_dir, choice, batches))?;
            results.reopen_raw_read.push(raw_read);
            results.reopen_seconds.push(reopen.total.as_secs_f64());
            results.recovery_seconds.push(reopen.recovery.as_secs_f64());
            // What reading every byte written at the raw sequential rate would take.
            results
                .full_scan_seconds
                .push(written.bytes as f64 / 1e6 / raw_read);
            results.reopen_bytes = reopen.bytes_scanned;
            results.reopen_zones_from_summary = reopen.zones_from_summary;
        }
    }
    remove_dir(&reopen_dir)
}

struct ReopenOutcome {
    /// `broker::storage::open`: device open (write pointers from extents) + log recovery.
    total: Duration,
    /// `LogStore::open` alone, as its report measures it.
    recovery: Duration,
    bytes_scanned: u64,
    zones_from_summary: usize,
}

async fn reopen(
    dir: &Path,
    choice: IoBackendChoice,
    batches: u64,
) -> anyhow::Result<ReopenOutcome> {
    let config = storage_config(dir, choice, 1);
    let started = Instant::now();
    let (device, recovered) = broker::storage::open(&config).await?;
    let total = started.elapsed();
    anyhow::ensure!(
        recovered.partitions.len() == 1 && recovered.partitions[0].log_end_offset() > 0,
        "the reopened log has {} partitions",
        recovered.partitions.len()
    );
    anyhow::ensure!(
        recovered.report.batches_recovered == batches,
        "recovered {} batches of {batches}",
        recovered.report.batches_recovered
    );
    let outcome = ReopenOutcome {
        total,
        recovery: recovered.report.duration,
        bytes_scanned: recovered.report.bytes_scanned,
        zones_from_summary: recovered.report.zones_from_summary,
    };
    drop(recovered);
    drop(device);
    Ok(outcome)
}

// ---------------------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------------------

#[derive(Default)]
struct AppendSeries {
    mb_per_s: Vec<f64>,
    vs_sync: Vec<f64>,
    vs_stream: Vec<f64>,
    copy_us: Vec<f64>,
    append_us: Vec<f64>,
    flush_us: Vec<f64>,
    fsyncs_issued: Vec<f64>,
    syncs_requested: Vec<f64>,
    submit_calls: Vec<f64>,
}

impl AppendSeries {
    fn record(&mut self, outcome: &AppendOutcome, raw_sync: f64, raw_stream: f64) {
        let rate = mb_per_s(outcome.bytes, outcome.elapsed);
        let per_batch = |duration: Duration| duration.as_secs_f64() * 1e6 / outcome.batches as f64;
        self.mb_per_s.push(rate);
        self.vs_sync.push(rate / raw_sync);
        self.vs_stream.push(rate / raw_stream);
        self.copy_us.push(per_batch(outcome.copy));
        self.append_us.push(per_batch(outcome.append));
        self.flush_us.push(per_batch(outcome.flush_wait));
        self.fsyncs_issued.push(outcome.stats.fsyncs_issued as f64);
        self.syncs_requested
            .push(outcome.stats.syncs_requested as f64);
        self.submit_calls.push(outcome.stats.submit_calls as f64);
    }
}

struct BackendResults {
    kind: IoBackendKind,
    raw_sync: Vec<f64>,
    raw_stream: Vec<f64>,
    raw_read: Vec<f64>,
    append_big: AppendSeries,
    append_small: AppendSeries,
    append_multi: AppendSeries,
    reopen_seconds: Vec<f64>,
    recovery_seconds: Vec<f64>,
    /// Raw sequential read rate measured beside each reopen.
    reopen_raw_read: Vec<f64>,
    /// Seconds a read of the whole log at that rate would take.
    full_scan_seconds: Vec<f64>,
    reopen_write_mb_per_s: f64,
    reopen_bytes: u64,
    reopen_zones_from_summary: usize,
    gc_write_amplification: Vec<f64>,
    gc_copied_mib: Vec<f64>,
    gc_mb_per_s: Vec<f64>,
}

impl BackendResults {
    fn new(kind: IoBackendKind) -> BackendResults {
        BackendResults {
            kind,
            raw_sync: Vec::new(),
            raw_stream: Vec::new(),
            raw_read: Vec::new(),
            append_big: AppendSeries::default(),
            append_small: AppendSeries::default(),
            append_multi: AppendSeries::default(),
            reopen_seconds: Vec::new(),
            recovery_seconds: Vec::new(),
            reopen_raw_read: Vec::new(),
            full_scan_seconds: Vec::new(),
            reopen_write_mb_per_s: 0.0,
            reopen_bytes: 0,
            reopen_zones_from_summary: 0,
            gc_write_amplification: Vec::new(),
            gc_copied_mib: Vec::new(),
            gc_mb_per_s: Vec::new(),
        }
    }

    fn print(&self, partitions: u32) {
        let kind = self.kind.to_string();
        let ratios = |values: &[f64], of: &[f64]| -> Vec<f64> {
            values
                .iter()
                .zip(of)
                .map(|(value, of)| value / of)
                .collect()
        };
        row(
            &kind,
            "raw O_DIRECT write, 1 MiB QD1 + sync/MiB",
            &self.raw_sync,
            Some(&ratios(&self.raw_sync, &self.raw_sync)),
            Some(&ratios(&self.raw_sync, &self.raw_stream)),
        );
        row(
            &kind,
            &format!("raw O_DIRECT write, 1 MiB x{RAW_QUEUE_DEPTH} stream + sync"),
            &self.raw_stream,
            Some(&ratios(&self.raw_stream, &self.raw_sync)),
            Some(&ratios(&self.raw_stream, &self.raw_stream)),
        );
        let series = |label: &str, series: &AppendSeries| {
            row(
                &kind,
                label,
                &series.mb_per_s,
                Some(&series.vs_sync),
                Some(&series.vs_stream),
            );
            println!(
                "{:<9}   per batch: copy {:.0} us, append {:.0} us, flush wait {:.0} us; \
                 fsyncs {:.0} issued / {:.0} requested, {:.0} submits",
                "",
                median(&series.copy_us),
                median(&series.append_us),
                median(&series.flush_us),
                median(&series.fsyncs_issued),
                median(&series.syncs_requested),
                median(&series.submit_calls),
            );
        };
        series("append 1 MiB batches, flush each", &self.append_big);
        series("append 16 KiB batches, flush per 1 MiB", &self.append_small);
        if partitions > 0 {
            series(
                &format!("{partitions} partitions x 1 MiB batches, flush each"),
                &self.append_multi,
            );
        }
        row(
            &kind,
            &format!("raw O_DIRECT read, 1 MiB x{RAW_QUEUE_DEPTH}"),
            &self.raw_read,
            None,
            None,
        );
    }

    fn print_gc(&self) {
        if self.gc_write_amplification.is_empty() {
            return;
        }
        println!(
            "gc churn ({}): {GC_PARTITIONS} partitions, 1 MiB batches each flushed, retention keeping half of a {} MiB device of {GC_ZONES} zones, \
             {} MiB appended: write amplification {:.3} [{:.3}..{:.3}] ({:.0} MiB copied by GC), append {:.0} MB/s vs raw stream {:.0} MB/s",
            self.kind,
            u64::from(GC_ZONES) * GC_ZONE_BYTES / MIB as u64,
            2 * u64::from(GC_ZONES) * GC_ZONE_BYTES / MIB as u64,
            median(&self.gc_write_amplification),
            min(&self.gc_write_amplification),
            max(&self.gc_write_amplification),
            median(&self.gc_copied_mib),
            median(&self.gc_mb_per_s),
            median(&self.raw_stream),
        );
    }

    fn print_reopen(&self, gib: u64) {
        if self.reopen_seconds.is_empty() {
            return;
        }
        let ratios: Vec<f64> = self
            .reopen_seconds
            .iter()
            .zip(&self.full_scan_seconds)
            .map(|(reopen, scan)| reopen / scan)
            .collect();
        println!(
            "reopen of {gib} GiB written ({}, written at {:.0} MB/s): {:.3} s [{:.3}..{:.3}], recovery {:.3} s ({} sealed zones read from their summaries, \
             {:.1} MB scanned after the last seals); raw O_DIRECT sequential read {:.0} MB/s [{:.0}..{:.0}], at which reading the {gib} GiB would take {:.1} s: \
             reopen/full read {:.3}",
            self.kind,
            self.reopen_write_mb_per_s,
            median(&self.reopen_seconds),
            min(&self.reopen_seconds),
            max(&self.reopen_seconds),
            median(&self.recovery_seconds),
            self.reopen_zones_from_summary,
            self.reopen_bytes as f64 / 1e6,
            median(&self.reopen_raw_read),
            min(&self.reopen_raw_read),
            max(&self.reopen_raw_read),
            median(&self.full_scan_seconds),
            median(&ratios),
        );
    }
}

fn row(
    kind: &str,
    label: &str,
    values: &[f64],
    vs_sync: Option<&[f64]>,
    vs_stream: Option<&[f64]>,
) {
    let ratio = |values: Option<&[f64]>| {
        values.map_or("-".to_string(), |values| format!("{:.2}", median(values)))
    };
    println!(
        "{:<9} {:<44} {:>7.0} {:>15} {:>9} {:>9}",
        kind,
        label,
        median(values),
        format!("[{:.0}..{:.0}]", min(values), max(values)),
        ratio(vs_sync),
        ratio(vs_stream),
    );
}

pub(crate) fn median(values: &[f64]) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let middle = sorted.len() / 2;
    if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    }
}

pub(crate) fn min(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::INFINITY, f64::min)
}

pub(crate) fn max(values: &[f64]) -> f64 {
    values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// The file system type of `path`, from /proc/self/mountinfo (the longest matching mount point).
pub(crate) fn file_system_of(path: &Path) -> String {
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return "unknown".into();
    };
    let mut best: Option<(usize, String)> = None;
    for line in mountinfo.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(separator) = fields.iter().position(|&field| field == "-") else {
            continue;
        };
        let (Some(mount_point), Some(fs_type)) = (fields.get(4), fields.get(separator + 1)) else {
            continue;
        };
        let mount_point = mount_point.replace("\\040", " ");
        if path.starts_with(&mount_point)
            && best
                .as_ref()
                .is_none_or(|(len, _)| mount_point.len() >= *len)
        {
            best = Some((mount_point.len(), fs_type.to_string()));
        }
    }
    best.map_or("unknown".into(), |(_, fs_type)| fs_type)
}
