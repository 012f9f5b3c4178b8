//! A view's rows and indexes, shared by its maintenance task (the only writer) and queries.
//!
//! Rows live in slots addressed by position (`u64`), the unit the CAS index lists hold. A
//! deleted row's slot is reused by a later insert; an index may meanwhile still name the
//! position under an older value, which is harmless because index answers are candidates and
//! queries keep their filter (see `index::cas_index`).
//!
//! Locking: the row slots sit behind a `RwLock` that the writer takes once per micro-batch and
//! a query once per scan, to copy out rows. Index lists are walked without any lock (Harris
//! lists): a query finds its positions while the writer runs, then fetches just those rows.

use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use datafusion::arrow::array::{new_null_array, ArrayRef, RecordBatch, RecordBatchOptions};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::common::{Result, ScalarValue};

use super::types::{cast_value, index_key, widen};
use super::ViewError;
use crate::index::CasIndex;

/// Buckets of an index's value table (2^12): a few thousand distinct values spread well, and
/// the table costs 32 KiB.
const INDEX_BUCKETS_LOG2: u32 = 12;
/// Distinct values per index; past it the index is marked full and queries scan.
pub const INDEX_VALUES_MAX: usize = 1 << 20;

pub type Row = Box<[ScalarValue]>;

/// One index of a view: positions per value of one output column, keyed by the value's text
/// under the column's type when the index was (re)built.
///
/// The lists hold `list_key(position) = u64::MAX - position`: a `CasList` is sorted ascending
/// and an insert walks from the head to its place, while new rows take ever larger positions;
/// reversed, each new row goes at the head in O(1) instead of walking the whole list.
pub struct ViewIndex {
    pub name: String,
    pub column: String,
    pub column_index: usize,
    pub column_type: DataType,
    pub lists: CasIndex<String>,
    /// Set when a value did not fit (`IndexFull`): the index no longer names every row, so
    /// queries must not use it.
    pub full: std::sync::atomic::AtomicBool,
}

impl ViewIndex {
    pub fn usable(&self) -> bool {
        !self.full.load(std::sync::atomic::Ordering::Acquire)
    }

    fn list_key(position: u64) -> u64 {
        u64::MAX - position
    }

    /// The positions listed under any of `keys`, ascending, found without any lock.
    pub fn positions(&self, keys: &[String]) -> Vec<u64> {
        let guard = &crossbeam_epoch::pin();
        let mut positions = Vec::new();
        for key in keys {
            if let Some(list) = self.lists.lookup(key, guard) {
                list.scan(guard, |key| {
                    positions.push(Self::list_key(key));
                    std::ops::ControlFlow::Continue(())
                });
            }
        }
        positions.sort_unstable();
        positions.dedup();
        positions
    }

    fn insert(&self, row: &[ScalarValue], position: u64) {
        if let Some(key) = row.get(self.column_index).and_then(|value| index_key(value, &self.column_type)) {
            if self.lists.insert(key, Self::list_key(position)).is_err() {
                self.full.store(true, std::sync::atomic::Ordering::Release);
            }
        }
    }

    fn remove(&self, row: &[ScalarValue], position: u64) {
        if let Some(key) = row.get(self.column_index).and_then(|value| index_key(value, &self.column_type)) {
            self.lists.remove(&key, Self::list_key(position));
        }
    }
}

pub struct Rows {
    fields: Vec<Field>,
    schema: SchemaRef,
    slots: Vec<Option<Row>>,
    free: Vec<u64>,
    live: usize,
    indexes: Vec<Arc<ViewIndex>>,
}

impl Rows {
    pub fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    pub fn get(&self, position: u64) -> Option<&Row> {
        self.slots.get(position as usize).and_then(Option::as_ref)
    }

    /// Live rows in position order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &Row)> {
        self.slots.iter().enumerate().filter_map(|(position, row)| row.as_ref().map(|row| (position as u64, row)))
    }

    pub fn indexes(&self) -> &[Arc<ViewIndex>] {
        &self.indexes
    }

    /// Widens the output columns with a micro-batch's (`fields` in SELECT order, possibly more
    /// of them under `SELECT *`). An indexed column whose type changed has its index rebuilt,
    /// since its keys are texts under the old type.
    pub fn widen(&mut self, fields: &[Field]) {
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
            return;
        }
        self.schema = Arc::new(Schema::new(self.fields.clone()));
        for index_position in 0..self.indexes.len() {
            let index = &self.indexes[index_position];
            if changed.contains(&index.column_index) {
                let rebuilt = self.build_index(index.name.clone(), index.column_index);
                self.indexes[index_position] = Arc::new(rebuilt);
            }
        }
    }

    pub fn insert(&mut self, row: Row) -> u64 {
        let position = match self.free.pop() {
            Some(position) => {
                debug_assert!(self.slots[position as usize].is_none());
                position
            }
            None => {
                self.slots.push(None);
                (self.slots.len() - 1) as u64
            }
        };
        for index in &self.indexes {
            index.insert(&row, position);
        }
        self.slots[position as usize] = Some(row);
        self.live += 1;
        position
    }

    /// Replaces the row at `position`; indexes whose value changed move it (new list first).
    pub fn replace(&mut self, position: u64, row: Row) {
        let old = self.slots[position as usize].take().expect("replace of a live row");
        for index in &self.indexes {
            let old_key = old.get(index.column_index).and_then(|value| index_key(value, &index.column_type));
            let new_key = row.get(index.column_index).and_then(|value| index_key(value, &index.column_type));
            if old_key != new_key {
                index.insert(&row, position);
                index.remove(&old, position);
            }
        }
        self.slots[position as usize] = Some(row);
    }

    pub fn remove(&mut self, position: u64) {
        let old = self.slots[position as usize].take().expect("remove of a live row");
        for index in &self.indexes {
            index.remove(&old, position);
        }
        self.free.push(position);
        self.live -= 1;
    }

    fn build_index(&self, name: String, column_index: usize) -> ViewIndex {
        let index = ViewIndex {
            name,
            column: self.fields[column_index].name().clone(),
            column_index,
            column_type: self.fields[column_index].data_type().clone(),
            lists: CasIndex::new(INDEX_BUCKETS_LOG2, INDEX_VALUES_MAX),
            full: Default::default(),
        };
        for (position, row) in self.iter() {
            index.insert(row, position);
        }
        index
    }

    /// The rows at `positions` (skipping free slots), projected, as one batch of `schema`.
    pub fn batch_at(&self, positions: impl Iterator<Item = u64>, projection: &[usize], schema: &SchemaRef) -> Result<RecordBatch> {
        let rows: Vec<&Row> = positions.filter_map(|position| self.get(position)).collect();
        rows_to_batch(&rows, projection, schema)
    }

    /// Every live row, projected.
    pub fn batch_all(&self, projection: &[usize], schema: &SchemaRef) -> Result<RecordBatch> {
        let rows: Vec<&Row> = self.iter().map(|(_, row)| row).collect();
        rows_to_batch(&rows, projection, schema)
    }
}

/// `rows` (columns by output index) as a batch of `schema` (the `projection` of the output
/// columns, possibly planned under narrower types: values are cast to it).
pub fn rows_to_batch(rows: &[&Row], projection: &[usize], schema: &SchemaRef) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(projection.len());
    for (field, &column) in schema.fields().iter().zip(projection) {
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

/// A view's rows and indexes. See the module documentation.
pub struct ViewStore {
    rows: RwLock<Rows>,
}

impl ViewStore {
    pub fn new(fields: Vec<Field>) -> ViewStore {
        let fields: Vec<Field> = fields.into_iter().map(|field| Field::new(field.name(), field.data_type().clone(), true)).collect();
        let schema = Arc::new(Schema::new(fields.clone()));
        ViewStore { rows: RwLock::new(Rows { fields, schema, slots: Vec::new(), free: Vec::new(), live: 0, indexes: Vec::new() }) }
    }

    pub fn read(&self) -> RwLockReadGuard<'_, Rows> {
        self.rows.read().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn write(&self) -> RwLockWriteGuard<'_, Rows> {
        self.rows.write().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn schema(&self) -> SchemaRef {
        self.read().schema()
    }

    /// Builds an index over `column` from the rows now; the writer keeps it up to date after.
    pub fn add_index(&self, name: &str, column: &str) -> Result<(), ViewError> {
        let mut rows = self.write();
        let Some(column_index) = rows.fields.iter().position(|field| field.name() == column) else {
            let columns: Vec<&str> = rows.fields.iter().map(|field| field.name().as_str()).collect();
            return Err(ViewError::Invalid(format!("the view has no column {column:?} (its columns: {})", columns.join(", "))));
        };
        if rows.indexes.iter().any(|index| index.name == name) {
            return Err(ViewError::Invalid(format!("index {name} exists")));
        }
        let index = rows.build_index(name.to_string(), column_index);
        rows.indexes.push(Arc::new(index));
        Ok(())
    }

    pub fn drop_index(&self, name: &str) -> bool {
        let mut rows = self.write();
        let before = rows.indexes.len();
        rows.indexes.retain(|index| index.name != name);
        rows.indexes.len() != before
    }

    /// The usable index over `column`, if any.
    pub fn index_on(&self, column: &str) -> Option<Arc<ViewIndex>> {
        self.read().indexes.iter().find(|index| index.column == column && index.usable()).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(value: &str) -> ScalarValue {
        ScalarValue::Utf8(Some(value.to_string()))
    }

    #[test]
    fn index_follows_inserts_moves_and_removes() {
        let store = ViewStore::new(vec![Field::new("id", DataType::Utf8, true), Field::new("region", DataType::Utf8, true)]);
        let a = store.write().insert(vec![text("a"), text("north")].into());
        store.add_index("by_region", "region").unwrap();
        let b = store.write().insert(vec![text("b"), text("north")].into());
        let index = store.index_on("region").unwrap();
        let positions = |value: &str| index.positions(&[value.to_string()]);
        assert_eq!(positions("north"), [a, b]);
        store.write().replace(a, vec![text("a"), text("south")].into());
        assert_eq!(positions("north"), [b]);
        assert_eq!(positions("south"), [a]);
        store.write().remove(b);
        assert!(positions("north").is_empty());
        assert_eq!(store.read().len(), 1);
        let schema = store.schema();
        let batch = store.read().batch_all(&[0, 1], &schema).unwrap();
        assert_eq!(batch.num_rows(), 1);
        assert!(store.add_index("x", "nope").unwrap_err().to_string().contains("no column"));
    }

    #[test]
    fn widening_rebuilds_the_index_under_the_new_type() {
        let store = ViewStore::new(vec![Field::new("n", DataType::Int64, true)]);
        store.write().insert(vec![ScalarValue::Int64(Some(5))].into());
        store.add_index("by_n", "n").unwrap();
        store.write().widen(&[Field::new("n", DataType::Utf8, true)]);
        let index = store.index_on("n").unwrap();
        assert_eq!(index.column_type, DataType::Utf8);
        assert_eq!(index.positions(&["5".to_string()]), [0]);
    }
}
