//! SQL over topics and system tables, on a real cluster over an in-memory zoned device:
//! records appended through the partition logs, read back through DataFusion.

use std::collections::BTreeMap;
use std::sync::Arc;

use broker::cluster::{BrokerConfig, Cluster};
use broker::log::batch::{self, Compression, SimpleRecord};
use broker::log::{LogConfig, LogStore};
use broker::zone::mem::MemZonedDevice;
use broker::zone::{ZoneGeometry, ZonedDevice};
use bytes::BytesMut;
use datafusion::arrow::array::AsArray;
use datafusion::arrow::datatypes::Int64Type;
use datafusion::arrow::util::pretty::pretty_format_batches;
use query::{QueryEngine, QueryError, QueryLimits, QueryOutput};

const ZONE_BYTES: u64 = 1 << 20;

async fn cluster(zone_count: u32) -> Arc<Cluster> {
    let geometry = ZoneGeometry {
        zone_size_bytes: ZONE_BYTES,
        zone_capacity_bytes: ZONE_BYTES,
        zone_count,
        max_open_zones: 4,
        max_active_zones: zone_count,
    };
    let device: Arc<dyn ZonedDevice> = Arc::new(MemZonedDevice::new(geometry).unwrap());
    // Small write chunks and cache, so reads of older data come from the device.
    let config = LogConfig { write_chunk_bytes: 64 << 10, recent_cache_bytes_max: 64 << 10, ..LogConfig::default() };
    let recovered = LogStore::open(device, config).await.unwrap();
    Cluster::open(recovered.store, recovered.partitions, BrokerConfig::default()).await.unwrap()
}

async fn create(cluster: &Cluster, name: &str, partitions: i32) {
    cluster.create_topic(name, partitions, &BTreeMap::new(), false).await.unwrap().unwrap();
}

/// Appends one batch to a partition and waits until it is durable (readable).
async fn append(cluster: &Cluster, topic: &str, partition: i32, records: &[SimpleRecord], compression: Compression) {
    let batch = batch::encode_batch(records, compression).unwrap();
    let partition = cluster.topic(topic).unwrap().partition(partition).unwrap();
    let flush = partition
        .with_log(|log| {
            log.append(BytesMut::from(&batch[..]), 0).unwrap();
            log.start_flush()
        })
        .unwrap();
    flush.complete().await.unwrap();
}

fn text(output: &QueryOutput) -> String {
    pretty_format_batches(&output.batches).unwrap().to_string()
}

fn single_i64(output: &QueryOutput) -> i64 {
    assert_eq!(output.row_count(), 1, "{}", text(output));
    let column = output.batches.iter().find(|b| b.num_rows() > 0).unwrap().column(0);
    column.as_primitive::<Int64Type>().value(0)
}

fn engine(cluster: &Arc<Cluster>) -> QueryEngine {
    QueryEngine::new(cluster.clone(), QueryLimits::default()).unwrap()
}

fn vehicle(i: usize) -> SimpleRecord {
    let regions = ["north", "south", "east"];
    let value = format!(r#"{{"id":"v{i}","region":"{}","speed":{}}}"#, regions[i % 3], i % 100);
    let key = format!("v{}", i % 10);
    SimpleRecord::new(Some(key.as_bytes()), Some(value.as_bytes()), &[("source", Some(b"test"))], 1_700_000_000_000 + i as i64)
}

#[tokio::test]
async fn topics_read_back_with_filters_json_and_headers() {
    let cluster = cluster(32).await;
    create(&cluster, "vehicles", 3).await;
    let mut expected_per_partition = [0i64; 3];
    for chunk in 0..30usize {
        let records: Vec<SimpleRecord> = (chunk * 10..chunk * 10 + 10).map(vehicle).collect();
        let partition = (chunk % 3) as i32;
        let compression = [Compression::None, Compression::Gzip, Compression::Zstd][chunk % 3];
        append(&cluster, "vehicles", partition, &records, compression).await;
        expected_per_partition[partition as usize] += 10;
    }
    // A null value and a non-UTF-8 value: text columns are NULL, bytes columns exact.
    append(&cluster, "vehicles", 0, &[SimpleRecord::new(Some(b"k"), None, &[], 5), SimpleRecord::new(None, Some(&[0xff, 0xfe]), &[], 6)], Compression::None).await;
    let engine = engine(&cluster);

    let all = engine.execute("SELECT count(*) FROM vehicles").await.unwrap();
    assert_eq!(single_i64(&all), 302);
    let per_partition = engine.execute("SELECT partition, count(*) AS n, min(\"offset\") AS first FROM vehicles GROUP BY partition ORDER BY partition").await.unwrap();
    let rendered = text(&per_partition);
    assert!(rendered.contains("| 0         | 102 | 0     |"), "{rendered}");
    assert!(rendered.contains("| 1         | 100 | 0     |"), "{rendered}");

    let ranged = engine.execute("SELECT count(*) FROM vehicles WHERE partition = 1 AND \"offset\" >= 20 AND \"offset\" < 45").await.unwrap();
    assert_eq!(single_i64(&ranged), 25);
    let in_list = engine.execute("SELECT count(*) FROM vehicles WHERE partition IN (0, 2) AND \"offset\" BETWEEN 0 AND 9").await.unwrap();
    assert_eq!(single_i64(&in_list), 20);

    let json = engine.execute("SELECT json_get_str(value, 'region') AS region, count(*) AS n FROM vehicles WHERE value IS NOT NULL GROUP BY region ORDER BY region").await.unwrap();
    let rendered = text(&json);
    assert!(rendered.contains("| east   | 100 |"), "{rendered}");
    assert!(rendered.contains("| north  | 100 |"), "{rendered}");

    let odd = engine.execute("SELECT key, value, value_bytes, key_bytes FROM vehicles WHERE partition = 0 AND \"offset\" >= 100 ORDER BY \"offset\"").await.unwrap();
    let rendered = text(&odd);
    assert!(rendered.contains("| k   |       |             | 6b        |"), "{rendered}");
    assert!(rendered.contains("|     |       | fffe        |           |"), "{rendered}");

    let headers = engine.execute("SELECT headers FROM vehicles WHERE partition = 2 AND \"offset\" = 0").await.unwrap();
    assert!(text(&headers).contains("{key: source, value: 74657374}"), "{}", text(&headers));

    let timestamps = engine
        .execute("SELECT count(*) FROM vehicles WHERE \"timestamp\" >= to_timestamp_millis(1700000000100) AND \"timestamp\" < to_timestamp_millis(1700000000200)")
        .await
        .unwrap();
    assert_eq!(single_i64(&timestamps), 100);
    let limited = engine.execute("SELECT * FROM vehicles LIMIT 7").await.unwrap();
    assert_eq!(limited.row_count(), 7);
}

#[tokio::test]
async fn system_tables_describe_topics_partitions_and_zones() {
    let cluster = cluster(16).await;
    create(&cluster, "a", 2).await;
    create(&cluster, "b", 1).await;
    append(&cluster, "a", 1, &[vehicle(1), vehicle(2)], Compression::None).await;
    let engine = engine(&cluster);
    let topics = engine.execute("SELECT name, partitions FROM system.topics ORDER BY name").await.unwrap();
    let rendered = text(&topics);
    assert!(rendered.contains("| a    | 2          |") && rendered.contains("| b    | 1          |"), "{rendered}");
    let partitions = engine.execute("SELECT topic, partition, log_start_offset, high_watermark FROM system.partitions WHERE topic = 'a' ORDER BY partition").await.unwrap();
    let rendered = text(&partitions);
    assert!(rendered.contains("| a     | 1         | 0                | 2              |"), "{rendered}");
    let zones = engine.execute("SELECT count(*) FROM system.zones WHERE topic = 'a' AND partition = 1 AND write_pointer_bytes > 0").await.unwrap();
    assert_eq!(single_i64(&zones), 1);
    let all_zones = engine.execute("SELECT count(*) FROM system.zones").await.unwrap();
    assert_eq!(single_i64(&all_zones), 16);
    let configs = engine.execute("SELECT value FROM system.topic_configs WHERE topic = 'b' AND name = 'cleanup.policy'").await.unwrap();
    assert!(text(&configs).contains("delete"));
    let tables = engine.execute("SELECT table_schema, table_name FROM information_schema.tables WHERE table_schema IN ('public', 'system') ORDER BY 1, 2").await.unwrap();
    let rendered = text(&tables);
    assert!(rendered.contains("| public       | a ") && rendered.contains("| system       | zones "), "{rendered}");
}

/// A time range over a topic spread over more than 100 zones reads only the zones holding it,
/// shown by the scan's own metrics in EXPLAIN ANALYZE.
#[tokio::test]
async fn a_time_range_reads_only_the_zones_it_needs() {
    let cluster = cluster(140).await;
    create(&cluster, "metrics", 1).await;
    // ~256 KiB batches of 64 records of 4 KiB, timestamps increasing by one per record: about
    // three batches per 1 MiB zone.
    let value = "x".repeat(4000);
    let mut next_ts = 1_000_000i64;
    for _ in 0..420 {
        let records: Vec<SimpleRecord> = (0..64)
            .map(|_| {
                next_ts += 1;
                SimpleRecord::new(None, Some(value.as_bytes()), &[], next_ts)
            })
            .collect();
        append(&cluster, "metrics", 0, &records, Compression::None).await;
    }
    let engine = engine(&cluster);
    let zones = engine.execute("SELECT count(*) FROM system.zones WHERE topic = 'metrics'").await.unwrap();
    let zone_count = single_i64(&zones);
    assert!(zone_count >= 100, "the topic spans {zone_count} zones");
    // 64 * 20 records in the middle: about seven zones.
    let (from, to) = (1_000_000 + 64 * 200, 1_000_000 + 64 * 220);
    let sql = format!("SELECT count(*) FROM metrics WHERE \"timestamp\" > to_timestamp_millis({from}) AND \"timestamp\" <= to_timestamp_millis({to})");
    assert_eq!(single_i64(&engine.execute(&sql).await.unwrap()), 64 * 20);
    let explained = text(&engine.execute(&format!("EXPLAIN ANALYZE {sql}")).await.unwrap());
    let zones_read: i64 = explained
        .split("zones_read=")
        .nth(1)
        .and_then(|rest| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|digits| digits.parse().ok())
        .unwrap_or_else(|| panic!("no zones_read metric in {explained}"));
    eprintln!("time range: read {zones_read} of {zone_count} zones");
    assert!((1..=10).contains(&zones_read), "read {zones_read} of {zone_count} zones:\n{explained}");
}

/// Time bounds never lose rows when timestamps are out of order (inside batches, across
/// batches and zones, compressed or not): every range answers what a full scan answers.
#[tokio::test]
async fn time_bounds_are_exact_with_out_of_order_timestamps() {
    let cluster = cluster(40).await;
    create(&cluster, "jumbled", 1).await;
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let value = "y".repeat(3000);
    let mut timestamps = Vec::new();
    for batch_index in 0..300 {
        let records: Vec<SimpleRecord> = (0..20)
            .map(|_| {
                // Mostly rising, with jumps back of up to 5000 ms.
                let ts = 100_000 + batch_index as i64 * 100 - (next() % 5000) as i64;
                timestamps.push(ts);
                SimpleRecord::new(None, Some(value.as_bytes()), &[], ts)
            })
            .collect();
        let compression = if batch_index % 4 == 0 { Compression::Lz4 } else { Compression::None };
        append(&cluster, "jumbled", 0, &records, compression).await;
    }
    let engine = engine(&cluster);
    for _ in 0..12 {
        let from = 95_000 + (next() % 32_000) as i64;
        let to = from + (next() % 6_000) as i64;
        let expected = timestamps.iter().filter(|&&ts| ts >= from && ts < to).count() as i64;
        let sql = format!("SELECT count(*) FROM jumbled WHERE \"timestamp\" >= to_timestamp_millis({from}) AND \"timestamp\" < to_timestamp_millis({to})");
        assert_eq!(single_i64(&engine.execute(&sql).await.unwrap()), expected, "[{from}, {to})");
    }
}

#[tokio::test]
async fn bad_sql_fails_clearly_and_writes_are_refused() {
    let cluster = cluster(8).await;
    create(&cluster, "t", 1).await;
    let limits = QueryLimits { memory_bytes_max: 8 << 20, ..QueryLimits::default() };
    let engine = QueryEngine::new(cluster.clone(), limits).unwrap();
    let error = engine.execute("SELEC 1").await.unwrap_err().to_string();
    assert!(error.contains("SELEC"), "{error}");
    let error = engine.execute("SELECT nope FROM t").await.unwrap_err().to_string();
    assert!(error.contains("nope"), "{error}");
    let error = engine.execute("SELECT * FROM missing_topic").await.unwrap_err().to_string();
    assert!(error.contains("missing_topic"), "{error}");
    let error = engine.execute("CREATE TABLE x AS SELECT 1").await.unwrap_err().to_string();
    assert!(error.to_lowercase().contains("ddl"), "{error}");
    // Over the memory limit: an error, not an abort.
    let error = engine
        .execute("SELECT a.value, count(*) FROM (SELECT repeat('x', 1000) || CAST(v AS VARCHAR) AS value FROM generate_series(1, 200000) AS g(v)) a GROUP BY a.value ORDER BY 2")
        .await
        .unwrap_err();
    assert!(matches!(error, QueryError::DataFusion(_)) && error.to_string().contains("Resources exhausted"), "{error}");
    // And the engine still answers.
    assert_eq!(engine.execute("SELECT 1").await.unwrap().row_count(), 1);
    let long = format!("SELECT {}", "1+".repeat(1 << 20));
    assert!(matches!(engine.execute(&long).await.unwrap_err(), QueryError::TooLong { .. }));
}

#[tokio::test]
async fn a_slow_query_times_out() {
    let cluster = cluster(8).await;
    let limits = QueryLimits { timeout: std::time::Duration::from_millis(200), ..QueryLimits::default() };
    let engine = QueryEngine::new(cluster, limits).unwrap();
    let started = std::time::Instant::now();
    let error = engine.execute("SELECT count(*) FROM generate_series(1, 100000000000) a").await.unwrap_err();
    assert!(matches!(error, QueryError::Timeout(_)), "{error}");
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[tokio::test]
async fn system_partitions_shows_a_full_device() {
    let cluster = cluster(16).await;
    create(&cluster, "fill", 1).await;
    create(&cluster, "other", 1).await;
    let engine = engine(&cluster);
    assert_eq!(storage_full(&engine).await, vec![false]);
    // Appends until the device refuses one (KAFKA_STORAGE_ERROR for a producer).
    let value = vec![b'x'; 200 << 10];
    let batch = batch::encode_batch(&[SimpleRecord::new(None, Some(&value), &[], 0)], Compression::None).unwrap();
    let partition = cluster.topic("fill").unwrap().partition(0).unwrap();
    let mut refused = false;
    for _ in 0..200 {
        let appended = partition.with_log(|log| log.append(BytesMut::from(&batch[..]), 0).map(|_| log.start_flush())).unwrap();
        match appended {
            Ok(flush) => {
                flush.complete().await.unwrap();
            }
            Err(error) => {
                assert!(error.to_string().contains("no free zone"), "{error}");
                refused = true;
                break;
            }
        }
    }
    assert!(refused, "the device filled up");
    let answer = engine.execute("SELECT topic, storage_full FROM system.partitions ORDER BY topic").await.unwrap();
    let rendered = text(&answer);
    assert!(rendered.contains("| fill  | true ") && rendered.contains("| other | true "), "{rendered}");
    // A topic deletion frees its zones: appends work again and the flag clears.
    cluster.delete_topic("fill", None).await.unwrap();
    cluster.store().settle().await.unwrap();
    assert_eq!(storage_full(&engine).await, vec![false]);
}

/// The distinct values of system.partitions' storage_full.
async fn storage_full(engine: &QueryEngine) -> Vec<bool> {
    let answer = engine.execute("SELECT DISTINCT storage_full FROM system.partitions").await.unwrap();
    answer.batches.iter().flat_map(|batch| batch.column(0).as_boolean().iter().flatten().collect::<Vec<_>>()).collect()
}
