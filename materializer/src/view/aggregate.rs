//! Incremental aggregate accumulators: each record passing WHERE folds its argument into its
//! group's accumulators; results are read off them. Nothing is ever recomputed from the rows.
//!
//! One accumulator shape serves every function: a count of the values folded (rows for
//! count(*), non-null values otherwise), a sum kept as an integer until a non-integer arrives
//! (then as a float, as DataFusion's sum gives Int64 for integer input and Float64 otherwise),
//! and the extreme value for min and max. avg = sum / count.

use std::cmp::Ordering;

use datafusion::arrow::datatypes::DataType;
use datafusion::common::ScalarValue;

use super::definition::AggregateFunction;
use super::types::{cast_value, widen};

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Accumulator {
    pub count: i64,
    pub int_sum: Option<i64>,
    pub float_sum: Option<f64>,
    pub extreme: Option<ScalarValue>,
}

/// Why a value could not be folded (counted in the view's errors; the value is skipped).
#[derive(Debug, PartialEq)]
pub struct FoldError(pub String);

impl Accumulator {
    /// Folds one record's argument (`None` for count(*)).
    pub fn fold(&mut self, function: AggregateFunction, value: Option<&ScalarValue>) -> Result<(), FoldError> {
        let value = match (function, value) {
            (AggregateFunction::CountStar, _) => {
                self.count += 1;
                return Ok(());
            }
            (_, None) => return Ok(()),
            (_, Some(value)) if value.is_null() => return Ok(()),
            (_, Some(value)) => value,
        };
        match function {
            AggregateFunction::CountStar => unreachable!("handled above"),
            AggregateFunction::Count => self.count += 1,
            AggregateFunction::Sum | AggregateFunction::Avg => {
                let data_type = value.data_type();
                if data_type.is_integer() && self.float_sum.is_none() {
                    let integer = cast_value(value, &DataType::Int64);
                    let ScalarValue::Int64(Some(integer)) = integer else {
                        return Err(FoldError(format!("{function:?} of {value}: not an Int64")));
                    };
                    // DataFusion's integer sum wraps on overflow; so does this one.
                    self.int_sum = Some(self.int_sum.unwrap_or(0).wrapping_add(integer));
                } else if data_type.is_numeric() {
                    let ScalarValue::Float64(Some(float)) = cast_value(value, &DataType::Float64) else {
                        return Err(FoldError(format!("{function:?} of {value}: not a number")));
                    };
                    let carried = self.int_sum.take().map_or(0.0, |sum| sum as f64);
                    self.float_sum = Some(self.float_sum.unwrap_or(carried) + float);
                } else {
                    return Err(FoldError(format!("{} of a {data_type} value ({value}): not a number", if function == AggregateFunction::Sum { "sum" } else { "avg" })));
                }
                self.count += 1;
            }
            AggregateFunction::Min | AggregateFunction::Max => {
                let replace = match &self.extreme {
                    None => true,
                    Some(current) => {
                        let ordering = compare(value, current);
                        (function == AggregateFunction::Min && ordering == Ordering::Less)
                            || (function == AggregateFunction::Max && ordering == Ordering::Greater)
                    }
                };
                if replace {
                    self.extreme = Some(value.clone());
                }
                self.count += 1;
            }
        }
        Ok(())
    }

    pub fn result(&self, function: AggregateFunction) -> ScalarValue {
        match function {
            AggregateFunction::CountStar | AggregateFunction::Count => ScalarValue::Int64(Some(self.count)),
            AggregateFunction::Sum => match (self.float_sum, self.int_sum) {
                (Some(float), _) => ScalarValue::Float64(Some(float)),
                (None, Some(integer)) => ScalarValue::Int64(Some(integer)),
                (None, None) => ScalarValue::Int64(None),
            },
            AggregateFunction::Avg => match (self.float_sum, self.int_sum) {
                _ if self.count == 0 => ScalarValue::Float64(None),
                (Some(float), _) => ScalarValue::Float64(Some(float / self.count as f64)),
                (None, Some(integer)) => ScalarValue::Float64(Some(integer as f64 / self.count as f64)),
                (None, None) => ScalarValue::Float64(None),
            },
            AggregateFunction::Min | AggregateFunction::Max => self.extreme.clone().unwrap_or(ScalarValue::Null),
        }
    }
}

/// Orders two values, bringing them to a common type first when they differ (a column that
/// widened between them).
fn compare(a: &ScalarValue, b: &ScalarValue) -> Ordering {
    if let Some(ordering) = a.partial_cmp(b) {
        return ordering;
    }
    let common = widen(&a.data_type(), &b.data_type());
    cast_value(a, &common).partial_cmp(&cast_value(b, &common)).unwrap_or(Ordering::Equal)
}

/// The output type of `function` over arguments of `argument_type`.
pub fn result_type(function: AggregateFunction, argument_type: &DataType) -> DataType {
    match function {
        AggregateFunction::CountStar | AggregateFunction::Count => DataType::Int64,
        AggregateFunction::Sum if argument_type.is_integer() || *argument_type == DataType::Null => DataType::Int64,
        AggregateFunction::Sum | AggregateFunction::Avg => DataType::Float64,
        AggregateFunction::Min | AggregateFunction::Max => argument_type.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use AggregateFunction::*;

    #[test]
    fn folds_like_sql() {
        let values = [ScalarValue::Int64(Some(3)), ScalarValue::Int64(None), ScalarValue::Int64(Some(-1)), ScalarValue::Float64(Some(0.5))];
        let mut accumulators = [Accumulator::default(), Accumulator::default(), Accumulator::default(), Accumulator::default(), Accumulator::default(), Accumulator::default()];
        let functions = [CountStar, Count, Sum, Min, Max, Avg];
        for value in &values {
            for (accumulator, function) in accumulators.iter_mut().zip(functions) {
                accumulator.fold(function, Some(value)).unwrap();
            }
        }
        let results: Vec<ScalarValue> = accumulators.iter().zip(functions).map(|(accumulator, function)| accumulator.result(function)).collect();
        assert_eq!(results[0], ScalarValue::Int64(Some(4)));
        assert_eq!(results[1], ScalarValue::Int64(Some(3)));
        assert_eq!(results[2], ScalarValue::Float64(Some(2.5)));
        assert_eq!(results[3], ScalarValue::Int64(Some(-1)));
        assert_eq!(results[4], ScalarValue::Int64(Some(3)));
        assert_eq!(results[5], ScalarValue::Float64(Some(2.5 / 3.0)));
        assert_eq!(Accumulator::default().result(Sum), ScalarValue::Int64(None));
        assert!(Accumulator::default().fold(Sum, Some(&ScalarValue::Utf8(Some("x".into())))).is_err());
    }
}
