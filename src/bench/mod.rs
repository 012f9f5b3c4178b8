//! `yottastore bench ...`: benchmarks that print their figures beside the physical limit they
//! are compared against, measured in the same run.

mod consume;
mod duckdb;
mod json;
pub(crate) mod kafka_client;
mod limits;
mod produce;
mod progress;
mod storage;
mod views;

use clap::Subcommand;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Partition-log append throughput and reopen time vs. raw O_DIRECT write bandwidth.
    Storage(storage::StorageBenchArgs),
    /// Kafka producer load (kafka-producer-perf-test style) vs. loopback TCP and disk bandwidth.
    Produce(produce::KafkaBenchArgs),
    /// Kafka consumer load (kafka-consumer-perf-test style) vs. loopback TCP bandwidth.
    Consume(consume::ConsumeBenchArgs),
    /// The views' JSON decoder alone (records to Arrow columns) vs serde_json parsing the same
    /// bytes, one core.
    Json(json::JsonBenchArgs),
    /// Materialized views: materialization throughput vs JSON parsing, freshness under load,
    /// an indexed 1%-selective query vs the same query as a full scan.
    Views(views::ViewsBenchArgs),
}

pub fn run(command: BenchCommand) -> anyhow::Result<()> {
    match command {
        BenchCommand::Storage(args) => storage::run(args),
        BenchCommand::Produce(args) => produce::run(args),
        BenchCommand::Consume(args) => consume::run(args),
        BenchCommand::Json(args) => json::run(args),
        BenchCommand::Views(args) => views::run(args),
    }
}
