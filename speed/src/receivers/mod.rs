//! Receivers: the push sources that feed a stream's records into the
//! write-ahead log.
//!
//! A receiver owns its sockets and nothing else. Everything it takes in
//! goes through a [`StreamIngest`], the handle of one stream: one WAL
//! append per batch of lines, durable when the append returns, so a
//! receiver that waits for its append before reading more passes a slow
//! disk back to its sender as TCP backpressure instead of buffering or
//! dropping. A line it cannot accept (longer than `max_record_bytes`) is
//! logged as a rejected control record ([`crate::control::rejected`]) and
//! becomes a dead letter: kept aside where the user sees it, never dropped
//! silently.
//!
//! # Layout
//!
//! - `mod.rs`: [`Receiver`], [`StreamIngest`] and its [`IngestCounters`],
//!   [`ReceiverError`].
//! - `config.rs`: the registry — [`ReceiverConfig`], one line per receiver
//!   type, each type's `*Config` (beside its receiver) implementing
//!   [`BuildReceiver`] (`validate`, `build`). Adding a receiver is its file
//!   and one registry line (docs/receivers.md).
//! - `lines.rs`: [`LineFramer`], newline-delimited records out of any
//!   `AsyncRead`, bounded in memory whatever the input.
//! - `tcp_listen.rs`: [`TcpListenReceiver`], a listener taking many
//!   connections of lines.
//! - `tcp_connect.rs`: [`TcpConnectReceiver`], a client reading lines from
//!   a server and reconnecting with backoff (Spark's `socketTextStream`).
//! - `channel.rs`: [`channel`], records handed in by the program that
//!   embeds the server, `store` returning once they are durable.
//! - `files.rs`: [`FilesReceiver`], every new file of a directory read
//!   once, exactly (Spark's `textFileStream`).
//! - `flume_avro.rs`: [`FlumeAvroReceiver`], Flume's Avro RPC source
//!   protocol (what Flume's AvroSink sends), `OK` once durable.
//! - `kafka.rs`: [`KafkaReceiver`], a consumer of a Kafka topic's
//!   partitions whose offsets commit with the micro-batches.
//!
//! # Rules every receiver follows
//!
//! - It binds or validates in [`BuildReceiver::build`], so a bad address is
//!   a startup error that names it.
//! - It appends a batch and waits for the append before it reads more.
//! - It owns every task it starts (a `JoinSet`), so dropping its `run`
//!   future stops them all.
//! - On shutdown it stops reading new input, appends the complete lines it
//!   already read, closes its connections and returns.
//! - A failed WAL append is fatal: the WAL accepts nothing more until it is
//!   reopened, so `run` returns [`ReceiverError::Wal`].

mod channel;
mod config;
mod files;
pub mod flume_avro;
mod kafka;
mod lines;
mod tcp_connect;
mod tcp_listen;

use std::{
    fmt, io,
    net::SocketAddr,
    ops::Range,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tokio::{io::AsyncRead, sync::watch};

use crate::{
    control,
    wal::{Wal, WalError},
};

pub use channel::{ChannelReceiver, ChannelSender, StoreError, channel};
pub use config::{BuildReceiver, ConfigVisitor, Problem, ReceiverConfig};
pub use files::{FilesConfig, FilesReceiver};
pub use flume_avro::{FlumeAvroConfig, FlumeAvroReceiver};
pub use kafka::{KafkaConfig, KafkaReceiver};
pub use lines::{
    Frame, LineBatch, LineFramer, MAX_BATCH_BYTES, MAX_BATCH_LINES, READ_BUFFER_BYTES,
};
pub use tcp_connect::{TcpConnectConfig, TcpConnectReceiver};
pub use tcp_listen::{TcpListenConfig, TcpListenReceiver};

/// Result of receiver operations.
pub type Result<T, E = ReceiverError> = std::result::Result<T, E>;

/// A source of records for one stream.
///
/// Built by its config's [`BuildReceiver::build`]; the server then calls
/// `run` once, on the tokio runtime.
pub trait Receiver: Send + 'static {
    /// What this receiver is, for logs and errors, e.g.
    /// `tcp_listen 127.0.0.1:9999` (the bound address, so a port 0 in the
    /// config shows as the real port).
    fn describe(&self) -> String;

    /// The address a listening receiver is bound to (a port 0 in the
    /// config resolved), for the startup log and tests; `None` for
    /// receivers that do not listen.
    fn local_addr(&self) -> Option<SocketAddr> {
        None
    }

    /// Runs until `shutdown` turns true, then stops taking new input,
    /// finishes in-flight appends and returns. A dropped `shutdown` sender
    /// counts as shutdown.
    ///
    /// # Errors
    ///
    /// [`ReceiverError::Wal`] once an append fails: the WAL accepts nothing
    /// more, so neither can the receiver. Errors of single connections
    /// (resets, refusals) are logged and counted, never returned.
    ///
    /// # Cancellation
    ///
    /// Dropping the future aborts every task of the receiver and closes its
    /// sockets. An append that was waiting for durability may still become
    /// durable (see [`Wal::append`]); its sender was never told either way.
    fn run(
        self: Box<Self>,
        ingest: StreamIngest,
        shutdown: watch::Receiver<bool>,
    ) -> Pin<Box<dyn Future<Output = Result<(), ReceiverError>> + Send>>;
}

/// What can stop a receiver from starting or running.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReceiverError {
    /// The settings cannot work. Not retryable: fix the config.
    #[error("invalid {receiver} receiver config: {reason}")]
    Config {
        /// The receiver kind, e.g. `tcp_listen`.
        receiver: &'static str,
        reason: String,
    },
    /// A listener could not bind. Retryable: the address may be released.
    #[error("{receiver}: cannot listen on {address}: {source}")]
    Bind {
        receiver: &'static str,
        address: SocketAddr,
        #[source]
        source: io::Error,
    },
    /// An append to the write-ahead log failed. Not retryable by the
    /// receiver: the WAL has to be reopened first.
    #[error("{receiver}: write-ahead log append failed: {source}")]
    Wal {
        /// The receiver, as [`Receiver::describe`] puts it.
        receiver: String,
        #[source]
        source: WalError,
    },
    /// The committed positions (where to resume) could not be read.
    #[error("{receiver}: cannot read the committed source offsets: {message}")]
    Positions {
        /// The receiver, as [`Receiver::describe`] puts it.
        receiver: String,
        /// What failed.
        message: String,
    },
}

impl ReceiverError {
    /// Whether trying the same thing again later can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ReceiverError::Bind { .. } => true,
            ReceiverError::Config { .. }
            | ReceiverError::Wal { .. }
            | ReceiverError::Positions { .. } => false,
        }
    }
}

/// The handle through which receivers feed one stream. Cheap to clone: the
/// clones share the WAL and the counters.
#[derive(Debug, Clone)]
pub struct StreamIngest {
    wal: Wal,
    /// The stream's index: its id in the WAL.
    stream: u32,
    name: Arc<str>,
    max_record_bytes: usize,
    counters: Arc<IngestCounters>,
    backlog: Option<Arc<crate::backlog::Backlog>>,
    /// Where committed positions are read (source offsets).
    positions: Option<Arc<dyn crate::commit::CommitSink>>,
}

impl StreamIngest {
    /// The handle of stream number `stream` (its index in the config),
    /// with counters at zero.
    ///
    /// # Panics
    ///
    /// If `stream` does not fit [`control::STREAM_MASK`]: its records would
    /// read back as control records.
    pub fn new(
        wal: Wal,
        stream: u32,
        name: impl Into<Arc<str>>,
        max_record_bytes: usize,
    ) -> StreamIngest {
        assert!(
            stream <= control::STREAM_MASK,
            "stream index {stream} does not fit a WAL stream id"
        );
        StreamIngest {
            wal,
            stream,
            name: name.into(),
            max_record_bytes,
            counters: Arc::default(),
            backlog: None,
            positions: None,
        }
    }

    /// Lets receivers read the stream's committed source offsets
    /// ([`committed_offsets`](Self::committed_offsets)).
    pub fn with_positions(mut self, positions: Arc<dyn crate::commit::CommitSink>) -> Self {
        self.positions = Some(positions);
        self
    }

    /// Every committed source offset of the stream: `(source, partition,
    /// next offset)`.
    fn committed(&self) -> std::result::Result<Vec<(String, i32, i64)>, String> {
        let Some(positions) = &self.positions else {
            return Ok(Vec::new());
        };
        let family = crate::commit::PositionKind::SourceOffsets {
            stream: self.name.to_string(),
        };
        Ok(positions
            .positions_of(&family)?
            .into_iter()
            .filter_map(|(p, next)| match p {
                crate::commit::Position::SourceOffset {
                    partition, source, ..
                } => Some((source, partition, next as i64)),
                _ => None,
            })
            .collect())
    }

    /// The next offset of each partition of `source` (a Kafka topic) as
    /// committed by the micro-batches: where a pull receiver resumes. The
    /// server replays the log before receivers start, so every durable
    /// record of the stream is committed by then. Empty without committed
    /// offsets (or without [`with_positions`](Self::with_positions)).
    ///
    /// # Errors
    ///
    /// A message naming what failed to read.
    pub fn committed_offsets(
        &self,
        source: &str,
    ) -> std::result::Result<std::collections::BTreeMap<i32, i64>, String> {
        Ok(self
            .committed()?
            .into_iter()
            .filter(|(s, _, _)| s == source)
            .map(|(_, partition, next)| (partition, next))
            .collect())
    }

    /// The committed next offset of every source of the stream whose name
    /// starts with `prefix` (partition 0), with the prefix taken off: where
    /// the files receiver resumes each file.
    ///
    /// # Errors
    ///
    /// A message naming what failed to read.
    pub fn committed_sources(
        &self,
        prefix: &str,
    ) -> std::result::Result<Vec<(String, i64)>, String> {
        Ok(self
            .committed()?
            .into_iter()
            .filter(|(_, partition, _)| *partition == 0)
            .filter_map(|(source, _, next)| {
                source
                    .strip_prefix(prefix)
                    .map(|name| (name.to_owned(), next))
            })
            .collect())
    }

    /// Appends records in [envelopes](crate::envelope) (their source's
    /// metadata with each) as one WAL append and returns once they are
    /// durable. The micro-batch that takes them commits each partition's
    /// next offset.
    ///
    /// # Errors
    ///
    /// As [`Wal::append`]; the records are then not acknowledged.
    pub async fn append_enveloped(
        &self,
        envelopes: &[crate::envelope::Envelope<'_>],
        receive_time_us: i64,
    ) -> Result<Range<u64>, WalError> {
        let mut bytes = Vec::with_capacity(envelopes.iter().map(|e| e.value.len() + 40).sum());
        let mut ends = Vec::with_capacity(envelopes.len());
        for e in envelopes {
            e.encode(&mut bytes);
            ends.push(bytes.len());
        }
        let mut records: Vec<&[u8]> = Vec::with_capacity(ends.len());
        let mut start = 0;
        for &end in &ends {
            records.push(&bytes[start..end]);
            start = end;
        }
        self.wait_for_room().await;
        let appended = self
            .wal
            .append(control::ENVELOPED | self.stream, &records, receive_time_us);
        match appended.await {
            Ok(seqs) => {
                self.appended(bytes.len() as u64);
                let c = &self.counters;
                c.records
                    .fetch_add(envelopes.len() as u64, Ordering::Relaxed);
                c.bytes.fetch_add(
                    envelopes.iter().map(|e| e.value.len() as u64).sum(),
                    Ordering::Relaxed,
                );
                Ok(seqs)
            }
            Err(e) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Makes appends wait while the backlog is over its budget (see
    /// [`crate::backlog`]): the receiver then stops reading, and TCP pushes
    /// back on the producer.
    pub fn with_backlog(mut self, backlog: Arc<crate::backlog::Backlog>) -> Self {
        self.backlog = Some(backlog);
        self
    }

    /// Whether an append now would not wait for the backlog (always, without
    /// a backlog budget): for receivers that answer "later" instead of
    /// waiting (Flume's `FAILED`).
    pub fn has_room(&self) -> bool {
        self.backlog.as_ref().is_none_or(|b| b.has_room())
    }

    /// Counts a request refused because the backlog was full
    /// (`lamina_backlog_waits_total`).
    pub fn note_refused(&self) {
        if let Some(b) = &self.backlog {
            b.note_refused();
        }
    }

    async fn wait_for_room(&self) {
        if let Some(b) = &self.backlog {
            b.wait_for_room().await;
        }
    }

    fn appended(&self, bytes: u64) {
        if let Some(b) = &self.backlog {
            b.note_appended(bytes);
        }
    }

    /// The stream's index (its id in the WAL).
    pub fn stream(&self) -> u32 {
        self.stream
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Longest record accepted, in bytes (the newline not counted).
    pub fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }

    /// The counters of this stream, shared by all its receivers.
    pub fn counters(&self) -> &IngestCounters {
        &self.counters
    }

    /// The same counters, as a handle that outlives this `StreamIngest`
    /// (for `/metrics`).
    pub fn counters_handle(&self) -> Arc<IngestCounters> {
        Arc::clone(&self.counters)
    }

    /// Appends `lines` as one WAL append and returns once they are durable,
    /// with the seqs they got.
    ///
    /// # Errors
    ///
    /// As [`Wal::append`]; the lines are then not acknowledged.
    pub async fn append_lines(
        &self,
        lines: &[&[u8]],
        receive_time_us: i64,
    ) -> Result<Range<u64>, WalError> {
        self.wait_for_room().await;
        // `Wal::append` copies the lines before it returns its future.
        let appended = self.wal.append(self.stream, lines, receive_time_us);
        match appended.await {
            Ok(seqs) => {
                let bytes: usize = lines.iter().map(|l| l.len()).sum();
                self.appended(bytes as u64);
                let c = &self.counters;
                c.records.fetch_add(lines.len() as u64, Ordering::Relaxed);
                c.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
                Ok(seqs)
            }
            Err(e) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Appends `lines` as one keyed append (`key` first, see
    /// [`control::KEYED`]): the key is durable exactly when the lines are,
    /// and the micro-batch that takes them commits it (HTTP ingest's
    /// `Idempotency-Key`). Returns the seqs of the lines.
    ///
    /// # Errors
    ///
    /// As [`Wal::append`]; the lines are then not acknowledged.
    pub async fn append_keyed(
        &self,
        key: &[u8],
        lines: &[&[u8]],
        receive_time_us: i64,
    ) -> Result<Range<u64>, WalError> {
        let mut entry: Vec<&[u8]> = Vec::with_capacity(lines.len() + 1);
        entry.push(key);
        entry.extend_from_slice(lines);
        self.wait_for_room().await;
        let appended = self
            .wal
            .append(control::KEYED | self.stream, &entry, receive_time_us);
        match appended.await {
            Ok(seqs) => {
                let bytes: usize = lines.iter().map(|l| l.len()).sum();
                self.appended(bytes as u64);
                let c = &self.counters;
                c.records.fetch_add(lines.len() as u64, Ordering::Relaxed);
                c.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
                Ok(seqs.start + 1..seqs.end)
            }
            Err(e) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Counts into `counters` instead of counters of its own (HTTP
    /// ingest's per stream, shared by its requests).
    pub fn with_counters(mut self, counters: Arc<IngestCounters>) -> Self {
        self.counters = counters;
        self
    }

    /// Appends a rejected record (`reason` and the first bytes of the
    /// record; see [`control::rejected`]) and returns once it is durable.
    ///
    /// # Errors
    ///
    /// As [`Wal::append`]. The rejection is then lost like any record whose
    /// append failed, and the receiver stops.
    pub async fn reject(
        &self,
        reason: &str,
        record_prefix: &[u8],
        receive_time_us: i64,
    ) -> Result<(), WalError> {
        let (id, payload) = control::rejected(self.stream, reason, record_prefix);
        self.wait_for_room().await;
        let len = payload.len() as u64;
        match self.wal.append(id, &[payload], receive_time_us).await {
            Ok(_) => {
                self.appended(len);
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(stream = %self.name, reason, "rejected a record");
                Ok(())
            }
            Err(e) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Appends one frame of a [`LineFramer`]: its lines, or the rejection of
    /// an oversized line.
    ///
    /// # Errors
    ///
    /// As [`Wal::append`].
    pub async fn append_frame(
        &self,
        frame: Frame<'_>,
        receive_time_us: i64,
    ) -> Result<(), WalError> {
        match frame {
            Frame::Lines(batch) => {
                // One Vec per batch (of up to MAX_BATCH_LINES slices), none
                // per line.
                let lines: Vec<&[u8]> = batch.iter().collect();
                self.append_lines(&lines, receive_time_us).await?;
            }
            Frame::Oversized { prefix, total_len } => {
                let reason = format!(
                    "record of {total_len} bytes exceeds max_record_bytes ({})",
                    self.max_record_bytes
                );
                self.reject(&reason, prefix, receive_time_us).await?;
            }
        }
        Ok(())
    }
}

/// Counters of one stream's receivers, for `/metrics`. Monotonic except
/// `connections_active`.
#[derive(Debug, Default)]
pub struct IngestCounters {
    connections_accepted: AtomicU64,
    connections_active: AtomicU64,
    connections_refused: AtomicU64,
    connections_idle_closed: AtomicU64,
    connections_evicted: AtomicU64,
    records: AtomicU64,
    bytes: AtomicU64,
    rejected: AtomicU64,
    errors: AtomicU64,
    /// Records the source holds that are not read yet (pull receivers).
    lag: AtomicU64,
    /// What a pull receiver is doing (`connecting`, `reading`, `retrying:
    /// <error>`); empty for push receivers.
    status: std::sync::Mutex<String>,
}

/// A copy of [`IngestCounters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestSnapshot {
    /// Connections accepted (listeners) or established (clients).
    pub connections_accepted: u64,
    /// Connections open now.
    pub connections_active: u64,
    /// Connections closed right away because `max_connections` were open
    /// and none of them was idle.
    pub connections_refused: u64,
    /// Connections closed because they sent nothing for the idle timeout.
    pub connections_idle_closed: u64,
    /// Idle connections closed to make room for a new one at
    /// `max_connections`.
    pub connections_evicted: u64,
    /// Records made durable.
    pub records: u64,
    /// Bytes of those records (newlines not counted).
    pub bytes: u64,
    /// Records rejected (made durable as dead letters).
    pub rejected: u64,
    /// Connection errors, failed connects and failed appends.
    pub errors: u64,
    /// Records the source holds beyond what was read (pull receivers; 0
    /// for push receivers, whose senders hold their backlog).
    pub lag: u64,
}

impl IngestCounters {
    /// Counts `records` records of `bytes` payload bytes made durable by a
    /// source that appends to the log itself (HTTP ingest).
    pub fn note_appended(&self, records: u64, bytes: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts a failed append of such a source.
    pub fn note_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The current values. Each is read on its own, so they need not be
    /// from exactly the same instant.
    pub fn snapshot(&self) -> IngestSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        IngestSnapshot {
            connections_accepted: get(&self.connections_accepted),
            connections_active: get(&self.connections_active),
            connections_refused: get(&self.connections_refused),
            connections_idle_closed: get(&self.connections_idle_closed),
            connections_evicted: get(&self.connections_evicted),
            records: get(&self.records),
            bytes: get(&self.bytes),
            rejected: get(&self.rejected),
            errors: get(&self.errors),
            lag: get(&self.lag),
        }
    }

    /// Sets the records the source holds beyond what was read.
    pub fn set_lag(&self, records: u64) {
        self.lag.store(records, Ordering::Relaxed);
    }

    /// Sets what the receiver is doing, for `/v1/streams` and `lamina
    /// status` (one line).
    pub fn set_status(&self, status: impl Into<String>) {
        *self.status.lock().unwrap_or_else(|p| p.into_inner()) = status.into();
    }

    /// What the receiver is doing; empty when it does not say.
    pub fn status(&self) -> String {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    fn refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    fn idle_closed(&self) {
        self.connections_idle_closed.fetch_add(1, Ordering::Relaxed);
    }

    fn evicted(&self) {
        self.connections_evicted.fetch_add(1, Ordering::Relaxed);
    }
}

/// When one connection last did something, and the signal that closes it
/// to make room: shared by its task and the accept loop.
#[derive(Debug)]
struct Activity {
    origin: Instant,
    /// Milliseconds since `origin` of the last read that returned bytes;
    /// `u64::MAX` while an append is in flight (busy, not idle).
    last_ms: AtomicU64,
    evict: tokio::sync::Notify,
}

impl Activity {
    fn new(origin: Instant) -> Activity {
        let activity = Activity {
            origin,
            last_ms: AtomicU64::new(0),
            evict: tokio::sync::Notify::new(),
        };
        activity.touch();
        activity
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX - 1)
    }

    /// Something happened now.
    fn touch(&self) {
        self.last_ms.store(self.now_ms(), Ordering::Relaxed);
    }

    /// An append is in flight: not idle until [`touch`](Self::touch).
    fn busy(&self) {
        self.last_ms.store(u64::MAX, Ordering::Relaxed);
    }

    /// How long nothing happened (zero while busy).
    fn idle_for(&self) -> Duration {
        Duration::from_millis(
            self.now_ms()
                .saturating_sub(self.last_ms.load(Ordering::Relaxed)),
        )
    }

    /// Asks the connection to close (it appends the complete lines it
    /// holds first).
    fn evict(&self) {
        self.evict.notify_one();
    }
}

/// An `AsyncRead` that records in an [`Activity`] when bytes arrive.
#[derive(Debug)]
struct Tracked<R> {
    inner: R,
    activity: Arc<Activity>,
}

impl<R: AsyncRead + Unpin> AsyncRead for Tracked<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, std::task::Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        polled
    }
}

/// What closes a connection that is not used: its idle timeout, or
/// eviction by the accept loop.
#[derive(Debug, Clone, Copy)]
struct IdleWatch<'a> {
    activity: &'a Activity,
    timeout: Duration,
}

impl IdleWatch<'_> {
    /// Resolves when the connection has been idle for the timeout, or is
    /// evicted.
    async fn closing(self) -> PumpEnd {
        let evicted = self.activity.evict.notified();
        tokio::pin!(evicted);
        loop {
            let idle = self.activity.idle_for();
            if idle >= self.timeout {
                return PumpEnd::IdleTimeout;
            }
            tokio::select! {
                () = &mut evicted => return PumpEnd::Evicted,
                () = tokio::time::sleep(self.timeout - idle) => {}
            }
        }
    }
}

/// Counts a connection as active until dropped, however its task ends.
#[derive(Debug)]
struct ActiveConnection(Arc<IngestCounters>);

impl ActiveConnection {
    fn open(counters: &Arc<IngestCounters>) -> ActiveConnection {
        counters
            .connections_accepted
            .fetch_add(1, Ordering::Relaxed);
        counters.connections_active.fetch_add(1, Ordering::Relaxed);
        ActiveConnection(Arc::clone(counters))
    }
}

impl Drop for ActiveConnection {
    fn drop(&mut self) {
        self.0.connections_active.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How reading a connection ended.
#[derive(Debug)]
enum PumpEnd {
    /// The peer closed it.
    Eof,
    /// Shutdown: the complete lines already read were appended.
    Stopped,
    /// Reading failed.
    Failed(io::Error),
    /// Nothing arrived for the idle timeout: the complete lines already
    /// read were appended.
    IdleTimeout,
    /// Closed to make room for a new connection: the complete lines
    /// already read were appended.
    Evicted,
}

impl fmt::Display for PumpEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PumpEnd::Eof => f.write_str("closed by peer"),
            PumpEnd::Stopped => f.write_str("shutting down"),
            PumpEnd::Failed(e) => write!(f, "read failed: {e}"),
            PumpEnd::IdleTimeout => f.write_str("closed after its idle timeout"),
            PumpEnd::Evicted => f.write_str("closed to make room for a new connection"),
        }
    }
}

/// Reads `reader` line batch by line batch and appends each batch, waiting
/// for the append before reading on (that wait is the backpressure), until
/// the peer closes, a read fails, `stop` turns true or — with `idle` — the
/// connection idles out or is evicted. Returns how it ended and how many
/// frames it appended.
///
/// Whatever ends it, no complete line that was read is lost: the lines
/// buffered when it stops are appended before it returns. An unfinished
/// last line (no `\n` yet) is a record only at end of input; when the
/// server ends the connection (shutdown, idle timeout, eviction) it is
/// dropped.
///
/// # Errors
///
/// A failed append.
async fn pump<R: AsyncRead + Unpin>(
    reader: R,
    ingest: &StreamIngest,
    stop: &mut watch::Receiver<bool>,
    idle: Option<IdleWatch<'_>>,
) -> Result<(PumpEnd, u64), WalError> {
    let mut framer = LineFramer::new(reader, ingest.max_record_bytes);
    let mut frames = 0;
    let end = loop {
        // Biased: once stopping, read nothing more even if data is waiting.
        // Data that is waiting is read before an idle close or eviction.
        // Only the read is raced; an append, once started, is awaited.
        let closing = async {
            match idle {
                Some(watch) => watch.closing().await,
                None => std::future::pending().await,
            }
        };
        let next = tokio::select! {
            biased;
            () = stopped(stop) => break PumpEnd::Stopped,
            next = framer.next() => next,
            end = closing => break end,
        };
        match next {
            Ok(Some(frame)) => {
                if let Some(watch) = idle {
                    watch.activity.busy();
                }
                let appended = ingest.append_frame(frame, now_us()).await;
                if let Some(watch) = idle {
                    watch.activity.touch();
                }
                appended?;
                frames += 1;
            }
            Ok(None) => break PumpEnd::Eof,
            Err(e) => break PumpEnd::Failed(e),
        }
    };
    if let PumpEnd::Stopped | PumpEnd::IdleTimeout | PumpEnd::Evicted = end {
        // These bytes left the sender's socket buffer already: append what
        // forms whole lines rather than drop it.
        while let Some(frame) = framer.next_buffered() {
            ingest.append_frame(frame, now_us()).await?;
            frames += 1;
        }
    }
    Ok((end, frames))
}

/// Resolves once `shutdown` is true or its sender is gone (nobody could
/// ever send the signal any more).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|&stop| stop).await;
}

/// Now, in microseconds since the Unix epoch: the receive time of records.
fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
}

/// Lets one log line through per period and counts the ones held back, so
/// a flood of failing connections cannot flood the log. Lock-free: shared
/// by the tasks of a receiver.
#[derive(Debug)]
struct LogLimit {
    origin: Instant,
    period_ms: u64,
    /// Milliseconds since `origin` from which the next line may go out.
    next_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl LogLimit {
    fn new(period: Duration) -> LogLimit {
        LogLimit {
            origin: Instant::now(),
            period_ms: u64::try_from(period.as_millis()).unwrap_or(u64::MAX),
            next_ms: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }

    /// `Some(n)`: log now, and say that `n` were left out since the last
    /// line. `None`: leave this one out.
    fn check(&self) -> Option<u64> {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        let next = self.next_ms.load(Ordering::Relaxed);
        let due = now >= next
            && self
                .next_ms
                .compare_exchange(
                    next,
                    now.saturating_add(self.period_ms),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_ok();
        if due {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[cfg(test)]
mod testkit;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_limit_lets_one_line_through_per_period() {
        let limit = LogLimit::new(Duration::from_secs(3600));
        assert_eq!(limit.check(), Some(0));
        assert_eq!(limit.check(), None);
        assert_eq!(limit.check(), None);
        let limit = LogLimit::new(Duration::ZERO);
        assert_eq!(limit.check(), Some(0));
        assert_eq!(limit.check(), Some(0));
    }

    #[test]
    fn only_bind_errors_are_retryable() {
        let bind = ReceiverError::Bind {
            receiver: "tcp_listen",
            address: "127.0.0.1:1".parse().unwrap(),
            source: io::ErrorKind::AddrInUse.into(),
        };
        assert!(bind.is_retryable());
        let config = ReceiverError::Config {
            receiver: "tcp_connect",
            reason: "x".into(),
        };
        assert!(!config.is_retryable());
        let wal = ReceiverError::Wal {
            receiver: "tcp_listen 127.0.0.1:1".into(),
            source: WalError::Closed,
        };
        assert!(!wal.is_retryable());
    }

    #[tokio::test]
    async fn append_frame_appends_lines_and_rejections_in_order() {
        let (_dir, wal) = testkit::open_wal(1 << 20);
        let ingest = StreamIngest::new(wal.clone(), 3, "lines", 10);
        let input: &[u8] = b"one\r\ntwo\n0123456789abc\n\nthree";
        let mut framer = LineFramer::new(input, ingest.max_record_bytes());
        while let Some(frame) = framer.next().await.unwrap() {
            ingest.append_frame(frame, 42).await.unwrap();
        }
        let got = testkit::read_all(&wal);
        let want: Vec<(control::Kind, Vec<u8>)> = vec![
            (control::Kind::Data(3), b"one\r".to_vec()),
            (control::Kind::Data(3), b"two".to_vec()),
            (
                control::Kind::Rejected(3),
                b"record of 13 bytes exceeds max_record_bytes (10)\x000123456789abc".to_vec(),
            ),
            (control::Kind::Data(3), b"".to_vec()),
            (control::Kind::Data(3), b"three".to_vec()),
        ];
        assert_eq!(got, want);
        let c = ingest.counters().snapshot();
        assert_eq!((c.records, c.bytes, c.rejected, c.errors), (4, 12, 1, 0));
    }

    #[tokio::test]
    async fn a_failed_append_is_counted_and_returned() {
        let (_dir, wal) = testkit::open_wal(1 << 20);
        let ingest = StreamIngest::new(wal.clone(), 0, "lines", 10);
        wal.close().unwrap();
        let err = ingest.append_lines(&[b"x"], 1).await.unwrap_err();
        assert!(matches!(err, WalError::Closed), "{err}");
        assert!(ingest.reject("r", b"y", 1).await.is_err());
        assert_eq!(ingest.counters().snapshot().errors, 2);
    }
}
