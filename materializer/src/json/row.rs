//! One decoded record: typed cells by column index, each keeping the type its own JSON value
//! had. Under a later, wider schema a cell is converted on the way into Arrow (`batch.rs`), so
//! rows decoded before a widening stay valid without being touched.

use std::borrow::Cow;

use super::schema::ColumnType;

#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    Null,
    Bool(bool),
    Int64(i64),
    Float64(f64),
    /// `text` is what the record held (date text, or the epoch number's JSON text), kept so that
    /// a column that later widens to strings shows the original, not a re-rendering.
    Timestamp {
        micros: i64,
        text: Box<str>,
    },
    /// A string, or an array's compact JSON text.
    Utf8(String),
}

impl Cell {
    pub fn column_type(&self) -> ColumnType {
        match self {
            Cell::Null => ColumnType::Null,
            Cell::Bool(_) => ColumnType::Bool,
            Cell::Int64(_) => ColumnType::Int64,
            Cell::Float64(_) => ColumnType::Float64,
            Cell::Timestamp { .. } => ColumnType::Timestamp,
            Cell::Utf8(_) => ColumnType::Utf8,
        }
    }

    /// The cell as a string in a column widened to Utf8: strings and date text as they were,
    /// numbers and booleans as canonical JSON text. `None` for null.
    pub fn text(&self) -> Option<Cow<'_, str>> {
        match self {
            Cell::Null => None,
            Cell::Bool(value) => Some(Cow::Borrowed(bool_text(*value))),
            Cell::Int64(value) => Some(Cow::Owned(value.to_string())),
            Cell::Float64(value) => Some(Cow::Owned(float_text(*value))),
            Cell::Timestamp { text, .. } => Some(Cow::Borrowed(text)),
            Cell::Utf8(text) => Some(Cow::Borrowed(text)),
        }
    }
}

pub fn bool_text(value: bool) -> &'static str {
    if value {
        "true"
    } else {
        "false"
    }
}

/// Integers at or below 2^53 exactly.
const FLOAT_EXACT_INTEGER_MAX: f64 = 9_007_199_254_740_992.0;

/// Canonical JSON text of a float. An integral value that a float holds exactly is written
/// without a fraction (`5`, not `5.0`), so an Int64 column that widened to Float64 and then to
/// Utf8 shows the same text whichever way round the conversions ran (row or batch). Others get
/// the shortest text that reads back as the same float.
pub fn float_text(value: f64) -> String {
    debug_assert!(value.is_finite(), "JSON has no NaN or infinity");
    if value.fract() == 0.0 && value.abs() <= FLOAT_EXACT_INTEGER_MAX {
        return (value as i64).to_string();
    }
    match serde_json::Number::from_f64(value) {
        Some(number) => number.to_string(),
        None => value.to_string(),
    }
}

/// A decoded record: `(column index, cell)` pairs in the record's field order, indices distinct.
/// Columns the record does not mention are null.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub(crate) cells: Vec<(u32, Cell)>,
    pub(crate) schema_version: u64,
}

impl Row {
    pub fn cells(&self) -> &[(u32, Cell)] {
        &self.cells
    }

    pub fn cell(&self, column_index: u32) -> Option<&Cell> {
        self.cells
            .iter()
            .find(|(index, _)| *index == column_index)
            .map(|(_, cell)| cell)
    }

    /// The schema version right after this row was decoded: the row is valid under it and every
    /// later version.
    pub fn schema_version(&self) -> u64 {
        self.schema_version
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_text_is_canonical() {
        assert_eq!(float_text(5.0), "5");
        assert_eq!(float_text(-0.0), "0");
        assert_eq!(float_text(1.5), "1.5");
        assert_eq!(float_text(0.1), "0.1");
        assert_eq!(float_text(-2.25), "-2.25");
        assert_eq!(float_text(9_007_199_254_740_992.0), "9007199254740992");
        assert_eq!(float_text(1e300).parse::<f64>().unwrap(), 1e300);
        assert_eq!(float_text(1.0e-7).parse::<f64>().unwrap(), 1.0e-7);
    }

    #[test]
    fn cell_text() {
        assert_eq!(Cell::Null.text(), None);
        assert_eq!(Cell::Bool(true).text().unwrap(), "true");
        assert_eq!(Cell::Int64(-7).text().unwrap(), "-7");
        assert_eq!(Cell::Float64(2.5).text().unwrap(), "2.5");
        let timestamp = Cell::Timestamp {
            micros: 0,
            text: "01/01/1970".into(),
        };
        assert_eq!(timestamp.text().unwrap(), "01/01/1970");
        assert_eq!(Cell::Utf8("x".to_string()).text().unwrap(), "x");
    }
}
