//! What a query sees of a view: a `ViewSnapshot`, the chunks and deletion vectors of one
//! moment as `Arc` clones. Taking one copies no rows and takes no lock the writer waits on for
//! longer than an `Arc` clone; the writer goes on appending, deleting (copy on write of the
//! vectors it touches) and sealing meanwhile, and the snapshot stays what it was.
//!
//! Indexes (`ViewIndex`): a sealed chunk's rows per value are immutable `ValueLists` built at
//! sealing; the tail's are Harris CAS lists (`index::CasIndex`) that the writer appends to
//! while queries walk them: a snapshot reads only the tail rows below its `end_row`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use datafusion::arrow::array::{new_null_array, Array, ArrayRef, RecordBatch, RecordBatchOptions, StringArray, UInt32Array};
use datafusion::arrow::compute::{can_cast_types, cast, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::Result;

use super::chunk::{Chunk, ValueLists};
use super::deletes::DeletionVector;
use crate::index::CasIndex;

/// Buckets of a tail index's value table (2^12): a few thousand distinct values spread well,
/// and the table costs 32 KiB.
const INDEX_BUCKETS_LOG2: u32 = 12;
/// Distinct values in one tail generation (more than a tail holds rows).
const TAIL_VALUES_MAX: usize = 1 << 20;

/// One chunk as of a snapshot: its rows, which of them are dead, and whether it is sealed (has
/// value lists) or a piece of the tail (indexed by the CAS lists).
#[derive(Clone, Debug)]
pub struct ChunkRef {
    pub chunk: Arc<Chunk>,
    pub deleted: Option<Arc<DeletionVector>>,
    pub sealed: bool,
}

impl ChunkRef {
    pub fn live_rows(&self) -> usize {
        self.chunk.rows - self.deleted.as_ref().map_or(0, |deleted| deleted.deleted())
    }

    pub fn is_deleted(&self, row: usize) -> bool {
        self.deleted.as_ref().is_some_and(|deleted| deleted.is_deleted(row))
    }
}

/// One index of a view over one output column, keyed by `types::key_texts` under
/// `column_type` (rebuilt when the column's type widens).
pub struct ViewIndex {
    pub name: String,
    pub column: String,
    pub column_index: usize,
    pub column_type: DataType,
    /// Sealed chunks' lists, by the chunk's first row.
    pub sealed: HashMap<u64, Arc<ValueLists>>,
    /// The tail's rows per value. Lists hold `u64::MAX - row`: a `CasList` is sorted ascending
    /// and an insert walks from the head, while new rows take ever larger ids; reversed, each
    /// new row links at the head in O(1).
    pub tail: Arc<CasIndex<String>>,
    /// Set when a value did not fit (`IndexFull`): the index no longer names every row.
    pub full: Arc<AtomicBool>,
}

impl ViewIndex {
    pub fn new(name: String, column: String, column_index: usize, column_type: DataType) -> ViewIndex {
        ViewIndex {
            name,
            column,
            column_index,
            column_type,
            sealed: HashMap::new(),
            tail: Self::fresh_tail(),
            full: Default::default(),
        }
    }

    pub(crate) fn fresh_tail() -> Arc<CasIndex<String>> {
        Arc::new(CasIndex::new(INDEX_BUCKETS_LOG2, TAIL_VALUES_MAX))
    }

    /// The same index with other sealed lists and tail (a new generation after sealing).
    pub(crate) fn with(&self, sealed: HashMap<u64, Arc<ValueLists>>, tail: Arc<CasIndex<String>>) -> ViewIndex {
        ViewIndex {
            name: self.name.clone(),
            column: self.column.clone(),
            column_index: self.column_index,
            column_type: self.column_type.clone(),
            sealed,
            tail,
            full: self.full.clone(),
        }
    }

    pub fn usable(&self) -> bool {
        !self.full.load(Ordering::Acquire)
    }

    fn list_key(row: u64) -> u64 {
        u64::MAX - row
    }

    /// Lists the tail rows `first_row..` under their keys (the writer, as it appends).
    pub(crate) fn index_tail(&self, keys: &StringArray, first_row: u64) {
        for row in 0..keys.len() {
            if keys.is_valid(row) && self.tail.insert(keys.value(row).to_string(), Self::list_key(first_row + row as u64)).is_err() {
                self.full.store(true, Ordering::Release);
            }
        }
    }

    /// Tail rows under any of `keys` below `end_row`, ascending, walked without a lock.
    pub fn tail_rows(&self, keys: &[String], end_row: u64) -> Vec<u64> {
        let guard = &crossbeam_epoch::pin();
        let mut rows = Vec::new();
        for key in keys {
            if let Some(list) = self.tail.lookup(key, guard) {
                list.scan(guard, |listed| {
                    let row = Self::list_key(listed);
                    if row < end_row {
                        rows.push(row);
                    }
                    std::ops::ControlFlow::Continue(())
                });
            }
        }
        rows.sort_unstable();
        rows.dedup();
        rows
    }
}

/// A view as of one moment. See the module documentation.
pub struct ViewSnapshot {
    pub schema: SchemaRef,
    /// Ascending by first row: sealed chunks, then the tail's pieces.
    pub chunks: Vec<ChunkRef>,
    pub indexes: Vec<Arc<ViewIndex>>,
    /// Rows with ids below this are the snapshot's; the tail's CAS lists may name later ones.
    pub end_row: u64,
    pub live_rows: usize,
}

impl ViewSnapshot {
    pub fn empty(schema: SchemaRef) -> ViewSnapshot {
        ViewSnapshot {
            schema,
            chunks: Vec::new(),
            indexes: Vec::new(),
            end_row: 0,
            live_rows: 0,
        }
    }

    /// The usable index over `column`, if any.
    pub fn index_on(&self, column: &str) -> Option<Arc<ViewIndex>> {
        self.indexes.iter().find(|index| index.column == column && index.usable()).cloned()
    }

    /// Per chunk (by position in `chunks`), its live rows under any of `keys`, ascending, as
    /// the row-id array `take` gathers with: the sealed chunks' value lists (a zero-copy slice
    /// for one key in a chunk without dead rows) and the tail's CAS lists, nothing else read.
    pub fn lookup(&self, index: &ViewIndex, keys: &[String]) -> Vec<(usize, UInt32Array)> {
        let tail = index.tail_rows(keys, self.end_row);
        let mut found = Vec::new();
        for (position, chunk) in self.chunks.iter().enumerate() {
            let rows: UInt32Array = if chunk.sealed {
                let Some(lists) = index.sealed.get(&chunk.chunk.first_row) else {
                    continue;
                };
                match keys {
                    [key] if !chunk.deleted.as_ref().is_some_and(|deleted| deleted.deleted() > 0) => lists.rows_of(key),
                    _ => {
                        let mut rows: Vec<u32> = keys.iter().flat_map(|key| lists.rows_of(key).values().to_vec()).collect();
                        rows.sort_unstable();
                        rows.dedup();
                        rows.retain(|&row| !chunk.is_deleted(row as usize));
                        rows.into()
                    }
                }
            } else {
                let (start, end) = (chunk.chunk.first_row, chunk.chunk.end_row());
                let from = tail.partition_point(|&row| row < start);
                let to = tail.partition_point(|&row| row < end);
                tail[from..to]
                    .iter()
                    .map(|row| (row - start) as u32)
                    .filter(|&row| !chunk.is_deleted(row as usize))
                    .collect::<Vec<u32>>()
                    .into()
            };
            if !rows.is_empty() {
                found.push((position, rows));
            }
        }
        found
    }

    /// A chunk's live rows (`rows` of them, or all), columns `projection` of the view, as
    /// `schema` (the projection's fields, possibly planned under narrower types).
    pub fn read_chunk(&self, chunk: &ChunkRef, rows: Option<&UInt32Array>, projection: &[usize], schema: &SchemaRef) -> Result<RecordBatch> {
        let width = chunk.chunk.schema.fields().len();
        let present: Vec<usize> = projection.iter().copied().filter(|&column| column < width).collect();
        let batch = match rows {
            Some(rows) => chunk.chunk.take(rows, &present)?,
            None => {
                let batch = chunk.chunk.read(&present)?;
                match &chunk.deleted {
                    Some(deleted) if deleted.deleted() > 0 => filter_record_batch(&batch, &deleted.live_mask())?,
                    _ => batch,
                }
            }
        };
        conform(&batch, &present, projection, schema)
    }
}

impl ViewSnapshot {
    /// A chunk's columns `projection` as they are in memory, when they are there under
    /// `schema`'s types already (nothing to cast or fill): what an index scan gathers from.
    pub fn in_memory_columns(&self, chunk: &ChunkRef, projection: &[usize], schema: &SchemaRef) -> Option<RecordBatch> {
        let width = chunk.chunk.schema.fields().len();
        if projection.iter().any(|&column| column >= width) {
            return None;
        }
        let batch = chunk.chunk.in_memory_projected(projection)?;
        let same = batch.schema().fields().iter().zip(schema.fields()).all(|(ours, wanted)| ours.data_type() == wanted.data_type());
        same.then_some(batch)
    }
}

/// `batch` (the chunk's columns `present`) as `schema` (the view's columns `projection`): a
/// column the chunk lacks is NULL, one under another type is cast.
pub fn conform(batch: &RecordBatch, present: &[usize], projection: &[usize], schema: &SchemaRef) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(projection.len());
    for (field, column) in schema.fields().iter().zip(projection) {
        let array = match present.iter().position(|present| present == column) {
            Some(at) if batch.column(at).data_type() == field.data_type() => batch.column(at).clone(),
            // Numbers whose column came to hold dates are epochs (the JSON lattice), not µs.
            Some(at) if *field.data_type() == crate::json::ColumnType::Timestamp.arrow_type() && crate::json::epochs_to_timestamps(batch.column(at)).is_some() => {
                crate::json::epochs_to_timestamps(batch.column(at)).unwrap_or_else(|| batch.column(at).clone())
            }
            // Values computed under a type the plan has not seen cast to it, or are NULL if
            // they cannot be (a plan made before the column widened).
            Some(at) if can_cast_types(batch.column(at).data_type(), field.data_type()) => cast(batch.column(at), field.data_type())?,
            Some(_) => new_null_array(field.data_type(), batch.num_rows()),
            None => new_null_array(field.data_type(), batch.num_rows()),
        };
        columns.push(array);
    }
    let options = RecordBatchOptions::new().with_row_count(Some(batch.num_rows()));
    Ok(RecordBatch::try_new_with_options(schema.clone(), columns, &options)?)
}
