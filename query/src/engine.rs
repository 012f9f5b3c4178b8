//! `QueryEngine`: one DataFusion session template per server, and the limits every query runs
//! under. Front ends (HTTP, the CLI through HTTP, Postgres) all come through `execute`.
//!
//! Catalog `yottastore`: schema `public` holds every topic (`topics::TopicSchema`), schema
//! `system` the broker's state (`system_tables`). Each query gets its own memory pool (the
//! per-query memory limit) over the shared session state, and its own timeout.
//!
//! An indexed lookup on a view (a statement `direct` recognises in its optimized plan) is
//! kept by SQL text and answered again without DataFusion's planning; its rows are bounded
//! (1M) instead of its memory, as its run is too short to need the timeout.
//!
//! Architecture invariant: SQL can only read. DDL and DML (CREATE TABLE, INSERT, COPY ...) are
//! refused at planning, so no statement can pin memory in the server or write files.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use broker::cluster::Cluster;
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{MemoryCatalogProvider, SchemaProvider};
use datafusion::catalog::CatalogProvider;
use datafusion::common::{DataFusionError, ParamValues, Result};
use datafusion::datasource::TableProvider;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::{SessionState, SessionStateBuilder};
use datafusion::logical_expr::LogicalPlan;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::execute_stream;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use futures::StreamExt;

use crate::direct::{self, DirectCache, DirectQuery};
use crate::system_tables::SystemSchema;
use crate::topic_table::TopicTable;
use crate::view_system_tables::ViewSystemSchema;
use crate::view_table::ViewTable;
use materializer::view::ViewStatement;
use materializer::Materializer;

pub const CATALOG: &str = "yottastore";

/// What every query is held to.
#[derive(Clone, Debug)]
pub struct QueryLimits {
    /// Planning and execution together.
    pub timeout: Duration,
    /// DataFusion's memory pool per query: operators that would exceed it fail (or spill).
    pub memory_bytes_max: usize,
    /// Rows returned to a client; the rest is cut and the answer says so.
    pub rows_max: usize,
    /// Longest SQL text accepted.
    pub sql_bytes_max: usize,
}

impl Default for QueryLimits {
    fn default() -> Self {
        QueryLimits {
            timeout: Duration::from_secs(60),
            memory_bytes_max: 512 << 20,
            rows_max: 100_000,
            sql_bytes_max: 1 << 20,
        }
    }
}

/// A query's answer.
#[derive(Debug)]
pub struct QueryOutput {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    /// Rows beyond `rows_max` were not returned.
    pub truncated: bool,
}

impl QueryOutput {
    pub fn row_count(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }
}

/// Why a query failed, as a message for the user.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("SQL text of {bytes} bytes is longer than the limit of {limit_bytes} bytes")]
    TooLong { bytes: usize, limit_bytes: usize },
    #[error("query timed out after {} ms", .0.as_millis())]
    Timeout(Duration),
    #[error("{0}")]
    DataFusion(#[from] DataFusionError),
    /// A view statement refused or failed (materialized views, `view_table`).
    #[error("{0}")]
    View(#[from] materializer::view::ViewError),
}

pub struct QueryEngine {
    cluster: Arc<Cluster>,
    /// Materialized views: tables in `public`, `system.views`, and the view statements.
    materializer: Option<Arc<Materializer>>,
    limits: QueryLimits,
    template: SessionState,
    direct: DirectCache,
}

impl fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QueryEngine").field("limits", &self.limits).finish()
    }
}

impl QueryEngine {
    pub fn new(cluster: Arc<Cluster>, limits: QueryLimits) -> Result<QueryEngine> {
        QueryEngine::with_materializer(cluster, limits, None)
    }

    /// An engine that also serves `materializer`'s views and view statements.
    pub fn with_materializer(cluster: Arc<Cluster>, limits: QueryLimits, materializer: Option<Arc<Materializer>>) -> Result<QueryEngine> {
        let mut config = SessionConfig::new()
            .with_information_schema(true)
            .with_default_catalog_and_schema(CATALOG, "public")
            .with_create_default_catalog_and_schema(false);
        // Errors carry the span of the SQL they are about: the Postgres front end reports it as
        // the error's position.
        config.options_mut().sql_parser.collect_spans = true;
        // Each sort reserves this much of the query's pool up front for merging what it spills
        // (DataFusion's default, 10 MiB, is most of a small pool: two sorts of an ORDER BY
        // over two partitions would not fit in 16 MiB).
        config.options_mut().execution.sort_spill_reservation_bytes = (limits.memory_bytes_max / 16).min(10 << 20);
        let mut context = SessionContext::new_with_config(config);
        let catalog = MemoryCatalogProvider::new();
        catalog.register_schema("public", Arc::new(TopicSchema { cluster: cluster.clone(), materializer: materializer.clone() }))?;
        match &materializer {
            None => catalog.register_schema("system", Arc::new(SystemSchema::new(cluster.clone())))?,
            Some(materializer) => catalog.register_schema(
                "system",
                Arc::new(ViewSystemSchema { inner: SystemSchema::new(cluster.clone()), materializer: materializer.clone() }),
            )?,
        };
        context.register_catalog(CATALOG, Arc::new(catalog));
        datafusion_functions_json::register_all(&mut context)?;
        // Schema `pg_catalog` and Postgres' functions (pg_table_is_visible, format_type,
        // current_database, quote_ident ...) for the Postgres front end's clients (psql's `\d`,
        // Grafana). They live in the one template, so catalog queries see the same tables, run
        // under the same limits and are answered the same over HTTP.
        datafusion_pg_catalog::setup_pg_catalog(&context, CATALOG, datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider)
            .map_err(|error| *error)?;
        context.register_udf(crate::pg::current_setting_udf(limits.timeout.as_millis()));
        // CAST(x AS TIMESTAMP) reads every time spelling JSON decoding reads, epochs included.
        materializer::timestamp_cast::register(&context);
        Ok(QueryEngine { cluster, materializer, limits, template: context.state(), direct: DirectCache::default() })
    }

    pub fn limits(&self) -> &QueryLimits {
        &self.limits
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// A session for one query: the shared catalog and functions, a fresh memory pool.
    pub fn session(&self) -> Result<SessionContext> {
        let runtime = RuntimeEnvBuilder::new().with_memory_limit(self.limits.memory_bytes_max, 1.0).build_arc()?;
        let state = SessionStateBuilder::new_from_existing(self.template.clone()).with_runtime_env(runtime).build();
        Ok(SessionContext::new_with_state(state))
    }

    /// Plans and runs one read-only statement within the limits.
    pub async fn execute(&self, sql: &str) -> Result<QueryOutput, QueryError> {
        if sql.len() > self.limits.sql_bytes_max {
            return Err(QueryError::TooLong { bytes: sql.len(), limit_bytes: self.limits.sql_bytes_max });
        }
        let timeout = self.limits.timeout;
        match tokio::time::timeout(timeout, self.run(sql)).await {
            Ok(result) => result,
            Err(_) => Err(QueryError::Timeout(timeout)),
        }
    }

    async fn run(&self, sql: &str) -> Result<QueryOutput, QueryError> {
        // View statements are the only DDL served; everything else stays refused below.
        if let Some(statement) = materializer::view::parse_statement(sql) {
            return self.run_view_statement(statement?).await;
        }
        if let Some(materializer) = &self.materializer {
            if let Some(output) = self.direct.answer(sql, materializer, self.limits.rows_max) {
                return Ok(output);
            }
        }
        let session = self.session()?;
        let state = session.state();
        let plan = state.create_logical_plan(sql).await?;
        read_only().verify_plan(&plan)?;
        let schema: SchemaRef = Arc::new(plan.schema().as_arrow().clone());
        // What `DataFrame::execute_stream` does, with the optimized plan seen on the way: an
        // indexed lookup on a view is answered (and kept) by `direct`.
        let optimized = state.optimize(&plan)?;
        if let Some(materializer) = &self.materializer {
            if let Some(query) = DirectQuery::recognise(&optimized, schema.clone(), &state) {
                if let Some(output) = self.direct.run_and_keep(sql, query, direct::reusable(&plan), materializer, self.limits.rows_max) {
                    return Ok(output);
                }
            }
        }
        let physical = state.query_planner().create_physical_plan(&optimized, &state).await?;
        let stream = execute_stream(physical, session.task_ctx())?;
        self.collect(schema, stream).await
    }

    async fn run_view_statement(&self, statement: ViewStatement) -> Result<QueryOutput, QueryError> {
        let Some(materializer) = &self.materializer else {
            return Err(QueryError::View(materializer::view::ViewError::Invalid("materialized views are not enabled on this server".into())));
        };
        // A view or index made or dropped changes what kept statements mean.
        self.direct.clear();
        let result = materializer.execute(statement).await;
        self.direct.clear();
        let batch = result?;
        Ok(QueryOutput { schema: batch.schema(), batches: vec![batch], truncated: false })
    }

    /// Statements kept for direct answers from a view's index (`direct`).
    pub fn direct_statements(&self) -> usize {
        self.direct.len()
    }

    /// Queries answered directly from a view's index, without DataFusion's planning.
    pub fn direct_answers(&self) -> u64 {
        self.direct.answers()
    }

    /// Plans one read-only statement that may hold `$1`-style parameters, without running it:
    /// the extended query protocol's Parse. The plan's parameter and result types answer
    /// Describe; `execute_prepared` runs it with the values bound.
    pub async fn prepare(&self, sql: &str) -> Result<PreparedStatement, QueryError> {
        if sql.len() > self.limits.sql_bytes_max {
            return Err(QueryError::TooLong { bytes: sql.len(), limit_bytes: self.limits.sql_bytes_max });
        }
        let timeout = self.limits.timeout;
        // A view statement is only parsed here (it has no parameters); it runs at Execute, as
        // through `execute`.
        if let Some(statement) = materializer::view::parse_statement(sql) {
            return Ok(PreparedStatement { prepared: Prepared::View(statement?) });
        }
        let planned = async {
            let session = self.session()?;
            let plan = session.state().create_logical_plan(sql).await?;
            read_only().verify_plan(&plan)?;
            Ok::<_, QueryError>(PreparedStatement { prepared: Prepared::Plan(plan) })
        };
        match tokio::time::timeout(timeout, planned).await {
            Ok(result) => result,
            Err(_) => Err(QueryError::Timeout(timeout)),
        }
    }

    /// Runs a prepared statement with its parameters bound, under the same limits as `execute`
    /// (a fresh memory pool, the timeout, the row limit).
    pub async fn execute_prepared(&self, statement: &PreparedStatement, parameters: ParamValues) -> Result<QueryOutput, QueryError> {
        let timeout = self.limits.timeout;
        let run = async {
            match &statement.prepared {
                Prepared::Plan(plan) => {
                    let plan = plan.clone().replace_params_with_values(&parameters)?;
                    let frame = self.session()?.execute_logical_plan(plan).await?;
                    let schema: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
                    self.collect(schema, frame.execute_stream().await?).await
                }
                Prepared::View(view_statement) => self.run_view_statement(view_statement.clone()).await,
            }
        };
        match tokio::time::timeout(timeout, run).await {
            Ok(result) => result,
            Err(_) => Err(QueryError::Timeout(timeout)),
        }
    }

    /// Runs `stream` (answering `schema`), keeping at most `rows_max` rows.
    async fn collect(&self, schema: SchemaRef, mut stream: SendableRecordBatchStream) -> Result<QueryOutput, QueryError> {
        let mut batches = Vec::new();
        let mut rows = 0usize;
        let mut truncated = false;
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            let room = self.limits.rows_max - rows;
            if batch.num_rows() > room {
                batches.push(batch.slice(0, room));
                truncated = true;
                break;
            }
            rows += batch.num_rows();
            batches.push(batch);
        }
        Ok(QueryOutput { schema, batches, truncated })
    }
}

/// SQL only reads: DDL, DML and statements (SET, PREPARE ...) are refused at planning.
fn read_only() -> SQLOptions {
    SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false)
}

/// A planned statement whose `$n` parameters are not bound yet.
#[derive(Clone, Debug)]
pub struct PreparedStatement {
    prepared: Prepared,
}

#[derive(Clone, Debug)]
enum Prepared {
    Plan(LogicalPlan),
    /// A view statement (CREATE MATERIALIZED VIEW ...): no parameters, run by the materializer.
    View(ViewStatement),
}

impl PreparedStatement {
    /// The parameters' types, `$1` first; `None` where the plan does not fix one.
    pub fn parameter_types(&self) -> Result<Vec<Option<DataType>>> {
        let plan = match &self.prepared {
            Prepared::Plan(plan) => plan,
            Prepared::View(_) => return Ok(Vec::new()),
        };
        let types = plan.get_parameter_types()?;
        let mut numbered: Vec<(usize, Option<DataType>)> = Vec::with_capacity(types.len());
        for (id, data_type) in types {
            let number = id.trim_start_matches('$').parse::<usize>().map_err(|_| {
                DataFusionError::Plan(format!("parameter {id} is not of the form $n (n from 1)"))
            })?;
            numbered.push((number, data_type));
        }
        numbered.sort_by_key(|(number, _)| *number);
        // `$1, $3` without `$2`: the missing one has no type, as in Postgres. The wire protocol
        // counts parameters in 16 bits, which bounds the list.
        let count = numbered.last().map_or(0, |(number, _)| *number);
        if count > usize::from(u16::MAX) {
            return Err(DataFusionError::Plan(format!("parameter ${count} is beyond the limit of {} parameters", u16::MAX)));
        }
        let mut ordered = vec![None; count];
        for (number, data_type) in numbered {
            if number == 0 {
                return Err(DataFusionError::Plan("parameters are numbered from $1".into()));
            }
            ordered[number - 1] = data_type;
        }
        Ok(ordered)
    }

    /// The columns the statement answers.
    pub fn schema(&self) -> SchemaRef {
        match &self.prepared {
            Prepared::Plan(plan) => Arc::new(plan.schema().as_arrow().clone()),
            Prepared::View(statement) => statement.answer_schema(),
        }
    }
}

/// Schema `public`: one table per topic and per materialized view, looked up live (topics
/// and views come and go; their names never clash).
struct TopicSchema {
    cluster: Arc<Cluster>,
    materializer: Option<Arc<Materializer>>,
}

impl fmt::Debug for TopicSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TopicSchema")
    }
}

#[async_trait]
impl SchemaProvider for TopicSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.cluster.topics().iter().map(|topic| topic.name.clone()).collect();
        names.extend(self.materializer.iter().flat_map(|materializer| materializer.view_names()));
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if let Some(view) = self.materializer.as_ref().and_then(|materializer| materializer.view(name)) {
            return Ok(Some(Arc::new(ViewTable::new(view))));
        }
        Ok(self.cluster.topic(name).map(|topic| Arc::new(TopicTable::new(topic)) as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.cluster.topic(name).is_some() || self.materializer.as_ref().is_some_and(|materializer| materializer.view(name).is_some())
    }
}
