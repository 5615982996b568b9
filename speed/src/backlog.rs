//! The budget of records received but not yet processed.
//!
//! The write-ahead log is the speed layer's queue: a receiver appends, the
//! micro-batch loop takes. When input arrives faster than the views can
//! process it (a burst, a costly view), the queue grows; without a bound it
//! grows until the disk is full and every later micro-batch is huge. The
//! backlog is what lies between the log's end and the last committed
//! micro-batch, counted in records and in payload bytes; when either passes
//! its budget, push sources wait (a TCP receiver stops reading its sockets,
//! so TCP pushes back on the producer) or are told to retry (HTTP ingest
//! answers 503 with `Retry-After`), until the micro-batches have caught up.
//! Nothing acknowledged is dropped: the budget only delays new input.
//!
//! Bytes are counted from this process's start: records replayed after a
//! restart count towards the record budget only.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::wal::Wal;

/// The backlog and its budget, shared by the receivers, the HTTP ingest
/// and the micro-batch loop.
#[derive(Debug)]
pub struct Backlog {
    wal: Wal,
    max_records: u64,
    max_bytes: u64,
    /// One past the last record the micro-batches committed.
    processed_seq: AtomicU64,
    /// Payload bytes appended since start, and processed of those.
    appended_bytes: AtomicU64,
    processed_bytes: AtomicU64,
    /// The log's end at start: bytes of records before it are not counted.
    start_seq: u64,
    /// Times a source had to wait or was turned away.
    waits: AtomicU64,
}

/// How often a waiting source looks again.
const POLL: Duration = Duration::from_millis(10);

impl Backlog {
    /// A backlog over `wal` with the given budgets (at least one record and
    /// one byte), starting at the committed position `processed_seq`.
    pub fn new(wal: Wal, max_records: u64, max_bytes: u64, processed_seq: u64) -> Self {
        let start_seq = wal.next_seq();
        Backlog {
            wal,
            max_records: max_records.max(1),
            max_bytes: max_bytes.max(1),
            processed_seq: AtomicU64::new(processed_seq),
            appended_bytes: AtomicU64::new(0),
            processed_bytes: AtomicU64::new(0),
            start_seq,
            waits: AtomicU64::new(0),
        }
    }

    /// Records received and not yet committed by a micro-batch.
    pub fn records(&self) -> u64 {
        self.wal
            .next_seq()
            .saturating_sub(self.processed_seq.load(Ordering::Acquire))
    }

    /// Payload bytes received since start and not yet committed.
    pub fn bytes(&self) -> u64 {
        self.appended_bytes
            .load(Ordering::Acquire)
            .saturating_sub(self.processed_bytes.load(Ordering::Acquire))
    }

    /// Whether new input may be appended now.
    pub fn has_room(&self) -> bool {
        self.records() < self.max_records && self.bytes() < self.max_bytes
    }

    /// Waits until new input may be appended (checking every 10 ms), or
    /// returns at once when it may.
    pub async fn wait_for_room(&self) {
        if self.has_room() {
            return;
        }
        self.waits.fetch_add(1, Ordering::Relaxed);
        while !self.has_room() {
            tokio::time::sleep(POLL).await;
        }
    }

    /// Counts a refusal (an HTTP request told to retry).
    pub fn note_refused(&self) {
        self.waits.fetch_add(1, Ordering::Relaxed);
    }

    /// Times a source waited for room or was refused, since start.
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    /// An append of `bytes` payload bytes went through.
    pub fn note_appended(&self, bytes: u64) {
        self.appended_bytes.fetch_add(bytes, Ordering::AcqRel);
    }

    /// A micro-batch committed every record before `seq`; `bytes` is the
    /// payload of its records (those at or after [`Self::start_seq`] count).
    pub fn note_processed(&self, seq: u64, bytes: u64) {
        self.processed_seq.fetch_max(seq, Ordering::AcqRel);
        self.processed_bytes.fetch_add(bytes, Ordering::AcqRel);
    }

    /// The log's end when this process started: records before it were
    /// appended by an earlier process, and their bytes are not counted.
    pub fn start_seq(&self) -> u64 {
        self.start_seq
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wal::WalConfig;

    #[test]
    fn the_budget_closes_and_reopens_as_micro_batches_commit() {
        let dir = std::env::temp_dir().join(format!("lamina-backlog-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (wal, _) = Wal::open(WalConfig::new(dir.join("wal"))).unwrap();
        let backlog = Backlog::new(wal.clone(), 5, 1000, 0);
        assert!(backlog.has_room());
        wal.append_blocking(0, &["a"; 4], 1).unwrap();
        backlog.note_appended(4);
        assert!(backlog.has_room(), "4 records of 5");
        wal.append_blocking(0, &["b"], 1).unwrap();
        backlog.note_appended(1);
        assert!(!backlog.has_room(), "5 records: full");
        backlog.note_processed(3, 3);
        assert_eq!((backlog.records(), backlog.bytes()), (2, 2));
        assert!(backlog.has_room());
        // The byte budget closes it too.
        backlog.note_appended(2000);
        assert!(!backlog.has_room());
        backlog.note_processed(5, 2000);
        assert!(backlog.has_room());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(backlog.wait_for_room());
        wal.close().unwrap();
        let _ = std::fs::remove_dir_all(dir);
    }
}
