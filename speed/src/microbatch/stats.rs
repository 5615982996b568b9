//! Per micro-batch statistics, like Spark's StreamingListener: what the
//! batches endpoint serves and how latency is measured from outside.

use std::collections::VecDeque;
use std::sync::Mutex;

use lamina::metrics::{Histogram, LATENCY_BUCKETS};
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

/// The last `capacity` batches of every stream, and histograms over every
/// micro-batch since start that took records.
#[derive(Debug)]
pub struct StatsLog {
    capacity: usize,
    // A std mutex: pushes and copies only.
    streams: Mutex<Vec<(String, VecDeque<BatchStats>, u64)>>,
    histograms: Vec<(String, StreamHistograms)>,
}

/// A stream's micro-batch times since start, in seconds (for `/metrics`).
#[derive(Debug)]
pub struct StreamHistograms {
    /// `processing_ms`.
    pub processing: Histogram,
    /// `scheduling_delay_ms`.
    pub scheduling_delay: Histogram,
    /// From the earliest record's receipt to the batch's commit: the
    /// longest time a record of the batch waited to be visible.
    pub end_to_end: Histogram,
}

impl Default for StreamHistograms {
    fn default() -> Self {
        StreamHistograms {
            processing: Histogram::new(LATENCY_BUCKETS),
            scheduling_delay: Histogram::new(LATENCY_BUCKETS),
            end_to_end: Histogram::new(LATENCY_BUCKETS),
        }
    }
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
            histograms: streams
                .iter()
                .map(|s| (s.clone(), StreamHistograms::default()))
                .collect(),
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
        if stats.records > 0
            && let Some(h) = self.histograms(stream)
        {
            h.processing.observe(stats.processing_ms / 1e3);
            h.scheduling_delay.observe(stats.scheduling_delay_ms / 1e3);
            if let Some(first) = stats.first_receive_us {
                h.end_to_end
                    .observe((stats.processing_end_us - first) as f64 / 1e6);
            }
        }
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

    /// The histograms of `stream`'s micro-batches that took records.
    pub fn histograms(&self, stream: &str) -> Option<&StreamHistograms> {
        self.histograms
            .iter()
            .find(|(s, _)| s == stream)
            .map(|(_, h)| h)
    }

    /// Records taken in by `stream` since start.
    pub fn total_records(&self, stream: &str) -> Option<u64> {
        self.lock()
            .iter()
            .find(|(s, _, _)| s == stream)
            .map(|(_, _, t)| *t)
    }
}
