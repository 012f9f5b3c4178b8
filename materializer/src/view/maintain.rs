//! Applies evaluated micro-batches to a view's rows: append (the batch becomes a tail piece),
//! upsert (latest row per key: the new row is appended and the key's old row marked dead;
//! tombstones and rows failing WHERE delete; mostly dead chunks compacted), aggregate (fold
//! into the groups' accumulators, then rewrite the chunks of the touched groups). The writer
//! side of `store.rs`.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, Array, ArrayRef, BooleanArray, Int64Array, RecordBatch, RecordBatchOptions, StringArray};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::ScalarValue;

use super::aggregate::{result_type, Accumulator};
use super::definition::{AggregateLayout, OutputItem, ViewDefinition, ViewKind, PASS_COLUMN, RECORD_OFFSET_COLUMN};
use super::snapshot::{ChunkRef, ViewSnapshot};
use super::store::{StoreWriter, ViewStore};
use super::types::{cast_value, key_texts, widen};
use super::ViewError;

/// What one view may hold; past a limit the view stops in an error state (counted in
/// `errors`) rather than exhaust the server's memory. Rows are not limited: sealed chunks
/// spill to the data directory past the memory budget (`budget.rs`).
#[derive(Clone, Copy, Debug)]
pub struct ViewLimits {
    pub groups_max: usize,
    /// Arrow bytes of sealed chunks all views keep in memory (`serve --view-memory-mib`).
    pub memory_bytes_max: usize,
    /// Rows per sealed chunk (`chunk::CHUNK_ROWS`; tests make it small to seal, spill and
    /// compact with few records).
    pub chunk_rows: usize,
}

impl Default for ViewLimits {
    fn default() -> Self {
        ViewLimits {
            groups_max: 1_000_000,
            memory_bytes_max: 4 << 30,
            chunk_rows: super::chunk::CHUNK_ROWS,
        }
    }
}

/// Groups per chunk of an aggregate view's rows: a micro-batch rewrites the chunks of the
/// groups it touched, whole.
pub const GROUP_CHUNK_ROWS: usize = 4096;

/// Aggregate views' private state: groups numbered densely in order of first appearance
/// (group `g` is row `g` of the view), their keys and accumulators by number.
#[derive(Default)]
pub struct Groups {
    pub by_key: HashMap<Vec<ScalarValue>, u32>,
    pub keys: Vec<Vec<ScalarValue>>,
    pub accumulators: Vec<Vec<Accumulator>>,
    /// Widened types of the group expressions and of the aggregate arguments.
    pub group_types: Vec<DataType>,
    pub argument_types: Vec<DataType>,
}

pub struct Maintainer {
    pub definition: Arc<ViewDefinition>,
    pub store: Arc<ViewStore>,
    pub limits: ViewLimits,
    /// Upsert views: key text to the row id of its live row.
    pub keys: HashMap<String, u64>,
    pub groups: Groups,
    /// Output column names of aggregate views (planned from the SELECT).
    pub output_names: Vec<String>,
    /// Values that could not be folded or keyed (e.g. sum over text): skipped and counted.
    pub value_errors: u64,
}

/// A tombstone of an upsert view: the Kafka key (UTF-8) whose row goes.
pub struct Tombstone {
    pub offset: i64,
    pub key: Option<String>,
}

fn value(batch: &RecordBatch, column: usize, row: usize) -> Result<ScalarValue, ViewError> {
    ScalarValue::try_from_array(batch.column(column), row).map_err(internal)
}

/// Column `column` of `batch` as the array type `T`, or an internal error naming `what`.
pub(crate) fn column_as<'a, T: 'static>(batch: &'a RecordBatch, column: usize, what: &str) -> Result<&'a T, ViewError> {
    batch.column(column).as_any().downcast_ref::<T>().ok_or_else(|| internal(format!("{what} has an unexpected type")))
}

fn internal(error: impl std::fmt::Display) -> ViewError {
    ViewError::Internal(error.to_string())
}

fn fields_of(schema: &Schema, columns: usize) -> Vec<Field> {
    schema.fields()[..columns].iter().map(|field| field.as_ref().clone()).collect()
}

/// The key texts of a key column (`types::key_texts` under its own type).
fn key_column(array: &ArrayRef) -> Result<StringArray, ViewError> {
    key_texts(array, array.data_type()).map_err(internal)
}

impl Maintainer {
    pub fn new(definition: Arc<ViewDefinition>, store: Arc<ViewStore>, limits: ViewLimits, output_names: Vec<String>) -> Maintainer {
        let mut groups = Groups::default();
        if let Some(layout) = &definition.aggregate {
            groups.group_types = vec![DataType::Null; layout.groups];
            groups.argument_types = vec![DataType::Null; layout.functions.len()];
        }
        Maintainer {
            definition,
            store,
            limits,
            keys: HashMap::new(),
            groups,
            output_names,
            value_errors: 0,
        }
    }

    /// Applies one evaluated micro-batch (and, for upsert views, the micro-batch's tombstones)
    /// and publishes the result to queries.
    pub fn apply(&mut self, batch: &RecordBatch, tombstones: &[Tombstone]) -> Result<(), ViewError> {
        match self.definition.kind {
            ViewKind::Append => self.apply_append(batch),
            ViewKind::Upsert => self.apply_upsert(batch, tombstones),
            ViewKind::Aggregate => self.apply_aggregate(batch),
        }
    }

    fn apply_append(&mut self, batch: &RecordBatch) -> Result<(), ViewError> {
        let mut writer = self.store.writer();
        writer.widen(&fields_of(&batch.schema(), batch.num_columns()))?;
        writer.append(batch.clone())?;
        writer.publish();
        Ok(())
    }

    fn apply_upsert(&mut self, batch: &RecordBatch, tombstones: &[Tombstone]) -> Result<(), ViewError> {
        let schema = batch.schema();
        let (Ok(pass_column), Ok(offset_column)) = (schema.index_of(PASS_COLUMN), schema.index_of(RECORD_OFFSET_COLUMN)) else {
            return Err(ViewError::Internal("an upsert view's evaluation lacks its pass and offset columns".into()));
        };
        let user_columns = pass_column;
        let definition = self.definition.clone();
        let key_name = definition.key_column.as_deref().expect("upsert views have a key");
        let keys = match schema.fields()[..user_columns].iter().position(|field| field.name() == key_name) {
            Some(column) => Some(key_column(batch.column(column))?),
            None => None,
        };
        let passes = column_as::<BooleanArray>(batch, pass_column, "the pass column")?;
        let offsets = column_as::<Int64Array>(batch, offset_column, "the offset column")?;
        let store = self.store.clone();
        let mut writer = store.writer();
        writer.widen(&fields_of(&schema, user_columns))?;
        // Rows and tombstones merged in log order; kept rows get the ids they will have once
        // appended, so a later record of the same key in this batch replaces them too.
        let first_row = writer.next_row();
        let mut keep = Vec::with_capacity(batch.num_rows());
        let mut deletes = Vec::new();
        let mut tombstones = tombstones.iter().peekable();
        for row in 0..batch.num_rows() {
            while let Some(tombstone) = tombstones.next_if(|tombstone| tombstone.offset < offsets.value(row)) {
                deletes.extend(tombstone.key.as_ref().and_then(|key| self.keys.remove(key)));
            }
            let Some(key) = keys.as_ref().filter(|keys| keys.is_valid(row)).map(|keys| keys.value(row)) else {
                // No key: the record cannot be anyone's latest version.
                self.value_errors += 1;
                keep.push(false);
                continue;
            };
            let passed = passes.is_valid(row) && passes.value(row);
            keep.push(passed);
            let replaced = if passed {
                let id = first_row + keep.iter().filter(|kept| **kept).count() as u64 - 1;
                self.keys.insert(key.to_string(), id)
            } else {
                self.keys.remove(key)
            };
            deletes.extend(replaced);
        }
        for tombstone in tombstones {
            deletes.extend(tombstone.key.as_ref().and_then(|key| self.keys.remove(key)));
        }
        let user: Vec<usize> = (0..user_columns).collect();
        let kept = filter_record_batch(&batch.project(&user).map_err(internal)?, &BooleanArray::from(keep)).map_err(internal)?;
        let appended = writer.append(kept)?;
        debug_assert_eq!(appended, first_row);
        for row in deletes {
            writer.delete(row);
        }
        self.compact(&mut writer, key_name)?;
        writer.publish();
        Ok(())
    }

    /// Takes one mostly dead sealed chunk out, appending its live rows again under new ids:
    /// an upsert view holds at most about twice its live rows.
    fn compact(&mut self, writer: &mut StoreWriter, key_name: &str) -> Result<(), ViewError> {
        let Some(first_row) = writer.mostly_dead_chunk() else {
            return Ok(());
        };
        let live = writer.remove_chunk(first_row)?;
        if live.num_rows() == 0 {
            return Ok(());
        }
        let column = live.schema().index_of(key_name).map_err(internal)?;
        let keys = key_column(live.column(column))?;
        let first_row = writer.next_row();
        for row in 0..keys.len() {
            if keys.is_valid(row) {
                self.keys.insert(keys.value(row).to_string(), first_row + row as u64);
            }
        }
        writer.append(live)?;
        Ok(())
    }

    /// Upsert views after a restore: the key map from the live rows' key column.
    pub fn rebuild_keys(&mut self) -> Result<(), ViewError> {
        self.keys.clear();
        let Some(key_name) = self.definition.key_column.as_deref() else {
            return Ok(());
        };
        let writer = self.store.writer();
        let schema = writer.schema();
        let Ok(column) = schema.index_of(key_name) else {
            return Ok(());
        };
        let projected = Arc::new(schema.project(&[column]).map_err(internal)?);
        let snapshot = ViewSnapshot::empty(schema.clone());
        for chunk in writer.chunks() {
            let whole = ChunkRef {
                deleted: None,
                ..chunk.clone()
            };
            let keys = key_column(snapshot.read_chunk(&whole, None, &[column], &projected).map_err(internal)?.column(0))?;
            for row in 0..keys.len() {
                if keys.is_valid(row) && !chunk.is_deleted(row) {
                    self.keys.insert(keys.value(row).to_string(), chunk.chunk.first_row + row as u64);
                }
            }
        }
        Ok(())
    }

    fn layout(&self) -> &AggregateLayout {
        self.definition.aggregate.as_ref().expect("aggregate views have a layout")
    }

    /// The output fields of an aggregate view under the current widened types.
    pub fn aggregate_fields(&self) -> Vec<Field> {
        let layout = self.layout();
        layout
            .outputs
            .iter()
            .zip(&self.output_names)
            .map(|(item, name)| {
                let data_type = match *item {
                    OutputItem::Group(group) => self.groups.group_types[group].clone(),
                    OutputItem::Aggregate(function) => result_type(layout.functions[function], &self.groups.argument_types[function]),
                };
                Field::new(name, data_type, true)
            })
            .collect()
    }

    fn group_row(&self, group: usize) -> Vec<ScalarValue> {
        let layout = self.layout();
        let (key, accumulators) = (&self.groups.keys[group], &self.groups.accumulators[group]);
        layout
            .outputs
            .iter()
            .map(|item| match *item {
                OutputItem::Group(group) => key[group].clone(),
                OutputItem::Aggregate(function) => accumulators[function].result(layout.functions[function]),
            })
            .collect()
    }

    fn apply_aggregate(&mut self, batch: &RecordBatch) -> Result<(), ViewError> {
        let layout = self.layout().clone();
        let schema = batch.schema();
        let mut argument_columns = Vec::with_capacity(layout.functions.len());
        for function in 0..layout.functions.len() {
            argument_columns.push(schema.index_of(&format!("__yotta_a{function}")).ok());
            if let Some(column) = argument_columns[function] {
                self.groups.argument_types[function] = widen(&self.groups.argument_types[function], schema.field(column).data_type());
            }
        }
        for group in 0..layout.groups {
            self.groups.group_types[group] = widen(&self.groups.group_types[group], schema.field(group).data_type());
        }
        let mut touched = Vec::new();
        for row in 0..batch.num_rows() {
            let key: Vec<ScalarValue> = (0..layout.groups).map(|column| value(batch, column, row)).collect::<Result<_, _>>()?;
            let group = self.group_of(key)?;
            for function in 0..layout.functions.len() {
                let argument = match argument_columns[function] {
                    Some(column) => Some(value(batch, column, row)?),
                    None => None,
                };
                if self.groups.accumulators[group][function]
                    .fold(layout.functions[function], argument.as_ref())
                    .is_err()
                {
                    self.value_errors += 1;
                }
            }
            touched.push(group / GROUP_CHUNK_ROWS);
        }
        touched.sort_unstable();
        touched.dedup();
        self.write_groups(&touched)
    }

    /// The number of the group of `key`, a new one if it has none yet.
    fn group_of(&mut self, key: Vec<ScalarValue>) -> Result<usize, ViewError> {
        if let Some(&group) = self.groups.by_key.get(&key) {
            return Ok(group as usize);
        }
        if self.groups.keys.len() >= self.limits.groups_max {
            return Err(ViewError::Limit(format!("the view holds its maximum of {} groups", self.limits.groups_max)));
        }
        let group = self.groups.keys.len();
        self.groups.by_key.insert(key.clone(), group as u32);
        self.groups.keys.push(key);
        self.groups.accumulators.push(vec![Accumulator::default(); self.layout().functions.len()]);
        Ok(group)
    }

    /// Rewrites the view's chunks `chunks` (of `GROUP_CHUNK_ROWS` groups each) from their
    /// accumulators, and publishes them.
    pub fn write_groups(&mut self, chunks: &[usize]) -> Result<(), ViewError> {
        let fields = self.aggregate_fields();
        let store = self.store.clone();
        let mut writer = store.writer();
        writer.widen(&fields)?;
        let schema = Arc::new(Schema::new(fields));
        for &chunk in chunks {
            let groups = chunk * GROUP_CHUNK_ROWS..((chunk + 1) * GROUP_CHUNK_ROWS).min(self.groups.keys.len());
            let rows: Vec<Vec<ScalarValue>> = groups.map(|group| self.group_row(group)).collect();
            writer.put_chunk((chunk * GROUP_CHUNK_ROWS) as u64, rows_to_batch(&rows, &schema).map_err(internal)?)?;
        }
        writer.publish();
        Ok(())
    }

    /// Every chunk of groups, rewritten (after a restore).
    pub fn write_all_groups(&mut self) -> Result<(), ViewError> {
        let chunks: Vec<usize> = (0..self.groups.keys.len().div_ceil(GROUP_CHUNK_ROWS)).collect();
        self.write_groups(&chunks)
    }

    /// A view without GROUP BY has exactly one row even over no records (count 0, sums NULL),
    /// as SQL answers it; grouped views start empty.
    pub fn ensure_global_group(&mut self) -> Result<(), ViewError> {
        if self.layout().groups != 0 || !self.groups.keys.is_empty() {
            return Ok(());
        }
        self.group_of(Vec::new())?;
        self.write_groups(&[0])
    }
}

/// `rows` (values by column of `schema`, possibly computed under narrower types: cast to it)
/// as one batch.
pub fn rows_to_batch(rows: &[Vec<ScalarValue>], schema: &SchemaRef) -> datafusion::common::Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for (column, field) in schema.fields().iter().enumerate() {
        let data_type = field.data_type();
        if rows.is_empty() || *data_type == DataType::Null {
            columns.push(new_null_array(data_type, rows.len()));
            continue;
        }
        let values = rows.iter().map(|row| match row.get(column) {
            Some(value) => cast_value(value, data_type),
            None => ScalarValue::try_from(data_type).unwrap_or(ScalarValue::Null),
        });
        columns.push(ScalarValue::iter_to_array(values)?);
    }
    let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
    Ok(RecordBatch::try_new_with_options(schema.clone(), columns, &options)?)
}
