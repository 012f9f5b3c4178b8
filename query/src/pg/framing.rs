//! What a Postgres client may send before pgwire decodes it: encryption requests refused, and
//! every message's declared length checked as its bytes arrive.
//!
//! pgwire accepts Query and Parse messages up to 1 GiB and buffers a message whole before
//! decoding it, so a client declaring a huge length could make the server buffer that much.
//! `BoundedStream` sits under pgwire's codec and fails the read as soon as a header declares a
//! length above the limit (or below 4, which no message has), so the buffer never grows past
//! one message of the limit's size.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// SSLRequest and GSSENCRequest: startup-format packets of 8 bytes with these codes.
const SSL_REQUEST_CODE: i32 = 80877103;
const GSSENC_REQUEST_CODE: i32 = 80877104;

/// Answers the client's encryption requests with 'N' (this server speaks plain TCP on
/// loopback) and returns the first 8 bytes of its startup packet, already read.
pub async fn refuse_encryption(stream: &mut TcpStream) -> io::Result<[u8; 8]> {
    // A client asks for SSL, then GSS (or the other way round) at most once each.
    for _ in 0..3 {
        let mut head = [0u8; 8];
        stream.read_exact(&mut head).await?;
        let length = i32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let code = i32::from_be_bytes([head[4], head[5], head[6], head[7]]);
        if length == 8 && (code == SSL_REQUEST_CODE || code == GSSENC_REQUEST_CODE) {
            stream.write_all(b"N").await?;
            continue;
        }
        return Ok(head);
    }
    Err(io::Error::new(io::ErrorKind::InvalidData, "too many encryption requests"))
}

/// Message boundaries as the bytes go by: the first message has the startup format (a 4-byte
/// length), every later one a type byte then a 4-byte length.
#[derive(Debug)]
struct FrameCheck {
    header: [u8; 5],
    header_len: usize,
    body_bytes_left: usize,
    startup_seen: bool,
    message_bytes_max: usize,
}

impl FrameCheck {
    fn new(message_bytes_max: usize) -> FrameCheck {
        FrameCheck { header: [0; 5], header_len: 0, body_bytes_left: 0, startup_seen: false, message_bytes_max }
    }

    fn observe(&mut self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            if self.body_bytes_left > 0 {
                let skipped = self.body_bytes_left.min(bytes.len());
                self.body_bytes_left -= skipped;
                bytes = &bytes[skipped..];
                continue;
            }
            self.header[self.header_len] = bytes[0];
            self.header_len += 1;
            bytes = &bytes[1..];
            let header_size = if self.startup_seen { 5 } else { 4 };
            if self.header_len < header_size {
                continue;
            }
            let l = &self.header[header_size - 4..header_size];
            let length = i32::from_be_bytes([l[0], l[1], l[2], l[3]]);
            if length < 4 {
                return Err(io::Error::new(io::ErrorKind::InvalidData, format!("message length {length} is below the minimum of 4")));
            }
            let length = length as usize;
            if length > self.message_bytes_max {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("message of {length} bytes is larger than the limit of {} bytes", self.message_bytes_max),
                ));
            }
            self.body_bytes_left = length - 4;
            self.header_len = 0;
            self.startup_seen = true;
        }
        Ok(())
    }
}

/// A client connection whose incoming messages are checked by `FrameCheck`; `prefix` holds the
/// bytes `refuse_encryption` already read, served first.
pub struct BoundedStream {
    inner: TcpStream,
    prefix: [u8; 8],
    prefix_used: usize,
    check: FrameCheck,
    failed: Option<String>,
}

impl BoundedStream {
    pub fn new(inner: TcpStream, prefix: [u8; 8], message_bytes_max: usize) -> BoundedStream {
        BoundedStream { inner, prefix, prefix_used: 0, check: FrameCheck::new(message_bytes_max), failed: None }
    }

    /// Why reading stopped, when a message broke the limits.
    pub fn failure(&self) -> Option<&str> {
        self.failed.as_deref()
    }
}

impl AsyncRead for BoundedStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if let Some(reason) = &this.failed {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::InvalidData, reason.clone())));
        }
        let start = buf.filled().len();
        if this.prefix_used < this.prefix.len() {
            let take = (this.prefix.len() - this.prefix_used).min(buf.remaining());
            buf.put_slice(&this.prefix[this.prefix_used..this.prefix_used + take]);
            this.prefix_used += take;
        } else {
            match Pin::new(&mut this.inner).poll_read(cx, buf) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
        }
        if let Err(error) = this.check.observe(&buf.filled()[start..]) {
            this.failed = Some(error.to_string());
            return Poll::Ready(Err(error));
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for BoundedStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(mut self: Pin<&mut Self>, cx: &mut Context<'_>, bufs: &[io::IoSlice<'_>]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn typed(kind: u8, length: i32) -> Vec<u8> {
        let mut bytes = vec![kind];
        bytes.extend_from_slice(&length.to_be_bytes());
        bytes.resize(1 + length.max(4) as usize, b'x');
        bytes
    }

    #[test]
    fn messages_within_the_limit_pass_in_any_split() {
        let mut stream = Vec::new();
        stream.extend_from_slice(&16i32.to_be_bytes());
        stream.extend_from_slice(&[0, 3, 0, 0, b'u', 0, b'x', 0, 0, 0, 0, 0][..12]);
        stream.extend(typed(b'Q', 100));
        stream.extend(typed(b'S', 4));
        for split in 1..stream.len() {
            let mut check = FrameCheck::new(100);
            for piece in stream.chunks(split) {
                check.observe(piece).unwrap();
            }
            assert_eq!((check.header_len, check.body_bytes_left), (0, 0));
        }
    }

    #[test]
    fn huge_negative_and_short_lengths_fail_at_the_header() {
        let mut check = FrameCheck::new(1 << 20);
        check.observe(&8i32.to_be_bytes()).unwrap();
        check.observe(&[0, 3, 0, 0]).unwrap();
        assert!(check.observe(&typed(b'Q', i32::MAX)[..5]).is_err());
        let mut check = FrameCheck::new(1 << 20);
        assert!(check.observe(&(-5i32).to_be_bytes()).is_err());
        let mut check = FrameCheck::new(1 << 20);
        check.observe(&8i32.to_be_bytes()).unwrap();
        check.observe(&[0, 3, 0, 0]).unwrap();
        assert!(check.observe(&[b'P', 0, 0, 0, 3]).is_err());
    }
}
