//! `yottastore produce TOPIC`: lines from standard input become records (optionally `KEY SEP
//! VALUE`), sent in batches with acks=all; prints how many the broker acknowledged.

use std::io::{BufRead, Read};

use anyhow::Context;
use broker::log::batch::{encode_batch, Compression, SimpleRecord};
use clap::Args;
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse};

use crate::bench::kafka_client::{check_code, topic_name, Connection};
use crate::BootstrapArgs;

/// Records per batch at most (one Produce request carries one batch per partition).
const BATCH_RECORDS_MAX: usize = 1000;
/// Bytes of keys and values per request at most: well below the broker's 1 MiB default
/// max.message.bytes once the record framing is added.
const REQUEST_PAYLOAD_BYTES_MAX: usize = 512 << 10;

#[derive(Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
    /// The topic to write to (it must exist: `yottastore topic create`).
    pub topic: String,
    /// Split each line at the first occurrence of this text into key and value (a line
    /// without it is a record without key).
    #[arg(long, short = 'K', value_name = "SEP")]
    pub key_separator: Option<String>,
    /// Write every record to this partition (default: keyed records by a hash of the key, as
    /// librdkafka's `consistent` partitioner; others a partition per batch, in turn).
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    /// Lines longer than this (bytes) are refused.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_line_bytes: usize,
}

/// Records waiting to be sent, per partition.
struct Pending {
    per_partition: Vec<Vec<SimpleRecord>>,
    records: usize,
    payload_bytes: usize,
}

pub fn run(args: ProduceArgs) -> anyhow::Result<()> {
    anyhow::ensure!(!args.key_separator.as_deref().is_some_and(str::is_empty), "--key-separator must not be empty");
    anyhow::ensure!(args.max_line_bytes >= 1, "--max-line-bytes must be at least 1");
    crate::block_on(async move {
        let mut connection = Connection::connect(&args.bootstrap.bootstrap).await?;
        let partitions = connection.partition_count(&args.topic).await?;
        if let Some(partition) = args.partition {
            anyhow::ensure!((0..partitions).contains(&partition), "topic {} has partitions 0 to {}, not {partition}", args.topic, partitions - 1);
        }
        let slots = usize::try_from(partitions).context("partition count")?;
        let mut pending = Pending { per_partition: vec![Vec::new(); slots], records: 0, payload_bytes: 0 };
        let mut next_unkeyed = 0usize;
        let mut written = 0u64;
        let stdin = std::io::stdin();
        let mut input = stdin.lock();
        let mut line = Vec::new();
        for number in 1u64.. {
            line.clear();
            // One byte more than allowed, to tell a line at the limit from a longer one.
            let read = Read::take(&mut input, args.max_line_bytes as u64 + 1).read_until(b'\n', &mut line).context("reading standard input")?;
            if read == 0 {
                break;
            }
            if line.last() == Some(&b'\n') {
                line.pop();
            } else if line.len() > args.max_line_bytes {
                anyhow::bail!("line {number} is longer than --max-line-bytes ({} bytes)", args.max_line_bytes);
            }
            let (key, value) = match &args.key_separator {
                Some(separator) => match find(&line, separator.as_bytes()) {
                    Some(at) => (Some(&line[..at]), &line[at + separator.len()..]),
                    None => (None, &line[..]),
                },
                None => (None, &line[..]),
            };
            let partition = match (args.partition, key) {
                (Some(partition), _) => partition as usize,
                (None, Some(key)) => crc32fast::hash(key) as usize % slots,
                // Sticky, as librdkafka: unkeyed records fill a batch of one partition, and the
                // next batch goes to the next partition.
                (None, None) => next_unkeyed % slots,
            };
            pending.payload_bytes += key.map_or(0, <[u8]>::len) + value.len();
            pending.per_partition[partition].push(SimpleRecord::new(key, Some(value), &[], now_ms()));
            pending.records += 1;
            if pending.records >= BATCH_RECORDS_MAX || pending.payload_bytes >= REQUEST_PAYLOAD_BYTES_MAX {
                written += send(&mut connection, &args.topic, &mut pending).await?;
                next_unkeyed += 1;
            }
        }
        if pending.records > 0 {
            written += send(&mut connection, &args.topic, &mut pending).await?;
        }
        println!("wrote {written} record(s) to {}", args.topic);
        Ok(())
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|window| window == needle)
}

fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |elapsed| elapsed.as_millis() as i64)
}

/// Sends every pending batch in one Produce request (acks=all) and returns the records the
/// broker acknowledged; any partition's error fails the whole command.
async fn send(connection: &mut Connection, topic: &str, pending: &mut Pending) -> anyhow::Result<u64> {
    let mut partition_data = Vec::new();
    let mut records = 0u64;
    for (index, batch) in pending.per_partition.iter_mut().enumerate() {
        if batch.is_empty() {
            continue;
        }
        records += batch.len() as u64;
        let encoded = encode_batch(batch, Compression::None).context("encoding a record batch")?;
        batch.clear();
        partition_data.push(PartitionProduceData::default().with_index(index as i32).with_records(Some(encoded.into())));
    }
    pending.records = 0;
    pending.payload_bytes = 0;
    let request = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default().with_name(topic_name(topic)).with_partition_data(partition_data)]);
    let version = connection.versions.produce;
    let response: ProduceResponse = connection.call(ApiKey::Produce, version, &request).await?;
    for topic_response in &response.responses {
        for partition in &topic_response.partition_responses {
            check_code(|| format!("producing to {topic} partition {}", partition.index), partition.error_code, partition.error_message.as_deref())?;
        }
    }
    Ok(records)
}
