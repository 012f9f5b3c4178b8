//! DuckDB as the peer of `bench views`: the same rows (a Parquet file the benchmark writes from
//! the view) loaded into a DuckDB in-memory table, the same queries timed there, in the same
//! run. DuckDB comes from PyPI into a virtual environment of its own (`--duckdb-python`, by
//! default `.bench-venv/bin/python`; `python3 -m venv .bench-venv && .bench-venv/bin/pip
//! install duckdb`), so the test suite's `.venv` is left as its set-up script makes it.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Loads `parquet` into an in-memory table `fleet`, then times each query `runs` times and
/// prints one JSON object: the load's seconds, the table's rows, per query its median ms.
const SCRIPT: &str = r#"
import duckdb, json, statistics, sys, time
path, runs, queries = sys.argv[1], int(sys.argv[2]), json.loads(sys.argv[3])
con = duckdb.connect()
started = time.perf_counter()
con.execute("CREATE TABLE fleet AS SELECT * FROM read_parquet(?)", [path])
load_s = time.perf_counter() - started
rows = con.execute("SELECT count(*) FROM fleet").fetchone()[0]
medians, answers = [], []
for sql in queries:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        answer = con.execute(sql).fetchall()
        times.append((time.perf_counter() - started) * 1e3)
    medians.append(statistics.median(times))
    answers.append(len(answer))
print(json.dumps({"version": duckdb.__version__, "load_s": load_s, "rows": rows, "medians_ms": medians, "answer_rows": answers, "threads": con.execute("SELECT current_setting('threads')").fetchone()[0]}))
"#;

pub struct DuckdbFigures {
    pub version: String,
    pub threads: i64,
    pub rows: u64,
    pub medians_ms: Vec<f64>,
}

/// DuckDB's median times of `queries` (over table `fleet`) on the rows of `parquet`; `None`
/// with the reason printed when DuckDB cannot be run.
pub fn measure(python: &Path, parquet: &Path, queries: &[&str], runs: usize) -> Option<DuckdbFigures> {
    let queries_json = serde_json::to_string(queries).expect("strings encode");
    let output = Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .arg(parquet)
        .arg(runs.max(1).to_string())
        .arg(&queries_json)
        .output();
    let output = match output {
        Ok(output) if output.status.success() => output,
        Ok(output) => {
            println!(
                "  DuckDB: {} failed: {}",
                python.display(),
                String::from_utf8_lossy(&output.stderr).lines().last().unwrap_or_default()
            );
            return None;
        }
        Err(error) => {
            println!("  DuckDB: cannot run {} ({error}); see src/bench/duckdb.rs to install it", python.display());
            return None;
        }
    };
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    let medians_ms = value["medians_ms"].as_array()?.iter().filter_map(|median| median.as_f64()).collect::<Vec<_>>();
    let figures = DuckdbFigures {
        version: value["version"].as_str().unwrap_or("?").to_string(),
        threads: value["threads"].as_i64().unwrap_or(0),
        rows: value["rows"].as_u64().unwrap_or(0),
        medians_ms,
    };
    let load = Duration::from_secs_f64(value["load_s"].as_f64().unwrap_or(0.0));
    println!(
        "  DuckDB {} ({} threads): {} rows loaded in memory from the view's Parquet in {:.1} s",
        figures.version,
        figures.threads,
        figures.rows,
        load.as_secs_f64()
    );
    Some(figures)
}
