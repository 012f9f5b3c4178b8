//! The Kafka protocol, sans I/O: framing (`frame`), the versions this broker serves
//! (`versions`) and request/response encoding (`codec`). No sockets and no async here: the
//! connection tasks feed bytes in and write the returned bytes out, so every rule about hostile
//! input is testable without a network.

pub mod codec;
pub mod fetch_frame;
pub mod frame;
pub mod versions;

pub use codec::{
    api_versions_response, decode_request, encode_response, request_api_key, response_api_key,
    unsupported_api_versions_response, DecodeError, EncodeError, Request,
};
pub use fetch_frame::encode_fetch_response;
pub use frame::{encode_frame, FrameDecoder, FrameError, REQUEST_BYTES_MAX_DEFAULT};
