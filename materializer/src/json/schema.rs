//! The inferred schema of a view: ordered, nullable columns whose types only widen.
//!
//! Column types form a lattice (each arrow points to a wider type):
//!
//! ```text
//!   Null -> Bool -----------------------------------------> Utf8
//!   Null -> Int64 -> Float64 -> Timestamp ----------------> Utf8
//!           Int64 -> Int64Large -> Float64Large ----------> Utf8
//!                    Float64 ---> Float64Large
//! ```
//!
//! `Int64` and `Float64` hold numbers that also read as epochs (seconds or milliseconds by
//! magnitude, within the years 0001 to 9999), so a field holding date text in some records and
//! epoch numbers in others is a Timestamp column whatever its name; `Int64Large` and
//! `Float64Large` hold numbers of which some do not (they join with a Timestamp to Utf8). Both
//! are Int64 and Float64 in Arrow; the field's metadata tells them apart.
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

/// Key of the Arrow field metadata entry that marks an Int64 or Float64 column as
/// `Int64Large` or `Float64Large` (value `"large"`).
pub const NUMBER_RANGE_METADATA_KEY: &str = "yottastore.numbers";
const NUMBER_RANGE_LARGE: &str = "large";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ColumnType {
    /// Only nulls seen so far.
    Null,
    Bool,
    /// Integers, every one of which also reads as an epoch.
    Int64,
    /// Numbers, every one of which also reads as an epoch.
    Float64,
    /// Microseconds since the epoch, UTC.
    Timestamp,
    /// Strings, and the text of anything whose types conflicted.
    Utf8,
    /// Integers, some beyond what reads as an epoch.
    Int64Large,
    /// Numbers, some beyond what reads as an epoch.
    Float64Large,
}

/// Per type, the set of types it widens to (itself included), as a bit set indexed by the
/// discriminant: the lattice above, written once.
const UPPER_SETS: [u8; 8] = {
    const fn bits(types: &[ColumnType]) -> u8 {
        let mut set = 0_u8;
        let mut index = 0;
        while index < types.len() {
            set |= 1 << types[index] as u8;
            index += 1;
        }
        set
    }
    use ColumnType::*;
    [
        0xff,
        bits(&[Bool, Utf8]),
        bits(&[Int64, Float64, Timestamp, Utf8, Int64Large, Float64Large]),
        bits(&[Float64, Timestamp, Utf8, Float64Large]),
        bits(&[Timestamp, Utf8]),
        bits(&[Utf8]),
        bits(&[Int64Large, Float64Large, Utf8]),
        bits(&[Float64Large, Utf8]),
    ]
};

impl ColumnType {
    pub const ALL: [ColumnType; 8] = [
        ColumnType::Null,
        ColumnType::Bool,
        ColumnType::Int64,
        ColumnType::Float64,
        ColumnType::Timestamp,
        ColumnType::Utf8,
        ColumnType::Int64Large,
        ColumnType::Float64Large,
    ];

    /// The narrowest type that holds values of both types: in a lattice, the one whose upper
    /// set is the intersection of theirs.
    pub fn widen(self, other: ColumnType) -> ColumnType {
        let upper = UPPER_SETS[self as usize] & UPPER_SETS[other as usize];
        let widened = ColumnType::ALL
            .into_iter()
            .find(|candidate| UPPER_SETS[*candidate as usize] == upper);
        widened.expect("UPPER_SETS is a lattice")
    }

    /// Whether values of `self` can be represented as `wider` (`wider` is `self` or above it).
    pub fn widens_to(self, wider: ColumnType) -> bool {
        UPPER_SETS[self as usize] & (1 << wider as u8) != 0
    }

    pub fn arrow_type(self) -> DataType {
        match self {
            ColumnType::Null => DataType::Null,
            ColumnType::Bool => DataType::Boolean,
            ColumnType::Int64 | ColumnType::Int64Large => DataType::Int64,
            ColumnType::Float64 | ColumnType::Float64Large => DataType::Float64,
            ColumnType::Timestamp => {
                DataType::Timestamp(TimeUnit::Microsecond, Some(TIMESTAMP_ZONE.into()))
            }
            ColumnType::Utf8 => DataType::Utf8,
        }
    }

    /// The column type an Arrow type stands for, if it is one this module produces. Int64 and
    /// Float64 are taken as the epoch-readable types; `from_field` reads the field's metadata.
    pub fn from_arrow(data_type: &DataType) -> Option<ColumnType> {
        ColumnType::ALL
            .into_iter()
            .find(|column_type| column_type.arrow_type() == *data_type)
    }

    /// The column type of a field made by `InferredSchema::arrow_schema`.
    pub fn from_field(field: &Field) -> Option<ColumnType> {
        let column_type = ColumnType::from_arrow(field.data_type())?;
        let large = field
            .metadata()
            .get(NUMBER_RANGE_METADATA_KEY)
            .map(String::as_str)
            == Some(NUMBER_RANGE_LARGE);
        Some(match (column_type, large) {
            (ColumnType::Int64, true) => ColumnType::Int64Large,
            (ColumnType::Float64, true) => ColumnType::Float64Large,
            (other, _) => other,
        })
    }

    /// The field of a column of this type (nullable, marked when `Int64Large`/`Float64Large`).
    pub fn field(self, name: &str) -> Field {
        let field = Field::new(name, self.arrow_type(), true);
        match self {
            ColumnType::Int64Large | ColumnType::Float64Large => {
                field.with_metadata(HashMap::from([(
                    NUMBER_RANGE_METADATA_KEY.to_string(),
                    NUMBER_RANGE_LARGE.to_string(),
                )]))
            }
            _ => field,
        }
    }

    /// A stable name, for checkpoints: the Arrow type's text for the types that have one of
    /// their own (what checkpoints held before the Large types existed).
    pub fn name(self) -> String {
        match self {
            ColumnType::Int64Large => "Int64 (large)".to_string(),
            ColumnType::Float64Large => "Float64 (large)".to_string(),
            other => other.arrow_type().to_string(),
        }
    }

    pub fn from_name(name: &str) -> Option<ColumnType> {
        ColumnType::ALL
            .into_iter()
            .find(|column_type| column_type.name() == name)
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
        self.check_room(fields_new, schema_fields_max)?;
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

    /// Widens column `index` to hold `column_type`; true if its type changed. The decoder's
    /// commit path: it checks room first (`check_room`) and bumps the version once per record.
    pub(crate) fn widen_column(&mut self, index: u32, column_type: ColumnType) -> bool {
        let field = &mut self.fields[index as usize];
        let widened = field.column_type.widen(column_type);
        let changed = widened != field.column_type;
        field.column_type = widened;
        changed
    }

    /// Appends a column; its name must be new.
    pub(crate) fn push_column(&mut self, name: &str, column_type: ColumnType) -> u32 {
        let index = self.fields.len() as u32;
        let previous = self.index_by_name.insert(name.to_string(), index);
        assert!(
            previous.is_none(),
            "column {name:?} is already in the schema"
        );
        self.fields.push(SchemaField {
            name: name.to_string(),
            column_type,
        });
        index
    }

    pub(crate) fn bump_version(&mut self) {
        self.version += 1;
    }

    /// `SchemaFull` unless `fields_new` more columns fit under `schema_fields_max`.
    pub(crate) fn check_room(
        &self,
        fields_new: usize,
        schema_fields_max: u32,
    ) -> Result<(), DecodeError> {
        let schema_fields = self.fields.len();
        if schema_fields + fields_new > schema_fields_max as usize {
            return Err(DecodeError::SchemaFull {
                schema_fields: schema_fields as u32,
                fields_new: fields_new as u32,
                schema_fields_max,
            });
        }
        Ok(())
    }

    /// The Arrow schema of this version: every field nullable, the version in the metadata.
    pub fn arrow_schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .fields
            .iter()
            .map(|field| field.column_type.field(&field.name))
            .collect();
        let metadata = HashMap::from([(
            SCHEMA_VERSION_METADATA_KEY.to_string(),
            self.version.to_string(),
        )]);
        Arc::new(Schema::new_with_metadata(fields, metadata))
    }

    /// A batch of no rows under `arrow_schema`.
    pub fn empty_batch(&self) -> arrow_array::RecordBatch {
        arrow_array::RecordBatch::new_empty(self.arrow_schema())
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
            let column_type = ColumnType::from_field(field).ok_or_else(|| {
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
            (Null, Int64Large, Int64Large),
            (Null, Float64Large, Float64Large),
            (Bool, Bool, Bool),
            (Bool, Int64, Utf8),
            (Bool, Float64, Utf8),
            (Bool, Timestamp, Utf8),
            (Bool, Utf8, Utf8),
            (Bool, Int64Large, Utf8),
            (Bool, Float64Large, Utf8),
            (Int64, Int64, Int64),
            (Int64, Float64, Float64),
            (Int64, Timestamp, Timestamp),
            (Int64, Utf8, Utf8),
            (Int64, Int64Large, Int64Large),
            (Int64, Float64Large, Float64Large),
            (Float64, Float64, Float64),
            (Float64, Timestamp, Timestamp),
            (Float64, Utf8, Utf8),
            (Float64, Int64Large, Float64Large),
            (Float64, Float64Large, Float64Large),
            (Timestamp, Timestamp, Timestamp),
            (Timestamp, Utf8, Utf8),
            (Timestamp, Int64Large, Utf8),
            (Timestamp, Float64Large, Utf8),
            (Utf8, Utf8, Utf8),
            (Utf8, Int64Large, Utf8),
            (Utf8, Float64Large, Utf8),
            (Int64Large, Int64Large, Int64Large),
            (Int64Large, Float64Large, Float64Large),
            (Float64Large, Float64Large, Float64Large),
        ];
        assert_eq!(table.len(), 36, "every unordered pair of the 8 types");
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
    fn arrow_types_and_names_round_trip() {
        for column_type in ColumnType::ALL {
            assert_eq!(
                ColumnType::from_field(&column_type.field("f")),
                Some(column_type)
            );
            assert_eq!(
                ColumnType::from_name(&column_type.name()),
                Some(column_type)
            );
            assert!(ColumnType::from_arrow(&column_type.arrow_type()).is_some());
        }
        assert_eq!(ColumnType::from_arrow(&DataType::Int64), Some(Int64));
        assert_eq!(ColumnType::from_arrow(&DataType::Int32), None);
        // Names checkpoints held before the Large types existed.
        assert_eq!(ColumnType::from_name("Int64"), Some(Int64));
        assert_eq!(
            ColumnType::from_name(&DataType::Utf8.to_string()),
            Some(Utf8)
        );
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
            .widen_with(
                &[
                    ("a", Int64),
                    ("t", Timestamp),
                    ("n", Null),
                    ("l", Int64Large),
                ],
                8,
            )
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
