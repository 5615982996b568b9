//! The column the speed layer adds to every record batch the program gets:
//! when the server received the record.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use lamina::Error;

/// The column every record batch the program gets has besides the
/// stream's own: when the server received the record (its ingest time,
/// `timestamp` in ms, UTC), as durable as the record itself, so windows
/// over it (views without an event-time column) put a record into the same
/// window when the log is replayed after a crash. The speed layer's only:
/// the master dataset holds the stream's own columns.
pub const RECEIVED_AT_COLUMN: &str = "_received_at";

/// `batch` with the [`RECEIVED_AT_COLUMN`]: row `r` came from record
/// `accepted[r]`, received at `receive_us(accepted[r])`.
pub(super) fn with_received_at(
    batch: &RecordBatch,
    accepted: &[usize],
    receive_us: impl Fn(usize) -> i64,
) -> Result<RecordBatch, Error> {
    use arrow::array::{ArrayRef, TimestampMillisecondArray};
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    let times: TimestampMillisecondArray = accepted
        .iter()
        .map(|&i| Some(receive_us(i).div_euclid(1000)))
        .collect::<TimestampMillisecondArray>()
        .with_timezone("UTC");
    let mut fields: Vec<Field> = batch
        .schema()
        .fields()
        .iter()
        .map(|f| f.as_ref().clone())
        .collect();
    fields.push(Field::new(
        RECEIVED_AT_COLUMN,
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        false,
    ));
    let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
    columns.push(Arc::new(times));
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|e| Error::Internal(format!("adding {RECEIVED_AT_COLUMN}: {e}")))
}

/// `batch` with the [`RECEIVED_AT_COLUMN`] set to `ms` for every row (for
/// records read back from the master dataset, which does not keep it).
///
/// # Errors
///
/// [`Error::Internal`] when the column cannot be added.
pub fn with_received_at_constant(batch: &RecordBatch, ms: i64) -> Result<RecordBatch, Error> {
    let rows: Vec<usize> = (0..batch.num_rows()).collect();
    with_received_at(batch, &rows, |_| ms.saturating_mul(1000))
}
