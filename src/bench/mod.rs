//! `yottastore bench ...`: benchmarks that print their figures beside the physical limit they
//! are compared against, measured in the same run.

mod storage;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Partition-log append throughput and reopen time vs. raw O_DIRECT write bandwidth.
    Storage(storage::StorageBenchArgs),
}

pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Storage(args) => storage::run(args),
    }
}
