//! The writer thread and group commit.
//!
//! One std thread owns the active segment file. Appenders send it their
//! encoded entries over a channel and wait on a oneshot. The writer takes
//! everything queued, assigns seqs in queue order, writes all of it with
//! `write_all`, fsyncs once, publishes the new durable seq and only then
//! completes every append of the group. So one fsync covers every append
//! that arrived while the previous fsync ran, and nothing is acknowledged
//! before it is on disk.
//!
//! fsync runs on this thread, never on a tokio worker: async appenders just
//! await the oneshot.
//!
//! Memory is bounded by a byte budget (a tokio semaphore, `max_pending_bytes`
//! permits): an appender takes permits for its entry before queuing it and
//! the writer returns them once the entry is durable (or failed).

use std::{
    collections::VecDeque,
    fs::File,
    future::Future,
    io::{BufWriter, Write},
    ops::Range,
    path::PathBuf,
    pin::pin,
    sync::{
        Arc, Mutex, MutexGuard, OnceLock, PoisonError,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    task::{Context, Poll, Wake, Waker},
    thread::{self, Thread},
    time::{Duration, Instant},
};

use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

use super::{
    error::{Result, WalError, io_err},
    record::{Body, EntryHeader, encode_prefix},
    segment,
};

const WRITE_BUF_BYTES: usize = 256 * 1024;
/// Upper bound of the group-commit window (see `Writer::run`).
const MAX_GROUP_WINDOW: Duration = Duration::from_micros(500);

/// State shared by the `Wal` handles and the writer thread.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) dir: PathBuf,
    /// Next seq the writer will assign.
    pub(super) next_seq: AtomicU64,
    /// Every seq below this is fsynced.
    pub(super) durable_seq: AtomicU64,
    /// First seq of every live segment, ascending; the last one is the
    /// segment being written. std Mutex: held only to push, pop or copy a
    /// few integers, never across I/O or an `.await`.
    pub(super) segments: Mutex<VecDeque<u64>>,
    /// Set once, by the writer, on the first write or fsync error.
    pub(super) failed: OnceLock<WalError>,
    /// Byte budget of appends queued or written but not yet durable.
    pub(super) budget: Arc<Semaphore>,
    pub(super) budget_permits: u32,
    pub(super) appends: AtomicU64,
    pub(super) records: AtomicU64,
    pub(super) fsyncs: AtomicU64,
    pub(super) bytes: AtomicU64,
    /// Where the furthest read so far ended (see [`ReadHint`]). std Mutex:
    /// held only to copy three integers.
    pub(super) read_hint: Mutex<Option<super::segment::ReadHint>>,
    /// Fault injection for unit tests: the next fsync fails.
    #[cfg(test)]
    pub(super) fail_next_sync: std::sync::atomic::AtomicBool,
}

impl Shared {
    pub(super) fn segments(&self) -> MutexGuard<'_, VecDeque<u64>> {
        // The guarded data is a plain list that every holder leaves
        // consistent, so a panic elsewhere does not make it unusable.
        self.segments.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The error for an append that cannot go through any more.
    pub(super) fn closed_error(&self) -> WalError {
        match self.failed.get() {
            Some(e) => WalError::Failed(Box::new(e.clone())),
            None => WalError::Closed,
        }
    }

    /// Permits an entry of `len` bytes takes from the budget. An entry
    /// larger than the whole budget takes all of it, so it is still
    /// accepted, alone.
    pub(super) fn permits_for(&self, len: u64) -> u32 {
        u32::try_from(len.max(1))
            .unwrap_or(u32::MAX)
            .min(self.budget_permits)
    }
}

/// Queues `msg` into `group`, or fails it if a `Close` came first.
fn take(msg: Msg, group: &mut Vec<Append>, closing: &mut bool) {
    match msg {
        Msg::Append(append) if !*closing => group.push(append),
        // Raced with close: never written, never acknowledged.
        Msg::Append(append) => append.complete(Err(WalError::Closed)),
        Msg::Close => *closing = true,
    }
}

/// One append on its way to the writer.
#[derive(Debug)]
pub(super) struct Append {
    pub(super) stream: u32,
    pub(super) receive_time_us: i64,
    pub(super) body: Body,
    /// Returned to the budget when this is dropped, i.e. once the append is
    /// completed either way.
    pub(super) budget: OwnedSemaphorePermit,
    pub(super) done: oneshot::Sender<Result<Range<u64>>>,
}

impl Append {
    fn complete(self, result: Result<Range<u64>>) {
        // Budget first, so an appender that sees its result also sees the
        // budget it used returned.
        drop(self.budget);
        // The appender may have given up waiting (dropped its future); an
        // `Ok` append is durable all the same.
        let _ = self.done.send(result);
    }
}

#[derive(Debug)]
pub(super) enum Msg {
    Append(Append),
    /// Finish what was queued before, then stop.
    Close,
}

/// The writer: owns the active segment.
#[derive(Debug)]
pub(super) struct Writer {
    shared: Arc<Shared>,
    segment_bytes: u64,
    /// `None` once failed: nothing may reach the file after a failed
    /// write or fsync (see `fail`).
    file: Option<BufWriter<File>>,
    path: PathBuf,
    segment_len: u64,
    next_seq: u64,
    /// Duration of the last fsync, for the group-commit window.
    last_sync: Duration,
}

impl Writer {
    pub(super) fn new(
        shared: Arc<Shared>,
        segment_bytes: u64,
        file: File,
        path: PathBuf,
        segment_len: u64,
        next_seq: u64,
    ) -> Writer {
        Writer {
            shared,
            segment_bytes,
            file: Some(BufWriter::with_capacity(WRITE_BUF_BYTES, file)),
            path,
            segment_len,
            next_seq,
            last_sync: Duration::ZERO,
        }
    }

    /// The thread body. Returns when a `Close` arrives or every handle is
    /// gone; the result is the WAL's final state (`Err` if it failed).
    pub(super) fn run(mut self, rx: mpsc::Receiver<Msg>) -> Result<()> {
        let mut group = Vec::new();
        let mut closing = false;
        let mut last_group = 0;
        while !closing {
            let Ok(first) = rx.recv() else { break };
            // Group commit: everything that queued up while we were busy
            // (writing or in the last fsync) goes into this fsync.
            for msg in std::iter::once(first).chain(rx.try_iter()) {
                take(msg, &mut group, &mut closing);
            }
            // The appenders we just completed come straight back with
            // their next append, but not all at the same instant: without
            // a short wait the first one would get an fsync of its own
            // while the others queue behind it, and groups would alternate
            // between 1 and n - 1. So if fewer appends than last time are
            // here, give the rest a moment (a fraction of an fsync, bounded,
            // and never with a single appender, whose group is always 1).
            if !closing && group.len() < last_group {
                let deadline = Instant::now() + self.group_window();
                while group.len() < last_group && !closing {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match rx.recv_timeout(left) {
                        Ok(msg) => take(msg, &mut group, &mut closing),
                        Err(_) => break,
                    }
                }
            }
            last_group = group.len();
            self.commit(&mut group);
        }
        // Appenders waiting for budget must not wait forever.
        self.shared.budget.close();
        match self.shared.failed.get() {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// How long a group waits for stragglers: a quarter of the last fsync,
    /// at most `MAX_GROUP_WINDOW`. Waiting costs the appenders already
    /// queued at most that; not waiting costs a straggler a whole fsync.
    fn group_window(&self) -> Duration {
        (self.last_sync / 4).min(MAX_GROUP_WINDOW)
    }

    /// Writes and fsyncs `group`, then completes every append in it.
    fn commit(&mut self, group: &mut Vec<Append>) {
        if group.is_empty() {
            return;
        }
        if let Some(e) = self.shared.failed.get() {
            let e = WalError::Failed(Box::new(e.clone()));
            for append in group.drain(..) {
                append.complete(Err(e.clone()));
            }
            return;
        }
        match self.write_group(group) {
            Ok(ranges) => {
                self.shared
                    .durable_seq
                    .store(self.next_seq, Ordering::Release);
                let records: u64 = ranges.iter().map(|r| r.end - r.start).sum();
                self.shared.records.fetch_add(records, Ordering::Relaxed);
                self.shared
                    .appends
                    .fetch_add(group.len() as u64, Ordering::Relaxed);
                for (append, range) in group.drain(..).zip(ranges) {
                    append.complete(Ok(range));
                }
            }
            Err(e) => {
                self.fail(&e);
                for append in group.drain(..) {
                    append.complete(Err(e.clone()));
                }
            }
        }
    }

    fn write_group(&mut self, group: &[Append]) -> Result<Vec<Range<u64>>> {
        let mut ranges = Vec::with_capacity(group.len());
        for append in group {
            let entry_len = append.body.entry_len();
            // A segment never grows past `segment_bytes` unless a single
            // entry is larger than that; such an entry gets a fresh segment.
            if self.segment_len > 0 && self.segment_len + entry_len > self.segment_bytes {
                self.rotate()?;
            }
            let header = EntryHeader {
                first_seq: self.next_seq,
                count: append.body.count,
                stream: append.stream,
                receive_time_us: append.receive_time_us,
            };
            let file = self.file.as_mut().expect("writer not failed");
            file.write_all(&encode_prefix(header, &append.body))
                .and_then(|()| file.write_all(&append.body.bytes))
                .map_err(io_err("write", &self.path))?;
            self.segment_len += entry_len;
            self.shared.bytes.fetch_add(entry_len, Ordering::Relaxed);
            self.next_seq = header.end_seq();
            self.shared.next_seq.store(self.next_seq, Ordering::Release);
            ranges.push(header.first_seq..header.end_seq());
        }
        self.sync()?;
        Ok(ranges)
    }

    /// Flushes the buffer and fsyncs the active segment.
    fn sync(&mut self) -> Result<()> {
        let file = self.file.as_mut().expect("writer not failed");
        file.flush().map_err(io_err("write", &self.path))?;
        #[cfg(test)]
        if self.shared.fail_next_sync.swap(false, Ordering::Relaxed) {
            let injected = std::io::Error::other("injected fsync failure");
            return Err(WalError::io("fsync", &self.path, injected));
        }
        // fdatasync: the file only grows, and growing is metadata that
        // fdatasync does flush (it is needed to read the data back).
        let started = Instant::now();
        file.get_ref()
            .sync_data()
            .map_err(io_err("fsync", &self.path))?;
        self.last_sync = started.elapsed();
        self.shared.fsyncs.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Starts a new segment named by the next seq.
    ///
    /// The old segment is fsynced *before* the first byte goes into the new
    /// one, and the new file's directory entry is fsynced before it is
    /// used. Hence after a crash only the last segment can end in a torn
    /// entry, which is what recovery relies on (`segment::inspect`).
    fn rotate(&mut self) -> Result<()> {
        self.sync()?;
        let dir = &self.shared.dir;
        let path = segment::path(dir, self.next_seq);
        let file = segment::create(&path)?;
        segment::sync_dir(dir)?;
        self.shared.segments().push_back(self.next_seq);
        self.file = Some(BufWriter::with_capacity(WRITE_BUF_BYTES, file));
        self.path = path;
        self.segment_len = 0;
        Ok(())
    }

    /// Puts the WAL in the failed state for good.
    ///
    /// Why not retry a failed fsync ("fsyncgate", PostgreSQL 2018): on Linux
    /// a failed fsync reports the writeback error once and may mark the
    /// dirty pages clean or drop them; a second fsync then "succeeds"
    /// without the data being on disk. Whether a failed `write` left part of
    /// an entry behind is just as unknowable. So we never acknowledge
    /// anything written since the last good fsync, drop our buffered bytes
    /// unwritten, and refuse further appends; reopening re-reads what is
    /// really on disk and recovery cuts any torn tail. (Records of failed
    /// appends may still turn up after a reopen: never acknowledged, but
    /// present, like after a crash between fsync and acknowledgment.)
    fn fail(&mut self, e: &WalError) {
        let _ = self.shared.failed.set(e.clone());
        if let Some(file) = self.file.take() {
            // `into_parts` hands back the unflushed bytes instead of
            // writing them on drop, as `BufWriter`'s `Drop` would.
            let (_file, _unwritten) = file.into_parts();
        }
        // Wake appenders waiting for budget: they get the error now.
        self.shared.budget.close();
    }
}

/// The seqs are assigned by the writer; an append learns its range only
/// when it completes. This checks the state an append can fail on before
/// it queues.
pub(super) async fn submit(
    shared: Arc<Shared>,
    tx: mpsc::Sender<Msg>,
    stream: u32,
    receive_time_us: i64,
    body: Body,
) -> Result<Range<u64>> {
    if shared.failed.get().is_some() {
        return Err(shared.closed_error());
    }
    let permits = shared.permits_for(body.entry_len());
    let permit = Arc::clone(&shared.budget)
        .acquire_many_owned(permits)
        .await
        .map_err(|_| shared.closed_error())?;
    let (done, completed) = oneshot::channel();
    let append = Append {
        stream,
        receive_time_us,
        body,
        budget: permit,
        done,
    };
    tx.send(Msg::Append(append))
        .map_err(|_| shared.closed_error())?;
    // The writer drops `done` without sending only if it is gone.
    completed.await.map_err(|_| shared.closed_error())?
}

/// Runs a future to completion on the current thread by parking it between
/// polls. For `append_blocking`: plain threads wait for budget and
/// durability without a runtime. Blocks the thread, so not for async code.
pub(super) fn block_on<F: Future>(future: F) -> F::Output {
    struct Unpark(Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut future = pin!(future);
    loop {
        match future.as_mut().poll(&mut cx) {
            Poll::Ready(output) => return output,
            // Spurious wake-ups are fine: we just poll again.
            Poll::Pending => thread::park(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_on_waits_for_a_wake_from_another_thread() {
        let (tx, rx) = oneshot::channel();
        let t = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            tx.send(7).unwrap();
        });
        assert_eq!(block_on(rx), Ok(7));
        t.join().unwrap();
    }

    #[test]
    fn permits_are_capped_by_the_budget() {
        let shared = Shared {
            dir: PathBuf::new(),
            next_seq: AtomicU64::new(0),
            durable_seq: AtomicU64::new(0),
            segments: Mutex::new(VecDeque::new()),
            failed: OnceLock::new(),
            budget: Arc::new(Semaphore::new(100)),
            budget_permits: 100,
            appends: AtomicU64::new(0),
            records: AtomicU64::new(0),
            fsyncs: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            read_hint: Mutex::new(None),
            fail_next_sync: Default::default(),
        };
        assert_eq!(shared.permits_for(0), 1);
        assert_eq!(shared.permits_for(40), 40);
        assert_eq!(shared.permits_for(1 << 40), 100);
    }
}
