//! A view's dead letters as the query layer shows them (`system.dead_letters`): records that
//! could not be decoded (from the JSON normaliser) or evaluated (a SELECT expression failing on
//! one record), with partition, offset, reason and a prefix of the value. The most recent
//! `RECENT_MAX` are kept; all are counted. Kept in the checkpoint, so they survive restarts.

use std::collections::VecDeque;

pub const RECENT_MAX: usize = 1024;
/// Characters of a value kept (enough to recognise the record).
pub const VALUE_PREFIX_CHARS_MAX: usize = 256;

#[derive(Clone, Debug, PartialEq)]
pub struct Letter {
    pub partition: i32,
    pub offset: i64,
    pub reason: String,
    pub value_prefix: String,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct DeadLetterLog {
    pub total: u64,
    pub recent: VecDeque<Letter>,
}

impl DeadLetterLog {
    pub fn record(&mut self, partition: i32, offset: i64, reason: String, value: &[u8]) {
        self.total += 1;
        if self.recent.len() == RECENT_MAX {
            self.recent.pop_front();
        }
        let value_prefix: String = String::from_utf8_lossy(value).chars().take(VALUE_PREFIX_CHARS_MAX).collect();
        self.recent.push_back(Letter { partition, offset, reason, value_prefix });
        debug_assert!(self.recent.len() <= RECENT_MAX);
    }

    pub fn to_json(&self) -> serde_json::Value {
        let recent: Vec<serde_json::Value> = self
            .recent
            .iter()
            .map(|letter| serde_json::json!([letter.partition, letter.offset, letter.reason, letter.value_prefix]))
            .collect();
        serde_json::json!({ "total": self.total, "recent": recent })
    }

    pub fn from_json(value: &serde_json::Value) -> Option<DeadLetterLog> {
        let total = value.get("total")?.as_u64()?;
        let mut recent = VecDeque::new();
        for letter in value.get("recent")?.as_array()?.iter().take(RECENT_MAX) {
            recent.push_back(Letter {
                partition: i32::try_from(letter.get(0)?.as_i64()?).ok()?,
                offset: letter.get(1)?.as_i64()?,
                reason: letter.get(2)?.as_str()?.to_string(),
                value_prefix: letter.get(3)?.as_str()?.to_string(),
            });
        }
        Some(DeadLetterLog { total, recent })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_round_trips() {
        let mut log = DeadLetterLog::default();
        for offset in 0..(RECENT_MAX as i64 + 5) {
            log.record(1, offset, "bad".into(), &[b'x'; 1000]);
        }
        assert_eq!(log.total, RECENT_MAX as u64 + 5);
        assert_eq!(log.recent.len(), RECENT_MAX);
        assert_eq!(log.recent[0].offset, 5);
        assert_eq!(log.recent[0].value_prefix.len(), VALUE_PREFIX_CHARS_MAX);
        assert_eq!(DeadLetterLog::from_json(&log.to_json()), Some(log));
    }
}
