//! A view's checkpoint: its state and the log offsets it reflects. A checkpoint writes what
//! changed since the last one, so its cost does not grow with the view:
//!
//! - `chunks/<first_row>.arrow`: each sealed chunk, written once (Arrow IPC, `chunk.rs`);
//! - `deletes/<seq>.arrow`: the row ids deleted since the previous checkpoint (one UInt64
//!   column); past `DELETE_FILES_MAX` files, one file of every dead row replaces them;
//! - `checkpoint.arrow`, the manifest, written atomically (temporary file, fsync, rename,
//!   fsync of the directory) after the files it names: the tail's rows (append and upsert
//!   views) or per group its key and accumulators (aggregate views, bounded by the group
//!   limit), with the rest (definition, offsets per partition, inferred source schema, dead
//!   letters, error count, the chunks and delete files that hold the state) as JSON in the
//!   schema's metadata.
//!
//! State and offsets always agree: after a crash the view resumes from the last manifest and
//! re-applies exactly the records after it; files no manifest names are removed at open.
//! Indexes are not stored: they are rebuilt from the rows at load. Beside it,
//! `snapshot.parquet` holds the view's rows (user columns only) for stock Parquet readers.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, RecordBatch, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::parquet::arrow::ArrowWriter;

use super::chunk::chunk_file_name;
use super::letters::DeadLetterLog;
use super::snapshot::{ChunkRef, ViewSnapshot};
use super::store::StoreCheckpoint;
use crate::json::{ColumnType, InferredSchema, SCHEMA_VERSION_METADATA_KEY};

pub const CHECKPOINT_FILE: &str = "checkpoint.arrow";
pub const SNAPSHOT_FILE: &str = "snapshot.parquet";
const METADATA_KEY: &str = "yottastore.checkpoint";

pub struct Checkpoint {
    /// The CREATE statement this state belongs to: a view dropped and created again under the
    /// same name with another definition must not resume from it.
    pub sql: String,
    /// Per partition, the next offset to apply.
    pub offsets: Vec<(i32, i64)>,
    pub inferred: InferredSchema,
    pub dead_letters: DeadLetterLog,
    pub errors: u64,
    /// The tail's rows (append and upsert views), the groups (aggregate views).
    pub state: RecordBatch,
    pub store: StoreManifest,
}

/// Where the rows before the tail are: sealed chunks (first row, rows) and the delete files
/// to replay over them, in order. Empty for aggregate views, and in checkpoints written before
/// chunks existed (their state batch held every row: it is restored as the tail).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoreManifest {
    pub chunks: Vec<(u64, usize)>,
    pub delete_files: Vec<u64>,
    pub tail_first_row: u64,
}

impl StoreManifest {
    fn to_json(&self) -> serde_json::Value {
        let chunks: Vec<serde_json::Value> = self.chunks.iter().map(|(first_row, rows)| serde_json::json!([first_row, rows])).collect();
        serde_json::json!({ "chunks": chunks, "delete_files": self.delete_files, "tail_first_row": self.tail_first_row })
    }

    fn from_json(value: Option<&serde_json::Value>) -> io::Result<StoreManifest> {
        let Some(value) = value else {
            return Ok(StoreManifest::default());
        };
        let number = |value: &serde_json::Value| value.as_u64().ok_or_else(|| json_error("bad store manifest"));
        let mut manifest = StoreManifest {
            tail_first_row: number(value.get("tail_first_row").unwrap_or(&serde_json::Value::Null))?,
            ..Default::default()
        };
        for chunk in value
            .get("chunks")
            .and_then(|chunks| chunks.as_array())
            .ok_or_else(|| json_error("no chunks"))?
        {
            let (Some(first_row), Some(rows)) = (chunk.get(0), chunk.get(1)) else {
                return Err(json_error("bad chunk entry"));
            };
            manifest.chunks.push((number(first_row)?, number(rows)? as usize));
        }
        for seq in value
            .get("delete_files")
            .and_then(|files| files.as_array())
            .ok_or_else(|| json_error("no delete files"))?
        {
            manifest.delete_files.push(number(seq)?);
        }
        Ok(manifest)
    }
}

fn json_error(message: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message.into())
}

fn inferred_to_json(inferred: &InferredSchema) -> serde_json::Value {
    let fields: Vec<serde_json::Value> = inferred
        .fields()
        .iter()
        .map(|field| serde_json::json!([field.name, field.column_type.name()]))
        .collect();
    serde_json::json!({ "version": inferred.version(), "fields": fields })
}

fn inferred_from_json(value: &serde_json::Value) -> io::Result<InferredSchema> {
    let version = value
        .get("version")
        .and_then(|version| version.as_u64())
        .ok_or_else(|| json_error("no schema version"))?;
    let mut fields = Vec::new();
    for field in value
        .get("fields")
        .and_then(|fields| fields.as_array())
        .ok_or_else(|| json_error("no schema fields"))?
    {
        let (Some(name), Some(type_text)) = (field.get(0).and_then(|name| name.as_str()), field.get(1).and_then(|text| text.as_str())) else {
            return Err(json_error("bad schema field"));
        };
        let column_type = ColumnType::from_name(type_text)
            .ok_or_else(|| json_error(format!("unknown column type {type_text}")))?;
        fields.push(column_type.field(name));
    }
    let metadata = HashMap::from([(SCHEMA_VERSION_METADATA_KEY.to_string(), version.to_string())]);
    InferredSchema::from_arrow_schema(&Schema::new_with_metadata(fields, metadata)).map_err(json_error)
}

/// Writes `path` atomically: `write` fills a temporary file, which is synced and renamed over
/// `path`; the directory is synced so the rename survives a crash.
pub(crate) fn write_atomically(path: &Path, write: impl FnOnce(File) -> io::Result<()>) -> io::Result<()> {
    let temporary = path.with_extension("tmp");
    let file = File::create(&temporary)?;
    write(file)?;
    File::open(&temporary)?.sync_all()?;
    fs::rename(&temporary, path)?;
    if let Some(directory) = path.parent() {
        File::open(directory)?.sync_all()?;
    }
    Ok(())
}

pub fn write(directory: &Path, checkpoint: &Checkpoint) -> io::Result<()> {
    fs::create_dir_all(directory)?;
    let offsets: Vec<serde_json::Value> = checkpoint
        .offsets
        .iter()
        .map(|(partition, offset)| serde_json::json!([partition, offset]))
        .collect();
    let meta = serde_json::json!({
        "sql": checkpoint.sql,
        "offsets": offsets,
        "inferred": inferred_to_json(&checkpoint.inferred),
        "dead_letters": checkpoint.dead_letters.to_json(),
        "errors": checkpoint.errors,
        "store": checkpoint.store.to_json(),
    });
    let state_schema = checkpoint.state.schema();
    let schema = Schema::new_with_metadata(state_schema.fields().clone(), HashMap::from([(METADATA_KEY.to_string(), meta.to_string())]));
    let state = checkpoint.state.clone().with_schema(Arc::new(schema.clone())).map_err(io::Error::other)?;
    write_ipc_file(&directory.join(CHECKPOINT_FILE), &Arc::new(schema), [state].into_iter())
}

/// Writes `batches` as an Arrow IPC file at `path`, atomically.
pub(crate) fn write_ipc_file(path: &Path, schema: &SchemaRef, batches: impl Iterator<Item = RecordBatch>) -> io::Result<()> {
    write_atomically(path, |file| {
        let mut writer = FileWriter::try_new(BufWriter::new(file), schema).map_err(io::Error::other)?;
        for batch in batches {
            writer.write(&batch).map_err(io::Error::other)?;
        }
        writer.finish().map_err(io::Error::other)?;
        writer
            .into_inner()
            .map_err(io::Error::other)?
            .into_inner()
            .map_err(|error| error.into_error())?;
        Ok(())
    })
}

/// The checkpoint in `directory`, `None` if there is none.
pub fn read(directory: &Path) -> io::Result<Option<Checkpoint>> {
    let file = match File::open(directory.join(CHECKPOINT_FILE)) {
        Ok(file) => file,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(error),
    };
    let reader = FileReader::try_new(io::BufReader::new(file), None).map_err(io::Error::other)?;
    let schema = reader.schema();
    let meta: serde_json::Value = schema
        .metadata()
        .get(METADATA_KEY)
        .ok_or_else(|| json_error("no checkpoint metadata"))
        .and_then(|text| serde_json::from_str(text).map_err(|error| json_error(error.to_string())))?;
    let mut batches = Vec::new();
    for batch in reader {
        batches.push(batch.map_err(io::Error::other)?);
    }
    let bare = Arc::new(Schema::new(schema.fields().clone()));
    let state = datafusion::arrow::compute::concat_batches(&bare, &batches).map_err(io::Error::other)?;
    let mut offsets = Vec::new();
    for entry in meta
        .get("offsets")
        .and_then(|offsets| offsets.as_array())
        .ok_or_else(|| json_error("no offsets"))?
    {
        let (Some(partition), Some(offset)) = (entry.get(0).and_then(|value| value.as_i64()), entry.get(1).and_then(|value| value.as_i64())) else {
            return Err(json_error("bad offset entry"));
        };
        offsets.push((i32::try_from(partition).map_err(|_| json_error("bad partition"))?, offset));
    }
    Ok(Some(Checkpoint {
        sql: meta.get("sql").and_then(|sql| sql.as_str()).ok_or_else(|| json_error("no sql"))?.to_string(),
        offsets,
        inferred: inferred_from_json(meta.get("inferred").ok_or_else(|| json_error("no inferred schema"))?)?,
        dead_letters: meta
            .get("dead_letters")
            .and_then(DeadLetterLog::from_json)
            .ok_or_else(|| json_error("bad dead letters"))?,
        errors: meta.get("errors").and_then(|errors| errors.as_u64()).unwrap_or(0),
        store: StoreManifest::from_json(meta.get("store"))?,
        state,
    }))
}

pub const CHUNKS_DIRECTORY: &str = "chunks";
pub const DELETES_DIRECTORY: &str = "deletes";
/// Delete files a manifest names at most; past it, one file of every dead row replaces them
/// (its size is bounded by compaction: a chunk at most half dead is rewritten).
pub const DELETE_FILES_MAX: usize = 64;

/// The delete files of the last manifest, and the next file's number.
#[derive(Clone, Debug, Default)]
pub struct DeleteLog {
    pub files: Vec<u64>,
    pub next: u64,
}

impl DeleteLog {
    pub fn from_manifest(manifest: &StoreManifest) -> DeleteLog {
        DeleteLog {
            files: manifest.delete_files.clone(),
            next: manifest.delete_files.iter().max().map_or(0, |last| last + 1),
        }
    }

    /// Whether the next checkpoint should write every dead row in one file.
    pub fn full(&self) -> bool {
        self.files.len() >= DELETE_FILES_MAX
    }
}

fn delete_file(directory: &Path, seq: u64) -> std::path::PathBuf {
    directory.join(DELETES_DIRECTORY).join(format!("{seq:020}.arrow"))
}

/// What a checkpoint of rows wrote: the manifest's part, the tail as one batch, the delete log
/// after it, and the files the manifest no longer needs (removed once it is durable).
pub struct RowsWritten {
    pub manifest: StoreManifest,
    pub tail: RecordBatch,
    pub log: DeleteLog,
    pub obsolete: Vec<std::path::PathBuf>,
}

/// Writes the new sealed chunks and the deletes of `store`, and joins its tail.
pub fn write_rows(directory: &Path, store: &StoreCheckpoint, log: &DeleteLog) -> io::Result<RowsWritten> {
    let chunks = directory.join(CHUNKS_DIRECTORY);
    for chunk in &store.sealed {
        chunk.write_file(&chunks)?;
    }
    let mut next_log = DeleteLog {
        files: if store.consolidated { Vec::new() } else { log.files.clone() },
        next: log.next,
    };
    let mut obsolete: Vec<std::path::PathBuf> = store.removed.iter().map(|first_row| chunks.join(chunk_file_name(*first_row))).collect();
    if store.consolidated {
        obsolete.extend(log.files.iter().map(|seq| delete_file(directory, *seq)));
    }
    if !store.deletes.is_empty() {
        let seq = next_log.next;
        fs::create_dir_all(directory.join(DELETES_DIRECTORY))?;
        let schema = Arc::new(Schema::new(vec![Field::new("row", DataType::UInt64, false)]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(UInt64Array::from(store.deletes.clone()))]).map_err(io::Error::other)?;
        write_ipc_file(&delete_file(directory, seq), &schema, [batch].into_iter())?;
        next_log.files.push(seq);
        next_log.next = seq + 1;
    }
    let projection: Vec<usize> = (0..store.schema.fields().len()).collect();
    let snapshot = ViewSnapshot::empty(store.schema.clone());
    let mut pieces = Vec::with_capacity(store.tail.len());
    for piece in &store.tail {
        let whole = ChunkRef {
            deleted: None,
            ..piece.clone()
        };
        pieces.push(snapshot.read_chunk(&whole, None, &projection, &store.schema).map_err(io::Error::other)?);
    }
    let tail = datafusion::arrow::compute::concat_batches(&store.schema, &pieces).map_err(io::Error::other)?;
    let manifest = StoreManifest {
        chunks: store.sealed.iter().map(|chunk| (chunk.first_row, chunk.rows)).collect(),
        delete_files: next_log.files.clone(),
        tail_first_row: store.tail_first_row,
    };
    Ok(RowsWritten {
        manifest,
        tail,
        log: next_log,
        obsolete,
    })
}

/// The row ids of delete file `seq`.
pub fn read_deletes(directory: &Path, seq: u64) -> io::Result<Vec<u64>> {
    let reader = FileReader::try_new(io::BufReader::new(File::open(delete_file(directory, seq))?), None).map_err(io::Error::other)?;
    let mut rows = Vec::new();
    for batch in reader {
        let batch = batch.map_err(io::Error::other)?;
        let column = batch
            .column(0)
            .as_any()
            .downcast_ref::<UInt64Array>()
            .ok_or_else(|| json_error("a delete file without row ids"))?;
        rows.extend(column.values().iter().copied());
    }
    Ok(rows)
}

/// Removes chunk and delete files that `manifest` does not name (left by a checkpoint that did
/// not complete, or made obsolete by one that did).
pub fn remove_unlisted(directory: &Path, manifest: &StoreManifest) -> io::Result<()> {
    let chunks: std::collections::HashSet<String> = manifest.chunks.iter().map(|(first_row, _)| chunk_file_name(*first_row)).collect();
    let deletes: std::collections::HashSet<String> = manifest.delete_files.iter().map(|seq| format!("{seq:020}.arrow")).collect();
    for (subdirectory, keep) in [(CHUNKS_DIRECTORY, chunks), (DELETES_DIRECTORY, deletes)] {
        let entries = match fs::read_dir(directory.join(subdirectory)) {
            Ok(entries) => entries,
            Err(error) if error.kind() == io::ErrorKind::NotFound => continue,
            Err(error) => return Err(error),
        };
        for entry in entries {
            let entry = entry?;
            if !keep.contains(entry.file_name().to_string_lossy().as_ref()) {
                fs::remove_file(entry.path())?;
            }
        }
    }
    Ok(())
}

/// Writes the view's live rows as `snapshot.parquet` (atomically, like the checkpoint), one
/// chunk at a time. Columns of type Null (never seen yet) are written as nullable Utf8, which
/// every Parquet reader takes.
pub fn write_snapshot(directory: &Path, view: &ViewSnapshot) -> io::Result<()> {
    let fields: Vec<Field> = view
        .schema
        .fields()
        .iter()
        .map(|field| {
            if *field.data_type() == DataType::Null {
                Field::new(field.name(), DataType::Utf8, true)
            } else {
                field.as_ref().clone()
            }
        })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let projection: Vec<usize> = (0..schema.fields().len()).collect();
    fs::create_dir_all(directory)?;
    write_atomically(&directory.join(SNAPSHOT_FILE), |file| {
        let mut writer = ArrowWriter::try_new(file, schema.clone(), None).map_err(io::Error::other)?;
        for chunk in &view.chunks {
            let batch = view.read_chunk(chunk, None, &projection, &schema).map_err(io::Error::other)?;
            writer.write(&batch).map_err(io::Error::other)?;
        }
        writer.close().map_err(io::Error::other)?;
        Ok(())
    })
}
