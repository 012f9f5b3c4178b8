//! Evaluates a view's SELECT (as rewritten by `definition.rs`) on one micro-batch of records,
//! with DataFusion: a table named like the topic (so the SELECT's own FROM finds it) whose scan
//! reads the micro-batch of the moment from a slot. The physical plan is made once per source
//! schema and executed again for each micro-batch: parsing, planning and optimising per batch
//! would cost more than evaluating a small one. A widened schema (a new column, a wider type)
//! is planned anew.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::DataFusionError;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Expr;
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    collect, DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};

use datafusion::arrow::array::{new_null_array, ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::TableReference;
use datafusion::error::Result;
use datafusion::prelude::{SessionConfig, SessionContext};

use super::definition::{ViewDefinition, KEY_COLUMN, METADATA_COLUMNS, OFFSET_COLUMN, PARTITION_COLUMN, TIMESTAMP_COLUMN};
use crate::json::InferredSchema;

/// One decoded record of a micro-batch (its JSON columns are the row of the same index in the
/// normaliser's batch).
pub struct SourceRecord {
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<String>,
}

pub struct Evaluator {
    context: SessionContext,
    table: TableReference,
    referenced: BTreeSet<String>,
    /// What the table's scan reads.
    slot: Slot,
    /// Plans by SQL text, with the source schema each was made for.
    plans: HashMap<String, (SchemaRef, Arc<dyn ExecutionPlan>)>,
}

impl Evaluator {
    pub fn new(definition: &ViewDefinition) -> Evaluator {
        // One partition and no repartitioning: results come out in record order, which upsert
        // views rely on.
        let config = SessionConfig::new()
            .with_target_partitions(1)
            .with_default_catalog_and_schema("yottastore", "public")
            .with_information_schema(false);
        let context = SessionContext::new_with_config(config);
        crate::timestamp_cast::register(&context);
        Evaluator {
            context,
            table: TableReference::bare(definition.topic.clone()),
            referenced: definition.referenced.clone(),
            slot: Slot::default(),
            plans: HashMap::new(),
        }
    }

    /// The micro-batch as a table: the JSON columns (`json`, a batch under `schema`, a row per
    /// record), the metadata columns, and a NULL column for each referenced column not seen yet.
    pub fn source_batch(&self, schema: &InferredSchema, json: &RecordBatch, records: &[SourceRecord]) -> Result<RecordBatch> {
        self.source_batch_with(schema, json, records, &DataType::Null)
    }

    /// `source_batch` with columns not seen yet of `unseen_type` rather than Null.
    pub fn source_batch_with(&self, schema: &InferredSchema, json: &RecordBatch, records: &[SourceRecord], unseen_type: &DataType) -> Result<RecordBatch> {
        if json.num_rows() != records.len() || json.num_columns() != schema.len() {
            return Err(DataFusionError::Internal(format!("{} JSON rows of {} columns for {} records of {} columns", json.num_rows(), json.num_columns(), records.len(), schema.len())));
        }
        let mut fields: Vec<Field> = Vec::new();
        let mut columns: Vec<ArrayRef> = Vec::new();
        for (field, column) in json.schema().fields().iter().zip(json.columns()) {
            // A JSON field named like a metadata column is shadowed by it.
            if !METADATA_COLUMNS.contains(&field.name().as_str()) {
                fields.push(field.as_ref().clone());
                columns.push(column.clone());
            }
        }
        fields.push(Field::new(PARTITION_COLUMN, DataType::Int32, false));
        columns.push(Arc::new(Int32Array::from_iter_values(records.iter().map(|record| record.partition))));
        fields.push(Field::new(OFFSET_COLUMN, DataType::Int64, false));
        columns.push(Arc::new(Int64Array::from_iter_values(records.iter().map(|record| record.offset))));
        fields.push(Field::new(TIMESTAMP_COLUMN, DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false));
        columns.push(Arc::new(TimestampMillisecondArray::from_iter_values(records.iter().map(|record| record.timestamp_ms)).with_timezone("UTC")));
        fields.push(Field::new(KEY_COLUMN, DataType::Utf8, true));
        columns.push(Arc::new(StringArray::from_iter(records.iter().map(|record| record.key.as_deref()))));
        for column in &self.referenced {
            if schema.field_index(column).is_none() {
                fields.push(Field::new(column, unseen_type.clone(), true));
                columns.push(new_null_array(unseen_type, records.len()));
            }
        }
        Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
    }

    /// Runs `sql` over `source` and returns its rows as one batch.
    pub async fn run(&mut self, sql: &str, source: RecordBatch) -> Result<RecordBatch> {
        let schema = source.schema();
        let plan = match self.plans.get(sql) {
            Some((planned, plan)) if *planned == schema => plan.clone(),
            _ => {
                self.register(schema.clone())?;
                let plan = self.context.sql(sql).await?.create_physical_plan().await?;
                self.plans.insert(sql.to_string(), (schema, plan.clone()));
                plan
            }
        };
        *self.slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(source);
        let batches = collect(plan.clone(), self.context.task_ctx()).await;
        self.slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).take();
        Ok(concat_batches(&plan.schema(), &batches?)?)
    }

    /// The output schema of `sql` over a source of `schema` (no rows).
    pub async fn plan_schema(&self, sql: &str, schema: SchemaRef) -> Result<SchemaRef> {
        self.register(schema)?;
        let frame = self.context.sql(sql).await?;
        Ok(Arc::new(frame.schema().as_arrow().clone()))
    }

    fn register(&self, schema: SchemaRef) -> Result<()> {
        self.context.deregister_table(self.table.clone())?;
        self.context.register_table(self.table.clone(), Arc::new(SlotTable { schema, slot: self.slot.clone() }))?;
        Ok(())
    }
}

type Slot = Arc<Mutex<Option<RecordBatch>>>;

/// The micro-batch source: a table whose scan yields the batch in the slot when executed.
#[derive(Debug)]
struct SlotTable {
    schema: SchemaRef,
    slot: Slot,
}

#[async_trait]
impl TableProvider for SlotTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Temporary
    }

    async fn scan(&self, _state: &dyn Session, projection: Option<&Vec<usize>>, _filters: &[Expr], _limit: Option<usize>) -> Result<Arc<dyn ExecutionPlan>> {
        let projection = projection.cloned();
        let schema = match &projection {
            Some(columns) => Arc::new(self.schema.project(columns)?),
            None => self.schema.clone(),
        };
        let properties = PlanProperties::new(EquivalenceProperties::new(schema.clone()), Partitioning::UnknownPartitioning(1), EmissionType::Incremental, Boundedness::Bounded);
        Ok(Arc::new(SlotExec { slot: self.slot.clone(), projection, schema, properties: Arc::new(properties) }))
    }
}

struct SlotExec {
    slot: Slot,
    projection: Option<Vec<usize>>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
}

impl fmt::Debug for SlotExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SlotExec")
    }
}

impl DisplayAs for SlotExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "SlotExec")
    }
}

impl ExecutionPlan for SlotExec {
    fn name(&self) -> &'static str {
        "SlotExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    crate::leaf_execution_plan_methods!();

    fn execute(&self, partition: usize, _context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return Err(DataFusionError::Internal(format!("SlotExec has one partition, not {partition}")));
        }
        let batch = self.slot.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).clone();
        let batch = match (batch, &self.projection) {
            (Some(batch), Some(columns)) => Some(batch.project(columns)?),
            (batch, _) => batch,
        };
        let batches: Vec<Result<RecordBatch>> = batch.into_iter().map(Ok).collect();
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), futures::stream::iter(batches))))
    }
}
