//! What one micro-batch hands to the state store, and the traits through
//! which the speed layer reads its input and writes its output.
//!
//! The speed layer does not own the state store (the serving layer does,
//! to merge it with batch views); it writes through [`CommitSink`], and
//! reads durable records through [`RecordLog`] (the write-ahead log).

use std::ops::Range;

use lamina::view::AggValue;

/// A record that did not parse, kept where the user can see it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadRecord {
    /// The stream it was sent to.
    pub stream: String,
    /// Its sequence number in the write-ahead log.
    pub seq: u64,
    /// Why it was rejected (names the field and what was expected).
    pub reason: String,
    /// The record, cut to at most 4 KiB.
    pub record: Vec<u8>,
}

/// One micro-batch's output, committed atomically: nothing of it, or all of
/// it, survives a crash.
#[derive(Debug, Default, Clone)]
pub struct MicroBatchCommit {
    /// The micro-batch id; strictly increasing.
    pub batch_id: u64,
    /// The epoch the micro-batch belongs to.
    pub epoch: u64,
    /// Source positions reached (e.g. `("wal", next seq)`) and epoch
    /// boundaries (`("epoch_start/…", first seq)`): where to resume after a
    /// restart, and what to seal.
    pub positions: Vec<(String, u64)>,
    /// Per view, the merged partial aggregate of each key in this
    /// micro-batch.
    pub deltas: Vec<(String, Vec<(String, AggValue)>)>,
    /// Records that did not parse.
    pub dead_letters: Vec<DeadRecord>,
}

/// Where micro-batches commit: the state store.
pub trait CommitSink: Send + Sync {
    /// Commits one micro-batch atomically.
    ///
    /// # Errors
    ///
    /// A message naming what failed; nothing of the commit is applied.
    fn commit(&self, commit: MicroBatchCommit) -> Result<(), String>;

    /// The last committed value of a position (see
    /// [`MicroBatchCommit::positions`]).
    ///
    /// # Errors
    ///
    /// A message naming what failed.
    fn position(&self, name: &str) -> Result<Option<u64>, String>;

    /// The id of the last committed micro-batch.
    ///
    /// # Errors
    ///
    /// A message naming what failed.
    fn last_batch_id(&self) -> Result<Option<u64>, String>;

    /// Every committed position whose name starts with `prefix`.
    ///
    /// # Errors
    ///
    /// A message naming what failed.
    fn positions_with_prefix(&self, prefix: &str) -> Result<Vec<(String, u64)>, String>;

    /// Makes every commit so far durable (before the log records they came
    /// from may be deleted).
    ///
    /// # Errors
    ///
    /// A message naming what failed.
    fn flush(&self) -> Result<(), String>;
}

/// One record read from the log.
#[derive(Debug, Clone, Copy)]
pub struct LogRecord<'a> {
    /// Its sequence number.
    pub seq: u64,
    /// The sequence number of the first record of the append it was part of.
    pub entry_first_seq: u64,
    /// The stream id (with control bits, see [`crate::control`]).
    pub stream: u32,
    /// When the receiver got it (µs since the Unix epoch).
    pub receive_us: i64,
    /// The bytes.
    pub payload: &'a [u8],
}

/// Receives each record read from the log.
pub type RecordVisitor<'a> = dyn FnMut(LogRecord<'_>) + 'a;

/// Durable records in sequence order: the write-ahead log.
pub trait RecordLog: Send + Sync {
    /// One past the highest durable sequence number.
    fn durable_end(&self) -> u64;

    /// Calls `f` for every record with seq in `range`, in order.
    ///
    /// # Errors
    ///
    /// A message naming what failed (records deleted, damaged, not durable).
    fn read(&self, range: Range<u64>, f: &mut RecordVisitor<'_>) -> Result<(), String>;

    /// Deletes what is only needed for records before `seq` (they are in the
    /// master dataset now).
    ///
    /// # Errors
    ///
    /// A message naming what failed.
    fn truncate_before(&self, seq: u64) -> Result<(), String>;
}

impl RecordLog for crate::wal::Wal {
    fn durable_end(&self) -> u64 {
        self.durable_seq()
    }

    fn read(&self, range: Range<u64>, f: &mut RecordVisitor<'_>) -> Result<(), String> {
        self.read_entries(
            range,
            |seq, entry_first_seq, stream, receive_us, payload| {
                f(LogRecord {
                    seq,
                    entry_first_seq,
                    stream,
                    receive_us,
                    payload,
                })
            },
        )
        .map_err(|e| e.to_string())
    }

    fn truncate_before(&self, seq: u64) -> Result<(), String> {
        crate::wal::Wal::truncate_before(self, seq)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// The position name of the first sequence number of `epoch`.
pub fn epoch_start_position(epoch: u64) -> String {
    format!("epoch_start/{epoch:020}")
}

/// The position name under which an HTTP request's idempotency key is
/// committed; its value is the request's receive time (µs), for expiry.
pub fn idempotency_position(stream: &str, key: &str) -> String {
    format!("{IDEMPOTENCY_PREFIX}{stream}/{key}")
}

/// Prefix of the positions of idempotency keys.
pub const IDEMPOTENCY_PREFIX: &str = "idem/";

/// The position name of the write-ahead log: one past the last record
/// committed.
pub const WAL_POSITION: &str = "wal";
