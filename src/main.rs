//! `yottastore`: command-line wiring only. Each subcommand lives in its own module.

mod bench;
mod config_file;
mod consume_cli;
mod debug;
mod produce_cli;
mod serve;
mod sql_cli;
mod topic_cli;

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
    /// Create, list, describe and delete topics on a running server.
    #[command(subcommand)]
    Topic(topic_cli::TopicCommand),
    /// Write lines from standard input to a topic, one record per line (acks=all).
    Produce(produce_cli::ProduceArgs),
    /// Print a topic's records (kcat-style `--format`); `-e` exits at the end.
    Consume(consume_cli::ConsumeArgs),
    /// Benchmarks that print figures beside the physical limits measured in the same run.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Tools for tests (crash and fault testing); not for production use.
    #[command(subcommand, hide = true)]
    Debug(debug::DebugCommand),
}

/// Where the Kafka tools (`topic`, `produce`, `consume`) find the server.
#[derive(Args, Clone, Debug)]
pub struct BootstrapArgs {
    /// The server's Kafka address (HOST:PORT).
    #[arg(long, short = 'b', default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
}

/// Runs a command-line tool's async work on a runtime of its own (one thread: a tool holds one
/// connection).
pub fn block_on<T>(work: impl std::future::Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(work)
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
    /// Maximum active zones (open, or closed and not full) of a newly created device; default:
    /// every zone (the emulated device has no such limit; a real ZNS drive has about 14).
    #[arg(long)]
    pub max_active_zones: Option<u32>,
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
        config.geometry.max_active_zones = self.max_active_zones.unwrap_or(self.zone_count);
        config.io = self.io;
        config.log.recent_cache_bytes_max = usize::try_from(self.read_cache_mib << 20).unwrap_or(usize::MAX);
        config
    }
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .init();
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(error) => {
            // The message and its causes on one line, without the backtrace anyhow captures
            // under RUST_BACKTRACE: these are answers to bad input, not crashes.
            eprintln!("error: {error:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let cli = Cli::parse_from(config_file::expand(std::env::args_os().collect())?);
    match cli.command {
        Command::Serve(args) => serve::run(args),
        Command::Sql(args) => sql_cli::run(args),
        Command::Topic(command) => topic_cli::run(command),
        Command::Produce(args) => produce_cli::run(args),
        Command::Consume(args) => consume_cli::run(args),
        Command::Bench(command) => bench::run(command),
        Command::Debug(command) => debug::run(command),
    }
}
