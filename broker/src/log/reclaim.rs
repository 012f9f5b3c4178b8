//! The reclaimer: resets zones once nothing live remains in them.
//!
//! A zone dies when its last live frame is dropped (retention, DeleteRecords, topic deletion).
//! Before it is reset, every stream is flushed: the log start offsets that made its frames
//! dead were appended to the internal stream, and must be durable first, or a crash could
//! recover a partition whose start lies in a zone that no longer exists. Runs on a thread of
//! its own (resets and flushes are waited for there, never on a caller's lock), woken as soon
//! as a zone dies, so a deletion frees space within milliseconds. The garbage collector
//! (`log::gc`) runs there too.

use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::Duration;

use super::allocator::DeadZones;
use super::stream::Streams;
use crate::zone::{ZoneId, ZoneState};

/// How long the reclaimer sleeps when nothing dies (it also wakes at once when a zone dies).
const IDLE_WAKE_MS: u64 = 200;

pub struct Reclaimer {
    dead: Arc<DeadZones>,
    thread: Option<JoinHandle<()>>,
}

impl Reclaimer {
    pub fn spawn(streams: &Arc<Streams>) -> Reclaimer {
        let dead = streams.allocator().dead_zones().clone();
        let weak = Arc::downgrade(streams);
        let thread_dead = dead.clone();
        let thread = std::thread::Builder::new()
            .name("zone-reclaimer".into())
            .spawn(move || run(weak, thread_dead))
            .map_err(|error| tracing::error!(%error, "cannot start the zone reclaimer; dead zones are reset at the next start"))
            .ok();
        Reclaimer { dead, thread }
    }
}

fn run(streams: Weak<Streams>, dead: Arc<DeadZones>) {
    while !dead.is_closed() {
        let zones = dead.take(Duration::from_millis(IDLE_WAKE_MS));
        let Some(streams) = streams.upgrade() else {
            return;
        };
        pass(&streams, zones);
        // Free zones low: copy the emptiest zone's live frames forward; it dies, and the next
        // turn resets it.
        if let Err(error) = super::gc::collect(&streams, now_ms(), false) {
            tracing::warn!(%error, "garbage collection failed; it is retried");
        }
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// One pass, blocking: a flush of every stream, then the summaries of zones sealed before it,
/// then resets of the dead `zones`. If the flush fails, nothing is written or reset (the zones
/// stay unusable until the store is reopened, whose recovery finds them dead again).
pub(crate) fn pass(streams: &Streams, mut zones: Vec<ZoneId>) {
    // Dead zones held back for their readers, now unpinned, are released with this pass.
    zones.extend(streams.allocator().take_unpinned_held());
    // Taken before the flush, so the flush covers the frames of every seal written.
    let sealed = streams.queued_seals();
    if zones.is_empty() && sealed.is_empty() {
        return;
    }
    let _pass = streams.reclaim_lock();
    if let Err(error) = streams.flush_all().wait() {
        tracing::error!(%error, zones = zones.len(), "flush before zone seals and resets failed; neither is done");
        return;
    }
    let mut claim = streams.claim_seals(&sealed);
    streams.write_seals(std::mem::take(&mut claim.seals), &zones);
    drop(claim);
    for &zone in &zones {
        let allocator = streams.allocator();
        let unfinished = allocator
            .device()
            .zone(zone)
            .is_ok_and(|info| info.state != ZoneState::Full);
        if !allocator.release(zone) && unfinished {
            // Held for a read: finished meanwhile, so that it does not count against the
            // device's active zones (its frames stay readable).
            if let Err(error) = allocator.finish(zone).wait() {
                tracing::warn!(zone, %error, "finishing a zone held for a read failed");
            }
        }
    }
    if !zones.is_empty() {
        crate::metrics::global().zones_reclaimed.inc();
    }
}

impl Drop for Reclaimer {
    fn drop(&mut self) {
        self.dead.close();
        if let Some(thread) = self.thread.take() {
            // The store's last reference may be dropped by the reclaimer itself (mid-pass).
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}
