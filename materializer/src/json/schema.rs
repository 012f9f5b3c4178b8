//! The inferred schema of a view: ordered, nullable columns whose types only widen.
//!
//! Column types form a join semilattice (each arrow points to a wider type):
//!
//! ```text
//!   Null -> Bool ------------> Utf8
//!   Null -> Int64 -> Float64 -> Utf8
//!   Null -> Timestamp -------> Utf8
//! ```
//!
//! `widen` is the join: the narrowest type both widen to. It is commutative, associative and
//! idempotent, so the final type of each column does not depend on the order records arrive in.
//! Column *order* does: columns are ordered by first appearance, and a new column is appended.
//! Every column is nullable, because any later record may omit any field.

use std::collections::HashMap;
use std::sync::Arc;

use arrow_schema::{DataType, Field, Schema, SchemaRef, TimeUnit};

use super::error::DecodeError;

/// The time zone of every timestamp column: all parsed times are normalised to UTC.
pub const TIMESTAMP_ZONE: &str = "UTC";

/// Key of the Arrow schema metadata entry that carries `InferredSchema::version`.
pub const SCHEMA_VERSION_METADATA_KEY: &str = "yottastore.schema_version";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ColumnType {
    /// Only nulls seen so far.
    Null,
    Bool,
    Int64,
    Float64,
    /// Microseconds since the epoch, UTC.
    Timestamp,
    /// Strings, and the text of anything whose types conflicted.
    Utf8,
}

impl ColumnType {
    pub const ALL: [ColumnType; 6] = [
        ColumnType::Null,
        ColumnType::Bool,
        ColumnType::Int64,
        ColumnType::Float64,
        ColumnType::Timestamp,
        ColumnType::Utf8,
    ];

    /// The narrowest type that holds values of both types.
    pub fn widen(self, other: ColumnType) -> ColumnType {
        use ColumnType::*;
        match (self, other) {
            (a, b) if a == b => a,
            (Null, b) => b,
            (a, Null) => a,
            (Int64, Float64) | (Float64, Int64) => Float64,
            _ => Utf8,
        }
    }

    /// Whether values of `self` can be represented as `wider` (`wider` is `self` or above it).
    pub fn widens_to(self, wider: ColumnType) -> bool {
        self.widen(wider) == wider
    }

    pub fn arrow_type(self) -> DataType {
        match self {
            ColumnType::Null => DataType::Null,
            ColumnType::Bool => DataType::Boolean,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Timestamp => {
                DataType::Timestamp(TimeUnit::Microsecond, Some(TIMESTAMP_ZONE.into()))
            }
            ColumnType::Utf8 => DataType::Utf8,
        }
    }

    /// The column type an Arrow type stands for, if it is one this module produces.
    pub fn from_arrow(data_type: &DataType) -> Option<ColumnType> {
        ColumnType::ALL
            .into_iter()
            .find(|column_type| column_type.arrow_type() == *data_type)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SchemaField {
    pub name: String,
    pub column_type: ColumnType,
}

/// Columns in order of first appearance; a column's index never changes, which is what lets a
/// row decoded under an earlier version be read under a later one.
#[derive(Clone, Debug, Default)]
pub struct InferredSchema {
    fields: Vec<SchemaField>,
    index_by_name: HashMap<String, u32>,
    /// Incremented once for every record that added a column or widened one.
    version: u64,
}

impl InferredSchema {
    pub fn new() -> Self {
        InferredSchema::default()
    }

    pub fn fields(&self) -> &[SchemaField] {
        &self.fields
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn field_index(&self, name: &str) -> Option<u32> {
        self.index_by_name.get(name).copied()
    }

    pub fn field(&self, name: &str) -> Option<&SchemaField> {
        self.field_index(name)
            .map(|index| &self.fields[index as usize])
    }

    /// Widens the schema with one record's fields (names distinct) and returns their column
    /// indices. All or nothing: a record that would take the schema past `schema_fields_max`
    /// changes nothing, so a dead letter leaves no trace in the schema.
    pub fn widen_with(
        &mut self,
        observed: &[(&str, ColumnType)],
        schema_fields_max: u32,
    ) -> Result<Vec<u32>, DecodeError> {
        let fields_new = observed
            .iter()
            .filter(|(name, _)| !self.index_by_name.contains_key(*name))
            .count();
        let schema_fields = self.fields.len();
        if schema_fields + fields_new > schema_fields_max as usize {
            return Err(DecodeError::SchemaFull {
                schema_fields: schema_fields as u32,
                fields_new: fields_new as u32,
                schema_fields_max,
            });
        }

        let mut changed = false;
        let mut indices = Vec::with_capacity(observed.len());
        for &(name, column_type) in observed {
            let index = match self.index_by_name.get(name) {
                Some(&index) => {
                    let field = &mut self.fields[index as usize];
                    let widened = field.column_type.widen(column_type);
                    changed |= widened != field.column_type;
                    field.column_type = widened;
                    index
                }
                None => {
                    let index = self.fields.len() as u32;
                    self.fields.push(SchemaField {
                        name: name.to_string(),
                        column_type,
                    });
                    let previous = self.index_by_name.insert(name.to_string(), index);
                    assert!(previous.is_none(), "observed field names must be distinct");
                    changed = true;
                    index
                }
            };
            indices.push(index);
        }
        if changed {
            self.version += 1;
        }
        assert!(self.fields.len() <= schema_fields_max as usize);
        assert_eq!(self.fields.len(), self.index_by_name.len());
        Ok(indices)
    }

    /// The Arrow schema of this version: every field nullable, the version in the metadata.
    pub fn arrow_schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .fields
            .iter()
            .map(|field| Field::new(&field.name, field.column_type.arrow_type(), true))
            .collect();
        let metadata = HashMap::from([(
            SCHEMA_VERSION_METADATA_KEY.to_string(),
            self.version.to_string(),
        )]);
        Arc::new(Schema::new_with_metadata(fields, metadata))
    }

    /// Restores a schema from `arrow_schema`'s output (a view resuming from a checkpoint).
    pub fn from_arrow_schema(schema: &Schema) -> Result<InferredSchema, String> {
        let version = match schema.metadata().get(SCHEMA_VERSION_METADATA_KEY) {
            Some(text) => text
                .parse::<u64>()
                .map_err(|_| format!("bad schema version {text:?}"))?,
            None => return Err(format!("no {SCHEMA_VERSION_METADATA_KEY} metadata")),
        };
        let mut inferred = InferredSchema {
            version,
            ..InferredSchema::default()
        };
        for field in schema.fields() {
            let column_type = ColumnType::from_arrow(field.data_type()).ok_or_else(|| {
                format!(
                    "field {:?} has type {} that JSON does not produce",
                    field.name(),
                    field.data_type()
                )
            })?;
            let index = inferred.fields.len() as u32;
            if inferred
                .index_by_name
                .insert(field.name().clone(), index)
                .is_some()
            {
                return Err(format!("field {:?} appears twice", field.name()));
            }
            inferred.fields.push(SchemaField {
                name: field.name().clone(),
                column_type,
            });
        }
        Ok(inferred)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ColumnType::*;

    #[test]
    fn widening_table() {
        // (a, b, widen(a, b)); each pair is checked both ways round.
        let table = [
            (Null, Null, Null),
            (Null, Bool, Bool),
            (Null, Int64, Int64),
            (Null, Float64, Float64),
            (Null, Timestamp, Timestamp),
            (Null, Utf8, Utf8),
            (Bool, Bool, Bool),
            (Bool, Int64, Utf8),
            (Bool, Float64, Utf8),
            (Bool, Timestamp, Utf8),
            (Bool, Utf8, Utf8),
            (Int64, Int64, Int64),
            (Int64, Float64, Float64),
            (Int64, Timestamp, Utf8),
            (Int64, Utf8, Utf8),
            (Float64, Float64, Float64),
            (Float64, Timestamp, Utf8),
            (Float64, Utf8, Utf8),
            (Timestamp, Timestamp, Timestamp),
            (Timestamp, Utf8, Utf8),
            (Utf8, Utf8, Utf8),
        ];
        assert_eq!(table.len(), 21, "every unordered pair of the 6 types");
        for (a, b, widened) in table {
            assert_eq!(a.widen(b), widened, "{a:?} {b:?}");
            assert_eq!(b.widen(a), widened, "{b:?} {a:?}");
        }
    }

    #[test]
    fn widening_is_a_join_semilattice() {
        for a in ColumnType::ALL {
            assert_eq!(a.widen(a), a);
            assert!(Null.widens_to(a));
            assert!(a.widens_to(Utf8));
            for b in ColumnType::ALL {
                assert_eq!(a.widen(b), b.widen(a));
                assert!(a.widens_to(a.widen(b)));
                for c in ColumnType::ALL {
                    assert_eq!(a.widen(b).widen(c), a.widen(b.widen(c)));
                }
            }
        }
    }

    #[test]
    fn arrow_types_round_trip() {
        for column_type in ColumnType::ALL {
            assert_eq!(
                ColumnType::from_arrow(&column_type.arrow_type()),
                Some(column_type)
            );
        }
        assert_eq!(ColumnType::from_arrow(&DataType::Int32), None);
    }

    #[test]
    fn widen_with_appends_widens_and_versions() {
        let mut schema = InferredSchema::new();
        assert_eq!(schema.version(), 0);
        assert_eq!(
            schema.widen_with(&[("a", Int64), ("b", Null)], 8).unwrap(),
            vec![0, 1]
        );
        assert_eq!(schema.version(), 1);
        // Nothing new: the version stays.
        assert_eq!(
            schema.widen_with(&[("b", Null), ("a", Int64)], 8).unwrap(),
            vec![1, 0]
        );
        assert_eq!(schema.version(), 1);
        assert_eq!(
            schema
                .widen_with(&[("c", Utf8), ("a", Float64), ("b", Bool)], 8)
                .unwrap(),
            vec![2, 0, 1]
        );
        assert_eq!(schema.version(), 2);
        let fields: Vec<(&str, ColumnType)> = schema
            .fields()
            .iter()
            .map(|field| (field.name.as_str(), field.column_type))
            .collect();
        assert_eq!(fields, [("a", Float64), ("b", Bool), ("c", Utf8)]);
        // A narrower observation never narrows.
        schema.widen_with(&[("a", Int64)], 8).unwrap();
        assert_eq!(schema.field("a").unwrap().column_type, Float64);
        assert_eq!(schema.version(), 2);
    }

    #[test]
    fn a_record_beyond_the_field_limit_changes_nothing() {
        let mut schema = InferredSchema::new();
        schema.widen_with(&[("a", Int64), ("b", Int64)], 3).unwrap();
        let error = schema
            .widen_with(&[("a", Utf8), ("c", Int64), ("d", Int64)], 3)
            .unwrap_err();
        assert_eq!(
            error,
            DecodeError::SchemaFull {
                schema_fields: 2,
                fields_new: 2,
                schema_fields_max: 3
            }
        );
        assert_eq!(schema.field("a").unwrap().column_type, Int64);
        assert_eq!(schema.len(), 2);
        assert_eq!(schema.version(), 1);
        schema.widen_with(&[("c", Int64)], 3).unwrap();
        assert_eq!(schema.len(), 3);
    }

    #[test]
    fn arrow_schema_round_trips_with_its_version() {
        let mut schema = InferredSchema::new();
        schema
            .widen_with(&[("a", Int64), ("t", Timestamp), ("n", Null)], 8)
            .unwrap();
        schema.widen_with(&[("a", Float64)], 8).unwrap();
        let arrow = schema.arrow_schema();
        assert!(arrow.fields().iter().all(|field| field.is_nullable()));
        assert_eq!(arrow.metadata()[SCHEMA_VERSION_METADATA_KEY], "2");
        let restored = InferredSchema::from_arrow_schema(&arrow).unwrap();
        assert_eq!(restored.fields(), schema.fields());
        assert_eq!(restored.version(), 2);
        assert_eq!(restored.field_index("n"), Some(2));
        assert!(
            InferredSchema::from_arrow_schema(&Schema::new(vec![Field::new(
                "x",
                DataType::Int64,
                true
            )]))
            .is_err()
        );
    }
}
