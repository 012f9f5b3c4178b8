//! `yottastore serve`: opens the data directory, recovers the logs and the topic metadata, and
//! serves Kafka clients (and SQL over HTTP and the Postgres protocol) until SIGTERM or Ctrl-C, then stops accepting, finishes the requests in
//! flight, flushes, and exits 0.

use std::net::SocketAddr;

use anyhow::Context;
use clap::Args;

use crate::StorageArgs;

/// Every setting is also a config file entry: `--config FILE` with `name = value` lines named
/// after the long flags (the command line wins over the file).
#[derive(Args)]
pub struct ServeArgs {
    /// Read settings from this file first (`name = value` per line, e.g. `kafka-addr = HOST:PORT`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Address the Kafka listener binds.
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub kafka_addr: SocketAddr,
    /// Address given to clients in Metadata (default: the Kafka address).
    #[arg(long)]
    pub advertised_addr: Option<String>,
    /// auto.create.topics.enable: create topics on Metadata requests for unknown names.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_create_topics: bool,
    /// num.partitions of auto-created topics.
    #[arg(long, default_value_t = 1)]
    pub default_partitions: i32,
    /// Partitions of all topics together (the internal logs aside): creating topics or
    /// partitions beyond it, or auto-creating a topic, answers POLICY_VIOLATION (KIP-578's
    /// max.broker.partitions).
    #[arg(long, default_value_t = broker::cluster::PARTITIONS_MAX_DEFAULT as u64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub partitions_max: u64,
    /// Topics (the internal logs aside): creating more answers POLICY_VIOLATION.
    #[arg(long, default_value_t = broker::cluster::TOPICS_MAX_DEFAULT as u64, value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    pub topics_max: u64,
    /// socket.request.max.bytes: larger requests close their connection.
    #[arg(long, default_value_t = 100 << 20)]
    pub request_max_bytes: usize,
    /// The request size limit of every API but Produce (their decoded form is larger than the
    /// frame, and only Produce carries bulk data).
    #[arg(long, default_value_t = 4 << 20)]
    pub control_request_max_bytes: usize,
    /// Connections served at once.
    #[arg(long, default_value_t = 4096)]
    pub max_connections: usize,
    /// producer.id.expiration.ms: partitions forget an idempotent producer idle this long (its
    /// next batch is then accepted at any sequence). Kafka's default: 1 day.
    #[arg(long, default_value_t = broker::log::producer_state::PRODUCER_ID_EXPIRATION_MS_DEFAULT)]
    pub producer_id_expiration_ms: i64,
    /// Address of the HTTP endpoints: SQL (`POST /sql`, what `yottastore sql` talks to), the web
    /// dashboard (`GET /`) and metrics (`GET /metrics`); `none` turns them off.
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http_addr: OptionalAddr,
    /// Address of the Postgres wire protocol endpoint (psql, Postgres drivers, Grafana's
    /// PostgreSQL data source); `none` turns it off.
    #[arg(long, default_value = "127.0.0.1:5433")]
    pub pg_addr: OptionalAddr,
    /// Postgres connections served at once; more are refused (SQLSTATE 53300).
    #[arg(long, default_value_t = 256)]
    pub pg_max_connections: usize,
    /// A query's planning and execution together may take this long.
    #[arg(long, default_value_t = 60_000)]
    pub query_timeout_ms: u64,
    /// DataFusion's memory pool per query, in MiB.
    #[arg(long, default_value_t = 512)]
    pub query_memory_mib: usize,
    /// Rows a query answers over HTTP at most; the answer says when it was cut.
    #[arg(long, default_value_t = 100_000)]
    pub query_rows_max: usize,
    /// group.consumer.session.timeout.ms: a KIP-848 consumer (`group.protocol=consumer`) that
    /// sends no heartbeat this long leaves its group, and its partitions go to the others.
    #[arg(long, default_value_t = broker::group::consumer::SESSION_TIMEOUT_MS)]
    pub group_consumer_session_timeout_ms: i64,
    /// Materialized views checkpoint their state with the offsets it reflects this often (and
    /// at shutdown); after a crash they re-apply at most this much of the log.
    #[arg(long, default_value_t = 2_000)]
    pub view_checkpoint_interval_ms: u64,
    /// Arrow data that materialized views keep in memory, all views together, in MiB. Past
    /// it, chunks a checkpoint has written are dropped from memory and queries read them from
    /// their files in the data directory.
    #[arg(long, default_value_t = 4096)]
    pub view_memory_mib: usize,
}

/// A listener address, or `none` for a front end that is off.
#[derive(Clone, Copy, Debug)]
pub struct OptionalAddr(pub Option<SocketAddr>);

impl std::str::FromStr for OptionalAddr {
    type Err = std::net::AddrParseError;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "none" | "off" => Ok(OptionalAddr(None)),
            addr => addr.parse().map(|addr| OptionalAddr(Some(addr))),
        }
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    // Before any thread allocates: produce frames live in the read cache (broker::malloc).
    if !broker::malloc::keep_large_buffers_in_heap(args.storage.config().log.recent_cache_bytes_max) {
        tracing::debug!("the allocator has no mmap/trim thresholds to set");
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let storage = args.storage.config();
        let (device, recovered) = broker::storage::open(&storage).await?;
        let report = &recovered.report;
        tracing::info!(
            device = %broker::zone::ZonedDevice::describe(device.as_ref()),
            path = %storage.device_path().display(),
            partitions = recovered.partitions.len(),
            zones_scanned = report.zones_scanned,
            bytes_scanned = report.bytes_scanned,
            zones_cut = report.zones_cut,
            recovery_ms = report.duration.as_millis() as u64,
            "storage recovered"
        );
        let advertised = args.advertised_addr.clone().unwrap_or_else(|| args.kafka_addr.to_string());
        let (host, port) = advertised.rsplit_once(':').context("--advertised-addr must be HOST:PORT")?;
        let broker_config = broker::cluster::BrokerConfig {
            advertised_host: host.trim_matches(['[', ']']).to_string(),
            advertised_port: port.parse().context("--advertised-addr port")?,
            auto_create_topics: args.auto_create_topics,
            default_partitions: args.default_partitions,
            listener_addr: args.kafka_addr.to_string(),
            request_bytes_max: args.request_max_bytes,
            producer_id_expiration_ms: args.producer_id_expiration_ms,
            // At most 1,000,000 each (the parsers' range): lossless.
            partitions_max: args.partitions_max as usize,
            topics_max: args.topics_max as usize,
            ..Default::default()
        };
        anyhow::ensure!(args.producer_id_expiration_ms >= 1, "--producer-id-expiration-ms must be at least 1");
        anyhow::ensure!(args.default_partitions >= 1, "--default-partitions must be at least 1");
        use broker::group::consumer::{SESSION_TIMEOUT_MAX_MS, SESSION_TIMEOUT_MIN_MS};
        let consumer_session_timeout_ms = args.group_consumer_session_timeout_ms;
        anyhow::ensure!(
            (SESSION_TIMEOUT_MIN_MS..=SESSION_TIMEOUT_MAX_MS).contains(&consumer_session_timeout_ms),
            "--group-consumer-session-timeout-ms must be between {} and {}",
            SESSION_TIMEOUT_MIN_MS,
            SESSION_TIMEOUT_MAX_MS
        );
        let group_config = broker::group::GroupConfig { consumer_session_timeout_ms, ..Default::default() };
        let cluster = broker::cluster::Cluster::open_with_groups(recovered.store, recovered.partitions, broker_config, group_config)
            .await
            .map_err(anyhow::Error::msg)?;
        anyhow::ensure!(args.view_checkpoint_interval_ms >= 1, "--view-checkpoint-interval-ms must be at least 1");
        anyhow::ensure!(args.view_memory_mib >= 1, "--view-memory-mib must be at least 1");
        let materializer = query::materializer::Materializer::open(
            cluster.clone(),
            query::materializer::MaterializerConfig {
                data_dir: storage.data_dir.clone(),
                checkpoint_interval: std::time::Duration::from_millis(args.view_checkpoint_interval_ms),
                limits: query::materializer::view::ViewLimits {
                    memory_bytes_max: args.view_memory_mib << 20,
                    ..Default::default()
                },
            },
        )
        .await
        .map_err(|error| anyhow::anyhow!("opening the materialized views: {error}"))?;
        let listener = tokio::net::TcpListener::bind(args.kafka_addr)
            .await
            .with_context(|| format!("binding the Kafka listener to {}", args.kafka_addr))?;
        let config = broker::server::ServerConfig {
            request_bytes_max: args.request_max_bytes,
            control_request_bytes_max: args.control_request_max_bytes,
            connections_max: args.max_connections,
            ..Default::default()
        };
        // Printed together once everything is bound: (what, where).
        let mut serving = vec![
            ("Kafka", format!("{} (advertised as {advertised})", args.kafka_addr)),
            ("data", storage.device_path().display().to_string()),
        ];
        let (stop, stopped) = tokio::sync::watch::channel(false);
        // One engine for every SQL front end: the same catalog, functions and limits.
        let engine = if args.http_addr.0.is_some() || args.pg_addr.0.is_some() {
            let limits = query::QueryLimits {
                timeout: std::time::Duration::from_millis(args.query_timeout_ms),
                memory_bytes_max: args.query_memory_mib << 20,
                rows_max: args.query_rows_max,
                ..Default::default()
            };
            anyhow::ensure!(
                limits.rows_max >= 1 && args.query_memory_mib >= 1,
                "--query-rows-max and --query-memory-mib must be at least 1"
            );
            Some(std::sync::Arc::new(query::QueryEngine::with_materializer(
                cluster.clone(),
                limits,
                Some(materializer.clone()),
            )?))
        } else {
            None
        };
        let pg = match (args.pg_addr.0, &engine) {
            (Some(pg_addr), Some(engine)) => {
                anyhow::ensure!(args.pg_max_connections >= 1, "--pg-max-connections must be at least 1");
                let listener = tokio::net::TcpListener::bind(pg_addr)
                    .await
                    .with_context(|| format!("binding the Postgres listener to {pg_addr}"))?;
                serving.push(("Postgres", format!("{pg_addr} (psql -h {} -p {})", pg_addr.ip(), pg_addr.port())));
                let config = query::pg::PgConfig::for_engine(engine, args.pg_max_connections);
                let mut pg_stopped = stopped.clone();
                let shutdown = async move {
                    let _ = pg_stopped.wait_for(|stopped| *stopped).await;
                };
                Some(tokio::spawn(query::pg::serve(listener, engine.clone(), config, shutdown)))
            }
            _ => None,
        };
        let http = match (args.http_addr.0, engine) {
            (Some(http_addr), Some(engine)) => {
                let listener = tokio::net::TcpListener::bind(http_addr)
                    .await
                    .with_context(|| format!("binding the HTTP listener to {http_addr}"))?;
                serving.push(("SQL", format!("http://{http_addr}/sql (yottastore sql --http-addr {http_addr})")));
                serving.push(("dashboard", format!("http://{http_addr}/")));
                serving.push(("metrics", format!("http://{http_addr}/metrics")));
                serving.push(("health", format!("http://{http_addr}/health")));
                let mut metrics = broker::metrics::MetricsRegistry::new(cluster.clone());
                metrics.register_collector(Box::new(query::materializer::view::metrics::ViewMetrics::new(materializer.clone())));
                let metrics = std::sync::Arc::new(metrics);
                let mut http_stopped = stopped.clone();
                let shutdown = async move {
                    let _ = http_stopped.wait_for(|stopped| *stopped).await;
                };
                Some(tokio::spawn(query::http::serve(
                    listener,
                    query::http::router(engine).merge(query::http::metrics_router(metrics)),
                    shutdown,
                )))
            }
            _ => None,
        };
        let width = serving.iter().map(|(what, _)| what.len()).max().unwrap_or(0);
        let block: String = serving.iter().map(|(what, address)| format!("  {what:<width$}  {address}\n")).collect();
        // One write, so a reader of the log never sees half the block.
        let banner = format!("yottastore {} serving:\n{block}", env!("CARGO_PKG_VERSION"));
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), banner.as_bytes());
        tokio::spawn(async move {
            let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(terminate) => terminate,
                Err(error) => {
                    tracing::error!(%error, "cannot listen for SIGTERM");
                    return;
                }
            };
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            tracing::info!("shutting down");
            let _ = stop.send(true);
        });
        broker::server::run(listener, cluster, config, stopped).await;
        if let Some(http) = http {
            match http.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!(%error, "the HTTP front end failed"),
                Err(error) => tracing::error!(%error, "the HTTP front end panicked"),
            }
        }
        if let Some(pg) = pg {
            match pg.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::error!(%error, "the Postgres front end failed"),
                Err(error) => tracing::error!(%error, "the Postgres front end panicked"),
            }
        }
        // Views checkpoint what they applied, so a restart resumes without re-reading it.
        materializer.shutdown().await;
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}
