//! `yottastore consume TOPIC`: prints a topic's records with a kcat-style format, from the
//! beginning, the end or an offset; follows new records until interrupted, or exits at the end
//! with `-e`.

use std::io::Write;
use std::time::Duration;

use anyhow::Context;
use broker::log::batch::{self, BatchIter};
use bytes::Bytes;
use clap::Args;
use kafka_protocol::messages::{ApiKey, FetchResponse};

use crate::bench::kafka_client::{check_code, fetch_request, Connection};
use crate::BootstrapArgs;

/// Bytes one fetch asks for, in all and per partition.
const FETCH_BYTES_MAX: i32 = 16 << 20;
const FETCH_PARTITION_BYTES_MAX: i32 = 4 << 20;
/// How long the broker holds a fetch open while there is nothing new.
const FETCH_WAIT: Duration = Duration::from_millis(500);
/// Records one decoded batch may claim at most (bounds the decoder's memory per batch).
const BATCH_RECORDS_MAX: i32 = 1 << 20;

#[derive(Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub bootstrap: BootstrapArgs,
    /// The topic to read.
    pub topic: String,
    /// Where to start: `beginning`, `end` (only new records), or an offset.
    #[arg(long, short = 'o', default_value = "end", value_parser = parse_start)]
    pub offset: Start,
    /// Start at the beginning (`--offset beginning`).
    #[arg(long, conflicts_with = "offset")]
    pub from_beginning: bool,
    /// Read only this partition (default: all).
    #[arg(long, short = 'p')]
    pub partition: Option<i32>,
    /// Exit after printing this many records.
    #[arg(long = "max-messages", short = 'n')]
    pub max_messages: Option<u64>,
    /// Exit when every partition's end (its high watermark) is reached, instead of waiting for
    /// new records.
    #[arg(short = 'e', long = "exit-at-end")]
    pub exit_at_end: bool,
    /// Output per record. Placeholders: %t topic, %p partition, %o offset, %k key, %s value,
    /// %T timestamp (ms), %K key length, %S value length, %% a percent sign; escapes \n, \t,
    /// \\. A null key or value prints as nothing (length -1).
    #[arg(long, short = 'f', default_value = "%s\\n")]
    pub format: String,
}

#[derive(Clone, Copy, Debug)]
pub enum Start {
    Beginning,
    End,
    Offset(i64),
}

fn parse_start(text: &str) -> Result<Start, String> {
    match text {
        "beginning" | "earliest" => Ok(Start::Beginning),
        "end" | "latest" => Ok(Start::End),
        offset => match offset.parse::<i64>() {
            Ok(offset) if offset >= 0 => Ok(Start::Offset(offset)),
            _ => Err(format!("expected beginning, end or an offset (0 or more), got {text:?}")),
        },
    }
}

/// One piece of the output format.
#[derive(Debug, PartialEq)]
enum Piece {
    Text(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Key,
    Value,
    Timestamp,
    KeyLength,
    ValueLength,
}

fn parse_format(format: &str) -> anyhow::Result<Vec<Piece>> {
    let mut pieces = Vec::new();
    let mut text = Vec::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        let piece = match c {
            '%' => match chars.next() {
                Some('t') => Piece::Topic,
                Some('p') => Piece::Partition,
                Some('o') => Piece::Offset,
                Some('k') => Piece::Key,
                Some('s') => Piece::Value,
                Some('T') => Piece::Timestamp,
                Some('K') => Piece::KeyLength,
                Some('S') => Piece::ValueLength,
                Some('%') => {
                    text.push(b'%');
                    continue;
                }
                other => anyhow::bail!("unknown placeholder %{} in --format (known: %t %p %o %k %s %T %K %S %%)", other.map(String::from).unwrap_or_default()),
            },
            '\\' => {
                let escaped = match chars.next() {
                    Some('n') => '\n',
                    Some('t') => '\t',
                    Some('r') => '\r',
                    Some('\\') => '\\',
                    other => anyhow::bail!("unknown escape \\{} in --format (known: \\n \\t \\r \\\\)", other.map(String::from).unwrap_or_default()),
                };
                text.push(escaped as u8);
                continue;
            }
            c => {
                let mut buf = [0u8; 4];
                text.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                continue;
            }
        };
        if !text.is_empty() {
            pieces.push(Piece::Text(std::mem::take(&mut text)));
        }
        pieces.push(piece);
    }
    if !text.is_empty() {
        pieces.push(Piece::Text(text));
    }
    Ok(pieces)
}

/// A record as printed.
struct Printed<'a> {
    topic: &'a str,
    partition: i32,
    offset: i64,
    timestamp_ms: i64,
    key: Option<&'a Bytes>,
    value: Option<&'a Bytes>,
}

fn print(out: &mut impl Write, pieces: &[Piece], record: &Printed<'_>) -> std::io::Result<()> {
    let length = |bytes: Option<&Bytes>| bytes.map_or(-1, |bytes| bytes.len() as i64);
    for piece in pieces {
        match piece {
            Piece::Text(text) => out.write_all(text)?,
            Piece::Topic => out.write_all(record.topic.as_bytes())?,
            Piece::Partition => write!(out, "{}", record.partition)?,
            Piece::Offset => write!(out, "{}", record.offset)?,
            Piece::Key => out.write_all(record.key.map_or(&[][..], |key| key))?,
            Piece::Value => out.write_all(record.value.map_or(&[][..], |value| value))?,
            Piece::Timestamp => write!(out, "{}", record.timestamp_ms)?,
            Piece::KeyLength => write!(out, "{}", length(record.key))?,
            Piece::ValueLength => write!(out, "{}", length(record.value))?,
        }
    }
    Ok(())
}

/// Where each read partition is: the next offset to fetch and the last high watermark seen.
struct Position {
    partition: i32,
    next_offset: i64,
    high_watermark: i64,
}

pub fn run(args: ConsumeArgs) -> anyhow::Result<()> {
    let pieces = parse_format(&args.format)?;
    let start = if args.from_beginning { Start::Beginning } else { args.offset };
    crate::block_on(async move {
        let mut connection = Connection::connect(&args.bootstrap.bootstrap).await?;
        let partitions = connection.partition_count(&args.topic).await?;
        let wanted: Vec<i32> = match args.partition {
            Some(partition) => {
                anyhow::ensure!((0..partitions).contains(&partition), "topic {} has partitions 0 to {}, not {partition}", args.topic, partitions - 1);
                vec![partition]
            }
            None => (0..partitions).collect(),
        };
        let starts = connection.list_offsets(&args.topic, partitions, -2).await?;
        let ends = connection.list_offsets(&args.topic, partitions, -1).await?;
        let mut positions: Vec<Position> = wanted
            .iter()
            .map(|&partition| {
                let (first, end) = (starts[partition as usize], ends[partition as usize]);
                let next_offset = match start {
                    Start::Beginning => first,
                    Start::End => end,
                    Start::Offset(offset) => offset,
                };
                Position { partition, next_offset, high_watermark: end }
            })
            .collect();
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        let mut printed = 0u64;
        loop {
            if args.max_messages.is_some_and(|max| printed >= max) {
                break;
            }
            if args.exit_at_end {
                positions.retain(|position| position.next_offset < position.high_watermark);
                if positions.is_empty() {
                    break;
                }
            }
            let request = fetch_request(
                &args.topic,
                &positions.iter().map(|position| (position.partition, position.next_offset)).collect::<Vec<_>>(),
                FETCH_BYTES_MAX,
                FETCH_PARTITION_BYTES_MAX,
                FETCH_WAIT,
            );
            let version = connection.versions.fetch;
            let response: FetchResponse = connection.call(ApiKey::Fetch, version, &request).await?;
            check_code(|| format!("fetching from {}", args.topic), response.error_code, None)?;
            for partition in response.responses.iter().flat_map(|topic| &topic.partitions) {
                let position = positions.iter_mut().find(|position| position.partition == partition.partition_index).context("Fetch answered a partition not asked for")?;
                check_code(|| format!("fetching {} partition {} at offset {}", args.topic, position.partition, position.next_offset), partition.error_code, None)?;
                position.high_watermark = partition.high_watermark;
                let Some(records) = &partition.records else { continue };
                for batch in BatchIter::new(records) {
                    // A batch cut at the end of the answer (max bytes) comes whole next time.
                    let Ok((header, bytes)) = batch else { break };
                    let next = header.last_offset() + 1;
                    if next <= position.next_offset {
                        continue;
                    }
                    anyhow::ensure!(header.record_count <= BATCH_RECORDS_MAX, "a batch at offset {} claims {} records", header.base_offset, header.record_count);
                    batch::validate_integrity(bytes).with_context(|| format!("partition {} offset {}", position.partition, header.base_offset))?;
                    let mut buffer = Bytes::copy_from_slice(bytes);
                    let decoded = kafka_protocol::records::RecordBatchDecoder::decode(&mut buffer)
                        .map_err(|error| anyhow::anyhow!("decoding the batch at offset {} of partition {}: {error}", header.base_offset, position.partition))?;
                    for record in decoded.records {
                        if record.offset < position.next_offset || record.control || args.max_messages.is_some_and(|max| printed >= max) {
                            continue;
                        }
                        let shown = Printed {
                            topic: &args.topic,
                            partition: position.partition,
                            offset: record.offset,
                            timestamp_ms: record.timestamp,
                            key: record.key.as_ref(),
                            value: record.value.as_ref(),
                        };
                        if let Err(error) = print(&mut out, &pieces, &shown) {
                            return quiet_on_closed_pipe(error);
                        }
                        printed += 1;
                    }
                    position.next_offset = next;
                }
            }
            if let Err(error) = out.flush() {
                return quiet_on_closed_pipe(error);
            }
        }
        if let Err(error) = out.flush() {
            return quiet_on_closed_pipe(error);
        }
        Ok(())
    })
}

/// A reader that went away (`| head`) ends the command quietly, as for other Unix tools.
fn quiet_on_closed_pipe(error: std::io::Error) -> anyhow::Result<()> {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        return Ok(());
    }
    Err(error).context("writing to standard output")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_into_pieces() {
        let pieces = parse_format("%t/%p@%o %k=%s (%K,%S) %T 100%%\\n").unwrap();
        let mut out = Vec::new();
        let key = Bytes::from_static(b"k1");
        let record = Printed { topic: "t", partition: 2, offset: 7, timestamp_ms: 99, key: Some(&key), value: None };
        print(&mut out, &pieces, &record).unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "t/2@7 k1= (2,-1) 99 100%\n");
        assert!(parse_format("%x").is_err());
        assert!(parse_format("\\q").is_err());
        assert!(parse_format("%").is_err());
    }
}
