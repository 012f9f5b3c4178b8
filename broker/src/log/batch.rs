//! Kafka record batch v2 (being written).
