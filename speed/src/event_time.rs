//! Event time: a stream's event-time column, its watermark, and what
//! happens to late records.
//!
//! A stream that declares an event-time column keeps a **watermark**: the
//! largest event time seen so far minus the allowed lateness. A record whose
//! event time is before the watermark of the records *before it in the
//! write-ahead log* is **late** — so lateness depends on the order records
//! were acknowledged in, never on how they were cut into micro-batches, and
//! a replay after a crash finds exactly the same records late. The micro-batch loop counts late records per stream (a
//! committed position, so the count survives restarts), and under the
//! `aside` policy keeps each one as a dead letter with reason `late`. Only
//! windowed views treat late records differently: under `aside` they leave
//! them out, under `fold` they move them into the oldest bucket still open
//! (the watermark's). Every other view, and the master dataset, takes every
//! record as it is — so a batch run folds a late record into its true
//! event-time bucket, and the merged view is exact once it has run.
//!
//! The watermark is committed with each micro-batch that moves it and read
//! back on resume, so a replay after a crash finds the same records late.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use arrow::array::{Array, BooleanArray, TimestampMillisecondArray};
use arrow::compute::filter_record_batch;
use arrow::datatypes::DataType;
use arrow::record_batch::RecordBatch;
use lamina::columnar::TimestampColumn;
use lamina::{Error, Result};

/// What a stream's windowed views do with a late record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LatePolicy {
    /// Leave it out, counted and kept as a dead letter.
    #[default]
    Aside,
    /// Move it into the oldest bucket still open.
    Fold,
}

/// A stream's event time.
#[derive(Debug, Clone)]
pub struct EventTime {
    /// The event-time column (timestamp, or int64 epoch milliseconds).
    pub column: String,
    /// How far behind the largest event time a record may be (µs).
    pub lateness_us: i64,
    /// What windowed views do with late records.
    pub policy: LatePolicy,
    /// The watermark before the running micro-batch (µs; `i64::MIN` before
    /// the first record).
    watermark: Arc<AtomicI64>,
    /// The watermark at the start of each block of the running micro-batch
    /// (set by [`scan`](Self::scan), read by windowed views).
    block_starts: Arc<std::sync::Mutex<Vec<i64>>>,
}

/// What [`EventTime::scan`] found in a micro-batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// The late rows of each block.
    pub late: Vec<Vec<usize>>,
    /// The watermark after the batch's records, if it moved.
    pub watermark: Option<i64>,
}

/// No watermark yet: nothing is late.
pub const NO_WATERMARK: i64 = i64::MIN;

impl EventTime {
    /// Event time in `column` with `lateness_us` allowed.
    pub fn new(column: impl Into<String>, lateness_us: i64, policy: LatePolicy) -> Self {
        EventTime {
            column: column.into(),
            lateness_us: lateness_us.max(0),
            policy,
            watermark: Arc::new(AtomicI64::new(NO_WATERMARK)),
            block_starts: Arc::default(),
        }
    }

    /// The watermark before the running micro-batch (µs), if any.
    pub fn watermark(&self) -> Option<i64> {
        let w = self.watermark.load(Ordering::Acquire);
        (w != NO_WATERMARK).then_some(w)
    }

    /// Sets the watermark (after a committed micro-batch, or on resume).
    pub fn set_watermark(&self, us: i64) {
        self.watermark.fetch_max(us, Ordering::AcqRel);
    }

    /// Walks the micro-batch's blocks in log order: the late rows of each
    /// (event time before the watermark of the records before it) and the
    /// watermark after them. Remembers where each block starts for
    /// [`block_start`](Self::block_start).
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] when the column is missing or not a time.
    pub fn scan(&self, blocks: &[RecordBatch]) -> Result<Scan> {
        let mut wm = self.watermark.load(Ordering::Acquire);
        let before = wm;
        let mut starts = Vec::with_capacity(blocks.len());
        let mut late = Vec::with_capacity(blocks.len());
        for batch in blocks {
            starts.push(wm);
            let col = TimestampColumn::of(batch, &self.column)?;
            let mut rows = Vec::new();
            for row in 0..batch.num_rows() {
                if let Some(t) = col.micros(row) {
                    if t < wm {
                        rows.push(row);
                    }
                    wm = wm.max(t.saturating_sub(self.lateness_us));
                }
            }
            late.push(rows);
        }
        *self.block_starts.lock().unwrap_or_else(|p| p.into_inner()) = starts;
        Ok(Scan {
            late,
            watermark: (wm != before).then_some(wm),
        })
    }

    /// The watermark at the start of block `index` of the running
    /// micro-batch.
    pub fn block_start(&self, index: usize) -> i64 {
        self.block_starts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(index)
            .copied()
            .unwrap_or_else(|| self.watermark.load(Ordering::Acquire))
    }

    /// `batch` as a windowed view sees it, with `start` the watermark at
    /// its start: late rows left out (`aside`) or given the watermark of
    /// their moment as their event time (`fold`, the oldest bucket still
    /// open).
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] when the column is missing or not a time.
    pub fn for_windows(&self, batch: &RecordBatch, start: i64) -> Result<RecordBatch> {
        let col = TimestampColumn::of(batch, &self.column)?;
        let mut wm = start;
        // Per row: the watermark it was late against.
        let late: Vec<Option<i64>> = (0..batch.num_rows())
            .map(|r| {
                let t = col.micros(r)?;
                let was = (t < wm).then_some(wm);
                wm = wm.max(t.saturating_sub(self.lateness_us));
                was
            })
            .collect();
        if late.iter().all(Option::is_none) {
            return Ok(batch.clone());
        }
        match self.policy {
            LatePolicy::Aside => {
                let keep = BooleanArray::from(late.iter().map(Option::is_none).collect::<Vec<_>>());
                filter_record_batch(batch, &keep).map_err(|e| Error::execution(e.to_string()))
            }
            LatePolicy::Fold => {
                // The column, late values replaced by the watermark, as
                // milliseconds (what the bucketing reads).
                let idx = batch
                    .schema()
                    .index_of(&self.column)
                    .map_err(|e| Error::plan(e.to_string()))?;
                let times: TimestampMillisecondArray = (0..batch.num_rows())
                    .map(|r| col.micros(r).map(|t| late[r].unwrap_or(t).div_euclid(1000)))
                    .collect::<TimestampMillisecondArray>()
                    .with_timezone("UTC");
                let mut columns = batch.columns().to_vec();
                let mut fields: Vec<arrow::datatypes::Field> = batch
                    .schema()
                    .fields()
                    .iter()
                    .map(|f| f.as_ref().clone())
                    .collect();
                fields[idx] = fields[idx].clone().with_data_type(DataType::Timestamp(
                    arrow::datatypes::TimeUnit::Millisecond,
                    Some("UTC".into()),
                ));
                columns[idx] = Arc::new(times) as Arc<dyn Array>;
                RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns)
                    .map_err(|e| Error::execution(e.to_string()))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{Field, Schema};

    fn batch(times: &[Option<i64>]) -> RecordBatch {
        let schema = Schema::new(vec![
            Field::new("ts", DataType::Int64, true),
            Field::new("k", DataType::Utf8, false),
        ]);
        let keys: Vec<String> = (0..times.len()).map(|i| format!("k{i}")).collect();
        RecordBatch::try_new(
            Arc::new(schema),
            vec![
                Arc::new(Int64Array::from(times.to_vec())),
                Arc::new(StringArray::from(keys)),
            ],
        )
        .unwrap()
    }

    #[test]
    fn lateness_follows_log_order_not_batching() {
        // Lateness 1 s: 5 s, 1 s (late: 5 - 1 = 4 > 1), 9 s, 8.5 s (on
        // time: 9 - 1 = 8 <= 8.5), 2 s (late).
        let times = [
            Some(5_000),
            None,
            Some(1_000),
            Some(9_000),
            Some(8_500),
            Some(2_000),
        ];
        let whole = EventTime::new("ts", 1_000_000, LatePolicy::Aside);
        let scan = whole.scan(&[batch(&times)]).unwrap();
        assert_eq!(scan.late, vec![vec![2, 5]]);
        assert_eq!(scan.watermark, Some(8_000_000));
        // Cut into blocks, or into micro-batches: the same rows are late.
        let cut = EventTime::new("ts", 1_000_000, LatePolicy::Aside);
        let scan = cut.scan(&[batch(&times[..3]), batch(&times[3..])]).unwrap();
        assert_eq!(scan.late, vec![vec![2], vec![2]]);
        assert_eq!(cut.block_start(1), 4_000_000);
        let first = EventTime::new("ts", 1_000_000, LatePolicy::Aside);
        let s1 = first.scan(&[batch(&times[..4])]).unwrap();
        first.set_watermark(s1.watermark.unwrap());
        let s2 = first.scan(&[batch(&times[4..])]).unwrap();
        assert_eq!((s1.late, s2.late), (vec![vec![2]], vec![vec![1]]));
        // Windowed views see the same: aside leaves the late rows out, fold
        // moves them to the watermark of their moment.
        let kept = whole.for_windows(&batch(&times), NO_WATERMARK).unwrap();
        assert_eq!(kept.num_rows(), 4);
        let fold = EventTime::new("ts", 1_000_000, LatePolicy::Fold);
        let folded = fold.for_windows(&batch(&times), NO_WATERMARK).unwrap();
        let col = TimestampColumn::of(&folded, "ts").unwrap();
        let got: Vec<Option<i64>> = (0..6).map(|r| col.micros(r)).collect();
        assert_eq!(
            got,
            [
                Some(5_000_000),
                None,
                Some(4_000_000),
                Some(9_000_000),
                Some(8_500_000),
                Some(8_000_000)
            ]
        );
        // The watermark never goes back.
        whole.set_watermark(8_000_000);
        whole.set_watermark(1);
        assert_eq!(whole.watermark(), Some(8_000_000));
    }
}
