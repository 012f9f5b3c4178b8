//! `yottastore debug ...` (hidden): tools for crash and fault tests, not for production use.
//!
//! - `append-loop` appends generated batches to the partitions of topic "crash" with a flush
//!   after every few appends, and prints one `ACK` line per acknowledged batch, until it is
//!   killed. The crash test (`tests/storage_crash.rs`) kills it with SIGKILL at random moments.
//! - `verify` reopens the data directory and checks it against the lines `append-loop` printed:
//!   every acknowledged batch reads back byte-identical, offsets are contiguous, and every batch
//!   served is one `append-loop` generated (nothing torn, nothing foreign).
//!
//! Both share one generator (`generate_batch`): a batch's content is a pure function of
//! (partition, base offset, seed), so the verifier can regenerate any batch it is served.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use broker::log::batch::{self, encode_batch, Compression, SimpleRecord};
use broker::log::{LogError, PartitionId, PartitionLog};
use clap::{Args, Subcommand};

use crate::StorageArgs;

#[derive(Subcommand)]
pub enum DebugCommand {
    /// Append generated batches with flushes, printing `ACK <partition> <base> <last> <crc32>`
    /// per acknowledged batch, until killed (crash tests).
    AppendLoop(AppendLoopArgs),
    /// Reopen the data directory and check it against the lines `append-loop` printed.
    Verify(VerifyArgs),
}

/// The topic the crash tools write.
pub const TOPIC: &str = "crash";
/// Partition counts above this are refused (partitions share zones; this bounds the checker).
const PARTITIONS_MAX: u32 = 10_000;
/// The largest batch value the generator makes: above a write chunk's worth of blocks and a
/// read window, so frames span blocks, chunks and reads, and well below a 1 MiB zone.
pub const VALUE_BYTES_MAX: usize = 300 << 10;
/// At most this many records per generated batch.
const RECORDS_PER_BATCH_MAX: u64 = 6;
/// A flush covers at most this many appends per partition.
const APPENDS_PER_FLUSH_MAX: u64 = 3;
/// One flush in this many is preceded by a burst of appends (several MiB, spanning chunks).
const BURST_ONE_IN: u64 = 2;
const BURST_APPENDS: u64 = 48;
/// Failures listed by `verify` before it stops listing (it still counts them all).
const FAILURES_SHOWN_MAX: usize = 20;
/// Lines of an acks file accepted by `verify` (bounds its memory).
const ACK_LINES_MAX: usize = 10_000_000;

#[derive(Args)]
pub struct AppendLoopArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Partitions of topic "crash" to write (0..N).
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// Seed of the batch contents; `verify` needs the same one.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Retention per partition, in KiB: older batches are dropped beyond it and zones with
    /// nothing live reset, so the loop runs forever on a small device.
    #[arg(long, default_value_t = 8192)]
    pub retention_kib: u64,
    /// Stop after this many flushes (a limit; the crash test kills the loop long before).
    #[arg(long, default_value_t = 10_000_000)]
    pub max_flushes: u64,
    /// Size of the chunks the log hands to the device while appending, in KiB. Chunks smaller
    /// than a zone let a kill land between two chunks of one frame (a torn write).
    #[arg(long, default_value_t = 1024)]
    pub write_chunk_kib: usize,
    /// Run a garbage collection pass this often, in milliseconds, whether or not free zones
    /// are low (0: only when they are, as `serve` does), so kills land among GC copies,
    /// switches and resets too. Each pass that copied prints `GC <bytes>`.
    #[arg(long, default_value_t = 0)]
    pub gc_every_ms: u64,
}

#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// The lines `append-loop` printed (ACK, RETAIN and START lines; others are ignored).
    #[arg(long)]
    pub acks: PathBuf,
    /// Partitions `append-loop` wrote.
    #[arg(long, default_value_t = 4)]
    pub partitions: u32,
    /// The seed `append-loop` used.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

pub fn run(command: DebugCommand) -> anyhow::Result<()> {
    match command {
        DebugCommand::AppendLoop(args) => append_loop(args),
        DebugCommand::Verify(args) => verify(args),
    }
}

// ---------------------------------------------------------------------------------------------
// The generator shared by append-loop and verify.
// ---------------------------------------------------------------------------------------------

/// xorshift64*: small, fast and good enough for test data and choices.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // splitmix64 of the seed, so nearby seeds give unrelated streams; never zero.
        let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        Rng((z ^ (z >> 31)) | 1)
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// In `low..high` (high exclusive, > low).
    fn range(&mut self, low: u64, high: u64) -> u64 {
        assert!(low < high);
        low + self.next() % (high - low)
    }

    fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}

/// The batch `append-loop` appends to `partition` when the log's end is `base_offset`, as the
/// log stores it (base offset assigned). Sizes range from a few bytes to `VALUE_BYTES_MAX`, skewed
/// to small, as producer traffic is.
pub fn generate_batch(partition: i32, base_offset: i64, seed: u64) -> Vec<u8> {
    assert!(partition >= 0 && base_offset >= 0);
    let mut rng = Rng::new(
        seed ^ (partition as u64).wrapping_mul(0xD6E8_FEB8_6659_FD93)
            ^ (base_offset as u64).wrapping_mul(0xA076_1D64_78BD_642F),
    );
    let records = rng.range(1, RECORDS_PER_BATCH_MAX + 1) as usize;
    let value_bytes = match rng.range(0, 10) {
        0..=5 => rng.range(1, 512),
        6..=8 => rng.range(512, 32 << 10),
        _ => rng.range(32 << 10, VALUE_BYTES_MAX as u64 + 1),
    } as usize;
    let timestamp_ms = 1_700_000_000_000 + base_offset;
    let records: Vec<SimpleRecord> = (0..records)
        .map(|i| {
            let mut value = vec![0u8; (value_bytes / records).max(1)];
            rng.fill(&mut value);
            let key = format!("p{partition}-o{}", base_offset + i as i64);
            let has_key = rng.range(0, 4) != 0;
            SimpleRecord::new(
                has_key.then_some(key.as_bytes()),
                Some(&value),
                &[("seed", Some(&seed.to_be_bytes()))],
                timestamp_ms + i as i64,
            )
        })
        .collect();
    let mut bytes = encode_batch(&records, Compression::None).expect("generated batches are valid");
    batch::set_base_offset(&mut bytes, base_offset).expect("a valid batch has a base offset");
    bytes
}

/// CRC-32 (IEEE), table driven: the checksum `ACK` lines carry. Written here rather than
/// pulled in as a dependency; the table is built at compile time.
pub fn crc32(bytes: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut crc = i as u32;
            let mut bit = 0;
            while bit < 8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
                bit += 1;
            }
            table[i] = crc;
            i += 1;
        }
        table
    };
    let mut crc = !0u32;
    for &byte in bytes {
        crc = TABLE[((crc ^ u32::from(byte)) & 0xFF) as usize] ^ (crc >> 8);
    }
    !crc
}

fn partition_id(partition: u32) -> PartitionId {
    PartitionId {
        topic: TOPIC.to_string(),
        topic_id: [0xC7; 16],
        partition: partition as i32,
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_millis() as i64
}

// ---------------------------------------------------------------------------------------------
// append-loop
// ---------------------------------------------------------------------------------------------

/// (base offset, last offset, crc32 of the stored bytes) of an appended batch.
type AckedBatch = (i64, i64, u32);

/// Writes `text` to stdout in one call and flushes it: a killed process leaves at most one
/// partial line, which readers drop (lines are short, so one pipe write is atomic).
fn emit(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout.write_all(text.as_bytes())?;
    stdout.flush()?;
    Ok(())
}

fn append_loop(args: AppendLoopArgs) -> anyhow::Result<()> {
    if args.partitions == 0 || args.partitions > PARTITIONS_MAX {
        bail!("--partitions must be in 1..={PARTITIONS_MAX}");
    }
    let retention_bytes = args
        .retention_kib
        .checked_shl(10)
        .filter(|&bytes| bytes > 0)
        .context("--retention-kib must be positive and fit in 64 bits")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut config = args.storage.config();
        config.log.write_chunk_bytes = (args.write_chunk_kib << 10).max(4096).next_multiple_of(4096);
        let (_device, recovered) = broker::storage::open(&config).await?;
        let report = recovered.report.clone();
        let store = std::sync::Arc::new(recovered.store);
        if args.gc_every_ms > 0 {
            let (store, every) = (std::sync::Arc::downgrade(&store), Duration::from_millis(args.gc_every_ms));
            std::thread::Builder::new().name("debug-gc".into()).spawn(move || loop {
                std::thread::sleep(every);
                let Some(store) = store.upgrade() else { return };
                match store.collect_garbage(now_ms()) {
                        Ok(0) => {}
                        Ok(bytes) => {
                            let _ = emit(&format!("GC {bytes}\n"));
                        }
                    Err(error) => tracing::warn!(%error, "garbage collection pass failed"),
                }
            })?;
        }
        let mut logs: BTreeMap<u32, PartitionLog> = BTreeMap::new();
        for log in recovered.partitions {
            if log.id().topic_id == partition_id(0).topic_id && (0..args.partitions as i32).contains(&log.id().partition) {
                logs.insert(log.id().partition as u32, log);
            }
        }
        for partition in 0..args.partitions {
            logs.entry(partition)
                .or_insert_with(|| store.create_partition(partition_id(partition)));
        }
        emit(&format!(
            "READY zones_scanned={} batches_recovered={} zones_cut={} zones_reset={}\n",
            report.zones_scanned, report.batches_recovered, report.zones_cut, report.zones_reset
        ))?;
        // The choices (which partitions, how many appends per flush) differ per run; the content
        // of each batch does not (it depends on the seed only).
        let mut rng = Rng::new(args.seed ^ now_ms() as u64 ^ u64::from(std::process::id()) << 32);
        for _ in 0..args.max_flushes {
            // One group commit: appends to a few partitions, then their flushes started together.
            let mut pending: Vec<(u32, Vec<AckedBatch>)> = Vec::new();
            let touched = rng.range(1, u64::from(args.partitions).min(3) + 1);
            for _ in 0..touched {
                let partition = rng.range(0, u64::from(args.partitions)) as u32;
                if pending.iter().any(|(p, _)| *p == partition) {
                    continue;
                }
                let log = logs.get_mut(&partition).expect("every partition has a log");
                let mut batches = Vec::new();
                // Now and then a burst of appends before the flush: the log then hands whole
                // chunks to the device while it appends, so a kill can leave a frame whose first
                // chunk is on the device and whose rest is not: a torn write for recovery to cut.
                let appends = if rng.range(0, BURST_ONE_IN) == 0 { BURST_APPENDS } else { rng.range(1, APPENDS_PER_FLUSH_MAX + 1) };
                for _ in 0..appends {
                    let base_offset = log.log_end_offset();
                    let bytes = generate_batch(partition as i32, base_offset, args.seed);
                    let info = match log.append(bytes.as_slice().into(), now_ms()) {
                        Ok(info) => info,
                        // A full device refuses appends (nothing changed) until retention frees
                        // zones: a condition to wait out, not a failure.
                        Err(LogError::Io(error)) if error.kind() == std::io::ErrorKind::StorageFull => break,
                        Err(error) => return Err(error).with_context(|| format!("append to partition {partition} at {base_offset}")),
                    };
                    if info.base_offset != base_offset {
                        bail!("partition {partition}: batch got offset {} not the log end {base_offset}", info.base_offset);
                    }
                    batches.push((info.base_offset, info.last_offset, crc32(&bytes)));
                }
                pending.push((partition, batches));
            }
            let flushes: Vec<_> = pending
                .iter()
                .map(|(partition, _)| logs.get_mut(partition).expect("log").start_flush())
                .collect();
            let mut lines = String::new();
            for ((partition, batches), flush) in pending.iter().zip(flushes) {
                flush
                    .complete()
                    .await
                    .with_context(|| format!("flush of partition {partition}"))?;
                for (base, last, crc) in batches {
                    lines.push_str(&format!("ACK {partition} {base} {last} {crc:08x}\n"));
                }
            }
            emit(&lines)?;
            for (partition, _) in &pending {
                let log = logs.get_mut(partition).expect("log");
                if log.size_bytes() <= retention_bytes {
                    continue;
                }
                // Announced first: the log start can never move past the end it has now.
                emit(&format!("RETAIN {partition} {}\n", log.log_end_offset()))?;
                if log.apply_retention(now_ms(), None, Some(retention_bytes)) > 0 {
                    store.settle().await?;
                    // The resets are durable: a reopen can not find a lower start.
                    emit(&format!("START {partition} {}\n", log.log_start_offset()))?;
                }
            }
        }
        anyhow::Ok(())
    })
}

// ---------------------------------------------------------------------------------------------
// verify
// ---------------------------------------------------------------------------------------------

/// What `append-loop` said about one partition.
#[derive(Default)]
struct Expected {
    /// base offset -> (last offset, crc32) of every acknowledged batch.
    acked: BTreeMap<i64, (i64, u32)>,
    /// The highest log end announced before a retention: the start never passes it.
    retain_bound: Option<i64>,
    /// The highest log start reached by a retention whose resets completed.
    settled_start: i64,
}

fn parse_acks(text: &str, partitions: u32) -> anyhow::Result<BTreeMap<u32, Expected>> {
    let mut expected: BTreeMap<u32, Expected> =
        (0..partitions).map(|p| (p, Expected::default())).collect();
    for (number, line) in text.lines().enumerate().take(ACK_LINES_MAX) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let bad = || format!("acks line {}: {line:?}", number + 1);
        let int = |at: usize| -> anyhow::Result<i64> {
            fields
                .get(at)
                .with_context(bad)?
                .parse::<i64>()
                .with_context(bad)
        };
        let kind = fields.first().copied().unwrap_or("");
        if !matches!(kind, "ACK" | "RETAIN" | "START") {
            continue;
        }
        let partition = u32::try_from(int(1)?)
            .ok()
            .filter(|&p| p < partitions)
            .with_context(bad)?;
        let entry = expected
            .get_mut(&partition)
            .expect("every partition has an entry");
        match kind {
            "ACK" => {
                let (base, last) = (int(2)?, int(3)?);
                let crc =
                    u32::from_str_radix(fields.get(4).with_context(bad)?, 16).with_context(bad)?;
                if base < 0 || last < base || entry.acked.insert(base, (last, crc)).is_some() {
                    bail!("{}: bad or repeated acknowledgement", bad());
                }
            }
            "RETAIN" => entry.retain_bound = entry.retain_bound.max(Some(int(2)?)),
            _ => entry.settled_start = entry.settled_start.max(int(2)?),
        }
    }
    Ok(expected)
}

/// Failed checks: every one counted, the first few printed as they are found.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn add(&mut self, message: String) {
        if self.0.len() < FAILURES_SHOWN_MAX {
            eprintln!("FAIL {message}");
        }
        self.0.push(message);
    }
}

fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    if args.partitions == 0 || args.partitions > PARTITIONS_MAX {
        bail!("--partitions must be in 1..={PARTITIONS_MAX}");
    }
    let text = std::fs::read_to_string(&args.acks)
        .with_context(|| format!("reading {}", args.acks.display()))?;
    let expected = parse_acks(&text, args.partitions)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut failures = Failures::default();
    let summary = runtime.block_on(async {
        let config = args.storage.config();
        if !config.device_path().exists() {
            bail!("no device file at {}", config.device_path().display());
        }
        let (_device, recovered) = broker::storage::open(&config).await?;
        let report = &recovered.report;
        println!(
            "RECOVERY zones_scanned={} bytes_scanned={} batches_recovered={} zones_cut={} zones_reset={} duration_ms={}",
            report.zones_scanned,
            report.bytes_scanned,
            report.batches_recovered,
            report.zones_cut,
            report.zones_reset,
            report.duration.as_millis()
        );
        let mut logs: BTreeMap<i32, PartitionLog> = BTreeMap::new();
        for log in recovered.partitions {
            if log.id().topic_id != partition_id(0).topic_id || !(0..args.partitions as i32).contains(&log.id().partition) {
                failures.add(format!("unexpected partition {:?} on the device", log.id()));
                continue;
            }
            logs.insert(log.id().partition, log);
        }
        let (mut served_total, mut acked_total, mut exempt_total) = (0usize, 0usize, 0usize);
        let mut ranges = Vec::new();
        for (&partition, want) in &expected {
            let Some(log) = logs.get(&(partition as i32)) else {
                if !want.acked.is_empty() {
                    failures.add(format!("partition {partition}: {} acknowledged batches but no log", want.acked.len()));
                }
                continue;
            };
            let (start, end, high_watermark) = (log.log_start_offset(), log.log_end_offset(), log.high_watermark());
            ranges.push(format!("{partition}:[{start},{end})"));
            if high_watermark != end {
                failures.add(format!("partition {partition}: high watermark {high_watermark} is not the recovered end {end}"));
            }
            if start < want.settled_start {
                failures.add(format!("partition {partition}: log start {start} below {} reached by completed retention", want.settled_start));
            }
            if start > want.retain_bound.unwrap_or(0) {
                failures.add(format!("partition {partition}: log start {start} beyond anything retention could reach ({:?})", want.retain_bound));
            }
            // Everything served: contiguous from the start, each batch regenerated and compared.
            let mut served: BTreeMap<i64, (i64, u32)> = BTreeMap::new();
            let mut offset = start;
            while offset < high_watermark {
                let batches = match log.read(offset, 1 << 20) {
                    Ok(plan) => plan.execute().await,
                    Err(error) => Err(error),
                };
                let batches = match batches {
                    Ok(batches) if !batches.is_empty() => batches,
                    Ok(_) => {
                        failures.add(format!("partition {partition}: nothing served at {offset} below the high watermark {high_watermark}"));
                        break;
                    }
                    Err(error) => {
                        failures.add(format!("partition {partition}: read at {offset}: {error}"));
                        break;
                    }
                };
                for bytes in batches {
                    let header = match batch::parse_header(&bytes) {
                        Ok(header) => header,
                        Err(error) => {
                            failures.add(format!("partition {partition}: batch served at {offset} does not parse: {error}"));
                            break;
                        }
                    };
                    let contiguous = if served.is_empty() {
                        header.base_offset <= start && start <= header.last_offset()
                    } else {
                        header.base_offset == offset
                    };
                    if !contiguous {
                        failures.add(format!("partition {partition}: batch [{}, {}] served where offset {offset} was expected", header.base_offset, header.last_offset()));
                    }
                    if bytes[..] != generate_batch(partition as i32, header.base_offset, args.seed)[..] {
                        failures.add(format!("partition {partition}: batch at {} ({} bytes) is not the one generated for that offset", header.base_offset, bytes.len()));
                    }
                    served.insert(header.base_offset, (header.last_offset(), crc32(&bytes)));
                    offset = header.last_offset() + 1;
                }
                if failures.0.len() > FAILURES_SHOWN_MAX {
                    break;
                }
            }
            if offset < high_watermark && failures.0.is_empty() {
                failures.add(format!("partition {partition}: reads stopped at {offset} below {high_watermark}"));
            }
            served_total += served.len();
            // Every acknowledged batch is served identical, unless retention released it.
            for (&base, &(last, crc)) in &want.acked {
                acked_total += 1;
                if last < start {
                    exempt_total += 1;
                    continue;
                }
                match served.get(&base) {
                    Some(&(served_last, served_crc)) if served_last == last && served_crc == crc => {}
                    Some(&(served_last, served_crc)) => failures.add(format!(
                        "partition {partition}: acknowledged batch [{base}, {last}] crc {crc:08x} served as [{base}, {served_last}] crc {served_crc:08x}"
                    )),
                    None => failures.add(format!(
                        "partition {partition}: acknowledged batch [{base}, {last}] is lost (log [{start}, {end}))"
                    )),
                }
            }
        }
        anyhow::Ok(format!(
            "VERIFIED served_batches={served_total} acked={acked_total} released_by_retention={exempt_total} logs={}",
            ranges.join(",")
        ))
    })?;
    if let Some(first) = failures.0.first() {
        bail!("{} check(s) failed; the first: {first}", failures.0.len());
    }
    println!("{summary}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32_matches_the_standard_check_value() {
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
    }

    #[test]
    fn generated_batches_are_deterministic_valid_and_varied() {
        let mut sizes = Vec::new();
        for base in 0..64 {
            let one = generate_batch(2, base, 9);
            assert_eq!(one, generate_batch(2, base, 9));
            assert_ne!(one, generate_batch(3, base, 9));
            let header = batch::validate(&one).unwrap();
            assert_eq!(header.base_offset, base);
            sizes.push(one.len());
        }
        assert!(sizes.iter().any(|&s| s < 1024) && sizes.iter().any(|&s| s > 32 << 10));
    }
}
