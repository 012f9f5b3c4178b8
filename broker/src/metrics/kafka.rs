//! Per Kafka API: requests, error codes in responses (top-level and per item), and latency.
//!
//! Requests and latency live in arrays indexed by API (the version table's rows), so counting a
//! request is an array index and an atomic add, with static label values. Error codes go to a
//! `Family` keyed by (API, level, code): the set is bounded by the APIs times the levels times
//! the codes the handlers answer with, and only errors take its read lock.

use std::time::Instant;

use kafka_protocol::messages::{ApiKey, FetchResponse, ResponseKind};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;

use super::errors::{self, Level};
use crate::protocol::versions::SUPPORTED;

/// API keys are below this (Kafka's highest is in the 80s); a key at or above it, or one not in
/// the version table, has no slot (the server refuses such requests before dispatch).
const API_KEY_SLOTS: usize = 128;
const NO_SLOT: u8 = u8::MAX;

#[derive(Debug)]
pub struct KafkaMetrics {
    /// API key -> row of `SUPPORTED` (NO_SLOT: not served).
    slot_of_key: [u8; API_KEY_SLOTS],
    requests: Vec<Counter>,
    latency_seconds: Vec<Histogram>,
    errors: Family<ErrorKey, Counter>,
}

/// One error series: the API (a row of `SUPPORTED`), where in the response the code was, and
/// the code.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
struct ErrorKey {
    slot: u8,
    level: Level,
    code: i16,
}

impl EncodeLabelSet for ErrorKey {
    fn encode(&self, encoder: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        let name = crate::protocol::error_name(self.code);
        let labels: [(&str, &str); 3] = [("api", api_name(self.slot)), ("level", self.level.name()), ("error", &name)];
        labels.as_slice().encode(encoder)?;
        [("code", self.code)].as_slice().encode(encoder)
    }
}

fn api_name(slot: u8) -> &'static str {
    SUPPORTED.get(usize::from(slot)).map_or("unknown", |(key, _, _)| key_name(*key))
}

/// Kafka's names for the APIs (as in Kafka's own request metrics).
fn key_name(key: ApiKey) -> &'static str {
    match key {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::CreateTopics => "CreateTopics",
        ApiKey::DeleteTopics => "DeleteTopics",
        ApiKey::DeleteRecords => "DeleteRecords",
        ApiKey::DescribeConfigs => "DescribeConfigs",
        ApiKey::AlterConfigs => "AlterConfigs",
        ApiKey::CreatePartitions => "CreatePartitions",
        ApiKey::IncrementalAlterConfigs => "IncrementalAlterConfigs",
        ApiKey::DescribeCluster => "DescribeCluster",
        ApiKey::InitProducerId => "InitProducerId",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        ApiKey::ListGroups => "ListGroups",
        ApiKey::DescribeGroups => "DescribeGroups",
        ApiKey::DeleteGroups => "DeleteGroups",
        ApiKey::OffsetDelete => "OffsetDelete",
        ApiKey::ConsumerGroupHeartbeat => "ConsumerGroupHeartbeat",
        ApiKey::ConsumerGroupDescribe => "ConsumerGroupDescribe",
        ApiKey::AddPartitionsToTxn => "AddPartitionsToTxn",
        ApiKey::EndTxn => "EndTxn",
        ApiKey::AddOffsetsToTxn => "AddOffsetsToTxn",
        ApiKey::TxnOffsetCommit => "TxnOffsetCommit",
        // Not served (the version table's test keeps the two lists together).
        _ => "other",
    }
}

impl KafkaMetrics {
    pub(super) fn new() -> KafkaMetrics {
        assert!(SUPPORTED.len() < usize::from(NO_SLOT), "API slots are u8");
        let mut slot_of_key = [NO_SLOT; API_KEY_SLOTS];
        for (slot, (key, _, _)) in SUPPORTED.iter().enumerate() {
            let key = *key as i16 as usize;
            assert!(key < API_KEY_SLOTS, "API key {key} beyond the metrics' slots");
            slot_of_key[key] = slot as u8;
        }
        KafkaMetrics {
            slot_of_key,
            requests: SUPPORTED.iter().map(|_| Counter::default()).collect(),
            latency_seconds: SUPPORTED.iter().map(|_| Histogram::new(super::latency_buckets_seconds())).collect(),
            errors: Family::default(),
        }
    }

    fn slot(&self, api_key: ApiKey) -> Option<u8> {
        let slot = *self.slot_of_key.get(api_key as i16 as usize)?;
        (slot != NO_SLOT).then_some(slot)
    }

    /// Counts one answered request: its latency from `started`, and every non-zero error code
    /// in `response` (`None`: no response was due, as for acks=0).
    pub fn record(&self, api_key: ApiKey, started: Instant, response: Option<&ResponseKind>) {
        self.record_with(api_key, started, |found| {
            if let Some(response) = response {
                errors::for_each_error(response, found);
            }
        });
    }

    /// `record` for a Fetch, whose response is encoded without a `ResponseKind` around it.
    pub fn record_fetch(&self, started: Instant, response: &FetchResponse) {
        self.record_with(ApiKey::Fetch, started, |found| errors::for_each_fetch_error(response, found));
    }

    /// `record` for a request answered with a top-level error code without a decoded
    /// response (ApiVersions at a version the broker does not know: UNSUPPORTED_VERSION).
    pub fn record_request_error(&self, api_key: ApiKey, started: Instant, code: i16) {
        self.record_with(api_key, started, |found| found(Level::Request, code));
    }

    fn record_with(&self, api_key: ApiKey, started: Instant, errors: impl FnOnce(&mut dyn FnMut(Level, i16))) {
        let Some(slot) = self.slot(api_key) else {
            return;
        };
        self.requests[usize::from(slot)].inc();
        self.latency_seconds[usize::from(slot)].observe(started.elapsed().as_secs_f64());
        errors(&mut |level, code| {
            self.errors.get_or_create(&ErrorKey { slot, level, code }).inc();
        });
    }

    /// Requests counted for `api_key` so far (for tests).
    pub fn requests(&self, api_key: ApiKey) -> u64 {
        self.slot(api_key).map_or(0, |slot| self.requests[usize::from(slot)].get())
    }
}

/// Encodes the per-API arrays as labelled families at scrape time.
#[derive(Debug)]
pub(super) struct KafkaCollector;

impl Collector for KafkaCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let metrics = &super::global().kafka;
        {
            let mut family = encoder.encode_descriptor("kafka_requests", "Kafka requests answered, per API", None, MetricType::Counter)?;
            for (slot, counter) in metrics.requests.iter().enumerate() {
                counter.encode(family.encode_family(&[("api", api_name(slot as u8))])?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "kafka_request_latency_seconds",
                "Time from decoding a Kafka request to its response being ready (Produce: durable), per API",
                None,
                MetricType::Histogram,
            )?;
            for (slot, histogram) in metrics.latency_seconds.iter().enumerate() {
                histogram.encode(family.encode_family(&[("api", api_name(slot as u8))])?)?;
            }
        }
        let family = encoder.encode_descriptor(
            "kafka_errors",
            "Kafka error codes in responses, per API, level (request: the top-level code; topic, partition, group, member, resource: per item) and code",
            None,
            MetricType::Counter,
        )?;
        metrics.errors.encode(family)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_served_api_has_a_slot_and_a_name() {
        let metrics = KafkaMetrics::new();
        for (slot, (key, _, _)) in SUPPORTED.iter().enumerate() {
            assert_eq!(metrics.slot(*key), Some(slot as u8));
            assert_ne!(key_name(*key), "other", "{key:?} needs a name");
        }
    }
}
