//! Hostile input against a running broker: valid request frames mutated (byte flips,
//! truncation, inserted bytes), frames with huge sizes and element counts, and random bytes, each
//! on its own connection. The broker must stay up, keep its memory bounded, and keep serving a
//! well-formed client after every attack.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, MetadataRequest, ProduceRequest, RequestHeader};
use kafka_protocol::protocol::{Encodable, StrBytes};

const BINARY: &str = env!("CARGO_BIN_EXE_yottastore");
/// Attacks per run: enough variety, bounded time on a debug build.
const ATTACKS: usize = 600;
/// The broker's resident memory may grow by at most this much over the whole run.
const RSS_GROWTH_BYTES_MAX: u64 = 256 << 20;

struct Broker {
    child: Child,
    addr: SocketAddr,
    _data: tempfile::TempDir,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_broker() -> Broker {
    let data = tempfile::tempdir().expect("temp dir");
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = Command::new(BINARY)
        .args(["serve", "--http-addr", "none", "--pg-addr", "none", "--zone-size-mib", "4", "--zone-count", "32", "--kafka-addr", &addr.to_string(), "--data-dir"])
        .arg(data.path())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn yottastore serve");
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "broker did not start listening on {addr}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Broker { child, addr, _data: data }
}

fn request_frame(api_key: ApiKey, version: i16, correlation_id: i32, body: &impl Encodable) -> Vec<u8> {
    let header = RequestHeader::default()
        .with_request_api_key(api_key as i16)
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(Some(StrBytes::from_static_str("hostile")));
    let mut buf = BytesMut::new();
    header.encode(&mut buf, api_key.request_header_version(version)).unwrap();
    body.encode(&mut buf, version).unwrap();
    let mut frame = (buf.len() as i32).to_be_bytes().to_vec();
    frame.extend_from_slice(&buf);
    frame
}

/// A well-formed ApiVersions round trip: the broker still serves.
fn assert_serves(broker: &Broker, attack: &str) {
    let mut stream = TcpStream::connect(broker.addr).unwrap_or_else(|e| panic!("connect after {attack}: {e}"));
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(&request_frame(ApiKey::ApiVersions, 3, 77, &ApiVersionsRequest::default())).unwrap();
    let mut size = [0u8; 4];
    stream.read_exact(&mut size).unwrap_or_else(|e| panic!("no ApiVersions answer after {attack}: {e}"));
    let size = i32::from_be_bytes(size);
    assert!((8..1 << 20).contains(&size), "answer size {size} after {attack}");
    let mut body = vec![0u8; size as usize];
    stream.read_exact(&mut body).unwrap();
    assert_eq!(i32::from_be_bytes(body[0..4].try_into().unwrap()), 77, "correlation id after {attack}");
}

/// Sends one hostile frame and reads whatever comes back until the broker closes or 200 ms pass.
fn attack(broker: &Broker, bytes: &[u8]) {
    let Ok(mut stream) = TcpStream::connect(broker.addr) else { return };
    let _ = stream.write_all(bytes);
    let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
    let mut sink = [0u8; 4096];
    while let Ok(n) = stream.read(&mut sink) {
        if n == 0 {
            break;
        }
    }
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib << 10)
}

/// xorshift64*: a seeded generator, so a failing run can be repeated.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

#[test]
fn hostile_frames_do_not_stop_the_broker() {
    let broker = start_broker();
    assert_serves(&broker, "start");
    let rss_start = rss_bytes(broker.child.id());
    let valid = [
        request_frame(ApiKey::ApiVersions, 3, 1, &ApiVersionsRequest::default()),
        request_frame(ApiKey::Metadata, 12, 2, &MetadataRequest::default()),
        request_frame(ApiKey::Metadata, 1, 3, &MetadataRequest::default()),
        request_frame(ApiKey::Produce, 9, 4, &ProduceRequest::default().with_acks(-1).with_timeout_ms(1000)),
    ];
    let mut rng = Rng(0x5EED_u64 ^ 0x9E37_79B9_7F4A_7C15);
    for round in 0..ATTACKS {
        let mut frame = valid[rng.below(valid.len())].clone();
        let description = match round % 6 {
            0 => {
                for _ in 0..1 + rng.below(8) {
                    let at = 4 + rng.below(frame.len() - 4);
                    frame[at] ^= 1 << rng.below(8);
                }
                "byte flips"
            }
            1 => {
                let keep = 4 + rng.below(frame.len() - 4);
                frame.truncate(keep);
                let size = (keep - 4) as i32;
                frame[0..4].copy_from_slice(&size.to_be_bytes());
                "truncated body"
            }
            2 => {
                // A count or length field somewhere claims ~2^31 elements.
                let at = 12 + rng.below(frame.len().saturating_sub(16).max(1));
                let at = at.min(frame.len().saturating_sub(4));
                frame[at..at + 4].copy_from_slice(&0x7FFF_FFF0_i32.to_be_bytes());
                "huge count"
            }
            3 => {
                let size = [i32::MAX, i32::MIN, -1, 0, 3, 200 << 20][rng.below(6)];
                frame[0..4].copy_from_slice(&size.to_be_bytes());
                "hostile size prefix"
            }
            4 => {
                let at = 4 + rng.below(frame.len() - 4);
                let inserted: Vec<u8> = (0..1 + rng.below(64)).map(|_| rng.next() as u8).collect();
                frame.splice(at..at, inserted);
                let size = (frame.len() - 4) as i32;
                frame[0..4].copy_from_slice(&size.to_be_bytes());
                "inserted bytes"
            }
            _ => {
                let len = rng.below(256);
                let mut bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
                if bytes.len() >= 4 {
                    bytes[0..4].copy_from_slice(&((len - 4) as i32).to_be_bytes());
                }
                frame = bytes;
                "random bytes"
            }
        };
        attack(&broker, &frame);
        if round % 50 == 49 {
            assert_serves(&broker, description);
            assert!(broker.child.try_wait_ok(), "broker exited during {description}");
        }
    }
    assert_serves(&broker, "the whole run");
    let rss_end = rss_bytes(broker.child.id());
    eprintln!("broker RSS: {} MiB at start, {} MiB after {ATTACKS} attacks", rss_start >> 20, rss_end >> 20);
    assert!(rss_end <= rss_start + RSS_GROWTH_BYTES_MAX, "RSS grew from {rss_start} to {rss_end} bytes");
}

trait StillRunning {
    fn try_wait_ok(&self) -> bool;
}

impl StillRunning for Child {
    /// True while the process has not exited (checked through /proc, without reaping it).
    fn try_wait_ok(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.id()))
            .map(|stat| !stat.contains(") Z "))
            .unwrap_or(false)
    }
}

/// Connections open at once in `many_concurrent_connections_are_served`: well above what a
/// handful of clients use, well below the broker's limit (4096 by default).
const CONCURRENT_CONNECTIONS: usize = 256;

#[test]
fn many_concurrent_connections_are_served() {
    let broker = start_broker();
    // Open every connection first, then send on all of them, pipelining two requests each:
    // every connection must get both answers, in order.
    let mut streams: Vec<TcpStream> = (0..CONCURRENT_CONNECTIONS)
        .map(|_| TcpStream::connect(broker.addr).expect("connect"))
        .collect();
    for (index, stream) in streams.iter_mut().enumerate() {
        let first = request_frame(ApiKey::ApiVersions, 3, (index * 2) as i32, &ApiVersionsRequest::default());
        let second = request_frame(ApiKey::Metadata, 12, (index * 2 + 1) as i32, &MetadataRequest::default());
        stream.write_all(&[first, second].concat()).unwrap();
    }
    for (index, stream) in streams.iter_mut().enumerate() {
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        for expected_correlation_id in [(index * 2) as i32, (index * 2 + 1) as i32] {
            let mut size = [0u8; 4];
            stream.read_exact(&mut size).unwrap_or_else(|e| panic!("connection {index}: no answer: {e}"));
            let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
            stream.read_exact(&mut body).unwrap();
            assert_eq!(i32::from_be_bytes(body[0..4].try_into().unwrap()), expected_correlation_id, "connection {index}: answers in request order");
        }
    }
    assert_serves(&broker, "256 concurrent connections");
}
