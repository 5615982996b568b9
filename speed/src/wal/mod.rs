//! The write-ahead log of push sources (HTTP POST, TCP lines, Flume).
//!
//! A receiver appends the records of one request and acknowledges its
//! client only when the append returns: by then the records are fsynced.
//! The micro-batch loop reads them back by sequence number, and once an
//! epoch is in the master dataset it deletes the segments below it.
//!
//! # Guarantees
//!
//! - Every record gets a `seq`; seqs are global, gap-free and increasing in
//!   the order the writer takes appends.
//! - An append returns `Ok(range)` only after all of its records are
//!   fsynced, and an append is atomic: after a crash (`kill -9`, power
//!   loss) either all of its records are recovered or none.
//! - Recovery tells a torn tail from corruption (the rule and why it is
//!   sound: `segment::inspect`). A torn tail, the incomplete end of the
//!   last segment that a crash leaves, is cut ([`Recovery`] says where, why
//!   and how many bytes went); acknowledged records are never in it.
//!   Anything else that does not verify is damage to fsynced data:
//!   [`Wal::open`] fails with [`WalError::Corrupt`] naming the segment and
//!   offset, and changes no file. [`check`] reports every problem of a log
//!   and [`salvage`] rebuilds it from every intact entry.
//! - After a write or fsync error nothing more is acknowledged: the WAL is
//!   failed until reopened (see `Writer::fail` for why fsync is not retried).
//! - Records that were written but never acknowledged (crash or error after
//!   the write, before the reply) may or may not be recovered. A client
//!   that retries such a request sends them again; de-duplicating that
//!   needs an idempotency key from the client and is not done here.
//!
//! # Layout
//!
//! - `mod.rs`: [`Wal`], its config, stats and recovery report.
//! - `group_commit.rs`: the writer thread, group commit, backpressure.
//! - `segment.rs`: segment files, recovery on open, sequential reads.
//! - `salvage.rs`: [`check`] and [`salvage`] of a damaged log.
//! - `record.rs`: the framing of one entry (one append) on disk.
//! - `error.rs`: [`WalError`].

mod error;
mod group_commit;
mod record;
mod salvage;
mod segment;

use std::{
    fs::{self, File, OpenOptions, TryLockError},
    future::Future,
    io::ErrorKind,
    ops::Range,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, OnceLock, PoisonError,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use tokio::sync::Semaphore;

pub use error::{Result, WalError};
pub use salvage::{
    CheckReport, EntryProblem, LostRange, SalvageReport, SalvagedSegment, SegmentCheck, Verdict,
    check, salvage,
};

use error::io_err;
use group_commit::{Msg, Shared, Writer};
use record::Body;

/// Name of the lock file that keeps two `Wal`s off one directory.
const LOCK_FILE: &str = "LOCK";

/// Where and how the WAL stores its segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalConfig {
    /// Directory of the segment files; created if missing. Default: none.
    pub dir: PathBuf,
    /// A new segment is started when the next entry would make the current
    /// one larger than this (an entry larger than this gets a segment of
    /// its own). Default: 64 MiB.
    pub segment_bytes: u64,
    /// Backpressure: appends wait while this many bytes are queued or
    /// written but not yet durable. A single append larger than this is
    /// still accepted, alone. Default: 64 MiB.
    pub max_pending_bytes: u64,
}

impl WalConfig {
    pub const DEFAULT_SEGMENT_BYTES: u64 = 64 << 20;
    pub const DEFAULT_MAX_PENDING_BYTES: u64 = 64 << 20;

    /// The defaults, storing segments in `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> WalConfig {
        WalConfig {
            dir: dir.into(),
            segment_bytes: Self::DEFAULT_SEGMENT_BYTES,
            max_pending_bytes: Self::DEFAULT_MAX_PENDING_BYTES,
        }
    }

    fn validate(&self) -> Result<()> {
        let mut problems = Vec::new();
        if self.dir.as_os_str().is_empty() {
            problems.push("`dir` is empty".to_string());
        }
        if self.segment_bytes == 0 {
            problems.push("`segment_bytes` must be > 0".to_string());
        }
        if self.max_pending_bytes == 0 {
            problems.push("`max_pending_bytes` must be > 0".to_string());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(WalError::Config(problems.join("; ")))
        }
    }
}

/// What [`Wal::open`] found and repaired.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Seq of the next append: one past the last valid record.
    pub next_seq: u64,
    /// Oldest seq still in the log (older segments were truncated away).
    pub first_seq: u64,
    /// Segment files after recovery.
    pub segments: usize,
    /// Bytes cut from the end of the last segment (a torn tail).
    pub discarded_bytes: u64,
    /// Where the log was cut, if it was.
    pub torn: Option<TornTail>,
}

/// The first invalid entry found by recovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    pub path: PathBuf,
    /// Offset of the entry in `path`; the file was truncated to it.
    pub offset: u64,
    pub reason: String,
}

/// Counters since open; `appends`, `records` count durable ones.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WalStats {
    pub appends: u64,
    pub records: u64,
    pub fsyncs: u64,
    /// Bytes written to segments, framing included.
    pub bytes: u64,
    /// Live segment files.
    pub segments: u64,
    /// Bytes of appends queued or written but not durable yet.
    pub pending_bytes: u64,
}

/// The write-ahead log. Cheap to clone: all clones share one writer.
#[derive(Debug, Clone)]
pub struct Wal {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Msg>,
    /// Taken by the first `close` (or `Drop`). std Mutex: only ever held to
    /// `take()` it.
    writer: Mutex<Option<JoinHandle<Result<()>>>>,
    /// Holds the directory lock until the last handle is gone.
    _lock: File,
}

impl Wal {
    /// Opens (or creates) the WAL in `cfg.dir`, recovering its valid prefix.
    ///
    /// Blocking: reads every segment and verifies every entry.
    ///
    /// # Errors
    ///
    /// [`WalError::Locked`] if another `Wal` has the directory open,
    /// [`WalError::Config`], [`WalError::Io`], and [`WalError::Corrupt`]
    /// for a stray `*.wal` file or a damaged log (anything but a torn tail:
    /// see the module docs); then no file was changed.
    pub fn open(cfg: WalConfig) -> Result<(Wal, Recovery)> {
        cfg.validate()?;
        let dir = cfg.dir.as_path();
        create_dir_durably(dir)?;
        let lock = lock_dir(dir)?;

        let recovered = segment::recover(dir)?;
        let first_seq = recovered.segments[0];
        let last = *recovered.segments.last().expect("recover keeps a segment");
        let path = segment::path(dir, last);
        let file = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_err("open", &path))?;

        let budget_permits = u32::try_from(cfg.max_pending_bytes)
            .unwrap_or(u32::MAX)
            .min(u32::try_from(Semaphore::MAX_PERMITS).unwrap_or(u32::MAX));
        let shared = Arc::new(Shared {
            dir: dir.to_path_buf(),
            next_seq: AtomicU64::new(recovered.next_seq),
            durable_seq: AtomicU64::new(recovered.next_seq),
            segments: Mutex::new(recovered.segments.iter().copied().collect()),
            failed: OnceLock::new(),
            budget: Arc::new(Semaphore::new(budget_permits as usize)),
            budget_permits,
            appends: AtomicU64::new(0),
            records: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            read_hint: Mutex::new(None),
            #[cfg(test)]
            fail_next_sync: Default::default(),
        });
        let writer = Writer::new(
            Arc::clone(&shared),
            cfg.segment_bytes,
            file,
            path,
            recovered.last_len,
            recovered.next_seq,
        );
        let (tx, rx) = mpsc::channel();
        let handle = thread::Builder::new()
            .name("lamina-wal-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(io_err("spawn writer thread for", dir))?;

        let recovery = Recovery {
            next_seq: recovered.next_seq,
            first_seq,
            segments: recovered.segments.len(),
            discarded_bytes: recovered.discarded_bytes,
            torn: recovered.torn,
        };
        let inner = Inner {
            shared,
            tx,
            writer: Mutex::new(Some(handle)),
            _lock: lock,
        };
        Ok((
            Wal {
                inner: Arc::new(inner),
            },
            recovery,
        ))
    }

    /// Appends `records` as one atomic entry and resolves once they are
    /// durable, to the seqs they got. An empty `records` writes nothing and
    /// resolves to an empty range.
    ///
    /// The records are copied (and checksummed) right away, in the caller;
    /// the future owns everything it needs (`'static`), so it can be
    /// spawned. It never blocks: waiting for budget and for the fsync is
    /// asynchronous, the fsync itself runs on the WAL's writer thread.
    ///
    /// # Errors
    ///
    /// [`WalError::Io`] if the write or fsync of this append's group failed,
    /// [`WalError::Failed`] if an earlier one did, [`WalError::Closed`],
    /// [`WalError::TooLarge`]. On error the records are not acknowledged,
    /// but may still be on disk (see the module docs).
    ///
    /// # Cancellation
    ///
    /// Dropping the future after it started waiting for durability does not
    /// withdraw the append: it may still be written. Dropping it while it
    /// waits for budget withdraws it.
    pub fn append<R: AsRef<[u8]>>(
        &self,
        stream: u32,
        records: &[R],
        receive_time_us: i64,
    ) -> impl Future<Output = Result<Range<u64>>> + Send + 'static {
        let body = Body::encode(records);
        let inner = Arc::clone(&self.inner);
        async move {
            let body = body?;
            if body.count == 0 {
                let next = inner.shared.next_seq.load(Ordering::Acquire);
                return Ok(next..next);
            }
            let shared = Arc::clone(&inner.shared);
            group_commit::submit(shared, inner.tx.clone(), stream, receive_time_us, body).await
        }
    }

    /// [`Wal::append`] for plain threads: blocks until durable.
    ///
    /// Must not be called on a tokio worker thread (it parks the thread
    /// until the fsync is done); use `append` there.
    pub fn append_blocking<R: AsRef<[u8]>>(
        &self,
        stream: u32,
        records: &[R],
        receive_time_us: i64,
    ) -> Result<Range<u64>> {
        group_commit::block_on(self.append(stream, records, receive_time_us))
    }

    /// Like [`read_range`](Self::read_range), also passing each record's
    /// entry: `f(seq, entry_first_seq, stream, receive_time_us, payload)`.
    /// Records of one append share an entry, so a reader can tell where an
    /// append began even when a range starts inside it.
    ///
    /// Calls `f` for every record
    /// with seq in `range`, in seq order. Blocking file I/O: from async
    /// code, run it on a blocking or CPU pool.
    ///
    /// # Errors
    ///
    /// [`WalError::NotDurable`] if `range.end > durable_seq()`,
    /// [`WalError::Truncated`] if part of `range` was deleted by
    /// [`Wal::truncate_before`], [`WalError::Corrupt`] if a checked entry
    /// does not read back (the disk damaged it after it was fsynced).
    /// `f` may have been called for a prefix of the range when an error is
    /// returned.
    pub fn read_entries(
        &self,
        range: Range<u64>,
        mut f: impl FnMut(u64, u64, u32, i64, &[u8]),
    ) -> Result<()> {
        if range.is_empty() {
            return Ok(());
        }
        let durable = self.durable_seq();
        if range.end > durable {
            return Err(WalError::NotDurable {
                requested: range,
                durable,
            });
        }
        // Taken after `durable`: any segment holding records below it was
        // listed before `durable` was published.
        let segments: Vec<u64> = self.inner.shared.segments().iter().copied().collect();
        if range.start < segments[0] {
            return Err(WalError::Truncated {
                requested_start: range.start,
                oldest: segments[0],
            });
        }
        let shared = &self.inner.shared;
        let hint = *shared
            .read_hint
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let reached = segment::read(&shared.dir, &segments, range.start, range.end, hint, &mut f)?;
        let mut kept = shared
            .read_hint
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Keep the furthest: the micro-batches read forward, the sealer
        // reads behind them.
        if reached.is_some_and(|r| kept.is_none_or(|k| r.entry_seq > k.entry_seq)) {
            *kept = reached;
        }
        Ok(())
    }

    /// Calls `f(seq, stream, receive_time_us, payload)` for every record
    /// with seq in `range`, in seq order. See [`read_entries`](Self::read_entries)
    /// for errors.
    ///
    /// # Errors
    ///
    /// As [`read_entries`](Self::read_entries).
    pub fn read_range(
        &self,
        range: Range<u64>,
        mut f: impl FnMut(u64, u32, i64, &[u8]),
    ) -> Result<()> {
        self.read_entries(range, |seq, _, stream, t, payload| {
            f(seq, stream, t, payload)
        })
    }

    /// Deletes every segment all of whose records have seq < `seq` (and are
    /// durable); the segment being written is never deleted. Returns how
    /// many were deleted.
    ///
    /// Segments go oldest first, each deletion fsynced before the next, so
    /// whatever a crash leaves is still a contiguous run of segments.
    pub fn truncate_before(&self, seq: u64) -> Result<usize> {
        let shared = &self.inner.shared;
        let limit = seq.min(self.durable_seq());
        let doomed: Vec<u64> = {
            let mut segments = shared.segments();
            let mut doomed = Vec::new();
            // Segment 0 holds seqs below the first seq of segment 1.
            while segments.len() > 1 && segments[1] <= limit {
                doomed.extend(segments.pop_front());
            }
            doomed
        };
        for (i, &first) in doomed.iter().enumerate() {
            let path = segment::path(&shared.dir, first);
            let deleted = match fs::remove_file(&path) {
                Err(e) if e.kind() != ErrorKind::NotFound => Err(WalError::io("delete", path, e)),
                _ => segment::sync_dir(&shared.dir),
            };
            if let Err(e) = deleted {
                // Keep the list equal to what is on disk: the rest stays.
                let mut segments = shared.segments();
                for &first in doomed[i..].iter().rev() {
                    segments.push_front(first);
                }
                return Err(e);
            }
        }
        Ok(doomed.len())
    }

    /// Seq the next append will get.
    pub fn next_seq(&self) -> u64 {
        self.inner.shared.next_seq.load(Ordering::Acquire)
    }

    /// Why the log failed for good (a write or fsync error), if it did:
    /// every append fails from then on, until the log is reopened.
    pub fn failure(&self) -> Option<String> {
        self.inner.shared.failed.get().map(ToString::to_string)
    }

    /// Every seq below this is durable.
    pub fn durable_seq(&self) -> u64 {
        self.inner.shared.durable_seq.load(Ordering::Acquire)
    }

    /// Oldest seq still readable.
    pub fn first_seq(&self) -> u64 {
        self.inner.shared.segments()[0]
    }

    /// The directory of the segment files.
    pub fn dir(&self) -> &Path {
        &self.inner.shared.dir
    }

    /// Counters since open, for metrics.
    pub fn stats(&self) -> WalStats {
        let s = &self.inner.shared;
        WalStats {
            appends: s.appends.load(Ordering::Relaxed),
            records: s.records.load(Ordering::Relaxed),
            fsyncs: s.fsyncs.load(Ordering::Relaxed),
            bytes: s.bytes.load(Ordering::Relaxed),
            segments: s.segments().len() as u64,
            pending_bytes: u64::from(s.budget_permits)
                .saturating_sub(s.budget.available_permits() as u64),
        }
    }

    /// Completes every append queued so far, stops the writer thread and
    /// returns its final state: `Err` if the WAL had failed. Appends on
    /// other clones fail with [`WalError::Closed`] afterwards. Dropping the
    /// last clone does the same, ignoring the result.
    pub fn close(self) -> Result<()> {
        self.inner.shutdown()
    }
}

impl Inner {
    fn shutdown(&self) -> Result<()> {
        // Fails only if the writer is already gone.
        let _ = self.tx.send(Msg::Close);
        let handle = self
            .writer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match handle {
            Some(handle) => handle.join().unwrap_or(Err(WalError::Closed)),
            None => Ok(()),
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Waits for at most the group commit in flight.
        let _ = self.shutdown();
    }
}

/// Creates `dir` if needed and makes its entry in the parent durable.
fn create_dir_durably(dir: &Path) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => segment::sync_dir(parent),
        _ => Ok(()),
    }
}

/// Takes an exclusive lock on `dir/LOCK`; the OS drops it with the file
/// (also on `kill -9`).
///
/// A lock that is busy is retried for a short while before giving up: the
/// lock (`flock`) belongs to the open file description, and a child process
/// being spawned by another thread shares that until its `exec` closes it
/// (`O_CLOEXEC`), so a WAL that was just closed can look locked for a
/// moment.
pub(super) fn lock_dir(dir: &Path) -> Result<File> {
    const ATTEMPTS: u32 = 25;
    const PAUSE: Duration = Duration::from_millis(20);
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io_err("open", &path))?;
    for attempt in 1..=ATTEMPTS {
        match file.try_lock() {
            Ok(()) => return Ok(file),
            Err(TryLockError::WouldBlock) if attempt < ATTEMPTS => thread::sleep(PAUSE),
            Err(TryLockError::WouldBlock) => break,
            Err(TryLockError::Error(e)) => return Err(WalError::io("lock", path, e)),
        }
    }
    Err(WalError::Locked {
        path: dir.to_path_buf(),
    })
}

#[cfg(test)]
mod tests;
