//! What the Kafka load generators (`bench produce`, `bench consume`) share: the physical limits
//! they are compared against (loopback TCP, raw O_DIRECT disk bandwidth from the storage
//! bench), the work directory, and the broker they start as a child process when no
//! `--bootstrap` is given.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use broker::uring::IoBackendChoice;

use super::storage;

const MIB: usize = 1 << 20;

/// Loopback TCP bandwidth in MB/s: a sender thread writes `total_bytes` in 1 MiB buffers to a
/// receiver thread reading into a 1 MiB buffer, over 127.0.0.1 (TCP_NODELAY, default buffers,
/// like the bench's Kafka connection). Times from connect to the last byte received.
pub fn loopback_mb_per_s(total_bytes: u64) -> anyhow::Result<f64> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let receiver = std::thread::spawn(move || -> std::io::Result<u64> {
        let (mut stream, _) = listener.accept()?;
        let mut buf = vec![0u8; MIB];
        let mut received = 0u64;
        loop {
            let read = stream.read(&mut buf)?;
            if read == 0 {
                break;
            }
            received += read as u64;
        }
        Ok(received)
    });
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr)?;
    stream.set_nodelay(true)?;
    let pattern = storage::random_bytes(MIB, 0x100b);
    let mut left = total_bytes;
    while left > 0 {
        let chunk = left.min(MIB as u64) as usize;
        stream.write_all(&pattern[..chunk])?;
        left -= chunk as u64;
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    let received = receiver
        .join()
        .map_err(|_| anyhow::anyhow!("loopback receiver panicked"))??;
    let elapsed = started.elapsed();
    anyhow::ensure!(
        received == total_bytes,
        "loopback moved {received} of {total_bytes} bytes"
    );
    Ok(storage::mb_per_s(total_bytes, elapsed))
}

/// Raw O_DIRECT sequential write bandwidth (MB/s) of `total_mib` in `dir`, through the storage
/// bench's measurement: with `sync_each`, 1 MiB writes at queue depth 1 with an fdatasync after
/// each MiB (the broker's acks=all policy for 1 MiB batches: one flush per request); else
/// `RAW_QUEUE_DEPTH` x 1 MiB in flight and one fdatasync at the end.
pub fn disk_write_mb_per_s(
    runtime: &tokio::runtime::Runtime,
    dir: &Path,
    total_mib: u64,
    sync_each: bool,
) -> anyhow::Result<f64> {
    let path = dir.join("raw.img");
    let pattern = Arc::new(storage::random_bytes(MIB, 0x5eed));
    let driver = storage::raw_device(&path, total_mib, IoBackendChoice::Auto)?;
    let elapsed = runtime.block_on(storage::raw_write(driver, total_mib, pattern, sync_each))?;
    std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    Ok(storage::mb_per_s(total_mib << 20, elapsed))
}

/// Raw O_DIRECT sequential read bandwidth (MB/s), `RAW_QUEUE_DEPTH` x 1 MiB in flight.
pub fn disk_read_mb_per_s(
    runtime: &tokio::runtime::Runtime,
    dir: &Path,
    total_mib: u64,
) -> anyhow::Result<f64> {
    let pattern = Arc::new(storage::random_bytes(MIB, 0x5eed));
    let (_, elapsed) = storage::raw_write_read(runtime, &dir.join("raw.img"), total_mib, IoBackendChoice::Auto, &pattern)?;
    Ok(storage::mb_per_s(total_mib << 20, elapsed))
}

/// The benchmark's own directory (under ./bench-data unless `--dir`), removed at the end
/// unless `--keep`.
pub struct WorkDir {
    path: PathBuf,
    keep: bool,
    created_base: Option<PathBuf>,
}

impl WorkDir {
    pub fn create(base: Option<&Path>, keep: bool, name: &str) -> anyhow::Result<WorkDir> {
        let (base, created_base) = match base {
            Some(base) => (base.to_path_buf(), None),
            None => {
                let local = PathBuf::from("bench-data");
                let existed = local.is_dir();
                match std::fs::create_dir_all(&local) {
                    Ok(()) => (local.clone(), (!existed).then_some(local)),
                    Err(_) => (std::env::temp_dir(), None),
                }
            }
        };
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos());
        let path = base.join(format!("{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path)
            .with_context(|| format!("cannot create the benchmark directory {}", path.display()))?;
        let path = path.canonicalize()?;
        Ok(WorkDir {
            path,
            keep,
            created_base,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("kept benchmark files in {}", self.path.display());
            return;
        }
        if let Err(error) = std::fs::remove_dir_all(&self.path) {
            eprintln!("could not remove {}: {error}", self.path.display());
        }
        if let Some(base) = &self.created_base {
            let _ = std::fs::remove_dir(base); // only succeeds when empty
        }
    }
}

/// A `yottastore serve` child on a free 127.0.0.1 port, stopped (SIGTERM, then SIGKILL) on drop.
pub struct BrokerChild {
    child: Child,
    pub addr: String,
    pub log_path: PathBuf,
    pub device: Device,
    dir: PathBuf,
    extra_args: Vec<String>,
}

impl BrokerChild {
    /// Starts the broker with its data in `dir`/data and waits until it accepts connections.
    /// `device`'s zones are preallocated; `extra_args` are passed on.
    pub fn start(dir: &Path, device: Device, extra_args: &[String]) -> anyhow::Result<BrokerChild> {
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0")?;
            probe.local_addr()?.port()
        };
        let addr = format!("127.0.0.1:{port}");
        let log_path = dir.join("broker.log");
        let child = spawn_broker(dir, &addr, &log_path, device, extra_args)?;
        let mut broker = BrokerChild { child, addr, log_path, device, dir: dir.to_path_buf(), extra_args: extra_args.to_vec() };
        broker.wait_until_listening()?;
        Ok(broker)
    }

    /// Stops the broker gracefully and starts it again on the same data and port.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.stop()?;
        self.child = spawn_broker(&self.dir, &self.addr, &self.log_path, self.device, &self.extra_args)?;
        self.wait_until_listening()
    }

    fn wait_until_listening(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if TcpStream::connect(&self.addr).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                anyhow::bail!(
                    "the broker exited ({status}) before serving; its log:\n{}",
                    std::fs::read_to_string(&self.log_path).unwrap_or_default()
                );
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the broker did not listen on {} within 60 s (log: {})",
                self.addr,
                self.log_path.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM (graceful: flush and exit 0), then SIGKILL after 30 s.
    pub fn stop(&mut self) -> anyhow::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait()? {
                anyhow::ensure!(status.success(), "the broker exited with {status}");
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        self.child.wait()?;
        anyhow::bail!("the broker did not stop within 30 s of SIGTERM; killed")
    }
}

/// `yottastore serve` on `addr` with its data in `dir`/data, logging (appending) to `log_path`.
fn spawn_broker(dir: &Path, addr: &str, log_path: &Path, device: Device, extra_args: &[String]) -> anyhow::Result<Child> {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log_path)?;
    let exe = std::env::current_exe().context("locating the yottastore binary")?;
    let mut command = Command::new(exe);
    command
        .arg("serve")
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--kafka-addr")
        .arg(addr)
        .arg("--zone-size-mib")
        .arg(device.zone_mib.to_string())
        .arg("--zone-count")
        .arg(device.zone_count.to_string())
        .arg("--auto-create-topics")
        .arg("false")
        // The benchmark measures Kafka traffic only.
        .arg("--http-addr")
        .arg("none")
        .arg("--pg-addr")
        .arg("none")
        .args(extra_args)
        .env(
            "RUST_LOG",
            std::env::var("YOTTASTORE_BENCH_BROKER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log);
    command.spawn().context("starting the broker")
}

impl Drop for BrokerChild {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The zoned device a child broker gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Device {
    pub zone_mib: u64,
    pub zone_count: u32,
}

/// Zones largest first (64 MiB, the broker's default) down to this while the device would not
/// fit `device_mib_max`; a zone still holds a 1 MiB batch with its frame.
const ZONE_MIB_MIN: u64 = 2;
/// Zones beyond the data's own: one being appended per stream (3), two reserved for the
/// internal logs, the internal logs' own zones and slack.
const ZONES_SPARE: u64 = 8;

/// A device for `written_bytes` of batches over `partitions` partitions, each batch flushed on
/// its own. Partitions share zones (storage v2: the zone streams interleave every partition's
/// frames), so the device is sized by the bytes alone: each flushed batch padded to a block
/// with its frame header, every zone's header, summary and trailer, and spare zones. The
/// largest zones (up to the broker's default of 64 MiB) that keep the device within
/// `device_mib_max`: small zones would make streams roll (and seal) zones far more often than
/// on a real device.
pub fn device_for(written_bytes: u64, partitions: u64, device_mib_max: u64) -> anyhow::Result<Device> {
    assert!(partitions >= 1);
    // Every batch padded to a block (at most one block each; the batches are at least a few
    // KiB when a run writes every partition), summary entries of 84 bytes per frame.
    let batches = partitions.max(written_bytes.div_ceil(1 << 20));
    let padded = written_bytes + written_bytes / 32 + batches * (4096 + 128);
    let mut zone_mib = 64;
    loop {
        let zone_bytes = (zone_mib << 20) - (16 << 10);
        let zones = padded.div_ceil(zone_bytes) + ZONES_SPARE;
        // At least the default max open zones (14) and then some.
        let zones = zones.max(32);
        if zones * zone_mib <= device_mib_max {
            let zone_count = u32::try_from(zones).context("zone count")?;
            return Ok(Device { zone_mib, zone_count });
        }
        anyhow::ensure!(
            zone_mib > ZONE_MIB_MIN,
            "{partitions} partitions and {} MiB of data need more than --device-mib-max {device_mib_max} MiB",
            written_bytes >> 20
        );
        zone_mib /= 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_fit_their_budget_and_their_data() {
        const MIB: u64 = 1 << 20;
        let one = device_for(1536 * MIB, 1, 8192).unwrap();
        assert_eq!(one.zone_mib, 64);
        assert!(u64::from(one.zone_count) * 63 * MIB >= 1536 * MIB);
        // Partitions share zones: 1,000 of them need no more zones than one, nor smaller ones.
        let thousand = device_for(1536 * MIB, 1000, 4096).unwrap();
        assert_eq!(thousand.zone_mib, 64, "{thousand:?}");
        assert!(u64::from(thousand.zone_count) * thousand.zone_mib <= 4096);
        assert!(u64::from(thousand.zone_count - 8) * 63 * MIB >= 1536 * MIB + 1000 * 4096, "{thousand:?}");
        // A budget too small for 64 MiB zones gets smaller ones, else an error.
        let small = device_for(1536 * MIB, 1000, 2048).unwrap();
        assert!(small.zone_mib < 64 && u64::from(small.zone_count) * small.zone_mib <= 2048, "{small:?}");
        assert!(device_for(100_000 * MIB, 1000, 4096).is_err());
    }
}
