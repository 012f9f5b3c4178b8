//! A view's state as Arrow: sealed, immutable chunks plus a tail of small pieces (one per
//! applied micro-batch), deletion vectors for dead rows, and indexes (`snapshot.rs`).
//!
//! Row ids are `u64`s that only grow: a chunk holds rows `first_row..first_row + rows`. The
//! writer (the view's task, and DDL building an index) works on `StoreWriter` behind a mutex;
//! each change ends with `publish`, which replaces the `ViewSnapshot` that queries clone (an
//! `Arc` clone under a read lock: queries never wait for the writer, nor it for them).
//!
//! The tail: each micro-batch appends a piece; past `TAIL_PIECES_MAX` pieces they are joined
//! into one, and past `CHUNK_ROWS` rows the tail is sealed into a chunk, whose value lists
//! are built then; the tail's CAS lists start afresh. Upserts and deletes mark rows dead in
//! their chunk's deletion vector; `remove_chunk` takes a mostly dead chunk out (its live rows
//! are appended again by the caller, which keeps the key map: `maintain.rs`).

use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::datatypes::{Field, Schema, SchemaRef};
use datafusion::common::Result;

use super::budget::MemoryBudget;
use super::chunk::{Chunk, ValueLists};
use super::deletes::DeletionVector;
use super::snapshot::{conform, ChunkRef, ViewIndex, ViewSnapshot};
use super::types::{key_texts, widen};
use super::ViewError;

/// Tail pieces before they are joined into one (scans over many tiny pieces cost more than
/// joining them).
const TAIL_PIECES_MAX: usize = 32;
/// Rows of a chunk at most: row places in a chunk are `u32`s.
pub const CHUNK_ROWS_MAX: usize = 1 << 24;

fn internal(error: impl std::fmt::Display) -> ViewError {
    ViewError::Internal(error.to_string())
}

/// What a checkpoint writes of the rows (see `checkpoint.rs`), captured under the writer's
/// lock without copying rows.
pub struct StoreCheckpoint {
    pub schema: SchemaRef,
    /// Every sealed chunk; those without a file yet are written.
    pub sealed: Vec<Arc<Chunk>>,
    pub tail: Vec<ChunkRef>,
    pub tail_first_row: u64,
    /// Rows deleted since the last checkpoint, or every dead row when `consolidated`.
    pub deletes: Vec<u64>,
    pub consolidated: bool,
    /// Chunks taken out since the last checkpoint: their files go once the manifest is durable.
    pub removed: Vec<u64>,
}

pub struct StoreWriter {
    fields: Vec<Field>,
    schema: SchemaRef,
    chunks: Vec<ChunkRef>,
    /// `chunks[tail_start..]` are the tail's pieces.
    tail_start: usize,
    next_row: u64,
    live_rows: usize,
    indexes: Vec<Arc<ViewIndex>>,
    pending_deletes: Vec<u64>,
    removed: Vec<u64>,
    /// The next checkpoint writes every dead row (a failed one lost its deletes).
    consolidate: bool,
    budget: Arc<MemoryBudget>,
    /// Rows of the tail that seal it (`CHUNK_ROWS` but in tests).
    chunk_rows: usize,
    published: Arc<RwLock<Arc<ViewSnapshot>>>,
}

impl StoreWriter {
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    pub fn live_rows(&self) -> usize {
        self.live_rows
    }

    pub fn next_row(&self) -> u64 {
        self.next_row
    }

    pub fn chunks(&self) -> &[ChunkRef] {
        &self.chunks
    }

    /// Widens the output columns with a micro-batch's (`fields` in SELECT order, possibly more
    /// of them under `SELECT *`). An index on a column whose type changed is rebuilt, since
    /// its keys are texts under the old type.
    pub fn widen(&mut self, fields: &[Field]) -> Result<(), ViewError> {
        let mut changed = Vec::new();
        for (index, field) in fields.iter().enumerate() {
            match self.fields.get_mut(index) {
                Some(existing) => {
                    let wider = widen(existing.data_type(), field.data_type());
                    if wider != *existing.data_type() {
                        *existing = Field::new(existing.name(), wider, true);
                        changed.push(index);
                    }
                }
                None => {
                    self.fields.push(Field::new(field.name(), field.data_type().clone(), true));
                    changed.push(index);
                }
            }
        }
        if changed.is_empty() {
            return Ok(());
        }
        self.schema = Arc::new(Schema::new(self.fields.clone()));
        for position in 0..self.indexes.len() {
            let index = &self.indexes[position];
            if changed.contains(&index.column_index) {
                let rebuilt = self.build_index(index.name.clone(), index.column_index)?;
                self.indexes[position] = Arc::new(rebuilt);
            }
        }
        Ok(())
    }

    /// Appends `batch` (columns by output position, a prefix of the view's) to the tail; the
    /// id of its first row. Call `publish` when the micro-batch is done.
    pub fn append(&mut self, batch: RecordBatch) -> Result<u64, ViewError> {
        let first_row = self.next_row;
        if batch.num_rows() == 0 {
            return Ok(first_row);
        }
        for index in &self.indexes {
            if index.column_index < batch.num_columns() {
                // Keyed as queries read the column (`conform`: numbers in a column of dates are
                // epochs), as the sealed chunks' lists are: an index answers `=` exactly.
                let column = [index.column_index];
                let schema = Arc::new(self.schema.project(&column).map_err(internal)?);
                let conformed = conform(&batch.project(&column).map_err(internal)?, &column, &column, &schema).map_err(internal)?;
                index.index_tail(&key_texts(conformed.column(0), &index.column_type).map_err(internal)?, first_row);
            }
        }
        self.next_row += batch.num_rows() as u64;
        self.live_rows += batch.num_rows();
        self.chunks.push(ChunkRef {
            chunk: Arc::new(Chunk::in_memory(first_row, batch, self.budget.clone())),
            deleted: None,
            sealed: false,
        });
        self.tidy_tail()?;
        Ok(first_row)
    }

    fn tail_rows(&self) -> usize {
        self.chunks[self.tail_start..].iter().map(|piece| piece.chunk.rows).sum()
    }

    fn tidy_tail(&mut self) -> Result<(), ViewError> {
        if self.tail_rows() >= self.chunk_rows {
            self.seal()?;
        } else if self.chunks.len() - self.tail_start > TAIL_PIECES_MAX {
            let joined = self.join_tail()?;
            self.chunks.truncate(self.tail_start);
            self.chunks.push(joined);
        }
        Ok(())
    }

    /// The tail's pieces as one (rows under the view's current types), row ids unchanged.
    fn join_tail(&self) -> Result<ChunkRef, ViewError> {
        let pieces = &self.chunks[self.tail_start..];
        let snapshot = ViewSnapshot::empty(self.schema.clone());
        let projection: Vec<usize> = (0..self.fields.len()).collect();
        let mut batches = Vec::with_capacity(pieces.len());
        for piece in pieces {
            let whole = ChunkRef {
                deleted: None,
                ..piece.clone()
            };
            batches.push(snapshot.read_chunk(&whole, None, &projection, &self.schema).map_err(internal)?);
        }
        let batch = concat_batches(&self.schema, &batches).map_err(internal)?;
        let deleted = DeletionVector::concat(pieces.iter().map(|piece| (piece.chunk.rows, piece.deleted.as_deref())));
        let first_row = pieces[0].chunk.first_row;
        let deleted = (deleted.deleted() > 0).then(|| Arc::new(deleted));
        Ok(ChunkRef {
            chunk: Arc::new(Chunk::in_memory(first_row, batch, self.budget.clone())),
            deleted,
            sealed: false,
        })
    }

    /// The tail becomes a sealed chunk with value lists per index; the CAS lists start afresh.
    pub fn seal(&mut self) -> Result<(), ViewError> {
        if self.tail_start == self.chunks.len() {
            return Ok(());
        }
        let mut sealed = self.join_tail()?;
        sealed.sealed = true;
        self.chunks.truncate(self.tail_start);
        let mut indexes = Vec::with_capacity(self.indexes.len());
        for index in &self.indexes {
            let mut lists = index.sealed.clone();
            lists.insert(sealed.chunk.first_row, Arc::new(self.value_lists(&sealed, index)?));
            indexes.push(Arc::new(index.with(lists, ViewIndex::fresh_tail())));
        }
        self.indexes = indexes;
        self.chunks.push(sealed);
        self.tail_start = self.chunks.len();
        Ok(())
    }

    fn value_lists(&self, chunk: &ChunkRef, index: &ViewIndex) -> Result<ValueLists, ViewError> {
        let whole = ChunkRef {
            deleted: None,
            ..chunk.clone()
        };
        let snapshot = ViewSnapshot::empty(self.schema.clone());
        let schema = Arc::new(self.schema.project(&[index.column_index]).map_err(internal)?);
        let column = snapshot.read_chunk(&whole, None, &[index.column_index], &schema).map_err(internal)?;
        Ok(ValueLists::build(&key_texts(column.column(0), &index.column_type).map_err(internal)?))
    }

    fn find(&self, row: u64) -> Option<usize> {
        let position = self.chunks.partition_point(|chunk| chunk.chunk.first_row <= row).checked_sub(1)?;
        (row < self.chunks[position].chunk.end_row()).then_some(position)
    }

    /// Marks `row` dead; false if it was not a live row.
    pub fn delete(&mut self, row: u64) -> bool {
        let Some(position) = self.find(row) else {
            return false;
        };
        let chunk = &mut self.chunks[position];
        let rows = chunk.chunk.rows;
        let place = (row - chunk.chunk.first_row) as usize;
        let deleted = Arc::make_mut(chunk.deleted.get_or_insert_with(|| Arc::new(DeletionVector::new(rows))));
        if !deleted.delete(place) {
            return false;
        }
        self.live_rows -= 1;
        self.pending_deletes.push(row);
        true
    }

    /// The first sealed chunk at most half alive, if any (upsert views compact it).
    pub fn mostly_dead_chunk(&self) -> Option<u64> {
        self.chunks[..self.tail_start]
            .iter()
            .find(|chunk| chunk.live_rows() * 2 < chunk.chunk.rows)
            .map(|chunk| chunk.chunk.first_row)
    }

    /// Takes the sealed chunk at `first_row` out; its live rows under the view's types, which
    /// the caller appends again (new ids) if it wants them.
    pub fn remove_chunk(&mut self, first_row: u64) -> Result<RecordBatch, ViewError> {
        let position = self.chunks[..self.tail_start]
            .iter()
            .position(|chunk| chunk.chunk.first_row == first_row)
            .ok_or_else(|| internal("no such chunk"))?;
        let projection: Vec<usize> = (0..self.fields.len()).collect();
        let live = ViewSnapshot::empty(self.schema.clone())
            .read_chunk(&self.chunks[position], None, &projection, &self.schema)
            .map_err(internal)?;
        let removed = self.chunks.remove(position);
        self.tail_start -= 1;
        self.live_rows -= removed.live_rows();
        if removed.chunk.is_durable() {
            self.removed.push(first_row);
        }
        self.indexes = self
            .indexes
            .iter()
            .map(|index| {
                let mut lists = index.sealed.clone();
                lists.remove(&first_row);
                Arc::new(index.with(lists, index.tail.clone()))
            })
            .collect();
        Ok(live)
    }

    /// Aggregate views: the rows of groups `first_row..` as one sealed chunk, replacing the
    /// one there. No tail, no deletes: a touched range of groups is rewritten whole.
    pub fn put_chunk(&mut self, first_row: u64, batch: RecordBatch) -> Result<(), ViewError> {
        debug_assert_eq!(self.tail_start, self.chunks.len(), "aggregate views have no tail");
        let chunk = ChunkRef {
            chunk: Arc::new(Chunk::in_memory(first_row, batch, self.budget.clone())),
            deleted: None,
            sealed: true,
        };
        let position = self.chunks.partition_point(|existing| existing.chunk.first_row < first_row);
        let replaced = self.chunks.get(position).is_some_and(|existing| existing.chunk.first_row == first_row);
        if replaced {
            self.live_rows -= self.chunks[position].chunk.rows;
            self.chunks[position] = chunk.clone();
        } else {
            self.chunks.insert(position, chunk.clone());
        }
        self.live_rows += chunk.chunk.rows;
        self.tail_start = self.chunks.len();
        self.next_row = self.next_row.max(chunk.chunk.end_row());
        let mut indexes = Vec::with_capacity(self.indexes.len());
        for index in &self.indexes {
            let mut lists = index.sealed.clone();
            lists.insert(first_row, Arc::new(self.value_lists(&chunk, index)?));
            indexes.push(Arc::new(index.with(lists, index.tail.clone())));
        }
        self.indexes = indexes;
        Ok(())
    }

    /// Restores checkpointed chunks (sealed, maybe only on file) ahead of the tail.
    pub fn restore_sealed(&mut self, chunks: Vec<Chunk>) {
        assert!(self.chunks.is_empty(), "restore into an empty store");
        for chunk in chunks {
            self.next_row = chunk.end_row();
            self.live_rows += chunk.rows;
            self.chunks.push(ChunkRef {
                chunk: Arc::new(chunk),
                deleted: None,
                sealed: true,
            });
        }
        self.tail_start = self.chunks.len();
    }

    /// Restores the checkpointed tail: rows from `first_row` on.
    pub fn restore_tail(&mut self, first_row: u64, batch: RecordBatch) -> Result<(), ViewError> {
        assert!(first_row >= self.next_row, "the tail starts after the sealed chunks");
        self.next_row = first_row;
        for start in (0..batch.num_rows()).step_by(self.chunk_rows) {
            self.append(batch.slice(start, self.chunk_rows.min(batch.num_rows() - start)))?;
        }
        Ok(())
    }

    /// Checkpointed deletes, replayed: not pending, they are already durable.
    pub fn restore_deletes(&mut self, rows: impl Iterator<Item = u64>) {
        for row in rows {
            self.delete(row);
        }
        self.pending_deletes.clear();
    }

    fn build_index(&self, name: String, column_index: usize) -> Result<ViewIndex, ViewError> {
        let mut index = ViewIndex::new(
            name,
            self.fields[column_index].name().clone(),
            column_index,
            self.fields[column_index].data_type().clone(),
        );
        for chunk in &self.chunks[..self.tail_start] {
            let lists = self.value_lists(chunk, &index)?;
            index.sealed.insert(chunk.chunk.first_row, Arc::new(lists));
        }
        let schema = Arc::new(self.schema.project(&[column_index]).map_err(internal)?);
        let snapshot = ViewSnapshot::empty(self.schema.clone());
        for piece in &self.chunks[self.tail_start..] {
            let whole = ChunkRef {
                deleted: None,
                ..piece.clone()
            };
            let column = snapshot.read_chunk(&whole, None, &[column_index], &schema).map_err(internal)?;
            index.index_tail(&key_texts(column.column(0), &index.column_type).map_err(internal)?, piece.chunk.first_row);
        }
        Ok(index)
    }

    /// Builds an index over `column` from the rows now; appends keep it up to date after.
    pub fn add_index(&mut self, name: &str, column: &str) -> Result<(), ViewError> {
        let Some(column_index) = self.fields.iter().position(|field| field.name() == column) else {
            let columns: Vec<&str> = self.fields.iter().map(|field| field.name().as_str()).collect();
            return Err(ViewError::Invalid(format!(
                "the view has no column {column:?} (its columns: {})",
                columns.join(", ")
            )));
        };
        if self.indexes.iter().any(|index| index.name == name) {
            return Err(ViewError::Invalid(format!("index {name} exists")));
        }
        let index = self.build_index(name.to_string(), column_index)?;
        self.indexes.push(Arc::new(index));
        self.publish();
        Ok(())
    }

    pub fn drop_index(&mut self, name: &str) -> bool {
        let before = self.indexes.len();
        self.indexes.retain(|index| index.name != name);
        self.publish();
        self.indexes.len() != before
    }

    /// What a checkpoint writes now (see `StoreCheckpoint`); the deletes and removed chunks
    /// are handed over, so a failed checkpoint must call `checkpoint_failed`.
    pub fn capture_checkpoint(&mut self, consolidate: bool) -> StoreCheckpoint {
        let consolidated = consolidate || self.consolidate;
        let deletes = if consolidated {
            self.pending_deletes.clear();
            self.chunks
                .iter()
                .flat_map(|chunk| {
                    chunk
                        .deleted
                        .iter()
                        .flat_map(|deleted| deleted.deleted_rows().map(|row| chunk.chunk.first_row + row as u64))
                })
                .collect()
        } else {
            std::mem::take(&mut self.pending_deletes)
        };
        self.consolidate = false;
        let tail = self.chunks[self.tail_start..].to_vec();
        StoreCheckpoint {
            schema: self.schema.clone(),
            sealed: self.chunks[..self.tail_start].iter().map(|chunk| chunk.chunk.clone()).collect(),
            tail_first_row: tail.first().map_or(self.next_row, |piece| piece.chunk.first_row),
            tail,
            deletes,
            consolidated,
            removed: std::mem::take(&mut self.removed),
        }
    }

    /// A checkpoint failed: its deletes are lost, so the next one writes every dead row.
    /// (Files of chunks it would have removed stay until an open finds them unlisted.)
    pub fn checkpoint_failed(&mut self) {
        self.consolidate = true;
    }

    /// Drops the in-memory copies of durable sealed chunks, oldest first, while the views are
    /// over their memory budget. The bytes freed.
    pub fn spill(&mut self) -> usize {
        let mut freed = 0;
        for chunk in &self.chunks[..self.tail_start] {
            if !self.budget.over() {
                break;
            }
            freed += chunk.chunk.spill();
        }
        freed
    }

    /// Makes the current state what queries see.
    pub fn publish(&self) {
        let snapshot = ViewSnapshot {
            schema: self.schema.clone(),
            chunks: self.chunks.clone(),
            indexes: self.indexes.clone(),
            end_row: self.next_row,
            live_rows: self.live_rows,
        };
        *self.published.write().unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(snapshot);
    }
}

/// A view's rows and indexes. See the module documentation.
pub struct ViewStore {
    writer: Mutex<StoreWriter>,
    published: Arc<RwLock<Arc<ViewSnapshot>>>,
}

impl ViewStore {
    /// An empty store; its tail is sealed every `chunk_rows` rows.
    pub fn new(fields: Vec<Field>, budget: Arc<MemoryBudget>, chunk_rows: usize) -> ViewStore {
        assert!((1..=CHUNK_ROWS_MAX).contains(&chunk_rows), "chunk_rows {chunk_rows}");
        let fields: Vec<Field> = fields
            .into_iter()
            .map(|field| Field::new(field.name(), field.data_type().clone(), true))
            .collect();
        let schema = Arc::new(Schema::new(fields.clone()));
        let published = Arc::new(RwLock::new(Arc::new(ViewSnapshot::empty(schema.clone()))));
        let writer = StoreWriter {
            fields,
            schema,
            chunks: Vec::new(),
            tail_start: 0,
            next_row: 0,
            live_rows: 0,
            indexes: Vec::new(),
            pending_deletes: Vec::new(),
            removed: Vec::new(),
            consolidate: false,
            budget,
            chunk_rows,
            published: published.clone(),
        };
        ViewStore {
            writer: Mutex::new(writer),
            published,
        }
    }

    /// The writer's side: the view's task per micro-batch, DDL for indexes.
    pub fn writer(&self) -> MutexGuard<'_, StoreWriter> {
        self.writer.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The view as of now, for queries.
    pub fn snapshot(&self) -> Arc<ViewSnapshot> {
        self.published.read().unwrap_or_else(|poisoned| poisoned.into_inner()).clone()
    }

    pub fn schema(&self) -> SchemaRef {
        self.snapshot().schema.clone()
    }

    pub fn add_index(&self, name: &str, column: &str) -> Result<(), ViewError> {
        self.writer().add_index(name, column)
    }

    pub fn drop_index(&self, name: &str) -> bool {
        self.writer().drop_index(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::chunk::CHUNK_ROWS;
    use datafusion::arrow::array::{Array, Int64Array, StringArray, UInt32Array};
    use datafusion::arrow::datatypes::DataType;

    fn batch(ids: std::ops::Range<i64>, region: impl Fn(i64) -> &'static str) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("region", DataType::Utf8, true),
        ]));
        let regions: Vec<&str> = ids.clone().map(&region).collect();
        RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from_iter_values(ids)), Arc::new(StringArray::from(regions))]).unwrap()
    }

    fn fields() -> Vec<Field> {
        vec![Field::new("id", DataType::Int64, true), Field::new("region", DataType::Utf8, true)]
    }

    fn ids_of(snapshot: &ViewSnapshot, found: &[(usize, UInt32Array)]) -> Vec<i64> {
        let schema = Arc::new(snapshot.schema.project(&[0]).unwrap());
        let mut ids = Vec::new();
        for (position, rows) in found {
            let batch = snapshot.read_chunk(&snapshot.chunks[*position], Some(rows), &[0], &schema).unwrap();
            ids.extend(batch.column(0).as_any().downcast_ref::<Int64Array>().unwrap().values().iter().copied());
        }
        ids
    }

    /// Rows appended by the test below: one sealed chunk and a tail.
    const TOTAL: i64 = CHUNK_ROWS as i64 + 5000 - (CHUNK_ROWS as i64 + 5000) % 1000;

    #[test]
    fn snapshots_stay_put_while_the_writer_appends_deletes_and_seals() {
        let store = ViewStore::new(fields(), Arc::new(MemoryBudget::unlimited()), CHUNK_ROWS);
        store.add_index("by_region", "region").unwrap();
        let region = |id: i64| if id % 10 == 0 { "north" } else { "south" };
        let mut writer = store.writer();
        for start in (0..TOTAL).step_by(1000) {
            writer.append(batch(start..start + 1000, region)).unwrap();
        }
        writer.publish();
        drop(writer);
        let before = store.snapshot();
        assert_eq!(before.chunks.iter().filter(|chunk| chunk.sealed).count(), 1);
        let index = before.index_on("region").unwrap();
        let north = before.lookup(&index, &["north".to_string()]);
        let expected: Vec<i64> = (0..TOTAL).filter(|id| id % 10 == 0).collect();
        assert_eq!(ids_of(&before, &north), expected);

        let mut writer = store.writer();
        assert!(writer.delete(0) && writer.delete(66_010) && !writer.delete(0));
        writer.append(batch(1_000_000..1_000_010, region)).unwrap();
        writer.publish();
        drop(writer);
        // The old snapshot is unchanged; the new one lost two rows and gained ten.
        assert_eq!(ids_of(&before, &before.lookup(&index, &["north".to_string()])), expected);
        let after = store.snapshot();
        assert_eq!(after.live_rows, before.live_rows - 2 + 10);
        let north_after = ids_of(&after, &after.lookup(&after.index_on("region").unwrap(), &["north".to_string()]));
        assert_eq!(north_after.len(), expected.len() - 2 + 1);
        assert!(!north_after.contains(&0) && north_after.contains(&1_000_000));
    }

    #[test]
    fn widening_rebuilds_the_index_and_old_chunks_read_under_the_new_type() {
        let store = ViewStore::new(fields(), Arc::new(MemoryBudget::unlimited()), CHUNK_ROWS);
        let mut writer = store.writer();
        writer.append(batch(0..10, |_| "x")).unwrap();
        writer.add_index("by_id", "id").unwrap();
        writer.widen(&[Field::new("id", DataType::Utf8, true)]).unwrap();
        writer.publish();
        drop(writer);
        let snapshot = store.snapshot();
        let index = snapshot.index_on("id").unwrap();
        assert_eq!(index.column_type, DataType::Utf8);
        let found = snapshot.lookup(&index, &["5".to_string()]);
        assert_eq!(found, [(0, UInt32Array::from(vec![5]))]);
        let schema = Arc::new(snapshot.schema.project(&[0]).unwrap());
        let rows = snapshot.read_chunk(&snapshot.chunks[0], None, &[0], &schema).unwrap();
        assert_eq!(rows.column(0).data_type(), &DataType::Utf8);
        assert!(store.add_index("x", "nope").unwrap_err().to_string().contains("no column"));
    }
}
