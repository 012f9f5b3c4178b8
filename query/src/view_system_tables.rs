//! `system.views` (one row per view and partition of its topic: progress, lag, freshness,
//! errors) and `system.dead_letters` (the records views could not decode or evaluate). Served
//! beside the broker's system tables (`system_tables`), as snapshots per scan.
//!
//! In `system.views`: `last_applied_offset` is the last offset the view has applied (-1 if
//! none), `lag` the records between it and the high watermark, `checkpoint_offset` the last
//! offset the newest checkpoint covers (-1 if none: a restart would re-apply everything after
//! it), `rows` the whole view's, `dead_letters` and `errors` the view's totals (repeated on each
//! of its partitions), freshness in milliseconds from a produce's acknowledgement to the view
//! having applied it (NULL until measured on that partition).

use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{ArrayRef, Float64Array, Int32Array, Int64Array, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::catalog::{SchemaProvider, Session};
use datafusion::common::Result;
use datafusion::datasource::{MemTable, TableProvider, TableType};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::ExecutionPlan;
use materializer::Materializer;

use crate::system_tables::SystemSchema;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ViewTableKind {
    Views,
    DeadLetters,
}

impl ViewTableKind {
    const ALL: [ViewTableKind; 2] = [ViewTableKind::Views, ViewTableKind::DeadLetters];

    fn name(self) -> &'static str {
        match self {
            ViewTableKind::Views => "views",
            ViewTableKind::DeadLetters => "dead_letters",
        }
    }

    fn schema(self) -> SchemaRef {
        let utf8 = |name: &str| Field::new(name, DataType::Utf8, false);
        let int32 = |name: &str| Field::new(name, DataType::Int32, false);
        let int64 = |name: &str| Field::new(name, DataType::Int64, false);
        let float64 = |name: &str| Field::new(name, DataType::Float64, true);
        Arc::new(Schema::new(match self {
            ViewTableKind::Views => vec![
                utf8("name"),
                utf8("kind"),
                utf8("topic"),
                int32("partition"),
                int64("last_applied_offset"),
                int64("high_watermark"),
                int64("lag"),
                int64("rows"),
                float64("freshness_ms_last"),
                float64("freshness_ms_p50"),
                float64("freshness_ms_p99"),
                int64("dead_letters"),
                int64("errors"),
                int64("checkpoint_offset"),
                utf8("definition"),
            ],
            ViewTableKind::DeadLetters => vec![utf8("view"), int32("partition"), int64("offset"), utf8("reason"), utf8("value_prefix")],
        }))
    }
}

struct ViewSystemTable {
    kind: ViewTableKind,
    materializer: Arc<Materializer>,
    schema: SchemaRef,
}

impl fmt::Debug for ViewSystemTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ViewSystemTable({})", self.kind.name())
    }
}

impl ViewSystemTable {
    fn snapshot(&self) -> Result<RecordBatch> {
        let columns = match self.kind {
            ViewTableKind::Views => self.views(),
            ViewTableKind::DeadLetters => self.dead_letters(),
        };
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }

    fn views(&self) -> Vec<ArrayRef> {
        let mut name = Vec::new();
        let mut kind = Vec::new();
        let mut topic = Vec::new();
        let mut partition = Vec::new();
        let mut last_applied = Vec::new();
        let mut high_watermark = Vec::new();
        let mut lag = Vec::new();
        let mut rows = Vec::new();
        let mut last_ms = Vec::new();
        let mut p50_ms = Vec::new();
        let mut p99_ms = Vec::new();
        let mut dead_letters = Vec::new();
        let mut errors = Vec::new();
        let mut checkpoint = Vec::new();
        let mut definition = Vec::new();
        for progress in self.materializer.progress() {
            let view = &progress.view;
            for p in &progress.partitions {
                name.push(view.definition.name.clone());
                kind.push(view.definition.kind.as_str());
                topic.push(view.definition.topic.clone());
                partition.push(p.partition);
                last_applied.push(p.last_applied_offset);
                high_watermark.push(p.high_watermark);
                lag.push(p.lag);
                rows.push(progress.rows as i64);
                last_ms.push(p.freshness_ms_last);
                p50_ms.push(p.freshness_ms_p50);
                p99_ms.push(p.freshness_ms_p99);
                dead_letters.push(progress.dead_letters as i64);
                errors.push(progress.errors as i64);
                checkpoint.push(p.checkpoint_offset);
                definition.push(view.definition.sql.clone());
            }
        }
        vec![
            Arc::new(StringArray::from(name)),
            Arc::new(StringArray::from(kind)),
            Arc::new(StringArray::from(topic)),
            Arc::new(Int32Array::from(partition)),
            Arc::new(Int64Array::from(last_applied)),
            Arc::new(Int64Array::from(high_watermark)),
            Arc::new(Int64Array::from(lag)),
            Arc::new(Int64Array::from(rows)),
            Arc::new(Float64Array::from(last_ms)),
            Arc::new(Float64Array::from(p50_ms)),
            Arc::new(Float64Array::from(p99_ms)),
            Arc::new(Int64Array::from(dead_letters)),
            Arc::new(Int64Array::from(errors)),
            Arc::new(Int64Array::from(checkpoint)),
            Arc::new(StringArray::from(definition)),
        ]
    }

    fn dead_letters(&self) -> Vec<ArrayRef> {
        let (mut view_names, mut partition, mut offset, mut reason, mut prefix) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for view in self.materializer.views() {
            let status = view.lock_status();
            for letter in &status.dead_letters.recent {
                view_names.push(view.definition.name.clone());
                partition.push(letter.partition);
                offset.push(letter.offset);
                reason.push(letter.reason.clone());
                prefix.push(letter.value_prefix.clone());
            }
        }
        vec![
            Arc::new(StringArray::from(view_names)),
            Arc::new(Int32Array::from(partition)),
            Arc::new(Int64Array::from(offset)),
            Arc::new(StringArray::from(reason)),
            Arc::new(StringArray::from(prefix)),
        ]
    }
}

#[async_trait]
impl TableProvider for ViewSystemTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(&self, state: &dyn Session, projection: Option<&Vec<usize>>, filters: &[Expr], limit: Option<usize>) -> Result<Arc<dyn ExecutionPlan>> {
        let table = MemTable::try_new(self.schema.clone(), vec![vec![self.snapshot()?]])?;
        table.scan(state, projection, filters, limit).await
    }
}

/// Schema `system` with the view tables added to the broker's.
pub struct ViewSystemSchema {
    pub inner: SystemSchema,
    pub materializer: Arc<Materializer>,
}

impl fmt::Debug for ViewSystemSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ViewSystemSchema")
    }
}

#[async_trait]
impl SchemaProvider for ViewSystemSchema {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.inner.table_names();
        names.extend(ViewTableKind::ALL.iter().map(|kind| kind.name().to_string()));
        names
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        if let Some(kind) = ViewTableKind::ALL.into_iter().find(|kind| kind.name() == name) {
            let table = ViewSystemTable { kind, materializer: self.materializer.clone(), schema: kind.schema() };
            return Ok(Some(Arc::new(table)));
        }
        self.inner.table(name).await
    }

    fn table_exist(&self, name: &str) -> bool {
        ViewTableKind::ALL.iter().any(|kind| kind.name() == name) || self.inner.table_exist(name)
    }
}
