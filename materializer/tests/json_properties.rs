//! Properties of JSON decoding over random records of a few shapes: nothing panics, every record
//! is a row or a dead letter, the decoder agrees with the old row-by-row rules (`json_oracle`)
//! on every record, error and batch, the final type of each column does not depend on record
//! order, and casting an early batch to the final schema shows what converting its rows late
//! shows.

mod json_oracle;

use std::collections::BTreeMap;

use arrow_array::Array;
use materializer::json::{
    cast_batch, ColumnType, DeadLetterLimits, DecodeLimits, DecodeOptions, InferredSchema,
    JsonDecoder, JsonNormaliser,
};
use proptest::prelude::*;
use serde_json::{Map, Number, Value};

const FIELD_NAMES: [&str; 6] = ["a", "b", "c", "n", "created_at", "x.y"];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        // Integers a float holds exactly: beyond 2^53 the Int64 -> Float64 -> Utf8 path and the
        // Int64 -> Utf8 path render differently (documented in cast.rs).
        (-(1_i64 << 40)..(1_i64 << 40)).prop_map(|value| Value::Number(value.into())),
        (-1e6_f64..1e6_f64).prop_map(|value| Value::Number(Number::from_f64(value).unwrap())),
        prop::sample::select(vec![
            "",
            "x",
            "hello",
            "2026-11-29",
            "2026-11-29T17:39:51.25+02:00",
            "29/11/2026",
            "11-29-2026 10:00",
            "Sun, 29 Nov 2026 17:39:51 +0000",
            "1764437991",
            "1764437991123",
        ])
        .prop_map(|text| Value::String(text.to_string())),
        "[a-z0-9 /:.-]{0,12}".prop_map(Value::String),
        prop::collection::vec(any::<i8>(), 0..3)
            .prop_map(|items| Value::Array(items.into_iter().map(Value::from).collect())),
    ]
}

fn object() -> impl Strategy<Value = Value> {
    let leaf = scalar();
    let value = leaf.prop_recursive(3, 16, 4, |inner| {
        prop::collection::vec((prop::sample::select(FIELD_NAMES.to_vec()), inner), 0..4)
            .prop_map(|fields| Value::Object(to_map(fields)))
    });
    prop::collection::vec((prop::sample::select(FIELD_NAMES.to_vec()), value), 0..6)
        .prop_map(|fields| Value::Object(to_map(fields)))
}

fn to_map(fields: Vec<(&str, Value)>) -> Map<String, Value> {
    fields
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect()
}

/// A record's bytes: valid JSON objects mostly, some damaged, some not objects, some noise.
fn record_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        6 => object().prop_map(|value| value.to_string().into_bytes()),
        1 => (object(), any::<prop::sample::Index>(), any::<u8>()).prop_map(|(value, index, byte)| {
            let mut bytes = value.to_string().into_bytes();
            let at = index.index(bytes.len());
            bytes[at] = byte;
            bytes
        }),
        1 => (object(), any::<prop::sample::Index>()).prop_map(|(value, index)| {
            let mut bytes = value.to_string().into_bytes();
            bytes.truncate(index.index(bytes.len()));
            bytes
        }),
        1 => scalar().prop_map(|value| value.to_string().into_bytes()),
        1 => prop::collection::vec(any::<u8>(), 0..64),
    ]
}

/// An object's text whose top-level keys may repeat (`{"a": 1, "a": {"b": 2}}`), which a
/// `Map` cannot hold: duplicate keys keep their first place and last value.
/// Numbers beyond epochs (Int64Large), beyond i64 (a float) and beyond epochs as floats are
/// among its values.
fn object_with_duplicates() -> impl Strategy<Value = Vec<u8>> {
    let large = prop_oneof![
        prop::sample::select(vec![i64::MAX, i64::MIN, 1_764_437_991_123_456_789, 1 << 53])
            .prop_map(|value| Value::Number(value.into())),
        Just(Value::Number(u64::MAX.into())),
        Just(Value::Number(Number::from_f64(-1.5e300).unwrap())),
    ];
    let value =
        prop_oneof![2 => object(), 2 => scalar(), 1 => large, 1 => Just(Value::Object(Map::new()))];
    prop::collection::vec((prop::sample::select(FIELD_NAMES.to_vec()), value), 0..6).prop_map(
        |fields| {
            let fields: Vec<String> = fields
                .iter()
                .map(|(name, value)| format!("{}: {value}", Value::from(*name)))
                .collect();
            format!("{{{}}}", fields.join(", ")).into_bytes()
        },
    )
}

fn column_types(schema: &InferredSchema) -> BTreeMap<String, ColumnType> {
    schema
        .fields()
        .iter()
        .map(|field| (field.name.clone(), field.column_type))
        .collect()
}

/// The schema after decoding every record that decodes, and how many did.
fn decode_all(records: &[Vec<u8>], options: &DecodeOptions) -> (InferredSchema, usize) {
    let mut decoder = JsonDecoder::new(options.clone());
    let rows = records
        .iter()
        .filter(|record| decoder.decode(record).is_ok())
        .count();
    (decoder.schema().clone(), rows)
}

fn small_limits() -> DecodeLimits {
    DecodeLimits {
        schema_fields_max: 12,
        record_fields_max: 5,
        depth_max: 3,
        string_bytes_max: 12,
        field_name_bytes_max: 9,
        value_bytes_max: 200,
    }
}

proptest! {
    #[test]
    fn every_record_is_a_row_or_a_dead_letter(records in prop::collection::vec(record_bytes(), 0..40)) {
        let limits = DecodeLimits { schema_fields_max: 12, depth_max: 3, ..DecodeLimits::default() };
        let options = DecodeOptions { limits, ..DecodeOptions::default() };
        let mut normaliser = JsonNormaliser::new(options, DeadLetterLimits { recent_max: 4, value_prefix_bytes_max: 8 });
        let mut rows = 0;
        for (offset, record) in records.iter().enumerate() {
            rows += usize::from(normaliser.push(0, offset as i64, record));
        }
        let dead_letters = normaliser.dead_letters();
        prop_assert_eq!(rows as u64 + dead_letters.count_total(), records.len() as u64);
        prop_assert!(dead_letters.recent().len() <= 4);
        prop_assert!(normaliser.schema().len() <= 12);
        prop_assert_eq!(dead_letters.recent_batch().unwrap().num_rows(), dead_letters.recent().len());
        let batch = normaliser.finish_batch().unwrap();
        prop_assert_eq!(batch.num_rows(), rows);
    }

    /// Same records, same answers: every record's outcome (the error itself when refused), the
    /// schema after each, and the batches, cut wherever `cuts` says, equal the old rules'.
    #[test]
    fn the_decoder_follows_the_old_rules(
        records in prop::collection::vec(prop_oneof![4 => record_bytes(), 2 => object_with_duplicates()], 0..40),
        cuts in prop::collection::vec(any::<bool>(), 40),
        small in any::<bool>(),
    ) {
        let limits = if small { small_limits() } else { DecodeLimits::default() };
        let options = DecodeOptions { limits, ..DecodeOptions::default() };
        let mut decoder = JsonDecoder::new(options.clone());
        let mut oracle_schema = InferredSchema::new();
        let mut oracle_rows = Vec::new();
        for (index, record) in records.iter().enumerate() {
            let expected = json_oracle::decode_record(record, &options, &mut oracle_schema);
            let got = decoder.decode(record);
            prop_assert_eq!(got.as_ref().err(), expected.as_ref().err(), "{}", String::from_utf8_lossy(record));
            oracle_rows.extend(expected.ok());
            prop_assert_eq!(decoder.schema().fields(), oracle_schema.fields());
            prop_assert_eq!(decoder.schema().version(), oracle_schema.version());
            if cuts[index] || index + 1 == records.len() {
                let batch = decoder.finish().unwrap();
                let expected = json_oracle::rows_to_batch(&oracle_schema, &oracle_rows).unwrap();
                prop_assert_eq!(batch, expected);
                oracle_rows.clear();
            }
        }
    }

    /// Holds while no record is refused for filling the schema: which records fit under
    /// `schema_fields_max` depends on the order they come in.
    #[test]
    fn final_column_types_do_not_depend_on_record_order(
        (records, shuffled) in prop::collection::vec(object().prop_map(|value| value.to_string().into_bytes()), 0..30)
            .prop_flat_map(|records| (Just(records.clone()), Just(records).prop_shuffle()))
    ) {
        let options = DecodeOptions::default();
        let (schema, rows) = decode_all(&records, &options);
        let (shuffled_schema, shuffled_rows) = decode_all(&shuffled, &options);
        prop_assert_eq!(rows, records.len());
        prop_assert_eq!(shuffled_rows, records.len());
        prop_assert_eq!(column_types(&schema), column_types(&shuffled_schema));
    }

    #[test]
    fn a_cast_early_batch_equals_the_rows_converted_late(
        records in prop::collection::vec(object().prop_map(|value| value.to_string().into_bytes()), 1..30),
        split in any::<prop::sample::Index>(),
    ) {
        let options = DecodeOptions::default();
        let split = split.index(records.len() + 1);
        let mut early_decoder = JsonDecoder::new(options.clone());
        let mut late_decoder = JsonDecoder::new(options);
        for record in &records[..split] {
            early_decoder.decode(record).unwrap();
        }
        let early_schema = early_decoder.schema().clone();
        let early_batch = early_decoder.finish().unwrap();
        for record in &records {
            late_decoder.decode(record).unwrap();
        }
        let schema = late_decoder.schema().clone();
        let late = late_decoder.finish().unwrap().slice(0, split);
        let cast = cast_batch(&early_batch, &schema.arrow_schema()).unwrap();
        prop_assert_eq!(cast.schema(), late.schema());
        for (index, field) in schema.fields().iter().enumerate() {
            let early_type = early_schema.field(&field.name).map(|field| field.column_type);
            // A batch no longer holds a timestamp's original text (see cast.rs).
            if early_type == Some(ColumnType::Timestamp) && field.column_type == ColumnType::Utf8 {
                continue;
            }
            prop_assert_eq!(cast.column(index).to_data(), late.column(index).to_data(), "column {}", field.name);
        }
    }
}

/// A calendar date-time and a zone offset in minutes east of UTC.
fn date_time_parts() -> impl Strategy<Value = (i32, u32, u32, u32, u32, u32, i32)> {
    (
        1_i32..=9999,
        1_u32..=12,
        1_u32..=28,
        0_u32..24,
        0_u32..60,
        0_u32..60,
        -(14 * 60)..=(14 * 60),
    )
}

fn utc_micros(year: i32, month: u32, day: u32, hour: u32, minute: u32, second: u32) -> i64 {
    chrono::NaiveDate::from_ymd_opt(year, month, day)
        .unwrap()
        .and_hms_opt(hour, minute, second)
        .unwrap()
        .and_utc()
        .timestamp_micros()
}

fn offset_text(offset_minutes: i32, separator: &str) -> String {
    let sign = if offset_minutes < 0 { '-' } else { '+' };
    let magnitude = offset_minutes.unsigned_abs();
    format!(
        "{sign}{:02}{separator}{:02}",
        magnitude / 60,
        magnitude % 60
    )
}

proptest! {
    #[test]
    fn date_parsing_never_panics(text in "\\PC{0,40}", digits in "[0-9 /:T+.-]{0,30}") {
        let _ = materializer::json::parse_datetime_text(&text);
        let _ = materializer::json::parse_datetime_text(&digits);
        let _ = materializer::json::epoch_text_to_micros(&digits);
    }

    #[test]
    fn every_accepted_format_reads_the_instant_it_writes(
        (year, month, day, hour, minute, second, offset_minutes) in date_time_parts(),
        micros in 0_u32..1_000_000,
    ) {
        use materializer::json::parse_datetime_text as parse;
        let local = utc_micros(year, month, day, hour, minute, second);
        let offset_micros = i64::from(offset_minutes) * 60_000_000;
        let iso_date = format!("{year:04}-{month:02}-{day:02}");
        let time = format!("{hour:02}:{minute:02}:{second:02}");
        let in_range = |micros: i64| {
            (utc_micros(1, 1, 1, 0, 0, 0)..=utc_micros(9999, 12, 31, 23, 59, 59) + 999_999).contains(&micros)
        };

        prop_assert_eq!(parse(&format!("{iso_date}T{time}")), Some(local));
        prop_assert_eq!(parse(&format!("{iso_date} {time}.{micros:06}")), Some(local + i64::from(micros)));
        let expected_zoned = Some(local - offset_micros).filter(|micros| in_range(*micros));
        prop_assert_eq!(parse(&format!("{iso_date}T{time}{}", offset_text(offset_minutes, ":"))), expected_zoned);
        prop_assert_eq!(parse(&format!("{iso_date}T{time}{}", offset_text(offset_minutes, ""))), expected_zoned);
        prop_assert_eq!(parse(&format!("{day:02}/{month:02}/{year:04} {time}")), Some(local));
        prop_assert_eq!(
            parse(&format!("{month:02}-{day:02}-{year:04} {hour:02}:{minute:02}")),
            Some(local - i64::from(second) * 1_000_000)
        );
        let month_name = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
            [month as usize - 1];
        if year >= 1900 {
            // RFC 2822 years are four digits from 1900 on (chrono reads shorter ones as 19xx/20xx).
            let rfc2822 = format!("{day} {month_name} {year} {time} {}", offset_text(offset_minutes, ""));
            prop_assert_eq!(parse(&rfc2822), expected_zoned, "{}", rfc2822);
        }
        if let Some(instant) = expected_zoned {
            let rendered = materializer::json::format_rfc3339(instant);
            prop_assert_eq!(parse(&rendered), Some(instant));
        }
    }
}
