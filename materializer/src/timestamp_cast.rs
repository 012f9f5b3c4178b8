//! `CAST(x AS TIMESTAMP)` that reads every spelling the JSON decoder reads as a time: ISO 8601
//! with or without a zone, RFC 2822, `dd/mm/yyyy`, `mm-dd-yyyy HH:MM` (`json/datetime.rs`), and
//! epoch numbers in seconds or milliseconds by magnitude (as numbers or as digit text), so that
//! a view's definition can state a column's type when a field's values leave the inferred one
//! as text or numbers.
//!
//! An analyzer rule, run after DataFusion's type coercion, rewrites each cast to a timestamp of
//! a string or number into that cast of `yottastore_timestamp(x)`; text the JSON rules do not
//! read goes to Arrow's own cast, so whatever CAST accepted before it still accepts. Registered
//! by the view evaluator's session (`view/eval.rs`) and the query engine's (`query`).

use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, StringArray, TimestampMicrosecondArray};
use datafusion::arrow::compute::CastOptions;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::common::{exec_err, DFSchema, Result};
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::expr_rewriter::NamePreserver;
use datafusion::logical_expr::utils::merge_schema;
use datafusion::logical_expr::{
    Cast, ColumnarValue, Expr, ExprSchemable, LogicalPlan, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, Volatility,
};
use datafusion::optimizer::AnalyzerRule;
use datafusion::prelude::SessionContext;

use crate::json::{
    epoch_float_to_micros, epoch_integer_to_micros, epoch_text_to_micros, parse_datetime_text,
    TIMESTAMP_ZONE,
};

pub const FUNCTION_NAME: &str = "yottastore_timestamp";

/// Adds the function and the rewrite to `context`.
pub fn register(context: &SessionContext) {
    context.register_udf(ScalarUDF::new_from_impl(TimestampFunction::new()));
    context.add_analyzer_rule(Arc::new(TimestampCastRule));
}

fn output_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some(TIMESTAMP_ZONE.into()))
}

/// `yottastore_timestamp(text or number)`: UTC microseconds.
#[derive(Debug, PartialEq, Eq, Hash)]
struct TimestampFunction {
    signature: Signature,
}

impl TimestampFunction {
    fn new() -> Self {
        let inputs = vec![DataType::Utf8, DataType::Int64, DataType::Float64];
        TimestampFunction {
            signature: Signature::uniform(1, inputs, Volatility::Immutable),
        }
    }
}

impl ScalarUDFImpl for TimestampFunction {
    fn name(&self) -> &str {
        FUNCTION_NAME
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _arg_types: &[DataType]) -> Result<DataType> {
        Ok(output_type())
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [value] = args.args.as_slice() else {
            return exec_err!("{FUNCTION_NAME} takes one argument");
        };
        let array = value.to_array(args.number_rows)?;
        let micros = timestamps(&array)?;
        let micros: ArrayRef = Arc::new(micros.with_timezone(TIMESTAMP_ZONE));
        Ok(match value {
            ColumnarValue::Scalar(_) => {
                ColumnarValue::Scalar(datafusion::common::ScalarValue::try_from_array(&micros, 0)?)
            }
            ColumnarValue::Array(_) => ColumnarValue::Array(micros),
        })
    }
}

/// Each value as UTC microseconds; an error names the first value that is no time.
fn timestamps(array: &ArrayRef) -> Result<TimestampMicrosecondArray> {
    let unreadable = |text: String| exec_err!("cannot read {text} as a timestamp");
    match array.data_type() {
        DataType::Int64 => array
            .as_primitive::<Int64Type>()
            .iter()
            .map(|value| {
                value
                    .map(|value| {
                        epoch_integer_to_micros(value)
                            .map_or_else(|| unreadable(value.to_string()), Ok)
                    })
                    .transpose()
            })
            .collect(),
        DataType::Float64 => array
            .as_primitive::<Float64Type>()
            .iter()
            .map(|value| {
                value
                    .map(|value| {
                        epoch_float_to_micros(value)
                            .map_or_else(|| unreadable(value.to_string()), Ok)
                    })
                    .transpose()
            })
            .collect(),
        DataType::Utf8 => array
            .as_string::<i32>()
            .iter()
            .map(|text| text.map(text_micros).transpose())
            .collect(),
        other => exec_err!("{FUNCTION_NAME} reads text and numbers, not {other}"),
    }
}

/// Date text or epoch digits by the JSON rules, else whatever Arrow's cast reads.
fn text_micros(text: &str) -> Result<i64> {
    if let Some(micros) = parse_datetime_text(text).or_else(|| epoch_text_to_micros(text)) {
        return Ok(micros);
    }
    let one: ArrayRef = Arc::new(StringArray::from(vec![text]));
    let options = CastOptions {
        safe: false,
        ..CastOptions::default()
    };
    match datafusion::arrow::compute::cast_with_options(&one, &output_type(), &options) {
        Ok(micros) if micros.is_valid(0) => Ok(micros
            .as_primitive::<datafusion::arrow::datatypes::TimestampMicrosecondType>()
            .value(0)),
        _ => exec_err!("cannot read {text:?} as a timestamp"),
    }
}

/// Rewrites `CAST(x AS TIMESTAMP...)` of text or numbers (see the module's comment).
#[derive(Debug)]
struct TimestampCastRule;

impl AnalyzerRule for TimestampCastRule {
    fn name(&self) -> &str {
        "yottastore_timestamp_cast"
    }

    fn analyze(&self, plan: LogicalPlan, _config: &ConfigOptions) -> Result<LogicalPlan> {
        let function = Arc::new(ScalarUDF::new_from_impl(TimestampFunction::new()));
        plan.transform_up_with_subqueries(|plan| {
            let mut schema = merge_schema(&plan.inputs());
            if let LogicalPlan::TableScan(scan) = &plan {
                schema.merge(&DFSchema::try_from_qualified_schema(
                    scan.table_name.clone(),
                    &scan.source.schema(),
                )?);
            }
            // Outputs keep the names they had (a projection's column is named after its expression).
            let names = NamePreserver::new(&plan);
            plan.map_expressions(|expr| {
                let name = names.save(&expr);
                let rewritten = expr.transform_up(|expr| rewrite(expr, &schema, &function))?;
                Ok(rewritten.update_data(|expr| name.restore(expr)))
            })
        })
        .map(|transformed| transformed.data)
    }
}

fn rewrite(expr: Expr, schema: &DFSchema, function: &Arc<ScalarUDF>) -> Result<Transformed<Expr>> {
    let Expr::Cast(Cast { expr: inner, field }) = expr else {
        return Ok(Transformed::no(expr));
    };
    let target = field.data_type().clone();
    if !matches!(target, DataType::Timestamp(_, _)) {
        return Ok(Transformed::no(Expr::Cast(Cast { expr: inner, field })));
    }
    let argument_type = match inner.get_type(schema) {
        Ok(source) if source.is_integer() => DataType::Int64,
        Ok(source)
            if source.is_floating()
                || matches!(
                    source,
                    DataType::Decimal128(_, _) | DataType::Decimal256(_, _)
                ) =>
        {
            DataType::Float64
        }
        Ok(DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) => DataType::Utf8,
        _ => return Ok(Transformed::no(Expr::Cast(Cast { expr: inner, field }))),
    };
    let argument = Expr::Cast(Cast::new(inner, argument_type));
    let call = Expr::ScalarFunction(ScalarFunction::new_udf(function.clone(), vec![argument]));
    Ok(Transformed::yes(Expr::Cast(Cast::new(
        Box::new(call),
        target,
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::RecordBatch;
    use datafusion::arrow::datatypes::TimestampNanosecondType;

    async fn run(sql: &str) -> Result<Vec<RecordBatch>> {
        let context = SessionContext::new();
        register(&context);
        context.sql(sql).await?.collect().await
    }

    /// The one column of `sql`'s answer, a naive nanosecond timestamp, in UTC microseconds.
    async fn micros(sql: &str) -> Vec<Option<i64>> {
        let batches = run(sql).await.unwrap();
        let mut values = Vec::new();
        for batch in batches {
            assert_eq!(
                batch.column(0).data_type(),
                &DataType::Timestamp(TimeUnit::Nanosecond, None)
            );
            let column = batch.column(0).as_primitive::<TimestampNanosecondType>();
            values.extend(column.iter().map(|nanos| nanos.map(|nanos| nanos / 1000)));
        }
        values
    }

    const INSTANT_MICROS: i64 = 1_795_973_940_000_000; // 2026-11-29T17:39:00Z

    #[tokio::test]
    async fn every_spelling_of_a_time_casts() {
        let texts = micros(
            "SELECT CAST(column1 AS TIMESTAMP) FROM (VALUES ('2026-11-29T17:39:00Z'), ('2026-11-29 17:39'), \
             ('2026-11-29T19:39:00+02:00'), ('Sun, 29 Nov 2026 17:39:00 +0000'), ('29/11/2026 17:39'), \
             ('11-29-2026 17:39'), ('1795973940'), ('1795973940000'), (NULL))",
        )
        .await;
        let mut expected = vec![Some(INSTANT_MICROS); 8];
        expected.push(None);
        assert_eq!(texts, expected);
        // Epoch numbers: seconds or milliseconds by magnitude, integers and floats.
        let numbers =
            micros("SELECT CAST(column1 AS TIMESTAMP) FROM (VALUES (1795973940), (1795973940000))")
                .await;
        assert_eq!(numbers, [Some(INSTANT_MICROS), Some(INSTANT_MICROS)]);
        let floats = micros("SELECT CAST(column1 AS TIMESTAMP) FROM (VALUES (1795973940.5))").await;
        assert_eq!(floats, [Some(INSTANT_MICROS + 500_000)]);
        let literal = micros("SELECT '29/11/2026 17:39'::timestamp").await;
        assert_eq!(literal, [Some(INSTANT_MICROS)]);
    }

    #[tokio::test]
    async fn text_that_is_no_time_is_an_error_and_other_casts_are_untouched() {
        let error = run("SELECT CAST('soon' AS TIMESTAMP)").await.unwrap_err();
        assert!(error.to_string().contains("soon"), "{error}");
        let error = run("SELECT CAST(99999999999999999 AS TIMESTAMP)")
            .await
            .unwrap_err();
        assert!(error.to_string().contains("timestamp"), "{error}");
        // What Arrow's cast reads and the JSON rules do not still casts.
        let nanos = micros("SELECT CAST('2026-11-29T17:39:00.000000001Z' AS TIMESTAMP)").await;
        assert_eq!(nanos, [Some(INSTANT_MICROS)]);
        let batches =
            run("SELECT CAST('12' AS BIGINT) AS n, CAST(DATE '2026-11-29' AS TIMESTAMP) AS d")
                .await
                .unwrap();
        assert_eq!(
            batches[0].column(0).as_primitive::<Int64Type>().value(0),
            12
        );
    }
}
