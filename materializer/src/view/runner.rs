//! One task per view: reads each partition of its topic from the view's applied offset through
//! the broker's `PartitionReader`, in bounded micro-batches, normalises, evaluates and
//! applies them; sleeps on the partitions' `Notify` when caught up; checkpoints on an interval
//! and when stopped.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use broker::cluster::{Bounds, Cluster, Partition};
use broker::log::batch;
use broker::log::records::{self, DECOMPRESSED_BYTES_MAX};
use bytes::Bytes;
use datafusion::arrow::array::{Array, Float64Array, Int64Array, RecordBatch};
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::ScalarValue;
use tokio::sync::watch;

use super::aggregate::Accumulator;
use super::budget::MemoryBudget;
use super::checkpoint::{self, Checkpoint};
use super::checkpoint::{DeleteLog, StoreManifest};
use super::chunk::{chunk_file_name, Chunk};
use super::definition::{ViewDefinition, ViewKind, PASS_COLUMN, RECORD_OFFSET_COLUMN};
use super::eval::{Evaluator, SourceRecord};
use super::freshness::Freshness;
use super::maintain::{column_as, rows_to_batch, Maintainer, Tombstone, ViewLimits};
use super::store::ViewStore;
use super::{PartitionStatus, ViewError, ViewShared, ViewStatus};
use crate::json::{DeadLetterLimits, DecodeOptions, JsonNormaliser};

/// Bytes asked of the log per read, and records per micro-batch: bounded memory per view, and
/// batches large enough that DataFusion's per-batch planning is amortised.
const READ_BYTES: usize = 1 << 20;
const MICRO_BATCH_RECORDS: usize = 8192;
/// A caught-up view also wakes this often (new partitions, a topic created after the view).
const IDLE_WAKE: Duration = Duration::from_millis(500);
/// How often an idle view looks whether its checkpoint write has finished.
const WRITING_POLL: Duration = Duration::from_millis(10);

pub struct ViewRuntime {
    pub shared: Arc<ViewShared>,
    directory: PathBuf,
    maintainer: Maintainer,
    normaliser: JsonNormaliser,
    evaluator: Evaluator,
    /// Next offset to apply, per partition.
    offsets: BTreeMap<i32, i64>,
    freshness: HashMap<i32, Freshness>,
    /// Applied since the last checkpoint.
    dirty: bool,
    /// The checkpoint being written, and the offsets it covers.
    writing: Option<(tokio::task::JoinHandle<std::io::Result<Option<DeleteLog>>>, Vec<(i32, i64)>)>,
    /// The delete files of the last checkpoint.
    delete_log: DeleteLog,
    /// When the Parquet snapshot was last written with a checkpoint.
    last_snapshot: Option<Instant>,
    /// The last checkpoint left the Parquet snapshot behind.
    snapshot_stale: bool,
}

/// The index every upsert view has on its key column.
pub const KEY_INDEX: &str = "__yotta_key";
/// A view of at most this many rows rewrites its Parquet snapshot with every checkpoint; a
/// larger one at most every `SNAPSHOT_INTERVAL` (and at shutdown), since the snapshot is the
/// whole view: its cost grows with the view, the checkpoint's does not.
const SNAPSHOT_EVERY_CHECKPOINT_ROWS_MAX: usize = 1_000_000;
const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(60);

fn internal(error: impl std::fmt::Display) -> ViewError {
    ViewError::Internal(error.to_string())
}

impl ViewRuntime {
    /// A view's runtime, resumed from its checkpoint in `directory` when there is one for this
    /// definition, else starting from the beginning of its topic.
    pub async fn open(definition: Arc<ViewDefinition>, directory: PathBuf, limits: ViewLimits, budget: Arc<MemoryBudget>) -> Result<ViewRuntime, ViewError> {
        let evaluator = Evaluator::new(&definition);
        let saved = checkpoint::read(&directory).map_err(|error| ViewError::Internal(format!("reading the checkpoint of {}: {error}", definition.name)))?;
        let saved = saved.filter(|saved| saved.sql == definition.sql);
        let mut normaliser = JsonNormaliser::new(DecodeOptions::default(), DeadLetterLimits::default());
        if let Some(saved) = &saved {
            normaliser = normaliser.with_schema(saved.inferred.clone());
        }
        // The output columns as planned over what the source has shown so far.
        let source = evaluator
            .source_batch(normaliser.schema(), &normaliser.schema().empty_batch(), &[])
            .map_err(internal)?;
        let planned = evaluator
            .plan_schema(&definition.eval_sql, source.schema())
            .await
            .map_err(|error| ViewError::Invalid(error.to_string()))?;
        let output_names: Vec<String> = match definition.kind {
            ViewKind::Aggregate => aggregate_output_names(&evaluator, &definition, &normaliser).await?,
            _ => vec![],
        };
        let initial_fields: Vec<Field> = match definition.kind {
            ViewKind::Append => planned.fields().iter().map(|field| field.as_ref().clone()).collect(),
            ViewKind::Upsert => planned
                .fields()
                .iter()
                .filter(|field| field.name() != PASS_COLUMN && field.name() != RECORD_OFFSET_COLUMN)
                .map(|field| field.as_ref().clone())
                .collect(),
            ViewKind::Aggregate => vec![],
        };
        let store = Arc::new(ViewStore::new(initial_fields, budget.clone(), limits.chunk_rows));
        let mut maintainer = Maintainer::new(definition.clone(), store.clone(), limits, output_names);
        let mut status = ViewStatus::default();
        let mut offsets = BTreeMap::new();
        let mut delete_log = DeleteLog::default();
        if let Some(saved) = saved {
            checkpoint::remove_unlisted(&directory, &saved.store).map_err(internal)?;
            restore(&mut maintainer, &saved, &directory, &budget)?;
            delete_log = DeleteLog::from_manifest(&saved.store);
            offsets.extend(saved.offsets.iter().copied());
            status.dead_letters = saved.dead_letters;
            status.errors = saved.errors;
            maintainer.value_errors = 0;
            for &(partition, offset) in &saved.offsets {
                status.partitions.insert(
                    partition,
                    PartitionStatus {
                        next_offset: offset,
                        checkpoint_offset: offset,
                        ..Default::default()
                    },
                );
            }
        }
        if definition.kind == ViewKind::Aggregate {
            // Output columns before the first record: planned types.
            let fields: Vec<Field> = maintainer.aggregate_fields();
            maintainer.store.writer().widen(&fields)?;
            maintainer.ensure_global_group()?;
        }
        if let Some(key) = definition.key_column.as_deref().filter(|key| store.schema().index_of(key).is_ok()) {
            // An upsert view's key lookup reads only the key's rows, like any indexed lookup.
            store.add_index(KEY_INDEX, key)?;
        }
        let shared = Arc::new(ViewShared {
            definition,
            store,
            status: std::sync::Mutex::new(status),
        });
        Ok(ViewRuntime {
            shared,
            directory,
            maintainer,
            normaliser,
            evaluator,
            offsets,
            freshness: HashMap::new(),
            dirty: false,
            writing: None,
            delete_log,
            last_snapshot: Some(Instant::now()),
            snapshot_stale: false,
        })
    }

    /// Reads and applies what `partition` has beyond the view's offset, one micro-batch at
    /// most. True if anything was applied.
    async fn step(&mut self, partition: &Arc<Partition>) -> Result<bool, ViewError> {
        let index = partition.index;
        let reader = partition.reader();
        // Views read committed data only (read_committed): never a record of an open or an
        // aborted transaction, never a marker.
        let Bounds { log_start_offset: log_start, high_watermark } = reader.committed_bounds().map_err(|error| ViewError::Source(error.message))?;
        let next = *self.offsets.entry(index).or_insert(log_start);
        let next = if next < log_start {
            // Retention removed records the view had not applied: it can no longer equal the
            // log; say so and go on from what remains.
            self.record_error(format!(
                "partition {index}: records {next}..{log_start} were deleted before the view applied them"
            ));
            log_start
        } else {
            next
        };
        self.offsets.insert(index, next);
        self.freshness.entry(index).or_insert_with(|| Freshness::starting_at(next));
        if next >= high_watermark {
            return Ok(false);
        }
        let read = reader.read_committed(next, READ_BYTES).await.map_err(|error| ViewError::Source(error.message))?;
        // Rows of a step that failed half-way are not this step's.
        if self.normaliser.rows() > 0 {
            self.normaliser.finish_batch().map_err(internal)?;
        }
        let mut records = Vec::new();
        let mut values = Vec::new();
        let mut tombstones = Vec::new();
        let mut new_next = next;
        let upsert = self.shared.definition.kind == ViewKind::Upsert;
        // Past what the read dropped (markers, aborted batches) once every batch kept is applied.
        let mut read_end = read.next_offset.min(high_watermark);
        for log_batch in read.batches {
            if records.len() + tombstones.len() >= MICRO_BATCH_RECORDS {
                read_end = new_next;
                break;
            }
            let header = batch::parse_header(&log_batch).map_err(|error| ViewError::Source(error.to_string()))?;
            if header.base_offset >= high_watermark {
                break;
            }
            let decoded = records::decode_records(&log_batch, DECOMPRESSED_BYTES_MAX).map_err(|error| ViewError::Source(error.to_string()))?;
            for record in decoded {
                if record.offset < new_next || record.offset >= high_watermark {
                    continue;
                }
                let key = record.key.as_ref().map(|key| String::from_utf8_lossy(key).into_owned());
                match &record.value {
                    None if upsert => tombstones.push(Tombstone { offset: record.offset, key }),
                    None => {}
                    Some(value) => match self.normaliser.push(index, record.offset, value) {
                        true => {
                            records.push(SourceRecord {
                                partition: index,
                                offset: record.offset,
                                timestamp_ms: record.timestamp_ms,
                                key,
                            });
                            values.push(value.clone());
                        }
                        false => {
                            let reason = self
                                .normaliser
                                .dead_letters()
                                .recent()
                                .last()
                                .map(|letter| letter.error.to_string())
                                .unwrap_or_default();
                            self.lock_status().dead_letters.record(index, record.offset, reason, value);
                        }
                    },
                }
            }
            new_next = new_next.max(header.last_offset() + 1).min(high_watermark);
        }
        let new_next = new_next.max(read_end);
        if new_next == next {
            return Ok(false);
        }
        if !records.is_empty() || !tombstones.is_empty() {
            let evaluated = self.evaluate(&records, &values).await?;
            let before = self.maintainer.value_errors;
            self.maintainer.apply(&evaluated, &tombstones)?;
            let value_errors = self.maintainer.value_errors - before;
            if value_errors > 0 {
                self.lock_status().errors += value_errors;
            }
        }
        self.offsets.insert(index, new_next);
        self.dirty = true;
        let now = Instant::now();
        self.freshness.get_mut(&index).expect("created above").applied(new_next, now);
        Ok(true)
    }

    /// The micro-batch through the view's SELECT. If the batch fails (an expression failing on
    /// some record), records are evaluated one by one and the failing ones become dead letters.
    async fn evaluate(&mut self, records: &[SourceRecord], values: &[Bytes]) -> Result<RecordBatch, ViewError> {
        let sql = self.shared.definition.eval_sql.clone();
        let json = self.normaliser.finish_batch().map_err(internal)?;
        let source = self.evaluator.source_batch(self.normaliser.schema(), &json, records).map_err(internal)?;
        let error = match self.evaluator.run(&sql, source).await {
            Ok(batch) => return Ok(batch),
            Err(error) => error,
        };
        tracing::debug!(view = %self.shared.definition.name, %error, "micro-batch evaluation failed; evaluating record by record");
        let mut batches = Vec::new();
        for (row, (record, value)) in records.iter().zip(values).enumerate() {
            let one = std::slice::from_ref(record);
            let source = self.evaluator.source_batch(self.normaliser.schema(), &json.slice(row, 1), one).map_err(internal)?;
            match self.evaluator.run(&sql, source).await {
                Ok(batch) => batches.push(batch),
                Err(error) => self
                    .lock_status()
                    .dead_letters
                    .record(record.partition, record.offset, format!("evaluation failed: {error}"), value),
            }
        }
        match batches.first() {
            Some(first) => concat_batches(&first.schema(), &batches).map_err(internal),
            None => {
                let empty = self.evaluator.source_batch(self.normaliser.schema(), &json.slice(0, 0), &[]).map_err(internal)?;
                self.evaluator.run(&sql, empty).await.map_err(internal)
            }
        }
    }

    fn lock_status(&self) -> std::sync::MutexGuard<'_, ViewStatus> {
        self.shared.lock_status()
    }

    fn record_error(&self, message: String) {
        tracing::warn!(view = %self.shared.definition.name, "{message}");
        self.lock_status().errors += 1;
    }

    /// Measures freshness of what `partition` acknowledged and the view has applied, and
    /// publishes the partition's progress.
    fn publish(&mut self, partition: &Partition) {
        let index = partition.index;
        let Some(&next) = self.offsets.get(&index) else {
            return;
        };
        let freshness = self.freshness.entry(index).or_insert_with(|| Freshness::starting_at(next));
        let acks = partition.acks.between(freshness.measured_end(), next, 4096);
        freshness.measure(&acks);
        let freshness = freshness.clone();
        let mut status = self.lock_status();
        let entry = status.partitions.entry(index).or_default();
        entry.next_offset = next;
        entry.freshness = freshness;
    }

    /// Starts writing a checkpoint: state and offsets captured together now (under the
    /// writer's lock: `Arc` clones of chunks, the deletes since the last checkpoint), written
    /// to disk by a blocking task while the view keeps applying. One write at a time:
    /// `finish_checkpoint` collects it. `last` (shutdown) always writes the Parquet snapshot.
    fn start_checkpoint(&mut self, last: bool) -> Result<(), ViewError> {
        debug_assert!(self.writing.is_none());
        let offsets: Vec<(i32, i64)> = self.offsets.iter().map(|(&partition, &offset)| (partition, offset)).collect();
        let (rows, aggregate) = match self.shared.definition.kind {
            ViewKind::Aggregate => (None, Some(aggregate_state(&self.maintainer)?)),
            _ => (Some(self.maintainer.store.writer().capture_checkpoint(self.delete_log.full())), None),
        };
        let view = self.maintainer.store.snapshot();
        let snapshot_due =
            last || view.live_rows <= SNAPSHOT_EVERY_CHECKPOINT_ROWS_MAX || self.last_snapshot.is_none_or(|at| at.elapsed() >= SNAPSHOT_INTERVAL);
        if snapshot_due {
            self.last_snapshot = Some(Instant::now());
        }
        self.snapshot_stale = !snapshot_due;
        let (dead_letters, errors) = {
            let status = self.lock_status();
            (status.dead_letters.clone(), status.errors)
        };
        let (sql, inferred) = (self.shared.definition.sql.clone(), self.normaliser.schema().clone());
        let (directory, log) = (self.directory.clone(), self.delete_log.clone());
        let covered = offsets.clone();
        let task = tokio::task::spawn_blocking(move || {
            let mut checkpoint = Checkpoint {
                sql,
                offsets: covered,
                inferred,
                dead_letters,
                errors,
                state: RecordBatch::new_empty(view.schema.clone()),
                store: StoreManifest::default(),
            };
            let (written, obsolete) = match (rows, aggregate) {
                (Some(rows), _) => {
                    let written = checkpoint::write_rows(&directory, &rows, &log)?;
                    (checkpoint.state, checkpoint.store) = (written.tail, written.manifest);
                    (Some(written.log), written.obsolete)
                }
                (None, Some(groups)) => {
                    checkpoint.state = groups;
                    (None, Vec::new())
                }
                (None, None) => unreachable!("a checkpoint of rows or of groups"),
            };
            checkpoint::write(&directory, &checkpoint)?;
            for path in obsolete {
                if let Err(error) = std::fs::remove_file(&path) {
                    tracing::warn!(path = %path.display(), %error, "an obsolete checkpoint file could not be removed");
                }
            }
            if snapshot_due {
                checkpoint::write_snapshot(&directory, &view)?;
            }
            Ok(written)
        });
        self.writing = Some((task, offsets));
        self.dirty = false;
        Ok(())
    }

    /// Waits for the checkpoint being written, if any, and publishes the offsets it covers.
    async fn finish_checkpoint(&mut self) -> Result<(), ViewError> {
        let Some((task, offsets)) = self.writing.take() else {
            return Ok(());
        };
        let written = task.await.map_err(internal)?;
        let log = match written {
            Ok(log) => log,
            Err(error) => {
                // The state it held is still in memory: the next checkpoint writes it again,
                // with every dead row (the deletes it held were handed over).
                self.dirty = true;
                self.maintainer.store.writer().checkpoint_failed();
                return Err(ViewError::Internal(format!("writing the checkpoint: {error}")));
            }
        };
        if let Some(log) = log {
            self.delete_log = log;
        }
        // Chunks it wrote are durable: past the memory budget, they leave memory.
        self.maintainer.store.writer().spill();
        let mut status = self.lock_status();
        for (partition, offset) in offsets {
            status.partitions.entry(partition).or_default().checkpoint_offset = offset;
        }
        Ok(())
    }

    /// A checkpoint of everything applied so far, written before returning (shutdown).
    pub async fn checkpoint(&mut self) -> Result<(), ViewError> {
        self.finish_checkpoint().await?;
        if self.dirty || self.snapshot_stale {
            self.start_checkpoint(true)?;
            self.finish_checkpoint().await?;
        }
        Ok(())
    }
}

/// The output column names of an aggregate view, as DataFusion names the SELECT's items.
/// Names do not depend on types, but planning does (sum of a Null column is refused): columns
/// not seen yet are tried as Null, then as numbers, then as text.
async fn aggregate_output_names(evaluator: &Evaluator, definition: &ViewDefinition, normaliser: &JsonNormaliser) -> Result<Vec<String>, ViewError> {
    let mut first_error = None;
    for unseen_type in [DataType::Null, DataType::Int64, DataType::Float64, DataType::Utf8] {
        let source = evaluator.source_batch_with(normaliser.schema(), &normaliser.schema().empty_batch(), &[], &unseen_type).map_err(internal)?;
        match evaluator.plan_schema(&definition.select_sql, source.schema()).await {
            Ok(schema) => return Ok(schema.fields().iter().map(|field| field.name().clone()).collect()),
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    Err(ViewError::Invalid(first_error.map(|error| error.to_string()).unwrap_or_default()))
}

const GROUP_PREFIX: &str = "__yotta_g";

/// An aggregate view's groups as a checkpoint batch: the group values, then per aggregate its
/// accumulator (count, integer sum, float sum, extreme).
fn aggregate_state(maintainer: &Maintainer) -> Result<RecordBatch, ViewError> {
    let groups = &maintainer.groups;
    let mut fields = Vec::new();
    for (group, data_type) in groups.group_types.iter().enumerate() {
        fields.push(Field::new(format!("{GROUP_PREFIX}{group}"), data_type.clone(), true));
    }
    for (function, data_type) in groups.argument_types.iter().enumerate() {
        fields.push(Field::new(format!("__yotta_a{function}_count"), DataType::Int64, false));
        fields.push(Field::new(format!("__yotta_a{function}_isum"), DataType::Int64, true));
        fields.push(Field::new(format!("__yotta_a{function}_fsum"), DataType::Float64, true));
        fields.push(Field::new(format!("__yotta_a{function}_ext"), data_type.clone(), true));
    }
    // In group number order: a restore numbers them the same.
    let rows: Vec<Vec<ScalarValue>> = groups
        .keys
        .iter()
        .zip(&groups.accumulators)
        .map(|(key, accumulators)| {
            let mut row: Vec<ScalarValue> = key.clone();
            for accumulator in accumulators {
                row.push(ScalarValue::Int64(Some(accumulator.count)));
                row.push(ScalarValue::Int64(accumulator.int_sum));
                row.push(ScalarValue::Float64(accumulator.float_sum));
                row.push(accumulator.extreme.clone().unwrap_or(ScalarValue::Null));
            }
            row
        })
        .collect();
    rows_to_batch(&rows, &Arc::new(Schema::new(fields))).map_err(internal)
}

/// Loads a checkpoint into a fresh maintainer.
fn restore(maintainer: &mut Maintainer, saved: &Checkpoint, directory: &Path, budget: &Arc<MemoryBudget>) -> Result<(), ViewError> {
    match maintainer.definition.kind {
        ViewKind::Append | ViewKind::Upsert => restore_rows(maintainer, saved, directory, budget),
        ViewKind::Aggregate => restore_groups(maintainer, &saved.state),
    }
}

/// Sealed chunks from their files (in memory while the budget has room, else read from the
/// files when queried), the tail from the manifest, then the deletes replayed in order.
fn restore_rows(maintainer: &mut Maintainer, saved: &Checkpoint, directory: &Path, budget: &Arc<MemoryBudget>) -> Result<(), ViewError> {
    let state = &saved.state;
    let fields: Vec<Field> = state.schema().fields().iter().map(|field| field.as_ref().clone()).collect();
    let mut writer = maintainer.store.writer();
    writer.widen(&fields)?;
    let mut chunks = Vec::with_capacity(saved.store.chunks.len());
    for &(first_row, rows) in &saved.store.chunks {
        let path = directory.join(checkpoint::CHUNKS_DIRECTORY).join(chunk_file_name(first_row));
        let chunk = Chunk::from_file(first_row, rows, path, budget.clone()).map_err(|error| internal(format!("chunk {first_row}: {error}")))?;
        if !budget.over() {
            chunk.load().map_err(internal)?;
        }
        chunks.push(chunk);
    }
    writer.restore_sealed(chunks);
    writer.restore_tail(saved.store.tail_first_row, state.clone())?;
    for &seq in &saved.store.delete_files {
        let rows = checkpoint::read_deletes(directory, seq).map_err(|error| internal(format!("delete file {seq}: {error}")))?;
        writer.restore_deletes(rows.into_iter());
    }
    writer.publish();
    drop(writer);
    maintainer.rebuild_keys()
}

fn restore_groups(maintainer: &mut Maintainer, state: &RecordBatch) -> Result<(), ViewError> {
    let value = |column: usize, row: usize| ScalarValue::try_from_array(state.column(column), row).map_err(internal);
    let layout = maintainer.definition.aggregate.clone().expect("aggregate views have a layout");
    if state.num_columns() != layout.groups + 4 * layout.functions.len() {
        return Err(ViewError::Internal("the checkpoint does not match the view's aggregates".into()));
    }
    let schema = state.schema();
    maintainer.groups.group_types = (0..layout.groups).map(|group| schema.field(group).data_type().clone()).collect();
    maintainer.groups.argument_types = (0..layout.functions.len())
        .map(|function| schema.field(layout.groups + 4 * function + 3).data_type().clone())
        .collect();
    for row in 0..state.num_rows() {
        let key: Vec<ScalarValue> = (0..layout.groups).map(|column| value(column, row)).collect::<Result<_, _>>()?;
        let mut accumulators = Vec::with_capacity(layout.functions.len());
        for function in 0..layout.functions.len() {
            let base = layout.groups + 4 * function;
            let count = column_as::<Int64Array>(state, base, "an accumulator column")?;
            let int_sum = column_as::<Int64Array>(state, base + 1, "an accumulator column")?;
            let float_sum = column_as::<Float64Array>(state, base + 2, "an accumulator column")?;
            let extreme = value(base + 3, row)?;
            accumulators.push(Accumulator {
                count: count.value(row),
                int_sum: int_sum.is_valid(row).then(|| int_sum.value(row)),
                float_sum: float_sum.is_valid(row).then(|| float_sum.value(row)),
                extreme: (!extreme.is_null()).then_some(extreme),
            });
        }
        let group = maintainer.groups.keys.len();
        maintainer.groups.by_key.insert(key.clone(), group as u32);
        maintainer.groups.keys.push(key);
        maintainer.groups.accumulators.push(accumulators);
    }
    maintainer.write_all_groups()
}

/// The view's task: see the module documentation. Ends when `stop` turns true, after a last
/// checkpoint.
pub async fn run(mut runtime: ViewRuntime, cluster: Arc<Cluster>, checkpoint_interval: Duration, mut stop: watch::Receiver<bool>) {
    let name = runtime.shared.definition.name.clone();
    let mut last_checkpoint = Instant::now();
    loop {
        if *stop.borrow() {
            break;
        }
        let failed = runtime.lock_status().failure.is_some();
        let partitions = match cluster.topic(&runtime.shared.definition.topic) {
            Some(topic) if !failed => topic.partitions(),
            _ => Vec::new(),
        };
        // Registered before looking, so an append between the look and the wait still wakes us.
        let readers: Vec<_> = partitions.iter().map(|partition| partition.reader()).collect();
        let mut waits: Vec<Pin<Box<tokio::sync::futures::Notified<'_>>>> = readers.iter().map(|reader| Box::pin(reader.notified())).collect();
        for wait in &mut waits {
            wait.as_mut().enable();
        }
        let mut progressed = false;
        for partition in &partitions {
            match runtime.step(partition).await {
                Ok(applied) => progressed |= applied,
                Err(error) => {
                    tracing::error!(view = %name, %error, "the view stopped");
                    let mut status = runtime.lock_status();
                    status.errors += 1;
                    status.failure = Some(error.to_string());
                    break;
                }
            }
            runtime.publish(partition);
        }
        if runtime.writing.as_ref().is_some_and(|(task, _)| task.is_finished()) {
            if let Err(error) = runtime.finish_checkpoint().await {
                tracing::error!(view = %name, %error, "checkpoint failed");
                runtime.lock_status().errors += 1;
            }
        }
        if runtime.dirty && runtime.writing.is_none() && last_checkpoint.elapsed() >= checkpoint_interval {
            if let Err(error) = runtime.start_checkpoint(false) {
                tracing::error!(view = %name, %error, "checkpoint failed");
                runtime.lock_status().errors += 1;
            }
            last_checkpoint = Instant::now();
        }
        if !progressed {
            let any_data = async {
                if waits.is_empty() {
                    std::future::pending::<()>().await
                } else {
                    futures::future::select_all(waits).await;
                }
            };
            // A caught-up view still owes its checkpoint when due, and collects one being
            // written soon after it completes.
            let wake = if runtime.writing.is_some() {
                WRITING_POLL
            } else if runtime.dirty {
                checkpoint_interval
                    .saturating_sub(last_checkpoint.elapsed())
                    .clamp(Duration::from_millis(1), IDLE_WAKE)
            } else {
                IDLE_WAKE
            };
            tokio::select! {
                _ = any_data => {}
                _ = tokio::time::sleep(wake) => {}
                _ = stop.changed() => {}
            }
        }
    }
    {
        if let Err(error) = runtime.checkpoint().await {
            tracing::error!(view = %name, %error, "the last checkpoint failed");
        }
    }
}
