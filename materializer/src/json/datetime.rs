//! Date and time text, and epoch numbers, to UTC timestamps in microseconds.
//!
//! Accepted text (the whole string must match; no surrounding spaces):
//! - ISO 8601 / RFC 3339 extended form: `yyyy-mm-dd`, then optionally `T`, `t` or a space and
//!   `HH:MM[:SS[.fraction]]`, then optionally a zone `Z`, `z`, `±HH`, `±HHMM` or `±HH:MM`.
//!   Without a zone the time is taken as UTC: the log has no other zone to offer.
//! - RFC 2822: `Sun, 29 Nov 2026 17:39:51 +0000` (day name optional, `GMT`/`UT`/US zones), by
//!   chrono's parser.
//! - `dd/mm/yyyy` with slashes, day first, optionally followed by ` HH:MM[:SS]`.
//! - `mm-dd-yyyy HH:MM` with dashes, month first, `:SS` and the time itself optional.
//!
//! Slashes mean day first and dashes with a leading two-digit group mean month first: the issue
//! fixes both, so `01/02/2026` is 1 February and `01-02-2026 10:00` is 2 January.
//! Fractions beyond microseconds are truncated (floor). Only years 0001 to 9999 are timestamps:
//! every accepted text form has four-digit years, and epoch numbers beyond them are more likely
//! identifiers or durations than dates.
//!
//! Epoch numbers (see `epoch_fields.rs` for which fields they are read in) are seconds when their
//! magnitude is below `EPOCH_SECONDS_MAGNITUDE_LIMIT` (1e11 s is the year 5138; 1e11 ms is
//! 1973-03-03) and milliseconds otherwise.

use chrono::{DateTime, NaiveDate, NaiveTime, SecondsFormat, Utc};

/// 0001-01-01T00:00:00Z.
pub const TIMESTAMP_MICROS_MIN: i64 = -62_135_596_800_000_000;
/// 9999-12-31T23:59:59.999999Z.
pub const TIMESTAMP_MICROS_MAX: i64 = 253_402_300_799_999_999;

/// Epoch numbers with a smaller magnitude are seconds; others are milliseconds.
pub const EPOCH_SECONDS_MAGNITUDE_LIMIT: i64 = 100_000_000_000;

/// Longer text is never tried as a date: the longest accepted form (RFC 2822 with day name and
/// a fraction-free time, or ISO with nanoseconds and an offset) is well below this.
pub const DATETIME_TEXT_BYTES_MAX: usize = 64;
/// The shortest accepted text is `1/1/2026`.
const DATETIME_TEXT_BYTES_MIN: usize = 8;

const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_MILLI: i64 = 1_000;

/// Parses date or date-time text in one of the accepted forms to microseconds since the epoch.
pub fn parse_datetime_text(text: &str) -> Option<i64> {
    if text.len() < DATETIME_TEXT_BYTES_MIN || text.len() > DATETIME_TEXT_BYTES_MAX {
        return None;
    }
    let first = text.as_bytes()[0];
    // RFC 2822 has a time, so a colon: chrono's parser is not tried on words.
    let parse_rfc2822 = |text: &str| {
        text.as_bytes()
            .contains(&b':')
            .then(|| parse_rfc2822(text))
            .flatten()
    };
    let micros = if first.is_ascii_digit() {
        parse_iso8601(text)
            .or_else(|| parse_day_month_year(text))
            .or_else(|| parse_month_day_year(text))
            .or_else(|| parse_rfc2822(text))
    } else if first.is_ascii_alphabetic() {
        parse_rfc2822(text)
    } else {
        None
    }?;
    in_range(micros)
}

/// An epoch number in seconds or milliseconds (by magnitude) to microseconds.
pub fn epoch_integer_to_micros(epoch: i64) -> Option<i64> {
    let unit_micros = if epoch.unsigned_abs() < EPOCH_SECONDS_MAGNITUDE_LIMIT as u64 {
        MICROS_PER_SECOND
    } else {
        MICROS_PER_MILLI
    };
    in_range(epoch.checked_mul(unit_micros)?)
}

/// A fractional epoch number: seconds or milliseconds by magnitude, to the nearest microsecond
/// that an f64 can tell apart.
pub fn epoch_float_to_micros(epoch: f64) -> Option<i64> {
    if !epoch.is_finite() {
        return None;
    }
    let unit_micros = if epoch.abs() < EPOCH_SECONDS_MAGNITUDE_LIMIT as f64 {
        MICROS_PER_SECOND as f64
    } else {
        MICROS_PER_MILLI as f64
    };
    let micros = (epoch * unit_micros).floor();
    // The range check before the cast: `as` saturates, which would turn far-off values into the
    // limits instead of refusing them.
    if micros < TIMESTAMP_MICROS_MIN as f64 || micros > TIMESTAMP_MICROS_MAX as f64 {
        return None;
    }
    Some(micros as i64)
}

/// Epoch text: an optional `-`, digits, and optionally `.` and fraction digits, read exactly
/// (no float rounding), seconds or milliseconds by the magnitude of the integer part.
pub fn epoch_text_to_micros(text: &str) -> Option<i64> {
    // 19 digits is the most an i64 holds; sign and fraction make room for a little more.
    if text.is_empty() || text.len() > 32 {
        return None;
    }
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (integer_text, fraction_text) = match unsigned.split_once('.') {
        Some((integer, fraction)) => (integer, Some(fraction)),
        None => (unsigned, None),
    };
    if integer_text.is_empty() || integer_text.len() > 18 || !all_digits(integer_text) {
        return None;
    }
    let integer: i64 = integer_text.parse().ok()?;
    let unit_micros = if integer < EPOCH_SECONDS_MAGNITUDE_LIMIT {
        MICROS_PER_SECOND
    } else {
        MICROS_PER_MILLI
    };
    let mut micros = integer.checked_mul(unit_micros)?;
    if let Some(fraction) = fraction_text {
        if fraction.is_empty() || fraction.len() > 9 || !all_digits(fraction) {
            return None;
        }
        // Scale the fraction to nanoseconds of the unit, then to microseconds (truncating).
        let fraction_nanos_of_unit: i64 =
            fraction.parse::<i64>().ok()? * 10_i64.pow(9 - fraction.len() as u32);
        micros = micros.checked_add(fraction_nanos_of_unit * unit_micros / 1_000_000_000)?;
    }
    in_range(if negative { -micros } else { micros })
}

/// RFC 3339 with `Z` and microseconds when there are any: the text a timestamp becomes when a
/// column holding it widens to strings after the original text is gone.
pub fn format_rfc3339(micros: i64) -> String {
    debug_assert!((TIMESTAMP_MICROS_MIN..=TIMESTAMP_MICROS_MAX).contains(&micros));
    match DateTime::<Utc>::from_timestamp_micros(micros) {
        Some(datetime) => datetime.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        None => micros.to_string(),
    }
}

fn in_range(micros: i64) -> Option<i64> {
    (TIMESTAMP_MICROS_MIN..=TIMESTAMP_MICROS_MAX)
        .contains(&micros)
        .then_some(micros)
}

fn all_digits(text: &str) -> bool {
    text.bytes().all(|byte| byte.is_ascii_digit())
}

fn parse_rfc2822(text: &str) -> Option<i64> {
    Some(DateTime::parse_from_rfc2822(text).ok()?.timestamp_micros())
}

/// `yyyy-mm-dd[(T|t| )HH:MM[:SS[(.|,)fraction]][zone]]`.
fn parse_iso8601(text: &str) -> Option<i64> {
    let mut cursor = Cursor::new(text);
    let year = cursor.digits(4, 4)?;
    cursor.expect(b'-')?;
    let month = cursor.digits(2, 2)?;
    cursor.expect(b'-')?;
    let day = cursor.digits(2, 2)?;
    let date = NaiveDate::from_ymd_opt(year as i32, month, day)?;
    if cursor.is_done() {
        return Some(date_time_micros(date, NaiveTime::MIN, 0));
    }
    match cursor.next()? {
        b'T' | b't' | b' ' => {}
        _ => return None,
    }
    let time = cursor.time(true)?;
    let offset_seconds = cursor.zone()?;
    cursor
        .is_done()
        .then(|| date_time_micros(date, time, offset_seconds))
}

/// `dd/mm/yyyy[ HH:MM[:SS]]`, day and month of one or two digits.
fn parse_day_month_year(text: &str) -> Option<i64> {
    let mut cursor = Cursor::new(text);
    let day = cursor.digits(1, 2)?;
    cursor.expect(b'/')?;
    let month = cursor.digits(1, 2)?;
    cursor.expect(b'/')?;
    let year = cursor.digits(4, 4)?;
    let date = NaiveDate::from_ymd_opt(year as i32, month, day)?;
    cursor.optional_time_then_end(date)
}

/// `mm-dd-yyyy[ HH:MM[:SS]]`, month and day of one or two digits.
fn parse_month_day_year(text: &str) -> Option<i64> {
    let mut cursor = Cursor::new(text);
    let month = cursor.digits(1, 2)?;
    cursor.expect(b'-')?;
    let day = cursor.digits(1, 2)?;
    cursor.expect(b'-')?;
    let year = cursor.digits(4, 4)?;
    let date = NaiveDate::from_ymd_opt(year as i32, month, day)?;
    cursor.optional_time_then_end(date)
}

fn date_time_micros(date: NaiveDate, time: NaiveTime, offset_seconds: i32) -> i64 {
    let local_micros = date.and_time(time).and_utc().timestamp_micros();
    local_micros - i64::from(offset_seconds) * MICROS_PER_SECOND
}

/// A forward-only reader over ASCII text; every method returns `None` on a mismatch.
struct Cursor<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Cursor<'a> {
    fn new(text: &'a str) -> Self {
        Cursor {
            bytes: text.as_bytes(),
            position: 0,
        }
    }

    fn is_done(&self) -> bool {
        self.position == self.bytes.len()
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.position).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let byte = self.peek()?;
        self.position += 1;
        Some(byte)
    }

    fn expect(&mut self, expected: u8) -> Option<()> {
        (self.next()? == expected).then_some(())
    }

    /// Between `count_min` and `count_max` decimal digits (at most 9, so no overflow).
    fn digits(&mut self, count_min: usize, count_max: usize) -> Option<u32> {
        debug_assert!(count_min >= 1 && count_min <= count_max && count_max <= 9);
        let mut value = 0_u32;
        let mut count = 0;
        while count < count_max {
            match self.peek() {
                Some(byte) if byte.is_ascii_digit() => {
                    value = value * 10 + u32::from(byte - b'0');
                    self.position += 1;
                    count += 1;
                }
                _ => break,
            }
        }
        (count >= count_min).then_some(value)
    }

    /// `HH:MM[:SS[(.|,)fraction]]`; the fraction only where `allow_fraction`.
    fn time(&mut self, allow_fraction: bool) -> Option<NaiveTime> {
        let hour = self.digits(2, 2)?;
        self.expect(b':')?;
        let minute = self.digits(2, 2)?;
        let mut second = 0;
        let mut nanos = 0;
        if self.peek() == Some(b':') {
            self.position += 1;
            second = self.digits(2, 2)?;
            if allow_fraction && matches!(self.peek(), Some(b'.' | b',')) {
                self.position += 1;
                let start = self.position;
                let fraction = self.digits(1, 9)?;
                let fraction_digits = (self.position - start) as u32;
                nanos = fraction * 10_u32.pow(9 - fraction_digits);
                // Digits beyond nanoseconds carry nothing a microsecond timestamp keeps.
                while matches!(self.peek(), Some(byte) if byte.is_ascii_digit()) {
                    self.position += 1;
                }
            }
        }
        if second == 60 {
            // A leap second: chrono represents it as second 59 with an extra second of nanos.
            return NaiveTime::from_hms_nano_opt(hour, minute, 59, 1_000_000_000 + nanos);
        }
        NaiveTime::from_hms_nano_opt(hour, minute, second, nanos)
    }

    /// An optional zone: none (UTC), `Z`, `z`, `±HH`, `±HHMM` or `±HH:MM`; seconds east of UTC.
    fn zone(&mut self) -> Option<i32> {
        let sign = match self.peek() {
            None => return Some(0),
            Some(b'Z' | b'z') => {
                self.position += 1;
                return Some(0);
            }
            Some(b'+') => 1,
            Some(b'-') => -1,
            Some(_) => return None,
        };
        self.position += 1;
        let hours = self.digits(2, 2)?;
        let minutes = if self.peek() == Some(b':') {
            self.position += 1;
            self.digits(2, 2)?
        } else if self.is_done() {
            0
        } else {
            self.digits(2, 2)?
        };
        if hours > 23 || minutes > 59 {
            return None;
        }
        Some(sign * (hours * 3600 + minutes * 60) as i32)
    }

    /// ` HH:MM[:SS]` or nothing, then the end of the text.
    fn optional_time_then_end(&mut self, date: NaiveDate) -> Option<i64> {
        let time = if self.is_done() {
            NaiveTime::MIN
        } else {
            self.expect(b' ')?;
            self.time(false)?
        };
        self.is_done().then(|| date_time_micros(date, time, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Microseconds of a UTC date-time, computed independently of the parsers under test.
    fn utc(
        year: i32,
        month: u32,
        day: u32,
        hour: u32,
        minute: u32,
        second: u32,
        micros: u32,
    ) -> i64 {
        NaiveDate::from_ymd_opt(year, month, day)
            .unwrap()
            .and_hms_micro_opt(hour, minute, second, micros)
            .unwrap()
            .and_utc()
            .timestamp_micros()
    }

    #[test]
    fn iso8601_forms() {
        let cases: &[(&str, i64)] = &[
            ("2026-11-29", utc(2026, 11, 29, 0, 0, 0, 0)),
            ("2026-11-29T17:39", utc(2026, 11, 29, 17, 39, 0, 0)),
            ("2026-11-29T17:39:51", utc(2026, 11, 29, 17, 39, 51, 0)),
            ("2026-11-29 17:39:51", utc(2026, 11, 29, 17, 39, 51, 0)),
            ("2026-11-29t17:39:51", utc(2026, 11, 29, 17, 39, 51, 0)),
            ("2026-11-29T17:39:51Z", utc(2026, 11, 29, 17, 39, 51, 0)),
            ("2026-11-29T17:39:51z", utc(2026, 11, 29, 17, 39, 51, 0)),
            (
                "2026-11-29T17:39:51.5Z",
                utc(2026, 11, 29, 17, 39, 51, 500_000),
            ),
            (
                "2026-11-29T17:39:51,25Z",
                utc(2026, 11, 29, 17, 39, 51, 250_000),
            ),
            (
                "2026-11-29T17:39:51.123456Z",
                utc(2026, 11, 29, 17, 39, 51, 123_456),
            ),
            // Nanoseconds and beyond are truncated to microseconds.
            (
                "2026-11-29T17:39:51.123456789Z",
                utc(2026, 11, 29, 17, 39, 51, 123_456),
            ),
            (
                "2026-11-29T17:39:51.1234567891Z",
                utc(2026, 11, 29, 17, 39, 51, 123_456),
            ),
            (
                "2026-11-29T17:39:51.123",
                utc(2026, 11, 29, 17, 39, 51, 123_000),
            ),
            (
                "2026-11-29T19:39:51+02:00",
                utc(2026, 11, 29, 17, 39, 51, 0),
            ),
            ("2026-11-29T19:39:51+0200", utc(2026, 11, 29, 17, 39, 51, 0)),
            ("2026-11-29T19:39:51+02", utc(2026, 11, 29, 17, 39, 51, 0)),
            (
                "2026-11-29T12:09:51.75-05:30",
                utc(2026, 11, 29, 17, 39, 51, 750_000),
            ),
            ("2026-11-29T17:39+00:00", utc(2026, 11, 29, 17, 39, 0, 0)),
            // The offset moves the instant across a day boundary.
            ("2026-11-30T01:00:00+02:00", utc(2026, 11, 29, 23, 0, 0, 0)),
            ("2016-12-31T23:59:60Z", utc(2017, 1, 1, 0, 0, 0, 0)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_datetime_text(text), Some(*expected), "{text}");
        }
    }

    #[test]
    fn rfc2822_forms() {
        let cases: &[(&str, i64)] = &[
            (
                "Sun, 29 Nov 2026 17:39:51 +0000",
                utc(2026, 11, 29, 17, 39, 51, 0),
            ),
            (
                "Sun, 29 Nov 2026 17:39:51 GMT",
                utc(2026, 11, 29, 17, 39, 51, 0),
            ),
            ("29 Nov 2026 17:39:51 GMT", utc(2026, 11, 29, 17, 39, 51, 0)),
            (
                "Sun, 29 Nov 2026 19:39:51 +0200",
                utc(2026, 11, 29, 17, 39, 51, 0),
            ),
            (
                "Sun, 29 Nov 2026 12:39:51 EST",
                utc(2026, 11, 29, 17, 39, 51, 0),
            ),
            (
                "Sun, 29 Nov 2026 17:39 +0000",
                utc(2026, 11, 29, 17, 39, 0, 0),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_datetime_text(text), Some(*expected), "{text}");
        }
    }

    #[test]
    fn day_month_year_with_slashes_is_day_first() {
        let cases: &[(&str, i64)] = &[
            ("01/02/2026", utc(2026, 2, 1, 0, 0, 0, 0)),
            ("29/11/2026", utc(2026, 11, 29, 0, 0, 0, 0)),
            ("1/2/2026", utc(2026, 2, 1, 0, 0, 0, 0)),
            ("29/11/2026 17:39", utc(2026, 11, 29, 17, 39, 0, 0)),
            ("29/11/2026 17:39:51", utc(2026, 11, 29, 17, 39, 51, 0)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_datetime_text(text), Some(*expected), "{text}");
        }
    }

    #[test]
    fn month_day_year_with_dashes_is_month_first() {
        let cases: &[(&str, i64)] = &[
            ("01-02-2026 10:00", utc(2026, 1, 2, 10, 0, 0, 0)),
            ("11-29-2026 17:39", utc(2026, 11, 29, 17, 39, 0, 0)),
            ("11-29-2026 17:39:51", utc(2026, 11, 29, 17, 39, 51, 0)),
            ("11-29-2026", utc(2026, 11, 29, 0, 0, 0, 0)),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_datetime_text(text), Some(*expected), "{text}");
        }
    }

    #[test]
    fn text_that_is_not_a_date() {
        let cases = [
            "",
            "hello",
            "hello world, how are you",
            "12345678",
            "2026-13-01",
            "2026-02-30",
            "2026-11-29T25:00",
            "2026-11-29T17:39:51+25:00",
            "2026-11-29T17:39:51 ",
            " 2026-11-29",
            "2026-11-29T",
            "2026-11-29T17",
            "2026/11/29",
            "29/11/26",
            "30/02/2026",
            "13-29-2026 10:00",
            "29-11-2026 10:00",
            "11-29-2026 10",
            "11-29-2026T10:00",
            "29/11/2026 17:39.5",
            "Sun, 29 Nov 2026",
            "+2026-11-29",
            "2026-11-29T17:39:51.Z",
            "2026-11-29T17:39:51+02:",
            "1.5e9",
        ];
        for text in cases {
            assert_eq!(parse_datetime_text(text), None, "{text:?}");
        }
        assert_eq!(parse_datetime_text(&"2026-11-29".repeat(7)), None);
    }

    #[test]
    fn epoch_integers_are_seconds_below_the_cutoff_and_milliseconds_above() {
        assert_eq!(epoch_integer_to_micros(0), Some(0));
        assert_eq!(
            epoch_integer_to_micros(1_764_437_991),
            Some(1_764_437_991_000_000)
        );
        assert_eq!(
            epoch_integer_to_micros(1_764_437_991_123),
            Some(1_764_437_991_123_000)
        );
        assert_eq!(
            epoch_integer_to_micros(99_999_999_999),
            Some(99_999_999_999_000_000)
        );
        assert_eq!(
            epoch_integer_to_micros(100_000_000_000),
            Some(100_000_000_000_000)
        );
        assert_eq!(epoch_integer_to_micros(-86_400), Some(-86_400_000_000));
        // Nanoseconds read as milliseconds land far beyond the year 9999.
        assert_eq!(epoch_integer_to_micros(1_764_437_991_123_456_789), None);
        assert_eq!(epoch_integer_to_micros(i64::MIN), None);
        assert_eq!(epoch_integer_to_micros(i64::MAX), None);
    }

    #[test]
    fn epoch_floats_and_text() {
        assert_eq!(
            epoch_float_to_micros(1_764_437_991.5),
            Some(1_764_437_991_500_000)
        );
        assert_eq!(
            epoch_float_to_micros(1_764_437_991_123.0),
            Some(1_764_437_991_123_000)
        );
        assert_eq!(epoch_float_to_micros(f64::NAN), None);
        assert_eq!(epoch_float_to_micros(1e300), None);
        assert_eq!(
            epoch_text_to_micros("1764437991"),
            Some(1_764_437_991_000_000)
        );
        assert_eq!(
            epoch_text_to_micros("1764437991123"),
            Some(1_764_437_991_123_000)
        );
        assert_eq!(
            epoch_text_to_micros("1764437991.123456"),
            Some(1_764_437_991_123_456)
        );
        assert_eq!(
            epoch_text_to_micros("1764437991123.5"),
            Some(1_764_437_991_123_500)
        );
        assert_eq!(epoch_text_to_micros("-1.5"), Some(-1_500_000));
        for text in [
            "",
            "-",
            "1.",
            ".5",
            "1e9",
            "12a",
            "+1",
            "1.2.3",
            "99999999999999999999",
        ] {
            assert_eq!(epoch_text_to_micros(text), None, "{text:?}");
        }
    }

    #[test]
    fn rfc3339_rendering_round_trips() {
        for micros in [
            0,
            1_764_437_991_000_000,
            1_764_437_991_123_456,
            TIMESTAMP_MICROS_MIN,
            TIMESTAMP_MICROS_MAX,
        ] {
            let text = format_rfc3339(micros);
            assert_eq!(parse_datetime_text(&text), Some(micros), "{text}");
        }
        assert_eq!(
            format_rfc3339(1_764_437_991_000_000),
            "2025-11-29T17:39:51Z"
        );
    }
}
