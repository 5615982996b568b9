//! Test helpers shared by the json and csv tests: a schema with every column
//! type, random rows of it, and the batch those rows must become — built
//! straight from the values, not by the parsers under test.

use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Float64Array, Int64Array, StringArray, TimestampMillisecondArray,
};
use arrow::record_batch::RecordBatch;
use proptest::prelude::*;

use super::schema::{ColumnDef, ColumnType, arrow_schema};
use super::timestamp::days_from_civil;
use super::timestamp::days_in_month;

/// `user` string (required), `amount` int64, `price` float64, `ok` bool,
/// `ts` timestamp (required), `note` string.
pub fn schema() -> Vec<ColumnDef> {
    vec![
        ColumnDef::required("user", ColumnType::String),
        ColumnDef::new("amount", ColumnType::Int64),
        ColumnDef::new("price", ColumnType::Float64),
        ColumnDef::new("ok", ColumnType::Bool),
        ColumnDef::required("ts", ColumnType::Timestamp),
        ColumnDef::new("note", ColumnType::String),
    ]
}

/// How a timestamp is written: epoch milliseconds, or RFC 3339 text with
/// the milliseconds it stands for.
#[derive(Debug, Clone)]
pub enum Ts {
    Millis(i64),
    Text(String, i64),
}

impl Ts {
    pub fn millis(&self) -> i64 {
        match self {
            Ts::Millis(ms) | Ts::Text(_, ms) => *ms,
        }
    }
}

/// One valid row of [`schema`], plus `style` bits a writer may use to vary
/// how it is written (field order, `null` vs omitted, quoting).
#[derive(Debug, Clone)]
pub struct Values {
    pub user: String,
    pub amount: Option<i64>,
    pub price: Option<f64>,
    pub ok: Option<bool>,
    pub ts: Ts,
    pub note: Option<String>,
    pub style: u32,
}

/// Text with the characters that need care in JSON and CSV.
pub fn text() -> impl Strategy<Value = String> {
    "[a-z ,\"'\\\\{}:\\[\\]\t\u{e9}\u{1F600}]{0,10}"
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        -1e6..1e6f64,
        proptest::num::f64::NORMAL | proptest::num::f64::SUBNORMAL | proptest::num::f64::ZERO,
    ]
}

/// An RFC 3339 timestamp and its epoch milliseconds.
pub fn rfc3339() -> impl Strategy<Value = (String, i64)> {
    (
        (0u32..=9999, 1u32..=12, 0u32..31),
        (
            0u32..24,
            0u32..60,
            0u32..60,
            proptest::option::of(0u32..1000),
        ),
        proptest::option::of((any::<bool>(), 0u32..24, 0u32..60)),
    )
        .prop_map(|((y, mo, d), (h, mi, s, frac), offset)| {
            let d = d % days_in_month(y, mo) + 1;
            let mut text = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}");
            if let Some(ms) = frac {
                text.push_str(&format!(".{ms:03}"));
            }
            let offset_s = match offset {
                None => {
                    text.push('Z');
                    0
                }
                Some((neg, oh, om)) => {
                    text.push_str(&format!("{}{oh:02}:{om:02}", if neg { '-' } else { '+' }));
                    i64::from(oh * 3600 + om * 60) * if neg { -1 } else { 1 }
                }
            };
            let secs = days_from_civil(i64::from(y), mo, d) * 86_400
                + i64::from(h * 3600 + mi * 60 + s)
                - offset_s;
            (text, secs * 1000 + i64::from(frac.unwrap_or(0)))
        })
}

pub fn values() -> impl Strategy<Value = Values> {
    (
        text(),
        proptest::option::of(any::<i64>()),
        proptest::option::of(float()),
        proptest::option::of(any::<bool>()),
        prop_oneof![
            any::<i64>().prop_map(Ts::Millis),
            rfc3339().prop_map(|(s, ms)| Ts::Text(s, ms)),
        ],
        proptest::option::of(text()),
        any::<u32>(),
    )
        .prop_map(|(user, amount, price, ok, ts, note, style)| Values {
            user,
            amount,
            price,
            ok,
            ts,
            note,
            style,
        })
}

/// The batch `rows` must parse into.
pub fn expected_batch<'a>(rows: impl IntoIterator<Item = &'a Values>) -> RecordBatch {
    let rows: Vec<&Values> = rows.into_iter().collect();
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| &r.user))),
        Arc::new(Int64Array::from_iter(rows.iter().map(|r| r.amount))),
        Arc::new(Float64Array::from_iter(rows.iter().map(|r| r.price))),
        Arc::new(BooleanArray::from_iter(rows.iter().map(|r| r.ok))),
        Arc::new(
            TimestampMillisecondArray::from_iter_values(rows.iter().map(|r| r.ts.millis()))
                .with_timezone("UTC"),
        ),
        Arc::new(StringArray::from_iter(
            rows.iter().map(|r| r.note.as_deref()),
        )),
    ];
    RecordBatch::try_new(arrow_schema(&schema()), columns).expect("expected batch")
}

/// The property both the json and the csv parser must hold on a mix of
/// valid records and corrupted ones (`rows[i].1` is `Some` for a corrupted
/// record): the batch is exactly the valid rows, the same as parsing only
/// the valid records, and the dead letters are exactly the corrupted
/// indices, each keeping its record and a one-line reason.
pub fn check_mixed(
    format: &super::Format,
    rows: &[(Values, Option<u8>)],
    records: &[Vec<u8>],
) -> Result<(), TestCaseError> {
    let parsed = format.parse(records);
    let valid: Vec<&Values> = rows
        .iter()
        .filter(|(_, bad)| bad.is_none())
        .map(|(v, _)| v)
        .collect();
    prop_assert_eq!(&parsed.batch, &expected_batch(valid));
    let valid_only = format.parse(
        records
            .iter()
            .zip(rows)
            .filter(|(_, (_, bad))| bad.is_none())
            .map(|(r, _)| r),
    );
    prop_assert_eq!(&parsed.batch, &valid_only.batch);
    let indices = |corrupted: bool| -> Vec<usize> {
        rows.iter()
            .enumerate()
            .filter(|(_, (_, bad))| bad.is_some() == corrupted)
            .map(|(i, _)| i)
            .collect()
    };
    let dead: Vec<usize> = parsed.dead_letters.iter().map(|d| d.index).collect();
    prop_assert_eq!(&parsed.accepted, &indices(false));
    prop_assert_eq!(dead, indices(true));
    for d in &parsed.dead_letters {
        prop_assert_eq!(&d.record[..], &records[d.index][..]);
        prop_assert!(!d.reason.is_empty() && !d.reason.contains('\n'));
    }
    Ok(())
}
