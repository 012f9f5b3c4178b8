//! Evaluates a view's SELECT (as rewritten by `definition.rs`) on one micro-batch of records,
//! with DataFusion: the micro-batch is registered as a table named like the topic, so the
//! SELECT's own FROM finds it, and planned against the current inferred schema each time (a
//! widened schema is simply a new table).

use std::collections::BTreeSet;
use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray, TimestampMillisecondArray};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::common::TableReference;
use datafusion::datasource::MemTable;
use datafusion::error::Result;
use datafusion::prelude::{SessionConfig, SessionContext};

use super::definition::{ViewDefinition, KEY_COLUMN, METADATA_COLUMNS, OFFSET_COLUMN, PARTITION_COLUMN, TIMESTAMP_COLUMN};
use crate::json::{rows_to_batch, InferredSchema, Row};

/// One decoded record of a micro-batch.
pub struct SourceRecord {
    pub partition: i32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<String>,
    pub row: Row,
}

pub struct Evaluator {
    context: SessionContext,
    table: TableReference,
    referenced: BTreeSet<String>,
}

impl Evaluator {
    pub fn new(definition: &ViewDefinition) -> Evaluator {
        // One partition and no repartitioning: results come out in record order, which upsert
        // views rely on.
        let config = SessionConfig::new()
            .with_target_partitions(1)
            .with_default_catalog_and_schema("yottastore", "public")
            .with_information_schema(false);
        Evaluator {
            context: SessionContext::new_with_config(config),
            table: TableReference::bare(definition.topic.clone()),
            referenced: definition.referenced.clone(),
        }
    }

    /// The micro-batch as a table: the JSON columns under `schema`, the metadata columns, and
    /// a NULL column for each referenced column not seen yet.
    pub fn source_batch(&self, schema: &InferredSchema, records: &[SourceRecord]) -> Result<RecordBatch> {
        self.source_batch_with(schema, records, &DataType::Null)
    }

    /// `source_batch` with columns not seen yet of `unseen_type` rather than Null.
    pub fn source_batch_with(&self, schema: &InferredSchema, records: &[SourceRecord], unseen_type: &DataType) -> Result<RecordBatch> {
        let rows: Vec<Row> = records.iter().map(|record| record.row.clone()).collect();
        let json = rows_to_batch(schema, &rows)?;
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
    pub async fn run(&self, sql: &str, source: RecordBatch) -> Result<RecordBatch> {
        let schema = source.schema();
        self.register(schema.clone(), vec![source])?;
        let frame = self.context.sql(sql).await?;
        let output: SchemaRef = Arc::new(frame.schema().as_arrow().clone());
        let batches = frame.collect().await?;
        Ok(concat_batches(&output, &batches)?)
    }

    /// The output schema of `sql` over a source of `schema` (no rows).
    pub async fn plan_schema(&self, sql: &str, schema: SchemaRef) -> Result<SchemaRef> {
        self.register(schema, vec![])?;
        let frame = self.context.sql(sql).await?;
        Ok(Arc::new(frame.schema().as_arrow().clone()))
    }

    fn register(&self, schema: SchemaRef, batches: Vec<RecordBatch>) -> Result<()> {
        self.context.deregister_table(self.table.clone())?;
        // One partition, possibly empty (MemTable wants at least one).
        let table = MemTable::try_new(schema, vec![batches])?;
        self.context.register_table(self.table.clone(), Arc::new(table))?;
        Ok(())
    }
}
