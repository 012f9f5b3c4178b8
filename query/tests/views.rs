//! Materialized views end to end on a real cluster (in-memory zoned device) and a real data
//! directory: DDL through `QueryEngine::execute`, maintenance from the partition logs, each
//! view compared with the same view computed from scratch, a restart after a crash between
//! checkpoints, and index pushdown shown by EXPLAIN and its `rows_read` metric.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::cluster::{BrokerConfig, Cluster};
use broker::log::batch::{self, Compression, SimpleRecord};
use broker::log::{LogConfig, LogStore};
use broker::zone::mem::MemZonedDevice;
use broker::zone::{ZoneGeometry, ZonedDevice};
use bytes::BytesMut;
use datafusion::arrow::util::pretty::pretty_format_batches;
use query::materializer::view::ViewLimits;
use query::materializer::{Materializer, MaterializerConfig};
use query::{QueryEngine, QueryLimits, QueryOutput};

async fn cluster() -> Arc<Cluster> {
    let geometry = ZoneGeometry {
        zone_size_bytes: 1 << 20,
        zone_capacity_bytes: 1 << 20,
        zone_count: 64,
        max_open_zones: 8,
        max_active_zones: 64,
    };
    let device: Arc<dyn ZonedDevice> = Arc::new(MemZonedDevice::new(geometry).unwrap());
    let recovered = LogStore::open(device, LogConfig::default()).await.unwrap();
    let cluster = Cluster::open(recovered.store, recovered.partitions, BrokerConfig::default()).await.unwrap();
    cluster.create_topic("vehicles", 2, &BTreeMap::new(), false).await.unwrap().unwrap();
    cluster
}

async fn open(cluster: &Arc<Cluster>, directory: &std::path::Path, checkpoint_interval_ms: u64) -> (Arc<Materializer>, QueryEngine) {
    open_with(cluster, directory, checkpoint_interval_ms, Default::default()).await
}

/// Tiny chunks and a memory budget smaller than one chunk: a few hundred records seal chunks,
/// spill them to their files, compact mostly dead ones and write delete files.
fn tiny_chunks() -> ViewLimits {
    ViewLimits {
        chunk_rows: 64,
        memory_bytes_max: 1,
        ..Default::default()
    }
}

async fn open_with(cluster: &Arc<Cluster>, directory: &std::path::Path, checkpoint_interval_ms: u64, limits: ViewLimits) -> (Arc<Materializer>, QueryEngine) {
    let config = MaterializerConfig {
        data_dir: directory.to_path_buf(),
        checkpoint_interval: Duration::from_millis(checkpoint_interval_ms),
        limits,
    };
    let materializer = Materializer::open(cluster.clone(), config).await.unwrap();
    let engine = QueryEngine::with_materializer(cluster.clone(), QueryLimits::default(), Some(materializer.clone())).unwrap();
    (materializer, engine)
}

/// A cluster with topic `vehicles`, a scratch data directory, views over both.
async fn setup(checkpoint_interval_ms: u64) -> (Arc<Cluster>, tempfile::TempDir, Arc<Materializer>, QueryEngine) {
    let cluster = cluster().await;
    let directory = tempfile::tempdir().unwrap();
    let (materializer, engine) = open(&cluster, directory.path(), checkpoint_interval_ms).await;
    (cluster, directory, materializer, engine)
}

/// The vehicle stream: Kafka key = vehicle id; regions and statuses change over time; some
/// values are not JSON, some are tombstones.
fn vehicle_record(i: usize) -> SimpleRecord {
    let vehicle = format!("v{}", i % 37);
    let timestamp_ms = 1_700_000_000_000 + i as i64;
    if i % 53 == 7 {
        return SimpleRecord::new(Some(vehicle.as_bytes()), None, &[], timestamp_ms);
    }
    if i % 41 == 3 {
        return SimpleRecord::new(Some(vehicle.as_bytes()), Some(b"{not json"), &[], timestamp_ms);
    }
    let regions = ["north", "south", "east", "west"];
    let statuses = ["moving", "idle", "maintenance"];
    let speed = if i % 5 == 0 { format!("{}.5", i % 90) } else { format!("{}", i % 90) };
    let value = format!(
        r#"{{"vehicle_id":"{vehicle}","region":"{}","status":"{}","speed":{speed},"engine":{{"temp":{}}},"seen_at":"2024-0{}-1{}T10:00:00Z"}}"#,
        regions[(i / 7) % 4],
        statuses[(i / 3) % 3],
        60 + i % 40,
        1 + i % 9,
        i % 10
    );
    SimpleRecord::new(Some(vehicle.as_bytes()), Some(value.as_bytes()), &[], timestamp_ms)
}

/// Appends records `range` (partition by vehicle, as a keyed producer would), durably.
async fn produce(cluster: &Arc<Cluster>, range: std::ops::Range<usize>) {
    let topic = cluster.topic("vehicles").unwrap();
    for chunk in range.collect::<Vec<_>>().chunks(50) {
        for partition in 0..2 {
            let records: Vec<SimpleRecord> = chunk.iter().filter(|&&i| (i % 37) % 2 == partition).map(|&i| vehicle_record(i)).collect();
            if records.is_empty() {
                continue;
            }
            let encoded = batch::encode_batch(&records, Compression::None).unwrap();
            let partition = topic.partition(partition as i32).unwrap();
            let flush = partition.with_log(|log| {
                log.append(BytesMut::from(&encoded[..]), 0).unwrap();
                log.start_flush()
            });
            let end = flush.unwrap().complete().await.unwrap();
            partition.acks.record(end, Instant::now());
            partition.data_ready.notify_waiters();
        }
    }
}

async fn sql(engine: &QueryEngine, text: &str) -> QueryOutput {
    match engine.execute(text).await {
        Ok(output) => output,
        Err(error) => panic!("{text}: {error}"),
    }
}

async fn sql_error(engine: &QueryEngine, text: &str) -> String {
    match engine.execute(text).await {
        Ok(output) => panic!("{text} succeeded: {}", pretty_format_batches(&output.batches).unwrap()),
        Err(error) => error.to_string(),
    }
}

/// Rows as sorted lines (views have no order).
async fn rows(engine: &QueryEngine, text: &str) -> Vec<String> {
    sorted_lines(&sql(engine, text).await)
}

/// An answer's rows as sorted lines, cells joined by `|`.
fn sorted_lines(output: &QueryOutput) -> Vec<String> {
    let mut lines = Vec::new();
    for batch in &output.batches {
        for row in 0..batch.num_rows() {
            let cells: Vec<String> = batch
                .columns()
                .iter()
                .map(|column| datafusion::arrow::util::display::array_value_to_string(column, row).unwrap())
                .collect();
            lines.push(cells.join("|"));
        }
    }
    lines.sort();
    lines
}

async fn wait_caught_up(materializer: &Materializer) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !materializer.caught_up() {
        assert!(Instant::now() < deadline, "views did not catch up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const DEFINITIONS: [(&str, &str); 3] = [
    ("latest", "AS SELECT vehicle_id, region, status, speed, \"engine.temp\" AS temp, seen_at FROM vehicles"),
    ("per_region", "AS SELECT region, status, count(*) AS n, sum(speed) AS speed_sum, min(speed) AS speed_min, max(\"engine.temp\") AS temp_max, avg(speed) AS speed_avg FROM vehicles GROUP BY region, status"),
    ("maintenance_log", "AS SELECT vehicle_id, _partition, _offset, _timestamp, region FROM vehicles WHERE status = 'maintenance'"),
];

fn create_statement(name: &str, from_scratch_suffix: &str) -> String {
    let (_, body) = DEFINITIONS.iter().find(|(view, _)| *view == name).unwrap();
    let key = if name == "latest" { " WITH (key = 'vehicle_id')" } else { "" };
    format!("CREATE MATERIALIZED VIEW {name}{from_scratch_suffix}{key} {body}")
}

/// Every view equals the same view created now, which computes it from scratch over the log.
async fn assert_views_equal_from_scratch(materializer: &Materializer, engine: &QueryEngine, suffix: &str) {
    for (name, _) in DEFINITIONS {
        sql(engine, &create_statement(name, suffix)).await;
    }
    wait_caught_up(materializer).await;
    for (name, _) in DEFINITIONS {
        let maintained = rows(engine, &format!("SELECT * FROM {name}")).await;
        let from_scratch = rows(engine, &format!("SELECT * FROM {name}{suffix}")).await;
        assert!(!maintained.is_empty(), "{name} is empty");
        assert_eq!(maintained, from_scratch, "{name} differs from its from-scratch computation");
        sql(engine, &format!("DROP MATERIALIZED VIEW {name}{suffix}")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_are_maintained_incrementally_and_equal_from_scratch() {
    let (cluster, directory, materializer, engine) = setup(50).await;
    produce(&cluster, 0..300).await;
    for (name, _) in DEFINITIONS {
        let answer = rows(&engine, &create_statement(name, "")).await;
        assert!(answer[0].starts_with("created materialized view"), "{answer:?}");
    }
    sql(&engine, "CREATE INDEX latest_region ON latest (region)").await;
    sql(&engine, "CREATE INDEX latest_status ON latest (status)").await;
    // Records arriving while the views run, in several micro-batches.
    for start in (300..2000).step_by(170) {
        produce(&cluster, start..start + 170).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    wait_caught_up(&materializer).await;

    // The upsert view against a reference computed here: latest value per vehicle in log
    // order, tombstones delete, undecodable records change nothing.
    let mut latest: BTreeMap<String, Option<String>> = BTreeMap::new();
    for i in 0..2000 {
        let record = vehicle_record(i);
        let key = String::from_utf8(record.key.unwrap().to_vec()).unwrap();
        match record.value {
            None => {
                latest.insert(key, None);
            }
            Some(value) if value.starts_with(b"{not") => {}
            Some(value) => {
                let value: serde_json::Value = serde_json::from_slice(&value).unwrap();
                latest.insert(key, Some(value["region"].as_str().unwrap().to_string()));
            }
        }
    }
    let expected: BTreeSet<String> = latest
        .iter()
        .filter_map(|(key, region)| region.as_ref().map(|region| format!("{key}|{region}")))
        .collect();
    let actual: BTreeSet<String> = rows(&engine, "SELECT vehicle_id, region FROM latest").await.into_iter().collect();
    assert_eq!(actual, expected);

    // The aggregate's counts against counting the topic itself.
    let counted = rows(&engine, "SELECT sum(n) FROM per_region").await;
    let decodable = (0..2000).filter(|i| i % 53 != 7 && i % 41 != 3).count();
    assert_eq!(counted, [decodable.to_string()]);

    // Freshness and progress are visible; dead letters are kept with their reason.
    let status = rows(
        &engine,
        "SELECT name, kind, sum(lag), count(freshness_ms_p99) > 0, max(dead_letters) > 0 FROM system.views GROUP BY name, kind",
    )
    .await;
    assert!(status.contains(&"latest|upsert|0|true|true".to_string()), "{status:?}");
    assert!(status.contains(&"per_region|aggregate|0|true|true".to_string()), "{status:?}");
    let letters = rows(&engine, "SELECT DISTINCT view, value_prefix FROM system.dead_letters").await;
    assert!(letters.contains(&"maintenance_log|{not json".to_string()), "{letters:?}");
    let shown = rows(&engine, "SHOW MATERIALIZED VIEWS").await;
    assert_eq!(shown.len(), 3);

    assert_views_equal_from_scratch(&materializer, &engine, "_scratch").await;

    // Parquet snapshots of the views are written at checkpoints.
    materializer.shutdown().await;
    for (name, _) in DEFINITIONS {
        let snapshot = directory.path().join("views").join(name).join("snapshot.parquet");
        assert!(snapshot.exists(), "{}", snapshot.display());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_checkpoints_resumes_and_equals_from_scratch() {
    crash_between_checkpoints(Default::default()).await;
}

/// The same over sealed chunks spilled to their files, compactions and delete files: what an
/// incremental checkpoint writes is enough to resume.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_between_incremental_checkpoints_of_spilled_chunks_resumes() {
    crash_between_checkpoints(tiny_chunks()).await;
}

async fn crash_between_checkpoints(limits: ViewLimits) {
    let cluster = cluster().await;
    let directory = tempfile::tempdir().unwrap();
    let (materializer, engine) = open_with(&cluster, directory.path(), 100, limits).await;
    for (name, _) in DEFINITIONS {
        sql(&engine, &create_statement(name, "")).await;
    }
    sql(&engine, "CREATE INDEX latest_region ON latest (region)").await;
    produce(&cluster, 0..800).await;
    wait_caught_up(&materializer).await;
    // Wait until a checkpoint covers this.
    let deadline = Instant::now() + Duration::from_secs(30);
    while rows(&engine, "SELECT count(*) FROM system.views WHERE checkpoint_offset < last_applied_offset").await != ["0"] {
        assert!(Instant::now() < deadline, "no checkpoint covered what was applied");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    produce(&cluster, 800..1200).await;
    wait_caught_up(&materializer).await;
    // Applied but (likely) not checkpointed: lost by the crash, re-applied after it.
    materializer.abort().await;
    produce(&cluster, 1200..1500).await;

    let (materializer, engine) = open_with(&cluster, directory.path(), 100, limits).await;
    // Resumed from the checkpoint, not from the start of the log.
    let resumed = rows(&engine, "SELECT count(*) FROM system.views WHERE checkpoint_offset >= 0").await;
    assert_eq!(resumed, ["6"], "every view and partition resumes from a checkpoint");
    wait_caught_up(&materializer).await;
    assert_views_equal_from_scratch(&materializer, &engine, "_scratch").await;
    let explain = rows(&engine, "EXPLAIN SELECT * FROM latest WHERE region = 'north'").await.join("\n");
    assert!(explain.contains("ViewIndexScanExec"), "the index was restored: {explain}");
    materializer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn equality_on_an_indexed_column_reads_only_the_matching_rows() {
    let (cluster, _directory, materializer, engine) = setup(1000).await;
    sql(&engine, &create_statement("maintenance_log", "")).await;
    sql(&engine, "CREATE INDEX log_region ON maintenance_log (region)").await;
    produce(&cluster, 0..3000).await;
    wait_caught_up(&materializer).await;

    let total = rows(&engine, "SELECT count(*) FROM maintenance_log").await;
    let matching = rows(&engine, "SELECT count(*) FROM maintenance_log WHERE region || '' = 'north'").await;
    let (total, matching): (usize, usize) = (total[0].parse().unwrap(), matching[0].parse().unwrap());
    assert!(matching > 0 && matching * 2 < total, "{matching} of {total}");

    let explain = rows(&engine, "EXPLAIN SELECT * FROM maintenance_log WHERE region = 'north'").await.join("\n");
    assert!(
        explain.contains("ViewIndexScanExec: view=maintenance_log, index=log_region, column=region, values=[north]"),
        "{explain}"
    );
    let analyzed = rows(&engine, "EXPLAIN ANALYZE SELECT * FROM maintenance_log WHERE region = 'north'")
        .await
        .join("\n");
    assert!(analyzed.contains(&format!("rows_read={matching}")), "{analyzed}");
    let full = rows(&engine, "EXPLAIN ANALYZE SELECT * FROM maintenance_log WHERE region || '' = 'north'")
        .await
        .join("\n");
    assert!(full.contains("ViewScanExec") && full.contains(&format!("rows_read={total}")), "{full}");

    // Same answers through the index as by scanning, for = and IN.
    assert_eq!(
        rows(&engine, "SELECT * FROM maintenance_log WHERE region = 'north'").await,
        rows(&engine, "SELECT * FROM maintenance_log WHERE region || '' = 'north'").await
    );
    assert_eq!(
        rows(&engine, "SELECT * FROM maintenance_log WHERE region IN ('north', 'east', 'nowhere')").await,
        rows(&engine, "SELECT * FROM maintenance_log WHERE region || '' IN ('north', 'east', 'nowhere')").await
    );
    let explain_in = rows(&engine, "EXPLAIN SELECT * FROM maintenance_log WHERE region IN ('north', 'east')")
        .await
        .join("\n");
    assert!(explain_in.contains("values=[east, north]"), "{explain_in}");
    materializer.shutdown().await;
}

/// An indexed `=` is answered by the index alone (no filter above the scan, its column not
/// read); a second indexed filter, and every filter once the index went between the pushdown
/// and the scan, is applied in the scan: the answers stay those of a full scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exact_index_pushdown_applies_what_its_lookup_does_not_answer() {
    use datafusion::catalog::TableProvider;
    use datafusion::logical_expr::{col, lit, TableProviderFilterPushDown};
    let (cluster, _directory, materializer, engine) = setup(1000).await;
    sql(&engine, &create_statement("latest", "")).await;
    sql(&engine, "CREATE INDEX latest_region ON latest (region)").await;
    sql(&engine, "CREATE INDEX latest_status ON latest (status)").await;
    produce(&cluster, 0..2000).await;
    wait_caught_up(&materializer).await;

    let explain = rows(&engine, "EXPLAIN SELECT vehicle_id FROM latest WHERE region = 'north'").await.join("\n");
    assert!(explain.contains("ViewIndexScanExec") && !explain.contains("FilterExec"), "{explain}");
    let both = "SELECT vehicle_id, speed FROM latest WHERE region = 'north' AND status IN ('idle', 'moving')";
    let scanned = rows(&engine, "SELECT vehicle_id, speed FROM latest WHERE region || '' = 'north' AND status || '' IN ('idle', 'moving')").await;
    assert!(!scanned.is_empty());
    assert_eq!(rows(&engine, both).await, scanned);
    let explain = rows(&engine, &format!("EXPLAIN {both}")).await.join("\n");
    assert!(explain.contains("ViewIndexScanExec") && explain.contains("FilterExec"), "{explain}");

    // The index goes between the pushdown and the scan: the scan filters by itself.
    let table = query::view_table::ViewTable::new(materializer.view("latest").unwrap());
    let filter = col("region").eq(lit("north"));
    assert_eq!(table.supports_filters_pushdown(&[&filter]).unwrap(), [TableProviderFilterPushDown::Exact]);
    sql(&engine, "DROP INDEX latest_region").await;
    let session = engine.session().unwrap();
    let plan = table.scan(&session.state(), Some(&vec![0]), &[filter], None).await.unwrap();
    let batches = datafusion::physical_plan::collect(plan, session.task_ctx()).await.unwrap();
    let mut ids = Vec::new();
    for batch in &batches {
        assert_eq!(batch.num_columns(), 1, "the filter's column is not handed out");
        for row in 0..batch.num_rows() {
            ids.push(datafusion::arrow::util::display::array_value_to_string(batch.column(0), row).unwrap());
        }
    }
    ids.sort();
    let expected = rows(&engine, "SELECT vehicle_id FROM latest WHERE region || '' = 'north'").await;
    assert!(!expected.is_empty());
    assert_eq!(ids, expected);
    materializer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upsert_moves_rows_between_index_lists() {
    let (cluster, _directory, materializer, engine) = setup(1000).await;
    sql(&engine, &create_statement("latest", "")).await;
    sql(&engine, "CREATE INDEX latest_status ON latest (status)").await;
    for start in (0..1500).step_by(100) {
        produce(&cluster, start..start + 100).await;
        wait_caught_up(&materializer).await;
        for status in ["moving", "idle", "maintenance"] {
            let indexed = rows(&engine, &format!("SELECT vehicle_id FROM latest WHERE status = '{status}'")).await;
            let scanned = rows(&engine, &format!("SELECT vehicle_id FROM latest WHERE status || '' = '{status}'")).await;
            assert_eq!(indexed, scanned, "status {status} after {start}");
        }
    }
    materializer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn definitions_are_refused_with_clear_messages_and_survive_restarts() {
    let (cluster, directory, materializer, engine) = setup(1000).await;
    assert!(sql_error(&engine, "CREATE MATERIALIZED VIEW vehicles AS SELECT a FROM vehicles")
        .await
        .contains("is a topic"));
    assert!(sql_error(&engine, "CREATE MATERIALIZED VIEW v AS SELECT a FROM nowhere")
        .await
        .contains("no topic nowhere"));
    assert!(sql_error(&engine, "CREATE MATERIALIZED VIEW v AS SELECT a, count(*) FROM vehicles")
        .await
        .contains("GROUP BY expression"));
    let unknown_function = sql_error(&engine, "CREATE MATERIALIZED VIEW v AS SELECT nosuchfunction(a) FROM vehicles").await;
    assert!(unknown_function.contains("nosuchfunction"), "{unknown_function}");
    assert!(sql_error(&engine, "CREATE INDEX i ON nowhere (a)")
        .await
        .contains("no materialized view nowhere"));
    assert!(sql_error(&engine, "CREATE TABLE t (a INT)").await.contains("not supported") || sql_error(&engine, "CREATE TABLE t (a INT)").await.contains("DDL"));
    sql(&engine, &create_statement("per_region", "")).await;
    assert!(sql_error(&engine, "CREATE INDEX i ON per_region (nope)").await.contains("no column"));
    assert!(sql_error(&engine, &create_statement("per_region", "")).await.contains("exists"));
    sql(&engine, "CREATE INDEX per_region_status ON per_region (status)").await;
    sql(&engine, &create_statement("maintenance_log", "")).await;
    sql(&engine, "DROP MATERIALIZED VIEW maintenance_log").await;
    materializer.shutdown().await;

    let (_materializer, engine) = open(&cluster, directory.path(), 1000).await;
    let shown = rows(&engine, "SHOW MATERIALIZED VIEWS").await;
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert!(shown[0].starts_with("per_region|aggregate|vehicles|per_region_status(status)|"), "{shown:?}");
    assert!(sql_error(&engine, "SELECT * FROM maintenance_log").await.contains("maintenance_log"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_over_spilled_chunks_equal_from_scratch_and_checkpoints_stay_incremental() {
    let cluster = cluster().await;
    let directory = tempfile::tempdir().unwrap();
    let (materializer, engine) = open_with(&cluster, directory.path(), 50, tiny_chunks()).await;
    for (name, _) in DEFINITIONS {
        sql(&engine, &create_statement(name, "")).await;
    }
    sql(&engine, "CREATE INDEX latest_status ON latest (status)").await;
    sql(&engine, "CREATE INDEX log_region ON maintenance_log (region)").await;
    for start in (0..3000).step_by(250) {
        produce(&cluster, start..start + 250).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    wait_caught_up(&materializer).await;
    // Chunks were sealed and written once each; the upsert view compacted its dead rows.
    let chunks = directory.path().join("views/maintenance_log/chunks");
    let files = std::fs::read_dir(&chunks).map(|entries| entries.count()).unwrap_or(0);
    assert!(files >= 2, "{files} chunk files in {}", chunks.display());
    let latest_rows: usize = rows(&engine, "SELECT count(*) FROM latest").await[0].parse().unwrap();
    assert!(latest_rows <= 37, "{latest_rows} rows for 37 vehicles");
    for status in ["moving", "idle", "maintenance"] {
        let indexed = rows(&engine, &format!("SELECT vehicle_id FROM latest WHERE status = '{status}'")).await;
        let scanned = rows(&engine, &format!("SELECT vehicle_id FROM latest WHERE status || '' = '{status}'")).await;
        assert_eq!(indexed, scanned, "status {status}");
    }
    assert_eq!(
        rows(&engine, "SELECT * FROM maintenance_log WHERE region = 'north'").await,
        rows(&engine, "SELECT * FROM maintenance_log WHERE region || '' = 'north'").await
    );
    // An upsert view's key lookup reads only the key's live row.
    let analyzed = rows(&engine, "EXPLAIN ANALYZE SELECT * FROM latest WHERE vehicle_id = 'v5'").await.join("\n");
    assert!(analyzed.contains("ViewIndexScanExec") && analyzed.contains("rows_read=1"), "{analyzed}");
    assert_views_equal_from_scratch(&materializer, &engine, "_scratch").await;
    materializer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drop_that_cannot_be_persisted_leaves_the_view_running() {
    let (cluster, directory, materializer, engine) = setup(50).await;
    sql(&engine, &create_statement("maintenance_log", "")).await;
    produce(&cluster, 0..300).await;
    wait_caught_up(&materializer).await;
    // The definitions file is replaced through `definitions.tmp`: a directory there makes the
    // write fail as a full or broken disk would.
    let blocker = directory.path().join("views").join("definitions.tmp");
    std::fs::create_dir_all(&blocker).unwrap();
    let error = sql_error(&engine, "DROP MATERIALIZED VIEW maintenance_log").await;
    assert!(error.contains("definitions"), "{error}");
    // Still shown, queried and maintained: its task was not left running unseen.
    assert_eq!(rows(&engine, "SHOW MATERIALIZED VIEWS").await.len(), 1);
    let before: usize = rows(&engine, "SELECT count(*) FROM maintenance_log").await[0].parse().unwrap();
    produce(&cluster, 300..900).await;
    wait_caught_up(&materializer).await;
    let after: usize = rows(&engine, "SELECT count(*) FROM maintenance_log").await[0].parse().unwrap();
    assert!(after > before, "the view stopped applying: {before} then {after}");
    std::fs::remove_dir(&blocker).unwrap();
    sql(&engine, "DROP MATERIALIZED VIEW maintenance_log").await;
    assert!(rows(&engine, "SHOW MATERIALIZED VIEWS").await.is_empty());
    assert!(!directory.path().join("views/maintenance_log").exists());
    materializer.shutdown().await;
}

/// Views and SQL over topics read committed data only: nothing of an open transaction until
/// its commit, nothing of an aborted one ever, and no marker as a row.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn views_and_topic_scans_read_committed_data_only() {
    let (cluster, _directory, materializer, engine) = setup(60_000).await;
    cluster.create_topic("payments", 1, &BTreeMap::new(), false).await.unwrap().unwrap();
    let partition = cluster.topic("payments").unwrap().partition(0).unwrap();
    let append = |ids: &[i64], producer: Option<i64>| {
        let records: Vec<SimpleRecord> =
            ids.iter().map(|id| SimpleRecord::new(None, Some(format!("{{\"id\": {id}}}").as_bytes()), &[], 1_700_000_000_000)).collect();
        let mut encoded = batch::encode_batch(&records, Compression::None).unwrap();
        if let Some(producer_id) = producer {
            batch::set_transactional_producer(&mut encoded, producer_id, 0, 0).unwrap();
        }
        partition.with_log(|log| log.append(BytesMut::from(&encoded[..]), 0).map(|_| ()).unwrap()).unwrap();
    };
    let marker = |producer_id: i64, commit: bool| {
        partition.with_log(|log| log.append_marker(producer_id, 0, commit, 0, 0).map(|_| ()).unwrap()).unwrap();
    };
    let flush = || async {
        let end = partition.with_log(|log| log.start_flush()).unwrap().complete().await.unwrap();
        partition.acks.record(end, Instant::now());
        partition.data_ready.notify_waiters();
    };
    append(&[0], None); // 0
    append(&[100, 101], Some(7)); // 1-2, aborted below
    append(&[200], Some(8)); // 3, committed below
    marker(7, false); // 4
    append(&[1], None); // 5
    flush().await;
    sql(&engine, "CREATE MATERIALIZED VIEW paid AS SELECT id FROM payments").await;
    wait_caught_up(&materializer).await;
    assert_eq!(rows(&engine, "SELECT id FROM paid").await, vec!["0"], "stops at producer 8's open transaction");
    assert_eq!(rows(&engine, "SELECT value FROM payments").await, vec![r#"{"id": 0}"#]);
    marker(8, true); // 6
    flush().await;
    wait_caught_up(&materializer).await;
    let committed = vec!["0", "1", "200"];
    assert_eq!(rows(&engine, "SELECT id FROM paid").await, committed);
    let values: Vec<String> = committed.iter().map(|id| format!("{{\"id\": {id}}}")).collect();
    assert_eq!(rows(&engine, "SELECT value FROM payments").await, values);
    assert_eq!(rows(&engine, "SELECT count(*) FROM payments").await, vec!["3"]);
}

/// The answer's column names and types, and its rows sorted.
async fn answer(engine: &QueryEngine, text: &str) -> (Vec<String>, Vec<String>) {
    let output = sql(engine, text).await;
    let columns = output.schema.fields().iter().map(|field| format!("{}: {}", field.name(), field.data_type())).collect();
    (columns, sorted_lines(&output))
}

/// Queries whose `{p}` is an indexed filter answered directly, and the same queries with
/// `{p}` hidden from the index (`|| ''`), which DataFusion plans and runs over every row.
const DIRECT_QUERIES: [&str; 12] = [
    "SELECT * FROM latest WHERE {p}",
    "SELECT vehicle_id, speed FROM latest WHERE {p}",
    "SELECT speed * 2 AS doubled, upper(vehicle_id), seen_at FROM latest WHERE {p}",
    "SELECT count(*), avg(speed), sum(speed), min(speed), max(vehicle_id), count(temp) FROM latest WHERE {p}",
    "SELECT count(*) / 2 AS half, sum(temp) + 1 FROM latest WHERE {p}",
    "SELECT vehicle_id FROM latest WHERE {p} AND speed > 40",
    "SELECT avg(speed) FROM latest WHERE {p} AND status = 'idle'",
    "SELECT * FROM maintenance_log WHERE {p}",
    "SELECT count(*), max(_offset), min(_timestamp) FROM maintenance_log WHERE {p}",
    "SELECT _partition, _offset FROM maintenance_log WHERE {p} LIMIT 100000",
    "SELECT count(*) FROM (SELECT _offset FROM maintenance_log WHERE {p} LIMIT 9)",
    "SELECT sum(speed) FROM latest WHERE {p} OFFSET 0",
];

async fn direct_answers_equal_datafusion_answers(limits: ViewLimits) {
    let cluster = cluster().await;
    let directory = tempfile::tempdir().unwrap();
    let (materializer, engine) = open_with(&cluster, directory.path(), 1000, limits).await;
    sql(&engine, &create_statement("latest", "")).await;
    sql(&engine, &create_statement("maintenance_log", "")).await;
    sql(&engine, "CREATE INDEX latest_region ON latest (region)").await;
    sql(&engine, "CREATE INDEX log_region ON maintenance_log (region)").await;
    produce(&cluster, 0..3000).await;
    wait_caught_up(&materializer).await;

    let predicates = [
        ("region = 'north'", "region || '' = 'north'"),
        ("region IN ('east', 'west', 'nowhere')", "region || '' IN ('east', 'west', 'nowhere')"),
        ("region = 'nowhere'", "region || '' = 'nowhere'"),
    ];
    let mut answered = engine.direct_answers();
    for query in DIRECT_QUERIES {
        for (indexed, hidden) in predicates {
            let reference = answer(&engine, &query.replace("{p}", hidden)).await;
            assert_eq!(engine.direct_answers(), answered, "{query} with {hidden} is not an indexed lookup");
            // Recognised at its first run, kept and answered from the cache at the second.
            for run in 0..2 {
                let direct = answer(&engine, &query.replace("{p}", indexed)).await;
                answered += 1;
                assert_eq!(engine.direct_answers(), answered, "{query} with {indexed} (run {run}) was not answered directly");
                assert_eq!(direct, reference, "{query} with {indexed} (run {run})");
            }
        }
    }
    assert_eq!(engine.direct_statements(), DIRECT_QUERIES.len() * predicates.len());

    // A LIMIT below the row count keeps that many of the matching rows.
    let all = answer(&engine, "SELECT _offset, _partition FROM maintenance_log WHERE region || '' = 'north'").await.1;
    let some = answer(&engine, "SELECT _offset, _partition FROM maintenance_log WHERE region = 'north' LIMIT 7").await.1;
    assert_eq!(some.len(), 7);
    assert!(some.iter().all(|row| all.contains(row)), "{some:?}");
    // What the direct form does not cover goes to DataFusion.
    answered = engine.direct_answers();
    sql(&engine, "SELECT * FROM latest WHERE region = 'north' ORDER BY vehicle_id").await;
    sql(&engine, "SELECT status, count(*) FROM latest WHERE region = 'north' GROUP BY status").await;
    sql(&engine, "EXPLAIN SELECT * FROM latest WHERE region = 'north'").await;
    assert_eq!(engine.direct_answers(), answered);
    materializer.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_answers_of_indexed_lookups_equal_datafusion_answers() {
    direct_answers_equal_datafusion_answers(ViewLimits::default()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_answers_over_spilled_chunks_equal_datafusion_answers() {
    direct_answers_equal_datafusion_answers(tiny_chunks()).await;
}

/// A kept statement follows the catalog: DROP/CREATE INDEX and MATERIALIZED VIEW through this
/// engine or through another one over the same views, and time-dependent plans are not kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_statements_follow_view_and_index_changes() {
    let (cluster, directory, materializer, engine) = setup(1000).await;
    let other = QueryEngine::with_materializer(cluster.clone(), QueryLimits::default(), Some(materializer.clone())).unwrap();
    sql(&engine, &create_statement("maintenance_log", "")).await;
    sql(&engine, "CREATE INDEX log_region ON maintenance_log (region)").await;
    produce(&cluster, 0..3000).await;
    wait_caught_up(&materializer).await;
    let query = "SELECT count(*), sum(_offset) FROM maintenance_log WHERE region = 'north'";
    let reference = "SELECT count(*), sum(_offset) FROM maintenance_log WHERE region || '' = 'north'";
    let before = rows(&engine, reference).await;
    for _ in 0..2 {
        assert_eq!(rows(&engine, query).await, before);
    }
    assert_eq!((engine.direct_statements(), engine.direct_answers()), (1, 2));

    // Without the index the filter is DataFusion's again; with it, the index's.
    sql(&engine, "DROP INDEX log_region").await;
    assert_eq!(engine.direct_statements(), 0);
    assert_eq!(rows(&engine, query).await, before);
    assert_eq!((engine.direct_statements(), engine.direct_answers()), (0, 2));
    sql(&engine, "CREATE INDEX log_region ON maintenance_log (region)").await;
    assert_eq!(rows(&engine, query).await, before);
    assert_eq!((engine.direct_statements(), engine.direct_answers()), (1, 3));

    // Another engine drops the index, then the view, and makes a view of that name over other
    // rows: the kept statement is not reused for either.
    sql(&other, "DROP INDEX log_region").await;
    assert_eq!(rows(&engine, query).await, before);
    assert_eq!(engine.direct_answers(), 3);
    sql(&engine, "CREATE INDEX log_region ON maintenance_log (region)").await;
    assert_eq!(rows(&engine, query).await, before);
    let dropped = Arc::downgrade(&materializer.view("maintenance_log").unwrap());
    sql(&other, "DROP MATERIALIZED VIEW maintenance_log").await;
    // The statement `engine` keeps does not keep the dropped view (and its rows) alive.
    let deadline = Instant::now() + Duration::from_secs(10);
    while dropped.upgrade().is_some() {
        assert!(Instant::now() < deadline, "the dropped view is still held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(engine.direct_statements(), 1);
    assert!(sql_error(&engine, query).await.contains("maintenance_log"));
    sql(
        &other,
        "CREATE MATERIALIZED VIEW maintenance_log AS SELECT _offset, region FROM vehicles WHERE status = 'idle'",
    )
    .await;
    sql(&other, "CREATE INDEX log_region ON maintenance_log (region)").await;
    wait_caught_up(&materializer).await;
    let after = rows(&engine, reference).await;
    assert_ne!(after, before);
    assert_eq!(rows(&engine, query).await, after);
    assert_eq!(rows(&engine, query).await, after);
    assert_eq!(engine.direct_statements(), 1);

    // `now()` is folded into the plan as a constant: such a plan is answered, never kept.
    let answered = engine.direct_answers();
    let timed = "SELECT count(*) FROM maintenance_log WHERE region = 'north' AND _offset < extract(epoch from now())";
    assert_eq!(rows(&engine, timed).await, rows(&engine, "SELECT count(*) FROM maintenance_log WHERE region = 'north'").await);
    assert_eq!(engine.direct_answers(), answered + 2);
    assert_eq!(engine.direct_statements(), 2);
    drop(directory);
    materializer.shutdown().await;
}

/// Aggregates over more rows than one thread takes (32,768) are split over the cores, their
/// accumulators merged: the same answer as DataFusion's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_aggregates_split_over_threads_equal_datafusion_answers() {
    let (cluster, _directory, materializer, engine) = setup(1000).await;
    sql(&engine, "CREATE MATERIALIZED VIEW everything AS SELECT vehicle_id, region, speed, _offset FROM vehicles").await;
    sql(&engine, "CREATE INDEX everything_region ON everything (region)").await;
    produce(&cluster, 0..70_000).await;
    wait_caught_up(&materializer).await;
    let all = "region IN ('north', 'south', 'east', 'west')";
    let query = "SELECT count(*), avg(speed), sum(_offset), min(vehicle_id), max(speed) FROM everything WHERE {p}";
    let reference = answer(&engine, &query.replace("{p}", &format!("{all} OR region IS NULL"))).await;
    assert!(reference.1[0].split('|').next().unwrap().parse::<usize>().unwrap() > 32_768 * 2, "{reference:?}");
    let answered = engine.direct_answers();
    for _ in 0..2 {
        assert_eq!(answer(&engine, &query.replace("{p}", all)).await, reference);
    }
    assert_eq!(engine.direct_answers(), answered + 2);
    materializer.shutdown().await;
}
