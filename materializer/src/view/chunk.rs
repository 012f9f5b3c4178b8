//! Chunks: a view's rows as immutable Arrow record batches, addressed by row id (`first_row`
//! + the row's place in the chunk). A chunk is in memory, or spilled to its file
//! (`<view>/chunks/<first_row>.arrow`, an Arrow IPC file of `FILE_BATCH_ROWS`-row batches that
//! `pyarrow.ipc.open_file` or DuckDB read as they are), or both: a checkpoint writes each sealed
//! chunk once, and past the memory budget the in-memory copy of a written chunk is dropped.
//! Dead rows are not in the chunk but in its deletion vector (`deletes.rs`).
//!
//! `ValueLists` are a sealed chunk's per-value row lists for one indexed column, built once
//! at sealing: the distinct keys sorted, and per key its rows ascending.

use std::fs::{self, File};
use std::io::{self, BufReader};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use datafusion::arrow::array::{Array, RecordBatch, RecordBatchOptions, StringArray, UInt32Array};
use datafusion::arrow::compute::{concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{Schema, SchemaRef};
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::common::{DataFusionError, Result};

use super::budget::MemoryBudget;

/// Rows of a sealed chunk: large enough that a scan's per-chunk work is amortised, small
/// enough that a deletion vector copy (8 KiB) and an index build stay cheap.
pub const CHUNK_ROWS: usize = 1 << 16;
/// Rows per batch of a chunk file: an index lookup reads only the batches holding its rows.
pub const FILE_BATCH_ROWS: usize = 8192;

pub struct Chunk {
    pub first_row: u64,
    pub rows: usize,
    /// The chunk's own columns: a prefix of the view's (columns added later are NULL here),
    /// under the types they had when the rows were applied (cast to the view's when read).
    pub schema: SchemaRef,
    /// Arrow bytes of the rows in memory (what the budget counts), 0 while spilled.
    bytes: AtomicUsize,
    memory: Mutex<Option<RecordBatch>>,
    file: OnceLock<PathBuf>,
    budget: Arc<MemoryBudget>,
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Chunk({}+{})", self.first_row, self.rows)
    }
}

fn io_to_df(error: io::Error) -> DataFusionError {
    DataFusionError::IoError(error)
}

impl Chunk {
    pub fn in_memory(first_row: u64, batch: RecordBatch, budget: Arc<MemoryBudget>) -> Chunk {
        let bytes = batch.get_array_memory_size();
        budget.add(bytes);
        Chunk {
            first_row,
            rows: batch.num_rows(),
            schema: batch.schema(),
            bytes: AtomicUsize::new(bytes),
            memory: Mutex::new(Some(batch)),
            file: OnceLock::new(),
            budget,
        }
    }

    /// A chunk known only by its file (a restore; `rows` as the manifest recorded them): read
    /// when queried, never loaded whole.
    pub fn from_file(first_row: u64, rows: usize, path: PathBuf, budget: Arc<MemoryBudget>) -> io::Result<Chunk> {
        let reader = FileReader::try_new(BufReader::new(File::open(&path)?), None).map_err(io::Error::other)?;
        let schema = reader.schema();
        let file = OnceLock::new();
        let _ = file.set(path);
        Ok(Chunk {
            first_row,
            rows,
            schema,
            bytes: AtomicUsize::new(0),
            memory: Mutex::new(None),
            file,
            budget,
        })
    }

    /// Reads a chunk known by its file into memory (a restore, while the budget has room).
    pub fn load(&self) -> Result<()> {
        let projection: Vec<usize> = (0..self.schema.fields().len()).collect();
        let batch = self.read(&projection)?;
        let mut memory = self.memory();
        if memory.is_none() {
            let bytes = batch.get_array_memory_size();
            self.budget.add(bytes);
            self.bytes.store(bytes, Ordering::Relaxed);
            *memory = Some(batch);
        }
        Ok(())
    }

    /// Arrow bytes held in memory.
    pub fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn end_row(&self) -> u64 {
        self.first_row + self.rows as u64
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Option<RecordBatch>> {
        self.memory.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn is_durable(&self) -> bool {
        self.file.get().is_some()
    }

    pub fn is_in_memory(&self) -> bool {
        self.memory().is_some()
    }

    /// Writes the chunk's file (atomically) unless it has one. Called by checkpoints.
    pub fn write_file(&self, directory: &Path) -> io::Result<()> {
        if self.is_durable() {
            return Ok(());
        }
        let batch = self
            .memory()
            .clone()
            .ok_or_else(|| io::Error::other("a chunk without a file is not in memory"))?;
        fs::create_dir_all(directory)?;
        let path = directory.join(chunk_file_name(self.first_row));
        let blocks = (0..batch.num_rows())
            .step_by(FILE_BATCH_ROWS)
            .map(|start| batch.slice(start, FILE_BATCH_ROWS.min(batch.num_rows() - start)));
        super::checkpoint::write_ipc_file(&path, &self.schema, blocks)?;
        let _ = self.file.set(path);
        Ok(())
    }

    /// Drops the in-memory copy of a durable chunk; the bytes freed.
    pub fn spill(&self) -> usize {
        if !self.is_durable() {
            return 0;
        }
        let mut memory = self.memory();
        match memory.take() {
            Some(_) => {
                let bytes = self.bytes.swap(0, Ordering::Relaxed);
                self.budget.release(bytes);
                bytes
            }
            None => 0,
        }
    }

    fn reader(&self, projection: &[usize]) -> Result<FileReader<BufReader<File>>> {
        let path = self
            .file
            .get()
            .ok_or_else(|| DataFusionError::Internal(format!("chunk {} has neither rows nor file", self.first_row)))?;
        let file = File::open(path).map_err(io_to_df)?;
        Ok(FileReader::try_new(BufReader::new(file), Some(projection.to_vec()))?)
    }

    /// The chunk's columns `projection`, if the chunk is in memory (no copy).
    pub fn in_memory_projected(&self, projection: &[usize]) -> Option<RecordBatch> {
        self.memory().as_ref().and_then(|batch| batch.project(projection).ok())
    }

    /// The chunk's columns `projection` (indexes into the chunk's schema), every row.
    pub fn read(&self, projection: &[usize]) -> Result<RecordBatch> {
        if let Some(batch) = self.memory().as_ref() {
            return Ok(batch.project(projection)?);
        }
        let reader = self.reader(projection)?;
        let schema = Arc::new(self.schema.project(projection)?);
        let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
        Ok(concat_batches(&schema, &batches)?)
    }

    /// Rows `rows` (ascending places in the chunk) of columns `projection`, gathered with
    /// Arrow's `take`. A spilled chunk reads only the file batches that hold them.
    pub fn take(&self, rows: &UInt32Array, projection: &[usize]) -> Result<RecordBatch> {
        debug_assert!(rows.values().windows(2).all(|pair| pair[0] < pair[1]));
        if projection.is_empty() {
            // No column to count rows by (`count(*)`): Arrow's `take` cannot make this batch.
            let options = RecordBatchOptions::new().with_row_count(Some(rows.len()));
            return Ok(RecordBatch::try_new_with_options(Arc::new(Schema::empty()), Vec::new(), &options)?);
        }
        if let Some(batch) = self.memory().as_ref() {
            return Ok(take_record_batch(&batch.project(projection)?, rows)?);
        }
        let mut reader = self.reader(projection)?;
        let schema = Arc::new(self.schema.project(projection)?);
        let mut parts = Vec::new();
        let mut rest: &[u32] = rows.values();
        while let Some(&first) = rest.first() {
            let block = first as usize / FILE_BATCH_ROWS;
            let block_end = ((block + 1) * FILE_BATCH_ROWS) as u32;
            let in_block = rest.partition_point(|&row| row < block_end);
            reader.set_index(block)?;
            let batch = reader
                .next()
                .ok_or_else(|| DataFusionError::Internal(format!("chunk file {} ends before batch {block}", self.first_row)))??;
            let offsets: UInt32Array = rest[..in_block].iter().map(|row| row - (block * FILE_BATCH_ROWS) as u32).collect();
            parts.push(take_record_batch(&batch, &offsets)?);
            rest = &rest[in_block..];
        }
        Ok(concat_batches(&schema, &parts)?)
    }
}

impl Drop for Chunk {
    fn drop(&mut self) {
        self.budget.release(*self.bytes.get_mut());
    }
}

pub fn chunk_file_name(first_row: u64) -> String {
    format!("{first_row:020}.arrow")
}

/// A sealed chunk's rows per value of one indexed column. See the module documentation.
#[derive(Debug)]
pub struct ValueLists {
    keys: StringArray,
    /// Per key `k`, its rows are `rows[starts[k]..starts[k + 1]]`.
    starts: Vec<u32>,
    /// Row ids grouped by key: a key's rows are a zero-copy slice, the indices `take` gathers.
    rows: UInt32Array,
}

impl ValueLists {
    /// From each row's key text (NULL: the row is under no key).
    pub fn build(keys: &StringArray) -> ValueLists {
        let mut pairs: Vec<(&str, u32)> = (0..keys.len())
            .filter(|&row| keys.is_valid(row))
            .map(|row| (keys.value(row), row as u32))
            .collect();
        // Stable: rows stay ascending within a key.
        pairs.sort_by(|a, b| a.0.cmp(b.0));
        let mut distinct: Vec<&str> = Vec::new();
        let mut starts = Vec::new();
        for (index, (key, _)) in pairs.iter().enumerate() {
            if distinct.last() != Some(key) {
                distinct.push(key);
                starts.push(index as u32);
            }
        }
        starts.push(pairs.len() as u32);
        ValueLists {
            keys: StringArray::from(distinct),
            starts,
            rows: pairs.into_iter().map(|(_, row)| row).collect::<Vec<u32>>().into(),
        }
    }

    /// The rows under `key`, ascending (a slice of the lists' array: nothing copied).
    pub fn rows_of(&self, key: &str) -> UInt32Array {
        let (mut low, mut high) = (0, self.keys.len());
        while low < high {
            let middle = (low + high) / 2;
            match self.keys.value(middle).cmp(key) {
                std::cmp::Ordering::Less => low = middle + 1,
                std::cmp::Ordering::Greater => high = middle,
                std::cmp::Ordering::Equal => {
                    let start = self.starts[middle] as usize;
                    return self.rows.slice(start, self.starts[middle + 1] as usize - start);
                }
            }
        }
        UInt32Array::from(Vec::<u32>::new())
    }

    pub fn bytes(&self) -> usize {
        self.keys.get_array_memory_size() + 4 * self.starts.capacity() + self.rows.get_array_memory_size()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int64Array;
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    #[test]
    fn value_lists_find_rows_per_key() {
        let keys = StringArray::from(vec![Some("b"), None, Some("a"), Some("b"), Some("c")]);
        let lists = ValueLists::build(&keys);
        assert_eq!(lists.rows_of("b").values(), &[0, 3]);
        assert_eq!(lists.rows_of("a").values(), &[2]);
        assert_eq!(lists.rows_of("c").values(), &[4]);
        assert!(lists.rows_of("z").is_empty() && lists.rows_of("").is_empty());
    }

    #[test]
    fn a_spilled_chunk_reads_and_takes_from_its_file() {
        let directory = tempfile::tempdir().unwrap();
        let budget = Arc::new(MemoryBudget::unlimited());
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, true),
            Field::new("m", DataType::Int64, true),
        ]));
        let rows = 3 * FILE_BATCH_ROWS + 5;
        let values = Int64Array::from_iter_values(0..rows as i64);
        let batch = RecordBatch::try_new(schema, vec![Arc::new(values.clone()), Arc::new(values)]).unwrap();
        let chunk = Chunk::in_memory(100, batch, budget.clone());
        assert!(budget.used_bytes() > 0);
        assert_eq!(chunk.spill(), 0, "not durable yet");
        chunk.write_file(directory.path()).unwrap();
        let bytes = chunk.bytes();
        assert_eq!(chunk.spill(), bytes);
        assert_eq!(budget.used_bytes(), 0);
        assert_eq!(chunk.read(&[1]).unwrap().num_rows(), rows);
        let taken = chunk.take(&UInt32Array::from(vec![1, 8193, (rows - 1) as u32]), &[1]).unwrap();
        let column = taken.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        assert_eq!(column.values().to_vec(), [1, 8193, rows as i64 - 1]);
        let reopened = Chunk::from_file(100, rows, directory.path().join(chunk_file_name(100)), budget).unwrap();
        assert_eq!(reopened.read(&[0]).unwrap().num_rows(), rows);
    }
}
