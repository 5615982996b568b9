//! `POST /v1/ingest/{stream}`: newline-delimited records, answered 2xx only
//! once they are in the write-ahead log and fsynced.
//!
//! With an `Idempotency-Key` header the records are appended as one keyed
//! entry (the key first, see `lamina_speed::control`), so the key is durable
//! exactly when the records are; a retry with the same key is answered
//! without appending again — also after a crash, because the key commits
//! with the records' deltas.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use lamina_speed::commit::Position;
use lamina_speed::wal::Wal;
use serde_json::json;
use warp::http::{HeaderValue, StatusCode};
use warp::reply::{Reply, Response};
use warp::{Buf, Stream};

use super::{ApiError, ApiState, authorize};

/// Longest accepted idempotency key.
pub const MAX_KEY_BYTES: usize = 256;

/// What the ingest endpoint needs.
#[derive(Debug)]
pub struct IngestState {
    /// The write-ahead log.
    pub wal: Wal,
    /// Per stream (index = WAL stream id): name and largest record.
    pub streams: Vec<(String, usize)>,
    /// How long an idempotency key is remembered.
    pub idempotency_window_us: i64,
    /// Keys whose request is being appended right now. A std mutex: set
    /// operations only, never held across an `.await`.
    pub in_flight: Mutex<HashSet<(usize, String)>>,
    /// Keys this process appended lately: `(stream, key)` → receive time.
    pub recent: Mutex<HashMap<(String, String), i64>>,
    /// The budget of unprocessed input; `None`: unbounded (tests).
    pub backlog: Option<Arc<lamina_speed::backlog::Backlog>>,
    /// The server reads another server's master dataset and ingests
    /// nothing (`storage.master_read_only`).
    pub read_only: bool,
    /// Per stream: the counters of its HTTP ingest, in `/metrics` as
    /// receiver `http` (empty: not counted, in tests).
    pub counters: Vec<Arc<lamina_speed::receivers::IngestCounters>>,
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// Removes a key from the in-flight set when the request ends, however it
/// ends (including the client going away mid-append).
struct InFlight<'a> {
    set: &'a Mutex<HashSet<(usize, String)>>,
    entry: (usize, String),
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.entry);
    }
}

/// Splits a body into records: one per line, a trailing `\n` ends the last
/// one (an empty final segment is not a record).
fn records(body: &[u8]) -> Vec<&[u8]> {
    let mut lines: Vec<&[u8]> = body.split(|&b| b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    lines
}

/// Reads a request body to its end, at most `limit` long.
///
/// # Errors
///
/// 400 `bad_body` when the body cannot be read to its end: the connection
/// ended before `Content-Length` bytes came (or the chunked encoding is
/// malformed); 408 `request_timeout` when it has not fully arrived within
/// `limit`.
pub(crate) async fn read_body<S, B>(body: S, limit: std::time::Duration) -> Result<Bytes, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let mut body = std::pin::pin!(body);
    let mut out = BytesMut::new();
    let read = async {
        while let Some(chunk) = std::future::poll_fn(|cx| body.as_mut().poll_next(cx)).await {
            let chunk = chunk.map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    format!(
                        "the request body could not be read to its end (shorter than its Content-Length?): {e}"
                    ),
                )
            })?;
            out.put(chunk);
        }
        Ok(())
    };
    match tokio::time::timeout(limit, read).await {
        Ok(Ok(())) => Ok(out.freeze()),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request body did not arrive within {} ms (server.request_timeout_ms)",
                limit.as_millis()
            ),
        )),
    }
}

/// Handles one ingest request. The body is read after the token is
/// checked and before a permit is taken, so a slow upload holds no permit.
pub async fn ingest<S, B>(
    state: &ApiState,
    stream: &str,
    request: IngestRequest,
    body: S,
) -> Result<Response, ApiError>
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    let IngestRequest {
        auth,
        key,
        query,
        content_type,
    } = request;
    authorize(state, auth.as_ref())?;
    let flume = is_flume(&query, content_type.as_ref())?;
    let key = match key {
        None => None,
        Some(raw) => Some(raw.to_str().map(str::to_owned).map_err(|_| bad_key())?),
    };
    let body = read_body(body, state.request_timeout).await?;
    let _permit = super::admit(state)?;
    let ingest = state.ingest.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ingest_unavailable",
            "ingest is not running",
        )
    })?;
    if ingest.read_only {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "read_only",
            "this server reads another server's master dataset (storage.master_read_only = true) and ingests nothing; send records to the server that writes the dataset",
        ));
    }
    let stream = super::decode_segment(stream)?;
    let (id, (name, max_record_bytes)) = ingest
        .streams
        .iter()
        .enumerate()
        .find(|(_, (n, _))| *n == stream)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_stream",
                format!("no stream named `{stream}`"),
            )
        })?;
    if let Some(charset) = flume {
        return ingest_flume(ingest, id, name, *max_record_bytes, key, charset, &body).await;
    }
    let lines = records(&body);
    if let Some((i, line)) = lines
        .iter()
        .enumerate()
        .find(|(_, l)| l.len() > *max_record_bytes)
    {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "record_too_large",
            format!(
                "record {} of the body has {} bytes; stream `{name}` accepts at most {max_record_bytes} (nothing was ingested)",
                i + 1,
                line.len()
            ),
        ));
    }
    if let Some(b) = &ingest.backlog
        && !b.has_room()
    {
        b.note_refused();
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "backlog_full",
            format!(
                "{} records ({} bytes) received are not processed yet, more than [speed] max_backlog_records/max_backlog_bytes allow; nothing was ingested, retry after a second",
                b.records(),
                b.bytes()
            ),
        )
        .retry_after(1));
    }
    // The same ingest path as every push receiver: one append, counted as
    // receiver `http`, in the backlog's budget.
    let stream_ingest = ingest.stream_ingest(id);
    let wal_failed = |e: lamina_speed::wal::WalError| {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "wal_failed", e.to_string())
    };
    let receive_us = now_us();
    let Some(key) = key else {
        if lines.is_empty() {
            return Ok(accepted(name, 0, None));
        }
        let range = stream_ingest
            .append_lines(&lines, receive_us)
            .await
            .map_err(wal_failed)?;
        return Ok(accepted(name, lines.len(), Some(range)));
    };
    if key.is_empty() || key.len() > MAX_KEY_BYTES || key.contains('/') {
        return Err(bad_key());
    }
    // Committed already (by an earlier request, possibly before a restart)?
    let position = Position::Idempotency {
        stream: name.to_owned(),
        key: key.clone(),
    };
    let seen = state
        .store
        .position(&position)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    if seen.is_some_and(|t| receive_us - (t as i64) < ingest.idempotency_window_us) {
        return Ok(duplicate(name, &key));
    }
    let _guard = {
        let mut set = ingest.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if !set.insert((id, key.clone())) {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "idempotency_key_in_use",
                format!(
                    "a request with Idempotency-Key `{key}` is still being ingested; retry shortly"
                ),
            ));
        }
        InFlight {
            set: &ingest.in_flight,
            entry: (id, key.clone()),
        }
    };
    // Appended but not committed yet: the previous request with this key
    // succeeded moments ago and its micro-batch has not run.
    if ingest.recently_appended(name, &key) {
        return Ok(duplicate(name, &key));
    }
    let range = stream_ingest
        .append_keyed(key.as_bytes(), &lines, receive_us)
        .await
        .map_err(wal_failed)?;
    ingest.remember(name, &key, receive_us);
    Ok(accepted(name, lines.len(), Some(range)))
}

/// The parts of an ingest request besides its path and body.
#[derive(Debug, Default)]
pub struct IngestRequest {
    /// `Authorization`.
    pub auth: Option<HeaderValue>,
    /// `Idempotency-Key`.
    pub key: Option<HeaderValue>,
    /// The raw query string.
    pub query: String,
    /// `Content-Type`.
    pub content_type: Option<HeaderValue>,
}

/// The Content-Type that selects Flume's HTTP source JSON, besides the
/// query parameter `format=flume`.
pub const FLUME_CONTENT_TYPE: &str = "application/flume+json";

/// Whether the body is Flume's HTTP source JSON (`?format=flume`, or the
/// Content-Type [`FLUME_CONTENT_TYPE`]); then its charset.
fn is_flume(query: &str, content_type: Option<&HeaderValue>) -> Result<Option<Charset>, ApiError> {
    let mut flume = false;
    for (k, v) in query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
    {
        match (k, v) {
            ("format", "flume") => flume = true,
            ("format", "lines") => {}
            ("format", other) => {
                return Err(ApiError::bad_parameter(format!(
                    "format must be `lines` (newline-delimited records, the default) or `flume` (Flume's HTTP source JSON: [{{\"headers\": {{...}}, \"body\": \"...\"}}]), got `{other}`"
                )));
            }
            _ => {
                return Err(ApiError::bad_parameter(format!(
                    "unknown query parameter `{k}` (ingest takes `format`)"
                )));
            }
        }
    }
    let ct = content_type
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mut parts = ct.split(';').map(str::trim);
    if parts.next() == Some(FLUME_CONTENT_TYPE) {
        flume = true;
    }
    if !flume {
        return Ok(None);
    }
    let charset = ct
        .split(';')
        .map(str::trim)
        .find_map(|p| p.strip_prefix("charset="))
        .map(|c| c.trim_matches('"'));
    match charset {
        None | Some("utf-8" | "utf8") => Ok(Some(Charset::Utf8)),
        Some("iso-8859-1" | "latin1" | "latin-1" | "us-ascii") => Ok(Some(Charset::Latin1)),
        Some(other) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_charset",
            format!(
                "charset `{other}` is not supported for Flume events (use UTF-8 or ISO-8859-1)"
            ),
        )),
    }
}

/// The charsets Flume bodies may come in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Charset {
    Utf8,
    Latin1,
}

/// One event of Flume's HTTP source JSON.
#[derive(Debug, serde::Deserialize)]
struct FlumeEvent {
    #[serde(default)]
    headers: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    body: String,
}

/// Flume's HTTP source JSON: each event one record of the stream, its body
/// parsed by the stream's format, its headers kept for the `_headers`
/// column (streams with the source columns). All or nothing, durable
/// before the answer.
#[allow(clippy::too_many_arguments)]
async fn ingest_flume(
    ingest: &IngestState,
    id: usize,
    name: &str,
    max_record_bytes: usize,
    key: Option<String>,
    charset: Charset,
    body: &[u8],
) -> Result<Response, ApiError> {
    if key.is_some() {
        return Err(ApiError::bad_parameter(
            "Idempotency-Key is not supported with Flume events (format=flume) yet; send without it",
        ));
    }
    let text: std::borrow::Cow<'_, str> = match charset {
        Charset::Utf8 => std::str::from_utf8(body)
            .map_err(|e| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    format!("the body is not UTF-8 ({e}); name its charset in Content-Type"),
                )
            })?
            .into(),
        Charset::Latin1 => body.iter().map(|&b| b as char).collect::<String>().into(),
    };
    let events: Vec<FlumeEvent> = serde_json::from_str(&text).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            format!(
                "not Flume's HTTP source JSON (an array of {{\"headers\": {{\"name\": \"value\"}}, \"body\": \"text\"}}): {e}; nothing was ingested"
            ),
        )
    })?;
    if let Some((i, e)) = events
        .iter()
        .enumerate()
        .find(|(_, e)| e.body.len() > max_record_bytes)
    {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "record_too_large",
            format!(
                "event {} of the body has a body of {} bytes; stream `{name}` accepts at most {max_record_bytes} (nothing was ingested)",
                i + 1,
                e.body.len()
            ),
        ));
    }
    if let Some(b) = &ingest.backlog
        && !b.has_room()
    {
        b.note_refused();
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "backlog_full",
            "records received are not processed yet, more than [speed] max_backlog_records/max_backlog_bytes allow; nothing was ingested, retry after a second",
        )
        .retry_after(1));
    }
    if events.is_empty() {
        return Ok(accepted(name, 0, None));
    }
    let envelopes: Vec<lamina_speed::envelope::Envelope<'_>> = events
        .iter()
        .map(|e| lamina_speed::envelope::Envelope {
            headers: e
                .headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_bytes()))
                .collect(),
            value: e.body.as_bytes(),
            ..Default::default()
        })
        .collect();
    let range = ingest
        .stream_ingest(id)
        .append_enveloped(&envelopes, now_us())
        .await
        .map_err(|e| ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "wal_failed", e.to_string()))?;
    Ok(accepted(name, events.len(), Some(range)))
}

fn bad_key() -> ApiError {
    ApiError::bad_parameter(format!(
        "Idempotency-Key must be 1 to {MAX_KEY_BYTES} bytes of printable ASCII without `/`"
    ))
}

/// How long a key appended by this process is remembered in memory: far
/// longer than the micro-batch that commits it takes. After that the
/// store's committed position answers. (A restart loses the memory, but
/// the server replays the whole log before it answers requests again.)
const RECENT_US: i64 = 60_000_000;

impl IngestState {
    /// Stream `id`'s handle for appends: the log, the backlog budget, and
    /// the stream's HTTP counters (receiver `http` in `/metrics`).
    fn stream_ingest(&self, id: usize) -> lamina_speed::receivers::StreamIngest {
        let (name, max) = &self.streams[id];
        let mut ingest = lamina_speed::receivers::StreamIngest::new(
            self.wal.clone(),
            id as u32,
            name.as_str(),
            *max,
        );
        if let Some(b) = &self.backlog {
            ingest = ingest.with_backlog(Arc::clone(b));
        }
        if let Some(c) = self.counters.get(id) {
            ingest = ingest.with_counters(Arc::clone(c));
        }
        ingest
    }

    fn recently_appended(&self, stream: &str, key: &str) -> bool {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.contains_key(&(stream.to_owned(), key.to_owned()))
    }

    fn remember(&self, stream: &str, key: &str, at_us: i64) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        recent.retain(|_, t| at_us - *t < RECENT_US);
        recent.insert((stream.to_owned(), key.to_owned()), at_us);
    }
}

fn accepted(stream: &str, records: usize, seqs: Option<std::ops::Range<u64>>) -> Response {
    let body = json!({
        "stream": stream,
        "records": records,
        "first_seq": seqs.as_ref().filter(|r| !r.is_empty()).map(|r| r.start),
        "last_seq": seqs.as_ref().filter(|r| !r.is_empty()).map(|r| r.end - 1),
        "duplicate": false,
    });
    warp::reply::with_status(warp::reply::json(&body), StatusCode::OK).into_response()
}

fn duplicate(stream: &str, key: &str) -> Response {
    let body = json!({"stream": stream, "records": 0, "duplicate": true, "idempotency_key": key});
    warp::reply::with_status(warp::reply::json(&body), StatusCode::OK).into_response()
}

#[cfg(test)]
mod tests {
    use super::records;

    #[test]
    fn bodies_split_into_records() {
        assert_eq!(records(b"a\nb\n"), vec![&b"a"[..], b"b"]);
        assert_eq!(records(b"a\nb"), vec![&b"a"[..], b"b"]);
        assert_eq!(records(b"a\n\nb\n"), vec![&b"a"[..], b"", b"b"]);
        assert!(records(b"").is_empty());
        assert_eq!(records(b"\n"), vec![&b""[..]]);
    }
}
