//! Record formats: a micro-batch's raw records become one Arrow record batch.
//!
//! Receivers hand the speed layer records — one line's bytes each, without
//! the newline. Every micro-batch interval, the records of one stream are
//! parsed by its [`Format`] into one [`RecordBatch`] with the stream's
//! schema. A record that does not parse never stops the stream and never
//! disturbs the other records: it becomes a [`DeadLetter`] with a one-line
//! reason that names the field, and the batch holds exactly the other
//! records, in input order.
//!
//! # Layout
//!
//! - [`schema`]: [`ColumnType`] and [`ColumnDef`] as declared in the config,
//!   and their Arrow types.
//! - [`text`]: one `Utf8` column `line` holding each record as is.
//! - [`json`]: one JSON object per record; schema fields are read by name.
//! - [`csv`]: comma-separated fields in schema order, RFC 4180 quoting.
//! - [`timestamp`]: the RFC 3339 parser behind `timestamp` columns.
//! - [`dead_letter`]: [`DeadLetter`], the rejected record and its reason.
//! - `columns`: the typed builders that json and csv fill a whole record
//!   at a time, so a rejected record contributes nothing to any column.
//!
//! # Example
//!
//! ```
//! use lamina_speed::format::{ColumnDef, ColumnType, Format, FormatKind};
//!
//! let format = Format::new(
//!     FormatKind::Json,
//!     vec![
//!         ColumnDef::required("user", ColumnType::String),
//!         ColumnDef::new("amount", ColumnType::Int64),
//!     ],
//! )?;
//! let records: [&[u8]; 3] = [
//!     br#"{"user":"ann","amount":3}"#,
//!     br#"{"user":"bob","amount":"12a"}"#,
//!     br#"{"user":"cy"}"#,
//! ];
//! let parsed = format.parse(records);
//! assert_eq!(parsed.batch.num_rows(), 2);
//! assert_eq!(parsed.accepted, [0, 2]);
//! assert_eq!(parsed.dead_letters[0].index, 1);
//! assert_eq!(
//!     parsed.dead_letters[0].reason,
//!     r#"field "amount": expected int64, got string "12a""#
//! );
//! # Ok::<(), lamina_speed::format::SchemaError>(())
//! ```

pub mod csv;
pub mod dead_letter;
pub mod json;
pub mod json_rows;
pub mod schema;
pub mod text;
pub mod timestamp;

mod columns;
#[cfg(test)]
mod testkit;

use arrow::array::RecordBatchOptions;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;

pub use dead_letter::{DeadLetter, MAX_DEAD_LETTER_BYTES};
pub use schema::{ColumnDef, ColumnType, SchemaError};

/// The format names of the config's `format = "..."` key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FormatKind {
    /// See [`Format::Text`].
    Text,
    /// See [`Format::Json`].
    Json,
    /// See [`Format::Csv`].
    Csv,
}

impl FormatKind {
    /// The name used in the config.
    pub fn name(self) -> &'static str {
        match self {
            FormatKind::Text => "text",
            FormatKind::Json => "json",
            FormatKind::Csv => "csv",
        }
    }
}

/// How a stream's records are read. Build it with [`Format::new`], which
/// checks the schema; the variants are public so tests can spell one out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Format {
    /// Each record is one value of the non-null `Utf8` column `line`; see
    /// [`text`].
    Text,
    /// Each record is a JSON object; see [`json`].
    Json(Vec<ColumnDef>),
    /// Each record is a line of comma-separated values; see [`csv`].
    Csv(Vec<ColumnDef>),
}

impl Format {
    /// The format `kind` with the declared `columns` (none for text).
    ///
    /// # Errors
    ///
    /// [`SchemaError`] when text is given columns, json or csv is given
    /// none, or a column name is empty or repeated.
    pub fn new(kind: FormatKind, columns: Vec<ColumnDef>) -> Result<Self, SchemaError> {
        match kind {
            FormatKind::Text if columns.is_empty() => Ok(Format::Text),
            FormatKind::Text => Err(SchemaError::TextWithSchema),
            FormatKind::Json => schema::validate("json", &columns).map(|()| Format::Json(columns)),
            FormatKind::Csv => schema::validate("csv", &columns).map(|()| Format::Csv(columns)),
        }
    }

    /// Which format this is.
    pub fn kind(&self) -> FormatKind {
        match self {
            Format::Text => FormatKind::Text,
            Format::Json(_) => FormatKind::Json,
            Format::Csv(_) => FormatKind::Csv,
        }
    }

    /// The schema of the batches this format produces: for text one
    /// non-null `Utf8` column `line`; otherwise the declared columns, with
    /// `timestamp` as `Timestamp(Millisecond, "UTC")`.
    pub fn arrow_schema(&self) -> SchemaRef {
        match self {
            Format::Text => text::arrow_schema(),
            Format::Json(columns) | Format::Csv(columns) => schema::arrow_schema(columns),
        }
    }

    /// A parser for this format. Keep it for the stream's lifetime: its
    /// buffers are reused from batch to batch.
    pub fn parser(&self) -> Parser {
        let records = match self {
            Format::Text => Records::Text(text::TextParser::new()),
            Format::Json(columns) => Records::Json(json::JsonParser::new(columns)),
            Format::Csv(columns) => Records::Csv(csv::CsvParser::new(columns)),
        };
        Parser {
            schema: self.arrow_schema(),
            records,
        }
    }

    /// Parses one micro-batch with a fresh [`Parser`].
    pub fn parse<I>(&self, records: I) -> Parsed
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        self.parser().parse(records)
    }
}

/// The outcome of parsing one micro-batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// The records that parsed, in input order, with the format's schema.
    pub batch: RecordBatch,
    /// The records that did not, in input order.
    pub dead_letters: Vec<DeadLetter>,
    /// The input index of each row of `batch`: row `r` came from record
    /// `accepted[r]`. Together with the dead letters' indices it covers
    /// every input index exactly once.
    pub accepted: Vec<usize>,
}

/// Turns micro-batches of one stream's records into record batches.
#[derive(Debug)]
pub struct Parser {
    schema: SchemaRef,
    records: Records,
}

#[derive(Debug)]
enum Records {
    Text(text::TextParser),
    Json(json::JsonParser),
    Csv(csv::CsvParser),
}

impl Parser {
    /// The schema of the batches this parser produces.
    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    /// Parses one micro-batch: every record either becomes a row of the
    /// batch or a dead letter. Never panics, whatever the bytes.
    pub fn parse<I>(&mut self, records: I) -> Parsed
    where
        I: IntoIterator,
        I::Item: AsRef<[u8]>,
    {
        let mut accepted = Vec::new();
        let mut dead_letters = Vec::new();
        for (index, record) in records.into_iter().enumerate() {
            let record = record.as_ref();
            let outcome = match &mut self.records {
                Records::Text(p) => p.push(record),
                Records::Json(p) => p.push(record),
                Records::Csv(p) => p.push(record),
            };
            match outcome {
                Ok(()) => accepted.push(index),
                Err(reason) => dead_letters.push(DeadLetter::new(index, reason, record)),
            }
        }
        let columns = match &mut self.records {
            Records::Text(p) => p.finish(),
            Records::Json(p) => p.finish(),
            Records::Csv(p) => p.finish(),
        };
        // Every column has one value per accepted record, of the schema's
        // type, and no null where the schema forbids one (`Columns::append`
        // and the text parser make sure), so the batch is well formed. The
        // explicit row count keeps that true for a schema with no column.
        let options = RecordBatchOptions::new().with_row_count(Some(accepted.len()));
        let batch = RecordBatch::try_new_with_options(self.schema.clone(), columns, &options)
            .expect("parsers build columns that match their schema");
        Parsed {
            batch,
            dead_letters,
            accepted,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_the_schema() {
        let a = ColumnDef::new("a", ColumnType::Int64);
        assert_eq!(Format::new(FormatKind::Text, vec![]), Ok(Format::Text));
        assert_eq!(
            Format::new(FormatKind::Text, vec![a.clone()]),
            Err(SchemaError::TextWithSchema)
        );
        assert_eq!(
            Format::new(FormatKind::Csv, vec![]),
            Err(SchemaError::Empty { format: "csv" })
        );
        assert!(matches!(
            Format::new(FormatKind::Json, vec![a.clone(), a.clone()]),
            Err(SchemaError::Duplicate { .. })
        ));
        let json = Format::new(FormatKind::Json, vec![a]).unwrap();
        assert_eq!(json.kind(), FormatKind::Json);
        let kind: FormatKind = serde_json::from_str("\"csv\"").unwrap();
        assert_eq!(kind.name(), "csv");
    }

    /// A schema built by hand, without [`Format::new`]'s checks, still
    /// parses without panicking.
    #[test]
    fn unchecked_schemas_do_not_panic() {
        let a = ColumnDef::required("a", ColumnType::Int64);
        for format in [
            Format::Json(vec![]),
            Format::Csv(vec![]),
            Format::Json(vec![a.clone(), a.clone()]),
            Format::Csv(vec![a.clone(), a]),
        ] {
            let parsed = format.parse([&b"{\"a\":1}"[..], b"1,2", b"", b"1"]);
            assert_eq!(
                parsed.accepted.len() + parsed.dead_letters.len(),
                4,
                "{format:?}"
            );
            assert_eq!(parsed.batch.num_rows(), parsed.accepted.len());
        }
    }

    #[test]
    fn parser_is_reusable_across_batches() {
        let format = Format::Csv(vec![ColumnDef::new("n", ColumnType::Int64)]);
        let mut parser = format.parser();
        let first = parser.parse(["1", "x", "2"]);
        let second = parser.parse(["3"]);
        assert_eq!(first.batch.num_rows(), 2);
        assert_eq!(first.accepted, [0, 2]);
        assert_eq!(second.batch.num_rows(), 1);
        assert_eq!(second.accepted, [0]);
        assert_eq!(second, format.parse(["3"]));
        let empty = parser.parse(Vec::<Vec<u8>>::new());
        assert_eq!(empty.batch.num_rows(), 0);
        assert_eq!(empty.batch.schema(), format.arrow_schema());
    }
}
