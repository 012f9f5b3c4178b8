//! Direct answers: a query over one materialized view whose only pushed filter an index
//! answers (`col = literal`, `col IN (...)`), answered from the index without DataFusion's
//! planning, optimisation and execution set-up (about a millisecond), which is most of an
//! indexed lookup's time.
//!
//! The first run of a statement is planned by DataFusion as any other; when its optimized plan
//! is a chain this module can run (the view's index scan, then Filter, Projection, Limit and
//! at most one Aggregate without GROUP BY), it is kept by SQL text (`DirectCache`) with the
//! plan's own physical expressions and accumulators (DataFusion's, so the answer is the one
//! DataFusion gives, same schema and rows). A later run of the same text takes a fresh
//! snapshot, looks the keys up again and runs the chain over the rows found, chunk by chunk.
//!
//! A kept statement is only reused while the view it read is still the one of that name with
//! the same columns, its filter still has an index, and the plan holds no function that may
//! answer differently later (`now()` is folded into a constant at planning). Otherwise, or on
//! any error, it is dropped and the statement is planned again. View DDL clears the cache.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use datafusion::arrow::array::{ArrayRef, AsArray, RecordBatch, RecordBatchOptions, UInt32Array};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::{source_as_provider, TableProvider};
use datafusion::execution::session_state::SessionState;
use datafusion::logical_expr::{Accumulator, Expr, FetchType, LogicalPlan, SkipType, TableScan, Volatility};
use datafusion::logical_expr::physical_planning_context::PhysicalPlanningContext;
use datafusion::physical_expr::aggregate::{AggregateFunctionExpr, LoweredAggregateBuilder};
use datafusion::physical_expr::{create_physical_expr, PhysicalExpr};
use materializer::view::{ViewShared, ViewSnapshot};
use materializer::Materializer;

use crate::engine::QueryOutput;
use crate::view_table::ViewTable;

/// Statements kept; past it the cache starts again empty (a server sees few distinct texts
/// repeated; a client that never repeats one gains nothing from keeping them).
const ENTRIES_MAX: usize = 1024;
/// Rows an index may name for a direct run (a few milliseconds of work at most).
const ROWS_MAX: usize = 1 << 20;
/// Rows per thread at least when an aggregate's rows are split over the cores: a thread costs
/// about what gathering a few thousand rows does (DataFusion's index scan splits alike).
const PART_ROWS_MIN: usize = 32_768;

/// One step of a kept plan, applied bottom-up to the batches the index scan gathers.
enum Step {
    Filter(Arc<dyn PhysicalExpr>),
    Project { exprs: Vec<Arc<dyn PhysicalExpr>>, schema: SchemaRef },
    Limit { skip: usize, fetch: Option<usize> },
    /// No GROUP BY: one row from every batch below.
    Aggregate { aggregates: Vec<Arc<AggregateFunctionExpr>>, schema: SchemaRef },
}

/// A statement answered from a view's index. See the module documentation.
pub(crate) struct DirectQuery {
    /// The view planned against, by name, and its columns then. Weak: a kept statement does
    /// not keep a dropped view's rows in memory.
    view: Weak<ViewShared>,
    view_name: String,
    view_schema: SchemaRef,
    /// The pushed filter its index answers.
    filter: Expr,
    projection: Vec<usize>,
    scan_schema: SchemaRef,
    scan_fetch: Option<usize>,
    steps: Vec<Step>,
    /// The answer's columns, as DataFusion's path reports them.
    schema: SchemaRef,
}

impl DirectQuery {
    /// The direct form of `optimized` (the optimizer's output for a plan answering `schema`),
    /// if it has one. Errors only mean it has none.
    pub(crate) fn recognise(optimized: &LogicalPlan, schema: SchemaRef, state: &SessionState) -> Option<DirectQuery> {
        let mut steps = Vec::new();
        let mut node = optimized;
        let scan = loop {
            if let LogicalPlan::TableScan(scan) = node {
                break scan;
            }
            let (step, input) = Self::step(node, state)?;
            steps.extend(step);
            node = input;
        };
        steps.reverse();
        let aggregates = steps.iter().filter(|step| matches!(step, Step::Aggregate { .. })).count();
        if aggregates > 1 {
            return None;
        }
        Self::over_scan(scan, steps, schema)
    }

    /// What `node` does to the rows of its input (nothing for an alias), and the input.
    fn step<'p>(node: &'p LogicalPlan, state: &SessionState) -> Option<(Option<Step>, &'p LogicalPlan)> {
        let props = state.execution_props();
        let context = PhysicalPlanningContext::default();
        let (step, input) = match node {
            // Names the columns differently, leaves the rows as they are.
            LogicalPlan::SubqueryAlias(alias) => return Some((None, alias.input.as_ref())),
            LogicalPlan::Filter(filter) => {
                let predicate = create_physical_expr(&filter.predicate, filter.input.schema(), props, &context).ok()?;
                (Step::Filter(predicate), &filter.input)
            }
            LogicalPlan::Projection(projection) => {
                let exprs = projection.expr.iter().map(|expr| create_physical_expr(expr, projection.input.schema(), props, &context));
                let schema = Arc::new(projection.schema.as_arrow().clone());
                (Step::Project { exprs: exprs.collect::<Result<_>>().ok()?, schema }, &projection.input)
            }
            LogicalPlan::Limit(limit) => match (limit.get_skip_type().ok()?, limit.get_fetch_type().ok()?) {
                (SkipType::Literal(skip), FetchType::Literal(fetch)) => (Step::Limit { skip, fetch }, &limit.input),
                _ => return None,
            },
            LogicalPlan::Aggregate(aggregate) if aggregate.group_expr.is_empty() => {
                let input = aggregate.input.schema();
                let mut aggregates = Vec::with_capacity(aggregate.aggr_expr.len());
                for expr in &aggregate.aggr_expr {
                    let lowered = LoweredAggregateBuilder::new(expr, input, input.as_arrow(), props, &context).build().ok()?;
                    if lowered.filter.is_some() || !lowered.order_bys.is_empty() || lowered.aggregate.is_distinct() {
                        return None;
                    }
                    aggregates.push(lowered.aggregate);
                }
                let schema = Arc::new(aggregate.schema.as_arrow().clone());
                (Step::Aggregate { aggregates, schema }, &aggregate.input)
            }
            _ => return None,
        };
        Some((Some(step), input.as_ref()))
    }

    /// The scan's part: a view whose one pushed filter an index answers now.
    fn over_scan(scan: &TableScan, steps: Vec<Step>, schema: SchemaRef) -> Option<DirectQuery> {
        let provider = source_as_provider(&scan.source).ok()?;
        let table = provider.downcast_ref::<ViewTable>()?;
        let [filter] = scan.filters.as_slice() else {
            return None;
        };
        table.lookup(&table.view().store.snapshot(), filter)?;
        let view_schema = table.schema();
        let projection = scan.projection.clone().unwrap_or_else(|| (0..view_schema.fields().len()).collect());
        let scan_schema = Arc::new(view_schema.project(&projection).ok()?);
        Some(DirectQuery {
            view: Arc::downgrade(table.view()),
            view_name: table.view().definition.name.clone(),
            view_schema,
            filter: filter.clone(),
            projection,
            scan_schema,
            scan_fetch: scan.fetch,
            steps,
            schema,
        })
    }

    /// The view as a table, if the view of that name is still the one planned against, with
    /// the same columns.
    fn current(&self, materializer: &Materializer) -> Option<ViewTable> {
        let view = materializer.view(&self.view_name)?;
        if !std::ptr::eq(self.view.as_ptr(), Arc::as_ptr(&view)) {
            return None;
        }
        let table = ViewTable::new(view);
        (table.schema() == self.view_schema).then_some(table)
    }

    /// The answer (at most `rows_max` rows), or `None` when the view changed, the index no
    /// longer answers the filter or a step failed: DataFusion's path answers then (or reports
    /// the error).
    pub(crate) fn run(&self, materializer: &Materializer, rows_max: usize) -> Option<QueryOutput> {
        let table = self.current(materializer)?;
        let snapshot = table.view().store.snapshot();
        let (index, keys) = table.lookup(&snapshot, &self.filter)?;
        let found = snapshot.lookup(&index, &keys);
        let rows = found.iter().map(|(_, rows)| rows.len()).sum::<usize>();
        // A direct run holds its task's thread and knows no timeout: a large answer goes to
        // DataFusion, which yields, spreads it over the cores and stops at the timeout.
        if rows > ROWS_MAX {
            return None;
        }
        let parts = std::thread::available_parallelism().map_or(1, |cores| cores.get()).min(rows / PART_ROWS_MIN);
        let run = if parts > 1 && self.splittable() {
            self.run_parts(&snapshot, &found, parts, rows_max)
        } else {
            self.run_chunks(&snapshot, &found, rows_max)
        };
        run.and_then(Run::finish).map_err(dropped).ok()
    }

    /// The steps run over the rows `found` names, chunk by chunk, up to the answer.
    fn run_chunks(&self, snapshot: &ViewSnapshot, found: &[(usize, UInt32Array)], rows_max: usize) -> Result<Run<'_>> {
        let mut run = Run::new(self, rows_max)?;
        let mut scan_remaining = self.scan_fetch.unwrap_or(usize::MAX);
        for (chunk, rows) in found {
            if scan_remaining == 0 {
                break;
            }
            let batch = snapshot.read_chunk(&snapshot.chunks[*chunk], Some(rows), &self.projection, &self.scan_schema)?;
            let batch = batch.slice(0, batch.num_rows().min(scan_remaining));
            scan_remaining -= batch.num_rows();
            if !run.push(batch, 0)? {
                break;
            }
        }
        Ok(run)
    }

    /// Whether parts of the rows may run apart, their aggregates merged: an Aggregate with
    /// no Limit below it.
    fn splittable(&self) -> bool {
        let first = self.steps.iter().find(|step| matches!(step, Step::Aggregate { .. } | Step::Limit { .. }));
        self.scan_fetch.is_none() && matches!(first, Some(Step::Aggregate { .. }))
    }

    /// `found` in `parts` runs of chunks of about equal rows, one thread each (as DataFusion's
    /// index scan spreads them over partitions); the others' accumulators merged into the
    /// first's.
    fn run_parts(&self, snapshot: &ViewSnapshot, found: &[(usize, UInt32Array)], parts: usize, rows_max: usize) -> Result<Run<'_>> {
        let rows = found.iter().map(|(_, rows)| rows.len()).sum::<usize>();
        let share = rows.div_ceil(parts);
        let mut bounds = vec![0];
        let mut taken = 0;
        for (position, (_, chunk_rows)) in found.iter().enumerate() {
            taken += chunk_rows.len();
            if taken >= share * bounds.len() && position + 1 < found.len() {
                bounds.push(position + 1);
            }
        }
        bounds.push(found.len());
        let runs: Vec<Result<Run<'_>>> = std::thread::scope(|scope| {
            let others: Vec<_> = bounds[1..]
                .windows(2)
                .map(|part| scope.spawn(move || self.run_chunks(snapshot, &found[part[0]..part[1]], rows_max)))
                .collect();
            let first = self.run_chunks(snapshot, &found[..bounds[1]], rows_max);
            let others = others.into_iter().map(|handle| handle.join().unwrap_or_else(|_| Err(internal("a part's thread panicked"))));
            std::iter::once(first).chain(others).collect()
        });
        let mut runs = runs.into_iter();
        let mut first = runs.next().expect("one part at least")?;
        for run in runs {
            first.merge(run?)?;
        }
        Ok(first)
    }
}

/// One execution of a `DirectQuery`'s steps.
struct Run<'a> {
    query: &'a DirectQuery,
    /// Per step: rows a Limit still skips and may still pass.
    limits: Vec<(usize, usize)>,
    accumulators: Vec<Box<dyn Accumulator>>,
    batches: Vec<RecordBatch>,
    rows: usize,
    rows_max: usize,
    truncated: bool,
}

impl<'a> Run<'a> {
    fn new(query: &'a DirectQuery, rows_max: usize) -> Result<Run<'a>> {
        let mut limits = Vec::with_capacity(query.steps.len());
        let mut accumulators = Vec::new();
        for step in &query.steps {
            match step {
                Step::Limit { skip, fetch } => limits.push((*skip, fetch.unwrap_or(usize::MAX))),
                Step::Aggregate { aggregates, .. } => {
                    for aggregate in aggregates {
                        accumulators.push(aggregate.create_accumulator()?);
                    }
                    limits.push((0, usize::MAX));
                }
                _ => limits.push((0, usize::MAX)),
            }
        }
        Ok(Run { query, limits, accumulators, batches: Vec::new(), rows: 0, rows_max, truncated: false })
    }

    /// Takes `batch` through the steps from `first`; false once no more input can change the
    /// answer (a Limit passed all it will, or the row limit is reached).
    fn push(&mut self, mut batch: RecordBatch, first: usize) -> Result<bool> {
        for (position, step) in self.query.steps.iter().enumerate().skip(first) {
            let rows = batch.num_rows();
            match step {
                Step::Filter(predicate) => {
                    let mask = predicate.evaluate(&batch)?.into_array(rows)?;
                    batch = filter_record_batch(&batch, mask.as_boolean_opt().ok_or_else(|| internal("a filter that is not boolean"))?)?;
                }
                Step::Project { exprs, schema } => {
                    let columns = exprs.iter().map(|expr| expr.evaluate(&batch)?.into_array(rows)).collect::<Result<Vec<ArrayRef>>>()?;
                    let options = RecordBatchOptions::new().with_row_count(Some(rows));
                    batch = RecordBatch::try_new_with_options(schema.clone(), columns, &options)?;
                }
                Step::Limit { .. } => {
                    let (skip, fetch) = &mut self.limits[position];
                    let skipped = (*skip).min(rows);
                    let passed = (rows - skipped).min(*fetch);
                    *skip -= skipped;
                    *fetch -= passed;
                    batch = batch.slice(skipped, passed);
                    if *fetch == 0 {
                        self.push(batch, position + 1)?;
                        return Ok(false);
                    }
                }
                Step::Aggregate { aggregates, .. } => {
                    let accumulators = self.accumulators.iter_mut();
                    for (aggregate, accumulator) in aggregates.iter().zip(accumulators) {
                        let values = aggregate.expressions().iter().map(|expr| expr.evaluate(&batch)?.into_array(rows)).collect::<Result<Vec<_>>>()?;
                        accumulator.update_batch(&values)?;
                    }
                    return Ok(true);
                }
            }
        }
        Ok(self.keep(batch))
    }

    /// Adds what `other` (a run over other rows, before its aggregate's row) aggregated.
    fn merge(&mut self, mut other: Run<'_>) -> Result<()> {
        for (ours, theirs) in self.accumulators.iter_mut().zip(other.accumulators.iter_mut()) {
            let state = theirs.state()?.iter().map(|value| value.to_array()).collect::<Result<Vec<_>>>()?;
            ours.merge_batch(&state)?;
        }
        Ok(())
    }

    /// Keeps an answer batch within `rows_max`, as the engine's collect does.
    fn keep(&mut self, batch: RecordBatch) -> bool {
        if batch.num_rows() == 0 {
            return !self.truncated;
        }
        let room = self.rows_max - self.rows;
        if batch.num_rows() > room {
            self.batches.push(batch.slice(0, room));
            self.rows += room;
            self.truncated = true;
            return false;
        }
        self.rows += batch.num_rows();
        self.batches.push(batch);
        true
    }

    /// The aggregate's row (if any) through the steps above it, then the answer.
    fn finish(mut self) -> Result<QueryOutput> {
        let aggregate = self.query.steps.iter().position(|step| matches!(step, Step::Aggregate { .. }));
        if let (Some(position), false) = (aggregate, self.truncated) {
            let Step::Aggregate { schema, .. } = &self.query.steps[position] else {
                unreachable!("found as an aggregate");
            };
            let columns = self.accumulators.iter_mut().map(|accumulator| accumulator.evaluate()?.to_array()).collect::<Result<Vec<_>>>()?;
            let batch = RecordBatch::try_new(schema.clone(), columns)?;
            self.push(batch, position + 1)?;
        }
        Ok(QueryOutput { schema: self.query.schema.clone(), batches: self.batches, truncated: self.truncated })
    }
}

/// A direct run that failed: DataFusion's path runs the statement instead (and reports the
/// error if it is the statement's own).
fn dropped(error: DataFusionError) {
    tracing::debug!(%error, "direct answer dropped");
}

fn internal(message: &str) -> DataFusionError {
    DataFusionError::Internal(format!("direct answer: {message}"))
}

/// Whether `plan` may be kept and run again later: every function in it answers the same for
/// the same input at any time (`now()`, `random()` and the like are not kept).
pub(crate) fn reusable(plan: &LogicalPlan) -> bool {
    let mut stable = true;
    let _ = plan.apply_with_subqueries(|node| {
        for expr in node.expressions() {
            let _ = expr.apply(|expr| {
                if let Expr::ScalarFunction(function) = expr {
                    if function.func.signature().volatility != Volatility::Immutable {
                        stable = false;
                        return Ok(TreeNodeRecursion::Stop);
                    }
                }
                Ok(TreeNodeRecursion::Continue)
            });
        }
        Ok(if stable { TreeNodeRecursion::Continue } else { TreeNodeRecursion::Stop })
    });
    stable
}

/// Direct queries by SQL text, and how many answers they gave.
#[derive(Default)]
pub(crate) struct DirectCache {
    entries: Mutex<HashMap<String, Arc<DirectQuery>>>,
    answers: AtomicU64,
}

impl DirectCache {
    /// The answer of the statement kept for `sql`, if it still applies (else it is dropped).
    pub(crate) fn answer(&self, sql: &str, materializer: &Materializer, rows_max: usize) -> Option<QueryOutput> {
        let query = self.lock().get(sql)?.clone();
        let output = query.run(materializer, rows_max);
        match &output {
            Some(_) => self.answers.fetch_add(1, Ordering::Relaxed),
            None => {
                self.lock().remove(sql);
                0
            }
        };
        output
    }

    /// Runs `query` (just recognised for `sql`) and keeps it when it answered.
    pub(crate) fn run_and_keep(&self, sql: &str, query: DirectQuery, reusable: bool, materializer: &Materializer, rows_max: usize) -> Option<QueryOutput> {
        let output = query.run(materializer, rows_max)?;
        self.answers.fetch_add(1, Ordering::Relaxed);
        if reusable {
            let mut entries = self.lock();
            if entries.len() >= ENTRIES_MAX {
                entries.clear();
            }
            entries.insert(sql.to_string(), Arc::new(query));
        }
        Some(output)
    }

    /// Forgets every statement (view DDL: what a name means may have changed).
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    pub(crate) fn answers(&self) -> u64 {
        self.answers.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<DirectQuery>>> {
        self.entries.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
