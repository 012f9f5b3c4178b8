//! `yottastore serve`: opens the data directory, recovers the logs, and runs until SIGTERM or
//! Ctrl-C. The Kafka listener is added by the protocol server (issue 3); until then `serve`
//! recovers and reports the storage it would serve.

use clap::Args;

use crate::StorageArgs;

#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let config = args.storage.config();
        let (device, recovered) = broker::storage::open(&config).await?;
        let report = &recovered.report;
        tracing::info!(
            device = %broker::zone::ZonedDevice::describe(device.as_ref()),
            path = %config.device_path().display(),
            partitions = recovered.partitions.len(),
            zones_scanned = report.zones_scanned,
            bytes_scanned = report.bytes_scanned,
            zones_cut = report.zones_cut,
            recovery_ms = report.duration.as_millis() as u64,
            "storage recovered"
        );
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            _ = terminate.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
        tracing::info!("shutting down");
        anyhow::Ok(())
    })
}
