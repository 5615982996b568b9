//! Typed column builders fed one whole record at a time.
//!
//! The json and csv parsers first convert every field of a record into a
//! [`Cell`], kept in a buffer reused across records, and hand the row to
//! [`Columns::append`] only once the whole record is valid. So a rejected
//! record never leaves a value in some columns and not in others: every
//! column always has one value per accepted record.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanBuilder, Float64Builder, Int64Builder, StringBuilder,
    TimestampMillisecondBuilder,
};

use super::dead_letter::Shown;
use super::schema::{ColumnDef, ColumnType, UTC};

/// The most bytes of text one `Utf8` column can hold: Arrow's offsets are
/// `i32`. The builder panics past it, so records that would overflow are
/// dead-lettered instead; receivers bound a micro-batch far below this.
pub(super) const MAX_STRING_BYTES: usize = i32::MAX as usize;

/// One field of a record, converted to its column's type.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Cell {
    /// The record did not mention the field (json only).
    Missing,
    /// An explicit null (json `null`, an empty csv field).
    Null,
    /// Text held in the row's text buffer at `start..end`.
    Str { start: usize, end: usize },
    /// An `int64` value, or a `timestamp` in epoch milliseconds.
    Int(i64),
    /// A `float64` value.
    Float(f64),
    /// A `bool` value.
    Bool(bool),
}

impl Cell {
    fn is_null(self) -> bool {
        matches!(self, Cell::Missing | Cell::Null)
    }
}

/// The fields of the record being parsed, reused from record to record so
/// that parsing allocates nothing once the buffers have grown.
#[derive(Debug, Default)]
pub(super) struct Row {
    /// One cell per schema column.
    pub cells: Vec<Cell>,
    /// The text of the record's string cells, unescaped.
    pub text: String,
}

impl Row {
    pub fn new(columns: usize) -> Self {
        Row {
            cells: vec![Cell::Missing; columns],
            text: String::new(),
        }
    }

    /// Forgets the previous record.
    pub fn clear(&mut self) {
        self.cells.fill(Cell::Missing);
        self.text.clear();
    }
}

/// Copies `s` to the end of a row's `text` and returns its cell.
pub(super) fn push_text(text: &mut String, s: &str) -> Cell {
    let start = text.len();
    text.push_str(s);
    Cell::Str {
        start,
        end: text.len(),
    }
}

enum Builder {
    String(StringBuilder),
    Int64(Int64Builder),
    Float64(Float64Builder),
    Bool(BooleanBuilder),
    Timestamp(TimestampMillisecondBuilder),
}

impl Builder {
    fn new(ty: ColumnType) -> Self {
        match ty {
            ColumnType::String => Builder::String(StringBuilder::new()),
            ColumnType::Int64 => Builder::Int64(Int64Builder::new()),
            ColumnType::Float64 => Builder::Float64(Float64Builder::new()),
            ColumnType::Bool => Builder::Bool(BooleanBuilder::new()),
            ColumnType::Timestamp => {
                Builder::Timestamp(TimestampMillisecondBuilder::new().with_timezone(UTC))
            }
        }
    }

    /// Whether `cell` can be appended to this builder.
    fn accepts(&self, cell: Cell) -> bool {
        matches!(
            (self, cell),
            (_, Cell::Missing | Cell::Null)
                | (Builder::String(_), Cell::Str { .. })
                | (Builder::Int64(_) | Builder::Timestamp(_), Cell::Int(_))
                | (Builder::Float64(_), Cell::Float(_))
                | (Builder::Bool(_), Cell::Bool(_))
        )
    }

    /// Appends `cell`, which [`accepts`](Self::accepts) must have allowed.
    fn append(&mut self, cell: Cell, text: &str) {
        match (self, cell) {
            (Builder::String(b), Cell::Str { start, end }) => b.append_value(&text[start..end]),
            (Builder::Int64(b), Cell::Int(v)) => b.append_value(v),
            (Builder::Timestamp(b), Cell::Int(v)) => b.append_value(v),
            (Builder::Float64(b), Cell::Float(v)) => b.append_value(v),
            (Builder::Bool(b), Cell::Bool(v)) => b.append_value(v),
            (Builder::String(b), _) => b.append_null(),
            (Builder::Int64(b), _) => b.append_null(),
            (Builder::Timestamp(b), _) => b.append_null(),
            (Builder::Float64(b), _) => b.append_null(),
            (Builder::Bool(b), _) => b.append_null(),
        }
    }

    fn finish(&mut self) -> ArrayRef {
        match self {
            Builder::String(b) => Arc::new(b.finish()),
            Builder::Int64(b) => Arc::new(b.finish()),
            Builder::Float64(b) => Arc::new(b.finish()),
            Builder::Bool(b) => Arc::new(b.finish()),
            Builder::Timestamp(b) => Arc::new(b.finish()),
        }
    }
}

/// The builders of a micro-batch's columns.
pub(super) struct Columns {
    defs: Vec<ColumnDef>,
    builders: Vec<Builder>,
    /// Text bytes appended so far, per column (0 for non-string columns).
    string_bytes: Vec<usize>,
    max_string_bytes: usize,
}

impl std::fmt::Debug for Columns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Columns")
            .field("defs", &self.defs)
            .field("string_bytes", &self.string_bytes)
            .finish_non_exhaustive()
    }
}

impl Columns {
    pub fn new(defs: &[ColumnDef]) -> Self {
        Columns {
            defs: defs.to_vec(),
            builders: defs.iter().map(|d| Builder::new(d.ty)).collect(),
            string_bytes: vec![0; defs.len()],
            max_string_bytes: MAX_STRING_BYTES,
        }
    }

    pub fn defs(&self) -> &[ColumnDef] {
        &self.defs
    }

    /// Lowers the per-column text limit, so tests can reach it.
    #[cfg(test)]
    pub fn set_max_string_bytes(&mut self, max: usize) {
        self.max_string_bytes = max;
    }

    /// Appends one record, all columns or none.
    ///
    /// # Errors
    ///
    /// The dead-letter reason when a non-nullable column has no value, a
    /// string column would outgrow [`MAX_STRING_BYTES`], or a cell does not
    /// fit its column (a bug in the calling parser, reported rather than
    /// risking unequal columns).
    pub fn append(&mut self, row: &Row) -> Result<(), String> {
        let cells = &row.cells;
        if cells.len() != self.defs.len() {
            return Err(format!(
                "internal error: {} cells for {} columns",
                cells.len(),
                self.defs.len()
            ));
        }
        for (i, (&cell, def)) in cells.iter().zip(&self.defs).enumerate() {
            let name = Shown(&def.name);
            match cell {
                Cell::Missing if !def.nullable => return Err(format!("field {name} is missing")),
                Cell::Null if !def.nullable => {
                    return Err(format!(
                        "field {name} is null, but the column is not nullable"
                    ));
                }
                Cell::Str { start, end } => {
                    let len = end.saturating_sub(start);
                    if row.text.get(start..end).is_none() {
                        return Err(format!("internal error: field {name} has no text"));
                    }
                    if self.string_bytes[i].saturating_add(len) > self.max_string_bytes {
                        return Err(format!(
                            "field {name}: the micro-batch's text in this column would exceed {} bytes",
                            self.max_string_bytes
                        ));
                    }
                }
                _ => {}
            }
            if !self.builders[i].accepts(cell) {
                return Err(format!(
                    "internal error: field {name}: {cell:?} is not a {} value",
                    def.ty
                ));
            }
        }
        for (i, &cell) in cells.iter().enumerate() {
            if let Cell::Str { start, end } = cell {
                self.string_bytes[i] += end - start;
            }
            debug_assert!(cell.is_null() || self.builders[i].accepts(cell));
            self.builders[i].append(cell, &row.text);
        }
        Ok(())
    }

    /// The columns built so far, leaving the builders empty for the next
    /// micro-batch.
    pub fn finish(&mut self) -> Vec<ArrayRef> {
        self.string_bytes.fill(0);
        self.builders.iter_mut().map(Builder::finish).collect()
    }
}

#[cfg(test)]
mod tests {
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Int64Type, TimestampMillisecondType};

    use super::*;

    fn defs() -> Vec<ColumnDef> {
        vec![
            ColumnDef::required("s", ColumnType::String),
            ColumnDef::new("i", ColumnType::Int64),
            ColumnDef::new("t", ColumnType::Timestamp),
        ]
    }

    #[test]
    fn a_rejected_row_appends_nothing() {
        let mut cols = Columns::new(&defs());
        let mut row = Row::new(3);
        row.cells[0] = push_text(&mut row.text, "a");
        row.cells[1] = Cell::Int(1);
        row.cells[2] = Cell::Int(5);
        cols.append(&row).unwrap();

        row.clear();
        row.cells[1] = Cell::Int(2);
        assert_eq!(cols.append(&row).unwrap_err(), "field \"s\" is missing");
        row.cells[0] = Cell::Null;
        assert_eq!(
            cols.append(&row).unwrap_err(),
            "field \"s\" is null, but the column is not nullable"
        );
        row.cells[0] = Cell::Bool(true);
        assert!(cols.append(&row).unwrap_err().starts_with("internal error"));

        let arrays = cols.finish();
        assert!(arrays.iter().all(|a| a.len() == 1));
        assert_eq!(arrays[0].as_string::<i32>().value(0), "a");
        assert_eq!(arrays[1].as_primitive::<Int64Type>().value(0), 1);
        assert_eq!(
            arrays[2]
                .as_primitive::<TimestampMillisecondType>()
                .value(0),
            5
        );
        // The builders start over.
        assert!(cols.finish().iter().all(|a| a.is_empty()));
    }

    #[test]
    fn text_limit_rejects_the_record_that_would_overflow() {
        let mut cols = Columns::new(&defs());
        cols.set_max_string_bytes(5);
        let mut row = Row::new(3);
        for (s, ok) in [
            ("abc", true),
            ("abc", false),
            ("ab", true),
            ("", true),
            ("x", false),
        ] {
            row.clear();
            row.cells[0] = push_text(&mut row.text, s);
            assert_eq!(cols.append(&row).is_ok(), ok, "{s}");
        }
        assert_eq!(cols.finish()[0].len(), 3);
        // The limit is per micro-batch.
        row.clear();
        row.cells[0] = push_text(&mut row.text, "abcde");
        assert!(cols.append(&row).is_ok());
    }
}
