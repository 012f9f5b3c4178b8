//! How many named prepared statements and portals a connection may hold. pgwire keeps each
//! until the client closes it, so a client parsing new names forever would grow the server's
//! memory without bound; past the budget, Parse and Bind of a new name fail (the client can
//! Close some and go on).

use std::collections::HashSet;

use pgwire::error::ErrorInfo;
use pgwire::messages::extendedquery::{TARGET_TYPE_BYTE_PORTAL, TARGET_TYPE_BYTE_STATEMENT};
use pgwire::messages::PgWireFrontendMessage;

use super::errors::{self, sqlstate};

/// Named statements, and named portals, per connection (pgx caches 512 statements, psycopg 100).
pub const NAMES_MAX: usize = 1024;

#[derive(Debug, Default)]
pub struct NameBudget {
    statements: HashSet<String>,
    portals: HashSet<String>,
}

impl NameBudget {
    /// Records the names `message` creates or closes; an error when a new one is over budget.
    pub fn admit(&mut self, message: &PgWireFrontendMessage) -> Result<(), ErrorInfo> {
        match message {
            PgWireFrontendMessage::Parse(parse) => Self::add(&mut self.statements, parse.name.as_deref(), "prepared statements"),
            PgWireFrontendMessage::Bind(bind) => Self::add(&mut self.portals, bind.portal_name.as_deref(), "portals"),
            PgWireFrontendMessage::Close(close) => {
                let names = match close.target_type {
                    TARGET_TYPE_BYTE_STATEMENT => &mut self.statements,
                    TARGET_TYPE_BYTE_PORTAL => &mut self.portals,
                    _ => return Ok(()),
                };
                if let Some(name) = close.name.as_deref() {
                    names.remove(name);
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn add(names: &mut HashSet<String>, name: Option<&str>, what: &str) -> Result<(), ErrorInfo> {
        // The unnamed statement and portal are replaced, never accumulated.
        let Some(name) = name.filter(|name| !name.is_empty()) else { return Ok(()) };
        if names.contains(name) {
            return Ok(());
        }
        if names.len() >= NAMES_MAX {
            return Err(errors::error(
                sqlstate::PROGRAM_LIMIT_EXCEEDED,
                format!("a connection holds at most {NAMES_MAX} named {what}; close some first"),
            ));
        }
        names.insert(name.to_string());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgwire::messages::extendedquery::{Close, Parse};

    fn parse(name: &str) -> PgWireFrontendMessage {
        PgWireFrontendMessage::Parse(Parse::new(Some(name.to_string()), "SELECT 1".into(), vec![]))
    }

    #[test]
    fn new_names_past_the_budget_fail_until_some_close() {
        let mut budget = NameBudget::default();
        for i in 0..NAMES_MAX {
            budget.admit(&parse(&format!("s{i}"))).unwrap();
        }
        budget.admit(&parse("s0")).unwrap();
        assert_eq!(budget.admit(&parse("one_more")).unwrap_err().code, sqlstate::PROGRAM_LIMIT_EXCEEDED);
        budget.admit(&PgWireFrontendMessage::Close(Close::new(TARGET_TYPE_BYTE_STATEMENT, Some("s1".into())))).unwrap();
        budget.admit(&parse("one_more")).unwrap();
        // The unnamed statement never counts.
        for _ in 0..10 {
            budget.admit(&PgWireFrontendMessage::Parse(Parse::new(None, "SELECT 1".into(), vec![]))).unwrap();
        }
    }
}
