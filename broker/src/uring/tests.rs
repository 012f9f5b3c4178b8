use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::*;
use crate::buf::BLOCK_SIZE;

const FILE_BYTES: u64 = 8 << 20;

fn direct_file() -> (tempfile::TempDir, File) {
    // /tmp is ext4 here; tmpfs would refuse O_DIRECT.
    let dir = tempfile::Builder::new()
        .prefix("yotta-uring")
        .tempdir_in("/tmp")
        .unwrap();
    let path = dir.path().join("data");
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .unwrap();
    file.set_len(FILE_BYTES).unwrap();
    (dir, file)
}

/// The backends to test: always pwritev, and io_uring when this kernel/sandbox allows it.
fn kinds() -> Vec<IoBackendChoice> {
    let mut choices = vec![IoBackendChoice::Sync];
    match ring::setup(QUEUE_DEPTH_MIN) {
        Ok(_) => choices.push(IoBackendChoice::IoUring),
        Err(error) => eprintln!("io_uring unavailable here ({error}); testing pwritev only"),
    }
    choices
}

fn start(choice: IoBackendChoice, queue_depth: u32) -> (tempfile::TempDir, IoDriver) {
    let (dir, file) = direct_file();
    let driver = IoDriver::start(file, choice, queue_depth).unwrap();
    match choice {
        IoBackendChoice::Sync => assert_eq!(driver.kind(), IoBackendKind::Sync),
        IoBackendChoice::IoUring => assert_eq!(driver.kind(), IoBackendKind::IoUring),
        IoBackendChoice::Auto => {}
    }
    (dir, driver)
}

fn block_of(byte: u8, blocks: usize) -> AlignedBuf {
    let mut buf = AlignedBuf::with_capacity(blocks * BLOCK_SIZE);
    buf.extend_from_slice(&vec![byte; blocks * BLOCK_SIZE]);
    buf
}

#[test]
fn write_read_round_trip() {
    for choice in kinds() {
        let (_dir, driver) = start(choice, QUEUE_DEPTH_DEFAULT);
        let mut buf = AlignedBuf::with_capacity(3 * BLOCK_SIZE);
        for i in 0..3 * BLOCK_SIZE {
            buf.extend_from_slice(&[(i % 251) as u8]);
        }
        let returned = driver.write_at(4 * BLOCK_SIZE as u64, buf).wait().unwrap();
        assert_eq!(
            returned.len(),
            3 * BLOCK_SIZE,
            "the buffer comes back for reuse"
        );
        let read = driver.read_at(
            4 * BLOCK_SIZE as u64,
            AlignedBuf::with_capacity(4 * BLOCK_SIZE),
            3 * BLOCK_SIZE,
        );
        let read = read.wait().unwrap();
        assert_eq!(&read[..], &returned[..], "{choice:?}");
        assert_eq!(driver.queue_depth_now(), 0);
        // Async callers await the same handles.
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let again = runtime
            .block_on(driver.read_at(4 * BLOCK_SIZE as u64, read, BLOCK_SIZE))
            .unwrap();
        assert_eq!(again.len(), BLOCK_SIZE);
        assert_eq!(again[1], 1);
    }
}

#[test]
fn many_concurrent_writes_then_one_sync() {
    for choice in kinds() {
        let (_dir, driver) = start(choice, QUEUE_DEPTH_MIN);
        let writes_count = 500; // more than the queue depth: submitted in rounds
        let threads: Vec<_> = (0..4)
            .map(|thread| {
                let driver = driver.clone();
                std::thread::spawn(move || {
                    let pending: Vec<_> = (0..writes_count / 4)
                        .map(|i| {
                            let block = thread * (writes_count / 4) + i;
                            driver.write_at((block * BLOCK_SIZE) as u64, block_of(block as u8, 1))
                        })
                        .collect();
                    pending
                        .into_iter()
                        .map(|p| p.wait().unwrap().len() / BLOCK_SIZE)
                        .sum::<usize>()
                })
            })
            .collect();
        let written: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
        assert_eq!(written, writes_count);
        driver.sync_data().wait().unwrap();
        let all = driver.read_at(
            0,
            AlignedBuf::with_capacity(writes_count * BLOCK_SIZE),
            writes_count * BLOCK_SIZE,
        );
        let all = all.wait().unwrap();
        for block in 0..writes_count {
            assert!(all[block * BLOCK_SIZE..(block + 1) * BLOCK_SIZE]
                .iter()
                .all(|&b| b == block as u8));
        }
    }
}

#[test]
fn queued_syncs_share_fsyncs() {
    for choice in kinds() {
        let (_dir, driver) = start(choice, QUEUE_DEPTH_DEFAULT);
        let syncs_count = 100;
        // Interleaved appends and flushes from many "partitions", none waited for in between.
        let mut writes = Vec::new();
        let mut syncs = Vec::new();
        for i in 0..syncs_count {
            writes.push(driver.write_at((i * BLOCK_SIZE) as u64, block_of(7, 1)));
            syncs.push(driver.sync_data());
        }
        for pending in writes {
            pending.wait().unwrap();
        }
        for pending in syncs {
            pending.wait().unwrap();
        }
        let stats = driver.stats();
        assert_eq!(stats.syncs_requested, syncs_count as u64);
        assert!(stats.fsyncs_issued >= 1);
        assert!(
            stats.fsyncs_issued < syncs_count as u64 / 4,
            "{choice:?}: no group commit: {stats:?}"
        );
        eprintln!(
            "{choice:?}: {syncs_count} syncs served by {} fsyncs, {stats:?}",
            stats.fsyncs_issued
        );
    }
}

/// Syncs complete in the order sent, although several fsyncs may be in flight and complete out
/// of order: once a sync completed, every earlier one has.
#[test]
fn syncs_complete_in_order_with_overlapping_fsyncs() {
    for choice in kinds() {
        let (_dir, driver) = start(choice, QUEUE_DEPTH_DEFAULT);
        for round in 0..20usize {
            let mut writes = Vec::new();
            let mut syncs = Vec::new();
            for i in 0..20usize {
                // Larger writes for some, so that writes (and the syncs after them) complete at
                // different times.
                let blocks = 1 + (i * 7 + round) % 16;
                let mut buf = crate::buf::AlignedBuf::with_capacity(blocks * BLOCK_SIZE);
                buf.extend_zeros(blocks * BLOCK_SIZE);
                writes.push(driver.write_at(((round * 20 + i) * 16 * BLOCK_SIZE) as u64, buf));
                syncs.push(driver.sync_data());
            }
            let last = syncs.len() - 1;
            let mut syncs = syncs;
            let final_sync = syncs.pop().expect("non-empty");
            final_sync.wait().unwrap();
            for (index, sync) in syncs.iter_mut().enumerate() {
                assert!(sync.try_take().is_some_and(|result| result.is_ok()), "{choice:?}: sync {index} of {last} not complete after the last");
            }
            for write in writes {
                write.wait().unwrap();
            }
        }
    }
}

#[test]
fn write_then_sync_then_read_sees_the_data() {
    for choice in kinds() {
        let (_dir, driver) = start(choice, QUEUE_DEPTH_DEFAULT);
        for round in 0..50u8 {
            let offset = (round as usize % 8 * BLOCK_SIZE) as u64;
            // Pipelined: nothing is waited for until all three are queued.
            let write = driver.write_at(offset, block_of(round, 1));
            let sync = driver.sync_data();
            let read = driver.read_at(offset, AlignedBuf::with_capacity(BLOCK_SIZE), BLOCK_SIZE);
            let read = read.wait().unwrap();
            assert!(read.iter().all(|&b| b == round), "{choice:?} round {round}");
            write.wait().unwrap();
            sync.wait().unwrap();
        }
        driver.sync_all().wait().unwrap();
    }
}

#[test]
fn errors_reach_the_caller() {
    for choice in kinds() {
        let (_dir, driver) = start(choice, QUEUE_DEPTH_DEFAULT);
        // O_DIRECT refuses a length that is not a multiple of the logical block size.
        let mut short = AlignedBuf::with_capacity(BLOCK_SIZE);
        short.extend_from_slice(b"not a block");
        let error = driver.write_at(0, short).wait().unwrap_err();
        assert_eq!(
            error.raw_os_error(),
            Some(libc::EINVAL),
            "{choice:?}: {error}"
        );
        // Reading past the end of the file.
        let error = driver
            .read_at(
                FILE_BYTES,
                AlignedBuf::with_capacity(BLOCK_SIZE),
                BLOCK_SIZE,
            )
            .wait()
            .unwrap_err();
        assert_eq!(
            error.kind(),
            io::ErrorKind::UnexpectedEof,
            "{choice:?}: {error}"
        );
        // A read straddling the end: a short transfer, a continuation, then end of file.
        let error = driver.read_at(
            FILE_BYTES - BLOCK_SIZE as u64,
            AlignedBuf::with_capacity(2 * BLOCK_SIZE),
            2 * BLOCK_SIZE,
        );
        let error = error.wait().unwrap_err();
        assert_eq!(
            error.kind(),
            io::ErrorKind::UnexpectedEof,
            "{choice:?}: {error}"
        );
        assert!(
            error.to_string().contains("after 4096 bytes"),
            "{choice:?}: {error}"
        );
        // A read into a buffer that is too small never reaches the thread.
        let error = driver
            .read_at(0, AlignedBuf::with_capacity(BLOCK_SIZE), 2 * BLOCK_SIZE)
            .wait()
            .unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        // A failing barrier step.
        let error = driver.allocate(0, 0, 0).wait().unwrap_err();
        assert_eq!(
            error.raw_os_error(),
            Some(libc::EINVAL),
            "{choice:?}: {error}"
        );
        // The driver still works after errors.
        driver.write_at(0, block_of(1, 1)).wait().unwrap();
        driver.sync_data().wait().unwrap();
        assert_eq!(driver.queue_depth_now(), 0);
    }
}

#[test]
fn allocate_is_ordered_after_earlier_writes() {
    for choice in kinds() {
        let (_dir, driver) = start(choice, QUEUE_DEPTH_DEFAULT);
        let write = driver.write_at(0, block_of(9, 4));
        // Punching the hole must happen after the write, and the read after the punch.
        let punch = driver.allocate(
            0,
            4 * BLOCK_SIZE as u64,
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
        );
        let read = driver.read_at(0, AlignedBuf::with_capacity(4 * BLOCK_SIZE), 4 * BLOCK_SIZE);
        write.wait().unwrap();
        punch.wait().unwrap();
        assert!(read.wait().unwrap().iter().all(|&b| b == 0), "{choice:?}");
        let steps = vec![
            Step::Write {
                offset: BLOCK_SIZE as u64,
                buf: block_of(3, 1),
            },
            Step::SyncData,
            Step::SyncAll,
        ];
        driver.sequence(steps).wait().unwrap();
        let read = driver
            .read_at(0, AlignedBuf::with_capacity(2 * BLOCK_SIZE), 2 * BLOCK_SIZE)
            .wait()
            .unwrap();
        assert!(read[..BLOCK_SIZE].iter().all(|&b| b == 0));
        assert!(read[BLOCK_SIZE..].iter().all(|&b| b == 3));
        assert!(driver.sequence(Vec::new()).wait().is_err());
    }
}

#[test]
fn dropping_the_last_handle_completes_queued_work_and_stops_the_thread() {
    for choice in kinds() {
        let (_dir, driver) = start(choice, QUEUE_DEPTH_MIN);
        let exited = driver.exited_flag();
        let clone = driver.clone();
        let pending: Vec<_> = (0..100)
            .map(|i| driver.write_at(i * BLOCK_SIZE as u64, block_of(1, 1)))
            .collect();
        let sync = driver.sync_data();
        drop(driver);
        assert!(
            !exited.load(Ordering::Acquire),
            "a clone still holds the thread"
        );
        drop(clone);
        // The last drop waits for the thread to finish what was queued.
        assert!(exited.load(Ordering::Acquire), "{choice:?}");
        for p in pending {
            p.wait().unwrap();
        }
        sync.wait().unwrap();
    }
}

#[test]
fn queue_depth_is_bounded_and_choice_parses() {
    let (_dir, file) = direct_file();
    let error = IoDriver::start(
        file.try_clone().unwrap(),
        IoBackendChoice::Sync,
        QUEUE_DEPTH_MIN - 1,
    )
    .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    let error = IoDriver::start(
        file.try_clone().unwrap(),
        IoBackendChoice::Sync,
        QUEUE_DEPTH_MAX + 1,
    )
    .unwrap_err();
    assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    let driver = IoDriver::start(file, IoBackendChoice::Auto, QUEUE_DEPTH_MAX).unwrap();
    assert!(!driver.kind().to_string().is_empty());
    assert_eq!(IoBackendKind::IoUring.to_string(), "io_uring");
    assert_eq!(IoBackendKind::Sync.to_string(), "pwritev");
    assert_eq!("auto".parse::<IoBackendChoice>(), Ok(IoBackendChoice::Auto));
    assert_eq!(
        "io_uring".parse::<IoBackendChoice>(),
        Ok(IoBackendChoice::IoUring)
    );
    assert_eq!(
        "pwritev".parse::<IoBackendChoice>(),
        Ok(IoBackendChoice::Sync)
    );
    assert!("aio".parse::<IoBackendChoice>().is_err());
}

#[test]
fn queue_depth_now_counts_outstanding_requests() {
    for choice in kinds() {
        let (_dir, driver) = start(choice, QUEUE_DEPTH_MIN);
        let pending: Vec<_> = (0..64)
            .map(|i| driver.write_at(i * BLOCK_SIZE as u64, block_of(2, 1)))
            .collect();
        assert!(driver.queue_depth_now() <= 64);
        for p in pending {
            p.wait().unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while driver.queue_depth_now() != 0 {
            assert!(Instant::now() < deadline);
            std::thread::yield_now();
        }
    }
}
