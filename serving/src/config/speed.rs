//! `[speed]`: the micro-batch clock, epochs and the write-ahead log.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::Report;

/// Longest epoch: sealed epochs become Parquet files and free the WAL, so
/// an epoch much longer than a day only grows the log.
const MAX_EPOCH_MS: u64 = 86_400_000;

/// `[speed]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SpeedConfig {
    /// Micro-batch interval in milliseconds: how often received records
    /// are processed and committed. Default 200; 10..=60000.
    pub batch_interval_ms: u64,
    /// Epoch length in milliseconds: a span of micro-batches written to
    /// the master dataset as one Parquet file per stream. A multiple of
    /// `batch_interval_ms`, at least one interval, at most a day.
    /// Default 60000.
    pub epoch_ms: u64,
    /// Micro-batch statistics kept per stream for
    /// `GET /v1/streams/{stream}/batches`. Default 1000; 1..=1000000.
    pub batch_history: usize,
    /// How long an ingest idempotency key is remembered, in seconds; a
    /// request repeated within the window is acknowledged without being
    /// counted again. Default 86400 (a day); 1..=2592000 (30 days).
    pub idempotency_window_secs: u64,
    /// Size at which a write-ahead-log segment is closed and a new one
    /// started, in bytes. Default 67108864 (64 MiB); 1048576..=4294967296.
    pub wal_segment_bytes: u64,
    /// Most records one micro-batch takes; the rest wait for the next, so
    /// a backlog (after a restart, or a burst) is worked off in batches of
    /// bounded time and memory. Default 1000000; 1000..=100000000.
    pub max_batch_records: u64,
    /// Most record bytes one micro-batch takes (a batch always takes at
    /// least one record). Default 67108864 (64 MiB); 65536..=4294967296.
    pub max_batch_bytes: u64,
    /// Most records received but not yet processed; beyond it, TCP
    /// receivers stop reading (the producer's writes block) and HTTP
    /// ingest answers 503 with `Retry-After` until the micro-batches catch
    /// up. Default 20000000; 1000..=1000000000.
    pub max_backlog_records: u64,
    /// Most payload bytes received but not yet processed (same effect as
    /// `max_backlog_records`). Default 1073741824 (1 GiB);
    /// 1048576..=1099511627776.
    pub max_backlog_bytes: u64,
}

impl Default for SpeedConfig {
    fn default() -> Self {
        SpeedConfig {
            batch_interval_ms: 200,
            epoch_ms: 60_000,
            batch_history: 1000,
            idempotency_window_secs: 86_400,
            wal_segment_bytes: 64 << 20,
            max_batch_records: 1_000_000,
            max_batch_bytes: 64 << 20,
            max_backlog_records: 20_000_000,
            max_backlog_bytes: 1 << 30,
        }
    }
}

impl SpeedConfig {
    /// [`batch_interval_ms`](Self::batch_interval_ms) as a duration.
    pub fn batch_interval(&self) -> Duration {
        Duration::from_millis(self.batch_interval_ms)
    }

    /// [`epoch_ms`](Self::epoch_ms) as a duration.
    pub fn epoch(&self) -> Duration {
        Duration::from_millis(self.epoch_ms)
    }

    /// Micro-batches per epoch.
    pub fn batches_per_epoch(&self) -> u64 {
        self.epoch_ms / self.batch_interval_ms.max(1)
    }

    /// [`idempotency_window_secs`](Self::idempotency_window_secs) as a
    /// duration.
    pub fn idempotency_window(&self) -> Duration {
        Duration::from_secs(self.idempotency_window_secs)
    }

    pub(super) fn validate(&self, report: &mut Report) {
        let interval = self.batch_interval_ms;
        report.range("speed.batch_interval_ms", interval, 10..=60_000);
        if self.epoch_ms < interval || self.epoch_ms > MAX_EPOCH_MS {
            report.push(
                "speed.epoch_ms",
                format!(
                    "{} is out of range ({interval}..={MAX_EPOCH_MS}: at least one batch interval, at most a day)",
                    self.epoch_ms
                ),
            );
        } else if interval > 0 && !self.epoch_ms.is_multiple_of(interval) {
            report.push(
                "speed.epoch_ms",
                format!(
                    "{} is not a multiple of speed.batch_interval_ms ({interval})",
                    self.epoch_ms
                ),
            );
        }
        report.range("speed.batch_history", self.batch_history, 1..=1_000_000);
        report.range(
            "speed.idempotency_window_secs",
            self.idempotency_window_secs,
            1..=2_592_000,
        );
        report.range(
            "speed.wal_segment_bytes",
            self.wal_segment_bytes,
            1 << 20..=4 << 30,
        );
        report.range(
            "speed.max_batch_records",
            self.max_batch_records,
            1000..=100_000_000,
        );
        report.range(
            "speed.max_batch_bytes",
            self.max_batch_bytes,
            1 << 16..=4 << 30,
        );
    }
}
