//! Format `csv`: each record is one line of comma-separated fields, in
//! schema order.
//!
//! - Quoting follows RFC 4180: a field may be enclosed in double quotes, and
//!   then may hold commas; `""` inside quotes is one `"`. A record is one
//!   line, so a quoted field cannot span lines. A closing quote must be
//!   followed by a comma or the end of the record, and a quote inside an
//!   unquoted field is an error — both usually mean the quoting is broken,
//!   and guessing would put values in the wrong columns.
//! - The record must be valid UTF-8; one trailing `\r` is stripped.
//! - The number of fields must equal the number of columns. There is no
//!   header line: a header is dead-lettered like any record that does not
//!   fit the schema (unless every column is a string).
//! - An empty unquoted field is null. A quoted empty field (`""`) is the
//!   empty string in a `string` column and null in any other, since an
//!   empty string cannot be a number, and writers that quote every field
//!   write `""` for a missing number.
//! - Nothing is trimmed: ` 12` is not an `int64`.
//! - Typed fields: `int64` is an optional sign and decimal digits;
//!   `float64` is anything Rust's `f64` parser reads (`1.5`, `-2e3`, `.5`)
//!   as long as it is finite; `bool` is `true` or `false` in any case;
//!   `timestamp` is integer epoch milliseconds or RFC 3339, see
//!   [`super::timestamp`].
//!
//! Fields are unescaped into a buffer reused across records, so parsing
//! allocates nothing per record once the buffers have grown.

use std::fmt::Write as _;
use std::num::IntErrorKind;

use arrow::array::ArrayRef;

use super::columns::{Cell, Columns, Row};
use super::dead_letter::{Shown, not_utf8};
use super::schema::{ColumnDef, ColumnType};
use super::timestamp::parse_rfc3339_millis;

/// At most this many column names are listed in a field-count reason.
const MAX_NAMES_LISTED: usize = 12;

/// Builds the columns of a micro-batch from CSV records.
#[derive(Debug)]
pub(super) struct CsvParser {
    columns: Columns,
    row: Row,
    /// The current record's fields (at most one per column), as ranges of
    /// `row.text`.
    fields: Vec<Field>,
}

#[derive(Debug, Clone, Copy)]
struct Field {
    start: usize,
    end: usize,
    quoted: bool,
}

/// Where a record's quoting is broken; `field` counts from 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QuoteError {
    Unterminated { field: usize },
    AfterClosingQuote { field: usize },
    StrayQuote { field: usize },
}

impl CsvParser {
    pub fn new(defs: &[ColumnDef]) -> Self {
        CsvParser {
            columns: Columns::new(defs),
            row: Row::new(defs.len()),
            fields: Vec::with_capacity(defs.len()),
        }
    }

    /// Appends `record`, or returns why it cannot be a row.
    pub fn push(&mut self, record: &[u8]) -> Result<(), String> {
        let record = record.strip_suffix(b"\r").unwrap_or(record);
        let line = std::str::from_utf8(record).map_err(not_utf8)?;
        self.row.clear();
        self.fields.clear();
        let defs = self.columns.defs();
        let Row { cells, text } = &mut self.row;

        let found = split(line, defs.len(), &mut self.fields, text)
            .map_err(|e| describe_quote_error(e, defs))?;
        if found != defs.len() {
            return Err(count_mismatch(found, defs));
        }
        for ((field, def), cell) in self.fields.iter().zip(defs).zip(cells.iter_mut()) {
            let value = &text[field.start..field.end];
            *cell = if value.is_empty() && !(field.quoted && def.ty == ColumnType::String) {
                if !def.nullable {
                    return Err(format!(
                        "field {} is empty, but the column is not nullable",
                        Shown(&def.name)
                    ));
                }
                Cell::Null
            } else {
                convert(def, value, field)?
            };
        }
        self.columns.append(&self.row)
    }

    pub fn finish(&mut self) -> Vec<ArrayRef> {
        self.columns.finish()
    }
}

/// Splits `line` into fields, unescaping the first `keep` of them into
/// `text` and recording them in `fields`; the rest are only counted.
/// Returns the number of fields.
fn split(
    line: &str,
    keep: usize,
    fields: &mut Vec<Field>,
    text: &mut String,
) -> Result<usize, QuoteError> {
    // Every byte looked at is ASCII (`,` or `"`), so every slice below
    // starts and ends on a character boundary.
    let bytes = line.as_bytes();
    let mut pos = 0;
    let mut count = 0;
    loop {
        let kept = count < keep;
        let start = text.len();
        let quoted = bytes.get(pos) == Some(&b'"');
        if quoted {
            pos += 1;
            loop {
                let Some(quote) = line[pos..].find('"') else {
                    return Err(QuoteError::Unterminated { field: count });
                };
                if kept {
                    text.push_str(&line[pos..pos + quote]);
                }
                pos += quote + 1;
                if bytes.get(pos) != Some(&b'"') {
                    break;
                }
                // `""`: an escaped quote; the field goes on.
                if kept {
                    text.push('"');
                }
                pos += 1;
            }
        } else {
            let end = line[pos..].find(',').map_or(line.len(), |c| pos + c);
            let value = &line[pos..end];
            if value.contains('"') {
                return Err(QuoteError::StrayQuote { field: count });
            }
            if kept {
                text.push_str(value);
            }
            pos = end;
        }
        if kept {
            fields.push(Field {
                start,
                end: text.len(),
                quoted,
            });
        }
        count += 1;
        match bytes.get(pos) {
            None => return Ok(count),
            Some(b',') => pos += 1,
            Some(_) => return Err(QuoteError::AfterClosingQuote { field: count - 1 }),
        }
    }
}

/// `field "name"` for a field of the schema, `field 7` (counting from 1)
/// for one past its end.
fn field_label(field: usize, defs: &[ColumnDef]) -> String {
    match defs.get(field) {
        Some(def) => format!("field {}", Shown(&def.name)),
        None => format!("field {} (the schema has {})", field + 1, defs.len()),
    }
}

fn describe_quote_error(err: QuoteError, defs: &[ColumnDef]) -> String {
    let (field, what) = match err {
        QuoteError::Unterminated { field } => (field, "quoted field is not closed"),
        QuoteError::AfterClosingQuote { field } => {
            (field, "closing quote is not followed by a comma")
        }
        QuoteError::StrayQuote { field } => (field, "quote inside an unquoted field"),
    };
    format!("{}: {what}", field_label(field, defs))
}

/// `3 fields, schema has 4 (user, amount, ts, ok)`.
fn count_mismatch(found: usize, defs: &[ColumnDef]) -> String {
    let mut reason = format!(
        "{found} field{}, schema has {} (",
        if found == 1 { "" } else { "s" },
        defs.len()
    );
    for (i, def) in defs.iter().take(MAX_NAMES_LISTED).enumerate() {
        if i > 0 {
            reason.push_str(", ");
        }
        // `escape_debug` keeps a name with odd characters on one line.
        let _ = write!(reason, "{}", def.name.escape_debug());
    }
    if defs.len() > MAX_NAMES_LISTED {
        reason.push_str(", …");
    }
    reason.push(')');
    reason
}

/// Converts a non-empty field (or a quoted empty string) to a cell of the
/// column's type.
fn convert(def: &ColumnDef, value: &str, field: &Field) -> Result<Cell, String> {
    let mismatch = |why: &str| {
        format!(
            "field {}: expected {}, got {}{why}",
            Shown(&def.name),
            def.ty,
            Shown(value)
        )
    };
    match def.ty {
        ColumnType::String => Ok(Cell::Str {
            start: field.start,
            end: field.end,
        }),
        ColumnType::Int64 => parse_int(value).map(Cell::Int).map_err(mismatch),
        ColumnType::Float64 => match value.parse::<f64>() {
            Ok(v) if v.is_finite() => Ok(Cell::Float(v)),
            Ok(_) => Err(mismatch(", which is not a finite number")),
            Err(_) => Err(mismatch("")),
        },
        ColumnType::Bool => {
            if value.eq_ignore_ascii_case("true") {
                Ok(Cell::Bool(true))
            } else if value.eq_ignore_ascii_case("false") {
                Ok(Cell::Bool(false))
            } else {
                Err(mismatch(""))
            }
        }
        ColumnType::Timestamp => {
            let digits = value.strip_prefix(['+', '-']).unwrap_or(value);
            if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                parse_int(value).map(Cell::Int).map_err(mismatch)
            } else {
                parse_rfc3339_millis(value)
                    .map(Cell::Int)
                    .map_err(|e| mismatch(&format!(": {e}")))
            }
        }
    }
}

/// An `i64`; the error is the suffix of the reason (empty, or why).
fn parse_int(value: &str) -> Result<i64, &'static str> {
    value.parse::<i64>().map_err(|e| match e.kind() {
        IntErrorKind::PosOverflow | IntErrorKind::NegOverflow => ", which is out of range",
        _ => "",
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray, TimestampMillisecondArray,
    };
    use arrow::record_batch::RecordBatch;
    use proptest::prelude::*;

    use super::super::testkit::{self, Ts, Values};
    use super::super::{ColumnDef, ColumnType, Format};

    fn format() -> Format {
        Format::Csv(testkit::schema())
    }

    #[test]
    fn valid_records_become_exact_arrays() {
        let records: [&[u8]; 6] = [
            b"ann,3,2.5,true,1700000000000,hi",
            // Quoted fields with commas and escaped quotes; empty fields.
            b"\"b,o\"\"b\",,,,2026-03-01T10:00:00.250+01:00,",
            // A quoted empty string is "" in a string column, null elsewhere.
            b"\"\",\"\",\"\",\"\",-1,\"\"",
            b"caf\xc3\xa9 \xe2\x9c\x93,+5,-2e3,FALSE,\"1969-12-31 23:59:59.999Z\",\" spaced , \"\r",
            b"x,-9223372036854775808,.5,True,0,\"\"\"\"",
            b"\"\",9223372036854775807,1.7976931348623157e308,false,+7,a\"\"b\"",
        ];
        let parsed = format().parse(records);
        // The last record has a quote inside an unquoted field.
        assert_eq!(parsed.accepted, [0, 1, 2, 3, 4]);
        assert_eq!(parsed.dead_letters.len(), 1);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec!["ann", "b,o\"b", "", "café ✓", "x"])),
            Arc::new(Int64Array::from(vec![
                Some(3),
                None,
                None,
                Some(5),
                Some(i64::MIN),
            ])),
            Arc::new(Float64Array::from(vec![
                Some(2.5),
                None,
                None,
                Some(-2000.0),
                Some(0.5),
            ])),
            Arc::new(BooleanArray::from(vec![
                Some(true),
                None,
                None,
                Some(false),
                Some(true),
            ])),
            Arc::new(
                TimestampMillisecondArray::from(vec![
                    1_700_000_000_000,
                    1_772_355_600_250,
                    -1,
                    -1,
                    0,
                ])
                .with_timezone("UTC"),
            ),
            Arc::new(StringArray::from(vec![
                Some("hi"),
                None,
                Some(""),
                Some(" spaced , "),
                Some("\""),
            ])),
        ];
        let want = RecordBatch::try_new(format().arrow_schema(), columns).unwrap();
        assert_eq!(parsed.batch, want);
    }

    #[test]
    fn one_column_schemas_and_blank_lines() {
        let format = Format::Csv(vec![ColumnDef::new("s", ColumnType::String)]);
        let parsed = format.parse(["", "\"\"", "a", "a,b", "\r"]);
        assert_eq!(parsed.accepted, [0, 1, 2, 4]);
        let want = StringArray::from(vec![None, Some(""), Some("a"), None]);
        assert_eq!(
            parsed.batch.column(0).as_ref(),
            &want as &dyn arrow::array::Array
        );
        assert_eq!(parsed.dead_letters[0].reason, "2 fields, schema has 1 (s)");
    }

    /// Every class of bad record, with the exact reason.
    #[test]
    fn each_error_class_names_the_field() {
        let cases: &[(&[u8], &str)] = &[
            (
                b"a,1,2,true",
                "4 fields, schema has 6 (user, amount, price, ok, ts, note)",
            ),
            (
                b"",
                "1 field, schema has 6 (user, amount, price, ok, ts, note)",
            ),
            (
                b"a,1,2,true,5,n,extra,more",
                "8 fields, schema has 6 (user, amount, price, ok, ts, note)",
            ),
            (
                b"a,12a,,,1,",
                r#"field "amount": expected int64, got "12a""#,
            ),
            (
                b"a, 12,,,1,",
                r#"field "amount": expected int64, got " 12""#,
            ),
            (
                b"a,2.5,,,1,",
                r#"field "amount": expected int64, got "2.5""#,
            ),
            (
                b"a,9223372036854775808,,,1,",
                r#"field "amount": expected int64, got "9223372036854775808", which is out of range"#,
            ),
            (
                b"a,,abc,,1,",
                r#"field "price": expected float64, got "abc""#,
            ),
            (
                b"a,,NaN,,1,",
                r#"field "price": expected float64, got "NaN", which is not a finite number"#,
            ),
            (
                b"a,,1e400,,1,",
                r#"field "price": expected float64, got "1e400", which is not a finite number"#,
            ),
            (b"a,,,yes,1,", r#"field "ok": expected bool, got "yes""#),
            (b"a,,,1,1,", r#"field "ok": expected bool, got "1""#),
            (
                b"a,,,,2026-02-30T00:00:00Z,",
                r#"field "ts": expected timestamp, got "2026-02-30T00:00:00Z": 2026-02-30 is not a date"#,
            ),
            (
                b"a,,,,1.5,",
                r#"field "ts": expected timestamp, got "1.5": not RFC 3339 (YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)): expected a 4-digit year at byte 1"#,
            ),
            (
                b"a,,,,99999999999999999999,",
                r#"field "ts": expected timestamp, got "99999999999999999999", which is out of range"#,
            ),
            (
                b",,,,1,",
                r#"field "user" is empty, but the column is not nullable"#,
            ),
            (
                b"a,,,,,",
                r#"field "ts" is empty, but the column is not nullable"#,
            ),
            (
                b"a,,,,\"\",",
                r#"field "ts" is empty, but the column is not nullable"#,
            ),
            (b"\"a,,,,1,", r#"field "user": quoted field is not closed"#),
            (b"a,,,,1,\"n", r#"field "note": quoted field is not closed"#),
            (
                b"\"a\"x,,,,1,",
                r#"field "user": closing quote is not followed by a comma"#,
            ),
            (
                b"a\"b,,,,1,",
                r#"field "user": quote inside an unquoted field"#,
            ),
            (
                b"a,,,,1,n,\"x",
                "field 7 (the schema has 6): quoted field is not closed",
            ),
            (b"a,\xff,,,1,", "not valid UTF-8 at byte 2"),
        ];
        let mut records: Vec<&[u8]> = vec![b"a,,,,1,"];
        records.extend(cases.iter().map(|(r, _)| *r));
        records.push(b"b,,,,2,");
        let parsed = format().parse(&records);
        assert_eq!(parsed.accepted, [0, records.len() - 1]);
        assert_eq!(parsed.dead_letters.len(), cases.len());
        for (i, (dead, (record, reason))) in parsed.dead_letters.iter().zip(cases).enumerate() {
            assert_eq!(dead.index, i + 1);
            assert_eq!(&dead.reason, reason, "{}", String::from_utf8_lossy(record));
            assert_eq!(&dead.record[..], *record);
        }
    }

    #[test]
    fn long_schemas_are_abbreviated_in_count_reasons() {
        let defs = (0..20)
            .map(|i| ColumnDef::new(format!("c{i}"), ColumnType::Int64))
            .collect();
        let parsed = Format::Csv(defs).parse(["1,2"]);
        assert_eq!(
            parsed.dead_letters[0].reason,
            "2 fields, schema has 20 (c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, …)"
        );
    }

    /// Writes one field, quoting it when it must be (or when `force`).
    fn field(out: &mut String, value: &str, force: bool) {
        if force || value.is_empty() || value.contains([',', '"']) {
            out.push('"');
            out.push_str(&value.replace('"', "\"\""));
            out.push('"');
        } else {
            out.push_str(value);
        }
    }

    /// Writes `v` as a CSV line; `style` bits choose quoting and `\r\n`.
    fn write(v: &Values) -> Vec<u8> {
        let q = |bit: u32| v.style & (1 << bit) != 0;
        let mut out = String::new();
        field(&mut out, &v.user, q(0));
        out.push(',');
        if let Some(a) = v.amount {
            field(&mut out, &a.to_string(), q(1));
        }
        out.push(',');
        if let Some(p) = v.price {
            field(&mut out, &p.to_string(), q(2));
        }
        out.push(',');
        match v.ok {
            Some(b) if q(3) => out.push_str(if b { "TRUE" } else { "False" }),
            Some(b) => out.push_str(&b.to_string()),
            // A quoted empty field is null in a non-string column too.
            None if q(4) => out.push_str("\"\""),
            None => {}
        }
        out.push(',');
        match &v.ts {
            Ts::Millis(ms) => field(&mut out, &ms.to_string(), q(5)),
            Ts::Text(s, _) => field(&mut out, s, q(5)),
        }
        out.push(',');
        if let Some(n) = &v.note {
            // An empty note is quoted by `field`: unquoted it would be null.
            field(&mut out, n, q(6));
        }
        if q(7) {
            out.push('\r');
        }
        out.into_bytes()
    }

    /// A record that must be rejected, of error class `kind`.
    fn corrupt(v: &Values, kind: u8) -> Vec<u8> {
        let good = write(v);
        let good = good.strip_suffix(b"\r").unwrap_or(&good);
        match kind % 9 {
            0 => [good, b",extra"].concat(),
            1 => b"a,1,2".to_vec(),
            2 => [&b"\""[..], good].concat(),
            3 => b"a,12a,,,1,".to_vec(),
            4 => b",,,,1,".to_vec(),
            5 => b"a,,,maybe,1,".to_vec(),
            6 => b"a,,,,2026-13-01T00:00:00Z,".to_vec(),
            7 => b"a,,,,1,\xc3(".to_vec(),
            _ => b"a\"b,,,,1,".to_vec(),
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Dead letters neither shift nor corrupt other rows: the batch is
        /// exactly the valid records' values, in order, and the dead
        /// letters are exactly the invalid indices.
        #[test]
        fn invalid_records_leave_the_rest_intact(
            rows in proptest::collection::vec((testkit::values(), proptest::option::of(any::<u8>())), 0..24)
        ) {
            let records: Vec<Vec<u8>> = rows
                .iter()
                .map(|(v, bad)| match bad {
                    None => write(v),
                    Some(kind) => corrupt(v, *kind),
                })
                .collect();
            testkit::check_mixed(&format(), &rows, &records)?;
        }

        /// Arbitrary bytes, and bytes drawn from CSV's special characters,
        /// never panic and always give a well-formed batch.
        #[test]
        fn never_panics(
            noise in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8),
            near in proptest::collection::vec("[a1,\"\r\u{e9}:T-]{0,24}", 0..8),
        ) {
            let mut records = noise;
            records.extend(near.into_iter().map(String::into_bytes));
            let parsed = format().parse(&records);
            prop_assert_eq!(parsed.batch.num_rows(), parsed.accepted.len());
            prop_assert_eq!(parsed.accepted.len() + parsed.dead_letters.len(), records.len());
        }
    }
}
