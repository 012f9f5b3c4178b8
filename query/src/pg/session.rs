//! The statements a Postgres session answers itself, without the engine: `SET`, `SHOW` of the
//! session's settings, transaction control and `DISCARD`/`DEALLOCATE`/`RESET`.
//!
//! Clients send these at start and around their queries (psql's `SET`s, psycopg's `BEGIN`,
//! pgx's `DISCARD ALL`). SQL only reads here, so a transaction is only a state the client sees
//! (`BEGIN` ... `COMMIT` change nothing) and settings only shape what `SHOW` answers; none
//! changes how the engine plans. Everything else, including `SHOW` of a name that is not a
//! session setting (`SHOW TABLES`, `SHOW MATERIALIZED VIEWS` ...), goes to the engine.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::logical_expr::{create_udf, ColumnarValue, ScalarUDF, Volatility};
use datafusion::sql::sqlparser::ast::{Expr, Set, Statement, Value, ValueWithSpan};

/// Settings a session keeps: each counts against the connection's memory, so bounded.
pub const SETTINGS_MAX: usize = 256;
/// Longest setting value kept.
pub const SETTING_BYTES_MAX: usize = 4096;

/// A statement the session answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionCommand {
    Set { name: String, value: String },
    Show { name: String },
    ShowAll,
    Begin,
    Commit,
    Rollback,
    /// `DISCARD`, `DEALLOCATE`, `RESET`: the command tag to answer.
    Reset { tag: &'static str, name: Option<String> },
}

/// Settings that exist before any `SET`, with their values (what `SHOW` answers). The
/// reportable ones (sent as ParameterStatus at startup by pgwire) keep the same values.
pub fn default_settings(statement_timeout_ms: u128) -> Vec<(&'static str, String)> {
    vec![
        ("application_name", String::new()),
        ("client_encoding", "UTF8".into()),
        ("datestyle", "ISO, MDY".into()),
        ("default_transaction_isolation", "read committed".into()),
        ("default_transaction_read_only", "on".into()),
        ("extra_float_digits", "1".into()),
        ("integer_datetimes", "on".into()),
        ("intervalstyle", "postgres".into()),
        ("is_superuser", "off".into()),
        ("lc_collate", "C".into()),
        ("lc_ctype", "C".into()),
        ("max_identifier_length", "63".into()),
        ("search_path", "public".into()),
        ("server_encoding", "UTF8".into()),
        ("server_version", SERVER_VERSION.into()),
        ("server_version_num", SERVER_VERSION_NUM.into()),
        ("standard_conforming_strings", "on".into()),
        // The engine's timeout: a session cannot change it.
        ("statement_timeout", format!("{statement_timeout_ms}ms")),
        ("timezone", "UTC".into()),
        ("transaction_isolation", "read committed".into()),
        ("transaction_read_only", "on".into()),
    ]
}

/// `current_setting(name)`: a setting's server default (Grafana asks for
/// `server_version_num`, and for `search_path` to tell its own schemas). A function has no
/// connection, so a session's `SET` shows in `SHOW`, not here.
pub fn current_setting_udf(statement_timeout_ms: u128) -> ScalarUDF {
    let defaults: HashMap<&'static str, String> = default_settings(statement_timeout_ms).into_iter().collect();
    let lookup = move |name: &str| -> Result<String> {
        defaults
            .get(name.to_lowercase().as_str())
            .cloned()
            .ok_or_else(|| DataFusionError::Plan(format!("unrecognized configuration parameter \"{name}\"")))
    };
    let function = move |args: &[ColumnarValue]| -> Result<ColumnarValue> {
        let [arg] = args else { return Err(DataFusionError::Plan("current_setting takes one argument".into())) };
        match arg {
            ColumnarValue::Scalar(scalar) => match scalar.cast_to(&DataType::Utf8)? {
                ScalarValue::Utf8(Some(name)) => Ok(ColumnarValue::Scalar(ScalarValue::Utf8(Some(lookup(&name)?)))),
                _ => Ok(ColumnarValue::Scalar(ScalarValue::Utf8(None))),
            },
            ColumnarValue::Array(array) => {
                let names = cast(array, &DataType::Utf8)?;
                let values = names
                    .as_string::<i32>()
                    .iter()
                    .map(|name| name.map(&lookup).transpose())
                    .collect::<Result<StringArray>>()?;
                Ok(ColumnarValue::Array(Arc::new(values)))
            }
        }
    };
    create_udf("current_setting", vec![DataType::Utf8], DataType::Utf8, Volatility::Stable, Arc::new(function))
}

/// The Postgres version clients see (psql chooses its catalog queries by it).
pub const SERVER_VERSION: &str = "16.6";
pub const SERVER_VERSION_NUM: &str = "160006";

/// Settings a session may not change: they describe the server.
const FIXED: &[&str] = &["server_version", "server_version_num", "server_encoding", "is_superuser", "integer_datetimes", "max_identifier_length"];
/// Settings clients set at start (pg_dump, DBeaver: `SET statement_timeout = 0`) that are the
/// server's here: accepted with a warning, so those clients work, and not changed.
const SERVERS: &[&str] = &["statement_timeout"];

/// The ParameterStatus name a setting is reported under, for the settings clients track.
pub fn reported_name(name: &str) -> Option<&'static str> {
    Some(match name {
        "application_name" => "application_name",
        "client_encoding" => "client_encoding",
        "datestyle" => "DateStyle",
        "intervalstyle" => "IntervalStyle",
        "timezone" => "TimeZone",
        "search_path" => "search_path",
        "extra_float_digits" => "extra_float_digits",
        "standard_conforming_strings" => "standard_conforming_strings",
        _ => return None,
    })
}

/// The session command `statement` is, if it is one.
pub fn recognise(statement: &Statement) -> Option<SessionCommand> {
    match statement {
        Statement::Set(set) => recognise_set(set),
        Statement::ShowVariable { variable } => {
            let name = variable.iter().map(|ident| ident.value.to_lowercase()).collect::<Vec<_>>().join(" ");
            match name.as_str() {
                "all" => Some(SessionCommand::ShowAll),
                "time zone" => Some(SessionCommand::Show { name: "timezone".into() }),
                "transaction isolation level" => Some(SessionCommand::Show { name: "transaction_isolation".into() }),
                // Only settings are the session's; `SHOW TABLES` and the like are the engine's.
                name if is_setting(name) => Some(SessionCommand::Show { name: name.to_string() }),
                _ => None,
            }
        }
        Statement::StartTransaction { .. } => Some(SessionCommand::Begin),
        Statement::Commit { .. } => Some(SessionCommand::Commit),
        Statement::Rollback { .. } => Some(SessionCommand::Rollback),
        Statement::Discard { .. } => Some(SessionCommand::Reset { tag: "DISCARD ALL", name: None }),
        Statement::Deallocate { .. } => Some(SessionCommand::Reset { tag: "DEALLOCATE", name: None }),
        Statement::Reset(reset) => {
            let text = reset.to_string();
            let name = text.trim_start_matches("RESET").trim().to_lowercase();
            Some(SessionCommand::Reset { tag: "RESET", name: (name != "all").then_some(name) })
        }
        _ => None,
    }
}

fn is_setting(name: &str) -> bool {
    default_settings(0).iter().any(|(known, _)| *known == name)
}

fn recognise_set(set: &Set) -> Option<SessionCommand> {
    match set {
        Set::SingleAssignment { variable, values, .. } => {
            let name = variable.to_string().to_lowercase();
            let value = values.iter().map(setting_value).collect::<Vec<_>>().join(", ");
            Some(SessionCommand::Set { name: if name == "time zone" { "timezone".into() } else { name }, value })
        }
        Set::SetTimeZone { value, .. } => Some(SessionCommand::Set { name: "timezone".into(), value: setting_value(value) }),
        // SET SESSION CHARACTERISTICS, SET ROLE, SET NAMES ...: accepted, nothing to keep.
        _ => Some(SessionCommand::Set { name: String::new(), value: String::new() }),
    }
}

/// `'ISO, MDY'` is the text `ISO, MDY`; `DEFAULT`, `on` and numbers are their text.
fn setting_value(expr: &Expr) -> String {
    match expr {
        Expr::Value(ValueWithSpan { value: Value::SingleQuotedString(text), .. }) => text.clone(),
        Expr::Identifier(ident) => ident.value.clone(),
        other => other.to_string(),
    }
}

/// A session's settings, changed by `SET`.
#[derive(Debug)]
pub struct Settings {
    values: HashMap<String, String>,
}

impl Settings {
    pub fn new(statement_timeout_ms: u128) -> Settings {
        Settings { values: default_settings(statement_timeout_ms).into_iter().map(|(name, value)| (name.to_string(), value)).collect() }
    }

    /// Applies `SET name = value`: `Ok(Some(warning))` when accepted without effect, an error
    /// saying why it is refused.
    pub fn set(&mut self, name: &str, value: &str) -> Result<Option<String>, String> {
        if name.is_empty() {
            return Ok(None);
        }
        if SERVERS.contains(&name) {
            let current = self.get(name).unwrap_or_default();
            return Ok(Some(format!("\"{name}\" is the server's ({current}); SET does not change it")));
        }
        if FIXED.contains(&name) {
            return Err(format!("parameter \"{name}\" cannot be changed: it is the server's"));
        }
        if name.starts_with("datafusion.") {
            return Err(format!("\"{name}\" is a setting of the server's query engine, not of a session"));
        }
        if value.len() > SETTING_BYTES_MAX {
            return Err(format!("value of \"{name}\" is longer than the limit of {SETTING_BYTES_MAX} bytes"));
        }
        if !self.values.contains_key(name) && self.values.len() >= SETTINGS_MAX {
            return Err(format!("a session keeps at most {SETTINGS_MAX} settings"));
        }
        let value = if value.eq_ignore_ascii_case("default") { self.default_of(name).unwrap_or_default() } else { value.to_string() };
        self.values.insert(name.to_string(), value);
        Ok(None)
    }

    /// `RESET name` (or every setting for `None`).
    pub fn reset(&mut self, name: Option<&str>) {
        match name {
            None => *self = Settings::new(self.timeout_ms()),
            Some(name) => match self.default_of(name) {
                Some(value) => {
                    self.values.insert(name.to_string(), value);
                }
                None => {
                    self.values.remove(name);
                }
            },
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// Every setting, sorted by name.
    pub fn all(&self) -> Vec<(String, String)> {
        let mut all: Vec<(String, String)> = self.values.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
        all.sort();
        all
    }

    fn default_of(&self, name: &str) -> Option<String> {
        default_settings(self.timeout_ms()).into_iter().find(|(known, _)| *known == name).map(|(_, value)| value)
    }

    fn timeout_ms(&self) -> u128 {
        self.values.get("statement_timeout").and_then(|v| v.trim_end_matches("ms").parse().ok()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::parser::Parser;

    fn command(sql: &str) -> Option<SessionCommand> {
        let statements = Parser::parse_sql(&PostgreSqlDialect {}, sql).unwrap();
        recognise(&statements[0])
    }

    #[test]
    fn client_start_statements_are_the_sessions() {
        assert_eq!(command("SET datestyle = 'ISO, MDY'"), Some(SessionCommand::Set { name: "datestyle".into(), value: "ISO, MDY".into() }));
        assert_eq!(command("SET TIME ZONE 'UTC'"), Some(SessionCommand::Set { name: "timezone".into(), value: "UTC".into() }));
        assert_eq!(command("SET extra_float_digits TO 3"), Some(SessionCommand::Set { name: "extra_float_digits".into(), value: "3".into() }));
        assert_eq!(command("SHOW transaction isolation level"), Some(SessionCommand::Show { name: "transaction_isolation".into() }));
        assert_eq!(command("SHOW search_path"), Some(SessionCommand::Show { name: "search_path".into() }));
        assert_eq!(command("BEGIN"), Some(SessionCommand::Begin));
        assert_eq!(command("COMMIT"), Some(SessionCommand::Commit));
        assert_eq!(command("ROLLBACK"), Some(SessionCommand::Rollback));
        assert!(matches!(command("DISCARD ALL"), Some(SessionCommand::Reset { .. })));
    }

    #[test]
    fn other_shows_and_queries_are_the_engines() {
        assert_eq!(command("SHOW TABLES"), None);
        assert_eq!(command("SHOW some_view_name"), None);
        assert_eq!(command("SELECT 1"), None);
    }

    #[test]
    fn settings_are_bounded_and_server_ones_fixed() {
        let mut settings = Settings::new(60_000);
        assert_eq!(settings.get("statement_timeout"), Some("60000ms"));
        assert!(settings.set("statement_timeout", "5").unwrap().is_some());
        assert_eq!(settings.get("statement_timeout"), Some("60000ms"));
        assert!(settings.set("server_version", "9.0").is_err());
        assert!(settings.set("datafusion.execution.batch_size", "1").is_err());
        settings.set("application_name", "psql").unwrap();
        assert_eq!(settings.get("application_name"), Some("psql"));
        assert!(settings.set("x", &"v".repeat(SETTING_BYTES_MAX + 1)).is_err());
        for i in 0..SETTINGS_MAX {
            let _ = settings.set(&format!("custom.s{i}"), "1");
        }
        assert!(settings.set("custom.one_more", "1").is_err());
        settings.reset(None);
        assert_eq!(settings.get("application_name"), Some(""));
        assert_eq!(settings.get("statement_timeout"), Some("60000ms"));
    }
}
