//! Consumer groups (the classic protocol): the coordinator state machine (`coordinator`, pure),
//! the durable group log (`store`), and here the async plumbing between them and the protocol
//! handlers: parked JoinGroup/SyncGroup requests, the timer, and writes that must be durable
//! before they are applied or acknowledged.
//!
//! Nothing that expires sessions or answers parked requests waits for the group log: `tick` and
//! the answers of JoinGroup/SyncGroup/LeaveGroup are memory work under the coordinator's lock,
//! and the generation records they produce are queued, written by `persist_queued` on a task
//! of the server's (a busy device, a compaction or a stuck flush must not stop the clock).
//!
//! This broker is the coordinator of every group. The coordinator's lock is a plain mutex,
//! held for memory work only; nothing awaits while holding it.

pub mod consumer;
pub mod coordinator;
pub mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::oneshot;

use crate::cluster::{now_ms, ApiError};
use crate::log::PartitionLog;
pub use coordinator::{Coordinator, GroupConfig, GroupState, JoinRequest, JoinResponse, Output, SyncRequest, SyncResponse, Ticket};
use kafka_protocol::error::ResponseError;
pub use store::{GroupLog, GroupRecord, OffsetRecord, GROUPS_TOPIC};

/// How often the timer looks for expired sessions and rebalance phases. Kafka's timeouts are
/// seconds; a tenth of one is precise enough and costs nothing when no group exists.
pub const TICK_INTERVAL_MS: u64 = 100;

enum Waiter {
    Join(oneshot::Sender<JoinResponse>),
    Sync(oneshot::Sender<SyncResponse>),
}

/// Parked requests, and whether the broker is shutting down (then nothing more is parked).
struct Waiters {
    by_ticket: HashMap<Ticket, Waiter>,
    closed: bool,
}

pub struct Groups {
    coordinator: Mutex<Coordinator>,
    /// Parked JoinGroup and SyncGroup requests, by ticket.
    waiters: Mutex<Waiters>,
    next_ticket: AtomicU64,
    log: GroupLog,
    /// Generation records produced by the state machine, not yet written (`persist_queued`).
    unpersisted: Mutex<Vec<GroupRecord>>,
    /// Whether a `persist_queued` task is running (`start_persisting`).
    persisting: AtomicBool,
    /// How long an OffsetCommit waits for its write (`GroupConfig::offset_commit_timeout_ms`).
    commit_timeout: std::time::Duration,
}

/// A group log write slower than this is logged as a warning: commits wait for it.
const SLOW_WRITE_MS: u128 = 1_000;

impl Groups {
    /// Replays the group log. `topic_is_current(name, id)` says whether a topic of that name
    /// and id exists: offsets of deleted topics are dropped.
    pub async fn open(log: PartitionLog, config: GroupConfig, topic_is_current: impl Fn(&str, &[u8; 16]) -> bool) -> Result<Groups, String> {
        let commit_timeout = std::time::Duration::from_millis(config.offset_commit_timeout_ms);
        let mut coordinator = Coordinator::new(config, member_id_nonce());
        let mut records = 0u64;
        crate::record_log::replay(&log, |record: GroupRecord| {
            records += 1;
            coordinator.apply(&record);
        })
        .await?;
        coordinator.retain_offsets(|topic, id| topic_is_current(topic, id));
        tracing::info!(records, groups = coordinator.groups().count(), "group log replayed");
        Ok(Groups {
            coordinator: Mutex::new(coordinator),
            waiters: Mutex::new(Waiters { by_ticket: HashMap::new(), closed: false }),
            next_ticket: AtomicU64::new(1),
            log: GroupLog::new(log),
            unpersisted: Mutex::new(Vec::new()),
            persisting: AtomicBool::new(false),
            commit_timeout,
        })
    }

    /// How long an OffsetCommit waits for its write to become durable (then REQUEST_TIMED_OUT).
    pub fn commit_timeout(&self) -> std::time::Duration {
        self.commit_timeout
    }

    /// The coordinator, for reads and synchronous requests. Do not hold across an await.
    pub fn coordinator(&self) -> MutexGuard<'_, Coordinator> {
        self.coordinator.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub async fn join(&self, request: JoinRequest) -> JoinResponse {
        let member_id = request.member_id.clone();
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        if !self.park(ticket, Waiter::Join(sender)) {
            return JoinResponse::error(ResponseError::CoordinatorNotAvailable, &member_id);
        }
        let mut outputs = Vec::new();
        self.coordinator().join(request, ticket, now_ms(), &mut outputs);
        self.deliver(outputs);
        let answer = receiver.await.unwrap_or_else(|_| lost_join(&member_id));
        tracing::debug!(ticket, member = %answer.member_id, error = ?answer.error, generation = answer.generation_id, leader = %answer.leader, members = answer.members.len(), "JoinGroup answered");
        answer
    }

    pub async fn sync(&self, request: SyncRequest) -> SyncResponse {
        let ticket = self.next_ticket.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        if !self.park(ticket, Waiter::Sync(sender)) {
            return sync_error(ResponseError::CoordinatorNotAvailable);
        }
        let mut outputs = Vec::new();
        self.coordinator().sync(request, ticket, now_ms(), &mut outputs);
        self.deliver(outputs);
        let answer = receiver.await.unwrap_or_else(|_| sync_error(ResponseError::RebalanceInProgress));
        tracing::debug!(ticket, error = ?answer.error, assignment_bytes = answer.assignment.len(), "SyncGroup answered");
        answer
    }

    /// Registers a parked request; false once the broker is shutting down.
    fn park(&self, ticket: Ticket, waiter: Waiter) -> bool {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        if waiters.closed {
            return false;
        }
        waiters.by_ticket.insert(ticket, waiter);
        true
    }

    /// Shutdown: answers every parked JoinGroup and SyncGroup with COORDINATOR_NOT_AVAILABLE
    /// (clients look for the coordinator again and retry), and parks nothing more, so that a
    /// rebalance in progress does not hold the shutdown for its whole rebalance timeout.
    pub fn close(&self) {
        let parked: Vec<Waiter> = {
            let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
            waiters.closed = true;
            waiters.by_ticket.drain().map(|(_, waiter)| waiter).collect()
        };
        for waiter in parked {
            match waiter {
                Waiter::Join(sender) => {
                    let _ = sender.send(JoinResponse::error(ResponseError::CoordinatorNotAvailable, ""));
                }
                Waiter::Sync(sender) => {
                    let _ = sender.send(sync_error(ResponseError::CoordinatorNotAvailable));
                }
            }
        }
    }

    pub async fn leave(&self, group_id: &str, leaving: &[(String, Option<String>)]) -> Result<Vec<Option<ResponseError>>, ResponseError> {
        let mut outputs = Vec::new();
        let result = self.coordinator().leave(group_id, leaving, now_ms(), &mut outputs);
        self.deliver(outputs);
        result
    }

    /// Expires what is due (the server's timer calls this every TICK_INTERVAL_MS, then
    /// `start_persisting`). Never waits: not for the group log either.
    pub fn tick(&self) {
        let mut outputs = Vec::new();
        self.coordinator().tick(now_ms(), &mut outputs);
        self.deliver(outputs);
    }

    /// Whether generation records wait to be written and no `persist_queued` runs: the caller
    /// then runs `persist_queued` (on a task of its own, so that it never delays the timer).
    pub fn start_persisting(&self) -> bool {
        let queued = !self.unpersisted.lock().unwrap_or_else(|p| p.into_inner()).is_empty();
        queued && !self.persisting.swap(true, Ordering::AcqRel)
    }

    /// Writes the queued generation records, until none is left.
    pub async fn persist_queued(&self) {
        // Cleared however this ends (a task aborted at shutdown, a panic): else no writer would
        // ever start again.
        struct Running<'a>(&'a AtomicBool);
        impl Drop for Running<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::Release);
            }
        }
        let _running = Running(&self.persisting);
        loop {
            let records = std::mem::take(&mut *self.unpersisted.lock().unwrap_or_else(|p| p.into_inner()));
            if records.is_empty() {
                break;
            }
            for record in records {
                if let Err(error) = self.write(record).await {
                    tracing::error!(%error.message, "cannot persist a group generation");
                }
            }
        }
    }

    /// Appends a record, waits until it is durable, then applies it (and any earlier ones).
    pub async fn write(&self, record: GroupRecord) -> Result<(), ApiError> {
        let started = std::time::Instant::now();
        self.log.write(record, now_ms(), |record| self.coordinator().apply(record)).await?;
        let waited_ms = started.elapsed().as_millis();
        if waited_ms >= SLOW_WRITE_MS {
            tracing::warn!(waited_ms, "a group log write was slow to become durable");
        }
        let compacted = self
            .log
            .compact_if_due(now_ms(), |record| self.coordinator().apply(record), || store::snapshot_records(self.coordinator().groups()))
            .await;
        if let Err(error) = compacted {
            // The write itself is durable; the log stays as it is until the next try.
            tracing::error!(error = %error.message, "group log compaction failed");
        }
        Ok(())
    }

    /// Bytes the group log holds (compaction keeps this bounded by the state's size).
    pub async fn log_size_bytes(&self) -> u64 {
        self.log.size_bytes().await
    }

    /// Writes the queued generation records and makes the log durable (shutdown).
    pub async fn flush(&self) -> Result<(), ApiError> {
        // One writer at a time: wait for a running `persist_queued` to end, then write what is
        // left (its guard clears the flag this one set).
        while self.persisting.swap(true, Ordering::AcqRel) {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        self.persist_queued().await;
        self.log.flush().await
    }

    /// Drops the committed offsets of a deleted topic.
    pub fn topic_deleted(&self, topic: &str) {
        self.coordinator().retain_offsets(|name, _| name != topic);
    }

    /// Answers parked requests and queues new generations for `persist_queued`.
    fn deliver(&self, outputs: Vec<Output>) {
        let mut persist = Vec::new();
        {
            let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
            for output in outputs {
                // A closed receiver is a client that went away: nothing to answer.
                match output {
                    Output::Join(ticket, response) => match waiters.by_ticket.remove(&ticket) {
                        Some(Waiter::Join(sender)) => {
                            let _ = sender.send(response);
                        }
                        _ => tracing::debug!(ticket, "a JoinGroup answer for no parked request (shutting down)"),
                    },
                    Output::Sync(ticket, response) => match waiters.by_ticket.remove(&ticket) {
                        Some(Waiter::Sync(sender)) => {
                            let _ = sender.send(response);
                        }
                        _ => tracing::debug!(ticket, "a SyncGroup answer for no parked request (shutting down)"),
                    },
                    Output::Persist(record) => persist.push(record),
                }
            }
        }
        if !persist.is_empty() {
            self.unpersisted.lock().unwrap_or_else(|p| p.into_inner()).extend(persist);
        }
    }
}

fn sync_error(error: ResponseError) -> SyncResponse {
    SyncResponse { error: Some(error), protocol_type: None, protocol_name: None, assignment: Default::default() }
}

fn lost_join(member_id: &str) -> JoinResponse {
    JoinResponse::error(ResponseError::RebalanceInProgress, member_id)
}

/// Differs per broker start, so member ids of an earlier run are never reissued.
fn member_id_nonce() -> u64 {
    use std::io::Read;
    let mut bytes = [0u8; 8];
    let random = std::fs::File::open("/dev/urandom").and_then(|mut random| random.read_exact(&mut bytes));
    if random.is_ok() {
        u64::from_be_bytes(bytes)
    } else {
        now_ms() as u64
    }
}
