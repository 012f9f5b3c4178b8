//! `yottastore topic create|list|describe|delete`: topic administration over Kafka's own APIs
//! (CreateTopics, Metadata, ListOffsets, DescribeConfigs, DeleteTopics) against a running
//! server, as kafka-topics.sh does.

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::bench::kafka_client::{check_code, Connection};
use crate::BootstrapArgs;

/// Topic names are at most this long (Kafka's limit).
const TOPIC_NAME_BYTES_MAX: usize = 249;
/// Partitions one `topic create` asks for at most (the broker has its own limits too).
const PARTITIONS_MAX: i32 = 10_000;

#[derive(Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create(CreateArgs),
    /// List topics with their partition counts.
    List(ListArgs),
    /// Show a topic's partitions (log start, high watermark) and configs.
    Describe(DescribeArgs),
    /// Delete a topic and its data.
    Delete(DeleteArgs),
}

#[derive(Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
    /// The topic's name.
    pub name: String,
    /// Number of partitions.
    #[arg(long, short = 'p', default_value_t = 1)]
    pub partitions: i32,
    /// A topic config, `name=value` (e.g. `retention.ms=86400000`); repeatable.
    #[arg(long = "config", short = 'c', value_name = "NAME=VALUE", value_parser = parse_config)]
    pub configs: Vec<(String, String)>,
}

#[derive(Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
}

#[derive(Args)]
pub struct DescribeArgs {
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
    /// The topic's name.
    pub name: String,
}

#[derive(Args)]
pub struct DeleteArgs {
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
    /// The topic's name.
    pub name: String,
}

fn parse_config(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((name, value)) if !name.trim().is_empty() => Ok((name.trim().to_string(), value.to_string())),
        _ => Err(format!("expected NAME=VALUE, got {text:?}")),
    }
}

fn check_name(name: &str) -> anyhow::Result<()> {
    anyhow::ensure!(!name.is_empty() && name.len() <= TOPIC_NAME_BYTES_MAX, "a topic name has 1 to {TOPIC_NAME_BYTES_MAX} bytes");
    Ok(())
}

pub fn run(command: TopicCommand) -> anyhow::Result<()> {
    crate::block_on(async move {
        match command {
            TopicCommand::Create(args) => {
                check_name(&args.name)?;
                anyhow::ensure!((1..=PARTITIONS_MAX).contains(&args.partitions), "--partitions must be 1 to {PARTITIONS_MAX}");
                let mut connection = Connection::connect(&args.bootstrap.bootstrap).await?;
                connection.create_topic_with_configs(&args.name, args.partitions, &args.configs).await?;
                println!("created topic {} with {} partition(s)", args.name, args.partitions);
            }
            TopicCommand::List(args) => {
                let mut connection = Connection::connect(&args.bootstrap.bootstrap).await?;
                let metadata = connection.metadata(None).await?;
                let mut topics: Vec<(String, usize)> =
                    metadata.topics.iter().filter_map(|topic| Some((topic.name.as_ref()?.to_string(), topic.partitions.len()))).collect();
                topics.sort();
                let width = topics.iter().map(|(name, _)| name.len()).max().unwrap_or(0).max("TOPIC".len());
                println!("{:<width$}  PARTITIONS", "TOPIC");
                for (name, partitions) in topics {
                    println!("{name:<width$}  {partitions}");
                }
            }
            TopicCommand::Describe(args) => {
                check_name(&args.name)?;
                let mut connection = Connection::connect(&args.bootstrap.bootstrap).await?;
                describe(&mut connection, &args.name).await?;
            }
            TopicCommand::Delete(args) => {
                check_name(&args.name)?;
                let mut connection = Connection::connect(&args.bootstrap.bootstrap).await?;
                connection.delete_topic(&args.name).await?;
                println!("deleted topic {}", args.name);
            }
        }
        Ok(())
    })
}

async fn describe(connection: &mut Connection, name: &str) -> anyhow::Result<()> {
    let metadata = connection.metadata(Some(&[name])).await?;
    let topic = metadata.topics.first().context("Metadata answered no topic")?;
    check_code(|| format!("topic {name}"), topic.error_code, None)?;
    let partitions = i32::try_from(topic.partitions.len()).context("partition count")?;
    let id = topic.topic_id.as_hyphenated().to_string();
    println!("topic {name}  id {id}  partitions {partitions}");
    let starts = connection.list_offsets(name, partitions, -2).await?;
    let ends = connection.list_offsets(name, partitions, -1).await?;
    println!("{:>9}  {:>6}  {:>12}  {:>14}  {:>8}", "PARTITION", "LEADER", "LOG_START", "HIGH_WATERMARK", "RECORDS");
    let mut indexes: Vec<(i32, i32)> = topic.partitions.iter().map(|partition| (partition.partition_index, partition.leader_id.0)).collect();
    indexes.sort();
    for (index, leader) in indexes {
        let slot = usize::try_from(index).context("partition index")?;
        let (start, end) = (starts.get(slot).copied().unwrap_or(-1), ends.get(slot).copied().unwrap_or(-1));
        println!("{index:>9}  {leader:>6}  {start:>12}  {end:>14}  {:>8}", end - start);
    }
    let mut configs = connection.topic_configs(name).await?;
    configs.sort_by(|a, b| a.name.cmp(&b.name));
    println!("configs:");
    for config in configs {
        // Kafka's config sources: 1 = set on the topic, 5 = the broker's default.
        let source = match config.config_source {
            1 => "  (set on the topic)",
            _ => "",
        };
        let value = if config.is_sensitive { "(sensitive)".to_string() } else { config.value.as_deref().unwrap_or("null").to_string() };
        println!("  {} = {value}{source}", config.name.as_str());
    }
    Ok(())
}
