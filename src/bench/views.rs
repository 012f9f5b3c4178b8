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
//! 3. `SELECT count(*), avg(speed) FROM view WHERE region = '<one of 100>'` (1% of the rows)
//!    through the index, then the same query after DROP INDEX (a full scan): median of
//!    `--query-runs` each, with the rows each read (`rows_read`).

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
async fn append(partitions: &[Arc<Partition>], range: std::ops::Range<usize>, ack: bool) -> anyhow::Result<()> {
    let mut flushes = Vec::new();
    let count = partitions.len();
    for (index, partition) in partitions.iter().enumerate() {
        let records: Vec<SimpleRecord> = range
            .clone()
            .filter(|i| i % count == index)
            .map(|i| SimpleRecord::new(Some(format!("v{}", i % 50_000).as_bytes()), Some(&value(i)), &[], broker::cluster::now_ms()))
            .collect();
        for chunk in records.chunks(RECORDS_PER_BATCH) {
            let batch = encode_batch(chunk, Compression::None)?;
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

/// Median milliseconds of `sql` over `runs`, and its `rows_read` from EXPLAIN ANALYZE.
async fn time_query(engine: &QueryEngine, sql: &str, runs: usize) -> anyhow::Result<(f64, String, String)> {
    let mut times = Vec::new();
    let mut answer = String::new();
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        let output = engine.execute(sql).await?;
        times.push(started.elapsed().as_secs_f64() * 1e3);
        answer = query::datafusion::arrow::util::pretty::pretty_format_batches(&output.batches)?.to_string().lines().nth(3).unwrap_or_default().to_string();
    }
    let explained = engine.execute(&format!("EXPLAIN ANALYZE {sql}")).await?;
    let plan = query::datafusion::arrow::util::pretty::pretty_format_batches(&explained.batches)?.to_string();
    let scan = plan
        .lines()
        .find(|line| line.contains("ViewIndexScanExec") || line.contains("ViewScanExec"))
        .map(|line| {
            let name = if line.contains("ViewIndexScanExec") { "ViewIndexScanExec" } else { "ViewScanExec" };
            let rows = line.split("rows_read=").nth(1).and_then(|rest| rest.split([',', ']']).next()).unwrap_or("?");
            format!("{name}, rows_read={rows}")
        })
        .unwrap_or_default();
    Ok((median(times), scan, answer))
}

pub fn run(args: ViewsBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.records >= 1 && args.partitions >= 1 && args.rate >= 100, "--records, --partitions >= 1 and --rate >= 100");
    let work = super::limits::WorkDir::create(args.dir.as_deref(), args.keep, "views-bench")?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async {
        // Room for the records of both phases three times over, plus a zone per partition.
        let total_records = args.records + args.rate * args.load_seconds as usize;
        let bytes = total_records as u64 * (value(0).len() as u64 + 40);
        let zone_count = ((bytes * 3 / ZONE_BYTES) as u32 + 2 * args.partitions as u32 + 4).max(16);
        let mut storage = StorageConfig::new(work.path());
        storage.geometry = ZoneGeometry { zone_size_bytes: ZONE_BYTES, zone_capacity_bytes: ZONE_BYTES, zone_count, max_open_zones: 14, max_active_zones: zone_count };
        let (_device, recovered) = broker::storage::open(&storage).await?;
        let cluster = Cluster::open(recovered.store, recovered.partitions, BrokerConfig::default()).await.map_err(anyhow::Error::msg)?;
        cluster
            .create_topic(TOPIC, args.partitions, &BTreeMap::new(), false)
            .await
            .map_err(|error| anyhow::anyhow!("creating the topic: {}", error.message))?;
        let partitions = cluster.topic(TOPIC).context("the topic")?.partitions();
        println!(
            "views bench: dir={} records={} partitions={} cores={} (views: one task each; checkpoint every {} ms)",
            work.path().display(),
            args.records,
            args.partitions,
            std::thread::available_parallelism().map_or(1, |cores| cores.get()),
            args.checkpoint_interval_ms
        );

        let started = Instant::now();
        for start in (0..args.records).step_by(100_000) {
            append(&partitions, start..(start + 100_000).min(args.records), false).await?;
        }
        println!("setup: {} records appended in {:.1} s", args.records, started.elapsed().as_secs_f64());

        // The floor: decoding the same values with serde_json alone, on one core.
        let values: Vec<Vec<u8>> = (0..args.records.min(200_000)).map(value).collect();
        let started = Instant::now();
        let mut fields = 0usize;
        for value in &values {
            let parsed: serde_json::Value = serde_json::from_slice(value)?;
            fields += parsed.as_object().map_or(0, |object| object.len());
        }
        let parse_per_s = values.len() as f64 / started.elapsed().as_secs_f64();
        std::hint::black_box(fields);

        let config = MaterializerConfig {
            data_dir: work.path().to_path_buf(),
            checkpoint_interval: Duration::from_millis(args.checkpoint_interval_ms.max(1)),
            limits: Default::default(),
        };
        let materializer = Materializer::open(cluster.clone(), config).await?;
        let engine = QueryEngine::with_materializer(cluster.clone(), QueryLimits::default(), Some(materializer.clone()))?;
        let started = Instant::now();
        engine.execute(&format!("CREATE MATERIALIZED VIEW fleet AS SELECT vehicle_id, region, status, speed, \"engine.temp\" AS temp FROM \"{TOPIC}\"")).await?;
        engine.execute("CREATE INDEX fleet_region ON fleet (region)").await?;
        wait_caught_up(&materializer, Duration::from_secs(3600)).await?;
        let elapsed = started.elapsed().as_secs_f64();
        let throughput = args.records as f64 / elapsed;
        println!(
            "materialization: {:>10.0} records/s ({} records in {:.2} s, JSON decode + DataFusion projection + row store + index)",
            throughput, args.records, elapsed
        );
        println!(
            "  limit: serde_json parse alone {:>10.0} records/s on one core (ratio {:.2})",
            parse_per_s,
            throughput / parse_per_s
        );

        // Steady load: one batch per partition every 10 ms.
        let tick = Duration::from_millis(10);
        let per_tick = (args.rate / 100).max(args.partitions as usize);
        let ticks = args.load_seconds * 100;
        let mut next = args.records;
        let load_started = Instant::now();
        for tick_index in 0..ticks {
            append(&partitions, next..next + per_tick, true).await?;
            next += per_tick;
            let due = load_started + tick * (tick_index as u32 + 1);
            tokio::time::sleep_until(due.into()).await;
        }
        let load_elapsed = load_started.elapsed().as_secs_f64();
        wait_caught_up(&materializer, Duration::from_secs(600)).await?;
        let view = materializer.view("fleet").context("the view")?;
        let mut freshness: Vec<f64> = {
            let status = view.lock_status();
            status.partitions.values().flat_map(|progress| progress.freshness.window_ms().collect::<Vec<_>>()).collect()
        };
        freshness.sort_by(f64::total_cmp);
        anyhow::ensure!(!freshness.is_empty(), "no freshness was measured");
        println!(
            "freshness under {:.0} records/s ({} acks): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms (produce ack to visible in the view)",
            (next - args.records) as f64 / load_elapsed,
            freshness.len(),
            quantile(&freshness, 0.5),
            quantile(&freshness, 0.99),
            freshness[freshness.len() - 1]
        );

        let rows = view.store.read().len();
        let sql = "SELECT count(*), avg(speed) FROM fleet WHERE region = 'r42'";
        let (indexed_ms, indexed_scan, indexed_answer) = time_query(&engine, sql, args.query_runs).await?;
        engine.execute("DROP INDEX fleet_region").await?;
        let (scan_ms, full_scan, scan_answer) = time_query(&engine, sql, args.query_runs).await?;
        anyhow::ensure!(indexed_answer == scan_answer, "the index answered {indexed_answer}, the scan {scan_answer}");
        println!("query over {rows} rows, 1% selective (`{sql}`), median of {}:", args.query_runs);
        println!("  index:     {indexed_ms:>9.2} ms ({indexed_scan})");
        println!("  full scan: {scan_ms:>9.2} ms ({full_scan}); the index is {:.0}x faster", scan_ms / indexed_ms);
        materializer.shutdown().await;
        anyhow::Ok(())
    })
}
