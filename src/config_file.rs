//! `--config FILE` for `serve`: one `name = value` per line, names as the long flags without
//! their dashes (`kafka-addr = 127.0.0.1:9092`), `#` comments. The file's settings are placed
//! before the command line's, so a flag given on the command line wins. One parser (clap's)
//! validates both: an unknown name or bad value is reported as for a flag.

use std::ffi::OsString;
use std::path::Path;

use anyhow::{bail, Context};

/// A config file is small; refuse anything that is not (a mistaken path to a data file).
const CONFIG_FILE_BYTES_MAX: u64 = 1 << 20;

/// Expands `yottastore serve ... --config FILE ...` into the file's flags followed by the
/// command line's; other command lines are returned unchanged.
pub fn expand(args: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    if args.get(1).and_then(|arg| arg.to_str()) != Some("serve") {
        return Ok(args);
    }
    let mut rest = Vec::new();
    let mut file = None;
    let mut iter = args[2..].iter();
    while let Some(arg) = iter.next() {
        match arg.to_str() {
            Some("--config") => file = Some(iter.next().context("--config needs a file name")?.clone()),
            Some(text) if text.starts_with("--config=") => file = Some(OsString::from(&text["--config=".len()..])),
            _ => rest.push(arg.clone()),
        }
    }
    let Some(file) = file else { return Ok(args) };
    let mut expanded = args[..2].to_vec();
    expanded.extend(read(Path::new(&file))?);
    expanded.extend(rest);
    Ok(expanded)
}

fn read(path: &Path) -> anyhow::Result<Vec<OsString>> {
    let size = std::fs::metadata(path).with_context(|| format!("config file {}", path.display()))?.len();
    if size > CONFIG_FILE_BYTES_MAX {
        bail!("config file {} is {size} bytes; the limit is {CONFIG_FILE_BYTES_MAX}", path.display());
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
    parse(&text).with_context(|| format!("config file {}", path.display()))
}

fn parse(text: &str) -> anyhow::Result<Vec<OsString>> {
    let mut flags = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            bail!("line {}: expected `name = value`, found {line:?}", index + 1);
        };
        let name = name.trim();
        let well_formed = name.starts_with(|c: char| c.is_ascii_lowercase())
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !well_formed || name == "config" {
            bail!("line {}: {name:?} is not a setting name (use the long flag's name, e.g. kafka-addr)", index + 1);
        }
        let value = value.trim();
        let value = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')).unwrap_or(value);
        flags.push(OsString::from(format!("--{name}")));
        flags.push(OsString::from(value));
    }
    Ok(flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[OsString]) -> Vec<&str> {
        args.iter().map(|arg| arg.to_str().unwrap()).collect()
    }

    #[test]
    fn file_settings_come_before_the_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("yottastore.conf");
        std::fs::write(&path, "# broker\nkafka-addr = 127.0.0.1:9999\ndata-dir = \"/srv/yotta\"\n\nauto-create-topics=false\n").unwrap();
        let args: Vec<OsString> = ["yottastore", "serve", "--config", path.to_str().unwrap(), "--kafka-addr", "127.0.0.1:1"]
            .iter()
            .map(OsString::from)
            .collect();
        let expanded = expand(args).unwrap();
        assert_eq!(
            strings(&expanded),
            vec!["yottastore", "serve", "--kafka-addr", "127.0.0.1:9999", "--data-dir", "/srv/yotta", "--auto-create-topics", "false", "--kafka-addr", "127.0.0.1:1"]
        );
    }

    #[test]
    fn bad_lines_are_reported_with_their_number() {
        assert!(parse("kafka-addr 1").unwrap_err().to_string().contains("line 1"));
        assert!(parse("ok = 1\n--x = 2").unwrap_err().to_string().contains("line 2"));
        assert!(parse("config = other").is_err());
    }
}
