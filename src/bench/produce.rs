//! `yottastore bench produce`: a load generator in the spirit of kafka-producer-perf-test,
//! printed beside the physical limits measured in the same run.
//!
//! Records (default 1 KiB values, deterministic content) are packed into uncompressed v2
//! batches of at most `--batch-bytes` (default 1 MiB) per partition. The batches are encoded
//! once and each Produce request (one batch of one partition, partitions in turn, as a Kafka
//! producer whose batch.size equals max.request.size sends them) is encoded once too, the batch
//! shared by every partition's request; a send only patches the correlation id, so the
//! generator spends its CPU on the socket, not on encoding. Requests are pipelined,
//! `--in-flight` at a time on one connection (Kafka's max.in.flight.requests.per.connection),
//! and the latency of each one is taken from the start of its send to the arrival of its
//! response.
//!
//! Partition counts (`--partitions 1,100,1000`): each count gets a broker child of its own on
//! a fresh device and a topic of that many partitions; a run writes every partition (the batch
//! shrinks to `--total-mib` / partitions when that is below `--batch-bytes`). The device is
//! sized for the data (partitions share zones), with the broker's default 64 MiB zones unless
//! that would exceed `--device-mib-max`.
//!
//! Limits, measured in every run, interleaved with the produce runs so drift hits all alike:
//! - loopback TCP: a Rust sender/receiver pair moving the same number of bytes in 1 MiB writes;
//! - disk: the storage bench's raw O_DIRECT writes of the same size in the broker's data file
//!   system: 1 MiB at queue depth 1 with an fdatasync per MiB (the policy of acks=all with
//!   1 MiB batches: every request is flushed before it is answered), and 8 x 1 MiB streaming
//!   with one fdatasync (the ceiling if group commit merged every flush).
//!
//! Ratios are the median of per-run ratios, each against the limit of the same run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use broker::log::batch::{encode_batch, Compression, SimpleRecord};
use bytes::Bytes;
use clap::Args;
use tokio::sync::{mpsc, Semaphore};

use super::kafka_client::{decode_produce, Connection, PreparedProduce};
use super::progress::Progress;
use super::limits::{self, BrokerChild, WorkDir};
use super::storage::{self, max, median, min};

const MIB: u64 = 1 << 20;

/// The settings both load generators share.
#[derive(Args, Clone, Debug)]
pub struct KafkaBenchArgs {
    /// A running broker to measure. Without it, a `yottastore serve` child is started on a free
    /// 127.0.0.1 port with its data under the work directory, and stopped at the end.
    #[arg(long, value_name = "HOST:PORT")]
    pub bootstrap: Option<String>,
    /// Topic to produce to / consume from (created if missing).
    #[arg(long, default_value = "yottastore-bench")]
    pub topic: String,
    /// Partition counts to measure, each on a topic (and a child broker) of its own, e.g.
    /// `1,100,1000` (an existing topic keeps its own count).
    #[arg(long, value_delimiter = ',', default_values_t = [1, 100, 1000], value_parser = clap::value_parser!(i32).range(1..=10_000))]
    pub partitions: Vec<i32>,
    /// The largest device a child broker gets, in MiB: zones are made smaller than 64 MiB (down
    /// to 2 MiB) to keep a device for many partitions within it.
    #[arg(long, default_value_t = 4096, value_parser = clap::value_parser!(u64).range(64..=1 << 20))]
    pub device_mib_max: u64,
    /// Value bytes per record.
    #[arg(long, default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    pub record_bytes: u64,
    /// Key bytes per record (0: null keys).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=1 << 16))]
    pub key_bytes: u64,
    /// Records per run (default: --total-mib of values).
    #[arg(long)]
    pub records: Option<u64>,
    /// MiB of record values per run, when --records is not given.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=1 << 20))]
    pub total_mib: u64,
    /// Largest batch per partition, in bytes (whole v2 batch).
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(256..=1 << 20))]
    pub batch_bytes: u64,
    /// Most bytes per Produce request (Kafka's max.request.size): a request packs the batches
    /// of consecutive partitions up to it, as a Kafka producer packs the batches ready for a
    /// broker (at least one batch per request).
    #[arg(long, default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(1024..=64 << 20))]
    pub request_bytes: u64,
    /// acks: -1 (all), 1 or 0.
    #[arg(long, default_value_t = -1, allow_hyphen_values = true, value_parser = clap::value_parser!(i16).range(-1..=1))]
    pub acks: i16,
    /// Produce requests in flight on the connection.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub in_flight: u32,
    /// Repetitions; the median is reported with [min..max].
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub runs: u32,
    /// Where the work directory (broker data, raw disk files) goes. Default ./bench-data.
    /// Must be on the file system to measure (not tmpfs: O_DIRECT).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Keep the work directory.
    #[arg(long)]
    pub keep: bool,
    /// Skip the limit measurements (loopback, disk).
    #[arg(long)]
    pub no_limits: bool,
    /// Extra arguments for the child broker (e.g. "--io sync"), split on whitespace.
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    pub broker_args: String,
}

impl KafkaBenchArgs {
    pub fn record_count(&self) -> u64 {
        self.records
            .unwrap_or_else(|| (self.total_mib * MIB).div_ceil(self.record_bytes))
            .max(1)
    }

    /// Bytes of records a run writes (values, keys, record overhead).
    pub fn run_bytes(&self) -> u64 {
        self.record_count() * (self.record_bytes + self.key_bytes + 12)
    }

    /// These settings for one of the partition counts: the topic named after the count when
    /// several are measured, and batches small enough that a run writes every partition.
    pub fn for_partitions(&self, partitions: i32) -> KafkaBenchArgs {
        let mut one = self.clone();
        one.partitions = vec![partitions];
        if self.partitions.len() > 1 {
            one.topic = format!("{}-{partitions}p", self.topic);
        }
        let one_record = self.record_bytes + self.key_bytes + 128;
        let share = self.run_bytes() / partitions as u64;
        // Below --batch-bytes, batches are cut so that whole ones fill a request.
        let packed = (self.request_bytes - REQUEST_OVERHEAD_BYTES) / self.request_bytes.div_ceil(share.max(1));
        one.batch_bytes = self.batch_bytes.min(share.min(packed).max(one_record)).max(256);
        one
    }

    /// The partition count of settings made by `for_partitions`.
    pub fn partition_count(&self) -> i32 {
        self.partitions[0]
    }
}

/// Bytes of a Produce request besides its batches budgeted when packing them (header, topic
/// name, a few fields per partition).
const REQUEST_OVERHEAD_BYTES: u64 = 1024;

/// The bench's environment: work directory, optional child broker, runtimes.
pub struct Setup {
    pub work: WorkDir,
    pub broker: Option<BrokerChild>,
    pub addr: String,
    pub client: tokio::runtime::Runtime,
    pub disk: tokio::runtime::Runtime,
}

impl Setup {
    /// `args` as made by `KafkaBenchArgs::for_partitions`; `written_bytes`: how much the
    /// broker will store in all (sizes its device).
    pub fn start(args: &KafkaBenchArgs, name: &str, written_bytes: u64) -> anyhow::Result<Setup> {
        let work = WorkDir::create(args.dir.as_deref(), args.keep, name)?;
        let client = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let disk = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        let (broker, addr) = match &args.bootstrap {
            Some(addr) => (None, addr.clone()),
            None => {
                let partitions = args.partition_count() as u64;
                let device = limits::device_for(written_bytes, partitions, args.device_mib_max)?;
                let extra: Vec<String> = args.broker_args.split_whitespace().map(String::from).collect();
                let broker = BrokerChild::start(work.path(), device, &extra)?;
                let addr = broker.addr.clone();
                (Some(broker), addr)
            }
        };
        Ok(Setup {
            work,
            broker,
            addr,
            client,
            disk,
        })
    }

    pub fn describe(&self) -> String {
        match &self.broker {
            Some(broker) => format!(
                "child `yottastore serve` pid {} on {} (data in {}, fs {}; device {} zones of {} MiB)",
                broker.pid(),
                broker.addr,
                self.work.path().display(),
                storage::file_system_of(self.work.path()),
                broker.device.zone_count,
                broker.device.zone_mib
            ),
            None => format!("{} (external)", self.addr),
        }
    }

    /// Stops the child broker (SIGTERM: it flushes) and starts it again on the same data: its
    /// read cache is then empty and reads come from the device. False with an external broker.
    pub fn restart(&mut self) -> anyhow::Result<bool> {
        let Some(broker) = self.broker.as_mut() else { return Ok(false) };
        broker.restart()?;
        self.addr = broker.addr.clone();
        Ok(true)
    }

    /// CPU seconds used so far by the child broker, if there is one.
    pub fn broker_cpu_seconds(&self) -> Option<f64> {
        self.broker.as_ref().and_then(|broker| cpu_seconds(&format!("/proc/{}/stat", broker.pid())))
    }

    pub fn stop(mut self) -> anyhow::Result<()> {
        if let Some(broker) = self.broker.as_mut() {
            broker.stop()?;
        }
        Ok(())
    }
}

/// utime + stime of a /proc stat file, in seconds (assumes USER_HZ = 100, as on every Linux
/// architecture in use).
pub fn cpu_seconds(stat_path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    let after_name = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after_name.split(' ').collect();
    // Fields 14 and 15 of stat(5); after the name, field 3 is index 0.
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// The produce workload: pre-encoded requests and the order they are sent in.
pub struct Workload {
    /// The requests, one per (partitions, batches) sent.
    prepared: Vec<PreparedProduce>,
    /// Indexes into `prepared`, in sending order.
    order: Vec<u32>,
    pub records: u64,
    pub records_per_batch: u64,
    pub batch_bytes: u64,
    /// Bytes of all batches sent per run (what crosses the socket and reaches the disk, less
    /// request headers).
    pub wire_bytes: u64,
    /// Record value bytes per run.
    pub payload_bytes: u64,
    /// Records of partition 0 per run (set by `interleaved`).
    pub partition0_records: u64,
}

impl Workload {
    /// `--records` records in full batches, partitions in turn (the last batch may be partly
    /// filled), each request packing the batches of consecutive partitions up to
    /// `--request-bytes`.
    pub fn build(args: &KafkaBenchArgs, version: i16, partitions: i32) -> anyhow::Result<Workload> {
        let records = args.record_count();
        let (full_batch, per_batch) = build_batch(args, None)?;
        let full_batches = records / per_batch;
        let tail_records = records % per_batch;
        let pack = (args.request_bytes.saturating_sub(REQUEST_OVERHEAD_BYTES) / full_batch.len() as u64).clamp(1, partitions as u64);
        // One prepared request per (first partition, batch count), made when first sent.
        let mut prepared = Vec::new();
        let mut made: std::collections::HashMap<(u64, u64), u32> = std::collections::HashMap::new();
        let mut order = Vec::with_capacity(full_batches.div_ceil(pack) as usize + 1);
        let mut sent = 0u64;
        while sent < full_batches {
            let count = pack.min(full_batches - sent);
            let first = sent % partitions as u64;
            let index = match made.get(&(first, count)) {
                Some(&index) => index,
                None => {
                    let batches = (0..count).map(|at| (((first + at) % partitions as u64) as i32, full_batch.clone())).collect();
                    prepared.push(PreparedProduce::packed(version, &args.topic, batches, args.acks)?);
                    made.insert((first, count), prepared.len() as u32 - 1);
                    prepared.len() as u32 - 1
                }
            };
            order.push(index);
            sent += count;
        }
        if tail_records > 0 {
            let (batch, _) = build_batch(args, Some(tail_records))?;
            let partition = (full_batches % partitions as u64) as i32;
            order.push(prepared.len() as u32);
            prepared.push(PreparedProduce::new(version, &args.topic, partition, args.acks, batch)?);
        }
        Ok(Workload::of(prepared, order, records, per_batch, full_batch.len() as u64, args.record_bytes))
    }

    /// Partition 0 gets `--records` records in full batches; after each of its batches come
    /// batches of the other partitions, in turn, with as many bytes in all, so that partition
    /// 0's batches lie among everyone else's (as on a broker where many partitions are written
    /// at once) and every partition gets at least one. Whole batches only.
    pub fn interleaved(args: &KafkaBenchArgs, version: i16, partitions: i32) -> anyhow::Result<Workload> {
        let (batch, per_batch) = build_batch(args, None)?;
        let rounds = (args.record_count() / per_batch).max(1);
        let others = partitions as u64 - 1;
        let per_round = others.div_ceil(rounds);
        let mut prepared = vec![PreparedProduce::new(version, &args.topic, 0, args.acks, batch.clone())?];
        let mut order = Vec::with_capacity((rounds * (1 + per_round)) as usize);
        let mut records = rounds * per_batch;
        if others > 0 {
            let mut small = args.clone();
            small.batch_bytes = (args.batch_bytes / per_round).max(args.record_bytes + args.key_bytes + 128);
            let (other_batch, other_per_batch) = build_batch(&small, None)?;
            for partition in 1..partitions {
                prepared.push(PreparedProduce::new(version, &args.topic, partition, args.acks, other_batch.clone())?);
            }
            records += rounds * per_round * other_per_batch;
        }
        for round in 0..rounds {
            order.push(0);
            if others > 0 {
                order.extend((0..per_round).map(|turn| 1 + ((round * per_round + turn) % others) as u32));
            }
        }
        let mut workload = Workload::of(prepared, order, records, per_batch, batch.len() as u64, args.record_bytes);
        workload.partition0_records = rounds * per_batch;
        Ok(workload)
    }

    fn of(prepared: Vec<PreparedProduce>, order: Vec<u32>, records: u64, records_per_batch: u64, batch_bytes: u64, record_bytes: u64) -> Workload {
        let wire_bytes = order.iter().map(|&index| prepared[index as usize].batch_bytes).sum();
        Workload { prepared, order, records, records_per_batch, batch_bytes, wire_bytes, payload_bytes: records * record_bytes, partition0_records: 0 }
    }

    fn requests(&self) -> impl Iterator<Item = &PreparedProduce> {
        self.order.iter().map(|&index| &self.prepared[index as usize])
    }

    fn request_count(&self) -> u64 {
        self.order.len() as u64
    }

    fn batch_count(&self) -> u64 {
        self.requests().map(|request| request.partitions.len() as u64).sum()
    }
}

/// A batch of `count` records (default: as many as fit in `--batch-bytes`).
fn build_batch(args: &KafkaBenchArgs, count: Option<u64>) -> anyhow::Result<(Bytes, u64)> {
    let now = storage::now_ms();
    let value_bytes = args.record_bytes as usize;
    let key_bytes = args.key_bytes as usize;
    let most = (args.batch_bytes / (args.record_bytes + args.key_bytes + 7)).max(1);
    let pattern = storage::random_bytes(value_bytes + key_bytes + most as usize + 1, 0x9e3779b9);
    let encode = |count: u64| -> anyhow::Result<Vec<u8>> {
        let records: Vec<SimpleRecord> = (0..count as usize)
            .map(|index| {
                let key = (key_bytes > 0).then(|| &pattern[value_bytes + index..value_bytes + index + key_bytes]);
                SimpleRecord::new(key, Some(&pattern[index..index + value_bytes]), &[], now)
            })
            .collect();
        Ok(encode_batch(&records, Compression::None)?)
    };
    if let Some(count) = count {
        return Ok((Bytes::from(encode(count)?), count));
    }
    // Largest count that fits: estimate from one record's size, then adjust.
    let one = encode(1)?.len() as u64;
    let per_record = encode(2)?.len() as u64 - one;
    let mut count = ((args.batch_bytes.saturating_sub(one)) / per_record.max(1) + 1).clamp(1, most);
    let mut batch = encode(count)?;
    while batch.len() as u64 > args.batch_bytes && count > 1 {
        count -= 1;
        batch = encode(count)?;
    }
    anyhow::ensure!(
        batch.len() as u64 <= args.batch_bytes,
        "one record of {} bytes does not fit in --batch-bytes {}",
        args.record_bytes,
        args.batch_bytes
    );
    loop {
        let bigger = encode(count + 1)?;
        if bigger.len() as u64 > args.batch_bytes {
            break;
        }
        count += 1;
        batch = bigger;
    }
    Ok((Bytes::from(batch), count))
}

/// What one produce run saw.
pub struct ProduceOutcome {
    pub elapsed: Duration,
    /// Per request, send start to response, in microseconds.
    pub latencies_us: Vec<u64>,
    pub records: u64,
    pub wire_bytes: u64,
}

/// Sends every request of `workload` with at most `in_flight` outstanding; checks each answer.
pub async fn produce_run(connection: Connection, workload: &Workload, in_flight: u32, acks: i16) -> anyhow::Result<(ProduceOutcome, Connection)> {
    let versions = connection.versions;
    let version = versions.produce;
    let (mut writer, mut reader) = connection.split();
    let window = Arc::new(Semaphore::new(in_flight as usize));
    let (sent_tx, mut sent_rx) = mpsc::unbounded_channel::<(i32, Instant, &PreparedProduce)>();
    let request_count = workload.request_count();
    let mut latencies_us = Vec::with_capacity(request_count as usize);
    let started = Instant::now();
    // Requests answered (acks=0: sent), on stderr while the run lasts.
    let progress = std::cell::RefCell::new(Progress::new("produce", request_count, "requests"));
    let send = async {
        for request in workload.requests() {
            if acks != 0 {
                window.acquire().await.expect("never closed").forget();
            }
            let at = Instant::now();
            let correlation_id = writer.send_produce(request).await?;
            if acks != 0 {
                let _ = sent_tx.send((correlation_id, at, request));
            } else {
                progress.borrow_mut().advance(1, request.batch_bytes);
            }
        }
        anyhow::Ok(())
    };
    let receive = async {
        if acks == 0 {
            return anyhow::Ok(());
        }
        for _ in 0..request_count {
            let frame = reader.read_frame().await?;
            let arrived = Instant::now();
            let (correlation_id, at, request) = sent_rx.recv().await.context("a response nobody waits for")?;
            window.add_permits(1);
            progress.borrow_mut().advance(1, request.batch_bytes);
            latencies_us.push((arrived - at).as_micros() as u64);
            let response = decode_produce(version, correlation_id, frame)?;
            let answers: Vec<_> = response.responses.iter().flat_map(|topic| topic.partition_responses.iter()).collect();
            anyhow::ensure!(answers.len() == request.partitions.len(), "a Produce response with {} partitions for {}", answers.len(), request.partitions.len());
            for (answer, &partition) in answers.iter().zip(&request.partitions) {
                anyhow::ensure!(
                    answer.index == partition && answer.error_code == 0,
                    "produce to partition {partition} failed: error {} {}",
                    answer.error_code,
                    answer.error_message.as_deref().unwrap_or("")
                );
            }
        }
        Ok(())
    };
    let (sent, received) = tokio::join!(send, receive);
    progress.into_inner().finish();
    sent?;
    received?;
    let elapsed = started.elapsed();
    Ok((
        ProduceOutcome {
            elapsed,
            latencies_us,
            records: workload.records,
            wire_bytes: workload.wire_bytes,
        },
        Connection::join(writer, reader, versions),
    ))
}

/// The value at quantile `q` of sorted `values`, in ms.
fn percentile_ms(sorted_us: &[u64], q: f64) -> f64 {
    if sorted_us.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted_us.len() as f64).ceil() as usize).clamp(1, sorted_us.len());
    sorted_us[rank - 1] as f64 / 1e3
}

#[derive(Default)]
pub struct ProduceSeries {
    pub mb_per_s: Vec<f64>,
    pub payload_mb_per_s: Vec<f64>,
    pub records_per_s: Vec<f64>,
    pub p50: Vec<f64>,
    pub p99: Vec<f64>,
    pub p999: Vec<f64>,
    pub max: Vec<f64>,
    pub broker_cpu: Vec<f64>,
    pub client_cpu: Vec<f64>,
}

impl ProduceSeries {
    pub fn record(&mut self, outcome: &ProduceOutcome, payload_bytes: u64, broker_cpu: Option<f64>, client_cpu: Option<f64>) {
        let seconds = outcome.elapsed.as_secs_f64();
        self.mb_per_s.push(storage::mb_per_s(outcome.wire_bytes, outcome.elapsed));
        self.payload_mb_per_s.push(storage::mb_per_s(payload_bytes, outcome.elapsed));
        self.records_per_s.push(outcome.records as f64 / seconds);
        let mut sorted = outcome.latencies_us.clone();
        sorted.sort_unstable();
        self.p50.push(percentile_ms(&sorted, 0.50));
        self.p99.push(percentile_ms(&sorted, 0.99));
        self.p999.push(percentile_ms(&sorted, 0.999));
        self.max.push(sorted.last().map_or(f64::NAN, |&us| us as f64 / 1e3));
        if let Some(cpu) = broker_cpu {
            self.broker_cpu.push(cpu / seconds);
        }
        if let Some(cpu) = client_cpu {
            self.client_cpu.push(cpu / seconds);
        }
    }
}

/// Limits of one run.
#[derive(Default)]
pub struct LimitSeries {
    pub loopback: Vec<f64>,
    pub disk_sync: Vec<f64>,
    pub disk_stream: Vec<f64>,
    pub disk_read: Vec<f64>,
}

pub fn spread(values: &[f64]) -> String {
    format!("[{:.0}..{:.0}]", min(values), max(values))
}

pub fn spread2(values: &[f64]) -> String {
    format!("[{:.2}..{:.2}]", min(values), max(values))
}

pub fn ratios(values: &[f64], of: &[f64]) -> Vec<f64> {
    values.iter().zip(of).map(|(value, of)| value / of).collect()
}

pub fn row(label: &str, values: &[f64], columns: &[Option<Vec<f64>>]) {
    let mut line = format!("{:<46} {:>7.0} {:>13}", label, median(values), spread(values));
    for column in columns {
        match column {
            Some(ratios) if !ratios.is_empty() => line += &format!(" {:>10.2}", median(ratios)),
            _ => line += &format!(" {:>10}", "-"),
        }
    }
    println!("{line}");
}

/// Cores kept busy during `what` by the broker and by the load generator, per run.
pub fn print_cpu(what: &str, broker_cpu: &[f64], client_cpu: &[f64]) {
    if broker_cpu.is_empty() {
        return;
    }
    println!(
        "cpu during {what} (cores busy): broker {:.2} {}, load generator {:.2} {}; {} cpus online",
        median(broker_cpu),
        spread2(broker_cpu),
        median(client_cpu),
        spread2(client_cpu),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
}

pub fn self_cpu_seconds() -> Option<f64> {
    cpu_seconds("/proc/self/stat")
}

/// Connects, creates the topic if missing, and returns the connection and partition count.
pub async fn open_topic(addr: &str, args: &KafkaBenchArgs) -> anyhow::Result<(Connection, i32)> {
    let mut connection = Connection::connect(addr).await?;
    connection.create_topic(&args.topic, args.partition_count()).await?;
    // A freshly created topic may need a moment before Metadata shows its leaders.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match connection.partition_count(&args.topic).await {
            Ok(count) => return Ok((connection, count)),
            Err(error) if Instant::now() < deadline => {
                tracing::debug!(%error, "waiting for the topic");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// The produce bench's aim (issue 13): this share of min(loopback, disk streaming write) with
/// acks=all, on up to `AIM_PARTITIONS_MAX` partitions.
const AIM_RATIO: f64 = 0.6;
const AIM_PARTITIONS_MAX: i32 = 100;

/// One partition count's figures, for the summary.
struct CountResult {
    partitions: i32,
    batch_bytes: u64,
    series: ProduceSeries,
    limits: LimitSeries,
}

pub fn run(args: KafkaBenchArgs) -> anyhow::Result<()> {
    let mut results = Vec::new();
    for &partitions in &args.partitions {
        results.push(run_count(&args.for_partitions(partitions))?);
    }
    print_summary(&args, &results);
    Ok(())
}

/// The runs of one partition count, on a broker of its own, and their table.
fn run_count(args: &KafkaBenchArgs) -> anyhow::Result<CountResult> {
    let setup = Setup::start(args, "produce-bench", args.run_bytes() * u64::from(args.runs))?;
    let (mut connection, partitions) = setup.client.block_on(open_topic(&setup.addr, args))?;
    let workload = Workload::build(args, connection.versions.produce, partitions)?;
    let disk_mib = workload.wire_bytes.div_ceil(MIB);

    println!();
    println!(
        "produce bench: broker {}; topic {} ({partitions} partitions), Produce v{}",
        setup.describe(),
        args.topic,
        connection.versions.produce
    );
    println!(
        "per run: {} records x {} B values{} = {:.1} MiB payload, {:.1} MiB in {} uncompressed v2 batches of {} records ({} B, max {}), \
         partitions in turn, {} requests (batches of consecutive partitions packed up to {} B); acks={} in-flight={} runs={} (median [min..max])",
        workload.records,
        args.record_bytes,
        if args.key_bytes > 0 { format!(" + {} B keys", args.key_bytes) } else { String::new() },
        workload.payload_bytes as f64 / MIB as f64,
        workload.wire_bytes as f64 / MIB as f64,
        workload.batch_count(),
        workload.records_per_batch,
        workload.batch_bytes,
        args.batch_bytes,
        workload.request_count(),
        args.request_bytes,
        args.acks,
        args.in_flight,
        args.runs
    );

    let mut limits = LimitSeries::default();
    let mut series = ProduceSeries::default();
    for run in 0..args.runs {
        let step = |what: &str| eprintln!("{partitions} partitions, run {}/{}: {what}...", run + 1, args.runs);
        if !args.no_limits {
            step("loopback TCP");
            limits.loopback.push(limits::loopback_mb_per_s(workload.wire_bytes)?);
            step("raw disk write, sync per MiB");
            limits.disk_sync.push(limits::disk_write_mb_per_s(&setup.disk, setup.work.path(), disk_mib, true)?);
            step("raw disk write, streaming");
            limits.disk_stream.push(limits::disk_write_mb_per_s(&setup.disk, setup.work.path(), disk_mib, false)?);
        }
        step("produce");
        let broker_before = setup.broker_cpu_seconds();
        let client_before = self_cpu_seconds();
        let (outcome, returned) = setup.client.block_on(produce_run(connection, &workload, args.in_flight, args.acks))?;
        connection = returned;
        let broker_cpu = broker_before.zip(setup.broker_cpu_seconds()).map(|(before, after)| after - before);
        let client_cpu = client_before.zip(self_cpu_seconds()).map(|(before, after)| after - before);
        series.record(&outcome, workload.payload_bytes, broker_cpu, client_cpu);
    }
    drop(connection);

    print_produce_table(args, &limits, &series);
    setup.stop()?;
    Ok(CountResult { partitions, batch_bytes: workload.batch_bytes, series, limits })
}

/// One line per partition count: the produce figure beside its runs' limit.
fn print_summary(args: &KafkaBenchArgs, results: &[CountResult]) {
    println!();
    println!(
        "summary, acks={} (MB/s = 10^6 B/s, medians of {} runs; ratios against each run's own min(loopback, disk stream))",
        args.acks, args.runs
    );
    println!("{:>10} {:>10} {:>8} {:>13} {:>12} {:>10} {:>8} {:>9}", "partitions", "batch B", "MB/s", "[min..max]", "limit MB/s", "ratio", "p99 ms", "aim");
    for result in results {
        let limit: Vec<f64> = result.limits.loopback.iter().zip(&result.limits.disk_stream).map(|(a, b)| a.min(*b)).collect();
        let (limit_text, ratio_text, aim) = if limit.is_empty() {
            ("-".to_string(), "-".to_string(), "-")
        } else {
            let ratio = median(&ratios(&result.series.mb_per_s, &limit));
            let aim = match (result.partitions <= AIM_PARTITIONS_MAX, ratio >= AIM_RATIO) {
                (false, _) => "-",
                (true, true) => "MET",
                (true, false) => "NOT MET",
            };
            (format!("{:.0}", median(&limit)), format!("{ratio:.2}"), aim)
        };
        println!(
            "{:>10} {:>10} {:>8.0} {:>13} {:>12} {:>10} {:>8.2} {:>9}",
            result.partitions,
            result.batch_bytes,
            median(&result.series.mb_per_s),
            spread(&result.series.mb_per_s),
            limit_text,
            ratio_text,
            median(&result.series.p99),
            aim
        );
    }
    println!("aim: produce >= {AIM_RATIO} x min(loopback, disk stream) with acks=all on 1 to {AIM_PARTITIONS_MAX} partitions");
}

pub fn print_produce_table(args: &KafkaBenchArgs, limits: &LimitSeries, series: &ProduceSeries) {
    println!();
    println!(
        "{:<46} {:>7} {:>13} {:>10} {:>10} {:>10}",
        "measurement (MB/s = 10^6 B/s)", "MB/s", "[min..max]", "vs loopbk", "vs dsync", "vs dstream"
    );
    let have = !limits.loopback.is_empty();
    let against = |values: &[f64], of: &[f64]| have.then(|| ratios(values, of));
    row("loopback TCP, 1 MiB writes", &limits.loopback, &[against(&limits.loopback, &limits.loopback), None, None]);
    row("disk O_DIRECT 1 MiB QD1 + fdatasync/MiB", &limits.disk_sync, &[None, against(&limits.disk_sync, &limits.disk_sync), None]);
    row(
        &format!("disk O_DIRECT 1 MiB x{} stream + fdatasync", storage::RAW_QUEUE_DEPTH),
        &limits.disk_stream,
        &[None, None, against(&limits.disk_stream, &limits.disk_stream)],
    );
    row(
        &format!("produce acks={} (batch bytes)", args.acks),
        &series.mb_per_s,
        &[
            against(&series.mb_per_s, &limits.loopback),
            against(&series.mb_per_s, &limits.disk_sync),
            against(&series.mb_per_s, &limits.disk_stream),
        ],
    );
    println!(
        "produce: {:.0} records/s {}, payload {:.0} MB/s; request latency ms p50 {:.2} {} p99 {:.2} {} p99.9 {:.2} {} max {:.2}",
        median(&series.records_per_s),
        spread(&series.records_per_s),
        median(&series.payload_mb_per_s),
        median(&series.p50),
        spread2(&series.p50),
        median(&series.p99),
        spread2(&series.p99),
        median(&series.p999),
        spread2(&series.p999),
        median(&series.max),
    );
    print_cpu("produce", &series.broker_cpu, &series.client_cpu);
    if have {
        let limit: Vec<f64> = limits.loopback.iter().zip(&limits.disk_sync).map(|(a, b)| a.min(*b)).collect();
        let limit_stream: Vec<f64> = limits.loopback.iter().zip(&limits.disk_stream).map(|(a, b)| a.min(*b)).collect();
        let ratio = median(&ratios(&series.mb_per_s, &limit));
        let ratio_stream = median(&ratios(&series.mb_per_s, &limit_stream));
        println!(
            "produce vs min(loopback, disk sync/MiB) = {:.0} MB/s: {:.2}; vs min(loopback, disk stream) = {:.0} MB/s: {:.2}",
            median(&limit),
            ratio,
            median(&limit_stream),
            ratio_stream,
        );
    }
}
