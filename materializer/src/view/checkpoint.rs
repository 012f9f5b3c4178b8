//! A view's checkpoint: its state and the log offsets it reflects, in one file written
//! atomically (temporary file, fsync, rename, fsync of the directory), so that state and
//! offsets always agree: after a crash the view resumes from the last checkpoint and re-applies
//! exactly the records after it.
//!
//! `<data-dir>/views/<name>/checkpoint.arrow` is an Arrow IPC file: the state rows (append and
//! upsert views: the view's rows; aggregate views: per group its key and accumulators) with the
//! rest (definition, offsets per partition, inferred source schema, dead letters, error count)
//! as JSON in the schema's metadata. Indexes are not stored: they are rebuilt from the rows at
//! load. Beside it, `snapshot.parquet` holds the view's rows (user columns only) for stock
//! Parquet readers, refreshed at each checkpoint.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{self, BufWriter};
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::arrow::ipc::reader::FileReader;
use datafusion::arrow::ipc::writer::FileWriter;
use datafusion::parquet::arrow::ArrowWriter;

use super::letters::DeadLetterLog;
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
    pub state: RecordBatch,
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
    let version = value.get("version").and_then(|version| version.as_u64()).ok_or_else(|| json_error("no schema version"))?;
    let mut fields = Vec::new();
    for field in value.get("fields").and_then(|fields| fields.as_array()).ok_or_else(|| json_error("no schema fields"))? {
        let (Some(name), Some(type_text)) = (field.get(0).and_then(|name| name.as_str()), field.get(1).and_then(|text| text.as_str())) else {
            return Err(json_error("bad schema field"));
        };
        let column_type = ColumnType::from_name(type_text).ok_or_else(|| json_error(format!("unknown column type {type_text}")))?;
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
    let offsets: Vec<serde_json::Value> = checkpoint.offsets.iter().map(|(partition, offset)| serde_json::json!([partition, offset])).collect();
    let meta = serde_json::json!({
        "sql": checkpoint.sql,
        "offsets": offsets,
        "inferred": inferred_to_json(&checkpoint.inferred),
        "dead_letters": checkpoint.dead_letters.to_json(),
        "errors": checkpoint.errors,
    });
    let state_schema = checkpoint.state.schema();
    let schema = Schema::new_with_metadata(state_schema.fields().clone(), HashMap::from([(METADATA_KEY.to_string(), meta.to_string())]));
    let state = checkpoint.state.clone().with_schema(Arc::new(schema.clone())).map_err(io::Error::other)?;
    write_atomically(&directory.join(CHECKPOINT_FILE), |file| {
        let mut writer = FileWriter::try_new(BufWriter::new(file), &schema).map_err(io::Error::other)?;
        writer.write(&state).map_err(io::Error::other)?;
        writer.finish().map_err(io::Error::other)?;
        writer.into_inner().map_err(io::Error::other)?.into_inner().map_err(|error| error.into_error())?;
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
    for entry in meta.get("offsets").and_then(|offsets| offsets.as_array()).ok_or_else(|| json_error("no offsets"))? {
        let (Some(partition), Some(offset)) = (entry.get(0).and_then(|value| value.as_i64()), entry.get(1).and_then(|value| value.as_i64())) else {
            return Err(json_error("bad offset entry"));
        };
        offsets.push((i32::try_from(partition).map_err(|_| json_error("bad partition"))?, offset));
    }
    Ok(Some(Checkpoint {
        sql: meta.get("sql").and_then(|sql| sql.as_str()).ok_or_else(|| json_error("no sql"))?.to_string(),
        offsets,
        inferred: inferred_from_json(meta.get("inferred").ok_or_else(|| json_error("no inferred schema"))?)?,
        dead_letters: meta.get("dead_letters").and_then(DeadLetterLog::from_json).ok_or_else(|| json_error("bad dead letters"))?,
        errors: meta.get("errors").and_then(|errors| errors.as_u64()).unwrap_or(0),
        state,
    }))
}

/// Writes the view's rows as `snapshot.parquet` (atomically, like the checkpoint). Columns of
/// type Null (never seen yet) are written as nullable Utf8, which every Parquet reader takes.
pub fn write_snapshot(directory: &Path, rows: &RecordBatch) -> io::Result<()> {
    let fields: Vec<Field> = rows
        .schema()
        .fields()
        .iter()
        .map(|field| if *field.data_type() == DataType::Null { Field::new(field.name(), DataType::Utf8, true) } else { field.as_ref().clone() })
        .collect();
    let schema = Arc::new(Schema::new(fields));
    let columns = rows
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(column, field)| datafusion::arrow::compute::cast(column, field.data_type()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(io::Error::other)?;
    let batch = RecordBatch::try_new(schema.clone(), columns).map_err(io::Error::other)?;
    write_atomically(&directory.join(SNAPSHOT_FILE), |file| {
        let mut writer = ArrowWriter::try_new(file, schema, None).map_err(io::Error::other)?;
        writer.write(&batch).map_err(io::Error::other)?;
        writer.close().map_err(io::Error::other)?;
        Ok(())
    })
}
