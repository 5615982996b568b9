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
//! - `ingest.rs`: [`StreamIngest`], the handle every receiver appends
//!   through (lines, keyed, enveloped, rejected), and its
//!   [`IngestCounters`].
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
mod ingest;
mod kafka;
mod lines;
mod tcp_connect;
mod tcp_listen;

use std::{
    fmt, io,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tokio::{io::AsyncRead, sync::watch};

use crate::wal::WalError;

pub use channel::{ChannelReceiver, ChannelSender, StoreError, channel};
pub use config::{BuildReceiver, ConfigVisitor, Problem, ReceiverConfig};
pub use files::{FilesConfig, FilesReceiver};
pub use flume_avro::{FlumeAvroConfig, FlumeAvroReceiver};
pub use ingest::{IngestCounters, IngestSnapshot, StreamIngest};
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
    let mut framer = LineFramer::new(reader, ingest.max_record_bytes());
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
    use crate::control;

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
