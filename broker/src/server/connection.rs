//! One client connection: reads frames, decodes requests, runs each on its own task, and writes
//! the responses in request order (Kafka clients pipeline requests and match responses by
//! order and correlation id). A frame that breaks the protocol closes the connection after the
//! responses already due are written; it never affects other connections.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};
use bytes::BufMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch};

use super::ServerConfig;
use crate::api;
use crate::cluster::Cluster;
use crate::protocol::codec::{self, DecodeError, Request};
use crate::protocol::frame::{FrameDecoder, RESERVE_AHEAD_BYTES_MAX, SIZE_PREFIX_BYTES};

/// Bytes read from the socket at a time (the buffer grows to a frame's size when needed).
const READ_CHUNK_BYTES: usize = 64 << 10;

/// Frames at least this long (size prefix included) are read into a buffer of their own rather
/// than the connection's shared input buffer: then nothing else holds a produce request's
/// allocation, and its batch can go to the log and the read cache in place, without a copy
/// (`api::start_produce`). Smaller frames share the input buffer, which saves an allocation each.
const OWN_BUFFER_FRAME_BYTES_MIN: usize = READ_CHUNK_BYTES;

/// A response in the making: its bytes (segments written in order: a Fetch response
/// references the batches it carries instead of copying them), or `None` when the request gets
/// no response (acks=0), or a closed channel when it could not be produced (the connection then
/// closes).
type ResponseSlot = oneshot::Receiver<Option<Vec<Bytes>>>;

/// The most slices one vectored write is given (Linux's IOV_MAX).
const WRITE_SLICES_MAX: usize = 1024;

/// Writes every segment, in order, with vectored writes.
async fn write_segments(writer: &mut (impl AsyncWriteExt + Unpin), segments: &mut [Bytes]) -> std::io::Result<()> {
    let mut first = 0;
    while first < segments.len() {
        if segments[first].is_empty() {
            first += 1;
            continue;
        }
        let slices: Vec<std::io::IoSlice<'_>> =
            segments[first..].iter().filter(|segment| !segment.is_empty()).take(WRITE_SLICES_MAX).map(|segment| std::io::IoSlice::new(segment)).collect();
        let mut written = writer.write_vectored(&slices).await?;
        if written == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let segment = &mut segments[first];
            let taken = written.min(segment.len());
            bytes::Buf::advance(segment, taken);
            written -= taken;
            if segment.is_empty() {
                first += 1;
            }
        }
    }
    Ok(())
}

/// Why a request closes its connection (after the responses already due are written).
#[derive(Debug, thiserror::Error)]
enum Close {
    #[error("{0}")]
    Decode(#[from] DecodeError),
    /// Kafka's only way to tell an acks=0 producer that a produce failed.
    #[error("an acks=0 produce failed (correlation id {correlation_id})")]
    AcksZeroProduceFailed { correlation_id: i32 },
}

pub async fn serve(stream: TcpStream, peer: SocketAddr, cluster: Arc<Cluster>, config: ServerConfig, mut shutdown: watch::Receiver<bool>) {
    // Small responses (acks, metadata) must not wait for Nagle.
    let _ = stream.set_nodelay(true);
    let (mut reader, mut writer) = stream.into_split();
    let (slots, mut pending) = mpsc::channel::<ResponseSlot>(config.in_flight_per_connection_max);
    let writing = tokio::spawn(async move {
        while let Some(slot) = pending.recv().await {
            match slot.await {
                Ok(Some(mut segments)) => {
                    if write_segments(&mut writer, &mut segments).await.is_err() {
                        return;
                    }
                }
                Ok(None) => {}
                Err(_) => return,
            }
        }
        let _ = writer.shutdown().await;
    });
    let mut frames = FrameDecoder::new(config.request_bytes_max);
    let mut input = BytesMut::with_capacity(READ_CHUNK_BYTES);
    loop {
        let frame = match frames.announced_frame_bytes(&input) {
            Err(error) => {
                tracing::info!(%peer, %error, "closing connection");
                break;
            }
            Ok(Some(frame_bytes)) if frame_bytes >= OWN_BUFFER_FRAME_BYTES_MIN && input.len() < frame_bytes => {
                match read_own_frame(&mut reader, &mut shutdown, &mut input, frame_bytes).await {
                    Some(frame) => frame,
                    None => break,
                }
            }
            _ => match frames.next_frame(&mut input) {
                Ok(Some(frame)) => frame,
                Ok(None) => {
                    if input.capacity() - input.len() < READ_CHUNK_BYTES {
                        input.reserve(READ_CHUNK_BYTES);
                    }
                    tokio::select! {
                        read = reader.read_buf(&mut input) => match read {
                            Ok(0) | Err(_) => break,
                            Ok(_) => continue,
                        },
                        _ = shutdown.changed() => break,
                    }
                }
                Err(error) => {
                    tracing::info!(%peer, %error, "closing connection");
                    break;
                }
            },
        };
        if !accept(frame, &cluster, &peer, &config, &slots).await {
            break;
        }
    }
    drop(slots);
    let _ = writing.await;
}

/// Reads the rest of the frame of `frame_bytes` (size prefix included) that `input` starts with
/// into a buffer of its own, and returns the frame without its prefix; `None` when the
/// connection ends first. As `FrameDecoder` does, it never reserves more than
/// `RESERVE_AHEAD_BYTES_MAX` beyond the bytes that have arrived: the size is only a claim.
async fn read_own_frame(
    reader: &mut (impl AsyncReadExt + Unpin),
    shutdown: &mut watch::Receiver<bool>,
    input: &mut BytesMut,
    frame_bytes: usize,
) -> Option<Bytes> {
    debug_assert!(input.len() < frame_bytes, "a whole frame is taken by the decoder");
    let mut own = BytesMut::with_capacity(frame_bytes.min(input.len() + RESERVE_AHEAD_BYTES_MAX));
    own.extend_from_slice(input);
    input.clear();
    while own.len() < frame_bytes {
        if own.len() == own.capacity() {
            own.reserve((frame_bytes - own.len()).min(RESERVE_AHEAD_BYTES_MAX));
        }
        // Never past the frame: the next one goes to the shared input buffer.
        let wanted = (frame_bytes - own.len()).min(own.capacity() - own.len());
        let mut room = (&mut own).limit(wanted);
        tokio::select! {
            read = reader.read_buf(&mut room) => match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            },
            _ = shutdown.changed() => return None,
        }
    }
    bytes::Buf::advance(&mut own, SIZE_PREFIX_BYTES);
    Some(own.freeze())
}

/// Checks one frame against its API's size limit and starts its request; false when the
/// connection must close.
async fn accept(frame: Bytes, cluster: &Arc<Cluster>, peer: &SocketAddr, config: &ServerConfig, slots: &mpsc::Sender<ResponseSlot>) -> bool {
    // Only Produce (api key 0) may use the full request size. Frames are at least
    // FRAME_BYTES_MIN (8) long: the decoder refuses shorter ones.
    let api_key = i16::from_be_bytes([frame[0], frame[1]]);
    if api_key != ApiKey::Produce as i16 && frame.len() > config.control_request_bytes_max {
        tracing::info!(%peer, api_key, frame_bytes = frame.len(), max_bytes = config.control_request_bytes_max, "request too large for its API; closing connection");
        return false;
    }
    match dispatch(frame, cluster, peer).await {
        // Waits when the connection already has its maximum of requests in flight.
        Ok(slot) => slots.send(slot).await.is_ok(),
        Err(error) => {
            tracing::info!(%peer, %error, "closing connection");
            false
        }
    }
}

/// Handles one request in connection order; its response arrives through the returned slot.
///
/// As in Kafka, a connection's requests take effect one at a time, in the order sent: every
/// request but Produce is handled to completion before the next frame is looked at. Produce
/// appends its batches here, in order, and only its wait for durability runs on a task of its
/// own, so a client's pipelined produce requests are appended in order and flushed together.
async fn dispatch(frame: Bytes, cluster: &Arc<Cluster>, peer: &SocketAddr) -> Result<ResponseSlot, Close> {
    let (respond, slot) = oneshot::channel();
    let started = std::time::Instant::now();
    let metrics = &crate::metrics::global().kafka;
    // The frame itself goes on to Produce, which may keep its batch in place.
    let request = match codec::decode_request(frame.clone()) {
        Ok(request) => request,
        Err(DecodeError::UnsupportedApiVersionsVersion { correlation_id, .. }) => {
            // An encoding failure drops `respond`, which closes the connection.
            if let Ok(bytes) = codec::unsupported_api_versions_response(correlation_id) {
                let _ = respond.send(Some(vec![bytes]));
            }
            metrics.record_request_error(ApiKey::ApiVersions, started, kafka_protocol::error::ResponseError::UnsupportedVersion.code());
            return Ok(slot);
        }
        Err(error) => return Err(error.into()),
    };
    let Request { api_key, api_version, header, body } = request;
    let correlation_id = header.correlation_id;
    let response = match body {
        RequestKind::ApiVersions(_) => Some(ResponseKind::ApiVersions(codec::api_versions_response(api_version, 0))),
        RequestKind::Produce(produce) => {
            // The header's fields are slices of the frame too.
            drop(header);
            let (completion, close_connection) = api::start_produce(cluster, api_version, produce, Some(frame));
            tokio::spawn(async move {
                let response = completion.await;
                // Produce's latency includes the wait for durability: what its client waits.
                crate::metrics::global().kafka.record(api_key, started, response.as_ref());
                send(respond, api_key, api_version, correlation_id, response);
            });
            if close_connection {
                return Err(Close::AcksZeroProduceFailed { correlation_id });
            }
            return Ok(slot);
        }
        RequestKind::Fetch(fetch) => {
            let answer = api::fetch_segmented(cluster, api_version, fetch).await;
            metrics.record_fetch(started, &answer.response);
            crate::metrics::global().count_fetched(&answer.records);
            match crate::protocol::encode_fetch_response(api_version, correlation_id, answer.response, &answer.records) {
                Ok(segments) => {
                    let _ = respond.send(Some(segments));
                }
                Err(error) => tracing::error!(api_version, %error, "cannot encode a Fetch response"),
            }
            return Ok(slot);
        }
        body => {
            let context = api::RequestContext {
                client_id: header.client_id.as_deref().unwrap_or_default().to_string(),
                client_host: format!("/{}", peer.ip()),
            };
            api::handle_from(cluster, api_version, body, &context).await
        }
    };
    metrics.record(api_key, started, response.as_ref());
    send(respond, api_key, api_version, correlation_id, response);
    Ok(slot)
}

/// Fills a response slot: the encoded response, or nothing (`None`: no response is due), or,
/// when the response cannot be encoded (a bug), a dropped slot, which closes the connection
/// rather than send something wrong.
fn send(respond: oneshot::Sender<Option<Vec<Bytes>>>, api_key: ApiKey, api_version: i16, correlation_id: i32, response: Option<ResponseKind>) {
    let Some(response) = response else {
        let _ = respond.send(None);
        return;
    };
    match codec::encode_response(api_key, api_version, correlation_id, &response) {
        Ok(bytes) => {
            let _ = respond.send(Some(vec![bytes]));
        }
        Err(error) => tracing::error!(?api_key, api_version, %error, "cannot encode a response"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Segments arrive whole and in order through a pipe that takes a few bytes at a time
    /// (partial vectored writes), empty segments included, and more segments than one
    /// vectored write may carry.
    #[test]
    fn segments_are_written_whole_and_in_order() {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        runtime.block_on(async {
            let mut segments: Vec<Bytes> = (0..WRITE_SLICES_MAX + 300)
                .map(|i| Bytes::from((0..(i * 7) % 50).map(|j| (i + j) as u8).collect::<Vec<u8>>()))
                .collect();
            let expected: Vec<u8> = segments.concat();
            let (mut writer, mut reader) = tokio::io::duplex(7);
            let reading = tokio::spawn(async move {
                let mut received = Vec::new();
                reader.read_to_end(&mut received).await.unwrap();
                received
            });
            write_segments(&mut writer, &mut segments).await.unwrap();
            drop(writer);
            assert_eq!(reading.await.unwrap(), expected);
        });
    }
}
