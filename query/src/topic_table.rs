//! Every topic as a table: one row per record.
//!
//! Columns: `partition`, `offset`, `timestamp` (UTC, milliseconds), `key` and `value` as text
//! (NULL when null or not valid UTF-8; what the JSON functions read), `key_bytes` and
//! `value_bytes` (always the exact bytes), and `headers` (a list of {key, value}).
//!
//! A scan reads each Kafka partition as one DataFusion partition, from the log itself, up to
//! the high watermark seen when the query was planned (so a query over a busy topic ends).
//! Filters on `partition`, `offset` and `timestamp` bound what is read (see `bounds`): the
//! lower timestamp bound starts the read at the time index's answer, the upper one ends it
//! before the zones whose records are all later (each zone keeps a lower bound of its record
//! timestamps), offsets bound it directly, and partitions not asked for are skipped. `EXPLAIN ANALYZE` shows what was read: `zones_read`, `log_batches_read`,
//! `log_bytes_read`.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use broker::cluster::{Bounds, PartitionReader, Topic};
use broker::log::batch;
use broker::log::records::{self, Record, DECOMPRESSED_BYTES_MAX};
use bytes::Bytes;
use datafusion::arrow::array::{
    ArrayBuilder, ArrayRef, BinaryBuilder, Int32Builder, Int64Builder, ListBuilder, StringBuilder, StructBuilder,
    TimestampMillisecondBuilder,
};
use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, SchemaRef, TimeUnit};
use datafusion::arrow::record_batch::{RecordBatch, RecordBatchOptions};
use datafusion::catalog::Session;
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::{TableProvider, TableType};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use datafusion::physical_expr::EquivalenceProperties;
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::metrics::{Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, Partitioning, PlanProperties,
};

use crate::bounds::ScanBounds;

/// Bytes asked of the log per read: large enough to amortise a device read, small enough that
/// a LIMIT query does not read much past what it needs.
const READ_BYTES: usize = 1 << 20;

/// The columns, in schema order.
const PARTITION: usize = 0;
const OFFSET: usize = 1;
const TIMESTAMP: usize = 2;
const KEY: usize = 3;
const VALUE: usize = 4;
const KEY_BYTES: usize = 5;
const VALUE_BYTES: usize = 6;
const HEADERS: usize = 7;

fn header_fields() -> Fields {
    Fields::from(vec![Field::new("key", DataType::Utf8, false), Field::new("value", DataType::Binary, true)])
}

/// The schema every topic table has.
pub fn topic_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("partition", DataType::Int32, false),
        Field::new("offset", DataType::Int64, false),
        Field::new("timestamp", DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())), false),
        Field::new("key", DataType::Utf8, true),
        Field::new("value", DataType::Utf8, true),
        Field::new("key_bytes", DataType::Binary, true),
        Field::new("value_bytes", DataType::Binary, true),
        Field::new("headers", DataType::List(Arc::new(Field::new("item", DataType::Struct(header_fields()), true))), false),
    ]))
}

/// One topic as a DataFusion table.
#[derive(Debug)]
pub struct TopicTable {
    topic: Arc<Topic>,
    schema: SchemaRef,
}

impl TopicTable {
    pub fn new(topic: Arc<Topic>) -> TopicTable {
        TopicTable { topic, schema: topic_schema() }
    }
}

#[async_trait]
impl TableProvider for TopicTable {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        Ok(filters
            .iter()
            .map(|filter| {
                if ScanBounds::understands(filter) {
                    TableProviderFilterPushDown::Inexact
                } else {
                    TableProviderFilterPushDown::Unsupported
                }
            })
            .collect())
    }

    async fn scan(
        &self,
        _state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let bounds = ScanBounds::from_filters(filters);
        let mut partitions = Vec::new();
        if !bounds.is_empty() {
            for partition in self.topic.partitions() {
                if bounds.partitions.as_ref().is_some_and(|allowed| !allowed.contains(&partition.index)) {
                    continue;
                }
                // The snapshot that bounds this scan: [log start, last stable offset) now (SQL
                // reads committed data, as a read_committed consumer), cut where every later
                // zone's records are past the upper timestamp bound.
                let timestamp_ms_max = bounds.timestamp_ms_max;
                let reader = partition.reader();
                let Ok(Bounds { log_start_offset: log_start, high_watermark }) = reader.bounds_until(timestamp_ms_max) else {
                    continue; // deleted meanwhile: nothing to read
                };
                let start_offset = log_start.max(bounds.offset_min);
                let end_offset = high_watermark.min(bounds.offset_max.saturating_add(1));
                if start_offset < end_offset {
                    partitions.push(PartitionScan { reader, start_offset, end_offset });
                }
            }
        }
        let projection: Vec<usize> = projection.cloned().unwrap_or_else(|| (0..self.schema.fields().len()).collect());
        let projected = Arc::new(self.schema.project(&projection)?);
        Ok(Arc::new(TopicScanExec::new(self.topic.name.clone(), partitions, projection, projected, bounds, limit)))
    }
}

#[derive(Clone)]
struct PartitionScan {
    reader: PartitionReader,
    start_offset: i64,
    /// Exclusive.
    end_offset: i64,
}

/// The physical scan of one topic: one output partition per Kafka partition read.
pub struct TopicScanExec {
    topic: String,
    partitions: Vec<PartitionScan>,
    projection: Vec<usize>,
    schema: SchemaRef,
    bounds: ScanBounds,
    limit: Option<usize>,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl fmt::Debug for TopicScanExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopicScanExec").field("topic", &self.topic).field("partitions", &self.partitions.len()).finish()
    }
}

impl TopicScanExec {
    fn new(
        topic: String,
        partitions: Vec<PartitionScan>,
        projection: Vec<usize>,
        schema: SchemaRef,
        bounds: ScanBounds,
        limit: Option<usize>,
    ) -> TopicScanExec {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema.clone()),
            // At least one output partition, even when every Kafka partition was pruned.
            Partitioning::UnknownPartitioning(partitions.len().max(1)),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        TopicScanExec {
            topic,
            partitions,
            projection,
            schema,
            bounds,
            limit,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for TopicScanExec {
    fn fmt_as(&self, _format: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let partitions: Vec<String> =
            self.partitions.iter().map(|scan| format!("{}:[{}, {})", scan.reader.index(), scan.start_offset, scan.end_offset)).collect();
        write!(f, "TopicScanExec: topic={}, partitions=[{}]", self.topic, partitions.join(", "))?;
        if self.bounds.timestamp_ms_min != i64::MIN || self.bounds.timestamp_ms_max != i64::MAX {
            write!(f, ", timestamp_ms=[{}, {}]", self.bounds.timestamp_ms_min, self.bounds.timestamp_ms_max)?;
        }
        if let Some(limit) = self.limit {
            write!(f, ", limit={limit}")?;
        }
        Ok(())
    }
}

impl ExecutionPlan for TopicScanExec {
    fn name(&self) -> &'static str {
        "TopicScanExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    materializer::leaf_execution_plan_methods!();

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        let metrics = ScanMetrics {
            zones_read: MetricBuilder::new(&self.metrics).counter("zones_read", partition),
            log_batches_read: MetricBuilder::new(&self.metrics).counter("log_batches_read", partition),
            log_bytes_read: MetricBuilder::new(&self.metrics).counter("log_bytes_read", partition),
        };
        let Some(scan) = self.partitions.get(partition).cloned() else {
            if partition == 0 && self.partitions.is_empty() {
                let empty = futures::stream::empty();
                return Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), empty)));
            }
            return Err(DataFusionError::Internal(format!("TopicScanExec has no partition {partition}")));
        };
        let reader = PartitionRows {
            next_offset: scan.start_offset,
            scan,
            projection: self.projection.clone(),
            schema: self.schema.clone(),
            timestamp_ms_min: self.bounds.timestamp_ms_min,
            timestamp_ms_max: self.bounds.timestamp_ms_max,
            rows_left: self.limit.unwrap_or(usize::MAX),
            batch_rows: context.session_config().batch_size().max(1),
            started: false,
            zones: HashSet::new(),
            metrics,
        };
        let stream = futures::stream::try_unfold(reader, |mut reader| async move {
            let batch = reader.next_batch().await?;
            Ok(batch.map(|batch| (batch, reader)))
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), stream)))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

struct ScanMetrics {
    zones_read: Count,
    log_batches_read: Count,
    log_bytes_read: Count,
}

/// Reads one partition's records in offset order and turns them into record batches.
struct PartitionRows {
    scan: PartitionScan,
    next_offset: i64,
    projection: Vec<usize>,
    schema: SchemaRef,
    timestamp_ms_min: i64,
    timestamp_ms_max: i64,
    rows_left: usize,
    batch_rows: usize,
    started: bool,
    zones: HashSet<u32>,
    metrics: ScanMetrics,
}

fn log_error(error: impl fmt::Display) -> DataFusionError {
    DataFusionError::Execution(format!("reading the log: {error}"))
}

/// A read failed, or the partition went away under the scan (its topic was deleted).
fn read_error(error: broker::cluster::ApiError) -> DataFusionError {
    log_error(error.message)
}

impl PartitionRows {
    /// The next record batch of at most `batch_rows` rows, or `None` at the end.
    async fn next_batch(&mut self) -> Result<Option<RecordBatch>> {
        if !self.started {
            self.started = true;
            self.skip_to_timestamp().await?;
        }
        let mut rows = RowsBuilder::new(&self.projection, self.batch_rows.min(self.rows_left));
        while rows.len() < self.batch_rows && self.rows_left > 0 && self.next_offset < self.scan.end_offset {
            let read = self.scan.reader.read_committed(self.next_offset, READ_BYTES).await.map_err(read_error)?;
            if read.next_offset <= self.next_offset {
                // Retention removed what we were about to read, or the log ends early.
                break;
            }
            // Past what the read dropped (markers, aborted batches) once every batch kept is read.
            let mut read_end = read.next_offset;
            for log_batch in read.batches {
                let header = batch::parse_header(&log_batch).map_err(log_error)?;
                self.count_zone(header.base_offset);
                self.metrics.log_batches_read.add(1);
                self.metrics.log_bytes_read.add(log_batch.len());
                if header.base_offset >= self.scan.end_offset {
                    self.next_offset = self.scan.end_offset;
                    read_end = self.next_offset;
                    break;
                }
                // A batch whose max timestamp is below the lower bound holds no match.
                let batch_matches = header.max_timestamp_ms >= self.timestamp_ms_min;
                if batch_matches {
                    let decoded = records::decode_records(&log_batch, DECOMPRESSED_BYTES_MAX).map_err(log_error)?;
                    for record in decoded {
                        if record.offset < self.next_offset || record.offset >= self.scan.end_offset {
                            continue;
                        }
                        if record.timestamp_ms < self.timestamp_ms_min || record.timestamp_ms > self.timestamp_ms_max {
                            continue;
                        }
                        if self.rows_left == 0 {
                            break;
                        }
                        rows.push(self.scan.reader.index(), &record);
                        self.rows_left -= 1;
                    }
                }
                self.next_offset = self.next_offset.max(header.last_offset() + 1);
            }
            self.next_offset = self.next_offset.max(read_end.min(self.scan.end_offset));
        }
        if rows.len() == 0 {
            return Ok(None);
        }
        rows.finish(self.schema.clone()).map(Some)
    }

    /// Starts the read at the first batch whose max timestamp reaches the lower bound (Kafka's
    /// offsetsForTimes): every earlier batch is below it.
    async fn skip_to_timestamp(&mut self) -> Result<()> {
        if self.timestamp_ms_min == i64::MIN {
            return Ok(());
        }
        match self.scan.reader.offset_for_timestamp(self.timestamp_ms_min).await.map_err(read_error)? {
            Some(offset) => self.next_offset = self.next_offset.max(offset),
            None => self.next_offset = self.scan.end_offset,
        }
        Ok(())
    }

    fn count_zone(&mut self, offset: i64) {
        if let Some(zone) = self.scan.reader.zone_for_offset(offset) {
            if self.zones.insert(zone) {
                self.metrics.zones_read.add(1);
            }
        }
    }
}

/// Column builders for the projected columns only.
struct RowsBuilder {
    columns: Vec<(usize, Box<dyn ArrayBuilder>)>,
    rows: usize,
}

impl RowsBuilder {
    fn new(projection: &[usize], capacity_rows: usize) -> RowsBuilder {
        let capacity = capacity_rows.min(8192);
        let columns = projection
            .iter()
            .map(|&column| {
                let builder: Box<dyn ArrayBuilder> = match column {
                    PARTITION => Box::new(Int32Builder::with_capacity(capacity)),
                    OFFSET => Box::new(Int64Builder::with_capacity(capacity)),
                    TIMESTAMP => Box::new(TimestampMillisecondBuilder::with_capacity(capacity).with_timezone("UTC")),
                    KEY | VALUE => Box::new(StringBuilder::new()),
                    KEY_BYTES | VALUE_BYTES => Box::new(BinaryBuilder::new()),
                    _ => Box::new(ListBuilder::new(StructBuilder::from_fields(header_fields(), 0))
                        .with_field(Arc::new(Field::new("item", DataType::Struct(header_fields()), true)))),
                };
                (column, builder)
            })
            .collect();
        RowsBuilder { columns, rows: 0 }
    }

    fn len(&self) -> usize {
        self.rows
    }

    fn push(&mut self, partition: i32, record: &Record) {
        let text = |bytes: &Option<Bytes>| bytes.as_ref().and_then(|bytes| std::str::from_utf8(bytes).ok().map(str::to_owned));
        for (column, builder) in &mut self.columns {
            let any = builder.as_any_mut();
            match *column {
                PARTITION => any.downcast_mut::<Int32Builder>().expect("column type").append_value(partition),
                OFFSET => any.downcast_mut::<Int64Builder>().expect("column type").append_value(record.offset),
                TIMESTAMP => any.downcast_mut::<TimestampMillisecondBuilder>().expect("column type").append_value(record.timestamp_ms),
                KEY => any.downcast_mut::<StringBuilder>().expect("column type").append_option(text(&record.key)),
                VALUE => any.downcast_mut::<StringBuilder>().expect("column type").append_option(text(&record.value)),
                KEY_BYTES => any.downcast_mut::<BinaryBuilder>().expect("column type").append_option(record.key.as_deref()),
                VALUE_BYTES => any.downcast_mut::<BinaryBuilder>().expect("column type").append_option(record.value.as_deref()),
                HEADERS => {
                    let list = any.downcast_mut::<ListBuilder<StructBuilder>>().expect("column type");
                    let entries = list.values();
                    for (name, value) in &record.headers {
                        entries.field_builder::<StringBuilder>(0).expect("header key").append_value(String::from_utf8_lossy(name));
                        entries.field_builder::<BinaryBuilder>(1).expect("header value").append_option(value.as_deref());
                        entries.append(true);
                    }
                    list.append(true);
                }
                other => unreachable!("column {other} is not in the topic schema"),
            }
        }
        self.rows += 1;
    }

    fn finish(mut self, schema: SchemaRef) -> Result<RecordBatch> {
        let arrays: Vec<ArrayRef> = self.columns.iter_mut().map(|(_, builder)| builder.finish()).collect();
        // Row count explicit: a projection of no columns (COUNT(*)) still has rows.
        let options = RecordBatchOptions::new().with_row_count(Some(self.rows));
        Ok(RecordBatch::try_new_with_options(schema, arrays, &options)?)
    }
}
