//! What a topic scan can skip: the partitions, offsets and timestamps a query's filters allow.
//!
//! Filters are pushed down as *Inexact*: DataFusion still applies every filter to the rows we
//! return, so the bounds only have to be a superset of what matches. That keeps this module
//! simple and its mistakes harmless to correctness (a bound that is too wide reads more, never
//! returns wrong rows); only a bound that is too *narrow* would be a bug, and the tests check
//! exactly that.

use std::collections::BTreeSet;

use datafusion::common::ScalarValue;
use datafusion::logical_expr::{Between, BinaryExpr, Expr, Operator};

/// Partition lists longer than this are not used for pruning (the scan reads every partition).
const PARTITION_LIST_MAX: usize = 4096;

/// Inclusive bounds on a topic scan. `None`/MIN/MAX: unbounded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScanBounds {
    pub partitions: Option<BTreeSet<i32>>,
    pub offset_min: i64,
    pub offset_max: i64,
    pub timestamp_ms_min: i64,
    pub timestamp_ms_max: i64,
}

impl Default for ScanBounds {
    fn default() -> Self {
        ScanBounds {
            partitions: None,
            offset_min: i64::MIN,
            offset_max: i64::MAX,
            timestamp_ms_min: i64::MIN,
            timestamp_ms_max: i64::MAX,
        }
    }
}

/// The columns bounds apply to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Bounded {
    Partition,
    Offset,
    Timestamp,
}

impl ScanBounds {
    /// The bounds implied by the conjunction of `filters` (each a predicate DataFusion pushed
    /// down; the ones this module does not understand are ignored).
    pub fn from_filters(filters: &[Expr]) -> ScanBounds {
        let mut bounds = ScanBounds::default();
        for filter in filters {
            bounds.apply(filter);
        }
        bounds
    }

    /// Whether `filter` narrows a scan (so it is worth pushing down).
    pub fn understands(filter: &Expr) -> bool {
        let mut probe = ScanBounds::default();
        probe.apply(filter);
        probe != ScanBounds::default() || matches!(filter, Expr::BinaryExpr(BinaryExpr { op: Operator::And, .. }))
    }

    /// True when no row can match (an empty range or partition set).
    pub fn is_empty(&self) -> bool {
        self.offset_min > self.offset_max
            || self.timestamp_ms_min > self.timestamp_ms_max
            || self.partitions.as_ref().is_some_and(BTreeSet::is_empty)
    }

    fn apply(&mut self, filter: &Expr) {
        match filter {
            Expr::BinaryExpr(BinaryExpr { left, op: Operator::And, right }) => {
                self.apply(left);
                self.apply(right);
            }
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                if let (Some(column), Some(value)) = (bounded_column(left), literal_for(right)) {
                    self.compare(column, *op, value);
                } else if let (Some(value), Some(column)) = (literal_for(left), bounded_column(right)) {
                    if let Some(op) = op.swap() {
                        self.compare(column, op, value);
                    }
                }
            }
            Expr::Between(Between { expr, negated: false, low, high }) => {
                if let (Some(column), Some(low), Some(high)) = (bounded_column(expr), literal_for(low), literal_for(high)) {
                    self.compare(column, Operator::GtEq, low);
                    self.compare(column, Operator::LtEq, high);
                }
            }
            Expr::InList(in_list) if !in_list.negated && in_list.list.len() <= PARTITION_LIST_MAX => {
                if bounded_column(&in_list.expr) == Some(Bounded::Partition) {
                    let values: Option<BTreeSet<i32>> = in_list
                        .list
                        .iter()
                        .map(|item| literal_for(item).map(|value| i32::try_from(value.value).unwrap_or(-1)))
                        .collect();
                    if let Some(values) = values {
                        self.restrict_partitions(values);
                    }
                }
            }
            _ => {}
        }
    }

    fn compare(&mut self, column: Bounded, op: Operator, literal: Literal) {
        let (min, max) = match column {
            Bounded::Partition => {
                if op == Operator::Eq {
                    // A partition that cannot be an i32 matches nothing: -1 is never a partition.
                    self.restrict_partitions(BTreeSet::from([i32::try_from(literal.value).unwrap_or(-1)]));
                }
                return;
            }
            Bounded::Offset => (&mut self.offset_min, &mut self.offset_max),
            Bounded::Timestamp => (&mut self.timestamp_ms_min, &mut self.timestamp_ms_max),
        };
        // A literal finer than the column (e.g. microseconds against milliseconds) was rounded
        // down; `inexact` widens the bound by one unit where that rounding could matter.
        let value = literal.value;
        match op {
            Operator::Eq => {
                *min = (*min).max(value);
                *max = (*max).min(if literal.inexact { value.saturating_add(1) } else { value });
            }
            Operator::Gt => *min = (*min).max(if literal.inexact { value } else { value.saturating_add(1) }),
            Operator::GtEq => *min = (*min).max(value),
            Operator::Lt => *max = (*max).min(if literal.inexact { value } else { value.saturating_sub(1) }),
            Operator::LtEq => *max = (*max).min(if literal.inexact { value.saturating_add(1) } else { value }),
            _ => {}
        }
    }

    fn restrict_partitions(&mut self, allowed: BTreeSet<i32>) {
        self.partitions = Some(match self.partitions.take() {
            None => allowed,
            Some(current) => current.intersection(&allowed).copied().collect(),
        });
    }
}

fn bounded_column(expr: &Expr) -> Option<Bounded> {
    let expr = strip_casts(expr);
    match expr {
        Expr::Column(column) => match column.name.as_str() {
            "partition" => Some(Bounded::Partition),
            "offset" => Some(Bounded::Offset),
            "timestamp" => Some(Bounded::Timestamp),
            _ => None,
        },
        _ => None,
    }
}

/// Casts that keep order and value for our integer and timestamp columns are looked through;
/// anything else (a function, arithmetic) is not a bound.
fn strip_casts(expr: &Expr) -> &Expr {
    match expr {
        Expr::Cast(cast) if cast.field.data_type().is_integer() || cast.field.data_type().is_temporal() => strip_casts(&cast.expr),
        Expr::TryCast(cast) if cast.field.data_type().is_integer() || cast.field.data_type().is_temporal() => strip_casts(&cast.expr),
        other => other,
    }
}

/// A literal as an integer in the column's unit (milliseconds for timestamps).
#[derive(Clone, Copy, Debug)]
struct Literal {
    value: i64,
    /// The literal had a fraction below the unit, dropped by rounding down.
    inexact: bool,
}

fn literal_for(expr: &Expr) -> Option<Literal> {
    let Expr::Literal(value, _) = strip_casts(expr) else { return None };
    let exact = |value: i64| Some(Literal { value, inexact: false });
    let scaled = |value: i64, per_ms: i64| Some(Literal { value: value.div_euclid(per_ms), inexact: value.rem_euclid(per_ms) != 0 });
    match value {
        ScalarValue::Int8(Some(v)) => exact(i64::from(*v)),
        ScalarValue::Int16(Some(v)) => exact(i64::from(*v)),
        ScalarValue::Int32(Some(v)) => exact(i64::from(*v)),
        ScalarValue::Int64(Some(v)) => exact(*v),
        ScalarValue::UInt8(Some(v)) => exact(i64::from(*v)),
        ScalarValue::UInt16(Some(v)) => exact(i64::from(*v)),
        ScalarValue::UInt32(Some(v)) => exact(i64::from(*v)),
        ScalarValue::UInt64(Some(v)) => i64::try_from(*v).ok().and_then(exact),
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1000).and_then(exact),
        ScalarValue::TimestampMillisecond(Some(v), _) => exact(*v),
        ScalarValue::TimestampMicrosecond(Some(v), _) => scaled(*v, 1_000),
        ScalarValue::TimestampNanosecond(Some(v), _) => scaled(*v, 1_000_000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::logical_expr::{col, lit};

    fn ts_ms(value: i64) -> Expr {
        lit(ScalarValue::TimestampMillisecond(Some(value), Some("UTC".into())))
    }

    #[test]
    fn ranges_and_partitions_narrow_and_intersect() {
        let filters = [
            col("offset").gt_eq(lit(10i64)).and(col("offset").lt(lit(20i64))),
            col("partition").in_list(vec![lit(1i32), lit(2i32), lit(5i32)], false),
            col("partition").not_eq(lit(2i32)),
            lit(2i32).lt_eq(col("partition")),
            col("timestamp").between(ts_ms(1000), ts_ms(2000)),
        ];
        let bounds = ScanBounds::from_filters(&filters);
        assert_eq!(bounds.offset_min, 10);
        assert_eq!(bounds.offset_max, 19);
        assert_eq!(bounds.partitions, Some(BTreeSet::from([1, 2, 5])));
        assert_eq!((bounds.timestamp_ms_min, bounds.timestamp_ms_max), (1000, 2000));
        assert!(!bounds.is_empty());
        let disjoint = ScanBounds::from_filters(&[col("partition").eq(lit(1i32)), col("partition").eq(lit(2i32))]);
        assert!(disjoint.is_empty());
        let empty_range = ScanBounds::from_filters(&[col("offset").gt(lit(5i64)), col("offset").lt(lit(6i64))]);
        assert!(empty_range.is_empty());
    }

    #[test]
    fn what_it_does_not_understand_does_not_narrow() {
        let filters = [
            col("offset").gt(lit(10i64)).or(col("offset").lt(lit(2i64))),
            col("value").eq(lit("x")),
            (col("offset") + lit(1i64)).gt(lit(100i64)),
            col("partition").in_list(vec![lit(1i32)], true),
        ];
        assert_eq!(ScanBounds::from_filters(&filters), ScanBounds::default());
        assert!(!ScanBounds::understands(&filters[0]));
        assert!(ScanBounds::understands(&col("offset").lt(lit(3i64))));
    }

    #[test]
    fn finer_timestamps_round_outwards() {
        let micros = |v: i64| lit(ScalarValue::TimestampMicrosecond(Some(v), Some("UTC".into())));
        // timestamp > 1500 µs: rows at 1 ms (1000 µs) do not match, rows at 2 ms do; the bound
        // must keep 1 ms or later, never skip 2 ms.
        let bounds = ScanBounds::from_filters(&[col("timestamp").gt(micros(1500)), col("timestamp").lt_eq(micros(4500))]);
        assert!(bounds.timestamp_ms_min <= 2 && bounds.timestamp_ms_max >= 4);
        let exact = ScanBounds::from_filters(&[col("timestamp").gt(micros(1000))]);
        assert_eq!(exact.timestamp_ms_min, 2);
    }
}
