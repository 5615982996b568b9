//! Per micro-batch statistics, like Spark's StreamingListener: what the
//! batches endpoint serves and how latency is measured from outside.

use std::collections::VecDeque;
use std::sync::Mutex;

use serde::Serialize;

/// One micro-batch of one stream.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchStats {
    /// The micro-batch id (shared by all streams of one tick).
    pub id: u64,
    /// The epoch it belongs to.
    pub epoch: u64,
    /// Records taken in (including dead letters).
    pub records: u64,
    /// Records that did not parse or were refused before parsing (e.g. too
    /// long); part of `records`.
    pub dead_letters: u64,
    /// Payload bytes.
    pub bytes: u64,
    /// Receive time of the earliest record (µs since the Unix epoch).
    pub first_receive_us: Option<i64>,
    /// Receive time of the latest record.
    pub last_receive_us: Option<i64>,
    /// When processing started.
    pub processing_start_us: i64,
    /// When the commit finished: from then on the records are visible to
    /// queries.
    pub processing_end_us: i64,
    /// `processing_end_us - processing_start_us`, in ms.
    pub processing_ms: f64,
    /// How late processing started after its scheduled time, in ms.
    pub scheduling_delay_ms: f64,
    /// Where the processing time went (shared by all streams of the
    /// micro-batch).
    pub phases: Phases,
}

/// The steps of one micro-batch, in ms: reading the log, parsing, running
/// the program (the views' engine jobs), committing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Phases {
    /// Reading the records from the write-ahead log.
    pub read_ms: f64,
    /// Parsing them into record batches.
    pub parse_ms: f64,
    /// Running the program: every view's job on the engine.
    pub program_ms: f64,
    /// Committing to the state store (one transaction) and applying the
    /// deltas to the in-memory tables.
    pub commit_ms: f64,
}

/// The last `capacity` batches of every stream.
#[derive(Debug)]
pub struct StatsLog {
    capacity: usize,
    // A std mutex: pushes and copies only.
    streams: Mutex<Vec<(String, VecDeque<BatchStats>, u64)>>,
}

impl StatsLog {
    /// A log keeping `capacity` batches per stream for the named streams.
    pub fn new(capacity: usize, streams: &[String]) -> Self {
        StatsLog {
            capacity: capacity.max(1),
            streams: Mutex::new(
                streams
                    .iter()
                    .map(|s| (s.clone(), VecDeque::new(), 0))
                    .collect(),
            ),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(String, VecDeque<BatchStats>, u64)>> {
        self.streams.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the total of records of `stream` committed before this process
    /// (restored at start-up).
    pub fn set_total(&self, stream: &str, total: u64) {
        if let Some((_, _, t)) = self.lock().iter_mut().find(|(s, _, _)| s == stream) {
            *t = total;
        }
    }

    /// Records a batch of `stream`.
    pub fn push(&self, stream: &str, stats: BatchStats) {
        let mut streams = self.lock();
        if let Some((_, log, total)) = streams.iter_mut().find(|(s, _, _)| s == stream) {
            *total += stats.records;
            if log.len() == self.capacity {
                log.pop_front();
            }
            log.push_back(stats);
        }
    }

    /// Batches of `stream` with id `> since`, oldest first; `None` for an
    /// unknown stream.
    pub fn since(&self, stream: &str, since: Option<u64>) -> Option<Vec<BatchStats>> {
        let streams = self.lock();
        let (_, log, _) = streams.iter().find(|(s, _, _)| s == stream)?;
        Some(
            log.iter()
                .filter(|b| since.is_none_or(|s| b.id > s))
                .cloned()
                .collect(),
        )
    }

    /// Records taken in by `stream` since start.
    pub fn total_records(&self, stream: &str) -> Option<u64> {
        self.lock()
            .iter()
            .find(|(s, _, _)| s == stream)
            .map(|(_, _, t)| *t)
    }
}
