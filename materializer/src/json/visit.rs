//! The serde visitor that walks one record straight into the decoder's columns: no tree of
//! values, no string per field. The same visitor walks either the record's bytes (serde_json's
//! streaming deserializer: the fast path) or an already parsed `serde_json::Value` (the exact
//! path, for records the fast path hands over); `Writer` (in `decode.rs`) does the rest.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::decode::{Scalar, Writer};

/// Why a walk stopped early; the serde error that carries it out says nothing.
pub(crate) const STOPPED: &str = "stopped by the record writer";

/// The fields of an object, the name prefix of which is in the writer.
pub(crate) struct ObjectSeed<'w, 'a>(pub &'w mut Writer<'a>);

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let writer = self.0;
        let prefix_bytes = writer.name.len();
        writer.depth += 1;
        while map
            .next_key_seed(KeySeed(&mut *writer, prefix_bytes))?
            .is_some()
        {
            map.next_value_seed(ValueSeed(&mut *writer))?;
            writer.name.truncate(prefix_bytes);
        }
        writer.depth -= 1;
        Ok(())
    }
}

/// A key: appended to the name prefix (with a dot when there is one).
struct KeySeed<'w, 'a>(&'w mut Writer<'a>, usize);

impl<'de> DeserializeSeed<'de> for KeySeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_, '_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a key")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<(), E> {
        let KeySeed(writer, prefix_bytes) = self;
        if prefix_bytes > 0 {
            writer.name.push('.');
        }
        writer.name.push_str(key);
        writer.key().map_err(|()| E::custom(STOPPED))
    }
}

/// A field's value: a scalar or an array becomes a cell, an object is walked under its name.
struct ValueSeed<'w, 'a>(&'w mut Writer<'a>);

impl<'de> DeserializeSeed<'de> for ValueSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl ValueSeed<'_, '_> {
    fn scalar<E: de::Error>(self, scalar: Scalar<'_>) -> Result<(), E> {
        self.0.scalar(scalar).map_err(|()| E::custom(STOPPED))
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_, '_> {
    type Value = ();

    fn expecting(&self, formatter: &mut fmt::Formatter) -> fmt::Result {
        formatter.write_str("a JSON value")
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.scalar(Scalar::Null)
    }

    fn visit_bool<E: de::Error>(self, value: bool) -> Result<(), E> {
        self.scalar(Scalar::Bool(value))
    }

    fn visit_i64<E: de::Error>(self, value: i64) -> Result<(), E> {
        self.scalar(Scalar::Integer(value))
    }

    fn visit_u64<E: de::Error>(self, value: u64) -> Result<(), E> {
        match i64::try_from(value) {
            Ok(value) => self.scalar(Scalar::Integer(value)),
            // Beyond i64: a float, as serde_json's `Number::as_f64` makes it.
            Err(_) => self.scalar(Scalar::Float(value as f64)),
        }
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<(), E> {
        self.scalar(Scalar::Float(value))
    }

    fn visit_str<E: de::Error>(self, value: &str) -> Result<(), E> {
        self.scalar(Scalar::Text(value))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<(), A::Error> {
        let writer = self.0;
        writer
            .object_prefix()
            .map_err(|()| <A::Error as de::Error>::custom(STOPPED))?;
        ObjectSeed(writer).visit_map(map)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        // Arrays are kept as their compact JSON text, as `Value::to_string` writes it.
        let mut elements = Vec::new();
        while let Some(element) = seq.next_element::<Value>()? {
            elements.push(element);
        }
        let writer = self.0;
        let depth = 1 + elements.iter().map(value_depth).max().unwrap_or(0);
        writer
            .check_depth(depth)
            .map_err(|()| <A::Error as de::Error>::custom(STOPPED))?;
        writer.array_text.clear();
        serde_json::to_writer(&mut writer.array_text, &elements)
            .map_err(|error| <A::Error as de::Error>::custom(error))?;
        let text = std::mem::take(&mut writer.array_text);
        // serde_json writes UTF-8.
        let result = writer.scalar(Scalar::Array(
            std::str::from_utf8(&text).unwrap_or_default(),
        ));
        writer.array_text = text;
        result.map_err(|()| <A::Error as de::Error>::custom(STOPPED))
    }
}

/// Containers nested in `value`, itself included (0 for a scalar). Bounded by serde_json's
/// recursion limit, which the value was parsed under.
fn value_depth(value: &Value) -> u32 {
    match value {
        Value::Array(elements) => 1 + elements.iter().map(value_depth).max().unwrap_or(0),
        Value::Object(fields) => 1 + fields.values().map(value_depth).max().unwrap_or(0),
        _ => 0,
    }
}
