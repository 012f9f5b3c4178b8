//! The Kafka listener: accepts connections (within a limit), serves each on its own task, and
//! shuts down gracefully: stop accepting, let connections finish the requests they have read,
//! flush every partition.

mod connection;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::cluster::{now_ms, Cluster};
use crate::protocol::frame::REQUEST_BYTES_MAX_DEFAULT;

/// 4 MiB holds a Metadata or CreateTopics request for tens of thousands of topics.
pub const CONTROL_REQUEST_BYTES_MAX_DEFAULT: usize = 4 << 20;

#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// socket.request.max.bytes: a larger request closes its connection.
    pub request_bytes_max: usize,
    /// The limit for every API but Produce. Decoding turns a frame into structs of up to ~100
    /// bytes per wire byte (tiny elements behind a large count), and only Produce carries bulk
    /// data (raw record batches, kept as bytes), so the others get a smaller frame.
    pub control_request_bytes_max: usize,
    /// Connections beyond this are closed at once (max.connections).
    pub connections_max: usize,
    /// Requests of one connection being handled at once; more wait (clients pipeline ~5).
    pub in_flight_per_connection_max: usize,
    /// How often retention runs (log.retention.check.interval.ms).
    pub retention_check_interval: Duration,
    /// How long shutdown waits for connections to finish their requests.
    pub shutdown_grace: Duration,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            request_bytes_max: REQUEST_BYTES_MAX_DEFAULT,
            control_request_bytes_max: CONTROL_REQUEST_BYTES_MAX_DEFAULT,
            connections_max: 4096,
            in_flight_per_connection_max: 64,
            retention_check_interval: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

/// Serves Kafka clients on `listener` until `shutdown` turns true.
pub async fn run(listener: TcpListener, cluster: Arc<Cluster>, config: ServerConfig, mut shutdown: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(config.connections_max));
    let group_timer = tokio::spawn(group_timer(cluster.clone(), shutdown.clone()));
    let txn_timer = tokio::spawn(txn_timer(cluster.clone(), shutdown.clone()));
    let mut connections = JoinSet::new();
    let mut retention = tokio::time::interval(config.retention_check_interval);
    retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(error) => {
                        // EMFILE and the like: back off instead of spinning.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let metrics = crate::metrics::global();
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    metrics.connections_refused.inc();
                    tracing::warn!(%peer, max = config.connections_max, "too many connections; closing the new one");
                    continue;
                };
                metrics.connections_accepted.inc();
                metrics.connections.inc();
                let (cluster, config, shutdown) = (cluster.clone(), config.clone(), shutdown.clone());
                connections.spawn(async move {
                    connection::serve(stream, peer, cluster, config, shutdown).await;
                    metrics.connections.dec();
                    drop(permit);
                });
            }
            _ = retention.tick() => {
                let released = cluster.apply_retention(now_ms());
                if released > 0 {
                    tracing::info!(zones = released, "retention released zones");
                }
            }
            // Reap finished connection tasks so the set does not grow with closed connections.
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    break;
                }
            }
        }
    }
    drop(listener);
    cluster.groups().close();
    tracing::info!(connections = connections.len(), "stopped accepting; finishing in-flight requests");
    let drained = tokio::time::timeout(config.shutdown_grace, async { while connections.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!("connections still busy after the shutdown grace period; closing them");
        connections.abort_all();
    }
    group_timer.abort();
    txn_timer.abort();
    flush_all(&cluster).await;
}

/// Drives the group coordinator's clock: session, join and sync timeouts. The generation
/// records that come out are written on a task of their own: the clock never waits for the
/// group log (a slow fsync would otherwise hold every session expiry behind it).
async fn group_timer(cluster: Arc<Cluster>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(crate::group::TICK_INTERVAL_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                cluster.groups().tick();
                if cluster.groups().start_persisting() {
                    let cluster = cluster.clone();
                    tokio::spawn(async move { cluster.groups().persist_queued().await });
                }
            }
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

/// How often transactions are checked for their timeout: Kafka's
/// transaction.abort.timed.out.transaction.cleanup.interval.ms is 10 s; a second keeps a
/// timed-out transaction's records from holding read_committed consumers much longer.
const TXN_EXPIRY_INTERVAL_MS: u64 = 1_000;

/// Drives the transaction coordinator's clock: completes the transactions a restart found
/// prepared (first tick), aborts those open past their timeout and removes expired ids.
async fn txn_timer(cluster: Arc<Cluster>, mut shutdown: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(Duration::from_millis(TXN_EXPIRY_INTERVAL_MS));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => cluster.transactions().expire(&*cluster).await,
            changed = shutdown.changed() => {
                if changed.is_err() || *shutdown.borrow() {
                    return;
                }
            }
        }
    }
}

/// Makes everything appended durable (acks=0 appends may not have been flushed yet).
async fn flush_all(cluster: &Arc<Cluster>) {
    if let Err(error) = cluster.transactions().flush().await {
        tracing::error!(error = %error.message, "flush of the transaction log at shutdown failed");
    }
    if let Err(error) = cluster.groups().flush().await {
        tracing::error!(error = %error.message, "flush of the group log at shutdown failed");
    }
    for topic in cluster.topics() {
        for partition in topic.partitions() {
            if let Ok(flush) = partition.with_log(|log| log.start_flush()) {
                if let Err(error) = flush.complete().await {
                    tracing::error!(topic = %topic.name, partition = partition.index, %error, "flush at shutdown failed");
                }
            }
        }
    }
}
