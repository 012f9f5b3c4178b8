//! Which fields hold epoch numbers. A number is a timestamp only where this rule says so:
//! guessing on every integer would turn counts, prices and identifiers into dates.
//!
//! The default name rule splits the field's last dotted segment into words (at `_`, `-` and
//! lower-to-upper camel-case boundaries, lowercased) and accepts it when the last word is one of
//! `ts`, `time`, `timestamp`, `date`, `datetime`, `epoch`, or the name has two or more words and
//! the last is `at`. So `ts`, `created_at`, `eventTime`, `order.update_ts` hold epochs, while
//! `timeout`, `runtime`, `time_ms` and `count` do not. A view lists other fields (`ts_ms`, say)
//! explicitly, and can turn the name rule off.
//!
//! In an epoch field, a JSON number or a string of the form `-?digits(.digits)?` is epoch
//! seconds or milliseconds (`datetime.rs` says how the unit is chosen); a value outside the years
//! 0001 to 9999 stays a number (or string). Date text is a timestamp in every field, epoch field
//! or not.

/// Words that, last in a field name, mark it as an epoch field.
const EPOCH_LAST_WORDS: [&str; 6] = ["ts", "time", "timestamp", "date", "datetime", "epoch"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EpochFields {
    /// Apply the name rule above.
    pub by_name: bool,
    /// Full dotted names that hold epochs whatever the name rule says.
    pub listed: Vec<String>,
}

impl Default for EpochFields {
    fn default() -> Self {
        EpochFields {
            by_name: true,
            listed: Vec::new(),
        }
    }
}

impl EpochFields {
    /// No field holds epochs: numbers stay numbers.
    pub fn none() -> Self {
        EpochFields {
            by_name: false,
            listed: Vec::new(),
        }
    }

    pub fn contains(&self, field_name: &str) -> bool {
        if self.listed.iter().any(|listed| listed == field_name) {
            return true;
        }
        self.by_name && name_says_epoch(field_name)
    }
}

fn name_says_epoch(field_name: &str) -> bool {
    let segment = field_name.rsplit('.').next().unwrap_or(field_name);
    let mut word_count = 0_usize;
    let mut word_last = String::new();
    for word in words(segment) {
        word_count += 1;
        word_last = word;
    }
    if word_count == 0 {
        return false;
    }
    EPOCH_LAST_WORDS.contains(&word_last.as_str()) || (word_count >= 2 && word_last == "at")
}

/// Lowercased words of `snake_case`, `kebab-case` and `camelCase` (an upper-case letter after a
/// lower-case letter or digit starts a word, so `eventTS` is `event`, `ts`).
fn words(segment: &str) -> impl Iterator<Item = String> + '_ {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut previous_lower_or_digit = false;
    for character in segment.chars() {
        if character == '_' || character == '-' {
            if !word.is_empty() {
                words.push(std::mem::take(&mut word));
            }
            previous_lower_or_digit = false;
            continue;
        }
        if character.is_uppercase() && previous_lower_or_digit && !word.is_empty() {
            words.push(std::mem::take(&mut word));
        }
        previous_lower_or_digit = character.is_lowercase() || character.is_ascii_digit();
        word.extend(character.to_lowercase());
    }
    if !word.is_empty() {
        words.push(word);
    }
    words.into_iter()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_rule() {
        let epoch = [
            "ts",
            "time",
            "timestamp",
            "date",
            "epoch",
            "created_at",
            "createdAt",
            "eventTime",
            "event_time",
            "event-time",
            "update_ts",
            "eventTS",
            "order.update_ts",
            "a.b.ts",
            "DATE",
            "birth_date",
            "event_timestamp",
            "x.modified_datetime",
        ];
        for name in epoch {
            assert!(EpochFields::default().contains(name), "{name}");
        }
        let not_epoch = [
            "",
            "at",
            "timeout",
            "timeout_ms",
            "runtime",
            "time_ms",
            "count",
            "ts.count",
            "datestamp",
            "date_format",
            "status",
            "format",
            "hat",
            "cat",
        ];
        for name in not_epoch {
            assert!(!EpochFields::default().contains(name), "{name}");
        }
    }

    #[test]
    fn listed_fields_and_the_switch() {
        let fields = EpochFields {
            by_name: false,
            listed: vec!["ts_ms".to_string()],
        };
        assert!(fields.contains("ts_ms"));
        assert!(!fields.contains("ts"));
        assert!(!EpochFields::none().contains("created_at"));
    }
}
