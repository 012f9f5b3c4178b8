//! `yottastore sql`: SQL against a running server, through its HTTP endpoint (`POST /sql`,
//! answers as Arrow IPC), printed as tables in the style of datafusion-cli.
//!
//! `-c SQL` runs one or more statements, `-f FILE` runs a file; without either, an interactive
//! shell with history (statements end with `;`, `\q` quits).

use std::io::Read;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use query::datafusion::arrow::ipc::reader::StreamReader;
use query::datafusion::arrow::record_batch::RecordBatch;
use query::datafusion::arrow::util::pretty::pretty_format_batches;

#[derive(Args)]
pub struct SqlArgs {
    /// The server's HTTP address (`serve --http-addr`).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub http_addr: String,
    /// Run these statements and exit.
    #[arg(short = 'c', long = "command", value_name = "SQL", conflicts_with = "file")]
    pub command: Option<String>,
    /// Run the statements of this file and exit.
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub file: Option<PathBuf>,
    /// Per-request timeout, in seconds (the server applies its own query timeout too).
    #[arg(long, default_value_t = 300)]
    pub timeout_s: u64,
}

/// Statements longer than this are refused before sending (the server's own limit is 1 MiB).
const STATEMENT_BYTES_MAX: usize = 1 << 20;

pub fn run(args: SqlArgs) -> anyhow::Result<()> {
    let client = Client::new(&args.http_addr, Duration::from_secs(args.timeout_s));
    let script = match (&args.command, &args.file) {
        (Some(command), _) => Some(command.clone()),
        (None, Some(path)) => Some(std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?),
        (None, None) => None,
    };
    match script {
        Some(script) => {
            let mut failed = false;
            for statement in split_statements(&script) {
                if let Err(error) = client.run_and_print(&statement) {
                    eprintln!("Error: {error:#}");
                    failed = true;
                    break;
                }
            }
            if failed {
                std::process::exit(1);
            }
            Ok(())
        }
        None => shell(&client),
    }
}

fn shell(client: &Client) -> anyhow::Result<()> {
    let mut editor = rustyline::DefaultEditor::new()?;
    let history = std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".yottastore_history"));
    if let Some(history) = &history {
        let _ = editor.load_history(history);
    }
    println!("yottastore sql against {} (end statements with ';', \\q to quit)", client.url);
    let mut pending = String::new();
    loop {
        let prompt = if pending.is_empty() { "yottastore> " } else { "         -> " };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(rustyline::error::ReadlineError::Interrupted) => {
                pending.clear();
                continue;
            }
            Err(rustyline::error::ReadlineError::Eof) => break,
            Err(error) => return Err(error.into()),
        };
        if pending.is_empty() && matches!(line.trim(), "\\q" | "quit" | "exit") {
            break;
        }
        pending.push_str(&line);
        pending.push('\n');
        if !line.trim_end().ends_with(';') {
            continue;
        }
        let _ = editor.add_history_entry(pending.trim());
        for statement in split_statements(&pending) {
            if let Err(error) = client.run_and_print(&statement) {
                println!("Error: {error:#}");
            }
        }
        pending.clear();
    }
    if let Some(history) = &history {
        let _ = editor.save_history(history);
    }
    Ok(())
}

/// Splits a script at `;` outside quotes and comments; blank statements are dropped.
pub fn split_statements(script: &str) -> Vec<String> {
    let mut statements = Vec::new();
    let mut current = String::new();
    let mut chars = script.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = chars.next() {
        match quote {
            Some(open) => {
                current.push(c);
                if c == open {
                    quote = None;
                }
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                current.push(c);
            }
            None if c == '-' && chars.peek() == Some(&'-') => {
                // A line comment: dropped up to the end of the line.
                for skipped in chars.by_ref() {
                    if skipped == '\n' {
                        current.push('\n');
                        break;
                    }
                }
            }
            None if c == ';' => statements.push(std::mem::take(&mut current)),
            None => current.push(c),
        }
    }
    statements.push(current);
    statements.into_iter().map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect()
}

struct Client {
    url: String,
    agent: ureq::Agent,
}

impl Client {
    fn new(http_addr: &str, timeout: Duration) -> Client {
        let config = ureq::Agent::config_builder().timeout_global(Some(timeout)).http_status_as_error(false).build();
        Client { url: format!("http://{http_addr}/sql"), agent: config.into() }
    }

    fn run_and_print(&self, statement: &str) -> anyhow::Result<()> {
        if statement.len() > STATEMENT_BYTES_MAX {
            bail!("statement of {} bytes is longer than {STATEMENT_BYTES_MAX}", statement.len());
        }
        let started = Instant::now();
        let mut response = self
            .agent
            .post(&self.url)
            .header("Accept", query::http::ARROW_STREAM)
            .send(statement.as_bytes())
            .with_context(|| format!("cannot reach the server at {}", self.url))?;
        let truncated = response.headers().get(query::http::TRUNCATED_HEADER).is_some_and(|value| value == "true");
        let status = response.status();
        let mut body = Vec::new();
        response.body_mut().as_reader().read_to_end(&mut body)?;
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&body)
                .ok()
                .and_then(|value| value.get("error").and_then(|error| error.as_str()).map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&body).into_owned());
            bail!("{message}");
        }
        let reader = StreamReader::try_new(std::io::Cursor::new(body), None)?;
        let batches: Vec<RecordBatch> = reader.collect::<Result<_, _>>()?;
        let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
        if !batches.is_empty() && batches[0].num_columns() > 0 {
            println!("{}", pretty_format_batches(&batches)?);
        }
        let elapsed = started.elapsed().as_secs_f64();
        let cut = if truncated { " (cut at the server's row limit)" } else { "" };
        println!("{rows} row(s) fetched{cut}. \nElapsed {elapsed:.3} seconds.\n");
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::split_statements;

    #[test]
    fn statements_split_outside_quotes_and_comments() {
        let script = "SELECT ';' AS a; -- a comment; with a semicolon\nSELECT \"x;y\" FROM t;\n\n;SELECT 3";
        assert_eq!(split_statements(script), vec!["SELECT ';' AS a", "SELECT \"x;y\" FROM t", "SELECT 3"]);
        assert!(split_statements("  ;\n; ").is_empty());
    }
}
