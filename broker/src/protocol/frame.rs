//! Kafka framing: every request and response is a 4-byte big-endian size, then that many bytes.
//!
//! Sans I/O: the connection task reads socket bytes into a `BytesMut` and asks `FrameDecoder`
//! for whole frames. The size prefix comes from an untrusted peer, so it is checked before it
//! is believed, and memory is never reserved from it beyond `RESERVE_AHEAD_BYTES_MAX`: a peer
//! that announces 100 MiB has to send 100 MiB before we hold 100 MiB.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// Bytes of the size prefix.
pub const SIZE_PREFIX_BYTES: usize = 4;

/// The shortest request frame: api key (2) + api version (2) + correlation id (4). Anything
/// shorter cannot even be answered, because we could not name the request.
pub const FRAME_BYTES_MIN: usize = 8;

/// Kafka's `socket.request.max.bytes` default: 100 MiB.
pub const REQUEST_BYTES_MAX_DEFAULT: usize = 100 * 1024 * 1024;

/// The most `next_frame` reserves ahead of the bytes that have arrived. Large enough that a
/// big produce request is read in few, large socket reads; small enough that a connection which
/// announces a huge frame and then stalls holds at most 1 MiB of capacity it has not filled.
pub const RESERVE_AHEAD_BYTES_MAX: usize = 1024 * 1024;

/// A size prefix we refuse. The connection must be closed: after a bad prefix the byte stream
/// cannot be resynchronised (Kafka closes too, with `InvalidReceiveException`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("negative frame size {size_bytes}")]
    Negative { size_bytes: i32 },
    #[error("frame size {size_bytes} is shorter than the {FRAME_BYTES_MIN}-byte request header")]
    TooShort { size_bytes: usize },
    #[error("frame size {size_bytes} exceeds the limit of {max_bytes} bytes (request_bytes_max)")]
    TooLarge { size_bytes: usize, max_bytes: usize },
}

/// Splits a byte stream into request frames (without their size prefix).
#[derive(Debug, Clone)]
pub struct FrameDecoder {
    request_bytes_max: usize,
}

impl Default for FrameDecoder {
    fn default() -> Self {
        Self::new(REQUEST_BYTES_MAX_DEFAULT)
    }
}

impl FrameDecoder {
    /// `request_bytes_max` bounds the size prefix (not counting the prefix itself), as Kafka's
    /// `socket.request.max.bytes` does.
    pub fn new(request_bytes_max: usize) -> Self {
        assert!(
            request_bytes_max >= FRAME_BYTES_MIN,
            "request_bytes_max {request_bytes_max} cannot hold a request header"
        );
        assert!(
            request_bytes_max <= i32::MAX as usize,
            "request_bytes_max {request_bytes_max} does not fit the i32 size prefix"
        );
        Self { request_bytes_max }
    }

    pub fn request_bytes_max(&self) -> usize {
        self.request_bytes_max
    }

    /// Takes the next whole frame off the front of `input`, or returns `Ok(None)` if more bytes
    /// are needed (having reserved room for some of them). The returned `Bytes` shares
    /// `input`'s allocation: no copy.
    ///
    /// After an error `input` is left as it was; the caller must close the connection.
    pub fn next_frame(&mut self, input: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        if input.len() < SIZE_PREFIX_BYTES {
            input.reserve(SIZE_PREFIX_BYTES - input.len());
            return Ok(None);
        }
        let size_bytes =
            self.check_size(i32::from_be_bytes([input[0], input[1], input[2], input[3]]))?;
        let frame_bytes = SIZE_PREFIX_BYTES + size_bytes;
        if input.len() < frame_bytes {
            // Room for the next part of the frame, never more than RESERVE_AHEAD_BYTES_MAX
            // beyond what has arrived: the size is only a claim until the bytes are here.
            let missing_bytes = frame_bytes - input.len();
            input.reserve(missing_bytes.min(RESERVE_AHEAD_BYTES_MAX));
            return Ok(None);
        }
        input.advance(SIZE_PREFIX_BYTES);
        let frame = input.split_to(size_bytes).freeze();
        debug_assert_eq!(frame.len(), size_bytes);
        Ok(Some(frame))
    }

    /// The whole length (size prefix included) of the frame that starts `input`, once its size
    /// prefix has arrived; an error for a size `next_frame` refuses.
    pub fn announced_frame_bytes(&self, input: &[u8]) -> Result<Option<usize>, FrameError> {
        let Some(prefix) = input.first_chunk::<SIZE_PREFIX_BYTES>() else {
            return Ok(None);
        };
        Ok(Some(SIZE_PREFIX_BYTES + self.check_size(i32::from_be_bytes(*prefix))?))
    }

    fn check_size(&self, size_bytes: i32) -> Result<usize, FrameError> {
        if size_bytes < 0 {
            return Err(FrameError::Negative { size_bytes });
        }
        let size_bytes = size_bytes as usize;
        if size_bytes < FRAME_BYTES_MIN {
            return Err(FrameError::TooShort { size_bytes });
        }
        if size_bytes > self.request_bytes_max {
            return Err(FrameError::TooLarge {
                size_bytes,
                max_bytes: self.request_bytes_max,
            });
        }
        Ok(size_bytes)
    }
}

/// Prefixes `payload` with its size. Panics if the payload cannot be framed (over `i32::MAX`
/// bytes), which only our own encoder could produce; `codec::encode_response` checks first.
pub fn encode_frame(payload: &[u8]) -> Bytes {
    let size_bytes = i32::try_from(payload.len()).expect("frame payload over i32::MAX bytes");
    let mut out = BytesMut::with_capacity(SIZE_PREFIX_BYTES + payload.len());
    out.put_i32(size_bytes);
    out.put_slice(payload);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn framed(payload: &[u8]) -> BytesMut {
        BytesMut::from(&encode_frame(payload)[..])
    }

    #[test]
    fn splits_pipelined_frames_in_order() {
        let mut input = framed(b"first-frame");
        input.extend_from_slice(&framed(b"second frame!"));
        input.extend_from_slice(&[0, 0]); // half of a third size prefix
        let mut decoder = FrameDecoder::default();
        assert_eq!(
            decoder.next_frame(&mut input).unwrap().unwrap(),
            &b"first-frame"[..]
        );
        assert_eq!(
            decoder.next_frame(&mut input).unwrap().unwrap(),
            &b"second frame!"[..]
        );
        assert_eq!(decoder.next_frame(&mut input).unwrap(), None);
        assert_eq!(input.len(), 2);
    }

    #[test]
    fn every_prefix_of_a_frame_waits_for_more() {
        let whole = framed(b"0123456789abcdef");
        for len in 0..whole.len() {
            let mut input = BytesMut::from(&whole[..len]);
            assert_eq!(
                FrameDecoder::default().next_frame(&mut input).unwrap(),
                None,
                "len {len}"
            );
            assert_eq!(input.len(), len, "a partial frame is not consumed");
        }
        let mut input = whole.clone();
        assert!(FrameDecoder::default()
            .next_frame(&mut input)
            .unwrap()
            .is_some());
        assert!(input.is_empty());
    }

    #[test]
    fn bad_sizes_are_refused_before_any_body_arrives() {
        let mut decoder = FrameDecoder::new(1024);
        for (size, expected) in [
            (-1, FrameError::Negative { size_bytes: -1 }),
            (
                i32::MIN,
                FrameError::Negative {
                    size_bytes: i32::MIN,
                },
            ),
            (0, FrameError::TooShort { size_bytes: 0 }),
            (7, FrameError::TooShort { size_bytes: 7 }),
            (
                1025,
                FrameError::TooLarge {
                    size_bytes: 1025,
                    max_bytes: 1024,
                },
            ),
            (
                i32::MAX,
                FrameError::TooLarge {
                    size_bytes: i32::MAX as usize,
                    max_bytes: 1024,
                },
            ),
        ] {
            let mut input = BytesMut::from(&size.to_be_bytes()[..]);
            assert_eq!(decoder.next_frame(&mut input), Err(expected));
        }
        let mut input = BytesMut::from(&1024i32.to_be_bytes()[..]);
        assert_eq!(decoder.next_frame(&mut input), Ok(None));
        let mut input = BytesMut::from(&8i32.to_be_bytes()[..]);
        assert_eq!(decoder.next_frame(&mut input), Ok(None));
    }

    #[test]
    fn a_huge_announced_size_reserves_at_most_the_read_ahead() {
        let mut decoder = FrameDecoder::default();
        let mut input = BytesMut::new();
        input.put_i32(REQUEST_BYTES_MAX_DEFAULT as i32);
        assert_eq!(decoder.next_frame(&mut input), Ok(None));
        assert!(input.capacity() <= 2 * (SIZE_PREFIX_BYTES + RESERVE_AHEAD_BYTES_MAX));
        // And the largest allowed frame is accepted once it is all there.
        let mut decoder = FrameDecoder::new(64);
        let mut input = framed(&[7u8; 64]);
        assert_eq!(decoder.next_frame(&mut input).unwrap().unwrap().len(), 64);
    }
}
