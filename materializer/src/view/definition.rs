//! What a view's SELECT means for maintenance: its kind, its topic, the source columns it
//! names, and the SQL evaluated on each micro-batch of records.
//!
//! - Append view: the SELECT itself, run on each micro-batch (projection and filter per record).
//! - Upsert view (`WITH (key = 'col')`): the SELECT's items plus whether WHERE holds and the
//!   record's offset, with no WHERE: a record failing WHERE must still delete its key's row.
//! - Aggregate view (GROUP BY or aggregate calls): the group expressions and the aggregate
//!   arguments per record passing WHERE; the aggregation itself is folded into incremental
//!   accumulators (`aggregate.rs`), never recomputed.

use std::collections::BTreeSet;
use std::ops::ControlFlow;

use datafusion::sql::sqlparser::ast::{
    visit_expressions, Expr, FunctionArg, FunctionArgExpr, FunctionArguments, GroupByExpr, ObjectNamePart, Query, SelectItem,
    SetExpr, Statement, TableFactor, Value,
};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;

use super::ViewError;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ViewKind {
    Append,
    Upsert,
    Aggregate,
}

impl ViewKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ViewKind::Append => "append",
            ViewKind::Upsert => "upsert",
            ViewKind::Aggregate => "aggregate",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AggregateFunction {
    CountStar,
    Count,
    Sum,
    Min,
    Max,
    Avg,
}

/// An output column of an aggregate view: a group expression's value, or an aggregate's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutputItem {
    Group(usize),
    Aggregate(usize),
}

#[derive(Clone, Debug)]
pub struct AggregateLayout {
    pub groups: usize,
    /// Aggregate `j` reads eval column `groups + j` (count(*) reads nothing but counts rows).
    pub functions: Vec<AggregateFunction>,
    pub outputs: Vec<OutputItem>,
}

/// Metadata columns every record offers besides its JSON fields.
pub const PARTITION_COLUMN: &str = "_partition";
pub const OFFSET_COLUMN: &str = "_offset";
pub const TIMESTAMP_COLUMN: &str = "_timestamp";
pub const KEY_COLUMN: &str = "_key";
pub const METADATA_COLUMNS: [&str; 4] = [PARTITION_COLUMN, OFFSET_COLUMN, TIMESTAMP_COLUMN, KEY_COLUMN];

/// Names of the extra columns of an upsert view's evaluation.
pub const PASS_COLUMN: &str = "__yotta_pass";
pub const RECORD_OFFSET_COLUMN: &str = "__yotta_offset";

/// SQL text of a view definition is bounded (the query layer bounds statements as well).
const SELECT_BYTES_MAX: usize = 64 << 10;

#[derive(Clone, Debug)]
pub struct ViewDefinition {
    pub name: String,
    /// The CREATE statement as written.
    pub sql: String,
    pub topic: String,
    pub kind: ViewKind,
    /// Upsert views: the output column holding the key.
    pub key_column: Option<String>,
    /// Source columns the SELECT names: NULL until the topic's records show them.
    pub referenced: BTreeSet<String>,
    /// Run against a table named like the topic holding one micro-batch.
    pub eval_sql: String,
    /// The SELECT as written (the output names of aggregate views are planned from it).
    pub select_sql: String,
    pub aggregate: Option<AggregateLayout>,
}

impl ViewDefinition {
    /// Analyses `CREATE MATERIALIZED VIEW name [WITH (key = ..)] AS SELECT ...`.
    pub fn analyse(name: &str, key: Option<&str>, sql: &str) -> Result<ViewDefinition, ViewError> {
        let statements = Parser::parse_sql(&GenericDialect {}, sql).map_err(|error| ViewError::Invalid(error.to_string()))?;
        let [Statement::CreateView(create)] = statements.as_slice() else {
            return Err(ViewError::Invalid("expected one CREATE MATERIALIZED VIEW statement".into()));
        };
        analyse_query(name, key, sql, &create.query)
    }
}

fn invalid(message: impl Into<String>) -> ViewError {
    ViewError::Invalid(message.into())
}

fn analyse_query(name: &str, key: Option<&str>, sql: &str, query: &Query) -> Result<ViewDefinition, ViewError> {
    let select_sql = query.to_string();
    if select_sql.len() > SELECT_BYTES_MAX {
        return Err(invalid(format!("the SELECT is {} bytes, more than the limit of {SELECT_BYTES_MAX}", select_sql.len())));
    }
    if query.with.is_some() || query.order_by.is_some() || query.limit_clause.is_some() || query.fetch.is_some() {
        return Err(invalid("a view's SELECT has no WITH, ORDER BY, LIMIT or FETCH: a view is maintained record by record"));
    }
    let SetExpr::Select(select) = query.body.as_ref() else {
        return Err(invalid("a view is one SELECT ... FROM topic (no UNION, VALUES or nested query)"));
    };
    if select.distinct.is_some() || select.having.is_some() || select.top.is_some() || select.qualify.is_some() || !select.named_window.is_empty() || select.into.is_some() {
        return Err(invalid("a view's SELECT has no DISTINCT, HAVING, TOP, QUALIFY, WINDOW or INTO"));
    }
    let [from] = select.from.as_slice() else {
        return Err(invalid(format!("a view reads exactly one topic: FROM topic (found {} FROM items)", select.from.len())));
    };
    if !from.joins.is_empty() {
        return Err(invalid("a view reads exactly one topic: no JOIN"));
    }
    let (topic, alias) = match &from.relation {
        TableFactor::Table { name: table, alias, args: None, .. } => {
            let parts: Vec<String> = table.0.iter().filter_map(|part| match part {
                ObjectNamePart::Identifier(ident) => Some(ident.value.clone()),
                ObjectNamePart::Function(_) => None,
            }).collect();
            let topic = match parts.as_slice() {
                [topic] | [_, topic] | [_, _, topic] => topic.clone(),
                _ => return Err(invalid(format!("bad topic name {table}"))),
            };
            (topic, alias.as_ref().map(|alias| alias.name.value.clone()))
        }
        other => return Err(invalid(format!("a view reads a topic, not {other}"))),
    };
    let from_sql = from.to_string();
    let where_sql = select.selection.as_ref().map(|selection| selection.to_string());

    // Source columns named anywhere in the SELECT, minus its own aliases.
    let aliases: BTreeSet<String> = select
        .projection
        .iter()
        .filter_map(|item| match item {
            SelectItem::ExprWithAlias { alias, .. } => Some(alias.value.clone()),
            _ => None,
        })
        .collect();
    let mut referenced = BTreeSet::new();
    let _ = visit_expressions(query, |expr| {
        match expr {
            Expr::Identifier(ident) => {
                referenced.insert(ident.value.clone());
            }
            Expr::CompoundIdentifier(parts) => {
                if let Some(last) = parts.last() {
                    referenced.insert(last.value.clone());
                }
            }
            _ => {}
        }
        ControlFlow::<()>::Continue(())
    });
    referenced.retain(|column| !aliases.contains(column) && !METADATA_COLUMNS.contains(&column.as_str()));
    for column in &referenced {
        if column.len() > 1024 {
            return Err(invalid("a column name is longer than 1024 bytes"));
        }
    }
    let _ = alias;

    let group_exprs: Vec<Expr> = match &select.group_by {
        GroupByExpr::Expressions(exprs, modifiers) if modifiers.is_empty() => exprs.clone(),
        GroupByExpr::Expressions(..) => return Err(invalid("GROUP BY ROLLUP/CUBE/GROUPING SETS modifiers are not supported")),
        GroupByExpr::All(_) => return Err(invalid("GROUP BY ALL is not supported: name the group expressions")),
    };
    let has_aggregates = select.projection.iter().any(|item| item_expr(item).is_some_and(contains_aggregate));
    let kind = if !group_exprs.is_empty() || has_aggregates {
        if key.is_some() {
            return Err(invalid("an aggregate view (GROUP BY or aggregate functions) takes no key: its rows are its groups"));
        }
        ViewKind::Aggregate
    } else if key.is_some() {
        ViewKind::Upsert
    } else {
        ViewKind::Append
    };

    let items: Vec<String> = select.projection.iter().map(ToString::to_string).collect();
    let where_clause = where_sql.as_ref().map(|condition| format!(" WHERE {condition}")).unwrap_or_default();
    let mut aggregate = None;
    let eval_sql = match kind {
        ViewKind::Append => format!("SELECT {} FROM {from_sql}{where_clause}", items.join(", ")),
        ViewKind::Upsert => {
            let key = key.expect("upsert views have a key");
            let names_key = select.projection.iter().any(|item| match item {
                SelectItem::UnnamedExpr(Expr::Identifier(ident)) => ident.value == key,
                SelectItem::ExprWithAlias { alias, .. } => alias.value == key,
                SelectItem::Wildcard(_) | SelectItem::QualifiedWildcard(..) => true,
                _ => false,
            });
            if !names_key {
                return Err(invalid(format!("the key column {key:?} must be in the SELECT list (as a column or an alias)")));
            }
            let pass = where_sql.map(|condition| format!("({condition}) IS TRUE")).unwrap_or_else(|| "true".to_string());
            format!(
                "SELECT {}, {pass} AS \"{PASS_COLUMN}\", \"{OFFSET_COLUMN}\" AS \"{RECORD_OFFSET_COLUMN}\" FROM {from_sql}",
                items.join(", ")
            )
        }
        ViewKind::Aggregate => {
            let layout = aggregate_layout(&select.projection, &group_exprs)?;
            let mut columns: Vec<String> = layout.0.iter().enumerate().map(|(i, expr)| format!("{expr} AS \"__yotta_g{i}\"")).collect();
            for (j, (function, argument)) in layout.1.iter().enumerate() {
                if *function != AggregateFunction::CountStar {
                    let argument = argument.as_ref().expect("functions other than count(*) have an argument");
                    columns.push(format!("{argument} AS \"__yotta_a{j}\""));
                }
            }
            if columns.is_empty() {
                columns.push("1 AS \"__yotta_one\"".to_string());
            }
            let functions: Vec<AggregateFunction> = layout.1.iter().map(|(function, _)| *function).collect();
            aggregate = Some(AggregateLayout { groups: layout.0.len(), functions, outputs: layout.2 });
            format!("SELECT {} FROM {from_sql}{where_clause}", columns.join(", "))
        }
    };
    Ok(ViewDefinition {
        name: name.to_string(),
        sql: sql.to_string(),
        topic,
        kind,
        key_column: key.map(str::to_string),
        referenced,
        eval_sql,
        select_sql,
        aggregate,
    })
}

fn item_expr(item: &SelectItem) -> Option<&Expr> {
    match item {
        SelectItem::UnnamedExpr(expr) | SelectItem::ExprWithAlias { expr, .. } => Some(expr),
        _ => None,
    }
}

/// `count(*)`, `count(x)`, `sum(x)`, `min(x)`, `max(x)`, `avg(x)`: the function and argument.
fn aggregate_call(expr: &Expr) -> Option<Result<(AggregateFunction, Option<Expr>), ViewError>> {
    let Expr::Function(function) = expr else { return None };
    let name = function.name.to_string().to_ascii_lowercase();
    let kind = match name.as_str() {
        "count" => AggregateFunction::Count,
        "sum" => AggregateFunction::Sum,
        "min" => AggregateFunction::Min,
        "max" => AggregateFunction::Max,
        "avg" | "mean" => AggregateFunction::Avg,
        _ => return None,
    };
    let check = || {
        if function.filter.is_some() || function.over.is_some() || !function.within_group.is_empty() || function.null_treatment.is_some() {
            return Err(invalid(format!("{expr}: FILTER, OVER, WITHIN GROUP and null treatment are not supported in views")));
        }
        let FunctionArguments::List(list) = &function.args else {
            return Err(invalid(format!("{expr}: expected one argument")));
        };
        if list.duplicate_treatment.is_some() || !list.clauses.is_empty() {
            return Err(invalid(format!("{expr}: DISTINCT and clauses inside aggregate calls are not supported in views")));
        }
        match list.args.as_slice() {
            [FunctionArg::Unnamed(FunctionArgExpr::Wildcard)] if kind == AggregateFunction::Count => Ok((AggregateFunction::CountStar, None)),
            [FunctionArg::Unnamed(FunctionArgExpr::Expr(argument))] => {
                if contains_aggregate(argument) {
                    return Err(invalid(format!("{expr}: aggregates cannot be nested")));
                }
                Ok((kind, Some(argument.clone())))
            }
            _ => Err(invalid(format!("{expr}: expected one argument"))),
        }
    };
    Some(check())
}

fn contains_aggregate(expr: &Expr) -> bool {
    let mut found = false;
    let _ = visit_expressions(expr, |inner| {
        if aggregate_call(inner).is_some() {
            found = true;
            return ControlFlow::Break(());
        }
        ControlFlow::Continue(())
    });
    found
}

type Layout = (Vec<Expr>, Vec<(AggregateFunction, Option<Expr>)>, Vec<OutputItem>);

fn aggregate_layout(projection: &[SelectItem], group_by: &[Expr]) -> Result<Layout, ViewError> {
    // GROUP BY items may name a SELECT item by position or alias.
    let mut groups: Vec<Expr> = Vec::with_capacity(group_by.len());
    for expr in group_by {
        let resolved = match expr {
            Expr::Value(value) => match &value.value {
                Value::Number(number, _) => {
                    let position: usize = number.parse().map_err(|_| invalid(format!("GROUP BY {number}: not a SELECT position")))?;
                    let item = position.checked_sub(1).and_then(|index| projection.get(index)).and_then(item_expr);
                    item.cloned().ok_or_else(|| invalid(format!("GROUP BY {position}: the SELECT has no such item")))?
                }
                _ => expr.clone(),
            },
            Expr::Identifier(ident) => projection
                .iter()
                .find_map(|item| match item {
                    SelectItem::ExprWithAlias { expr, alias } if alias.value == ident.value => Some(expr.clone()),
                    _ => None,
                })
                .unwrap_or_else(|| expr.clone()),
            _ => expr.clone(),
        };
        if contains_aggregate(&resolved) {
            return Err(invalid(format!("GROUP BY {resolved}: aggregates cannot be grouped by")));
        }
        groups.push(resolved);
    }
    let mut functions = Vec::new();
    let mut outputs = Vec::new();
    for item in projection {
        let Some(expr) = item_expr(item) else {
            return Err(invalid("an aggregate view's SELECT lists its columns: no *"));
        };
        if let Some(call) = aggregate_call(expr) {
            functions.push(call?);
            outputs.push(OutputItem::Aggregate(functions.len() - 1));
            continue;
        }
        let text = expr.to_string();
        match groups.iter().position(|group| group.to_string() == text) {
            Some(group) => outputs.push(OutputItem::Group(group)),
            None => {
                return Err(invalid(format!(
                    "{expr}: each item of an aggregate view's SELECT is a GROUP BY expression or one of count, sum, min, max, avg (not an expression over them)"
                )))
            }
        }
    }
    Ok((groups, functions, outputs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn analyse(sql: &str, key: Option<&str>) -> Result<ViewDefinition, ViewError> {
        ViewDefinition::analyse("v", key, sql)
    }

    #[test]
    fn kinds_and_eval_sql() {
        let append = analyse("CREATE MATERIALIZED VIEW v AS SELECT vehicle_id, \"engine.temp\" AS temp FROM vehicles WHERE status = 'maintenance'", None).unwrap();
        assert_eq!(append.kind, ViewKind::Append);
        assert_eq!(append.topic, "vehicles");
        assert_eq!(append.referenced.iter().map(String::as_str).collect::<Vec<_>>(), ["engine.temp", "status", "vehicle_id"]);
        let upsert = analyse("CREATE MATERIALIZED VIEW v WITH (key = 'vehicle_id') AS SELECT vehicle_id, speed FROM vehicles WHERE speed > 3", Some("vehicle_id")).unwrap();
        assert_eq!(upsert.kind, ViewKind::Upsert);
        assert!(upsert.eval_sql.contains("(speed > 3) IS TRUE AS \"__yotta_pass\""), "{}", upsert.eval_sql);
        let aggregate = analyse("CREATE MATERIALIZED VIEW v AS SELECT region, count(*) AS n, avg(speed) FROM vehicles GROUP BY 1", None).unwrap();
        assert_eq!(aggregate.kind, ViewKind::Aggregate);
        let layout = aggregate.aggregate.unwrap();
        assert_eq!(layout.groups, 1);
        assert_eq!(layout.functions, [AggregateFunction::CountStar, AggregateFunction::Avg]);
        assert_eq!(layout.outputs, [OutputItem::Group(0), OutputItem::Aggregate(0), OutputItem::Aggregate(1)]);
        assert_eq!(aggregate.eval_sql, "SELECT region AS \"__yotta_g0\", speed AS \"__yotta_a1\" FROM vehicles");
    }

    #[test]
    fn refusals_say_why() {
        let error = |sql: &str, key: Option<&str>| analyse(sql, key).unwrap_err().to_string();
        assert!(error("CREATE MATERIALIZED VIEW v AS SELECT a FROM t ORDER BY a", None).contains("ORDER BY"));
        assert!(error("CREATE MATERIALIZED VIEW v AS SELECT a FROM t JOIN u ON t.a = u.a", None).contains("JOIN"));
        assert!(error("CREATE MATERIALIZED VIEW v AS SELECT a, b, count(*) FROM t GROUP BY a", None).contains("GROUP BY expression"));
        assert!(error("CREATE MATERIALIZED VIEW v AS SELECT sum(a) + 1 FROM t", None).contains("GROUP BY expression"));
        assert!(error("CREATE MATERIALIZED VIEW v AS SELECT count(DISTINCT a) FROM t", None).contains("DISTINCT"));
        assert!(error("CREATE MATERIALIZED VIEW v AS SELECT a FROM t", Some("id")).contains("must be in the SELECT list"));
        assert!(error("CREATE MATERIALIZED VIEW v AS SELECT a, count(*) FROM t GROUP BY a", Some("a")).contains("takes no key"));
        assert!(error("CREATE MATERIALIZED VIEW v AS SELECT a FROM t UNION SELECT a FROM u", None).contains("UNION"));
    }
}
