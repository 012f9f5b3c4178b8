//! Topic configuration: the entries a topic may set, Kafka's defaults for the rest, and
//! validation. Explicitly set entries are stored in the metadata log; everything else is a
//! default, reported with source DEFAULT_CONFIG as Kafka does.

use std::collections::BTreeMap;

use crate::log::batch::TimestampType;

/// (name, Kafka's default, validator) of every topic config this broker accepts.
const ENTRIES: &[(&str, &str, Validate)] = &[
    ("cleanup.policy", "delete", Validate::CleanupPolicy),
    ("compression.type", "producer", Validate::OneOf(&["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"])),
    ("delete.retention.ms", "86400000", Validate::Long { min: 0 }),
    ("file.delete.delay.ms", "60000", Validate::Long { min: 0 }),
    ("flush.messages", "9223372036854775807", Validate::Long { min: 1 }),
    ("flush.ms", "9223372036854775807", Validate::Long { min: 0 }),
    ("max.message.bytes", "1048588", Validate::Int { min: 0 }),
    ("message.timestamp.after.max.ms", "9223372036854775807", Validate::Long { min: 0 }),
    ("message.timestamp.before.max.ms", "9223372036854775807", Validate::Long { min: 0 }),
    ("message.timestamp.type", "CreateTime", Validate::OneOf(&["CreateTime", "LogAppendTime"])),
    ("min.compaction.lag.ms", "0", Validate::Long { min: 0 }),
    ("min.insync.replicas", "1", Validate::Int { min: 1 }),
    ("retention.bytes", "-1", Validate::Long { min: -1 }),
    ("retention.ms", "604800000", Validate::Long { min: -1 }),
    // Zones are a property of the device, so segment settings do not change where data goes;
    // they are accepted and reported (clients and tools set them) and documented as such.
    ("segment.bytes", "1073741824", Validate::Int { min: 14 }),
    ("segment.ms", "604800000", Validate::Long { min: 1 }),
    ("unclean.leader.election.enable", "false", Validate::OneOf(&["true", "false"])),
];

#[derive(Clone, Copy)]
enum Validate {
    Long { min: i64 },
    Int { min: i32 },
    OneOf(&'static [&'static str]),
    CleanupPolicy,
}

impl Validate {
    fn check(&self, name: &str, value: &str) -> Result<(), String> {
        let ok = match self {
            Validate::Long { min } => value.trim().parse::<i64>().is_ok_and(|v| v >= *min),
            Validate::Int { min } => value.trim().parse::<i32>().is_ok_and(|v| v >= *min),
            Validate::OneOf(values) => values.iter().any(|v| v.eq_ignore_ascii_case(value.trim())),
            Validate::CleanupPolicy => {
                let policies: Vec<&str> = value.split(',').map(str::trim).collect();
                !policies.is_empty() && policies.iter().all(|p| *p == "delete" || *p == "compact")
            }
        };
        if ok {
            Ok(())
        } else {
            let expected = match self {
                Validate::Long { min } => format!("a 64-bit integer >= {min}"),
                Validate::Int { min } => format!("a 32-bit integer >= {min}"),
                Validate::OneOf(values) => format!("one of {}", values.join(", ")),
                Validate::CleanupPolicy => "delete, compact or compact,delete".to_string(),
            };
            Err(format!("Invalid value {value:?} for configuration {name}: expected {expected}"))
        }
    }
}

/// A topic's explicitly set configs (the rest are defaults).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicConfig {
    overrides: BTreeMap<String, String>,
}

/// One config as DescribeConfigs reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: &'static str,
    pub value: String,
    /// Set on the topic (TOPIC_CONFIG) rather than Kafka's default (DEFAULT_CONFIG).
    pub is_default: bool,
}

impl TopicConfig {
    /// Validates every entry; the message names the first bad one (INVALID_CONFIG).
    pub fn from_entries(entries: &BTreeMap<String, String>) -> Result<TopicConfig, String> {
        let mut config = TopicConfig::default();
        for (name, value) in entries {
            config.set(name, value)?;
        }
        Ok(config)
    }

    pub fn overrides(&self) -> &BTreeMap<String, String> {
        &self.overrides
    }

    /// Sets one entry after validating it.
    pub fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
        let (key, _, validate) = ENTRIES
            .iter()
            .find(|(key, _, _)| *key == name)
            .ok_or_else(|| format!("Unknown topic config name: {name}"))?;
        validate.check(name, value)?;
        self.overrides.insert((*key).to_string(), value.trim().to_string());
        Ok(())
    }

    /// Removes an override (back to the default). Unknown names are an error.
    pub fn delete(&mut self, name: &str) -> Result<(), String> {
        if !ENTRIES.iter().any(|(key, _, _)| *key == name) {
            return Err(format!("Unknown topic config name: {name}"));
        }
        self.overrides.remove(name);
        Ok(())
    }

    fn value(&self, name: &str) -> &str {
        if let Some(value) = self.overrides.get(name) {
            return value;
        }
        ENTRIES.iter().find(|(key, _, _)| *key == name).map(|(_, default, _)| *default).expect("known config")
    }

    /// Every config with its value and whether it is Kafka's default.
    pub fn describe(&self) -> Vec<ConfigEntry> {
        ENTRIES
            .iter()
            .map(|(name, default, _)| match self.overrides.get(*name) {
                Some(value) => ConfigEntry { name, value: value.clone(), is_default: false },
                None => ConfigEntry { name, value: (*default).to_string(), is_default: true },
            })
            .collect()
    }

    /// retention.ms, or None for unlimited (-1).
    pub fn retention_ms(&self) -> Option<i64> {
        self.value("retention.ms").parse::<i64>().ok().filter(|&ms| ms >= 0)
    }

    /// retention.bytes, or None for unlimited (-1).
    pub fn retention_bytes(&self) -> Option<u64> {
        self.value("retention.bytes").parse::<i64>().ok().filter(|&b| b >= 0).map(|b| b as u64)
    }

    pub fn max_message_bytes(&self) -> usize {
        self.value("max.message.bytes").parse::<i32>().map_or(1_048_588, |v| v.max(0) as usize)
    }

    pub fn timestamp_type(&self) -> TimestampType {
        if self.value("message.timestamp.type").eq_ignore_ascii_case("LogAppendTime") {
            TimestampType::LogAppendTime
        } else {
            TimestampType::CreateTime
        }
    }

    /// Kafka's message.timestamp.before.max.ms / after.max.ms (how far a CreateTime timestamp
    /// may lie before or after the broker's clock).
    pub fn timestamp_bounds_ms(&self) -> (i64, i64) {
        let parse = |name| self.value(name).parse::<i64>().unwrap_or(i64::MAX);
        (parse("message.timestamp.before.max.ms"), parse("message.timestamp.after.max.ms"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_overrides_and_validation() {
        let mut config = TopicConfig::default();
        assert_eq!(config.retention_ms(), Some(604_800_000));
        assert_eq!(config.retention_bytes(), None);
        config.set("retention.ms", "1000").unwrap();
        config.set("retention.bytes", "-1").unwrap();
        assert_eq!(config.retention_ms(), Some(1000));
        assert!(config.set("retention.ms", "soon").is_err());
        assert!(config.set("retention.ms", "-2").is_err());
        assert!(config.set("no.such.config", "1").is_err());
        assert!(config.set("cleanup.policy", "compact,delete").is_ok());
        assert!(config.set("cleanup.policy", "shred").is_err());
        config.set("message.timestamp.type", "LogAppendTime").unwrap();
        assert_eq!(config.timestamp_type(), TimestampType::LogAppendTime);
        let described = config.describe();
        let retention = described.iter().find(|e| e.name == "retention.ms").unwrap();
        assert_eq!((retention.value.as_str(), retention.is_default), ("1000", false));
        let max = described.iter().find(|e| e.name == "max.message.bytes").unwrap();
        assert_eq!((max.value.as_str(), max.is_default), ("1048588", true));
        config.delete("retention.ms").unwrap();
        assert_eq!(config.retention_ms(), Some(604_800_000));
    }
}
