//! Query errors as Postgres ErrorResponse fields: a SQLSTATE clients can act on, the message,
//! and the position in the SQL text where DataFusion or the parser gives one.

use datafusion::arrow::error::ArrowError;
use datafusion::common::{DataFusionError, SchemaError};
use pgwire::error::{ErrorInfo, PgWireError};

use materializer::view::ViewError;

use crate::engine::QueryError;

/// SQLSTATE codes used (Postgres' appendix A).
pub mod sqlstate {
    pub const SYNTAX_ERROR: &str = "42601";
    pub const UNDEFINED_TABLE: &str = "42P01";
    pub const UNDEFINED_COLUMN: &str = "42703";
    pub const UNDEFINED_FUNCTION: &str = "42883";
    pub const UNDEFINED_OBJECT: &str = "42704";
    pub const READ_ONLY: &str = "25006";
    pub const FEATURE_NOT_SUPPORTED: &str = "0A000";
    pub const PROGRAM_LIMIT_EXCEEDED: &str = "54000";
    pub const OUT_OF_MEMORY: &str = "53200";
    pub const QUERY_CANCELED: &str = "57014";
    pub const DATA_EXCEPTION: &str = "22000";
    pub const DIVISION_BY_ZERO: &str = "22012";
    pub const CANT_CHANGE_RUNTIME_PARAM: &str = "55P02";
    pub const INTERNAL_ERROR: &str = "XX000";
    pub const INVALID_OBJECT_DEFINITION: &str = "42P17";
    pub const PROTOCOL_VIOLATION: &str = "08P01";
    pub const TOO_MANY_CONNECTIONS: &str = "53300";
}

/// An ERROR with `code` and `message`.
pub fn error(code: &str, message: impl Into<String>) -> ErrorInfo {
    ErrorInfo::new("ERROR".to_owned(), code.to_owned(), message.into())
}

/// A FATAL error: the connection closes after it.
pub fn fatal(code: &str, message: impl Into<String>) -> ErrorInfo {
    ErrorInfo::new("FATAL".to_owned(), code.to_owned(), message.into())
}

pub fn user_error(info: ErrorInfo) -> PgWireError {
    PgWireError::UserError(Box::new(info))
}

/// `failure` of the statement whose text was `sql`. `position_in` is the text the client sent
/// when the engine planned exactly that text (positions refer to it), `None` when the engine
/// got a rewritten text, whose positions would point elsewhere in the client's.
pub fn query_error(failure: &QueryError, position_in: Option<&str>) -> ErrorInfo {
    let code = match failure {
        QueryError::TooLong { .. } => sqlstate::PROGRAM_LIMIT_EXCEEDED,
        QueryError::Timeout(_) => sqlstate::QUERY_CANCELED,
        QueryError::DataFusion(error) => datafusion_code(error),
        QueryError::View(error) => view_code(error),
    };
    let mut info = error(code, failure.to_string());
    if let (QueryError::DataFusion(error), Some(sql)) = (failure, position_in) {
        info.position = error_location(error).and_then(|(line, column)| char_position(sql, line, column)).map(|p| p.to_string());
    }
    info
}

/// A refused view statement (a bad definition, an unknown view or index, one that exists) is
/// the user's to fix; a limit reached is Postgres' program limit; the rest is ours.
fn view_code(error: &ViewError) -> &'static str {
    match error {
        ViewError::Invalid(_) => sqlstate::INVALID_OBJECT_DEFINITION,
        ViewError::Limit(_) => sqlstate::PROGRAM_LIMIT_EXCEEDED,
        ViewError::Source(_) | ViewError::Internal(_) => sqlstate::INTERNAL_ERROR,
    }
}

fn datafusion_code(error: &DataFusionError) -> &'static str {
    match error.find_root() {
        DataFusionError::SQL(..) => sqlstate::SYNTAX_ERROR,
        DataFusionError::SchemaError(schema_error, _) => match schema_error.as_ref() {
            SchemaError::FieldNotFound { .. } => sqlstate::UNDEFINED_COLUMN,
            _ => sqlstate::SYNTAX_ERROR,
        },
        DataFusionError::ResourcesExhausted(_) => sqlstate::OUT_OF_MEMORY,
        DataFusionError::NotImplemented(_) => sqlstate::FEATURE_NOT_SUPPORTED,
        DataFusionError::Plan(message) => plan_code(message),
        DataFusionError::ArrowError(arrow, _) => match arrow.as_ref() {
            ArrowError::DivideByZero => sqlstate::DIVISION_BY_ZERO,
            ArrowError::MemoryError(_) => sqlstate::OUT_OF_MEMORY,
            _ => sqlstate::DATA_EXCEPTION,
        },
        DataFusionError::Execution(message) if message.contains("Divide by zero") => sqlstate::DIVISION_BY_ZERO,
        DataFusionError::Execution(_) => sqlstate::DATA_EXCEPTION,
        _ => sqlstate::INTERNAL_ERROR,
    }
}

/// DataFusion's planning errors are all `Plan`; the message says which kind.
fn plan_code(message: &str) -> &'static str {
    let lower = message.to_lowercase();
    if lower.starts_with("ddl not supported") || lower.starts_with("dml not supported") || lower.starts_with("statement not supported") {
        sqlstate::READ_ONLY
    } else if lower.contains("table") && lower.contains("not found") {
        sqlstate::UNDEFINED_TABLE
    } else if lower.contains("invalid function") || lower.contains("no function matches") {
        sqlstate::UNDEFINED_FUNCTION
    } else if lower.contains("not found") {
        sqlstate::UNDEFINED_OBJECT
    } else {
        sqlstate::SYNTAX_ERROR
    }
}

/// The (line, column) DataFusion's diagnostic or the parser's message points at, 1-based.
fn error_location(error: &DataFusionError) -> Option<(u64, u64)> {
    if let Some(span) = error.diagnostic().and_then(|diagnostic| diagnostic.span) {
        if span.start.line > 0 && span.start.column > 0 {
            return Some((span.start.line, span.start.column));
        }
    }
    // sqlparser ends its messages with "at Line: 1, Column: 8".
    let message = error.find_root().to_string();
    let at = message.rfind("at Line: ")?;
    let rest = &message[at + "at Line: ".len()..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((line.trim().parse().ok()?, column.parse().ok()?))
}

/// Postgres' error position: 1-based, in characters, into the whole statement text.
fn char_position(sql: &str, line: u64, column: u64) -> Option<usize> {
    let mut position = 0usize;
    for (index, text) in sql.split('\n').enumerate() {
        if index as u64 + 1 == line {
            let column = usize::try_from(column).ok()?;
            return (column <= text.chars().count() + 1).then_some(position + column);
        }
        position += text.chars().count() + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_characters_across_lines() {
        assert_eq!(char_position("SELECT x", 1, 8), Some(8));
        assert_eq!(char_position("SELECT 1,\n  été", 2, 3), Some(13));
        assert_eq!(char_position("SELECT 1", 3, 1), None);
        assert_eq!(char_position("SELECT 1", 1, 100), None);
    }

    #[test]
    fn parser_messages_give_their_location() {
        let failure = DataFusionError::SQL(
            Box::new(datafusion::sql::sqlparser::parser::ParserError::ParserError("Expected: end of statement, found: x at Line: 1, Column: 10".into())),
            None,
        );
        assert_eq!(error_location(&failure), Some((1, 10)));
        assert_eq!(datafusion_code(&failure), sqlstate::SYNTAX_ERROR);
    }

    #[test]
    fn refused_statements_and_limits_have_their_codes() {
        assert_eq!(plan_code("DDL not supported: CreateMemoryTable"), sqlstate::READ_ONLY);
        assert_eq!(plan_code("table 'yottastore.public.nope' not found"), sqlstate::UNDEFINED_TABLE);
        let memory = QueryError::DataFusion(DataFusionError::ResourcesExhausted("Failed to allocate".into()));
        assert_eq!(query_error(&memory, None).code, sqlstate::OUT_OF_MEMORY);
        let timeout = QueryError::Timeout(std::time::Duration::from_millis(5));
        assert_eq!(query_error(&timeout, Some("SELECT 1")).code, sqlstate::QUERY_CANCELED);
    }
}
