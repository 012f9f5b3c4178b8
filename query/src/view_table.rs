//! A materialized view as a table in schema `public`, with index pushdown.
//!
//! `col = literal` and `col IN (literals)` on a column with a usable index are accepted as
//! Inexact filters: the scan walks the index's CAS lists for those values (no lock: the
//! materializer keeps writing meanwhile) and reads only the rows they name; DataFusion keeps
//! the filter above, so a row seen under a stale value for a moment is filtered out. `EXPLAIN`
//! shows `ViewIndexScanExec` (with the index and values) instead of `ViewScanExec`, and
//! `EXPLAIN ANALYZE` the `rows_read` metric.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::{DataFusionError, Result, ScalarValue};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};
use materializer::view::types::{index_key, indexable};
use materializer::view::{ViewIndex, ViewShared};

/// Values of one `IN` list an index lookup takes; longer lists scan.
const IN_LIST_VALUES_MAX: usize = 1024;

pub struct ViewTable {
    view: Arc<ViewShared>,
    schema: SchemaRef,
}

impl fmt::Debug for ViewTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ViewTable({})", self.view.definition.name)
    }
}

impl ViewTable {
    pub fn new(view: Arc<ViewShared>) -> ViewTable {
        let schema = view.store.schema();
        ViewTable { view, schema }
    }

    /// The index and the keys to look up for `filter`, if an index answers it.
    fn lookup(&self, filter: &Expr) -> Option<(Arc<ViewIndex>, Vec<String>)> {
        // DataFusion rewrites a short IN list into ORs of equalities: one index, both sides.
        if let Expr::BinaryExpr(BinaryExpr { left, op: Operator::Or, right }) = filter {
            let (left_index, mut keys) = self.lookup(left)?;
            let (right_index, right_keys) = self.lookup(right)?;
            if !Arc::ptr_eq(&left_index, &right_index) || keys.len() + right_keys.len() > IN_LIST_VALUES_MAX {
                return None;
            }
            keys.extend(right_keys);
            keys.sort();
            keys.dedup();
            return Some((left_index, keys));
        }
        let (column, literals): (&str, Vec<&ScalarValue>) = match filter {
            Expr::BinaryExpr(BinaryExpr { left, op: Operator::Eq, right }) => match (left.as_ref(), right.as_ref()) {
                (Expr::Column(column), Expr::Literal(value, _)) | (Expr::Literal(value, _), Expr::Column(column)) => (column.name.as_str(), vec![value]),
                _ => return None,
            },
            Expr::InList(in_list) if !in_list.negated && in_list.list.len() <= IN_LIST_VALUES_MAX => {
                let Expr::Column(column) = in_list.expr.as_ref() else { return None };
                let literals = in_list.list.iter().map(|item| match item {
                    Expr::Literal(value, _) => Some(value),
                    _ => None,
                });
                (column.name.as_str(), literals.collect::<Option<Vec<_>>>()?)
            }
            _ => return None,
        };
        let field = self.schema.field_with_name(column).ok()?;
        let index = self.view.store.index_on(column)?;
        // Keys are texts under the index's column type: only when the literal compares in
        // exactly that type is text equality the same as `=`.
        if index.column_type != *field.data_type() || !indexable(field.data_type()) {
            return None;
        }
        if literals.iter().any(|literal| !literal.is_null() && literal.data_type() != *field.data_type()) {
            return None;
        }
        let mut keys: Vec<String> = literals.iter().filter_map(|literal| index_key(literal, &index.column_type)).collect();
        keys.sort();
        keys.dedup();
        Some((index, keys))
    }
}

#[async_trait]
impl TableProvider for ViewTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|filter| if self.lookup(filter).is_some() { TableProviderFilterPushDown::Inexact } else { TableProviderFilterPushDown::Unsupported })
            .collect())
    }

    async fn scan(&self, _state: &dyn Session, projection: Option<&Vec<usize>>, filters: &[Expr], limit: Option<usize>) -> Result<Arc<dyn ExecutionPlan>> {
        // The most selective lookup among the pushed filters (fewest keys), if any.
        let lookup = filters.iter().filter_map(|filter| self.lookup(filter)).min_by_key(|(_, keys)| keys.len());
        let projection: Vec<usize> = projection.cloned().unwrap_or_else(|| (0..self.schema.fields().len()).collect());
        let schema = Arc::new(self.schema.project(&projection)?);
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Ok(Arc::new(ViewScanExec {
            view: self.view.clone(),
            lookup,
            projection,
            schema,
            limit,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }
}

/// Reads a view's rows: all of them, or those an index names.
pub struct ViewScanExec {
    view: Arc<ViewShared>,
    lookup: Option<(Arc<ViewIndex>, Vec<String>)>,
    projection: Vec<usize>,
    schema: SchemaRef,
    limit: Option<usize>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl fmt::Debug for ViewScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct(self.name()).field("view", &self.view.definition.name).finish()
    }
}

impl DisplayAs for ViewScanExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        match &self.lookup {
            Some((index, keys)) => write!(f, "ViewIndexScanExec: view={}, index={}, column={}, values=[{}]", self.view.definition.name, index.name, index.column, keys.join(", "))?,
            None => write!(f, "ViewScanExec: view={}", self.view.definition.name)?,
        }
        if let Some(limit) = self.limit {
            write!(f, ", limit={limit}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for ViewScanExec {
    fn name(&self) -> &'static str {
        if self.lookup.is_some() {
            "ViewIndexScanExec"
        } else {
            "ViewScanExec"
        }
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    materializer::leaf_execution_plan_methods!();

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!("ViewScanExec has one partition, not {partition}")));
        }
        let rows_read = MetricBuilder::new(&self.metrics).counter("rows_read", partition);
        let batch = match &self.lookup {
            Some((index, keys)) => {
                // Positions first, walking the lists without a lock; then the rows.
                let mut positions = index.positions(keys);
                if let Some(limit) = self.limit {
                    positions.truncate(limit);
                }
                self.view.store.read().batch_at(positions.into_iter(), &self.projection, &self.schema)?
            }
            None => {
                let batch = self.view.store.read().batch_all(&self.projection, &self.schema)?;
                match self.limit {
                    Some(limit) if limit < batch.num_rows() => batch.slice(0, limit),
                    _ => batch,
                }
            }
        };
        rows_read.add(batch.num_rows());
        let batch_rows = context.session_config().batch_size().max(1);
        let batches: Vec<Result<RecordBatch>> =
            (0..batch.num_rows()).step_by(batch_rows).map(|start| Ok(batch.slice(start, batch_rows.min(batch.num_rows() - start)))).collect();
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), futures::stream::iter(batches))))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}
