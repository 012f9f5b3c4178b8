//! `yottastore serve`: opens the data directory, recovers the logs and the topic metadata, and
//! serves Kafka clients until SIGTERM or Ctrl-C, then stops accepting, finishes the requests in
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
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
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
            ..Default::default()
        };
        anyhow::ensure!(args.producer_id_expiration_ms >= 1, "--producer-id-expiration-ms must be at least 1");
        anyhow::ensure!(args.default_partitions >= 1, "--default-partitions must be at least 1");
        let cluster = broker::cluster::Cluster::open(recovered.store, recovered.partitions, broker_config)
            .await
            .map_err(anyhow::Error::msg)?;
        let listener = tokio::net::TcpListener::bind(args.kafka_addr)
            .await
            .with_context(|| format!("binding the Kafka listener to {}", args.kafka_addr))?;
        let config = broker::server::ServerConfig {
            request_bytes_max: args.request_max_bytes,
            control_request_bytes_max: args.control_request_max_bytes,
            connections_max: args.max_connections,
            ..Default::default()
        };
        eprintln!("yottastore serving Kafka on {} (advertised as {advertised}), data in {}", args.kafka_addr, storage.data_dir.display());
        let (stop, stopped) = tokio::sync::watch::channel(false);
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
        tracing::info!("stopped");
        anyhow::Ok(())
    })
}
