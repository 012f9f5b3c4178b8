//! Stress test of the CAS linked list: several threads insert, remove, look up and scan one
//! list at once; every operation is recorded with the logical times of its invocation and
//! response, and the history is checked afterwards:
//!
//! - per position, the inserts, removes and lookups with their results must have a
//!   linearization (Wing & Gong search over a boolean register: present or not), and so must
//!   the final contents read after all threads joined;
//! - every scan is ascending without duplicates, sees every position present for its whole
//!   duration in every linearization, and no position absent for its whole duration (a Harris
//!   traversal is weakly consistent, not a snapshot: positions changed during the scan may go
//!   either way, and the checker allows exactly that).
//!
//! The criteria are conservative (they never reject a correct history) and the test is
//! randomized with fixed seeds, so a failure is reproducible and names the seed.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};

use materializer::index::{CasIndex, CasList};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Insert,
    Remove,
    Contains,
}

#[derive(Clone, Copy, Debug)]
struct Op {
    kind: Kind,
    result: bool,
    invoke: u64,
    response: u64,
}

#[derive(Debug)]
struct Scan {
    seen: Vec<u64>,
    invoke: u64,
    response: u64,
}

/// One thread's record of what it did.
#[derive(Default)]
struct ThreadHistory {
    ops: Vec<(u64, Op)>,
    scans: Vec<Scan>,
}

/// xorshift64*: a deterministic generator, so that a seed reproduces a schedule's inputs.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

struct Workload {
    threads: usize,
    ops_per_thread: usize,
    positions: u64,
    /// Percent of operations that are scans.
    scan_percent: u64,
}

fn run(seed: u64, workload: &Workload) -> (Vec<ThreadHistory>, Vec<(u64, Op)>) {
    let list = Arc::new(CasList::new());
    let clock = Arc::new(AtomicU64::new(0));
    let start = Arc::new(Barrier::new(workload.threads));
    let handles: Vec<_> = (0..workload.threads)
        .map(|thread| {
            let (list, clock, start) = (list.clone(), clock.clone(), start.clone());
            let (ops, positions, scan_percent) = (workload.ops_per_thread, workload.positions, workload.scan_percent);
            std::thread::spawn(move || {
                let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (thread as u64 + 1) | 1);
                let mut history = ThreadHistory::default();
                // SeqCst ticks: invocation and response times totally ordered with each other.
                let tick = || clock.fetch_add(1, Ordering::SeqCst);
                start.wait();
                for _ in 0..ops {
                    let roll = rng.below(100);
                    if roll < scan_percent {
                        let invoke = tick();
                        let seen = list.positions(usize::MAX);
                        let response = tick();
                        history.scans.push(Scan { seen, invoke, response });
                        continue;
                    }
                    let position = rng.below(positions);
                    let kind = match roll % 3 {
                        0 => Kind::Insert,
                        1 => Kind::Remove,
                        _ => Kind::Contains,
                    };
                    let invoke = tick();
                    let result = match kind {
                        Kind::Insert => list.insert(position),
                        Kind::Remove => list.remove(position),
                        Kind::Contains => list.contains(position),
                    };
                    let response = tick();
                    history.ops.push((position, Op { kind, result, invoke, response }));
                }
                history
            })
        })
        .collect();
    let histories: Vec<ThreadHistory> = handles.into_iter().map(|handle| handle.join().expect("worker")).collect();
    // The final contents, read after every thread joined, as lookups that follow everything.
    let after = clock.fetch_add(1, Ordering::SeqCst);
    let present: HashSet<u64> = list.positions(usize::MAX).into_iter().collect();
    assert_eq!(list.len(), present.len(), "seed {seed}: len disagrees with the contents at rest");
    let finals = (0..workload.positions)
        .map(|position| {
            let result = present.contains(&position);
            assert_eq!(list.contains(position), result, "seed {seed}: contains({position}) disagrees with a scan at rest");
            (position, Op { kind: Kind::Contains, result, invoke: after + 1, response: after + 2 })
        })
        .collect();
    (histories, finals)
}

/// Whether the operations on one position have a linearization: an order that respects real
/// time (an operation that responded before another was invoked comes first) in which each
/// result is what a sequential set would answer. Depth-first search with memoisation of
/// (operations done, present).
fn linearizable(ops: &[Op]) -> bool {
    fn search(ops: &[Op], done: &mut Vec<u64>, count_done: usize, present: bool, seen: &mut HashSet<(Vec<u64>, bool)>) -> bool {
        if count_done == ops.len() {
            return true;
        }
        if !seen.insert((done.clone(), present)) {
            return false;
        }
        let is_done = |done: &Vec<u64>, i: usize| done[i / 64] >> (i % 64) & 1 == 1;
        let earliest_response = (0..ops.len()).filter(|&i| !is_done(done, i)).map(|i| ops[i].response).min().expect("ops remain");
        for i in 0..ops.len() {
            // Only an operation invoked before every pending one responded can go next.
            if is_done(done, i) || ops[i].invoke > earliest_response {
                continue;
            }
            let op = ops[i];
            let next = match op.kind {
                Kind::Insert if op.result == !present => true,
                Kind::Remove if op.result == present => false,
                Kind::Contains if op.result == present => present,
                _ => continue,
            };
            done[i / 64] |= 1 << (i % 64);
            if search(ops, done, count_done + 1, next, seen) {
                return true;
            }
            done[i / 64] &= !(1 << (i % 64));
        }
        false
    }
    let mut done = vec![0u64; ops.len().div_ceil(64)];
    search(ops, &mut done, 0, false, &mut HashSet::new())
}

/// Conservative scan checks for one position (see the module documentation). `successes`
/// are that position's successful inserts and removes.
fn check_scan_for(position: u64, scan: &Scan, successes: &[Op], seen: bool) -> Result<(), String> {
    let inserts = || successes.iter().filter(|op| op.kind == Kind::Insert);
    let removes = || successes.iter().filter(|op| op.kind == Kind::Remove);
    // Present throughout: an insert finished before the scan began, and no remove that could
    // be ordered after that insert was invoked before the scan ended.
    let present_throughout = inserts().any(|insert| {
        insert.response < scan.invoke
            && !removes().any(|remove| remove.invoke < scan.response && remove.response > insert.invoke)
    });
    // Absent throughout: every insert invoked before the scan ended is followed, strictly in
    // real time, by a remove that finished before the scan began.
    let absent_throughout = inserts().filter(|insert| insert.invoke < scan.response).all(|insert| {
        removes().any(|remove| remove.invoke > insert.response && remove.response < scan.invoke)
    });
    if present_throughout && !seen {
        return Err(format!("scan [{}, {}] missed {position}, present throughout", scan.invoke, scan.response));
    }
    if absent_throughout && seen {
        return Err(format!("scan [{}, {}] saw {position}, absent throughout", scan.invoke, scan.response));
    }
    Ok(())
}

fn check(seed: u64, workload: &Workload) {
    let (histories, finals) = run(seed, workload);
    let mut by_position: Vec<Vec<Op>> = vec![Vec::new(); workload.positions as usize];
    for history in &histories {
        for &(position, op) in &history.ops {
            by_position[position as usize].push(op);
        }
    }
    let mut checked_ops = 0;
    for (position, ops) in by_position.iter().enumerate() {
        let mut with_final = ops.clone();
        with_final.push(finals[position].1);
        checked_ops += with_final.len();
        assert!(linearizable(&with_final), "seed {seed}: the history of position {position} has no linearization: {with_final:?}");
    }
    let mut checked_scans = 0;
    for history in &histories {
        for scan in &history.scans {
            assert!(scan.seen.windows(2).all(|pair| pair[0] < pair[1]), "seed {seed}: scan not strictly ascending: {:?}", scan.seen);
            let seen: HashSet<u64> = scan.seen.iter().copied().collect();
            assert!(seen.iter().all(|&p| p < workload.positions), "seed {seed}: scan saw a position never inserted");
            for (position, ops) in by_position.iter().enumerate() {
                let successes: Vec<Op> = ops.iter().copied().filter(|op| op.result && op.kind != Kind::Contains).collect();
                if let Err(message) = check_scan_for(position as u64, scan, &successes, seen.contains(&(position as u64))) {
                    panic!("seed {seed}: {message}");
                }
            }
            checked_scans += 1;
        }
    }
    assert!(checked_ops >= workload.threads * workload.ops_per_thread / 2, "seed {seed}: too few operations checked");
    assert!(workload.scan_percent == 0 || checked_scans > 0, "seed {seed}: no scan ran");
}

/// A few hot positions: inserts and removes of the same nodes race, and scans overlap them.
#[test]
fn hot_positions_are_linearizable() {
    let workload = Workload { threads: 4, ops_per_thread: 2_000, positions: 16, scan_percent: 10 };
    for seed in 1..=12 {
        check(seed, &workload);
    }
}

/// A longer list: unlinks in the middle, and CAS races between neighbours of different
/// threads' positions.
#[test]
fn long_list_is_linearizable() {
    let workload = Workload { threads: 4, ops_per_thread: 3_000, positions: 256, scan_percent: 5 };
    for seed in 100..=105 {
        check(seed, &workload);
    }
}

/// The checker itself rejects what it should: a lost insert, a phantom remove, and a scan that
/// missed a position present throughout. (A checker that accepts everything proves nothing.)
#[test]
fn checker_rejects_wrong_histories() {
    let op = |kind, result, invoke, response| Op { kind, result, invoke, response };
    // Inserted (true), then a later lookup says absent.
    assert!(!linearizable(&[op(Kind::Insert, true, 0, 1), op(Kind::Contains, false, 2, 3)]));
    // Two successful inserts with no remove between.
    assert!(!linearizable(&[op(Kind::Insert, true, 0, 1), op(Kind::Insert, true, 2, 3)]));
    // Overlapping insert and lookup: either order is fine.
    assert!(linearizable(&[op(Kind::Insert, true, 0, 3), op(Kind::Contains, false, 1, 2)]));
    assert!(linearizable(&[op(Kind::Insert, true, 0, 3), op(Kind::Contains, true, 1, 2)]));
    // Remove of an absent position cannot succeed.
    assert!(!linearizable(&[op(Kind::Remove, true, 0, 1)]));
    let inserted = [op(Kind::Insert, true, 0, 1)];
    let scan = Scan { seen: vec![], invoke: 2, response: 3 };
    assert!(check_scan_for(0, &scan, &inserted, false).is_err());
    assert!(check_scan_for(0, &scan, &inserted, true).is_ok());
    let removed = [op(Kind::Insert, true, 0, 1), op(Kind::Remove, true, 2, 3)];
    let later = Scan { seen: vec![0], invoke: 4, response: 5 };
    assert!(check_scan_for(0, &later, &removed, true).is_err());
    // A remove overlapping the scan: either answer is allowed.
    let overlapping = Scan { seen: vec![], invoke: 2, response: 5 };
    assert!(check_scan_for(0, &overlapping, &removed, false).is_ok());
    assert!(check_scan_for(0, &overlapping, &removed, true).is_ok());
}

/// Concurrent writers of an index over many values, with moves between values, against the
/// same operations applied to a model; readers scan meanwhile and must always see the
/// positions that never move.
#[test]
fn index_under_concurrent_moves_ends_equal_to_the_model() {
    const WRITERS: u64 = 3;
    const PER_WRITER: u64 = 2_000;
    const VALUES: u64 = 40;
    let index: Arc<CasIndex<u64>> = Arc::new(CasIndex::new(4, 1_000));
    // Stable rows: position p (p < 100) under value p % VALUES, never moved.
    for position in 0..100 {
        assert!(index.insert(position % VALUES, position).unwrap());
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (index, stop) = (index.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut scans = 0u64;
            while !stop.load(Ordering::Relaxed) || scans == 0 {
                for value in 0..VALUES {
                    let positions = index.positions(&value, usize::MAX);
                    assert!(positions.windows(2).all(|pair| pair[0] < pair[1]));
                    for stable in (0..100).filter(|p| p % VALUES == value) {
                        assert!(positions.contains(&stable), "stable position {stable} missing under {value}");
                    }
                }
                scans += 1;
            }
            scans
        })
    };
    // Each writer owns the positions 1000 * (w + 1) + i and moves them through values.
    let writers: Vec<_> = (0..WRITERS)
        .map(|writer| {
            let index = index.clone();
            std::thread::spawn(move || {
                let mut rng = Rng(writer + 7);
                let mut value_of = std::collections::HashMap::new();
                for step in 0..PER_WRITER {
                    let position = 1_000 * (writer + 1) + rng.below(50);
                    let value = rng.below(VALUES);
                    match value_of.get(&position).copied() {
                        None => {
                            assert!(index.insert(value, position).unwrap());
                            value_of.insert(position, value);
                        }
                        Some(old) if step % 5 == 0 => {
                            assert!(index.remove(&old, position));
                            value_of.remove(&position);
                        }
                        Some(old) => {
                            index.move_position(&old, value, position).unwrap();
                            value_of.insert(position, value);
                        }
                    }
                }
                value_of
            })
        })
        .collect();
    let mut expected: Vec<Vec<u64>> = vec![Vec::new(); VALUES as usize];
    for position in 0..100 {
        expected[(position % VALUES) as usize].push(position);
    }
    for writer in writers {
        for (position, value) in writer.join().expect("writer") {
            expected[value as usize].push(position);
        }
    }
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().expect("reader") > 0);
    for (value, positions) in expected.iter_mut().enumerate() {
        positions.sort_unstable();
        assert_eq!(index.positions(&(value as u64), usize::MAX), *positions, "value {value}");
    }
    assert_eq!(index.values_len(), VALUES as usize);
}

#[test]
fn index_bounds_distinct_values() {
    let index: CasIndex<String> = CasIndex::new(2, 3);
    for value in ["a", "b", "c"] {
        assert!(index.insert(value.to_string(), 1).unwrap());
    }
    assert!(!index.insert("a".to_string(), 1).unwrap());
    assert!(index.insert("a".to_string(), 2).unwrap());
    let full = index.insert("d".to_string(), 1).unwrap_err();
    assert_eq!(full.values_max, 3);
    assert_eq!(index.values_len(), 3);
    // A failed move leaves the position where it was.
    assert!(index.move_position(&"a".to_string(), "e".to_string(), 2).is_err());
    assert_eq!(index.positions(&"a".to_string(), 10), vec![1, 2]);
    index.move_position(&"a".to_string(), "b".to_string(), 2).unwrap();
    assert_eq!(index.positions(&"a".to_string(), 10), vec![1]);
    assert_eq!(index.positions(&"b".to_string(), 10), vec![1, 2]);
    assert!(index.positions(&"zzz".to_string(), 10).is_empty());
}
