//! `tcp_listen`: a TCP listener taking many connections of
//! newline-delimited records (the default receiver, on `127.0.0.1:9999`).
//!
//! Each connection is read by its own task, owned by the receiver's
//! `JoinSet`. A task appends each batch of lines and waits for it to be
//! durable before it reads on, so a slow disk fills the socket buffers and
//! TCP slows the sender down: nothing is buffered without bound, nothing is
//! dropped. There is no acknowledgement on the wire: a sender knows its
//! lines are durable once the receiver closed the connection after its own
//! close (it read EOF only after appending everything before it).
//!
//! # Idle connections and the connection limit
//!
//! Idle connections must not lock producers out. Two rules, both in
//! favour of a producer that sends rarely but keeps its connection:
//!
//! - A connection that sends nothing for `idle_timeout` (default 5
//!   minutes) is closed (counted in `connections_idle_closed`). Long, so
//!   that a producer sending every minute or so keeps its connection.
//! - At `max_connections` open connections, a new connection takes the
//!   place of the longest-idle one, if that one has been idle for at least
//!   [`EVICT_MIN_IDLE`] (counted in `connections_evicted`): a new producer
//!   is never refused while idle connections hold the slots. Only when
//!   every connection sent something within that second is the new one
//!   accepted and closed at once (counted in `connections_refused`) rather
//!   than left in the kernel's backlog, where its sender could not tell it
//!   is not served.
//!
//! A connection closed for idleness or evicted loses no line it sent: its
//! complete lines are appended before it closes (each batch is appended
//! before the next read anyway). An unfinished last line — bytes with no
//! `\n` after them — is dropped, as on shutdown: only the producer closing
//! its side makes an unfinished line a record. Refusals, idle closes and
//! evictions are logged, at most one line per second for each.

use std::{
    collections::HashMap,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::{JoinError, JoinSet},
};

use super::{
    ActiveConnection, Activity, IdleWatch, LogLimit, PumpEnd, Receiver, ReceiverError, Result,
    StreamIngest, Tracked, pump, stopped,
};
use crate::wal::WalError;

const KIND: &str = "tcp_listen";
/// Pause after a failed `accept` (out of file descriptors, say), so the
/// loop does not spin while the cause lasts.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// At most one log line per this period for each kind of failure.
const LOG_PERIOD: Duration = Duration::from_secs(1);
/// Default idle timeout: 5 minutes.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// A connection idle at least this long (or its idle timeout, if shorter)
/// may be closed to make room for a new one at `max_connections`.
pub const EVICT_MIN_IDLE: Duration = Duration::from_secs(1);

/// The open connections and their activity, by connection number; an
/// evicted connection leaves it at once, before its task ends.
type Registry = Arc<Mutex<HashMap<u64, Arc<Activity>>>>;

/// Removes a connection from the registry however its task ends.
struct Registered {
    registry: Registry,
    id: u64,
}

impl Drop for Registered {
    fn drop(&mut self) {
        lock(&self.registry).remove(&self.id);
    }
}

fn lock(registry: &Registry) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Activity>>> {
    registry.lock().unwrap_or_else(|p| p.into_inner())
}

/// A bound TCP listener; see the module docs.
#[derive(Debug)]
pub struct TcpListenReceiver {
    listener: TcpListener,
    local_addr: SocketAddr,
    max_connections: usize,
    idle_timeout: Duration,
    /// [`EVICT_MIN_IDLE`]; tests change it.
    evict_min_idle: Duration,
}

impl TcpListenReceiver {
    /// Binds `listen` (port 0: any free port, see
    /// [`local_addr`](Self::local_addr)).
    ///
    /// # Errors
    ///
    /// [`ReceiverError::Config`] if `max_connections` is 0,
    /// [`ReceiverError::Bind`] naming the address if it cannot be bound.
    pub async fn bind(listen: SocketAddr, max_connections: usize) -> Result<TcpListenReceiver> {
        if max_connections == 0 {
            return Err(ReceiverError::Config {
                receiver: KIND,
                reason: format!("`max_connections` of {listen} must be > 0"),
            });
        }
        let bind_error = |source| ReceiverError::Bind {
            receiver: KIND,
            address: listen,
            source,
        };
        let listener = TcpListener::bind(listen).await.map_err(bind_error)?;
        let local_addr = listener.local_addr().map_err(bind_error)?;
        Ok(TcpListenReceiver {
            listener,
            local_addr,
            max_connections,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            evict_min_idle: EVICT_MIN_IDLE,
        })
    }

    /// Closes connections that send nothing for `idle_timeout` (default
    /// [`DEFAULT_IDLE_TIMEOUT`]).
    ///
    /// # Errors
    ///
    /// [`ReceiverError::Config`] if `idle_timeout` is zero.
    pub fn with_idle_timeout(mut self, idle_timeout: Duration) -> Result<TcpListenReceiver> {
        if idle_timeout.is_zero() {
            return Err(ReceiverError::Config {
                receiver: KIND,
                reason: format!("`idle_timeout_ms` of {} must be > 0", self.local_addr),
            });
        }
        self.idle_timeout = idle_timeout;
        Ok(self)
    }

    #[cfg(test)]
    fn with_evict_min_idle(mut self, min_idle: Duration) -> TcpListenReceiver {
        self.evict_min_idle = min_idle;
        self
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    async fn serve(self, ingest: StreamIngest, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let name = self.describe();
        tracing::info!(receiver = %name, stream = ingest.name(), "listening");
        // Tells the connection tasks to stop, on shutdown and on failure.
        let (stop, stop_rx) = watch::channel(false);
        let mut connections = JoinSet::new();
        let refusals = LogLimit::new(LOG_PERIOD);
        let evictions = LogLimit::new(LOG_PERIOD);
        let accept_errors = LogLimit::new(LOG_PERIOD);
        let logs = Arc::new(ConnectionLogs {
            read_errors: LogLimit::new(LOG_PERIOD),
            idle_closes: LogLimit::new(LOG_PERIOD),
        });
        let registry: Registry = Arc::default();
        let origin = Instant::now();
        let evict_after = self.evict_min_idle.min(self.idle_timeout);
        let mut next_id = 0u64;
        let mut failure = None;

        'accept: loop {
            tokio::select! {
                biased;
                () = stopped(&mut shutdown) => break,
                Some(joined) = connections.join_next() => {
                    failure = ended(&name, joined);
                    if failure.is_some() {
                        break;
                    }
                }
                accepted = self.listener.accept() => match accepted {
                    Ok((socket, peer)) => {
                        // Reap the connections that ended, so that `len`
                        // counts open ones.
                        while let Some(joined) = connections.try_join_next() {
                            failure = ended(&name, joined);
                            if failure.is_some() {
                                break 'accept;
                            }
                        }
                        let activity = Arc::new(Activity::new(origin));
                        {
                            let mut open = lock(&registry);
                            if open.len() >= self.max_connections {
                                match evict_longest_idle(&mut open, evict_after) {
                                    Some(idle) => {
                                        ingest.counters.evicted();
                                        if let Some(suppressed) = evictions.check() {
                                            tracing::warn!(
                                                receiver = %name, %peer, suppressed,
                                                idle_ms = idle.as_millis() as u64,
                                                "{} connections are open: closing the longest-idle one to serve a new one",
                                                self.max_connections
                                            );
                                        }
                                    }
                                    None => {
                                        drop(open);
                                        ingest.counters.refused();
                                        drop(socket);
                                        if let Some(suppressed) = refusals.check() {
                                            tracing::warn!(
                                                receiver = %name, %peer, suppressed,
                                                "refused a connection: {} connections are open and none has been idle for {evict_after:?}",
                                                self.max_connections
                                            );
                                        }
                                        continue;
                                    }
                                }
                            }
                            open.insert(next_id, Arc::clone(&activity));
                        }
                        let registered = Registered {
                            registry: Arc::clone(&registry),
                            id: next_id,
                        };
                        next_id += 1;
                        let active = ActiveConnection::open(&ingest.counters);
                        connections.spawn(connection(
                            Tracked {
                                inner: socket,
                                activity: Arc::clone(&activity),
                            },
                            peer,
                            ingest.clone(),
                            stop_rx.clone(),
                            (active, registered),
                            IdleSettings {
                                activity,
                                timeout: self.idle_timeout,
                            },
                            Arc::clone(&logs),
                        ));
                    }
                    Err(e) => {
                        ingest.counters.error();
                        if let Some(suppressed) = accept_errors.check() {
                            tracing::warn!(receiver = %name, error = %e, suppressed, "accept failed");
                        }
                        tokio::select! {
                            biased;
                            () = stopped(&mut shutdown) => break 'accept,
                            () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
                        }
                    }
                },
            }
        }

        // Stop accepting: from here the kernel refuses new connections.
        drop(self.listener);
        // Receivers of `stop_rx` only ever wait for `true`, so a send that
        // finds none left is fine.
        let _ = stop.send(true);
        while let Some(joined) = connections.join_next().await {
            let failed = ended(&name, joined);
            failure = failure.or(failed);
        }
        tracing::info!(receiver = %name, "stopped");
        match failure {
            Some(source) => Err(ReceiverError::Wal {
                receiver: name,
                source,
            }),
            None => Ok(()),
        }
    }
}

impl Receiver for TcpListenReceiver {
    fn describe(&self) -> String {
        format!("{KIND} {}", self.local_addr)
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        Some(self.local_addr)
    }

    fn run(
        self: Box<Self>,
        ingest: StreamIngest,
        shutdown: watch::Receiver<bool>,
    ) -> Pin<Box<dyn Future<Output = Result<(), ReceiverError>> + Send>> {
        Box::pin(self.serve(ingest, shutdown))
    }
}

/// Rate limits of the log lines connection tasks write.
#[derive(Debug)]
struct ConnectionLogs {
    read_errors: LogLimit,
    idle_closes: LogLimit,
}

/// A connection's idle timeout and activity.
#[derive(Debug)]
struct IdleSettings {
    activity: Arc<Activity>,
    timeout: Duration,
}

/// Among `open`, the connection idle longest, if idle at least `min_idle`:
/// removed from `open` and told to close. Returns how long it was idle.
fn evict_longest_idle(
    open: &mut HashMap<u64, Arc<Activity>>,
    min_idle: Duration,
) -> Option<Duration> {
    let (&id, idle) = open
        .iter()
        .map(|(id, a)| (id, a.idle_for()))
        .max_by_key(|&(_, idle)| idle)?;
    if idle < min_idle {
        return None;
    }
    if let Some(activity) = open.remove(&id) {
        activity.evict();
    }
    Some(idle)
}

/// Reads one connection until its peer closes it, it fails, it idles out,
/// it is evicted or `stop`.
///
/// # Errors
///
/// A failed append, which stops the whole receiver.
async fn connection(
    socket: Tracked<TcpStream>,
    peer: SocketAddr,
    ingest: StreamIngest,
    mut stop: watch::Receiver<bool>,
    _open: (ActiveConnection, Registered),
    idle: IdleSettings,
    logs: Arc<ConnectionLogs>,
) -> Result<(), WalError> {
    let watch = IdleWatch {
        activity: &idle.activity,
        timeout: idle.timeout,
    };
    let (end, frames) = pump(socket, &ingest, &mut stop, Some(watch)).await?;
    match &end {
        PumpEnd::Failed(e) => {
            // One connection's trouble: it ends, the others go on.
            ingest.counters.error();
            if let Some(suppressed) = logs.read_errors.check() {
                tracing::warn!(stream = ingest.name(), %peer, error = %e, suppressed, "connection failed");
            }
        }
        PumpEnd::IdleTimeout => {
            ingest.counters.idle_closed();
            if let Some(suppressed) = logs.idle_closes.check() {
                tracing::info!(
                    stream = ingest.name(), %peer, suppressed,
                    "closed a connection that sent nothing for {:?}", idle.timeout
                );
            }
        }
        // Counted and logged by the accept loop.
        PumpEnd::Evicted | PumpEnd::Eof | PumpEnd::Stopped => {
            tracing::debug!(stream = ingest.name(), %peer, frames, "connection {end}");
        }
    }
    Ok(())
}

/// What an ended connection task means for the receiver: the WAL error that
/// stops it, if any.
fn ended(receiver: &str, joined: Result<Result<(), WalError>, JoinError>) -> Option<WalError> {
    match joined {
        Ok(Ok(())) => None,
        Ok(Err(e)) => {
            tracing::error!(receiver, error = %e, "append failed; stopping the receiver");
            Some(e)
        }
        // A bug in the connection task; the other connections go on.
        Err(e) if e.is_panic() => {
            tracing::error!(receiver, error = %e, "a connection task panicked");
            None
        }
        // Aborted: only when the receiver itself is dropped.
        Err(_) => None,
    }
}

/// `type = "tcp_listen"` in `[[stream.receiver]]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TcpListenConfig {
    /// Address to listen on, `IP:PORT`. Required.
    pub listen: String,
    /// Connections served at once. Default 1024; 1..=65536. At the limit a
    /// new connection takes the place of the longest-idle one (idle for at
    /// least a second); only when none is idle is it refused (closed at
    /// once, counted in `lamina_receiver_connections_refused_total`).
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A connection that sends nothing for this long is closed, in
    /// milliseconds. Default 300000 (5 minutes: a producer sending every
    /// minute or so keeps its connection); 1..=86400000. Complete lines
    /// are never lost by the close; an unfinished last line (no newline
    /// yet) is dropped, as on shutdown.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
}

fn default_max_connections() -> usize {
    1024
}

fn default_idle_timeout_ms() -> u64 {
    300_000
}

impl super::config::BuildReceiver for TcpListenConfig {
    fn validate(&self) -> Vec<super::config::Problem> {
        use super::config::Problem;
        let mut problems = Vec::new();
        problems.extend(Problem::socket_addr(
            "listen",
            &self.listen,
            "127.0.0.1:8080",
        ));
        problems.extend(Problem::range(
            "max_connections",
            self.max_connections,
            1..=65_536,
        ));
        problems.extend(Problem::range(
            "idle_timeout_ms",
            self.idle_timeout_ms,
            1..=86_400_000,
        ));
        problems
    }

    fn build(&self) -> super::config::Building<'_> {
        Box::pin(async move {
            let listen: SocketAddr = self.listen.parse().map_err(|e| ReceiverError::Config {
                receiver: "tcp_listen",
                reason: format!("listen `{}`: {e}", self.listen),
            })?;
            let receiver = TcpListenReceiver::bind(listen, self.max_connections)
                .await?
                .with_idle_timeout(Duration::from_millis(self.idle_timeout_ms))?;
            Ok(Box::new(receiver) as Box<dyn super::Receiver>)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        task::JoinHandle,
    };

    use super::{super::testkit, *};
    use crate::control::{self, Kind};

    const LIMIT: Duration = Duration::from_secs(5);

    struct Running {
        addr: SocketAddr,
        ingest: StreamIngest,
        shutdown: watch::Sender<bool>,
        task: JoinHandle<Result<()>>,
    }

    async fn start(
        wal: &crate::wal::Wal,
        max_connections: usize,
        max_record_bytes: usize,
    ) -> Running {
        // Nothing is evicted unless a test says so.
        let idle = Duration::from_secs(3600);
        start_with_idle(wal, max_connections, max_record_bytes, idle, idle).await
    }

    async fn start_with_idle(
        wal: &crate::wal::Wal,
        max_connections: usize,
        max_record_bytes: usize,
        idle_timeout: Duration,
        evict_min_idle: Duration,
    ) -> Running {
        let receiver = TcpListenReceiver::bind("127.0.0.1:0".parse().unwrap(), max_connections)
            .await
            .unwrap()
            .with_idle_timeout(idle_timeout)
            .unwrap()
            .with_evict_min_idle(evict_min_idle);
        let addr = receiver.local_addr();
        let ingest = StreamIngest::new(wal.clone(), 0, "lines", max_record_bytes);
        let (shutdown, rx) = watch::channel(false);
        let task = tokio::spawn(Box::new(receiver).run(ingest.clone(), rx));
        Running {
            addr,
            ingest,
            shutdown,
            task,
        }
    }

    impl Running {
        async fn stop(self) -> Result<()> {
            self.shutdown.send(true).unwrap();
            tokio::time::timeout(LIMIT, self.task)
                .await
                .expect("receiver stops")
                .unwrap()
        }
    }

    /// Sends `data`, closes the sending side and waits for the receiver to
    /// close the connection: by then every line is durable.
    async fn send(addr: SocketAddr, data: &[u8]) {
        let mut socket = TcpStream::connect(addr).await.unwrap();
        socket.write_all(data).await.unwrap();
        socket.shutdown().await.unwrap();
        let mut rest = Vec::new();
        let n = tokio::time::timeout(LIMIT, socket.read_to_end(&mut rest))
            .await
            .expect("receiver closes the connection")
            .unwrap();
        assert_eq!(n, 0);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_over_max_connections_is_refused_and_counted() {
        let (_dir, wal) = testkit::open_wal(1 << 20);
        let running = start(&wal, 2, 1000).await;
        let ingest = running.ingest.clone();
        let counters = || ingest.counters().snapshot();
        let mut open = Vec::new();
        for i in 0..2 {
            let mut s = TcpStream::connect(running.addr).await.unwrap();
            s.write_all(format!("open {i}\n").as_bytes()).await.unwrap();
            open.push(s);
        }
        testkit::wait_until("2 connections active", LIMIT, || {
            counters().connections_active == 2
        })
        .await;

        let mut extra = TcpStream::connect(running.addr).await.unwrap();
        let mut buf = [0; 16];
        // Closed by the receiver: EOF, or a reset if it raced our write.
        let read = tokio::time::timeout(LIMIT, extra.read(&mut buf))
            .await
            .expect("the extra connection is closed");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
        testkit::wait_until("refusal counted", LIMIT, || {
            counters().connections_refused == 1
        })
        .await;

        // The two open connections are still served.
        for (i, mut s) in open.into_iter().enumerate() {
            s.write_all(format!("more {i}\n").as_bytes()).await.unwrap();
            s.shutdown().await.unwrap();
            let mut rest = Vec::new();
            s.read_to_end(&mut rest).await.unwrap();
        }
        running.stop().await.unwrap();
        let got = testkit::sorted_payloads(&wal);
        assert_eq!(got, [&b"more 0"[..], b"more 1", b"open 0", b"open 1"]);
        let c = counters();
        assert_eq!(
            (c.connections_accepted, c.connections_active),
            (2, 0),
            "{c:?}"
        );
    }

    /// Reads until the receiver closes `socket` (EOF or reset), at most
    /// `LIMIT`; returns how long that took.
    async fn closed_by_receiver(socket: &mut TcpStream) -> Duration {
        let started = Instant::now();
        let mut buf = [0; 64];
        let read = tokio::time::timeout(LIMIT, socket.read(&mut buf))
            .await
            .expect("the receiver closes the connection");
        assert!(matches!(read, Ok(0) | Err(_)), "the receiver never writes");
        started.elapsed()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn idle_connections_make_room_for_a_new_producer() {
        let (_dir, wal) = testkit::open_wal(1 << 20);
        let hour = Duration::from_secs(3600);
        let running = start_with_idle(&wal, 3, 1000, hour, Duration::from_millis(200)).await;
        let ingest = running.ingest.clone();
        let counters = || ingest.counters().snapshot();
        let mut idle = Vec::new();
        for i in 0..3 {
            let mut s = TcpStream::connect(running.addr).await.unwrap();
            // A complete line, and for the first (longest idle) connection
            // an unfinished one.
            let data = if i == 0 {
                "idle 0\nunfinished".to_string()
            } else {
                format!("idle {i}\n")
            };
            s.write_all(data.as_bytes()).await.unwrap();
            testkit::wait_until("line appended", LIMIT, || counters().records == i + 1).await;
            idle.push(s);
        }
        tokio::time::sleep(Duration::from_millis(300)).await;

        // A new producer: served at once, its lines durable.
        send(running.addr, b"new 0\nnew 1\n").await;
        let c = counters();
        assert_eq!(
            (c.connections_evicted, c.connections_refused, c.records),
            (1, 0, 5),
            "{c:?}"
        );
        // The longest-idle connection made room; the others stay open.
        closed_by_receiver(&mut idle[0]).await;
        for s in &mut idle[1..] {
            s.write_all(b"still open\n").await.unwrap();
        }
        testkit::wait_until("the others still served", LIMIT, || counters().records == 7).await;
        running.stop().await.unwrap();
        let got = testkit::sorted_payloads(&wal);
        assert_eq!(
            got,
            [
                &b"idle 0"[..],
                b"idle 1",
                b"idle 2",
                b"new 0",
                b"new 1",
                b"still open",
                b"still open"
            ],
            "complete lines kept, the unfinished one dropped"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idle_connection_is_closed_after_its_timeout_and_activity_keeps_one_open() {
        let (_dir, wal) = testkit::open_wal(1 << 20);
        let timeout = Duration::from_millis(600);
        let running = start_with_idle(&wal, 4, 1000, timeout, timeout).await;
        let ingest = running.ingest.clone();
        let counters = || ingest.counters().snapshot();

        let mut quiet = TcpStream::connect(running.addr).await.unwrap();
        quiet.write_all(b"quiet\n").await.unwrap();
        let sent = Instant::now();
        // A producer that trickles one line, a byte every 50 ms, for longer
        // than the timeout: never idle that long, never closed.
        let mut chatty = TcpStream::connect(running.addr).await.unwrap();
        for byte in b"chatty line\n" {
            chatty.write_all(&[*byte]).await.unwrap();
            tokio::time::sleep(Duration::from_millis(70)).await;
        }
        closed_by_receiver(&mut quiet).await;
        let idle = sent.elapsed();
        assert!(
            idle >= timeout - Duration::from_millis(50) && idle < LIMIT,
            "closed after {idle:?}"
        );
        testkit::wait_until("idle close counted", LIMIT, || {
            counters().connections_idle_closed == 1
        })
        .await;
        chatty.write_all(b"more\n").await.unwrap();
        chatty.shutdown().await.unwrap();
        closed_by_receiver(&mut chatty).await;
        running.stop().await.unwrap();
        let got = testkit::sorted_payloads(&wal);
        assert_eq!(got, [&b"chatty line"[..], b"more", b"quiet"]);
        let c = counters();
        assert_eq!(
            (
                c.connections_idle_closed,
                c.connections_evicted,
                c.connections_refused
            ),
            (1, 0, 0),
            "{c:?}"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_oversized_line_is_rejected_once_and_nothing_around_it_is_lost() {
        let (_dir, wal) = testkit::open_wal(1 << 20);
        let running = start(&wal, 4, 1000).await;
        let mut data = Vec::new();
        for i in 0..100 {
            data.extend_from_slice(format!("before {i}\n").as_bytes());
        }
        data.extend(std::iter::repeat_n(b'x', 5000));
        data.push(b'\n');
        for i in 0..100 {
            data.extend_from_slice(format!("after {i}\n").as_bytes());
        }
        send(running.addr, &data).await;
        let c = running.ingest.counters().snapshot();
        running.stop().await.unwrap();

        let got = testkit::read_all(&wal);
        let rejected: Vec<usize> = (0..got.len())
            .filter(|&i| got[i].0 == Kind::Rejected(0))
            .collect();
        assert_eq!(rejected, [100], "exactly one rejection, in place");
        let (reason, prefix) = control::split_rejected(&got[100].1);
        assert_eq!(
            reason,
            "record of 5000 bytes exceeds max_record_bytes (1000)"
        );
        assert_eq!(prefix, &[b'x'; control::REJECTED_PREFIX_BYTES][..]);
        let data_lines: Vec<Vec<u8>> = got
            .iter()
            .filter(|(k, _)| *k == Kind::Data(0))
            .map(|(_, p)| p.clone())
            .collect();
        let want: Vec<Vec<u8>> = (0..100)
            .map(|i| format!("before {i}").into_bytes())
            .chain((0..100).map(|i| format!("after {i}").into_bytes()))
            .collect();
        assert_eq!(data_lines, want);
        assert_eq!((c.records, c.rejected, c.errors), (200, 1, 0));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_reset_connection_ends_alone() {
        let (_dir, wal) = testkit::open_wal(1 << 20);
        let running = start(&wal, 4, 1000).await;
        let ingest = running.ingest.clone();
        let counters = || ingest.counters().snapshot();
        let mut doomed = TcpStream::connect(running.addr).await.unwrap();
        let mut other = TcpStream::connect(running.addr).await.unwrap();
        doomed.write_all(b"doomed\n").await.unwrap();
        other.write_all(b"other 1\n").await.unwrap();
        testkit::wait_until("2 lines", LIMIT, || counters().records == 2).await;

        // Closing with a zero linger sends a reset instead of a FIN.
        doomed.set_zero_linger().unwrap();
        drop(doomed);
        testkit::wait_until("reset counted", LIMIT, || {
            counters().errors == 1 && counters().connections_active == 1
        })
        .await;
        other.write_all(b"other 2\n").await.unwrap();
        other.shutdown().await.unwrap();
        let mut rest = Vec::new();
        other.read_to_end(&mut rest).await.unwrap();
        running.stop().await.unwrap();

        let got = testkit::sorted_payloads(&wal);
        assert_eq!(got, [&b"doomed"[..], b"other 1", b"other 2"]);
        assert_eq!(counters().errors, 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn shutdown_returns_within_a_second_with_connections_open() {
        let (_dir, wal) = testkit::open_wal(1 << 20);
        let running = start(&wal, 16, 1000).await;
        let mut open = Vec::new();
        for i in 0..8 {
            let mut s = TcpStream::connect(running.addr).await.unwrap();
            // A complete line and an unfinished one.
            s.write_all(format!("line {i}\nunfinished").as_bytes())
                .await
                .unwrap();
            open.push(s);
        }
        let ingest = running.ingest.clone();
        testkit::wait_until("lines appended", LIMIT, || {
            ingest.counters().snapshot().records == 8
        })
        .await;
        let addr = running.addr;
        let started = Instant::now();
        running.stop().await.unwrap();
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "{:?}",
            started.elapsed()
        );
        for mut s in open {
            let mut rest = Vec::new();
            let read = tokio::time::timeout(LIMIT, s.read_to_end(&mut rest)).await;
            assert!(matches!(read, Ok(Ok(0) | Err(_))), "closed: {read:?}");
        }
        assert!(TcpStream::connect(addr).await.is_err(), "not listening");
        assert_eq!(ingest.counters().snapshot().connections_active, 0);
        assert_eq!(testkit::read_all(&wal).len(), 8, "unfinished lines dropped");
    }

    #[tokio::test]
    async fn binding_a_busy_address_is_an_error_naming_it() {
        let first = TcpListenReceiver::bind("127.0.0.1:0".parse().unwrap(), 1)
            .await
            .unwrap();
        let addr = first.local_addr();
        let err = TcpListenReceiver::bind(addr, 1).await.unwrap_err();
        assert!(matches!(err, ReceiverError::Bind { .. }), "{err:?}");
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
        assert!(err.is_retryable());
        let err = TcpListenReceiver::bind(addr, 0).await.unwrap_err();
        assert!(matches!(err, ReceiverError::Config { .. }), "{err:?}");
        let other = TcpListenReceiver::bind("127.0.0.1:0".parse().unwrap(), 1)
            .await
            .unwrap();
        let err = other.with_idle_timeout(Duration::ZERO).unwrap_err();
        assert!(err.to_string().contains("idle_timeout_ms"), "{err}");
        assert_eq!(first.describe(), format!("tcp_listen {addr}"));
    }
}
