//! Dotted names a decoder has met, so that a field's column (and whether its name marks epoch
//! numbers) is found by one hash lookup, without allocating, and a name met twice in one record
//! is noticed. Records of one shape name their fields in the same order, so the entry the
//! previous record had at the same key position is tried first, by comparing the name: a hash
//! only for keys that moved.
//!
//! Entries are the schema's columns and the prefixes of nested objects (`engine` of
//! `engine.temp`): a duplicate key at any level repeats one of them within a record, which is
//! what sends a record to the decoder's exact path (`decode.rs`). Prefixes are bounded: past
//! `prefixes_max`, records with a prefix never met take the exact path too.

use std::collections::HashMap;

use super::epoch_fields::EpochFields;
use super::schema::InferredSchema;

/// Key positions whose entries are remembered for the next record.
const PREDICTED_KEYS_MAX: usize = 4096;
const NO_ENTRY: u32 = u32::MAX;

#[derive(Debug)]
pub(crate) struct NameEntry {
    name: Box<str>,
    /// The schema column of this name, if a scalar was ever committed under it.
    pub column: Option<u32>,
    /// The name marks epoch numbers (`EpochFields`).
    pub epoch: bool,
    /// The last record (by the decoder's count) that met this name.
    pub stamp: u64,
}

#[derive(Debug, Default)]
pub(crate) struct NameTable {
    entries: Vec<NameEntry>,
    by_name: HashMap<Box<str>, u32>,
    /// Per key position of the last record, its entry (`NO_ENTRY` for none).
    previous: Vec<u32>,
    prefixes: usize,
    prefixes_max: usize,
}

impl NameTable {
    /// The columns of `schema`, with no prefix yet.
    pub fn new(schema: &InferredSchema, epoch_fields: &EpochFields, prefixes_max: usize) -> Self {
        let mut table = NameTable {
            prefixes_max,
            ..NameTable::default()
        };
        for (index, field) in schema.fields().iter().enumerate() {
            let entry = table.insert(&field.name, epoch_fields);
            table.entries[entry as usize].column = Some(index as u32);
        }
        table
    }

    pub fn get(&self, name: &str) -> Option<u32> {
        self.by_name.get(name).copied()
    }

    /// The entry of `name`, the `position`th key of its record.
    pub fn find(&mut self, position: usize, name: &str) -> Option<u32> {
        if let Some(&id) = self.previous.get(position) {
            if id != NO_ENTRY && *self.entries[id as usize].name == *name {
                return Some(id);
            }
        }
        let found = self.get(name);
        if position < PREDICTED_KEYS_MAX {
            if self.previous.len() <= position {
                self.previous.resize(position + 1, NO_ENTRY);
            }
            self.previous[position] = found.unwrap_or(NO_ENTRY);
        }
        found
    }

    pub fn entry(&mut self, id: u32) -> &mut NameEntry {
        &mut self.entries[id as usize]
    }

    /// A new prefix entry, or `None` when prefixes are at their limit.
    pub fn insert_prefix(&mut self, name: &str, epoch_fields: &EpochFields) -> Option<u32> {
        if self.prefixes >= self.prefixes_max {
            return None;
        }
        self.prefixes += 1;
        Some(self.insert(name, epoch_fields))
    }

    /// Records that `name` is now schema column `column`.
    pub fn set_column(&mut self, name: &str, column: u32, epoch_fields: &EpochFields) {
        let id = match self.get(name) {
            Some(id) => id,
            None => self.insert(name, epoch_fields),
        };
        let entry = &mut self.entries[id as usize];
        debug_assert!(entry.column.is_none());
        entry.column = Some(column);
    }

    fn insert(&mut self, name: &str, epoch_fields: &EpochFields) -> u32 {
        let id = self.entries.len() as u32;
        self.entries.push(NameEntry {
            name: name.into(),
            column: None,
            epoch: epoch_fields.contains(name),
            stamp: 0,
        });
        let previous = self.by_name.insert(name.into(), id);
        assert!(previous.is_none(), "name {name:?} entered twice");
        id
    }
}
