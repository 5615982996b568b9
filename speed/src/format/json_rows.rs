//! Rows of an Arrow record batch as JSON objects — how rows read from
//! Parquet files become records of a stream (whose `json` format reads
//! them back by column name).
//!
//! Strings stay strings, integers and finite floats numbers (NaN and
//! infinities null), booleans booleans; timestamps (any unit) and dates
//! become epoch milliseconds, which `timestamp` columns accept; nulls are
//! null. Dictionary-encoded columns are decoded. Other types (lists,
//! structs, binary, decimals) are an error naming the column.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{
    DataType, Date32Type, Date64Type, Float32Type, Float64Type, Int8Type, Int16Type, Int32Type,
    Int64Type, TimeUnit, TimestampMicrosecondType, TimestampMillisecondType,
    TimestampNanosecondType, TimestampSecondType, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use arrow::record_batch::RecordBatch;
use serde_json::{Map, Number, Value};

/// Each row of `batch` as one JSON object (serialized).
///
/// # Errors
///
/// A column of a type with no JSON form here, named.
pub fn to_json_rows(batch: &RecordBatch) -> Result<Vec<Vec<u8>>, String> {
    let schema = batch.schema();
    let mut columns: Vec<(String, ArrayRef)> = Vec::with_capacity(batch.num_columns());
    for (field, array) in schema.fields().iter().zip(batch.columns()) {
        let array = match array.data_type() {
            DataType::Dictionary(_, _) | DataType::LargeUtf8 | DataType::Utf8View => {
                arrow::compute::cast(array, &DataType::Utf8).map_err(|e| {
                    format!("column `{}` ({}): {e}", field.name(), array.data_type())
                })?
            }
            _ => array.clone(),
        };
        check(field.name(), array.data_type())?;
        columns.push((field.name().clone(), array));
    }
    let mut rows = Vec::with_capacity(batch.num_rows());
    for row in 0..batch.num_rows() {
        let mut object = Map::with_capacity(columns.len());
        for (name, array) in &columns {
            object.insert(name.clone(), value(array, row));
        }
        rows.push(serde_json::to_vec(&Value::Object(object)).map_err(|e| e.to_string())?);
    }
    Ok(rows)
}

fn check(name: &str, t: &DataType) -> Result<(), String> {
    match t {
        DataType::Utf8
        | DataType::Boolean
        | DataType::Int8
        | DataType::Int16
        | DataType::Int32
        | DataType::Int64
        | DataType::UInt8
        | DataType::UInt16
        | DataType::UInt32
        | DataType::UInt64
        | DataType::Float32
        | DataType::Float64
        | DataType::Timestamp(_, _)
        | DataType::Date32
        | DataType::Date64
        | DataType::Null => Ok(()),
        other => Err(format!(
            "column `{name}` has type {other}, which has no JSON record form (strings, numbers, booleans, timestamps and dates do)"
        )),
    }
}

fn float(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

fn value(array: &ArrayRef, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Utf8 => Value::String(array.as_string::<i32>().value(row).to_owned()),
        DataType::Boolean => Value::Bool(array.as_boolean().value(row)),
        DataType::Int8 => array.as_primitive::<Int8Type>().value(row).into(),
        DataType::Int16 => array.as_primitive::<Int16Type>().value(row).into(),
        DataType::Int32 => array.as_primitive::<Int32Type>().value(row).into(),
        DataType::Int64 => array.as_primitive::<Int64Type>().value(row).into(),
        DataType::UInt8 => array.as_primitive::<UInt8Type>().value(row).into(),
        DataType::UInt16 => array.as_primitive::<UInt16Type>().value(row).into(),
        DataType::UInt32 => array.as_primitive::<UInt32Type>().value(row).into(),
        DataType::UInt64 => array.as_primitive::<UInt64Type>().value(row).into(),
        DataType::Float32 => float(f64::from(array.as_primitive::<Float32Type>().value(row))),
        DataType::Float64 => float(array.as_primitive::<Float64Type>().value(row)),
        DataType::Timestamp(unit, _) => {
            let ms = match unit {
                TimeUnit::Second => array
                    .as_primitive::<TimestampSecondType>()
                    .value(row)
                    .saturating_mul(1000),
                TimeUnit::Millisecond => {
                    array.as_primitive::<TimestampMillisecondType>().value(row)
                }
                TimeUnit::Microsecond => array
                    .as_primitive::<TimestampMicrosecondType>()
                    .value(row)
                    .div_euclid(1000),
                TimeUnit::Nanosecond => array
                    .as_primitive::<TimestampNanosecondType>()
                    .value(row)
                    .div_euclid(1_000_000),
            };
            ms.into()
        }
        DataType::Date32 => {
            (i64::from(array.as_primitive::<Date32Type>().value(row)) * 86_400_000).into()
        }
        DataType::Date64 => array.as_primitive::<Date64Type>().value(row).into(),
        _ => Value::Null,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{
        BooleanArray, DictionaryArray, Float64Array, Int32Array, StringArray,
        TimestampMicrosecondArray,
    };
    use arrow::datatypes::{Field, Schema};
    use std::sync::Arc;

    #[test]
    fn rows_become_json_objects_that_the_json_format_reads() {
        let dict: DictionaryArray<Int32Type> = vec!["ann", "bob"].into_iter().collect();
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("user", dict.data_type().clone(), false),
                Field::new("n", DataType::Int32, true),
                Field::new("x", DataType::Float64, false),
                Field::new("ok", DataType::Boolean, false),
                Field::new(
                    "ts",
                    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                    false,
                ),
                Field::new("s", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(dict),
                Arc::new(Int32Array::from(vec![Some(3), None])),
                Arc::new(Float64Array::from(vec![1.5, f64::NAN])),
                Arc::new(BooleanArray::from(vec![true, false])),
                Arc::new(
                    TimestampMicrosecondArray::from(vec![1_764_547_200_123_456, 0])
                        .with_timezone("UTC"),
                ),
                Arc::new(StringArray::from(vec![Some("a \"q\""), None])),
            ],
        )
        .unwrap();
        let rows: Vec<String> = to_json_rows(&batch)
            .unwrap()
            .into_iter()
            .map(|r| String::from_utf8(r).unwrap())
            .collect();
        assert_eq!(
            rows,
            [
                r#"{"n":3,"ok":true,"s":"a \"q\"","ts":1764547200123,"user":"ann","x":1.5}"#,
                r#"{"n":null,"ok":false,"s":null,"ts":0,"user":"bob","x":null}"#,
            ]
        );
        // And the json format reads them back.
        let format = crate::format::Format::new(
            crate::format::FormatKind::Json,
            vec![
                crate::format::ColumnDef::required("user", crate::format::ColumnType::String),
                crate::format::ColumnDef::new("ts", crate::format::ColumnType::Timestamp),
            ],
        )
        .unwrap();
        let parsed = format.parse(rows.iter().map(String::as_bytes));
        assert_eq!(parsed.batch.num_rows(), 2, "{:?}", parsed.dead_letters);
    }

    #[test]
    fn unsupported_types_are_named() {
        let batch = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("b", DataType::Binary, false)])),
            vec![Arc::new(arrow::array::BinaryArray::from(vec![&b"x"[..]]))],
        )
        .unwrap();
        assert!(to_json_rows(&batch).unwrap_err().contains("column `b`"));
    }
}
