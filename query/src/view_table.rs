//! A materialized view as a table in schema `public`, read through the materializer's snapshot
//! API (`ViewStore::snapshot`): planning takes a snapshot (`Arc` clones of the view's chunks
//! and deletion vectors), and the scan streams its chunks without copying rows and without
//! any lock the view's writer waits on.
//!
//! A full scan (`ViewScanExec`) runs one DataFusion partition per group of chunks (all cores),
//! reads only the projected columns (a spilled chunk: only those columns of its file), drops
//! dead rows with the chunk's deletion vector, and stops at a pushed LIMIT. Batches it had to
//! materialize (read from files, filtered) are reserved in the query's memory pool.
//!
//! `col = literal` and `col IN (literals)` on a column with a usable index are accepted as
//! Exact filters (the index's keys compare as `=` does, `types::indexable`): the scan
//! (`ViewIndexScanExec`, with the index and values) reads only the rows the sealed chunks'
//! value lists and the tail's CAS lists name, and no filter stays above it. Pushed filters its
//! lookup does not answer are applied by a filter inside the scan's plan. `EXPLAIN ANALYZE`
//! shows the `rows_read` metric.

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, RecordBatchOptions, UInt32Array};
use datafusion::arrow::compute::interleave;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::Session;
use datafusion::common::{DFSchema, DataFusionError, Result, ScalarValue};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::memory_pool::{MemoryConsumer, MemoryReservation};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::expr_rewriter::unnormalize_col;
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{BinaryExpr, Expr, Operator, TableProviderFilterPushDown};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::filter::FilterExecBuilder;
use datafusion::physical_plan::metrics::{Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties};
use materializer::view::types::{index_key, indexable};
use materializer::view::{ViewIndex, ViewShared, ViewSnapshot};

/// Values of one `IN` list an index lookup takes; longer lists scan.
const IN_LIST_VALUES_MAX: usize = 1024;
/// Rows an index scan gathers per DataFusion partition at least.
const INDEX_ROWS_PER_PARTITION_MIN: usize = 32_768;

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

    pub(crate) fn view(&self) -> &Arc<ViewShared> {
        &self.view
    }

    /// The index and the keys to look up for `filter`, if an index answers it.
    /// The index comes from `snapshot`: its lists are those of the snapshot's chunks.
    pub(crate) fn lookup(&self, snapshot: &ViewSnapshot, filter: &Expr) -> Option<(Arc<ViewIndex>, Vec<String>)> {
        // DataFusion rewrites a short IN list into ORs of equalities: one index, both sides.
        if let Expr::BinaryExpr(BinaryExpr { left, op: Operator::Or, right }) = filter {
            let (left_index, mut keys) = self.lookup(snapshot, left)?;
            let (right_index, right_keys) = self.lookup(snapshot, right)?;
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
                let Expr::Column(column) = in_list.expr.as_ref() else {
                    return None;
                };
                let literals = in_list.list.iter().map(|item| match item {
                    Expr::Literal(value, _) => Some(value),
                    _ => None,
                });
                (column.name.as_str(), literals.collect::<Option<Vec<_>>>()?)
            }
            _ => return None,
        };
        let field = self.schema.field_with_name(column).ok()?;
        let index = snapshot.index_on(column)?;
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
        let snapshot = self.view.store.snapshot();
        Ok(filters
            .iter()
            .map(|filter| {
                // Exact: the index names exactly the rows `=`/`IN` keep (`types::indexable`),
                // so no filter stays above the scan (nor its column in the projection). `scan`
                // applies whatever pushed filter its lookup does not answer.
                if self.lookup(&snapshot, filter).is_some() {
                    TableProviderFilterPushDown::Exact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(&self, state: &dyn Session, projection: Option<&Vec<usize>>, filters: &[Expr], limit: Option<usize>) -> Result<Arc<dyn ExecutionPlan>> {
        let snapshot = self.view.store.snapshot();
        // The most selective lookup among the pushed filters (fewest keys), if any.
        let chosen = filters
            .iter()
            .enumerate()
            .filter_map(|(position, filter)| self.lookup(&snapshot, filter).map(|lookup| (position, lookup)))
            .min_by_key(|(_, (_, keys))| keys.len());
        let projection: Vec<usize> = projection.cloned().unwrap_or_else(|| (0..self.schema.fields().len()).collect());
        // Filters were pushed as Exact: those the lookup does not answer (another index's, or
        // all of them when the index went since the pushdown) are applied here, their columns
        // read for it.
        let residual: Vec<Expr> = filters
            .iter()
            .enumerate()
            .filter(|(position, _)| chosen.as_ref().is_none_or(|(chosen, _)| chosen != position))
            .map(|(_, filter)| unnormalize_col(filter.clone()))
            .collect();
        let lookup = chosen.map(|(_, lookup)| lookup);
        if residual.is_empty() {
            return Ok(Arc::new(self.scan_exec(state, snapshot, lookup, projection, limit)?));
        }
        let mut wide = projection.clone();
        for column in residual.iter().flat_map(|filter| filter.column_refs()) {
            let position = self.schema.index_of(&column.name)?;
            if !wide.contains(&position) {
                wide.push(position);
            }
        }
        // No LIMIT below the filter (a scan's limit is a hint: DataFusion limits above).
        let exec: Arc<dyn ExecutionPlan> = Arc::new(self.scan_exec(state, snapshot, lookup, wide.clone(), None)?);
        let predicate = conjunction(residual).expect("one filter at least");
        let predicate = state.create_physical_expr(predicate, &DFSchema::try_from(exec.schema().as_ref().clone())?)?;
        let kept = (wide.len() > projection.len()).then(|| (0..projection.len()).collect());
        Ok(Arc::new(FilterExecBuilder::new(predicate, exec).apply_projection(kept)?.build()?))
    }
}

impl ViewTable {
    /// The scan of `snapshot`: the rows `lookup` names, or every live row.
    fn scan_exec(
        &self,
        state: &dyn Session,
        snapshot: Arc<ViewSnapshot>,
        lookup: Option<(Arc<ViewIndex>, Vec<String>)>,
        projection: Vec<usize>,
        limit: Option<usize>,
    ) -> Result<ViewScanExec> {
        let schema = Arc::new(self.schema.project(&projection)?);
        let work: Vec<Vec<Work>> = match &lookup {
            Some((index, keys)) => {
                let found = snapshot.lookup(index, keys);
                let rows: usize = found.iter().map(|(_, rows)| rows.len()).sum();
                // Contiguous runs of chunks of about equal rows, one per partition; a partition
                // costs more than gathering a few thousand rows, so small answers take one.
                let partitions = state.config().target_partitions().min(rows.div_ceil(INDEX_ROWS_PER_PARTITION_MIN)).max(1);
                let share = rows.div_ceil(partitions).max(1);
                let mut work: Vec<Vec<Work>> = vec![Vec::new()];
                let mut taken = 0;
                for (chunk, rows) in found {
                    if taken >= share * work.len() {
                        work.push(Vec::new());
                    }
                    taken += rows.len();
                    work.last_mut().expect("one at least").push(Work { chunk, rows: Some(rows) });
                }
                work
            }
            None => {
                let partitions = state.config().target_partitions().clamp(1, snapshot.chunks.len().max(1));
                let mut work: Vec<Vec<Work>> = vec![Vec::new(); partitions];
                for chunk in 0..snapshot.chunks.len() {
                    work[chunk % partitions].push(Work { chunk, rows: None });
                }
                work
            }
        };
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            Partitioning::UnknownPartitioning(work.len()),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        Ok(ViewScanExec {
            view: self.view.clone(),
            snapshot,
            lookup,
            work,
            projection,
            schema,
            limit,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

/// One chunk to read: all its live rows, or those an index named.
#[derive(Clone, Debug)]
struct Work {
    chunk: usize,
    rows: Option<UInt32Array>,
}

/// Reads a view snapshot's rows: all of them, or those an index names.
pub struct ViewScanExec {
    view: Arc<ViewShared>,
    snapshot: Arc<ViewSnapshot>,
    lookup: Option<(Arc<ViewIndex>, Vec<String>)>,
    /// Per DataFusion partition, its chunks.
    work: Vec<Vec<Work>>,
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
            Some((index, keys)) => write!(
                f,
                "ViewIndexScanExec: view={}, index={}, column={}, values=[{}]",
                self.view.definition.name,
                index.name,
                index.column,
                keys.join(", ")
            )?,
            None => write!(f, "ViewScanExec: view={}, chunks={}", self.view.definition.name, self.snapshot.chunks.len())?,
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
        let Some(work) = self.work.get(partition) else {
            return Err(DataFusionError::Internal(format!(
                "ViewScanExec has {} partitions, not {partition}",
                self.work.len()
            )));
        };
        let reservation = MemoryConsumer::new(format!("ViewScanExec[{partition}]")).register(context.memory_pool());
        let reader = ChunkReader {
            snapshot: self.snapshot.clone(),
            work: work.clone().into_iter(),
            projection: self.projection.clone(),
            schema: self.schema.clone(),
            remaining: self.limit.unwrap_or(usize::MAX),
            batch_rows: context.session_config().batch_size().max(1),
            pending: None,
            gather: self.lookup.is_some(),
            reservation,
            rows_read: MetricBuilder::new(&self.metrics).counter("rows_read", partition),
        };
        let stream = futures::stream::iter(reader);
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// One partition's chunks, read one at a time and handed out in `batch_rows` slices.
struct ChunkReader {
    snapshot: Arc<ViewSnapshot>,
    work: std::vec::IntoIter<Work>,
    projection: Vec<usize>,
    schema: SchemaRef,
    remaining: usize,
    batch_rows: usize,
    /// The chunk being handed out, and how far.
    pending: Option<(RecordBatch, usize)>,
    /// An index scan: rows gathered from several chunks into one batch.
    gather: bool,
    /// What the chunk being handed out holds beyond the view's own memory.
    reservation: MemoryReservation,
    rows_read: Count,
}

impl ChunkReader {
    fn next_chunk(&mut self) -> Result<Option<RecordBatch>> {
        if self.gather {
            return self.next_gathered();
        }
        for work in self.work.by_ref() {
            let chunk = &self.snapshot.chunks[work.chunk];
            let batch = self.snapshot.read_chunk(chunk, None, &self.projection, &self.schema)?;
            if batch.num_rows() == 0 {
                continue;
            }
            // Rows read from a file or filtered are new memory; the rest is the view's.
            let materialized = !chunk.chunk.is_in_memory() || batch.num_rows() < chunk.chunk.rows;
            self.reservation.try_resize(if materialized { batch.get_array_memory_size() } else { 0 })?;
            return Ok(Some(batch));
        }
        self.reservation.free();
        Ok(None)
    }

    /// The rows an index named in the next chunks, about a batch's worth, gathered into one
    /// batch by Arrow's `interleave` straight from the chunks in memory (a spilled chunk's rows
    /// are read from its file first): one copy of the matching rows, nothing else touched.
    fn next_gathered(&mut self) -> Result<Option<RecordBatch>> {
        let mut sources: Vec<RecordBatch> = Vec::new();
        let mut indices: Vec<(usize, usize)> = Vec::new();
        while indices.len() < self.batch_rows.min(self.remaining) {
            let Some(work) = self.work.next() else {
                break;
            };
            let rows = work.rows.as_ref().expect("an index scan's work names its rows");
            let chunk = &self.snapshot.chunks[work.chunk];
            let source = sources.len();
            match self.snapshot.in_memory_columns(chunk, &self.projection, &self.schema) {
                Some(batch) => {
                    indices.extend(rows.values().iter().map(|&row| (source, row as usize)));
                    sources.push(batch);
                }
                None => {
                    let batch = self.snapshot.read_chunk(chunk, Some(rows), &self.projection, &self.schema)?;
                    indices.extend((0..batch.num_rows()).map(|row| (source, row)));
                    sources.push(batch);
                }
            }
        }
        if indices.is_empty() {
            self.reservation.free();
            return Ok(None);
        }
        let columns = (0..self.schema.fields().len())
            .map(|column| {
                let arrays: Vec<&dyn Array> = sources.iter().map(|batch| batch.column(column).as_ref()).collect();
                interleave(&arrays, &indices)
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let options = RecordBatchOptions::new().with_row_count(Some(indices.len()));
        let batch = RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)?;
        self.reservation.try_resize(batch.get_array_memory_size())?;
        Ok(Some(batch))
    }
}

impl Iterator for ChunkReader {
    type Item = Result<RecordBatch>;

    fn next(&mut self) -> Option<Result<RecordBatch>> {
        if self.remaining == 0 {
            self.reservation.free();
            return None;
        }
        if self.pending.as_ref().is_none_or(|(batch, at)| *at >= batch.num_rows()) {
            match self.next_chunk() {
                Ok(Some(batch)) => self.pending = Some((batch, 0)),
                Ok(None) => return None,
                Err(error) => return Some(Err(error)),
            }
        }
        let (batch, at) = self.pending.as_mut().expect("a chunk is pending");
        let rows = self.batch_rows.min(batch.num_rows() - *at).min(self.remaining);
        let slice = batch.slice(*at, rows);
        *at += rows;
        self.remaining -= rows;
        self.rows_read.add(rows);
        Some(Ok(slice))
    }
}
