//! `yottastore`: command-line wiring only. Each subcommand lives in its own module.

mod bench;
mod config_file;
mod debug;
mod serve;
mod sql_cli;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(name = "yottastore", version, args_override_self = true, about = "A Kafka-compatible event log on zoned storage, with materialized views and SQL")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open the data directory, recover every partition log and serve.
    // A repeated flag takes its last value: the command line overrides the config file.
    #[command(args_override_self = true)]
    Serve(serve::ServeArgs),
    /// Run SQL against a running server (interactive, `-c SQL` or `-f FILE`).
    Sql(sql_cli::SqlArgs),
    /// Benchmarks that print figures beside the physical limits measured in the same run.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Tools for tests (crash and fault testing); not for production use.
    #[command(subcommand, hide = true)]
    Debug(debug::DebugCommand),
}

/// Storage settings shared by subcommands that open a data directory.
#[derive(Args, Clone, Debug)]
pub struct StorageArgs {
    /// Directory holding the zoned device file.
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,
    /// Zone size of a newly created device, in MiB.
    #[arg(long, default_value_t = 64)]
    pub zone_size_mib: u64,
    /// Zone count of a newly created device.
    #[arg(long, default_value_t = 128)]
    pub zone_count: u32,
    /// Maximum open zones (zones being written at once).
    #[arg(long, default_value_t = 14)]
    pub max_open_zones: u32,
    /// I/O backend: auto (io_uring, else pwritev), io_uring, or sync (pwritev).
    #[arg(long, default_value = "auto")]
    pub io: broker::uring::IoBackendChoice,
    /// Memory for recently appended batches of all partitions, served to consumers without
    /// device reads (MiB; 0 disables the cache).
    #[arg(long, default_value_t = (broker::log::RECENT_CACHE_BYTES_DEFAULT >> 20) as u64)]
    pub read_cache_mib: u64,
}

impl StorageArgs {
    pub fn config(&self) -> broker::storage::StorageConfig {
        let mut config = broker::storage::StorageConfig::new(&self.data_dir);
        config.geometry.zone_size_bytes = self.zone_size_mib << 20;
        config.geometry.zone_capacity_bytes = self.zone_size_mib << 20;
        config.geometry.zone_count = self.zone_count;
        config.geometry.max_open_zones = self.max_open_zones;
        config.geometry.max_active_zones = self.zone_count;
        config.io = self.io;
        config.log.recent_cache_bytes_max = usize::try_from(self.read_cache_mib << 20).unwrap_or(usize::MAX);
        config
    }
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse_from(config_file::expand(std::env::args_os().collect())?);
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Sql(args) => sql_cli::run(args),
        Command::Bench(command) => bench::run(command),
        Command::Debug(command) => debug::run(command),
    }
}
