//! `yottastore bench consume`: a load generator in the spirit of kafka-consumer-perf-test,
//! printed beside the loopback TCP bandwidth (and the raw O_DIRECT read bandwidth) measured in
//! the same run.
//!
//! For each partition count (`--partitions 1,100,1000`, a broker child and topic each), the
//! topic is filled first if its partition 0 holds fewer records than a run reads: partition 0's
//! batches interleaved with as many bytes of batches of every other partition (as on a broker
//! where all are written at once; the produce figure is printed as setup). Each run then reads
//! partition 0 from its earliest offset to the latest offset taken before the runs: `--runs`
//! times as written (the broker's read cache holds what it can of the tail), then, after a
//! graceful restart of the broker, `--runs` times from the device: one partition read among
//! the N written. One Fetch is in flight (as a Kafka consumer fetches from one broker):
//! max_bytes 50 MiB, partition_max_bytes 8 MiB, max_wait_ms 100. Every batch header is
//! walked: offsets must be contiguous, and the record count must be exactly what the offsets
//! promise. The CRC of every `--crc-every`th batch is checked (default 8; 1 checks all, as the
//! Java consumer's check.crcs=true does): the load generator shares the machine with the broker,
//! and checksumming every byte would cost it about as much as receiving them, so the figure
//! would measure the client more than the broker. As a prefetching consumer does, the next
//! Fetch is sent as soon as the headers of a response are walked, and the CRCs are checked
//! while the broker prepares the answer.

use std::time::{Duration, Instant};

use anyhow::Context;
use broker::log::batch::{self, BatchIter};
use clap::Args;

use super::kafka_client::{decode_fetch, fetch_request, Connection};
use super::progress::Progress;
use super::limits;
use super::produce::{self, row, spread, KafkaBenchArgs, LimitSeries, ProduceSeries, Setup, Workload};
use super::storage::{self, median};
use kafka_protocol::messages::ApiKey;

const MIB: u64 = 1 << 20;

#[derive(Args, Clone, Debug)]
pub struct ConsumeBenchArgs {
    #[command(flatten)]
    pub common: KafkaBenchArgs,
    /// Fetch max_bytes.
    #[arg(long, default_value_t = 50 << 20)]
    pub fetch_max_bytes: i32,
    /// Fetch partition_max_bytes.
    #[arg(long, default_value_t = 8 << 20)]
    pub partition_max_bytes: i32,
    /// Fetch max_wait_ms.
    #[arg(long, default_value_t = 100)]
    pub max_wait_ms: u64,
    /// Check the CRC of every Nth batch (1: all; a sample measures the broker rather than the
    /// load generator's checksumming).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    pub crc_every: u64,
    /// Skip the CRC check altogether.
    #[arg(long)]
    pub no_crc: bool,
}

struct ConsumeOutcome {
    elapsed: Duration,
    records: u64,
    bytes: u64,
    fetches: u64,
    batches: u64,
}

async fn consume_run(
    connection: &mut Connection,
    topic: &str,
    start: &[i64],
    end: &[i64],
    args: &ConsumeBenchArgs,
) -> anyhow::Result<ConsumeOutcome> {
    let version = connection.versions.fetch;
    let mut next: Vec<i64> = start.to_vec();
    let mut outcome = ConsumeOutcome {
        elapsed: Duration::ZERO,
        records: 0,
        bytes: 0,
        fetches: 0,
        batches: 0,
    };
    let started = Instant::now();
    let expected: i64 = end.iter().zip(start).map(|(end, start)| end - start).sum();
    let mut progress = Progress::new("consume", u64::try_from(expected).unwrap_or(0), "records");
    // Batches of the previous response whose CRC is still to be checked (while the broker
    // prepares the next answer).
    let mut to_check: Vec<(usize, i64, bytes::Bytes)> = Vec::new();
    let mut batch_number = 0u64;
    let mut in_flight: Option<i32> = None;
    loop {
        let wanted: Vec<(i32, i64)> = next
            .iter()
            .zip(end)
            .enumerate()
            .filter(|(_, (next, end))| next < end)
            .map(|(index, (next, _))| (index as i32, *next))
            .collect();
        let (writer, reader) = split_mut(connection);
        if !wanted.is_empty() {
            let request = fetch_request(
                topic,
                &wanted,
                args.fetch_max_bytes,
                args.partition_max_bytes,
                Duration::from_millis(args.max_wait_ms),
            );
            in_flight = Some(writer.send(ApiKey::Fetch, version, &request).await?);
        }
        for (index, offset, batch) in to_check.drain(..) {
            batch::validate_integrity(&batch).with_context(|| format!("partition {index} offset {offset}"))?;
        }
        let Some(correlation_id) = in_flight.take() else { break };
        let frame = reader.read_frame().await?;
        outcome.fetches += 1;
        let response = decode_fetch(version, correlation_id, frame)?;
        anyhow::ensure!(response.error_code == 0, "Fetch failed: error {}", response.error_code);
        for topic_response in &response.responses {
            for partition in &topic_response.partitions {
                anyhow::ensure!(
                    partition.error_code == 0,
                    "Fetch partition {}: error {}",
                    partition.partition_index,
                    partition.error_code
                );
                let index = partition.partition_index as usize;
                let slot = next.get_mut(index).context("Fetch answered a partition not asked for")?;
                let Some(records) = &partition.records else { continue };
                for item in BatchIter::new(records) {
                    let (header, bytes) = item.with_context(|| format!("partition {index}: a malformed batch at offset {slot}"))?;
                    // A batch below the fetch offset may be served whole (Kafka does); skip it.
                    if header.last_offset() < *slot {
                        continue;
                    }
                    anyhow::ensure!(
                        header.base_offset == *slot,
                        "partition {index}: batch at offset {} where {} was due",
                        header.base_offset,
                        *slot
                    );
                    if !args.no_crc && batch_number % args.crc_every == 0 {
                        to_check.push((index, header.base_offset, records.slice_ref(bytes)));
                    }
                    batch_number += 1;
                    outcome.records += header.record_count as u64;
                    outcome.bytes += bytes.len() as u64;
                    outcome.batches += 1;
                    *slot = header.last_offset() + 1;
                    progress.advance(header.record_count as u64, bytes.len() as u64);
                }
            }
        }
    }
    progress.finish();
    outcome.elapsed = started.elapsed();
    anyhow::ensure!(
        outcome.records as i64 == expected && next.iter().zip(end).all(|(next, end)| next == end),
        "read {} records where the offsets promise {expected}",
        outcome.records
    );
    Ok(outcome)
}

/// Borrow the two halves of a connection for one request/response (Connection::call is
/// generic over the response type; Fetch is decoded by decode_fetch instead).
fn split_mut(connection: &mut Connection) -> (&mut super::kafka_client::RequestWriter, &mut super::kafka_client::ResponseReader) {
    connection.halves()
}

/// The consume bench's aim (issue 13): this share of loopback reading one partition among
/// 1,000 written.
const AIM_RATIO: f64 = 0.8;

/// What one partition count measured: (label, MB/s per run, loopback per run).
struct CountResult {
    partitions: i32,
    rows: Vec<(&'static str, Vec<f64>, Vec<f64>)>,
}

pub fn run(args: ConsumeBenchArgs) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for &partitions in &args.common.partitions {
        let one = ConsumeBenchArgs { common: args.common.for_partitions(partitions), ..args.clone() };
        results.push(run_count(&one)?);
    }
    println!();
    println!(
        "summary: partition 0 read among N partitions written (MB/s = 10^6 B/s, medians of {} runs; ratio against each run's loopback)",
        args.common.runs
    );
    println!("{:>10} {:>28} {:>8} {:>13} {:>12} {:>8} {:>9}", "partitions", "read", "MB/s", "[min..max]", "loopback", "ratio", "aim");
    for result in &results {
        for (label, mb_per_s, loopback) in &result.rows {
            let ratio = (!loopback.is_empty()).then(|| median(&produce::ratios(mb_per_s, loopback)));
            let aim = match ratio {
                Some(ratio) if result.partitions >= 1000 && *label == COLD => if ratio >= AIM_RATIO { "MET" } else { "NOT MET" },
                _ => "-",
            };
            println!(
                "{:>10} {:>28} {:>8.0} {:>13} {:>12} {:>8} {:>9}",
                result.partitions,
                label,
                median(mb_per_s),
                spread(mb_per_s),
                if loopback.is_empty() { "-".to_string() } else { format!("{:.0}", median(loopback)) },
                ratio.map_or("-".to_string(), |ratio| format!("{ratio:.2}")),
                aim
            );
        }
    }
    println!("aim: consume >= {AIM_RATIO} x loopback reading 1 partition among 1,000 written, from the device (after a restart)");
    Ok(())
}

const WARM: &str = "just written";
const COLD: &str = "after a restart (device)";

/// One partition count: partition 0 filled among the others (see `Workload::interleaved`), then
/// read whole, `--runs` times as written and `--runs` times after a broker restart.
fn run_count(args: &ConsumeBenchArgs) -> anyhow::Result<CountResult> {
    let common = &args.common;
    let copies = if common.partition_count() > 1 { 2 } else { 1 };
    let mut setup = Setup::start(common, "consume-bench", common.run_bytes() * copies)?;
    let (mut connection, partitions) = setup.client.block_on(produce::open_topic(&setup.addr, common))?;

    // Fill the topic if partition 0 holds fewer records than a run reads.
    let earliest = setup.client.block_on(connection.list_offsets(&common.topic, 1, -2))?;
    let latest = setup.client.block_on(connection.list_offsets(&common.topic, 1, -1))?;
    let mut setup_line = String::new();
    let workload = Workload::interleaved(common, connection.versions.produce, partitions)?;
    // Whole batches: partition 0 gets at most --records (an external broker filled by an
    // earlier run is not filled again).
    if ((latest[0] - earliest[0]) as u64) < workload.partition0_records {
        eprintln!("{partitions} partitions: producing {} records to fill the topic...", workload.records);
        let (outcome, returned) = setup.client.block_on(produce::produce_run(connection, &workload, common.in_flight, -1))?;
        connection = returned;
        let mut series = ProduceSeries::default();
        series.record(&outcome, workload.payload_bytes, None, None);
        setup_line = format!(
            "setup: produced {} records ({:.1} MiB of batches, partition 0's interleaved 1:1 with the {} others') at {:.0} MB/s, acks=-1, p99 {:.2} ms",
            outcome.records,
            outcome.wire_bytes as f64 / MIB as f64,
            partitions - 1,
            series.mb_per_s[0],
            series.p99[0]
        );
    }
    let start = setup.client.block_on(connection.list_offsets(&common.topic, 1, -2))?;
    let end = setup.client.block_on(connection.list_offsets(&common.topic, 1, -1))?;

    println!();
    println!(
        "consume bench: broker {}; topic {} ({partitions} partitions), Fetch v{}",
        setup.describe(),
        common.topic,
        connection.versions.fetch
    );
    if !setup_line.is_empty() {
        println!("{setup_line}");
    }
    println!(
        "per run: partition 0, {} records from the earliest offset; one Fetch in flight, max_bytes {} partition_max_bytes {} \
         max_wait_ms {} min_bytes 1; CRC check {}; runs={} (median [min..max])",
        end[0] - start[0],
        args.fetch_max_bytes,
        args.partition_max_bytes,
        args.max_wait_ms,
        if args.no_crc { "off".to_string() } else if args.crc_every == 1 { "every batch".to_string() } else { format!("every {}th batch", args.crc_every) },
        common.runs
    );
    let mut rows = Vec::new();
    let warm = measure(&setup, &mut connection, args, &start, &end, WARM)?;
    rows.push((WARM, warm.mb_per_s.clone(), warm.limits.loopback.clone()));
    warm.print(WARM);
    drop(connection);
    if setup.restart()? {
        let (mut connection, _) = setup.client.block_on(produce::open_topic(&setup.addr, common))?;
        let cold = measure(&setup, &mut connection, args, &start, &end, COLD)?;
        rows.push((COLD, cold.mb_per_s.clone(), cold.limits.loopback.clone()));
        cold.print(COLD);
    }
    setup.stop()?;
    Ok(CountResult { partitions, rows })
}

/// `--runs` reads of partition 0's `start..end`, each beside the limits measured right after it.
struct Measured {
    limits: LimitSeries,
    mb_per_s: Vec<f64>,
    records_per_s: Vec<f64>,
    broker_cpu: Vec<f64>,
    client_cpu: Vec<f64>,
    fetches: Vec<f64>,
    records: i64,
    bytes: u64,
    batches: u64,
}

fn measure(setup: &Setup, connection: &mut Connection, args: &ConsumeBenchArgs, start: &[i64], end: &[i64], label: &str) -> anyhow::Result<Measured> {
    let common = &args.common;
    let mut measured = Measured {
        limits: LimitSeries::default(),
        mb_per_s: Vec::new(),
        records_per_s: Vec::new(),
        broker_cpu: Vec::new(),
        client_cpu: Vec::new(),
        fetches: Vec::new(),
        records: end[0] - start[0],
        bytes: 0,
        batches: 0,
    };
    for run in 0..common.runs {
        let step = |what: &str| eprintln!("{} partitions, {label}, run {}/{}: {what}...", common.partition_count(), run + 1, common.runs);
        step("consume");
        let broker_before = setup.broker_cpu_seconds();
        let client_before = produce::self_cpu_seconds();
        let outcome = setup.client.block_on(consume_run(connection, &common.topic, start, end, args))?;
        let seconds = outcome.elapsed.as_secs_f64();
        if let Some(cpu) = broker_before.zip(setup.broker_cpu_seconds()).map(|(before, after)| after - before) {
            measured.broker_cpu.push(cpu / seconds);
        }
        if let Some(cpu) = client_before.zip(produce::self_cpu_seconds()).map(|(before, after)| after - before) {
            measured.client_cpu.push(cpu / seconds);
        }
        measured.mb_per_s.push(storage::mb_per_s(outcome.bytes, outcome.elapsed));
        measured.records_per_s.push(outcome.records as f64 / seconds);
        measured.fetches.push(outcome.fetches as f64);
        measured.bytes = outcome.bytes;
        measured.batches = outcome.batches;
        if !common.no_limits {
            step("loopback TCP");
            measured.limits.loopback.push(limits::loopback_mb_per_s(outcome.bytes)?);
            step("raw disk read");
            measured.limits.disk_read.push(limits::disk_read_mb_per_s(&setup.disk, setup.work.path(), outcome.bytes.div_ceil(MIB))?);
        }
    }
    Ok(measured)
}

impl Measured {
    fn print(&self, label: &str) {
        println!();
        println!(
            "{:<46} {:>7} {:>13} {:>10} {:>10}",
            format!("{label}: MB/s = 10^6 B/s"), "MB/s", "[min..max]", "vs loopbk", "vs dread"
        );
        let limits = &self.limits;
        let have = !limits.loopback.is_empty();
        let against = |values: &[f64], of: &[f64]| have.then(|| produce::ratios(values, of));
        row("loopback TCP, 1 MiB writes", &limits.loopback, &[against(&limits.loopback, &limits.loopback), None]);
        row(
            &format!("disk O_DIRECT read, 1 MiB x{}", storage::RAW_QUEUE_DEPTH),
            &limits.disk_read,
            &[None, against(&limits.disk_read, &limits.disk_read)],
        );
        row("consume (batch bytes)", &self.mb_per_s, &[against(&self.mb_per_s, &limits.loopback), against(&self.mb_per_s, &limits.disk_read)]);
        println!(
            "consume: {:.0} records/s {}; {} records verified per run ({:.1} MiB in {} batches, {:.0} fetches)",
            median(&self.records_per_s),
            spread(&self.records_per_s),
            self.records,
            self.bytes as f64 / MIB as f64,
            self.batches,
            median(&self.fetches),
        );
        produce::print_cpu("consume", &self.broker_cpu, &self.client_cpu);
    }
}
