//! Tests of `PartitionLog` reads: the read cache, readahead and device reads agree.

use super::*;
use bytes::Bytes;
use crate::log::batch::{encode_batch, Compression, SimpleRecord};
use crate::log::read::ReadPlan;
use crate::log::{LogStore, PartitionId};
use crate::zone::mem::MemZonedDevice;
use crate::zone::ZoneGeometry;
use crate::zone::ZonedDevice;
use std::sync::atomic::Ordering;

/// Reads answered by the read cache are exactly what the device answers, at every offset
/// and budget, as batches are evicted, and after delete-records and retention move the log
/// start; deleting the partition frees its cached bytes.
#[test]
fn cache_reads_equal_device_reads_across_eviction_retention_and_delete_records() {
    let geometry = ZoneGeometry {
        zone_size_bytes: 64 << 10,
        zone_capacity_bytes: 64 << 10,
        zone_count: 16,
        max_open_zones: 4,
        max_active_zones: 16,
    };
    let open = |cache_bytes: usize| {
        let config = LogConfig {
            write_chunk_bytes: 16 << 10,
            index_interval_bytes: 2048,
            recent_cache_bytes_max: cache_bytes,
            read_window_bytes: 8 << 10,
        };
        let device: Arc<dyn ZonedDevice> = Arc::new(MemZonedDevice::new(geometry).unwrap());
        crate::pending::block_on(LogStore::open(device, config))
            .unwrap()
            .store
    };
    let id = PartitionId {
        topic: "t".into(),
        topic_id: [1; 16],
        partition: 0,
    };
    let (device_store, cached_store) = (open(0), open(40 << 10));
    let mut device_log = device_store.create_partition(id.clone());
    let mut cached_log = cached_store.create_partition(id);
    let cache = cached_store.allocator().read_cache(0).clone();
    assert_eq!(cache.bytes_max(), 40 << 10);
    // What a fetch gathers: reads (each within one zone) continued until the budget is
    // spent, the first batch whatever its size.
    let read_all =
        |log: &PartitionLog, offset: i64, max_bytes: usize| -> Result<Vec<Bytes>, LogError> {
            let mut batches: Vec<Bytes> = Vec::new();
            let mut total = 0;
            let mut next = offset;
            loop {
                let plan = match log.read(next, max_bytes.saturating_sub(total)) {
                    Ok(plan) => plan,
                    Err(error) if batches.is_empty() => return Err(error),
                    Err(_) => break,
                };
                let mut progressed = false;
                for batch in plan.wait()? {
                    if total + batch.len() > max_bytes && !batches.is_empty() {
                        break;
                    }
                    next = batch::parse_header(&batch).unwrap().last_offset() + 1;
                    total += batch.len();
                    batches.push(batch);
                    progressed = true;
                }
                if !progressed || total >= max_bytes || next >= log.high_watermark() {
                    return Ok(batches);
                }
            }
            Ok(batches)
        };
    let compare = |device_log: &PartitionLog, cached_log: &PartitionLog, label: &str| {
        assert_eq!(device_log.log_start_offset(), cached_log.log_start_offset());
        assert_eq!(device_log.high_watermark(), cached_log.high_watermark());
        let mut from_cache = 0;
        for offset in 0..=cached_log.high_watermark() + 1 {
            for max_bytes in [0, 3000, 20_000, 1 << 20] {
                let expected = read_all(device_log, offset, max_bytes);
                if matches!(cached_log.read(offset, max_bytes), Ok(ReadPlan::Ready(ref batches)) if !batches.is_empty())
                {
                    from_cache += 1;
                }
                let got = read_all(cached_log, offset, max_bytes);
                match (&expected, &got) {
                    (Ok(expected), Ok(got)) => {
                        let summary = |batches: &Vec<Bytes>| -> Vec<(i64, usize)> {
                            batches
                                .iter()
                                .map(|batch| {
                                    (batch::parse_header(batch).unwrap().base_offset, batch.len())
                                })
                                .collect()
                        };
                        assert_eq!(
                            summary(expected),
                            summary(got),
                            "{label}: offset {offset} max {max_bytes}"
                        );
                        assert!(expected == got, "{label}: offset {offset} max {max_bytes}: same batches, different bytes");
                    }
                    (Err(expected), Err(got)) => assert_eq!(
                        expected.to_string(),
                        got.to_string(),
                        "{label}: offset {offset}"
                    ),
                    _ => {
                        panic!("{label}: offset {offset} max {max_bytes}: {expected:?} vs {got:?}")
                    }
                }
            }
        }
        assert!(cache.bytes() <= 40 << 10);
        from_cache
    };
    let mut appended = 0;
    let mut append =
        |device_log: &mut PartitionLog, cached_log: &mut PartitionLog, count: usize| {
            for _ in 0..count {
                let records: Vec<Vec<u8>> = (0..1 + appended % 3)
                    .map(|r| vec![(appended + r) as u8; 500 + (appended * 331) % 3000])
                    .collect();
                let simple: Vec<SimpleRecord> = records
                    .iter()
                    .map(|value| SimpleRecord::new(None, Some(value), &[], 1))
                    .collect();
                let batch = encode_batch(&simple, Compression::None).unwrap();
                device_log.append(BytesMut::from(&batch[..]), 0).unwrap();
                cached_log.append(BytesMut::from(&batch[..]), 0).unwrap();
                appended += 1;
                if appended % 4 != 0 {
                    device_log.start_flush().wait().unwrap();
                    cached_log.start_flush().wait().unwrap();
                }
            }
        };
    append(&mut device_log, &mut cached_log, 30);
    // Not yet flushed batches are cached but not served.
    assert!(compare(&device_log, &cached_log, "first appends") > 0);
    device_log.start_flush().wait().unwrap();
    cached_log.start_flush().wait().unwrap();
    append(&mut device_log, &mut cached_log, 40);
    device_log.start_flush().wait().unwrap();
    cached_log.start_flush().wait().unwrap();
    assert!(
        cached_log.zone_ids().len() > 3,
        "several zones, so that retention releases some"
    );
    assert!(compare(&device_log, &cached_log, "after eviction") > 0);
    let high_watermark = cached_log.high_watermark();
    for log in [&mut device_log, &mut cached_log] {
        log.delete_records(high_watermark - 5, 0)
            .unwrap()
            .wait()
            .unwrap();
    }
    compare(&device_log, &cached_log, "after delete-records");
    assert!(cache.bytes() > 0);
    append(&mut device_log, &mut cached_log, 10);
    for log in [&mut device_log, &mut cached_log] {
        log.start_flush().wait().unwrap();
        log.apply_retention(0, None, Some(0));
    }
    compare(&device_log, &cached_log, "after retention");
    // Retention to 0 bytes drops every durable run: the log starts at its end, and nothing
    // wholly below the log start stays cached.
    assert_eq!(cached_log.log_start_offset(), cached_log.high_watermark());
    if let Some((first_cached, _)) = cached_log.cache().range() {
        let first = cached_log
            .cache()
            .read(first_cached, i64::MAX, 0)
            .expect("cached");
        assert!(
            batch::parse_header(&first[0]).unwrap().last_offset() >= cached_log.log_start_offset()
        );
    }
    cached_log.delete();
    assert_eq!(cache.bytes(), 0, "topic deletion frees the cached batches");
}

/// Eight 1 MiB zones, two open at once: small enough for a test to fill several.
fn small_geometry() -> ZoneGeometry {
    ZoneGeometry {
        zone_size_bytes: 1 << 20,
        zone_capacity_bytes: 1 << 20,
        zone_count: 8,
        max_open_zones: 2,
        max_active_zones: 8,
    }
}

/// A partition of 40 durable batches of 1000 to 6000 bytes on a small device, without a read
/// cache, so every read goes to the device or to readahead.
fn log_of_40_batches() -> (LogStore, PartitionLog) {
    let config = LogConfig {
        write_chunk_bytes: 16 << 10,
        index_interval_bytes: 2048,
        recent_cache_bytes_max: 0,
        read_window_bytes: 8 << 10,
    };
    let device: Arc<dyn ZonedDevice> = Arc::new(MemZonedDevice::new(small_geometry()).unwrap());
    let store = crate::pending::block_on(LogStore::open(device, config))
        .unwrap()
        .store;
    let mut log = store.create_partition(PartitionId {
        topic: "t".into(),
        topic_id: [1; 16],
        partition: 0,
    });
    for i in 0..40usize {
        let value = vec![i as u8; 1000 + (i * 797) % 5000];
        let batch = encode_batch(
            &[SimpleRecord::new(None, Some(&value), &[], 1)],
            Compression::None,
        )
        .unwrap();
        log.append(BytesMut::from(&batch[..]), 0).unwrap();
        log.start_flush().wait().unwrap();
    }
    (store, log)
}

fn readahead_reserved_bytes(store: &LogStore) -> usize {
    store
        .allocator()
        .readahead_reserved()
        .load(Ordering::Relaxed)
}

/// A sequential consumer reading from where readahead started is answered by the readahead
/// reads, at every offset in them (also inside one an earlier read took the head of), with a
/// non-empty prefix of what a device read of the same budget gives (the rest is read next).
#[test]
fn readahead_answers_as_the_device_would() {
    let (_store, mut log) = log_of_40_batches();
    for (offset, ahead_bytes, max_bytes) in [
        (3i64, 20_000usize, 20_000usize),
        (7, 20_000, 5_000),
        (7, 5_000, 60_000),
        (10, 1, 1),
    ] {
        let readaheads = log.start_readahead(offset, ahead_bytes);
        assert_eq!(readaheads.len(), READAHEAD_DEPTH_MAX, "offset {offset}");
        let ids: Vec<u64> = readaheads.iter().map(Readahead::id).collect();
        for readahead in readaheads {
            crate::pending::block_on(readahead.run());
        }
        let mut at = offset;
        while at < log.high_watermark() {
            let plan = log.read(at, max_bytes).unwrap();
            if !matches!(plan, ReadPlan::Readahead { .. }) {
                break;
            }
            let got = plan.wait().unwrap();
            let expected = log.device_read(at, max_bytes).wait().unwrap();
            assert!(
                !got.is_empty() && expected.starts_with(&got),
                "offset {offset} at {at} ahead {ahead_bytes} max {max_bytes}"
            );
            at = batch::parse_header(got.last().unwrap())
                .unwrap()
                .last_offset()
                + 1;
        }
        assert!(
            at > offset + READAHEAD_DEPTH_MAX as i64 - 1,
            "read ahead to {at}"
        );
        // An offset before the readahead reads the device.
        assert!(matches!(
            log.read(offset - 1, max_bytes).unwrap(),
            ReadPlan::Device { .. }
        ));
        for id in ids {
            log.drop_readahead(id);
        }
    }
}

/// Readahead stays `READAHEAD_DEPTH_MAX` reads deep ahead of a sequential consumer (each
/// consecutive), restarts where a consumer that went elsewhere reads (an earlier read's
/// expiry does not drop the new one from the same offset), is bounded by the device's
/// budget, gives its bytes back when dropped, and retention or delete-records past its reads
/// drop them.
#[test]
fn readahead_keeps_several_reads_ahead_within_its_budgets() {
    let (store, mut log) = log_of_40_batches();
    let first = log.start_readahead(0, 5_000);
    assert_eq!(first.len(), READAHEAD_DEPTH_MAX);
    let starts: Vec<i64> = first.iter().map(Readahead::offset).collect();
    assert_eq!(starts[0], 0);
    assert!(starts.windows(2).all(|pair| pair[0] < pair[1]));
    // Inside the first read: nothing to add. At the second: one more, after the last.
    assert!(log.start_readahead(starts[1] - 1, 5_000).is_empty());
    let more = log.start_readahead(starts[1], 5_000);
    assert_eq!(more.len(), 1);
    assert!(more[0].offset() > starts[READAHEAD_DEPTH_MAX - 1]);
    assert_eq!(log.readahead_count(), READAHEAD_DEPTH_MAX);
    // Back to offset 0: the reads ahead of it are dropped and started again from there.
    let again = log.start_readahead(0, 5_000);
    assert_eq!(again[0].offset(), 0);
    assert_eq!(log.readahead_count(), READAHEAD_DEPTH_MAX);
    // The first read from 0 expiring does not drop the one started again from there.
    log.drop_readahead(first[0].id());
    assert_eq!(log.readahead_count(), READAHEAD_DEPTH_MAX);
    assert!(readahead_reserved_bytes(&store) > 0);
    for readahead in &again {
        log.drop_readahead(readahead.id());
    }
    assert_eq!(readahead_reserved_bytes(&store), 0);
    // The device's budget: with all but a block of it taken, nothing is read ahead.
    let taken = Reservation::take(
        store.allocator().readahead_reserved(),
        READAHEAD_BYTES_MAX - 1000,
        READAHEAD_BYTES_MAX,
    )
    .unwrap();
    assert!(log.start_readahead(20, 1000).is_empty());
    drop(taken);
    // Delete-records drops the reads that start below the new log start.
    let started = log.start_readahead(25, 1000);
    assert!(started.len() >= 2);
    log.delete_records(started[1].offset(), 0)
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(log.readahead_count(), started.len() - 1);
    log.delete_records(log.high_watermark(), 0)
        .unwrap()
        .wait()
        .unwrap();
    assert_eq!(log.readahead_count(), 0);
    assert_eq!(readahead_reserved_bytes(&store), 0);
    // At the high watermark there is nothing to read ahead.
    assert!(log.start_readahead(log.high_watermark(), 1000).is_empty());
}

/// Device reads serve exactly the greedy prefix of batches that fits the budget (the first
/// whatever its size), whatever the window size, with small windows that cut frames.
#[test]
fn device_reads_fill_the_budget_exactly() {
    let geometry = small_geometry();
    for read_window_bytes in [4 << 10, 8 << 10, 256 << 10] {
        let config = LogConfig {
            write_chunk_bytes: 16 << 10,
            index_interval_bytes: 2048,
            recent_cache_bytes_max: 4 << 10,
            read_window_bytes,
        };
        let device: Arc<dyn ZonedDevice> = Arc::new(MemZonedDevice::new(geometry).unwrap());
        let store = crate::pending::block_on(LogStore::open(device, config))
            .unwrap()
            .store;
        let mut log = store.create_partition(PartitionId {
            topic: "t".into(),
            topic_id: [1; 16],
            partition: 0,
        });
        let mut sizes = Vec::new();
        for i in 0..24usize {
            let value = vec![i as u8; 1000 + (i * 797) % 5000];
            let batch = encode_batch(
                &[SimpleRecord::new(None, Some(&value), &[], 1)],
                Compression::None,
            )
            .unwrap();
            sizes.push(batch.len());
            log.append(BytesMut::from(&batch[..]), 0).unwrap();
            // Flush each batch: frames padded to blocks, as with acks=all.
            log.start_flush().wait().unwrap();
        }
        for max_bytes in [0, 1, 1500, 4096, 9000, 20_000, 33_333, 60_000, 200_000] {
            for start in [0usize, 5] {
                let batches = log.read(start as i64, max_bytes).unwrap().wait().unwrap();
                let mut expected = 0;
                let mut total = 0;
                for &size in &sizes[start..] {
                    if expected > 0 && total + size > max_bytes {
                        break;
                    }
                    total += size;
                    expected += 1;
                }
                let got: Vec<usize> = batches.iter().map(|batch| batch.len()).collect();
                assert_eq!(
                    got,
                    sizes[start..start + expected].to_vec(),
                    "window {read_window_bytes} max {max_bytes} start {start}"
                );
            }
        }
    }
}

/// A burst of seals that outruns the reclaimer (held off here) does not refuse appends: the
/// roll finishes sealed zones without their summaries once the device's active zones are used
/// up, and recovery scans those zones and finds every batch.
#[test]
fn sealed_zones_awaiting_summaries_never_refuse_a_roll() {
    let geometry = ZoneGeometry {
        zone_size_bytes: 64 << 10,
        zone_capacity_bytes: 64 << 10,
        zone_count: 32,
        max_open_zones: 4,
        max_active_zones: 4,
    };
    let config = LogConfig {
        write_chunk_bytes: 16 << 10,
        index_interval_bytes: 2048,
        recent_cache_bytes_max: 0,
        read_window_bytes: 64 << 10,
    };
    let device: Arc<dyn ZonedDevice> = Arc::new(MemZonedDevice::new(geometry).unwrap());
    let store = crate::pending::block_on(LogStore::open(device.clone(), config.clone()))
        .unwrap()
        .store;
    let id = PartitionId {
        topic: "t".into(),
        topic_id: [1; 16],
        partition: 0,
    };
    let mut log = store.create_partition(id);
    let finished_before = crate::metrics::global().zones_finished_unsummarized.get();
    let mut batches = Vec::new();
    {
        // The reclaimer cannot write any summary while this is held.
        let _reclaimer_held = store.streams().reclaim_lock();
        for i in 0..40u8 {
            let value = vec![i; 20_000];
            let batch = encode_batch(
                &[SimpleRecord::new(None, Some(&value), &[], 1)],
                Compression::None,
            )
            .unwrap();
            log.append(BytesMut::from(&batch[..]), 0)
                .unwrap_or_else(|error| panic!("append {i} with the reclaimer held: {error}"));
            batches.push(batch);
        }
        log.start_flush().wait().unwrap();
    }
    let finished = crate::metrics::global().zones_finished_unsummarized.get() - finished_before;
    assert!(finished >= 6, "40 batches of 20 kB seal about 13 zones of 64 KiB: {finished} finished");
    drop(log);
    drop(store);
    let recovered = crate::pending::block_on(LogStore::open(device, config)).unwrap();
    assert!(recovered.report.zones_scanned >= 6, "{:?}", recovered.report);
    let log = recovered.partitions.into_iter().next().expect("the partition recovered");
    assert_eq!(log.high_watermark(), 40);
    for (offset, expected) in batches.iter().enumerate() {
        let read = log.read(offset as i64, 1).unwrap().wait().unwrap();
        assert_eq!(&read[0][12..], &expected[12..], "batch {offset} after recovery");
    }
}

/// A transactional producer's batch: `count` records of `value_bytes`, sequence `base_sequence`.
fn transactional_batch(producer_id: i64, base_sequence: i32, count: usize, value_bytes: usize) -> BytesMut {
    let value = vec![7u8; value_bytes];
    let records: Vec<SimpleRecord> = (0..count).map(|_| SimpleRecord::new(None, Some(&value), &[], 1)).collect();
    let mut batch = BytesMut::from(&encode_batch(&records, Compression::None).unwrap()[..]);
    batch::set_transactional_producer(&mut batch, producer_id, 0, base_sequence).unwrap();
    batch
}

/// The open and aborted transactions of a partition survive a reopen, whether recovery reads
/// its zones' summaries (settled) or scans them (a crash before any summary was written).
#[test]
fn transactions_are_recovered_from_summaries_and_from_scans() {
    let geometry = ZoneGeometry {
        zone_size_bytes: 64 << 10,
        zone_capacity_bytes: 64 << 10,
        zone_count: 32,
        max_open_zones: 4,
        max_active_zones: 8,
    };
    let config = LogConfig {
        write_chunk_bytes: 16 << 10,
        index_interval_bytes: 2048,
        recent_cache_bytes_max: 0,
        read_window_bytes: 64 << 10,
    };
    for settle in [true, false] {
        let device: Arc<dyn ZonedDevice> = Arc::new(MemZonedDevice::new(geometry).unwrap());
        let store = crate::pending::block_on(LogStore::open(device.clone(), config.clone())).unwrap().store;
        let mut log = store.create_partition(PartitionId { topic: "t".into(), topic_id: [1; 16], partition: 0 });
        let mut sequences = [0i32; 3];
        for i in 0..40usize {
            let producer = i % 3;
            let batch = transactional_batch(100 + producer as i64, sequences[producer], 2, 3000);
            sequences[producer] += 2;
            log.append(batch, 0).unwrap();
            if i % 5 == 4 {
                // Ends the transaction of the producer after this one: commits and aborts alike.
                let ended = (producer + 1) % 3;
                log.append_marker(100 + ended as i64, 0, i % 10 == 4, 0, 0).unwrap();
            }
        }
        log.start_flush().wait().unwrap();
        if settle {
            crate::pending::block_on(store.settle()).unwrap();
        }
        let state = |log: &PartitionLog| (log.last_stable_offset(), log.aborted_between(0, i64::MAX), log.ongoing_transactions());
        let before = state(&log);
        assert!(!before.1.is_empty() && !before.2.is_empty(), "{before:?}");
        assert!(before.0 < log.high_watermark());
        drop(log);
        drop(store);
        let recovered = crate::pending::block_on(LogStore::open(device, config.clone())).unwrap();
        let log = recovered.partitions.into_iter().next().unwrap();
        assert_eq!(state(&log), before, "settled: {settle}, {:?}", recovered.report);
    }
}
