//! `yottastore bench views`: materialized views on one machine, in one run.
//!
//! 1. `--records` vehicle JSON records (1,000,000 by default) are appended to a topic on a real
//!    data directory (file zoned device), then an append view with an index on `region` is
//!    created and timed until it has applied all of them: materialization throughput, printed
//!    beside the physical floor of the same work measured in the same run: parsing the same
//!    JSON values with serde_json on one core (every view decodes each record at least once).
//! 2. A steady produce load (`--rate` records/s for `--load-seconds`, one durable batch per
//!    partition every 10 ms, acknowledged as produce acknowledges: ack time recorded when the
//!    flush completes) while the view keeps up: freshness (ack to visible) p50 and p99 over
//!    every ack of the load, as the view measured them.
//!    Before it, the memory the view took (resident set growth) beside the rows' Arrow size.
//! 3. `GROUP BY region` over the append view, and `SELECT count(*), avg(speed) FROM view WHERE
//!    region = '<one of 100>'` (1% of the rows) through the index, then after DROP INDEX (a
//!    full scan): median of `--query-runs` each, with the rows each read (`rows_read`) and the
//!    runs answered directly from the index (`query::direct`), beside DuckDB's times over the
//!    same rows in memory (`duckdb.rs`).
//! 4. An upsert view over the same topic (latest row per vehicle) and one key's lookup.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use broker::cluster::{BrokerConfig, Cluster, Partition};
use broker::log::batch::{encode_batch, Compression, SimpleRecord};
use broker::storage::StorageConfig;
use broker::zone::ZoneGeometry;
use bytes::BytesMut;
use clap::Args;
use query::materializer::view::ViewLimits;
use query::materializer::{Materializer, MaterializerConfig};
use query::{QueryEngine, QueryLimits};

const TOPIC: &str = "bench-vehicles";
const REGIONS: usize = 100;
const RECORDS_PER_BATCH: usize = 1000;
const ZONE_BYTES: u64 = 64 << 20;

#[derive(Args)]
pub struct ViewsBenchArgs {
    /// Where to write (a fresh subdirectory is made inside it). Default: ./bench-data, else $TMPDIR.
    #[arg(long)]
    dir: Option<std::path::PathBuf>,
    /// Keep the benchmark's files.
    #[arg(long)]
    keep: bool,
    /// Records in the topic before the view is created.
    #[arg(long, default_value_t = 1_000_000)]
    records: usize,
    #[arg(long, default_value_t = 4)]
    partitions: i32,
    /// Steady load while freshness is measured, records per second.
    #[arg(long, default_value_t = 20_000)]
    rate: usize,
    #[arg(long, default_value_t = 5)]
    load_seconds: u64,
    #[arg(long, default_value_t = 5)]
    query_runs: usize,
    /// The views' checkpoint interval (serve's default).
    #[arg(long, default_value_t = 2_000)]
    checkpoint_interval_ms: u64,
    /// The views' memory budget (serve's `--view-memory-mib`).
    #[arg(long, default_value_t = 4096)]
    view_memory_mib: usize,
    /// The Python that has DuckDB (the peer measured on the same rows).
    #[arg(long, default_value = ".bench-venv/bin/python")]
    duckdb_python: std::path::PathBuf,
    /// Skip the upsert view (its build re-reads the whole topic).
    #[arg(long)]
    no_upsert: bool,
    /// Skip DuckDB (its copy of the rows: a Parquet file and an in-memory table).
    #[arg(long)]
    no_duckdb: bool,
    /// The topic's batches compressed (none, gzip, snappy, lz4, zstd): at 100M records the
    /// device holds them compressed (the device file is preallocated to size).
    #[arg(long, default_value = "none")]
    compression: String,
}

fn compression_named(name: &str) -> anyhow::Result<Compression> {
    Ok(match name {
        "none" => Compression::None,
        "gzip" => Compression::Gzip,
        "snappy" => Compression::Snappy,
        "lz4" => Compression::Lz4,
        "zstd" => Compression::Zstd,
        other => anyhow::bail!("--compression {other}: none, gzip, snappy, lz4 or zstd"),
    })
}

/// A record's bytes on the device under `compression` (a batch of the bench's records).
fn bytes_per_record(compression: Compression) -> anyhow::Result<u64> {
    let records: Vec<SimpleRecord> = (0..RECORDS_PER_BATCH).map(|i| record(i, 0)).collect();
    Ok(encode_batch(&records, compression)?.len() as u64 / RECORDS_PER_BATCH as u64 + 1)
}

fn record(i: usize, timestamp_ms: i64) -> SimpleRecord {
    SimpleRecord::new(Some(format!("v{}", i % 50_000).as_bytes()), Some(&value(i)), &[], timestamp_ms)
}

pub(crate) fn value(i: usize) -> Vec<u8> {
    let statuses = ["moving", "idle", "maintenance", "parked"];
    format!(
        r#"{{"vehicle_id":"v{}","region":"r{}","status":"{}","speed":{},"engine":{{"temp":{}.5}},"seen_at":"2024-05-{:02}T10:{:02}:00Z"}}"#,
        i % 50_000,
        (i * 7919) % REGIONS,
        statuses[i % 4],
        i % 130,
        60 + i % 40,
        1 + i % 28,
        i % 60
    )
    .into_bytes()
}

/// Appends records `range` spread over the partitions, one batch per partition per chunk;
/// returns once durable. With `ack`, records each flush's completion as produce does.
async fn append(partitions: &[Arc<Partition>], range: std::ops::Range<usize>, ack: bool, compression: Compression) -> anyhow::Result<()> {
    let mut flushes = Vec::new();
    let count = partitions.len();
    for (index, partition) in partitions.iter().enumerate() {
        let records: Vec<SimpleRecord> = range
            .clone()
            .filter(|i| i % count == index)
            .map(|i| record(i, broker::cluster::now_ms()))
            .collect();
        for chunk in records.chunks(RECORDS_PER_BATCH) {
            let batch = encode_batch(chunk, compression)?;
            let flush = partition
                .with_log(|log| -> anyhow::Result<_> {
                    log.append(BytesMut::from(&batch[..]), 0).map_err(|error| anyhow::anyhow!("append: {error}"))?;
                    Ok(log.start_flush())
                })
                .map_err(|error| anyhow::anyhow!(error.message))??;
            flushes.push((partition.clone(), flush));
        }
    }
    for (partition, flush) in flushes {
        let high_watermark = flush.complete().await.map_err(|error| anyhow::anyhow!("flush: {error}"))?;
        if ack {
            partition.acks.record(high_watermark, Instant::now());
        }
        partition.data_ready.notify_waiters();
    }
    Ok(())
}

async fn wait_caught_up(materializer: &Materializer, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while !materializer.caught_up() {
        anyhow::ensure!(Instant::now() < deadline, "the view did not catch up within {} s", timeout.as_secs());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn quantile(sorted: &[f64], quantile: f64) -> f64 {
    let rank = ((quantile * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Median milliseconds of `sql` over `runs`, its scan and `rows_read` from EXPLAIN ANALYZE
/// (and how many runs the engine answered from the view's index without DataFusion's
/// planning), and its first row.
async fn time_query(engine: &QueryEngine, sql: &str, runs: usize) -> anyhow::Result<(f64, String, String)> {
    let mut times = Vec::new();
    let mut answer = String::new();
    let direct_before = engine.direct_answers();
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        let output = engine.execute(sql).await?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
        answer = query::datafusion::arrow::util::pretty::pretty_format_batches(&output.batches)?
            .to_string()
            .lines()
            .nth(3)
            .unwrap_or_default()
            .to_string();
    }
    let explained = engine.execute(&format!("EXPLAIN ANALYZE {sql}")).await?;
    let plan = query::datafusion::arrow::util::pretty::pretty_format_batches(&explained.batches)?.to_string();
    let scan = plan
        .lines()
        .find(|line| line.contains("ViewIndexScanExec") || line.contains("ViewScanExec"))
        .map(|line| {
            let name = if line.contains("ViewIndexScanExec") {
                "ViewIndexScanExec"
            } else {
                "ViewScanExec"
            };
            let rows = line.split("rows_read=").nth(1).and_then(|rest| rest.split([',', ']']).next()).unwrap_or("?");
            format!("{name}, rows_read={rows}")
        })
        .unwrap_or_default();
    let scan = format!("{scan}; {} of {} runs answered directly", engine.direct_answers() - direct_before, runs.max(1));
    Ok((median(times), scan, answer))
}

/// The process's resident memory (what the allocator keeps of transient work included).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|pages| pages.parse().ok()).unwrap_or(0);
    pages * 4096
}

/// The process's peak resident memory so far.
fn peak_resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib = status.lines().find_map(|line| line.strip_prefix("VmHWM:")).and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    kib.unwrap_or(0) << 10
}

const GROUP_BY: &str = "SELECT region, count(*), avg(speed) FROM fleet GROUP BY region";
const SELECTIVE: &str = "SELECT count(*), avg(speed) FROM fleet WHERE region = 'r42'";
/// The same query for a value no row has: what every query costs before reading a row
/// (a direct answer's cache look-up, snapshot and index look-up; else parsing, planning and
/// the session), the floor under the indexed query's time.
const NO_MATCH: &str = "SELECT count(*), avg(speed) FROM fleet WHERE region = 'none'";

/// Creates the append view `fleet` with its index and times it until caught up; its memory.
async fn build_append_view(engine: &QueryEngine, materializer: &Materializer, records: usize, parse_per_s: f64) -> anyhow::Result<()> {
    let resident_before = resident_bytes();
    let started = Instant::now();
    engine
        .execute(&format!(
            "CREATE MATERIALIZED VIEW fleet AS SELECT vehicle_id, region, status, speed, \"engine.temp\" AS temp FROM \"{TOPIC}\""
        ))
        .await?;
    engine.execute("CREATE INDEX fleet_region ON fleet (region)").await?;
    wait_caught_up(materializer, Duration::from_secs(7200)).await?;
    let elapsed = started.elapsed().as_secs_f64();
    let throughput = records as f64 / elapsed;
    println!("materialization: {throughput:>10.0} records/s ({records} records in {elapsed:.2} s, JSON decode + DataFusion projection + Arrow chunks + index)");
    println!(
        "  limit: serde_json parse alone {:>10.0} records/s on one core (ratio {:.2})",
        parse_per_s,
        throughput / parse_per_s
    );
    let view = materializer.view("fleet").context("the view")?;
    let snapshot = view.store.snapshot();
    let projection: Vec<usize> = (0..snapshot.schema.fields().len()).collect();
    let mut arrow_bytes = 0;
    for chunk in &snapshot.chunks {
        arrow_bytes += snapshot.read_chunk(chunk, None, &projection, &snapshot.schema)?.get_array_memory_size() as u64;
    }
    let resident = resident_bytes().saturating_sub(resident_before);
    let budget = materializer.memory_budget();
    println!(
        "memory: the process grew {:.0} MiB for {} rows whose Arrow size is {:.0} MiB (ratio {:.2}; views' in-memory chunks {:.0} MiB, budget {:.0} MiB)",
        resident as f64 / (1 << 20) as f64,
        snapshot.live_rows,
        arrow_bytes as f64 / (1 << 20) as f64,
        resident as f64 / arrow_bytes.max(1) as f64,
        budget.used_bytes() as f64 / (1 << 20) as f64,
        budget.limit_bytes() as f64 / (1 << 20) as f64
    );
    Ok(())
}

/// A steady load of `rate` records/s for `seconds` while the views keep up (and checkpoint):
/// freshness p50/p99 as the view measured it.
async fn measure_freshness(
    partitions: &[Arc<Partition>],
    materializer: &Materializer,
    first: usize,
    rate: usize,
    seconds: u64,
    compression: Compression,
) -> anyhow::Result<()> {
    let tick = Duration::from_millis(10);
    let per_tick = (rate / 100).max(partitions.len());
    let mut next = first;
    let load_started = Instant::now();
    for tick_index in 0..seconds * 100 {
        append(partitions, next..next + per_tick, true, compression).await?;
        next += per_tick;
        tokio::time::sleep_until((load_started + tick * (tick_index as u32 + 1)).into()).await;
    }
    let load_elapsed = load_started.elapsed().as_secs_f64();
    wait_caught_up(materializer, Duration::from_secs(600)).await?;
    let view = materializer.view("fleet").context("the view")?;
    let mut freshness: Vec<f64> = {
        let status = view.lock_status();
        status
            .partitions
            .values()
            .flat_map(|progress| progress.freshness.window_ms().collect::<Vec<_>>())
            .collect()
    };
    freshness.sort_by(f64::total_cmp);
    anyhow::ensure!(!freshness.is_empty(), "no freshness was measured");
    println!(
        "freshness under {:.0} records/s ({} acks, checkpoints running): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (produce ack to visible in the view)",
        (next - first) as f64 / load_elapsed,
        freshness.len(),
        quantile(&freshness, 0.5),
        quantile(&freshness, 0.99),
        freshness[freshness.len() - 1]
    );
    Ok(())
}

/// GROUP BY and the 1%-selective query (indexed, then as a full scan) beside DuckDB on the same
/// rows in memory.
async fn compare_queries(engine: &QueryEngine, materializer: &Materializer, work: &std::path::Path, args: &ViewsBenchArgs) -> anyhow::Result<()> {
    let view = materializer.view("fleet").context("the view")?;
    let snapshot = view.store.snapshot();
    let parquet = work.join("fleet.parquet");
    if !args.no_duckdb {
        query::materializer::view::checkpoint::write_snapshot(work, &snapshot)?;
        std::fs::rename(work.join(query::materializer::view::checkpoint::SNAPSHOT_FILE), &parquet)?;
    }
    let (group_ms, _, _) = time_query(engine, GROUP_BY, args.query_runs).await?;
    let (indexed_ms, indexed_scan, indexed_answer) = time_query(engine, SELECTIVE, args.query_runs).await?;
    let (floor_ms, _, _) = time_query(engine, NO_MATCH, args.query_runs).await?;
    engine.execute("DROP INDEX fleet_region").await?;
    let (scan_ms, full_scan, scan_answer) = time_query(engine, SELECTIVE, args.query_runs).await?;
    anyhow::ensure!(indexed_answer == scan_answer, "the index answered {indexed_answer}, the scan {scan_answer}");
    println!(
        "queries over the append view's {} rows, median of {} (DataFusion partitions: one per group of chunks):",
        snapshot.live_rows, args.query_runs
    );
    let duckdb = if args.no_duckdb {
        println!("  DuckDB skipped (--no-duckdb)");
        None
    } else {
        super::duckdb::measure(&args.duckdb_python, &parquet, &[GROUP_BY, SELECTIVE], args.query_runs)
    };
    let peer = |index: usize| duckdb.as_ref().and_then(|figures| figures.medians_ms.get(index).copied());
    let beside = |ours: f64, index: usize| match peer(index) {
        Some(theirs) => format!("DuckDB {theirs:.2} ms, ratio {:.2}", ours / theirs),
        None => "DuckDB not measured".to_string(),
    };
    println!("  GROUP BY region (`{GROUP_BY}`): {group_ms:>9.2} ms ({})", beside(group_ms, 0));
    println!("  1% selective (`{SELECTIVE}`):");
    println!("    index:     {indexed_ms:>9.2} ms ({indexed_scan}; {})", beside(indexed_ms, 1));
    println!("    floor:     {floor_ms:>9.2} ms (the same query through the index for a value no row has: what a query costs before its rows)");
    println!(
        "    full scan: {scan_ms:>9.2} ms ({full_scan}); the index is {:.0}x faster",
        scan_ms / indexed_ms
    );
    if !args.no_duckdb {
        std::fs::remove_file(&parquet)?;
    }
    Ok(())
}

/// An upsert view over the same topic (latest row per vehicle) and one key's lookup.
async fn upsert_lookup(engine: &QueryEngine, materializer: &Materializer, runs: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    engine
        .execute(&format!(
            "CREATE MATERIALIZED VIEW fleet_latest WITH (key = 'vehicle_id') AS SELECT vehicle_id, region, status, speed FROM \"{TOPIC}\""
        ))
        .await?;
    wait_caught_up(materializer, Duration::from_secs(7200)).await?;
    let rows = materializer.view("fleet_latest").context("the view")?.store.snapshot().live_rows;
    println!("upsert view: {rows} keys, built in {:.1} s", started.elapsed().as_secs_f64());
    let sql = "SELECT * FROM fleet_latest WHERE vehicle_id = 'v12345'";
    let (lookup_ms, scan, answer) = time_query(engine, sql, runs.max(20)).await?;
    anyhow::ensure!(!answer.is_empty(), "no row for the key");
    println!("  key lookup (`{sql}`): {lookup_ms:.3} ms through the engine ({scan}; target <= 1 ms)");
    Ok(())
}

pub fn run(args: ViewsBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.records >= 1 && args.partitions >= 1 && args.rate >= 100,
        "--records, --partitions >= 1 and --rate >= 100"
    );
    anyhow::ensure!(args.view_memory_mib >= 1, "--view-memory-mib must be at least 1");
    let work = super::limits::WorkDir::create(args.dir.as_deref(), args.keep, "views-bench")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        // Room for the records of both phases and half as much again, plus two zones per partition.
        let total_records = args.records + args.rate * args.load_seconds as usize;
        let compression = compression_named(&args.compression)?;
        let bytes = total_records as u64 * bytes_per_record(compression)?;
        let zone_count = ((bytes * 3 / 2 / ZONE_BYTES) as u32 + 2 * args.partitions as u32 + 4).max(16);
        let mut storage = StorageConfig::new(work.path());
        storage.geometry = ZoneGeometry {
            zone_size_bytes: ZONE_BYTES,
            zone_capacity_bytes: ZONE_BYTES,
            zone_count,
            max_open_zones: 14,
            max_active_zones: zone_count,
        };
        let (_device, recovered) = broker::storage::open(&storage).await?;
        let cluster = Cluster::open(recovered.store, recovered.partitions, BrokerConfig::default())
            .await
            .map_err(anyhow::Error::msg)?;
        cluster
            .create_topic(TOPIC, args.partitions, &BTreeMap::new(), false)
            .await
            .map_err(|error| anyhow::anyhow!("creating the topic: {}", error.message))?;
        let partitions = cluster.topic(TOPIC).context("the topic")?.partitions();
        println!(
            "views bench: dir={} records={} partitions={} cores={} (views: one task each; checkpoint every {} ms; view memory budget {} MiB)",
            work.path().display(),
            args.records,
            args.partitions,
            std::thread::available_parallelism().map_or(1, |cores| cores.get()),
            args.checkpoint_interval_ms,
            args.view_memory_mib
        );
        let started = Instant::now();
        for start in (0..args.records).step_by(100_000) {
            append(&partitions, start..(start + 100_000).min(args.records), false, compression).await?;
        }
        println!("setup: {} records appended in {:.1} s", args.records, started.elapsed().as_secs_f64());
        let parse_per_s = serde_json_parse_rate(args.records);
        let limits = ViewLimits {
            memory_bytes_max: args.view_memory_mib << 20,
            ..Default::default()
        };
        let config = MaterializerConfig {
            data_dir: work.path().to_path_buf(),
            checkpoint_interval: Duration::from_millis(args.checkpoint_interval_ms.max(1)),
            limits,
        };
        let materializer = Materializer::open(cluster.clone(), config).await?;
        let engine = QueryEngine::with_materializer(cluster.clone(), QueryLimits::default(), Some(materializer.clone()))?;
        build_append_view(&engine, &materializer, args.records, parse_per_s).await?;
        measure_freshness(&partitions, &materializer, args.records, args.rate, args.load_seconds, compression).await?;
        compare_queries(&engine, &materializer, work.path(), &args).await?;
        if !args.no_upsert {
            upsert_lookup(&engine, &materializer, args.query_runs).await?;
        }
        materializer.shutdown().await;
        println!("peak resident memory of the process: {:.0} MiB (VmHWM)", peak_resident_bytes() as f64 / (1 << 20) as f64);
        anyhow::Ok(())
    })
}

/// The floor: decoding the same values with serde_json alone, on one core.
fn serde_json_parse_rate(records: usize) -> f64 {
    let values: Vec<Vec<u8>> = (0..records.min(200_000)).map(value).collect();
    let started = Instant::now();
    let mut fields = 0usize;
    for value in &values {
        if let Ok(parsed) = serde_json::from_slice::<serde_json::Value>(value) {
            fields += parsed.as_object().map_or(0, |object| object.len());
        }
    }
    std::hint::black_box(fields);
    values.len() as f64 / started.elapsed().as_secs_f64()
}
