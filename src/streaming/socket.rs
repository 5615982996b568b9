//! `socket_text_stream`: a receiver that connects to a TCP server and takes
//! its lines (Spark's `socketTextStream`), for programs that embed the
//! engine as a library; and `tcp_listen_text_stream`, the same receiver
//! listening for clients (each connection read by its own thread, at most
//! 256 at once).
//!
//! One background thread connects, reads newline-terminated lines (a
//! trailing `\r` is dropped, invalid UTF-8 replaced) and keeps them until
//! the next batch takes them. When the server closes the connection or it
//! fails, the receiver reconnects with a backoff from 100 ms to 2 s, like a
//! restarted Spark receiver. Backpressure: beyond `max_pending_lines` or
//! `max_pending_bytes` not yet taken by a batch, it stops reading, so the
//! sender is slowed down by TCP instead of memory growing. A line longer
//! than `max_line_bytes` is dropped (and counted).
//!
//! Records live in memory only: lines received but not yet processed are
//! lost when the process dies. The server's streams (`lamina serve`) go
//! through its write-ahead log instead.

use std::io::{BufRead, BufReader, ErrorKind};
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::streaming::Time;
use crate::streaming::context::{StreamingContext, split};
use crate::streaming::dstream::DStream;
use crate::streaming::input::{InputBatch, InputStream};

/// Limits of a [`SocketTextInput`].
#[derive(Debug, Clone, Copy)]
pub struct SocketLimits {
    /// Lines received and not yet taken by a batch before reading pauses.
    pub max_pending_lines: usize,
    /// Bytes of such lines before reading pauses.
    pub max_pending_bytes: usize,
    /// Longest line kept; longer ones are dropped and counted.
    pub max_line_bytes: usize,
}

impl Default for SocketLimits {
    fn default() -> Self {
        SocketLimits {
            max_pending_lines: 2_000_000,
            max_pending_bytes: 256 << 20,
            max_line_bytes: 1 << 20,
        }
    }
}

/// Counters of a [`SocketTextInput`].
#[derive(Debug, Default)]
pub struct SocketStats {
    /// Lines received.
    pub lines: AtomicU64,
    /// Lines dropped for being longer than `max_line_bytes`.
    pub dropped_long_lines: AtomicU64,
    /// Connections made.
    pub connections: AtomicU64,
    /// Failed connection attempts and broken connections.
    pub connection_errors: AtomicU64,
}

#[derive(Default)]
struct Pending {
    lines: Vec<String>,
    bytes: usize,
}

/// Whether the receiver connects to a server or is the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Connect,
    Listen,
}

/// Most connections a listening receiver serves at once; more are closed
/// at once (and counted as connection errors).
const MAX_LISTEN_CONNECTIONS: usize = 256;

struct Shared {
    addr: String,
    mode: Mode,
    limits: SocketLimits,
    pending: Mutex<Pending>,
    taken: Condvar,
    stop: AtomicBool,
    stats: SocketStats,
}

/// The receiver behind [`StreamingContext::socket_text_stream`].
pub struct SocketTextInput {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Readers of a listening receiver's connections.
    readers: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl std::fmt::Debug for SocketTextInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SocketTextInput")
            .field("addr", &self.shared.addr)
            .finish_non_exhaustive()
    }
}

impl SocketTextInput {
    /// A receiver of the lines of the TCP server at `host:port`.
    pub fn new(host: &str, port: u16, limits: SocketLimits) -> Self {
        SocketTextInput::with_mode(format!("{host}:{port}"), Mode::Connect, limits)
    }

    /// A receiver that listens on `addr` (e.g. `127.0.0.1:9999`) and takes
    /// the lines of every client that connects (up to 256 at once).
    pub fn listen(addr: &str, limits: SocketLimits) -> Self {
        SocketTextInput::with_mode(addr.to_owned(), Mode::Listen, limits)
    }

    fn with_mode(addr: String, mode: Mode, limits: SocketLimits) -> Self {
        SocketTextInput {
            readers: Arc::default(),
            shared: Arc::new(Shared {
                addr,
                mode,
                limits,
                pending: Mutex::new(Pending::default()),
                taken: Condvar::new(),
                stop: AtomicBool::new(false),
                stats: SocketStats::default(),
            }),
            thread: Mutex::new(None),
        }
    }

    /// The receiver's counters.
    pub fn stats(&self) -> &SocketStats {
        &self.shared.stats
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(&self) {
        let mut backoff = Duration::from_millis(100);
        let mut reported = false;
        while !self.stop.load(Ordering::Acquire) {
            match self.connect() {
                Ok(stream) => {
                    self.stats.connections.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(addr = %self.addr, "socket text stream connected");
                    backoff = Duration::from_millis(100);
                    reported = false;
                    match self.read_lines(stream) {
                        Ok(()) => {
                            tracing::info!(addr = %self.addr, "the server closed the connection; reconnecting")
                        }
                        Err(e) => {
                            self.stats.connection_errors.fetch_add(1, Ordering::Relaxed);
                            tracing::warn!(addr = %self.addr, "connection failed: {e}; reconnecting");
                        }
                    }
                }
                Err(e) => {
                    self.stats.connection_errors.fetch_add(1, Ordering::Relaxed);
                    if !reported {
                        tracing::warn!(addr = %self.addr, "cannot connect: {e}; retrying every {:?} at most", Duration::from_secs(2));
                        reported = true;
                    }
                }
            }
            self.sleep(backoff);
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }

    /// Accepts clients until a stop; each gets a reader thread.
    fn accept_loop(
        self: &Arc<Self>,
        listener: &std::net::TcpListener,
        readers: &Mutex<Vec<JoinHandle<()>>>,
    ) {
        while !self.stop.load(Ordering::Acquire) {
            match listener.accept() {
                Ok((stream, peer)) => {
                    let mut live = readers.lock().unwrap_or_else(|p| p.into_inner());
                    live.retain(|r| !r.is_finished());
                    if live.len() >= MAX_LISTEN_CONNECTIONS {
                        self.stats.connection_errors.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(addr = %self.addr, %peer, "refused a connection: {MAX_LISTEN_CONNECTIONS} are open");
                        continue;
                    }
                    self.stats.connections.fetch_add(1, Ordering::Relaxed);
                    let shared = Arc::clone(self);
                    let reader = std::thread::Builder::new()
                        .name("lamina-socket-reader".into())
                        .spawn(move || {
                            let _ = stream.set_nonblocking(false);
                            if let Err(e) = shared.read_lines(stream) {
                                shared.stats.connection_errors.fetch_add(1, Ordering::Relaxed);
                                tracing::warn!(addr = %shared.addr, %peer, "connection failed: {e}");
                            }
                        });
                    match reader {
                        Ok(r) => live.push(r),
                        Err(e) => tracing::warn!("cannot start a reader thread: {e}"),
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    self.stats.connection_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(addr = %self.addr, "accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    }

    fn sleep(&self, d: Duration) {
        let step = Duration::from_millis(50);
        let mut left = d;
        while !left.is_zero() && !self.stop.load(Ordering::Acquire) {
            std::thread::sleep(left.min(step));
            left = left.saturating_sub(step);
        }
    }

    fn connect(&self) -> std::io::Result<TcpStream> {
        let mut last = None;
        for addr in self.addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&addr, Duration::from_secs(2)) {
                Ok(s) => return Ok(s),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| std::io::Error::new(ErrorKind::NotFound, "no address")))
    }

    /// Reads lines until EOF, an error or a stop.
    fn read_lines(&self, stream: TcpStream) -> std::io::Result<()> {
        // A short timeout lets the thread notice a stop while idle.
        stream.set_read_timeout(Some(Duration::from_millis(100)))?;
        let mut reader = BufReader::with_capacity(256 << 10, stream);
        let mut line = Vec::new();
        let mut too_long = false;
        let max = self.limits.max_line_bytes;
        loop {
            if self.stop.load(Ordering::Acquire) {
                return Ok(());
            }
            self.wait_for_room();
            let buf = match reader.fill_buf() {
                Ok([]) => {
                    // The server closed the connection: a last line without
                    // a newline is still a line.
                    if !line.is_empty() && !too_long {
                        if line.last() == Some(&b'\r') {
                            line.pop();
                        }
                        self.stats.lines.fetch_add(1, Ordering::Relaxed);
                        let text = String::from_utf8_lossy(&line).into_owned();
                        let mut p = self.lock();
                        p.bytes += text.len();
                        p.lines.push(text);
                    }
                    return Ok(());
                }
                Ok(buf) => buf,
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(e) => return Err(e),
            };
            // Take every whole line in the buffer under one lock.
            let mut got: Vec<String> = Vec::new();
            let mut used = 0;
            let mut rest = buf;
            while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
                let (head, tail) = rest.split_at(nl);
                if !too_long && line.len() + head.len() <= max {
                    line.extend_from_slice(head);
                    if line.last() == Some(&b'\r') {
                        line.pop();
                    }
                    got.push(String::from_utf8_lossy(&line).into_owned());
                } else {
                    self.stats
                        .dropped_long_lines
                        .fetch_add(1, Ordering::Relaxed);
                }
                line.clear();
                too_long = false;
                used += nl + 1;
                rest = &tail[1..];
            }
            // An unfinished line waits for the next read.
            if !too_long {
                if line.len() + rest.len() <= max {
                    line.extend_from_slice(rest);
                } else {
                    too_long = true;
                    line.clear();
                }
            }
            used += rest.len();
            reader.consume(used);
            if !got.is_empty() {
                self.stats
                    .lines
                    .fetch_add(got.len() as u64, Ordering::Relaxed);
                let bytes: usize = got.iter().map(String::len).sum();
                let mut p = self.lock();
                p.bytes += bytes;
                if p.lines.is_empty() {
                    p.lines = got;
                } else {
                    p.lines.append(&mut got);
                }
            }
        }
    }

    /// Blocks while the pending lines are over the limits (backpressure).
    fn wait_for_room(&self) {
        let mut p = self.lock();
        while (p.lines.len() >= self.limits.max_pending_lines
            || p.bytes >= self.limits.max_pending_bytes)
            && !self.stop.load(Ordering::Acquire)
        {
            p = self
                .taken
                .wait_timeout(p, Duration::from_millis(100))
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl InputStream<String> for SocketTextInput {
    fn name(&self) -> String {
        match self.shared.mode {
            Mode::Connect => format!("socket {}", self.shared.addr),
            Mode::Listen => format!("listener {}", self.shared.addr),
        }
    }

    fn start(&self) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        let handle = match self.shared.mode {
            Mode::Connect => std::thread::Builder::new()
                .name("lamina-socket-receiver".into())
                .spawn(move || shared.run()),
            Mode::Listen => {
                // Bound here, so that a taken port stops the start.
                let listener = std::net::TcpListener::bind(&self.shared.addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(|e| {
                        Error::execution(format!("cannot listen on {}: {e}", self.shared.addr))
                    })?;
                let readers = Arc::clone(&self.readers);
                std::thread::Builder::new()
                    .name("lamina-socket-listener".into())
                    .spawn(move || shared.accept_loop(&listener, &readers))
            }
        }
        .map_err(|e| Error::Internal(format!("cannot start the receiver thread: {e}")))?;
        *self.thread.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(())
    }

    fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.taken.notify_all();
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
        let readers = std::mem::take(&mut *self.readers.lock().unwrap_or_else(|p| p.into_inner()));
        for r in readers {
            let _ = r.join();
        }
    }

    fn next_batch(&self, ctx: &Context, _: Time) -> Result<InputBatch<String>> {
        let lines = {
            let mut p = self.shared.lock();
            p.bytes = 0;
            std::mem::take(&mut p.lines)
        };
        self.shared.taken.notify_all();
        Ok(InputBatch::from_blocks(
            ctx,
            split(lines, ctx.default_parallelism()),
        ))
    }
}

impl StreamingContext {
    /// The lines sent by every client that connects to `addr` (this process
    /// listens, like the server's `tcp_listen` receiver), with the default
    /// limits; see [`SocketTextInput::listen`]. The port is bound when the
    /// context starts (a taken port is a start error).
    pub fn tcp_listen_text_stream(&self, addr: &str) -> (DStream<String>, Arc<SocketTextInput>) {
        let input = Arc::new(SocketTextInput::listen(addr, SocketLimits::default()));
        let stream = self.input_stream(Arc::clone(&input) as Arc<dyn InputStream<String>>);
        (stream, input)
    }

    /// The lines a TCP server at `host:port` sends, with the default limits
    /// (see [`socket_text_stream_with`](Self::socket_text_stream_with)).
    pub fn socket_text_stream(&self, host: &str, port: u16) -> DStream<String> {
        self.socket_text_stream_with(host, port, SocketLimits::default())
            .0
    }

    /// The lines a TCP server at `host:port` sends, and the receiver (for its
    /// counters). The receiver connects when the context starts; see the
    /// module documentation for reconnection, backpressure and limits.
    pub fn socket_text_stream_with(
        &self,
        host: &str,
        port: u16,
        limits: SocketLimits,
    ) -> (DStream<String>, Arc<SocketTextInput>) {
        let input = Arc::new(SocketTextInput::new(host, port, limits));
        let stream = self.input_stream(Arc::clone(&input) as Arc<dyn InputStream<String>>);
        (stream, input)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;
    use std::time::Instant;

    fn lines_until(input: &SocketTextInput, ctx: &Context, n: usize) -> Vec<String> {
        let mut got = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while got.len() < n && Instant::now() < deadline {
            let batch = input.next_batch(ctx, Time::now()).unwrap();
            got.extend(batch.rdd.collect().unwrap());
            std::thread::sleep(Duration::from_millis(20));
        }
        got
    }

    #[test]
    fn lines_crlf_a_last_line_without_newline_and_long_lines() {
        let ctx = Context::builder().threads(2).build().unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let limits = SocketLimits {
            max_line_bytes: 8,
            ..SocketLimits::default()
        };
        let input = SocketTextInput::new("127.0.0.1", port, limits);
        input.start().unwrap();
        let (mut conn, _) = listener.accept().unwrap();
        conn.write_all(b"a b\r\nmuch too long a line\nok\nlast")
            .unwrap();
        drop(conn);
        let got = lines_until(&input, &ctx, 3);
        assert_eq!(got, vec!["a b", "ok", "last"]);
        assert_eq!(input.stats().dropped_long_lines.load(Ordering::Relaxed), 1);
        // It reconnects after the server closed the connection.
        let (mut again, _) = listener.accept().unwrap();
        again.write_all(b"again\n").unwrap();
        assert_eq!(lines_until(&input, &ctx, 1), vec!["again"]);
        input.stop();
        assert!(input.stats().connections.load(Ordering::Relaxed) >= 2);
    }

    #[test]
    fn a_listening_receiver_takes_the_lines_of_every_client() {
        let ctx = Context::builder().threads(2).build().unwrap();
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let input = SocketTextInput::listen(&format!("127.0.0.1:{port}"), SocketLimits::default());
        input.start().unwrap();
        let clients: Vec<_> = (0..3)
            .map(|c| {
                std::thread::spawn(move || {
                    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                    for i in 0..100 {
                        writeln!(s, "c{c} l{i}").unwrap();
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        let mut got = lines_until(&input, &ctx, 300);
        got.sort();
        let mut want: Vec<String> = (0..3)
            .flat_map(|c| (0..100).map(move |i| format!("c{c} l{i}")))
            .collect();
        want.sort();
        assert_eq!(got, want);
        // A taken port is an error at start.
        let taken = SocketTextInput::listen(&format!("127.0.0.1:{port}"), SocketLimits::default());
        let err = taken.start().unwrap_err();
        assert!(err.to_string().contains("cannot listen on"), "{err}");
        input.stop();
        assert_eq!(input.stats().connections.load(Ordering::Relaxed), 3);
    }
}
