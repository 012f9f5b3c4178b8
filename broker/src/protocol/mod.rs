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

/// Kafka's name for an error code (`UNKNOWN_TOPIC_OR_PARTITION`), from kafka-protocol's variant
/// name; `UNKNOWN_CODE_<n>` for a code it does not know.
pub fn error_name(code: i16) -> String {
    match kafka_protocol::error::ResponseError::try_from_code(code) {
        None => "NONE".to_string(),
        Some(kafka_protocol::error::ResponseError::Unknown(code)) => format!("UNKNOWN_CODE_{code}"),
        Some(error) => {
            let camel = error.to_string();
            let mut name = String::with_capacity(camel.len() + 8);
            for (i, c) in camel.chars().enumerate() {
                if c.is_ascii_uppercase() && i > 0 {
                    name.push('_');
                }
                name.push(c.to_ascii_uppercase());
            }
            name
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_names_are_kafkas() {
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(1), "OFFSET_OUT_OF_RANGE");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(36), "TOPIC_ALREADY_EXISTS");
        assert_eq!(error_name(0), "NONE");
        assert_eq!(error_name(9999), "UNKNOWN_CODE_9999");
    }
}
