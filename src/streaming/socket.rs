//! `socket_text_stream`: a receiver that connects to a TCP server and takes
//! its lines (Spark's `socketTextStream`), for programs that embed the
//! engine as a library.
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

struct Shared {
    addr: String,
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
        SocketTextInput {
            shared: Arc::new(Shared {
                addr: format!("{host}:{port}"),
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
        format!("socket {}", self.shared.addr)
    }

    fn start(&self) -> Result<()> {
        let shared = Arc::clone(&self.shared);
        let handle = std::thread::Builder::new()
            .name("lamina-socket-receiver".into())
            .spawn(move || shared.run())
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
}
