//! Applies evaluated micro-batches to a view's rows: append (insert each row), upsert (latest
//! row per key; tombstones and rows failing WHERE delete), aggregate (fold into the groups'
//! accumulators, then rewrite the touched groups' rows). The writer side of `store.rs`.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field};
use datafusion::common::ScalarValue;

use super::aggregate::{result_type, Accumulator};
use super::definition::{AggregateLayout, OutputItem, ViewDefinition, ViewKind, PASS_COLUMN, RECORD_OFFSET_COLUMN};
use super::store::{Row, Rows, ViewStore};
use super::types::{key_text, widen};
use super::ViewError;

/// What one view may hold; past a limit the view stops in an error state (counted in
/// `errors`) rather than exhaust the server's memory.
#[derive(Clone, Copy, Debug)]
pub struct ViewLimits {
    pub rows_max: usize,
    pub groups_max: usize,
}

impl Default for ViewLimits {
    fn default() -> Self {
        ViewLimits { rows_max: 5_000_000, groups_max: 1_000_000 }
    }
}

/// Aggregate views' private state: per group (key = the group expressions' values), its row
/// position and accumulators.
#[derive(Default)]
pub struct Groups {
    pub by_key: HashMap<Vec<ScalarValue>, (u64, Vec<Accumulator>)>,
    /// Widened types of the group expressions and of the aggregate arguments.
    pub group_types: Vec<DataType>,
    pub argument_types: Vec<DataType>,
}

pub struct Maintainer {
    pub definition: Arc<ViewDefinition>,
    pub store: Arc<ViewStore>,
    pub limits: ViewLimits,
    /// Upsert views: key text to row position.
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
    ScalarValue::try_from_array(batch.column(column), row).map_err(|error| ViewError::Internal(error.to_string()))
}

impl Maintainer {
    pub fn new(definition: Arc<ViewDefinition>, store: Arc<ViewStore>, limits: ViewLimits, output_names: Vec<String>) -> Maintainer {
        let mut groups = Groups::default();
        if let Some(layout) = &definition.aggregate {
            groups.group_types = vec![DataType::Null; layout.groups];
            groups.argument_types = vec![DataType::Null; layout.functions.len()];
        }
        Maintainer { definition, store, limits, keys: HashMap::new(), groups, output_names, value_errors: 0 }
    }

    /// Applies one evaluated micro-batch (and, for upsert views, the micro-batch's tombstones).
    pub fn apply(&mut self, batch: &RecordBatch, tombstones: &[Tombstone]) -> Result<(), ViewError> {
        match self.definition.kind {
            ViewKind::Append => self.apply_append(batch),
            ViewKind::Upsert => self.apply_upsert(batch, tombstones),
            ViewKind::Aggregate => self.apply_aggregate(batch),
        }
    }

    fn check_room(&self, rows: &Rows) -> Result<(), ViewError> {
        if rows.len() >= self.limits.rows_max {
            return Err(ViewError::Limit(format!("the view holds its maximum of {} rows", self.limits.rows_max)));
        }
        Ok(())
    }

    fn apply_append(&mut self, batch: &RecordBatch) -> Result<(), ViewError> {
        let mut rows = self.store.write();
        let fields: Vec<Field> = batch.schema().fields().iter().map(|field| field.as_ref().clone()).collect();
        rows.widen(&fields);
        for row in 0..batch.num_rows() {
            self.check_room(&rows)?;
            let values: Row = (0..batch.num_columns()).map(|column| value(batch, column, row)).collect::<Result<_, _>>()?;
            rows.insert(values);
        }
        Ok(())
    }

    fn apply_upsert(&mut self, batch: &RecordBatch, tombstones: &[Tombstone]) -> Result<(), ViewError> {
        let schema = batch.schema();
        let (Ok(pass_column), Ok(offset_column)) = (schema.index_of(PASS_COLUMN), schema.index_of(RECORD_OFFSET_COLUMN)) else {
            return Err(ViewError::Internal("an upsert view's evaluation lacks its pass and offset columns".into()));
        };
        let user_columns = pass_column;
        let key_name = self.definition.key_column.as_deref().expect("upsert views have a key");
        let key_column = schema.fields()[..user_columns].iter().position(|field| field.name() == key_name);
        let fields: Vec<Field> = schema.fields()[..user_columns].iter().map(|field| field.as_ref().clone()).collect();
        let store = self.store.clone();
        let mut rows = store.write();
        rows.widen(&fields);
        let offsets = batch.column(offset_column).as_any().downcast_ref::<datafusion::arrow::array::Int64Array>();
        let Some(offsets) = offsets else {
            return Err(ViewError::Internal("the offset column is not Int64".into()));
        };
        // Rows and tombstones, merged in log order.
        let mut tombstones = tombstones.iter().peekable();
        for row in 0..batch.num_rows() {
            let offset = offsets.value(row);
            while let Some(tombstone) = tombstones.next_if(|tombstone| tombstone.offset < offset) {
                self.delete_key(&mut rows, tombstone.key.as_deref());
            }
            let key = match key_column {
                Some(column) => key_text(&value(batch, column, row)?),
                None => None,
            };
            let Some(key) = key else {
                // No key: the record cannot be anyone's latest version.
                self.value_errors += 1;
                continue;
            };
            let passes = matches!(value(batch, pass_column, row)?, ScalarValue::Boolean(Some(true)));
            if !passes {
                self.delete_key(&mut rows, Some(&key));
                continue;
            }
            let values: Row = (0..user_columns).map(|column| value(batch, column, row)).collect::<Result<_, _>>()?;
            match self.keys.get(&key) {
                Some(&position) => rows.replace(position, values),
                None => {
                    self.check_room(&rows)?;
                    let position = rows.insert(values);
                    self.keys.insert(key, position);
                }
            }
        }
        for tombstone in tombstones {
            self.delete_key(&mut rows, tombstone.key.as_deref());
        }
        Ok(())
    }

    fn delete_key(&mut self, rows: &mut Rows, key: Option<&str>) {
        if let Some(position) = key.and_then(|key| self.keys.remove(key)) {
            rows.remove(position);
        }
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

    fn group_row(&self, key: &[ScalarValue], accumulators: &[Accumulator]) -> Row {
        let layout = self.layout();
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
        let mut touched: Vec<Vec<ScalarValue>> = Vec::new();
        for row in 0..batch.num_rows() {
            let key: Vec<ScalarValue> = (0..layout.groups).map(|column| value(batch, column, row)).collect::<Result<_, _>>()?;
            if !self.groups.by_key.contains_key(&key) {
                if self.groups.by_key.len() >= self.limits.groups_max {
                    return Err(ViewError::Limit(format!("the view holds its maximum of {} groups", self.limits.groups_max)));
                }
                self.groups.by_key.insert(key.clone(), (u64::MAX, vec![Accumulator::default(); layout.functions.len()]));
            }
            let (_, accumulators) = self.groups.by_key.get_mut(&key).expect("inserted above");
            for (function, accumulator) in accumulators.iter_mut().enumerate() {
                let argument = match argument_columns[function] {
                    Some(column) => Some(value(batch, column, row)?),
                    None => None,
                };
                if accumulator.fold(layout.functions[function], argument.as_ref()).is_err() {
                    self.value_errors += 1;
                }
            }
            touched.push(key);
        }
        touched.sort_unstable_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
        touched.dedup();
        self.write_groups(touched.iter())
    }

    /// Rewrites the rows of `keys` from their accumulators (inserting new groups' rows).
    pub fn write_groups<'a>(&mut self, keys: impl Iterator<Item = &'a Vec<ScalarValue>>) -> Result<(), ViewError> {
        let fields = self.aggregate_fields();
        let store = self.store.clone();
        let mut rows = store.write();
        rows.widen(&fields);
        for key in keys {
            let (position, accumulators) = self.groups.by_key.get(key).expect("touched groups exist");
            let row = self.group_row(key, accumulators);
            let position = *position;
            if position == u64::MAX {
                self.check_room(&rows)?;
                let position = rows.insert(row);
                self.groups.by_key.get_mut(key).expect("touched groups exist").0 = position;
            } else {
                rows.replace(position, row);
            }
        }
        Ok(())
    }

    /// A view without GROUP BY has exactly one row even over no records (count 0, sums NULL),
    /// as SQL answers it; grouped views start empty.
    pub fn ensure_global_group(&mut self) -> Result<(), ViewError> {
        let layout = self.layout().clone();
        if layout.groups != 0 || !self.groups.by_key.is_empty() {
            return Ok(());
        }
        self.groups.by_key.insert(Vec::new(), (u64::MAX, vec![Accumulator::default(); layout.functions.len()]));
        self.write_groups(std::iter::once(&Vec::new()))
    }

    /// Upsert views after a restore: the key map from the rows' key column.
    pub fn rebuild_keys(&mut self) {
        self.keys.clear();
        let rows = self.store.read();
        let Some(key_name) = self.definition.key_column.as_deref() else { return };
        let Some(column) = rows.schema().fields().iter().position(|field| field.name() == key_name) else { return };
        for (position, row) in rows.iter() {
            if let Some(key) = row.get(column).and_then(key_text) {
                self.keys.insert(key, position);
            }
        }
    }
}
