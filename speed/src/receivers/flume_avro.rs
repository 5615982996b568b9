//! `flume_avro`: Flume's Avro RPC source protocol — what Flume's AvroSink
//! and `NettyAvroRpcClient` speak — so Flume agents and applications using
//! the Flume client SDK can send events to Lamina unchanged.
//!
//! # The wire
//!
//! Avro RPC over Avro's Netty framing: each message is an `i32` serial, an
//! `i32` buffer count, then per buffer an `i32` length and its bytes (big
//! endian). A request's buffers are joined before decoding (Java splits at
//! 8 KiB and between handshake and parameters). The reply echoes the
//! serial, in one buffer.
//!
//! The first request of a connection starts with an Avro handshake
//! (`HandshakeRequest`: client hash, optional client protocol, server hash,
//! meta). This server's protocol is Flume's `AvroSourceProtocol`; it answers
//! `BOTH` when the client named this server's hash and its own protocol is
//! known (by hash, or sent along), `CLIENT` when the client is known but
//! expected another server hash, `NONE` otherwise — then only the handshake
//! response is sent, and the client repeats the request with its protocol.
//! Unless `BOTH`, the response carries this server's protocol and hash.
//! Later requests on the connection carry no handshake.
//!
//! Then the call: metadata (`map<bytes>`), the message name, and the
//! parameters: `append(AvroFlumeEvent)` or `appendBatch(array<AvroFlumeEvent>)`
//! (an event is `{headers: map<string>, body: bytes}`); an empty name is a
//! ping. The response is metadata, an error flag, and the `Status`
//! (`OK`, `FAILED`, `UNKNOWN`).
//!
//! # Guarantees
//!
//! `OK` is sent only once the events are durable in the write-ahead log (one
//! append per request); each event becomes one record of the stream, in
//! an [envelope](crate::envelope) with its headers (the `_headers` column),
//! its body parsed by the stream's format. When the backlog is over its
//! budget the answer is `FAILED` at once and nothing is stored — Flume's
//! sink keeps the batch in its channel and sends it again — so a slow
//! server never holds an agent's request until it times out. A body over
//! `max_record_bytes` becomes a dead letter (the batch is still `OK`).
//!
//! Flume's protocol has no request ids: an agent whose `OK` was lost (the
//! connection dropped, the server was killed after the append) sends the
//! batch again, and it is then stored twice — Flume's own at-least-once
//! delivery. Lamina adds no duplicates of its own.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;

use super::{LogLimit, Receiver, ReceiverError, Result, StreamIngest, now_us, stopped};
use crate::envelope::Envelope;

const KIND: &str = "flume_avro";

/// The MD5 of Flume's `AvroSourceProtocol` as Java's Avro renders it: the
/// hash Flume's clients send as the server's. This server answers to it.
pub const PROTOCOL_HASH: [u8; 16] = [
    0x86, 0xaa, 0xda, 0xe2, 0xc4, 0x54, 0x74, 0xc0, 0xfe, 0x93, 0xff, 0xd0, 0xf2, 0x35, 0x0a, 0x65,
];

/// This server's protocol, sent to clients that do not know it.
pub const PROTOCOL: &str = r#"{"protocol":"AvroSourceProtocol","namespace":"org.apache.flume.source.avro","types":[{"type":"enum","name":"Status","symbols":["OK","FAILED","UNKNOWN"]},{"type":"record","name":"AvroFlumeEvent","fields":[{"name":"headers","type":{"type":"map","values":"string"}},{"name":"body","type":"bytes"}]}],"messages":{"append":{"request":[{"name":"event","type":"AvroFlumeEvent"}],"response":"Status"},"appendBatch":{"request":[{"name":"events","type":{"type":"array","items":"AvroFlumeEvent"}}],"response":"Status"}}}"#;

/// Most buffers in one message.
const MAX_BUFFERS: usize = 1 << 16;
/// At most one warning per this period.
const LOG_PERIOD: Duration = Duration::from_secs(1);

/// The reply's `Status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Stored durably.
    Ok,
    /// Not stored; send again later.
    Failed,
}

/// One decoded event, borrowing the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event<'a> {
    /// Its headers, in the request's order.
    pub headers: Vec<(&'a str, &'a [u8])>,
    /// Its body.
    pub body: &'a [u8],
}

/// Avro binary decoding of a request (see the Avro specification:
/// zig-zag varint longs, length-prefixed bytes and strings, blocked maps
/// and arrays, unions as a branch index).
struct Avro<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Avro<'a> {
    fn long(&mut self) -> std::result::Result<i64, String> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = *self
                .bytes
                .get(self.at)
                .ok_or("request ends inside a number")?;
            self.at += 1;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err("a number longer than 10 bytes".into())
    }

    fn take(&mut self, n: usize) -> std::result::Result<&'a [u8], String> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| format!("request ends inside a value of {n} bytes"))?;
        let s = &self.bytes[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn bytes(&mut self) -> std::result::Result<&'a [u8], String> {
        let n = self.long()?;
        let n = usize::try_from(n).map_err(|_| format!("negative length {n}"))?;
        self.take(n)
    }

    fn string(&mut self) -> std::result::Result<&'a str, String> {
        std::str::from_utf8(self.bytes()?).map_err(|_| "a string that is not UTF-8".into())
    }

    /// A block count: negative counts are followed by the block's size.
    fn block(&mut self) -> std::result::Result<usize, String> {
        let n = self.long()?;
        if n < 0 {
            self.long()?;
        }
        usize::try_from(n.unsigned_abs()).map_err(|_| "block count out of range".into())
    }

    fn union(&mut self, branches: i64) -> std::result::Result<i64, String> {
        let i = self.long()?;
        if (0..branches).contains(&i) {
            Ok(i)
        } else {
            Err(format!("union branch {i} of {branches}"))
        }
    }

    /// A map whose values are read by `value`; returns the entries.
    fn map<T>(
        &mut self,
        mut value: impl FnMut(&mut Self) -> std::result::Result<T, String>,
    ) -> std::result::Result<Vec<(&'a str, T)>, String> {
        let mut entries = Vec::new();
        loop {
            let n = self.block()?;
            if n == 0 {
                return Ok(entries);
            }
            for _ in 0..n {
                let k = self.string()?;
                entries.push((k, value(self)?));
            }
        }
    }

    fn event(&mut self) -> std::result::Result<Event<'a>, String> {
        let headers = self.map(|r| r.bytes())?;
        let body = self.bytes()?;
        Ok(Event { headers, body })
    }
}

fn put_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    loop {
        if z < 0x80 {
            out.push(z as u8);
            return;
        }
        out.push((z as u8 & 0x7f) | 0x80);
        z >>= 7;
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_long(out, b.len() as i64);
    out.extend_from_slice(b);
}

/// The handshake's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Match {
    Both,
    Client,
    None,
}

/// One connection's protocol state: whether the handshake is done.
#[derive(Debug, Default)]
pub struct Session {
    /// The client hash of the connection's successful handshake.
    handshaken: Option<[u8; 16]>,
}

/// What the server remembers across connections: the client protocols it
/// was sent, by hash.
#[derive(Debug, Default)]
pub struct Known {
    clients: Mutex<HashSet<[u8; 16]>>,
}

/// A decoded request: the handshake's reply (if it had one), and the call.
#[derive(Debug)]
pub enum Call<'a> {
    /// The handshake failed (`NONE`): send `reply` alone.
    HandshakeOnly,
    /// A ping.
    Ping,
    /// Events to store.
    Events(Vec<Event<'a>>),
    /// A message this protocol does not have.
    Unknown(String),
}

impl Session {
    /// Decodes a request (its buffers joined), appending the handshake
    /// response to `reply` when the request had a handshake.
    ///
    /// # Errors
    ///
    /// A reason when the bytes are not a request of this protocol; the
    /// connection is then closed.
    pub fn decode<'a>(
        &mut self,
        request: &'a [u8],
        known: &Known,
        reply: &mut Vec<u8>,
    ) -> std::result::Result<Call<'a>, String> {
        let mut r = Avro {
            bytes: request,
            at: 0,
        };
        // Java's Netty client sends the handshake once per connection;
        // stateless clients (Avro's Python `Requestor`) send it with every
        // request. A request of a handshaken connection that starts with its
        // client hash is such a handshake (a call starts with its metadata
        // map, in practice the byte 0).
        let repeated = self
            .handshaken
            .is_some_and(|h| request.len() >= 16 && request[..16] == h);
        if self.handshaken.is_none() || repeated {
            let client_hash: [u8; 16] = r.take(16)?.try_into().expect("16 bytes");
            let client_protocol = match r.union(2)? {
                0 => None,
                _ => Some(r.string()?),
            };
            let server_hash = r.take(16)?;
            if r.union(2)? == 1 {
                r.map(|r| r.bytes())?;
            }
            let mut clients = known.clients.lock().unwrap_or_else(|p| p.into_inner());
            if client_protocol.is_some() {
                clients.insert(client_hash);
            }
            let client_known = client_hash == PROTOCOL_HASH || clients.contains(&client_hash);
            drop(clients);
            let m = match (server_hash == PROTOCOL_HASH, client_known) {
                (true, true) => Match::Both,
                (false, true) => Match::Client,
                (_, false) => Match::None,
            };
            // HandshakeResponse: match, serverProtocol, serverHash, meta.
            match m {
                Match::Both => reply.extend_from_slice(&[0, 0, 0, 0]),
                Match::Client | Match::None => {
                    put_long(reply, if m == Match::Client { 1 } else { 2 });
                    put_long(reply, 1);
                    put_bytes(reply, PROTOCOL.as_bytes());
                    put_long(reply, 1);
                    reply.extend_from_slice(&PROTOCOL_HASH);
                    put_long(reply, 0);
                }
            }
            if m == Match::None {
                return Ok(Call::HandshakeOnly);
            }
            self.handshaken = Some(client_hash);
        }
        r.map(|r| r.bytes())?;
        let call = match r.string()? {
            "" => Call::Ping,
            "append" => Call::Events(vec![r.event()?]),
            "appendBatch" => {
                let mut events = Vec::new();
                loop {
                    let n = r.block()?;
                    if n == 0 {
                        break;
                    }
                    for _ in 0..n {
                        events.push(r.event()?);
                    }
                }
                Call::Events(events)
            }
            other => Call::Unknown(other.to_owned()),
        };
        Ok(call)
    }
}

/// Appends a call response: empty metadata, then the status — or, for an
/// error, the flag and the message (Avro's system error union,
/// `["string"]`).
pub fn put_response(reply: &mut Vec<u8>, outcome: std::result::Result<Status, &str>) {
    put_long(reply, 0);
    match outcome {
        Ok(status) => {
            reply.push(0);
            put_long(reply, if status == Status::Ok { 0 } else { 1 });
        }
        Err(message) => {
            reply.push(1);
            put_long(reply, 0);
            put_bytes(reply, message.as_bytes());
        }
    }
}

/// An event as a client sends it: its headers and its body.
pub type ClientEvent<'a> = (&'a [(&'a str, &'a str)], &'a [u8]);

/// A client's `appendBatch` request (unframed): with the handshake of a
/// client that knows this protocol (`BOTH`) when `handshake`, then the
/// call. For load generators and tests; see [`frame`].
pub fn append_batch_request(handshake: bool, events: &[ClientEvent<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    if handshake {
        out.extend_from_slice(&PROTOCOL_HASH);
        put_long(&mut out, 0);
        out.extend_from_slice(&PROTOCOL_HASH);
        // meta: an empty map, as Java sends it (not null).
        put_long(&mut out, 1);
        put_long(&mut out, 0);
    }
    put_long(&mut out, 0);
    put_bytes(&mut out, b"appendBatch");
    if !events.is_empty() {
        put_long(&mut out, events.len() as i64);
        for (headers, body) in events {
            if !headers.is_empty() {
                put_long(&mut out, headers.len() as i64);
                for (k, v) in *headers {
                    put_bytes(&mut out, k.as_bytes());
                    put_bytes(&mut out, v.as_bytes());
                }
            }
            put_long(&mut out, 0);
            put_bytes(&mut out, body);
        }
    }
    put_long(&mut out, 0);
    out
}

/// Frames a message as Avro's Netty transport does: serial, one buffer.
pub fn frame(serial: i32, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 12);
    out.extend_from_slice(&serial.to_be_bytes());
    out.extend_from_slice(&1u32.to_be_bytes());
    out.extend_from_slice(&(body.len() as u32).to_be_bytes());
    out.extend_from_slice(body);
    out
}

/// Reads one framed message: its serial and its buffers joined. `None` at
/// a clean end of stream (between messages).
async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    max_bytes: usize,
    into: &mut Vec<u8>,
) -> std::io::Result<Option<i32>> {
    into.clear();
    let mut head = [0u8; 8];
    match r.read_exact(&mut head[..4]).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    r.read_exact(&mut head[4..]).await?;
    let serial = i32::from_be_bytes(head[..4].try_into().expect("4 bytes"));
    let count = u32::from_be_bytes(head[4..].try_into().expect("4 bytes")) as usize;
    let invalid = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
    if count > MAX_BUFFERS {
        return Err(invalid(format!(
            "a message of {count} buffers (at most {MAX_BUFFERS})"
        )));
    }
    for _ in 0..count {
        let mut len = [0u8; 4];
        r.read_exact(&mut len).await?;
        let len = u32::from_be_bytes(len) as usize;
        if into.len() + len > max_bytes {
            return Err(invalid(format!(
                "a message of more than {max_bytes} bytes (max_message_bytes)"
            )));
        }
        let start = into.len();
        into.resize(start + len, 0);
        r.read_exact(&mut into[start..]).await?;
    }
    Ok(Some(serial))
}

async fn write_message<W: AsyncWrite + Unpin>(
    w: &mut W,
    serial: i32,
    body: &[u8],
) -> std::io::Result<()> {
    w.write_all(&frame(serial, body)).await?;
    w.flush().await
}

/// Serves one connection until it closes, fails, idles out or the server
/// stops. `Err` only for a failed append (the receiver stops).
pub async fn serve_connection<S: AsyncRead + AsyncWrite + Unpin>(
    socket: S,
    ingest: &StreamIngest,
    known: &Known,
    max_message_bytes: usize,
    idle: Duration,
    shutdown: &mut watch::Receiver<bool>,
) -> std::result::Result<(), crate::wal::WalError> {
    let (mut rd, mut wr) = tokio::io::split(socket);
    let mut session = Session::default();
    let mut request = Vec::new();
    let max_record = ingest.max_record_bytes();
    loop {
        let read = tokio::select! {
            biased;
            () = stopped(shutdown) => return Ok(()),
            r = tokio::time::timeout(idle, read_message(&mut rd, max_message_bytes, &mut request)) => r,
        };
        let serial = match read {
            Ok(Ok(Some(serial))) => serial,
            Ok(Ok(None)) | Err(_) => return Ok(()),
            Ok(Err(e)) => {
                ingest.counters().error();
                tracing::debug!(stream = ingest.name(), "flume connection: {e}");
                return Ok(());
            }
        };
        let mut reply = Vec::new();
        let call = match session.decode(&request, known, &mut reply) {
            Ok(call) => call,
            Err(e) => {
                ingest.counters().error();
                tracing::warn!(
                    stream = ingest.name(),
                    "not a Flume Avro request: {e}; closing the connection"
                );
                return Ok(());
            }
        };
        match call {
            Call::HandshakeOnly => {}
            Call::Ping => put_long(&mut reply, 0),
            Call::Unknown(name) => put_response(
                &mut reply,
                Err(&format!(
                    "no message named {name:?} (this is Flume's AvroSourceProtocol: append, appendBatch)"
                )),
            ),
            Call::Events(events) => {
                let status = if !ingest.has_room() {
                    ingest.note_refused();
                    Status::Failed
                } else {
                    let too_long: Vec<Option<String>> = events
                        .iter()
                        .map(|e| {
                            (e.body.len() > max_record).then(|| {
                                format!(
                                    "event body of {} bytes exceeds max_record_bytes ({max_record})",
                                    e.body.len()
                                )
                            })
                        })
                        .collect();
                    let envelopes: Vec<Envelope<'_>> = events
                        .iter()
                        .zip(&too_long)
                        .map(|(e, reason)| Envelope {
                            headers: e.headers.iter().map(|(k, v)| (*k, *v)).collect(),
                            rejected: reason.as_deref(),
                            value: match reason {
                                Some(_) => {
                                    &e.body
                                        [..crate::control::REJECTED_PREFIX_BYTES.min(e.body.len())]
                                }
                                None => e.body,
                            },
                            ..Envelope::default()
                        })
                        .collect();
                    ingest.append_enveloped(&envelopes, now_us()).await?;
                    Status::Ok
                };
                put_response(&mut reply, Ok(status));
            }
        }
        if write_message(&mut wr, serial, &reply).await.is_err() {
            // The client is gone; what was stored stays stored.
            return Ok(());
        }
    }
}

/// A Flume Avro RPC listener; see the module docs.
#[derive(Debug)]
pub struct FlumeAvroReceiver {
    listener: TcpListener,
    addr: SocketAddr,
    max_connections: usize,
    max_message_bytes: usize,
    idle: Duration,
}

impl FlumeAvroReceiver {
    async fn serve(self, ingest: StreamIngest, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let name = self.describe();
        let known = Arc::new(Known::default());
        let permits = Arc::new(Semaphore::new(self.max_connections));
        let refusals = LogLimit::new(LOG_PERIOD);
        let mut connections: JoinSet<std::result::Result<(), crate::wal::WalError>> =
            JoinSet::new();
        loop {
            tokio::select! {
                biased;
                () = stopped(&mut shutdown) => break,
                Some(joined) = connections.join_next(), if !connections.is_empty() => {
                    if let Ok(Err(source)) = joined {
                        return Err(ReceiverError::Wal { receiver: name, source });
                    }
                }
                accepted = self.listener.accept() => {
                    let Ok((socket, _peer)) = accepted else {
                        ingest.counters().error();
                        continue;
                    };
                    let Ok(permit) = Arc::clone(&permits).try_acquire_owned() else {
                        ingest.counters().refused();
                        if let Some(suppressed) = refusals.check() {
                            tracing::warn!(receiver = %name, suppressed, "refused a connection: max_connections ({}) are open", self.max_connections);
                        }
                        continue;
                    };
                    let _ = socket.set_nodelay(true);
                    let (ingest, known, mut shutdown) = (ingest.clone(), Arc::clone(&known), shutdown.clone());
                    let (max, idle) = (self.max_message_bytes, self.idle);
                    connections.spawn(async move {
                        let _permit = permit;
                        let _active = super::ActiveConnection::open(&ingest.counters);
                        serve_connection(socket, &ingest, &known, max, idle, &mut shutdown).await
                    });
                }
            }
        }
        // Requests in flight finish their append and reply.
        while let Some(joined) = connections.join_next().await {
            if let Ok(Err(source)) = joined {
                return Err(ReceiverError::Wal {
                    receiver: name,
                    source,
                });
            }
        }
        Ok(())
    }
}

impl Receiver for FlumeAvroReceiver {
    fn describe(&self) -> String {
        format!("{KIND} {}", self.addr)
    }

    fn local_addr(&self) -> Option<SocketAddr> {
        Some(self.addr)
    }

    fn run(
        self: Box<Self>,
        ingest: StreamIngest,
        shutdown: watch::Receiver<bool>,
    ) -> Pin<Box<dyn Future<Output = Result<(), ReceiverError>> + Send>> {
        Box::pin(self.serve(ingest, shutdown))
    }
}

/// `type = "flume_avro"` in `[[stream.receiver]]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FlumeAvroConfig {
    /// Address to listen on, `IP:PORT` (what the Flume AvroSink's
    /// `hostname`/`port` point at). Required.
    pub listen: String,
    /// Connections served at once; more are refused (closed). Default 1024;
    /// 1..=65536.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Largest request (an `appendBatch`), in bytes. Default 67108864 (64
    /// MiB); 1024..=1073741824. A larger one closes the connection.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// A connection that sends nothing for this long is closed, in seconds.
    /// Default 300; 1..=86400.
    #[serde(default = "default_idle_timeout_secs")]
    pub idle_timeout_secs: u64,
}

fn default_max_connections() -> usize {
    1024
}

fn default_max_message_bytes() -> usize {
    64 << 20
}

fn default_idle_timeout_secs() -> u64 {
    300
}

impl super::config::BuildReceiver for FlumeAvroConfig {
    fn validate(&self) -> Vec<super::config::Problem> {
        use super::config::Problem;
        let mut problems = Vec::new();
        problems.extend(Problem::socket_addr(
            "listen",
            &self.listen,
            "127.0.0.1:41414",
        ));
        problems.extend(Problem::range(
            "max_connections",
            self.max_connections,
            1..=65_536,
        ));
        problems.extend(Problem::range(
            "max_message_bytes",
            self.max_message_bytes,
            1024..=1 << 30,
        ));
        problems.extend(Problem::range(
            "idle_timeout_secs",
            self.idle_timeout_secs,
            1..=86_400,
        ));
        problems
    }

    fn build(&self) -> super::config::Building<'_> {
        Box::pin(async move {
            let listen: SocketAddr = self.listen.parse().map_err(|e| ReceiverError::Config {
                receiver: KIND,
                reason: format!("listen `{}`: {e}", self.listen),
            })?;
            let listener =
                TcpListener::bind(listen)
                    .await
                    .map_err(|source| ReceiverError::Bind {
                        receiver: KIND,
                        address: listen,
                        source,
                    })?;
            let addr = listener.local_addr().unwrap_or(listen);
            Ok(Box::new(FlumeAvroReceiver {
                listener,
                addr,
                max_connections: self.max_connections,
                max_message_bytes: self.max_message_bytes,
                idle: Duration::from_secs(self.idle_timeout_secs),
            }) as Box<dyn super::Receiver>)
        })
    }

    fn has_source_columns(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// The request and reply vectors of ../shared/FACTS.md (encoded by the
    /// Python `avro` package, Java's two-buffer layout).
    const APPEND_BATCH: &str = "00000001000000020000003086aadae2c45474c0fe93ffd0f2350a650086aadae2c45474c0fe93ffd0f2350a6502000016617070656e64426174636800000019040208686f7374046831000a68656c6c6f000a776f726c6400";
    const REPLY_BOTH_OK: &str = "00000001000000010000000700000000000000";
    const APPEND_NO_HANDSHAKE: &str =
        "000000020000000200000008000c617070656e64000000100208686f7374046831000a68656c6c6f";

    fn temp_wal(name: &str) -> (crate::wal::Wal, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("lamina-flume-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (wal, _) = crate::wal::Wal::open(crate::wal::WalConfig::new(dir.join("wal"))).unwrap();
        (wal, dir)
    }

    #[tokio::test]
    async fn the_byte_exact_vectors_are_answered_and_stored() {
        let (wal, dir) = temp_wal("vectors");
        let ingest = StreamIngest::new(wal.clone(), 3, "flume", 1 << 20);
        let known = Known::default();
        let (client, server) = tokio::io::duplex(1 << 16);
        let (_tx, mut shutdown) = watch::channel(false);
        let serving = tokio::spawn(async move {
            serve_connection(
                server,
                &ingest,
                &known,
                1 << 20,
                Duration::from_secs(10),
                &mut shutdown,
            )
            .await
        });
        let (mut rd, mut wr) = tokio::io::split(client);
        wr.write_all(&hex(APPEND_BATCH)).await.unwrap();
        let mut reply = vec![0u8; REPLY_BOTH_OK.len() / 2];
        rd.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply, hex(REPLY_BOTH_OK));
        // Same connection, no handshake.
        wr.write_all(&hex(APPEND_NO_HANDSHAKE)).await.unwrap();
        let mut reply = vec![0u8; 12 + 3];
        rd.read_exact(&mut reply).await.unwrap();
        assert_eq!(reply, hex("000000020000000100000003000000"));
        drop((rd, wr));
        serving.await.unwrap().unwrap();

        // Three events durable, in envelopes with their headers.
        let mut got = Vec::new();
        wal.read_range(0..wal.durable_seq(), |_, stream, _, payload| {
            let e = Envelope::decode(payload).unwrap();
            let headers: Vec<(String, Vec<u8>)> = e
                .headers
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
                .collect();
            got.push((stream, headers, e.value.to_vec()));
        })
        .unwrap();
        let host = vec![("host".to_owned(), b"h1".to_vec())];
        let id = crate::control::ENVELOPED | 3;
        assert_eq!(
            got,
            [
                (id, host.clone(), b"hello".to_vec()),
                (id, vec![], b"world".to_vec()),
                (id, host, b"hello".to_vec()),
            ]
        );
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn an_unknown_client_gets_none_then_both_once_it_sends_its_protocol() {
        let known = Known::default();
        let mut s = Session::default();
        let other_hash = [7u8; 16];
        // Unknown client hash, no protocol, another server hash: NONE, with
        // this server's protocol and hash; nothing else.
        let mut req = other_hash.to_vec();
        req.push(0);
        req.extend_from_slice(&[9u8; 16]);
        req.push(0);
        let mut reply = Vec::new();
        assert!(matches!(
            s.decode(&req, &known, &mut reply).unwrap(),
            Call::HandshakeOnly
        ));
        let mut expected = vec![4, 2];
        put_bytes(&mut expected, PROTOCOL.as_bytes());
        expected.push(2);
        expected.extend_from_slice(&PROTOCOL_HASH);
        expected.push(0);
        assert_eq!(reply, expected);
        // It resends with its protocol and this server's hash: BOTH, then
        // the call (a ping).
        let mut req = other_hash.to_vec();
        req.push(2);
        put_bytes(&mut req, b"{\"protocol\":\"AvroSourceProtocol\"}");
        req.extend_from_slice(&PROTOCOL_HASH);
        req.push(0);
        req.push(0);
        put_bytes(&mut req, b"");
        let mut reply = Vec::new();
        assert!(matches!(
            s.decode(&req, &known, &mut reply).unwrap(),
            Call::Ping
        ));
        assert_eq!(reply, [0, 0, 0, 0]);
        // A new connection of the same client is known by its hash; with an
        // old server hash it gets CLIENT and the server's protocol.
        let mut s2 = Session::default();
        let mut req = other_hash.to_vec();
        req.push(0);
        req.extend_from_slice(&[9u8; 16]);
        req.push(0);
        req.push(0);
        put_bytes(&mut req, b"append");
        req.push(0);
        put_bytes(&mut req, b"xy");
        let mut reply = Vec::new();
        match s2.decode(&req, &known, &mut reply).unwrap() {
            Call::Events(events) => assert_eq!(events[0].body, b"xy"),
            other => panic!("{other:?}"),
        }
        assert_eq!(reply[0], 2, "CLIENT");
    }

    #[test]
    fn the_load_generator_encodes_the_vector_byte_for_byte() {
        let events: [ClientEvent<'_>; 2] = [(&[("host", "h1")], b"hello"), (&[], b"world")];
        let body = append_batch_request(true, &events);
        // The vector has Java's two buffers; the same bytes in one.
        let vector = hex(APPEND_BATCH);
        let joined: Vec<u8> = [&vector[12..12 + 48], &vector[12 + 48 + 4..]].concat();
        assert_eq!(body, joined);
        assert_eq!(&frame(1, &body)[..8], &hex("0000000100000001")[..]);
    }

    #[test]
    fn garbage_is_an_error_never_a_panic() {
        let known = Known::default();
        for len in 0..64 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let _ = Session::default().decode(&bytes, &known, &mut Vec::new());
            let _ = Session {
                handshaken: Some(PROTOCOL_HASH),
            }
            .decode(&bytes, &known, &mut Vec::new());
        }
        // A huge declared length.
        let mut s = Session {
            handshaken: Some(PROTOCOL_HASH),
        };
        let mut req = vec![0];
        put_bytes(&mut req, b"appendBatch");
        put_long(&mut req, 1);
        put_long(&mut req, 0);
        put_long(&mut req, i64::MAX);
        assert!(s.decode(&req, &known, &mut Vec::new()).is_err());
    }

    #[test]
    fn longs_round_trip() {
        for v in [0i64, 1, -1, 63, -64, 64, 1 << 40, i64::MAX, i64::MIN] {
            let mut out = Vec::new();
            put_long(&mut out, v);
            assert_eq!(Avro { bytes: &out, at: 0 }.long().unwrap(), v);
        }
    }
}
