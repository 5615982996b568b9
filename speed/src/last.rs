//! Views with `aggregate = "last"`: the latest value of a column per key,
//! forgotten after a TTL without new data — a `map_with_state` over the
//! stream whose state is served (see
//! [`serve_state_as`](lamina::streaming::DStream::serve_state_as)), so it
//! is committed with every micro-batch and exact after a crash.
//!
//! "Latest" is by the stream's event time when it declares one (a record
//! with an older event time than the key's value does not replace it), and
//! by the order records were acknowledged in otherwise.

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimeUnit, TimestampMillisecondType};
use arrow::record_batch::RecordBatch;
use lamina::columnar::TimestampColumn;
use lamina::streaming::state::{State, StateSpec};
use lamina::streaming::{DStream, ServedState, Time};
use lamina::view::KeySpec;
use lamina::{Error, Result};
use serde_json::Value;

/// A key's state: the value and its event time (ms), if the stream has
/// one.
pub type Latest = (Value, Option<i64>);

/// One column value as JSON: strings, numbers, booleans; timestamps as
/// RFC 3339; null as null.
pub fn cell_json(array: &ArrayRef, row: usize) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    match array.data_type() {
        DataType::Utf8 => Value::from(array.as_string::<i32>().value(row)),
        DataType::LargeUtf8 => Value::from(array.as_string::<i64>().value(row)),
        DataType::Utf8View => Value::from(array.as_string_view().value(row)),
        DataType::Int64 => Value::from(array.as_primitive::<Int64Type>().value(row)),
        DataType::Float64 => {
            serde_json::Number::from_f64(array.as_primitive::<Float64Type>().value(row))
                .map_or(Value::Null, Value::Number)
        }
        DataType::Boolean => Value::from(array.as_boolean().value(row)),
        DataType::Timestamp(TimeUnit::Millisecond, _) => {
            let ms = array.as_primitive::<TimestampMillisecondType>().value(row);
            let mut s = String::new();
            lamina::view::key::write_rfc3339(ms.saturating_mul(1000), &mut s);
            Value::from(s)
        }
        other => Value::from(format!("<{other}>")),
    }
}

/// Every `(key, (value, event time))` of a batch, in row order.
fn pairs(
    batch: &RecordBatch,
    key: &KeySpec,
    column: &str,
    event_time: Option<&str>,
) -> Result<Vec<(String, Latest)>> {
    let bound = key.bind(batch)?;
    let values = batch
        .column_by_name(column)
        .ok_or_else(|| Error::plan(format!("no column `{column}`")))?;
    let times = event_time
        .map(|c| TimestampColumn::of(batch, c))
        .transpose()?;
    let mut out = Vec::with_capacity(batch.num_rows());
    let mut scratch = String::new();
    for row in 0..batch.num_rows() {
        let value = cell_json(values, row);
        let at = times
            .as_ref()
            .and_then(|t| t.micros(row))
            .map(|us| us.div_euclid(1000));
        bound.for_each_key(row, &mut scratch, |k| {
            out.push((k.to_owned(), (value.clone(), at)));
        });
    }
    Ok(out)
}

/// Serves view `name`: the latest `column` per key of `stream`, forgotten
/// after `ttl` without new data.
///
/// # Errors
///
/// [`Error::Plan`] when the name is taken or invalid.
pub fn serve_last(
    stream: &DStream<RecordBatch>,
    name: &str,
    key: KeySpec,
    column: String,
    ttl: Option<Duration>,
    event_time: Option<String>,
) -> Result<ServedState> {
    let key = Arc::new(key);
    let records = stream.flat_map(move |batch: RecordBatch| {
        // The config was validated against the schema: a missing column
        // here would be a bug, and leaves the batch out of the view.
        pairs(&batch, &key, &column, event_time.as_deref()).unwrap_or_default()
    });
    let mut spec = StateSpec::function(
        |_: Time, _: &String, new: Option<Latest>, state: &mut State<Latest>| {
            let Some(new) = new else { return };
            let newer = match (state.get(), new.1) {
                (Some((_, Some(old))), Some(at)) => at >= *old,
                _ => true,
            };
            if newer {
                // Not timing out (there is a value): update cannot fail.
                let _ = state.update(new);
            }
        },
    )
    .name(name);
    if let Some(ttl) = ttl {
        spec = spec.timeout(ttl);
    }
    records
        .map_with_state(spec)?
        .state_snapshots()
        .serve_state_as(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{BooleanArray, Float64Array, Int64Array, StringArray};

    #[test]
    fn cells_become_json() {
        let cols: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec![Some("a"), None])),
            Arc::new(Int64Array::from(vec![7, 8])),
            Arc::new(Float64Array::from(vec![0.5, f64::NAN])),
            Arc::new(BooleanArray::from(vec![true, false])),
            Arc::new(
                arrow::array::TimestampMillisecondArray::from(vec![1_000, 2_000])
                    .with_timezone("UTC"),
            ),
        ];
        let row0: Vec<Value> = cols.iter().map(|c| cell_json(c, 0)).collect();
        let row1: Vec<Value> = cols.iter().map(|c| cell_json(c, 1)).collect();
        assert_eq!(
            Value::Array(row0),
            serde_json::json!(["a", 7, 0.5, true, "1970-01-01T00:00:01Z"])
        );
        assert_eq!(
            Value::Array(row1),
            serde_json::json!([null, 8, null, false, "1970-01-01T00:00:02Z"])
        );
    }
}
