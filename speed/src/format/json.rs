//! Format `json`: each record is one JSON object.
//!
//! Fields named in the schema are read; other fields are skipped without
//! being checked beyond JSON syntax. A missing field or `null` is null when
//! the column is nullable; otherwise the record is dead-lettered with a
//! reason naming the field. A schema field given twice in one object is
//! rejected rather than resolved silently one way or the other.
//!
//! What each column type accepts:
//!
//! | type        | JSON value                                                            |
//! |-------------|-----------------------------------------------------------------------|
//! | `string`    | a string (numbers and booleans are not turned into text)              |
//! | `int64`     | an integer literal in the `i64` range; `2.5`, `3.0` and `1e3` are not |
//! | `float64`   | any number (integers above 2^53 are rounded to the nearest `f64`)     |
//! | `bool`      | `true` or `false`                                                     |
//! | `timestamp` | an integer (epoch milliseconds) or an RFC 3339 string, see [`super::timestamp`] |
//!
//! `int64` refuses `3.0` because JSON numbers with a fraction or exponent
//! arrive as `f64`, and accepting the integral ones would silently round
//! values beyond 2^53; producers that mean an integer write one.
//!
//! Records are deserialized straight into the row's cells by a serde
//! visitor: no `serde_json::Value` tree, and no allocation per record once
//! the row buffers have grown (serde_json allocates only for strings with
//! escapes).

use std::collections::HashMap;
use std::fmt;

use arrow::array::ArrayRef;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::columns::{Cell, Columns, Row, push_text};
use super::dead_letter::Shown;
use super::schema::{ColumnDef, ColumnType};
use super::timestamp::parse_rfc3339_millis;

/// 2^63: integral `f64`s at or beyond it do not fit an `i64`.
const I64_BOUND: f64 = 9_223_372_036_854_775_808.0;

/// Builds the columns of a micro-batch from JSON records.
#[derive(Debug)]
pub(super) struct JsonParser {
    columns: Columns,
    /// Column index by field name.
    lookup: HashMap<String, usize>,
    row: Row,
    /// The reason for the current record's rejection, when it was found by
    /// our own visitors rather than by serde_json's syntax checks.
    problem: Option<String>,
    /// The schema field whose value is being read, to name it in syntax
    /// errors inside the value.
    current: Option<usize>,
}

impl JsonParser {
    pub fn new(defs: &[ColumnDef]) -> Self {
        JsonParser {
            columns: Columns::new(defs),
            lookup: defs
                .iter()
                .enumerate()
                .map(|(i, d)| (d.name.clone(), i))
                .collect(),
            row: Row::new(defs.len()),
            problem: None,
            current: None,
        }
    }

    /// Appends `record`, or returns why it cannot be a row.
    pub fn push(&mut self, record: &[u8]) -> Result<(), String> {
        self.row.clear();
        self.problem = None;
        self.current = None;
        // JSON's whitespace, which is narrower than `u8::is_ascii_whitespace`.
        if record
            .iter()
            .all(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            return Err("empty record, expected a JSON object".to_owned());
        }
        let mut de = serde_json::Deserializer::from_slice(record);
        let seed = RecordSeed {
            defs: self.columns.defs(),
            lookup: &self.lookup,
            row: &mut self.row,
            problem: &mut self.problem,
            current: &mut self.current,
        };
        if let Err(e) = seed.deserialize(&mut de).and_then(|()| de.end()) {
            return Err(match (self.problem.take(), self.current) {
                (Some(problem), _) => problem,
                (None, Some(i)) => format!(
                    "field {}: invalid JSON: {e}",
                    Shown(&self.columns.defs()[i].name)
                ),
                (None, None) => format!("invalid JSON: {e}"),
            });
        }
        self.columns.append(&self.row)
    }

    pub fn finish(&mut self) -> Vec<ArrayRef> {
        self.columns.finish()
    }
}

/// Deserializes one record into the row's cells.
struct RecordSeed<'p> {
    defs: &'p [ColumnDef],
    lookup: &'p HashMap<String, usize>,
    row: &'p mut Row,
    problem: &'p mut Option<String>,
    current: &'p mut Option<usize>,
}

impl<'de> DeserializeSeed<'de> for RecordSeed<'_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        // `deserialize_any` so that a record of another type reaches the
        // visitor, which names what it found.
        deserializer.deserialize_any(self)
    }
}

impl RecordSeed<'_> {
    fn not_an_object<E: de::Error>(self, found: fmt::Arguments<'_>) -> Result<(), E> {
        *self.problem = Some(format!("record is not a JSON object, it is {found}"));
        Err(E::custom("not an object"))
    }
}

impl<'de> Visitor<'de> for RecordSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let Row { cells, text } = self.row;
        while let Some(key) = map.next_key_seed(KeySeed(self.lookup))? {
            let Some(i) = key else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let name = &self.defs[i].name;
            if cells[i] != Cell::Missing {
                *self.problem = Some(format!("field {} appears more than once", Shown(name)));
                return Err(de::Error::custom("duplicate field"));
            }
            *self.current = Some(i);
            cells[i] = map.next_value_seed(ValueSeed {
                ty: self.defs[i].ty,
                name,
                text: &mut *text,
                problem: &mut *self.problem,
            })?;
            *self.current = None;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
        self.not_an_object(format_args!("an array"))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.not_an_object(format_args!("the string {}", Shown(v)))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.not_an_object(format_args!("the boolean {v}"))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.not_an_object(format_args!("the number {v}"))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.not_an_object(format_args!("the number {v}"))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.not_an_object(format_args!("the number {v:?}"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.not_an_object(format_args!("null"))
    }
}

/// Resolves an object key to the index of its column, if it has one.
struct KeySeed<'p>(&'p HashMap<String, usize>);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        Ok(self.0.get(key).copied())
    }
}

/// Reads one schema field's value as a cell of its column's type.
struct ValueSeed<'p> {
    ty: ColumnType,
    name: &'p str,
    text: &'p mut String,
    problem: &'p mut Option<String>,
}

impl ValueSeed<'_> {
    fn expected(&self) -> &'static str {
        match self.ty {
            ColumnType::String => "string",
            ColumnType::Int64 => "int64",
            ColumnType::Float64 => "float64",
            ColumnType::Bool => "bool",
            ColumnType::Timestamp => "timestamp (epoch milliseconds or RFC 3339 string)",
        }
    }

    fn mismatch<E: de::Error>(self, got: fmt::Arguments<'_>) -> Result<Cell, E> {
        *self.problem = Some(format!(
            "field {}: expected {}, got {got}",
            Shown(self.name),
            self.expected()
        ));
        Err(E::custom("wrong type"))
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = Cell;

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Cell, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = Cell;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a {} value", self.ty)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Cell, E> {
        Ok(Cell::Null)
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Cell, E> {
        match self.ty {
            ColumnType::Bool => Ok(Cell::Bool(v)),
            _ => self.mismatch(format_args!("boolean {v}")),
        }
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Cell, E> {
        match self.ty {
            ColumnType::Int64 | ColumnType::Timestamp => Ok(Cell::Int(v)),
            ColumnType::Float64 => Ok(Cell::Float(v as f64)),
            _ => self.mismatch(format_args!("number {v}")),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Cell, E> {
        match (self.ty, i64::try_from(v)) {
            (ColumnType::Int64 | ColumnType::Timestamp, Ok(v)) => Ok(Cell::Int(v)),
            (ColumnType::Int64 | ColumnType::Timestamp, Err(_)) => {
                self.mismatch(format_args!("number {v}, which is out of range"))
            }
            (ColumnType::Float64, _) => Ok(Cell::Float(v as f64)),
            _ => self.mismatch(format_args!("number {v}")),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Cell, E> {
        match self.ty {
            // serde_json rejects numbers beyond f64's range itself, so `v`
            // is finite.
            ColumnType::Float64 => Ok(Cell::Float(v)),
            ColumnType::Int64 | ColumnType::Timestamp if v.fract() == 0.0 => {
                if v.abs() < I64_BOUND {
                    self.mismatch(format_args!(
                        "number {v:?}; integers must be written without a fraction or exponent"
                    ))
                } else {
                    self.mismatch(format_args!("number {v:?}, which is out of range"))
                }
            }
            _ => self.mismatch(format_args!("number {v:?}")),
        }
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Cell, E> {
        match self.ty {
            ColumnType::String => Ok(push_text(self.text, v)),
            ColumnType::Timestamp => match parse_rfc3339_millis(v) {
                Ok(ms) => Ok(Cell::Int(ms)),
                Err(e) => self.mismatch(format_args!("string {}: {e}", Shown(v))),
            },
            _ => self.mismatch(format_args!("string {}", Shown(v))),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Cell, A::Error> {
        self.mismatch(format_args!("an object"))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Cell, A::Error> {
        self.mismatch(format_args!("an array"))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow::array::{
        ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, StringArray,
        TimestampMillisecondArray,
    };
    use arrow::record_batch::RecordBatch;
    use proptest::prelude::*;

    use super::super::Format;
    use super::super::testkit::{self, Ts, Values};

    fn format() -> Format {
        Format::Json(testkit::schema())
    }

    #[test]
    fn valid_records_become_exact_arrays() {
        let records: [&[u8]; 5] = [
            br#"{"user":"ann","amount":3,"price":2.5,"ok":true,"ts":1700000000000,"note":"hi"}"#,
            // Order does not matter; unknown fields of any shape are skipped;
            // missing and null nullable fields are null.
            br#" {"ts":"2026-03-01T10:00:00.250+01:00", "x":{"y":[1,{"z":null}]}, "user":"bob", "amount":null} "#,
            // Escapes in values and keys, negative numbers, integers as floats.
            br#"{"us\u0065r":"caf\u00e9 \"q\"\n","amount":-9223372036854775808,"price":-7,"ok":false,"ts":-1}"#,
            br#"{"user":"","price":18446744073709551615,"ts":"1969-12-31t23:59:59.999z","note":""}"#,
            b"{\"user\":\"\xe2\x9c\x93\",\"ts\":0}\r",
        ];
        let parsed = format().parse(records);
        assert!(parsed.dead_letters.is_empty(), "{:?}", parsed.dead_letters);
        assert_eq!(parsed.accepted, [0, 1, 2, 3, 4]);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![
                "ann",
                "bob",
                "café \"q\"\n",
                "",
                "✓",
            ])),
            Arc::new(Int64Array::from(vec![
                Some(3),
                None,
                Some(i64::MIN),
                None,
                None,
            ])),
            Arc::new(Float64Array::from(vec![
                Some(2.5),
                None,
                Some(-7.0),
                Some(18446744073709551615.0),
                None,
            ])),
            Arc::new(BooleanArray::from(vec![
                Some(true),
                None,
                Some(false),
                None,
                None,
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
                None,
                Some(""),
                None,
            ])),
        ];
        let want = RecordBatch::try_new(format().arrow_schema(), columns).unwrap();
        assert_eq!(parsed.batch, want);
    }

    /// Every class of bad record, with the exact reason.
    #[test]
    fn each_error_class_names_the_field() {
        let ok = r#""user":"a","ts":1"#;
        let cases: Vec<(String, &str)> = vec![
            ("".into(), "empty record, expected a JSON object"),
            (" \t\r".into(), "empty record, expected a JSON object"),
            (
                "[1,2]".into(),
                "record is not a JSON object, it is an array",
            ),
            (
                "42".into(),
                "record is not a JSON object, it is the number 42",
            ),
            (
                "-1.5".into(),
                "record is not a JSON object, it is the number -1.5",
            ),
            (
                r#""s""#.into(),
                r#"record is not a JSON object, it is the string "s""#,
            ),
            ("null".into(), "record is not a JSON object, it is null"),
            (
                "true".into(),
                "record is not a JSON object, it is the boolean true",
            ),
            (
                r#"{"user":"a""#.into(),
                "invalid JSON: EOF while parsing an object at line 1 column 11",
            ),
            (
                format!("{{{ok}}} x"),
                "invalid JSON: trailing characters at line 1 column 21",
            ),
            (
                "{user:1}".into(),
                "invalid JSON: key must be a string at line 1 column 2",
            ),
            (
                format!("{{{ok},\"amount\":\"12a\"}}"),
                r#"field "amount": expected int64, got string "12a""#,
            ),
            (
                format!("{{{ok},\"amount\":2.5}}"),
                r#"field "amount": expected int64, got number 2.5"#,
            ),
            (
                format!("{{{ok},\"amount\":3.0}}"),
                r#"field "amount": expected int64, got number 3.0; integers must be written without a fraction or exponent"#,
            ),
            (
                format!("{{{ok},\"amount\":9223372036854775808}}"),
                r#"field "amount": expected int64, got number 9223372036854775808, which is out of range"#,
            ),
            (
                format!("{{{ok},\"amount\":-9223372036854775809}}"),
                r#"field "amount": expected int64, got number -9.223372036854776e18, which is out of range"#,
            ),
            (
                format!("{{{ok},\"amount\":true}}"),
                r#"field "amount": expected int64, got boolean true"#,
            ),
            (
                format!("{{{ok},\"price\":\"1.5\"}}"),
                r#"field "price": expected float64, got string "1.5""#,
            ),
            (
                format!("{{{ok},\"price\":1e400}}"),
                r#"field "price": invalid JSON: number out of range at line 1 column 32"#,
            ),
            (
                format!("{{{ok},\"ok\":\"yes\"}}"),
                r#"field "ok": expected bool, got string "yes""#,
            ),
            (
                format!("{{{ok},\"ok\":1}}"),
                r#"field "ok": expected bool, got number 1"#,
            ),
            (
                format!("{{{ok},\"note\":5}}"),
                r#"field "note": expected string, got number 5"#,
            ),
            (
                format!("{{{ok},\"note\":{{\"a\":1}}}}"),
                r#"field "note": expected string, got an object"#,
            ),
            (
                format!("{{{ok},\"note\":[\"a\"]}}"),
                r#"field "note": expected string, got an array"#,
            ),
            (
                r#"{"user":"a","ts":"2026-02-30T00:00:00Z"}"#.into(),
                r#"field "ts": expected timestamp (epoch milliseconds or RFC 3339 string), got string "2026-02-30T00:00:00Z": 2026-02-30 is not a date"#,
            ),
            (
                r#"{"user":"a","ts":"yesterday"}"#.into(),
                r#"field "ts": expected timestamp (epoch milliseconds or RFC 3339 string), got string "yesterday": not RFC 3339 (YYYY-MM-DDTHH:MM:SS[.fff](Z|±HH:MM)): expected a 4-digit year at byte 0"#,
            ),
            (
                r#"{"user":"a","ts":1.5}"#.into(),
                r#"field "ts": expected timestamp (epoch milliseconds or RFC 3339 string), got number 1.5"#,
            ),
            (r#"{"ts":1}"#.into(), r#"field "user" is missing"#),
            (
                r#"{"user":null,"ts":1}"#.into(),
                r#"field "user" is null, but the column is not nullable"#,
            ),
            (r#"{"user":"a"}"#.into(), r#"field "ts" is missing"#),
            (
                format!("{{{ok},\"amount\":1,\"amount\":2}}"),
                r#"field "amount" appears more than once"#,
            ),
            (
                format!("{{{ok},\"amount\":null,\"amount\":2}}"),
                r#"field "amount" appears more than once"#,
            ),
            (
                format!("{{{ok},\"note\":\"\\ud800\"}}"),
                r#"field "note": invalid JSON: unexpected end of hex escape at line 1 column 34"#,
            ),
        ];
        let mut records: Vec<Vec<u8>> = vec![format!("{{{ok}}}").into_bytes()];
        records.extend(cases.iter().map(|(r, _)| r.clone().into_bytes()));
        // Invalid UTF-8 inside a string value.
        records.push(b"{\"user\":\"a\xffb\",\"ts\":1}".to_vec());
        records.push(format!("{{{ok}}}").into_bytes());

        let parsed = format().parse(&records);
        assert_eq!(parsed.accepted, [0, records.len() - 1]);
        assert_eq!(parsed.batch.num_rows(), 2);
        assert_eq!(parsed.dead_letters.len(), cases.len() + 1);
        for (dead, (record, reason)) in parsed.dead_letters.iter().zip(&cases) {
            assert_eq!(&dead.reason, reason, "record {record}");
            assert_eq!(dead.record, record.as_bytes());
        }
        for (i, dead) in parsed.dead_letters.iter().enumerate() {
            assert_eq!(dead.index, i + 1);
            assert!(!dead.reason.contains('\n'), "{}", dead.reason);
        }
        let utf8 = &parsed.dead_letters[cases.len()].reason;
        assert!(utf8.starts_with("field \"user\": invalid JSON: "), "{utf8}");
    }

    /// serde_json's default float parser can be one ULP off; the
    /// `float_roundtrip` feature makes it exact. Without it this fails.
    #[test]
    fn float64_parses_exactly_regression() {
        let parsed = format().parse([br#"{"user":"a","ts":0,"price":-939950.5107873059}"#]);
        let prices = parsed
            .batch
            .column(2)
            .as_primitive::<arrow::datatypes::Float64Type>();
        assert_eq!(prices.value(0).to_bits(), (-939950.5107873059f64).to_bits());
    }

    #[test]
    fn long_values_are_cut_in_reasons_and_dead_letters() {
        let long = "x".repeat(10_000);
        let record = format!(r#"{{"user":"a","ts":1,"amount":"{long}"}}"#);
        let parsed = format().parse([record.as_bytes()]);
        let dead = &parsed.dead_letters[0];
        assert!(dead.reason.len() < 200, "{}", dead.reason);
        assert!(dead.reason.ends_with("… (10000 bytes)"), "{}", dead.reason);
        assert_eq!(dead.record.len(), 4096);
        assert_eq!(dead.record_len, record.len());
    }

    /// Writes `v` as a JSON object; `field` overrides one field's raw JSON
    /// text (`None` leaves it out).
    fn write(v: &Values, field: Option<(&str, Option<&str>)>) -> Vec<u8> {
        let opt = |x: Option<String>| x.unwrap_or_else(|| "null".into());
        let mut fields: Vec<(&str, Option<String>)> = vec![
            ("user", Some(serde_json::to_string(&v.user).unwrap())),
            ("amount", Some(opt(v.amount.map(|a| a.to_string())))),
            (
                "price",
                Some(opt(v.price.map(|p| serde_json::to_string(&p).unwrap()))),
            ),
            ("ok", Some(opt(v.ok.map(|b| b.to_string())))),
            (
                "ts",
                Some(match &v.ts {
                    Ts::Millis(ms) => ms.to_string(),
                    Ts::Text(s, _) => serde_json::to_string(s).unwrap(),
                }),
            ),
            (
                "note",
                Some(opt(v
                    .note
                    .as_ref()
                    .map(|n| serde_json::to_string(n).unwrap()))),
            ),
        ];
        for (i, (name, value)) in fields.iter_mut().enumerate() {
            // Style bit i: leave a null out rather than write `null`.
            if value.as_deref() == Some("null") && v.style & (1 << i) != 0 {
                *value = None;
            }
            if let Some((target, replacement)) = field
                && *name == target
            {
                *value = replacement.map(str::to_owned);
            }
        }
        if v.style & (1 << 8) != 0 {
            fields.push(("extra", Some(r#"{"a":[1,2.5,{"b":null}],"c":"d"}"#.into())));
        }
        let n = fields.len();
        fields.rotate_left((v.style as usize >> 16) % n);
        let body: Vec<String> = fields
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| format!("{k:?}:{v}")))
            .collect();
        format!("{{{}}}", body.join(",")).into_bytes()
    }

    /// A record that must be rejected, of error class `kind`.
    fn corrupt(v: &Values, kind: u8) -> Vec<u8> {
        match kind % 14 {
            0 => write(v, Some(("amount", Some(r#""12a""#)))),
            1 => write(v, Some(("user", None))),
            2 => write(v, Some(("user", Some("null")))),
            3 => write(v, Some(("ts", Some("1.5")))),
            4 => write(v, Some(("ts", Some(r#""2026-02-30T00:00:00Z""#)))),
            5 => [b"[".as_slice(), &write(v, None), b"]"].concat(),
            6 => {
                let mut r = write(v, None);
                r.pop();
                r
            }
            7 => {
                // `@` is not in `testkit::text()`, so the marker is unique.
                let r = write(v, Some(("user", Some(r#""@@""#))));
                let at = r.windows(2).position(|w| w == b"@@").unwrap();
                [&r[..at], &b"a\xff"[..], &r[at + 2..]].concat()
            }
            8 => {
                let mut r = write(v, None);
                r.pop();
                r.extend_from_slice(br#","user":"again"}"#);
                r
            }
            9 => write(v, Some(("ok", Some(r#""yes""#)))),
            10 => write(v, Some(("amount", Some("2.5")))),
            11 => write(v, Some(("amount", Some("9223372036854775808")))),
            12 => [write(v, None).as_slice(), b" x"].concat(),
            _ => Vec::new(),
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
                    None => write(v, None),
                    Some(kind) => corrupt(v, *kind),
                })
                .collect();
            testkit::check_mixed(&format(), &rows, &records)?;
        }

        /// Arbitrary bytes, and valid records with bytes flipped, never
        /// panic and always give a well-formed batch.
        #[test]
        fn never_panics(
            noise in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..8),
            flipped in proptest::collection::vec((testkit::values(), any::<usize>(), any::<u8>()), 0..8),
        ) {
            let mut records = noise;
            for (v, at, byte) in flipped {
                let mut r = write(&v, None);
                let len = r.len();
                r[at % len] = byte;
                records.push(r);
            }
            let parsed = format().parse(&records);
            prop_assert_eq!(parsed.batch.num_rows(), parsed.accepted.len());
            prop_assert_eq!(parsed.accepted.len() + parsed.dead_letters.len(), records.len());
        }
    }
}
