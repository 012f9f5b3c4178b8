//! Recognises the view statements among SQL text: `CREATE MATERIALIZED VIEW`, `CREATE INDEX`,
//! `DROP MATERIALIZED VIEW`, `DROP INDEX` (parsed by DataFusion's sqlparser) and `SHOW
//! MATERIALIZED VIEWS` (matched here: sqlparser has no such statement). Anything else is not
//! ours (`None`), so the query layer plans it as usual.

use datafusion::sql::sqlparser::ast::{
    CreateTableOptions, Expr, ObjectName, ObjectNamePart, ObjectType, SqlOption, Statement, Value,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use super::ViewError;

/// The columns of `SHOW MATERIALIZED VIEWS`.
pub const SHOW_VIEWS_COLUMNS: [&str; 5] = ["name", "kind", "topic", "indexes", "definition"];

/// One view statement, parsed.
#[derive(Clone, Debug, PartialEq)]
pub enum ViewStatement {
    CreateView {
        name: String,
        /// `WITH (key = 'col')`: an upsert view keyed by that output column.
        key: Option<String>,
        if_not_exists: bool,
        /// The whole statement as written: what the definitions file keeps.
        sql: String,
    },
    CreateIndex { name: String, view: String, column: String, if_not_exists: bool },
    DropView { name: String, if_exists: bool },
    DropIndex { name: String, if_exists: bool },
    ShowViews,
}

impl ViewStatement {
    /// The columns the statement answers, known before it runs (what the Postgres front end's
    /// Describe reports): `SHOW MATERIALIZED VIEWS` lists the views, every other statement
    /// answers one `result` row saying what was done.
    pub fn answer_schema(&self) -> SchemaRef {
        match self {
            ViewStatement::ShowViews => utf8_schema(&SHOW_VIEWS_COLUMNS),
            _ => result_schema(),
        }
    }
}

/// The one `result` column of every view statement but `SHOW MATERIALIZED VIEWS`.
pub fn result_schema() -> SchemaRef {
    utf8_schema(&["result"])
}

fn utf8_schema(columns: &[&str]) -> SchemaRef {
    Arc::new(Schema::new(columns.iter().map(|name| Field::new(*name, DataType::Utf8, false)).collect::<Vec<_>>()))
}

/// The first words of a statement, upper case, SQL comments and parentheses not considered
/// (a view statement starts with plain keywords).
fn leading_words(sql: &str, count: usize) -> Vec<String> {
    sql.split(|c: char| c.is_whitespace() || c == ';').filter(|word| !word.is_empty()).take(count).map(str::to_ascii_uppercase).collect()
}

/// `None` when `sql` is not a view statement.
pub fn parse_statement(sql: &str) -> Option<Result<ViewStatement, ViewError>> {
    let words = leading_words(sql, 3);
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["SHOW", "MATERIALIZED", "VIEWS"] => {
            if leading_words(sql, 4).len() > 3 {
                return Some(Err(ViewError::Invalid("SHOW MATERIALIZED VIEWS takes nothing after it".into())));
            }
            Some(Ok(ViewStatement::ShowViews))
        }
        ["CREATE", "MATERIALIZED", "VIEW"]
        | ["CREATE", "INDEX", ..]
        | ["CREATE", "UNIQUE", "INDEX"]
        | ["DROP", "MATERIALIZED", "VIEW"]
        | ["DROP", "INDEX", ..] => Some(parse_ddl(sql)),
        _ => None,
    }
}

fn parse_ddl(sql: &str) -> Result<ViewStatement, ViewError> {
    let mut statements = Parser::parse_sql(&GenericDialect {}, sql).map_err(|error| ViewError::Invalid(error.to_string()))?;
    if statements.len() != 1 {
        return Err(ViewError::Invalid(format!("expected one statement, found {}", statements.len())));
    }
    match statements.remove(0) {
        Statement::CreateView(create) => {
            if !create.materialized {
                return Err(ViewError::Invalid("only CREATE MATERIALIZED VIEW is supported".into()));
            }
            if create.or_replace || create.or_alter || create.temporary || !create.columns.is_empty() || create.to.is_some() {
                return Err(ViewError::Invalid(
                    "CREATE MATERIALIZED VIEW takes a name, WITH (key = 'col') and AS SELECT only (no OR REPLACE, TEMPORARY, column list or TO)".into(),
                ));
            }
            let name = object_name(&create.name, "view")?;
            let key = match &create.options {
                CreateTableOptions::None => None,
                CreateTableOptions::With(options) => view_key(options)?,
                other => return Err(ViewError::Invalid(format!("unsupported view options {other}: only WITH (key = 'col')"))),
            };
            Ok(ViewStatement::CreateView { name, key, if_not_exists: create.if_not_exists, sql: sql.trim().trim_end_matches(';').trim().to_string() })
        }
        Statement::CreateIndex(create) => {
            let name = match &create.name {
                Some(name) => object_name(name, "index")?,
                None => return Err(ViewError::Invalid("CREATE INDEX needs a name: CREATE INDEX name ON view (column)".into())),
            };
            if create.unique || create.predicate.is_some() || create.using.is_some() || !create.include.is_empty() || !create.with.is_empty() {
                return Err(ViewError::Invalid("CREATE INDEX name ON view (column): no UNIQUE, USING, INCLUDE, WITH or WHERE".into()));
            }
            let view = object_name(&create.table_name, "view")?;
            let [column] = create.columns.as_slice() else {
                return Err(ViewError::Invalid(format!("an index is on exactly one column, not {}", create.columns.len())));
            };
            let column = match &column.column.expr {
                Expr::Identifier(ident) => ident.value.clone(),
                other => return Err(ViewError::Invalid(format!("an index is on a column of the view, not on the expression {other}"))),
            };
            Ok(ViewStatement::CreateIndex { name, view, column, if_not_exists: create.if_not_exists })
        }
        Statement::Drop { object_type, if_exists, names, cascade, .. } => {
            let [name] = names.as_slice() else {
                return Err(ViewError::Invalid(format!("drop one {object_type} at a time, not {}", names.len())));
            };
            if cascade {
                return Err(ViewError::Invalid("CASCADE is not supported (dropping a view drops its indexes)".into()));
            }
            match object_type {
                ObjectType::MaterializedView => Ok(ViewStatement::DropView { name: object_name(name, "view")?, if_exists }),
                ObjectType::Index => Ok(ViewStatement::DropIndex { name: object_name(name, "index")?, if_exists }),
                other => Err(ViewError::Invalid(format!("DROP {other} is not supported"))),
            }
        }
        other => Err(ViewError::Invalid(format!("not a view statement: {other}"))),
    }
}

/// A view or index name: one identifier, or `public.name` (views live in schema `public`).
fn object_name(name: &ObjectName, what: &str) -> Result<String, ViewError> {
    let parts: Vec<&str> = name
        .0
        .iter()
        .map(|part| match part {
            ObjectNamePart::Identifier(ident) => Ok(ident.value.as_str()),
            ObjectNamePart::Function(_) => Err(ViewError::Invalid(format!("bad {what} name {name}"))),
        })
        .collect::<Result<_, _>>()?;
    let name = match parts.as_slice() {
        [name] | ["public", name] => name.to_string(),
        _ => return Err(ViewError::Invalid(format!("a {what} name is one identifier (views live in schema public), not {name}"))),
    };
    validate_name(&name, what)?;
    Ok(name)
}

/// Names become directory names under `<data-dir>/views/`: keep them to a safe alphabet.
pub fn validate_name(name: &str, what: &str) -> Result<(), ViewError> {
    const NAME_BYTES_MAX: usize = 128;
    let ok = !name.is_empty()
        && name.len() <= NAME_BYTES_MAX
        && name.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
        && !name.starts_with('-');
    if ok {
        Ok(())
    } else {
        Err(ViewError::Invalid(format!(
            "bad {what} name {name:?}: 1 to {NAME_BYTES_MAX} letters, digits, '_' or '-', not starting with '-'"
        )))
    }
}

fn view_key(options: &[SqlOption]) -> Result<Option<String>, ViewError> {
    let mut key = None;
    for option in options {
        match option {
            SqlOption::KeyValue { key: name, value } if name.value.eq_ignore_ascii_case("key") => {
                let column = match value {
                    Expr::Value(value) => match &value.value {
                        Value::SingleQuotedString(text) | Value::DoubleQuotedString(text) => text.clone(),
                        other => return Err(ViewError::Invalid(format!("key = {other}: the key is a column name in quotes, e.g. key = 'id'"))),
                    },
                    Expr::Identifier(ident) => ident.value.clone(),
                    other => return Err(ViewError::Invalid(format!("key = {other}: the key is a column name, e.g. key = 'id'"))),
                };
                if key.replace(column).is_some() {
                    return Err(ViewError::Invalid("key is given twice".into()));
                }
            }
            other => return Err(ViewError::Invalid(format!("unknown view option {other}: only key = 'col'"))),
        }
    }
    Ok(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_view_statements_only() {
        assert_eq!(parse_statement("select 1"), None);
        assert_eq!(parse_statement("CREATE TABLE t (a int)"), None);
        assert_eq!(parse_statement(" show  materialized views ;"), Some(Ok(ViewStatement::ShowViews)));
        let create = parse_statement("CREATE MATERIALIZED VIEW latest WITH (key = 'vehicle_id') AS SELECT vehicle_id, speed FROM vehicles");
        match create {
            Some(Ok(ViewStatement::CreateView { name, key, .. })) => {
                assert_eq!(name, "latest");
                assert_eq!(key.as_deref(), Some("vehicle_id"));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            parse_statement("create index by_region on latest (region)"),
            Some(Ok(ViewStatement::CreateIndex { name: "by_region".into(), view: "latest".into(), column: "region".into(), if_not_exists: false }))
        );
        assert_eq!(parse_statement("DROP MATERIALIZED VIEW IF EXISTS latest"), Some(Ok(ViewStatement::DropView { name: "latest".into(), if_exists: true })));
        assert_eq!(parse_statement("drop index by_region"), Some(Ok(ViewStatement::DropIndex { name: "by_region".into(), if_exists: false })));
    }

    #[test]
    fn refuses_with_clear_messages() {
        let error = |sql: &str| match parse_statement(sql) {
            Some(Err(error)) => error.to_string(),
            other => panic!("{sql}: {other:?}"),
        };
        assert!(error("CREATE MATERIALIZED VIEW v WITH (colour = 'red') AS SELECT a FROM t").contains("unknown view option"));
        assert!(error("CREATE INDEX ON v (a)").contains("needs a name"));
        assert!(error("CREATE INDEX i ON v (a, b)").contains("exactly one column"));
        assert!(error("CREATE MATERIALIZED VIEW \"../x\" AS SELECT a FROM t").contains("bad view name"));
        assert!(error("SHOW MATERIALIZED VIEWS now").contains("nothing after"));
        assert!(error("DROP MATERIALIZED VIEW a, b").contains("one"));
    }
}
