//! `yottastore bench json`: the view's JSON decoder alone (record values to the Arrow columns
//! of micro-batches: flattening, type inference, dates, epochs) beside the peer it is measured
//! against, serde_json parsing the same bytes into `serde_json::Value`, on one core, in the
//! same run, alternating, median of `--runs`. Two record sets: the vehicle records of
//! `bench views` (one shape) and a mix of the shapes the vehicle views test produces (nested
//! objects, arrays, dates in five spellings, epochs in seconds and milliseconds, in fields
//! named like times and not). The peer is compiled in the decoder's crate (`json::peer`), so
//! both have the same optimisation in any build.

use std::time::Instant;

use anyhow::Context;
use clap::Args;
use query::materializer::json::{peer, DeadLetterLimits, DecodeOptions, JsonNormaliser};

#[derive(Args)]
pub struct JsonBenchArgs {
    /// Records per set.
    #[arg(long, default_value_t = 200_000)]
    records: usize,
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Records per decoded batch (a view's micro-batch is at most 8192).
    #[arg(long, default_value_t = 8192)]
    batch_records: usize,
}

/// The shapes of tests/kafka/views_tests.py's vehicles, one per `i % 8`.
fn mixed_value(i: usize) -> Vec<u8> {
    let vehicle = format!("veh-{:04}", i % 150);
    let region = ["north", "south", "east", "west", "central"][i % 5];
    let status = ["moving", "idle", "parked", "charging"][i % 4];
    let base = format!(r#""vehicle_id":"{vehicle}","region":"{region}","status":"{status}""#);
    let seconds = 1_795_932_000 + 7 * i as i64;
    let speed = i % 130;
    let rest = match i % 8 {
        0 => format!(
            r#""speed":{speed},"reported_at":"2026-11-29T06:{:02}:{:02}Z","fix":{seconds}"#,
            i / 60 % 60,
            i % 60
        ),
        1 => format!(
            r#""speed":{speed}.25,"fuel":0.{:03},"reported_at":"2026-11-29T08:00:{:02}.250+02:00""#,
            i % 1000,
            i % 60
        ),
        2 => format!(
            r#""speed":{speed},"engine":{{"temp":{},"rpm":{}}},"reported_at":"Sun, 29 Nov 2026 06:00:{:02} +0000""#,
            70 + i % 40,
            800 + i % 3000,
            i % 60
        ),
        3 => format!(
            r#""battery":{{"level":{}}},"reported_at":"29/11/2026 06:{:02}","fix":"29/11/2026 06:00""#,
            i % 101,
            i % 60
        ),
        4 => format!(
            r#""speed":{speed},"driver":"{}","reported_at":"11-29-2026 06:{:02}""#,
            ["ann", "bo", "cy"][i % 3],
            i % 60
        ),
        5 => format!(
            r#""speed":{speed},"reported_at":{seconds},"tags":["a",{}]"#,
            i % 7
        ),
        6 => format!(
            r#""speed":{speed}.0,"reported_at":{},"fix":{}"#,
            seconds * 1000 + 123,
            seconds * 1000
        ),
        _ => format!(
            r#""type":"maintenance","service":"oil","cost":{}.5,"reported_at":"2026-11-29 06:00:{:02}""#,
            20 + i % 880,
            i % 60
        ),
    };
    format!("{{{base},{rest}}}").into_bytes()
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Seconds to parse every value into a `serde_json::Value`.
fn parse_seconds(values: &[Vec<u8>]) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut fields = 0_usize;
    for value in values {
        fields += peer::parse_value_fields(value)?;
    }
    std::hint::black_box(fields);
    Ok(started.elapsed().as_secs_f64())
}

/// Seconds to decode every value into batches of `batch_records`, and the exact-path share.
fn decode_seconds(values: &[Vec<u8>], batch_records: usize) -> anyhow::Result<(f64, f64)> {
    let mut normaliser = JsonNormaliser::new(DecodeOptions::default(), DeadLetterLimits::default());
    let started = Instant::now();
    let mut rows = 0_usize;
    for (offset, value) in values.iter().enumerate() {
        anyhow::ensure!(
            normaliser.push(0, offset as i64, value),
            "record {offset} became a dead letter"
        );
        if normaliser.rows() >= batch_records {
            rows += normaliser.finish_batch()?.num_rows();
        }
    }
    rows += normaliser.finish_batch()?.num_rows();
    let seconds = started.elapsed().as_secs_f64();
    anyhow::ensure!(
        rows == values.len(),
        "{rows} rows of {} records",
        values.len()
    );
    let exact_share = normaliser.decoder().exact_records() as f64 / values.len() as f64;
    Ok((seconds, exact_share))
}

pub fn run(args: JsonBenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.records >= 1 && args.runs >= 1 && args.batch_records >= 1,
        "--records, --runs and --batch-records >= 1"
    );
    println!(
        "json bench: {} records per set, {} runs, batches of {} records, one core",
        args.records, args.runs, args.batch_records
    );
    let sets: [(&str, Vec<Vec<u8>>); 2] = [
        (
            "vehicles (bench views)",
            (0..args.records).map(super::views::value).collect(),
        ),
        (
            "mixed (views test shapes)",
            (0..args.records).map(mixed_value).collect(),
        ),
    ];
    for (name, values) in &sets {
        let bytes: usize = values.iter().map(Vec::len).sum();
        let (mut parse, mut decode, mut exact) = (Vec::new(), Vec::new(), 0.0);
        for _ in 0..args.runs {
            parse.push(parse_seconds(values).context("serde_json")?);
            let (seconds, exact_share) = decode_seconds(values, args.batch_records)?;
            decode.push(seconds);
            exact = exact_share;
        }
        let records = values.len() as f64;
        let (parse_s, decode_s) = (median(parse), median(decode));
        println!(
            "{name}: {:.0} B/record; decoder to Arrow {:.0} records/s ({:.0} MiB/s), serde_json::Value parse {:.0} records/s ({:.0} MiB/s): ratio {:.2} (exact path: {:.1}% of records)",
            bytes as f64 / records,
            records / decode_s,
            bytes as f64 / decode_s / (1 << 20) as f64,
            records / parse_s,
            bytes as f64 / parse_s / (1 << 20) as f64,
            parse_s / decode_s,
            exact * 100.0
        );
    }
    Ok(())
}
