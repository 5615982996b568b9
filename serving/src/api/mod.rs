//! The REST API (JSON, versioned under `/v1`), on warp.
//!
//! Every answer is JSON; every error is `{"error": {"code", "message"}}` with
//! a stable `code` (see [`error`]). Write and admin endpoints need
//! `Authorization: Bearer <token>` when a token is configured. At most
//! `max_concurrent_requests` requests run at once; more get 503
//! `overloaded` rather than queueing without bound.

pub mod error;
pub mod ingest;
pub mod json;
pub mod openapi;
pub mod streams;

use std::convert::Infallible;
use std::sync::Arc;

use lamina::view::AggregateKind;
use lamina_batch::BatchRuns;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Semaphore;
use warp::Filter;
use warp::http::{HeaderMap, HeaderValue, StatusCode};
use warp::reply::{Reply, Response};

use crate::store::ViewStore;
pub use error::ApiError;
pub use ingest::IngestState;
use lamina_speed::microbatch::StatsLog;
pub use streams::StreamInfo;

/// What the API knows about a configured view.
#[derive(Debug, Clone)]
pub struct ViewInfo {
    /// The view's name.
    pub name: String,
    /// The stream it reads.
    pub stream: String,
    /// What its values are.
    pub kind: ViewKind,
}

/// What a view's values are.
#[derive(Debug, Clone, PartialEq)]
pub enum ViewKind {
    /// Partial aggregates: the batch view merged with real-time deltas.
    Aggregate(AggregateKind),
    /// A stateful operator's state (`serve_state_as`): each key's committed
    /// state, any serde type, as JSON.
    State,
    /// A windowed view: partials per time bucket, merged over a window.
    Window(WindowInfo),
    /// `aggregate = "last"`: each key's latest value (a state of
    /// `[value, event time ms]`).
    Last,
}

/// What the API knows about a windowed view.
#[derive(Debug, Clone, PartialEq)]
pub struct WindowInfo {
    /// Its aggregate.
    pub aggregate: AggregateKind,
    /// Its window.
    pub window: lamina::streaming::windowed_view::WindowSpec,
    /// Whether its key is a tuple (keys are given as the view shows them,
    /// escaped); a single key is escaped here.
    pub tuple_key: bool,
    /// Whether records are bucketed by an event-time column (the newest
    /// complete window follows the stream's watermark) or by the time they
    /// were received (the wall clock).
    pub event_time: bool,
}

/// Everything the handlers share.
#[derive(Debug)]
pub struct ApiState {
    /// Batch views and real-time deltas.
    pub store: Arc<ViewStore>,
    /// Batch runs.
    pub runs: Arc<BatchRuns>,
    /// The configured views.
    pub views: Vec<ViewInfo>,
    /// The bearer token write and admin endpoints need, if any.
    pub token: Option<String>,
    /// Requests allowed to run at once.
    pub permits: Semaphore,
    /// The configured streams.
    pub streams: Vec<StreamInfo>,
    /// Micro-batch statistics per stream.
    pub stats: Arc<StatsLog>,
    /// HTTP ingest, when the speed layer runs.
    pub ingest: Option<IngestState>,
    /// Largest request body accepted.
    pub max_body_bytes: u64,
    /// How long a request body may take to arrive; past it the answer is
    /// 408 `request_timeout`.
    pub request_timeout: std::time::Duration,
    /// Problems `/healthz` reports.
    pub health: Arc<crate::health::Health>,
}

type State = Arc<ApiState>;

fn with_state(state: State) -> impl Filter<Extract = (State,), Error = Infallible> + Clone {
    warp::any().map(move || Arc::clone(&state))
}

/// A header's raw value, whatever bytes it holds. `warp::header::optional`
/// rejects a value that is not visible ASCII before any handler runs (which
/// reached the client as a 500); the handlers judge the bytes themselves
/// and answer 400 or 401.
fn raw_header(
    name: &'static str,
) -> impl Filter<Extract = (Option<HeaderValue>,), Error = Infallible> + Clone {
    warp::header::headers_cloned().map(move |headers: HeaderMap| headers.get(name).cloned())
}

/// Percent-decodes one path segment (`%2F` → `/`, UTF-8).
pub(crate) fn decode_segment(raw: &str) -> Result<String, ApiError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    ApiError::bad_parameter(format!("bad percent-encoding in `{raw}`"))
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| ApiError::bad_parameter(format!("`{raw}` is not UTF-8 once decoded")))
}

fn reply<T: Reply>(result: Result<T, ApiError>) -> Response {
    match result {
        Ok(r) => r.into_response(),
        Err(e) => e.into_response(),
    }
}

/// Admission: a permit per request, or 503 when all are taken.
pub(crate) fn admit(state: &ApiState) -> Result<tokio::sync::SemaphorePermit<'_>, ApiError> {
    state.permits.try_acquire().map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            "too many requests in flight; retry shortly",
        )
        .retry_after(1)
    })
}

/// Checks `Authorization: Bearer <token>` when a token is configured (any
/// header passes when none is). A value that is not ASCII can never be the
/// token (tokens are printable ASCII): it is a wrong token, 401.
pub(crate) fn authorize(state: &ApiState, header: Option<&HeaderValue>) -> Result<(), ApiError> {
    let Some(token) = &state.token else {
        return Ok(());
    };
    match header.and_then(|h| h.as_bytes().strip_prefix(b"Bearer ")) {
        Some(given) if constant_time_eq(given, token.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "wrong token",
        )),
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this endpoint needs `Authorization: Bearer <token>`",
        )),
    }
}

/// Compares without an early exit, so the time taken does not tell how
/// much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TopQuery {
    k: Option<String>,
    window_end: Option<String>,
}

/// The query of a key lookup: only windowed views take one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyQuery {
    window_end: Option<String>,
}

const MAX_TOP_K: usize = 10_000;

fn get_key(state: &ApiState, view: &str, key: &str, query: KeyQuery) -> Result<Response, ApiError> {
    let _permit = admit(state)?;
    let view = decode_segment(view)?;
    let key = decode_segment(key)?;
    let info = state
        .views
        .iter()
        .find(|v| v.name == view)
        .ok_or_else(|| ApiError::unknown_view(&view))?;
    if query.window_end.is_some() && !matches!(info.kind, ViewKind::Window(_)) {
        return Err(ApiError::bad_parameter(format!(
            "window_end: view `{view}` is not windowed"
        )));
    }
    let aggregate = match &info.kind {
        ViewKind::Aggregate(a) => a,
        ViewKind::State => return get_state_key(state, &view, &key, false),
        ViewKind::Last => return get_state_key(state, &view, &key, true),
        ViewKind::Window(w) => {
            let end = window_end(state, &info.stream, w, query.window_end.as_deref())?;
            return get_window_key(state, &view, w, &key, end);
        }
    };
    let answer = state
        .store
        .get(&view, &key)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let body = match answer {
        Some(a) => json!({
            "view": view,
            "key": key,
            "value": json::value(&a.value),
            "batch_value": a.batch_value.as_ref().map(json::value),
            "realtime_value": a.realtime_value.as_ref().map(json::value),
            "watermark_epoch": a.watermark_epoch,
        }),
        // A key never seen has the aggregate's identity: count 0, no min.
        None => json!({
            "view": view,
            "key": key,
            "value": json::value(&aggregate.zero()),
            "batch_value": null,
            "realtime_value": null,
            "watermark_epoch": state.store.watermark(),
        }),
    };
    Ok(warp::reply::json(&body).into_response())
}

/// The end (ms) of the window asked for: `raw` as epoch milliseconds or
/// RFC 3339, on a bucket boundary; by default the newest complete window —
/// by the wall clock, or by the stream's watermark for event time.
fn window_end(
    state: &ApiState,
    stream: &str,
    w: &WindowInfo,
    raw: Option<&str>,
) -> Result<i64, ApiError> {
    let slide = w.window.slide.as_millis() as i64;
    let Some(raw) = raw else {
        let now = if w.event_time {
            state
                .store
                .position(&crate::store::Position::Watermark {
                    stream: stream.to_owned(),
                })
                .map_err(|e| ApiError::internal(e.to_string()))?
                .map_or(0, |us| (us as i64).div_euclid(1000))
        } else {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as i64)
        };
        return Ok(w.window.newest_end(now));
    };
    let ms = raw
        .parse::<i64>()
        .ok()
        .or_else(|| {
            chrono::DateTime::parse_from_rfc3339(raw)
                .ok()
                .map(|t| t.timestamp_millis())
        })
        .ok_or_else(|| {
            ApiError::bad_parameter(format!(
                "window_end must be epoch milliseconds or an RFC 3339 time, got `{raw}`"
            ))
        })?;
    if ms.rem_euclid(slide) != 0 {
        return Err(ApiError::bad_parameter(format!(
            "window_end must fall on a multiple of the view's slide ({} s); `{raw}` does not",
            slide / 1000
        )));
    }
    Ok(ms)
}

fn rfc3339(ms: i64) -> String {
    let mut s = String::new();
    lamina::view::key::write_rfc3339(ms.saturating_mul(1000), &mut s);
    s
}

/// The stored partial of one key in one bucket of a windowed view.
fn window_cell(
    state: &ApiState,
    view: &str,
    bucket: i64,
    key: &str,
) -> Result<Option<lamina::view::AggValue>, ApiError> {
    let cell = lamina::streaming::durable::encode(&(bucket, key))
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let Some(bytes) = state
        .store
        .state_get(view, &cell)
        .map_err(|e| ApiError::internal(e.to_string()))?
    else {
        return Ok(None);
    };
    let (value, _): (lamina::view::AggValue, i64) = lamina::streaming::durable::decode(&bytes)
        .map_err(|e| ApiError::internal(format!("a stored window cell does not decode: {e}")))?;
    Ok(Some(value))
}

/// One key of a windowed view: its buckets in the window, merged.
fn get_window_key(
    state: &ApiState,
    view: &str,
    w: &WindowInfo,
    key: &str,
    end: i64,
) -> Result<Response, ApiError> {
    let cell_key = if w.tuple_key {
        key.to_owned()
    } else {
        lamina::streaming::windowed_view::escape_part(key)
    };
    let mut value = w.aggregate.zero();
    for bucket in w.window.buckets(end) {
        if let Some(v) = window_cell(state, view, bucket, &cell_key)? {
            value
                .combine_owned(v)
                .map_err(|e| ApiError::internal(e.to_string()))?;
        }
    }
    let start = end - w.window.length.as_millis() as i64;
    Ok(warp::reply::json(&json!({
        "view": view,
        "key": key,
        "value": json::value(&value),
        "window_start": rfc3339(start),
        "window_end": rfc3339(end),
        "window_end_ms": end,
    }))
    .into_response())
}

/// The `k` keys of a windowed view with the largest merged values over the
/// window ending at `end`. Reads every kept cell of the view.
fn top_window(
    state: &ApiState,
    view: &str,
    w: &WindowInfo,
    k: usize,
    end: i64,
) -> Result<Vec<serde_json::Value>, ApiError> {
    let start = end - w.window.length.as_millis() as i64;
    let mut merged: std::collections::HashMap<String, lamina::view::AggValue> =
        std::collections::HashMap::new();
    for row in state.store.state_entries(view) {
        let (cell, value) = row.map_err(|e| ApiError::internal(e.to_string()))?;
        let Ok((bucket, key)) = lamina::streaming::durable::decode::<(i64, String)>(&cell) else {
            continue;
        };
        if bucket < start || bucket >= end {
            continue;
        }
        let Ok((value, _)) =
            lamina::streaming::durable::decode::<(lamina::view::AggValue, i64)>(&value)
        else {
            continue;
        };
        match merged.get_mut(&key) {
            Some(v) => v
                .combine_owned(value)
                .map_err(|e| ApiError::internal(e.to_string()))?,
            None => {
                merged.insert(key, value);
            }
        }
    }
    let mut items: Vec<(f64, String, lamina::view::AggValue)> = merged
        .into_iter()
        .filter_map(|(key, v)| v.scalar().map(|s| (s, key, v)))
        .collect();
    items.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    items.truncate(k);
    Ok(items
        .into_iter()
        .map(|(_, key, v)| {
            let key = if w.tuple_key {
                key
            } else {
                lamina::streaming::windowed_view::unescape_part(&key)
            };
            json!({"key": key, "value": json::value(&v)})
        })
        .collect())
}

/// A key of a state view: its committed state, and the time of the batch
/// that last changed it.
fn get_state_key(
    state: &ApiState,
    view: &str,
    key: &str,
    last: bool,
) -> Result<Response, ApiError> {
    let cbor_key =
        lamina::streaming::durable::encode(key).map_err(|e| ApiError::internal(e.to_string()))?;
    let stored = state
        .store
        .state_get(view, &cbor_key)
        .map_err(|e| ApiError::internal(e.to_string()))?;
    let (value, updated) = match stored {
        None => (serde_json::Value::Null, None),
        Some(bytes) => json::stored_state(&bytes).ok_or_else(|| {
            ApiError::internal(format!("the stored state of key `{key}` does not decode"))
        })?,
    };
    if last {
        let (value, event_time) = latest(value);
        return Ok(warp::reply::json(&json!({
            "view": view,
            "key": key,
            "value": value,
            "event_time": event_time,
            "updated_ms": updated,
        }))
        .into_response());
    }
    Ok(warp::reply::json(&json!({
        "view": view,
        "key": key,
        "value": value,
        "updated_ms": updated,
    }))
    .into_response())
}

/// A `last` view's state `[value, event time ms]` as the value and the
/// event time (RFC 3339, or null).
fn latest(state: serde_json::Value) -> (serde_json::Value, serde_json::Value) {
    match state {
        serde_json::Value::Array(mut parts) if parts.len() == 2 => {
            let at = parts
                .pop()
                .and_then(|t| t.as_i64())
                .map_or(serde_json::Value::Null, |ms| {
                    serde_json::Value::from(rfc3339(ms))
                });
            (parts.pop().unwrap_or_default(), at)
        }
        other => (other, serde_json::Value::Null),
    }
}

/// The `k` keys of a state view whose state is the largest number (keys
/// whose state is not a number are not ranked). Scans the state: costs
/// every key.
fn top_state(
    state: &ApiState,
    view: &str,
    k: usize,
    last: bool,
) -> Result<Vec<serde_json::Value>, ApiError> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    #[derive(PartialEq)]
    struct Item(f64, String, serde_json::Value);
    impl Eq for Item {}
    impl PartialOrd for Item {
        fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(other))
        }
    }
    impl Ord for Item {
        // Larger scores first; ties by key, smaller first.
        fn cmp(&self, other: &Self) -> std::cmp::Ordering {
            self.0
                .total_cmp(&other.0)
                .then_with(|| other.1.cmp(&self.1))
        }
    }
    let mut heap: BinaryHeap<Reverse<Item>> = BinaryHeap::with_capacity(k + 1);
    for row in state.store.state_entries(view) {
        let (key, value) = row.map_err(|e| ApiError::internal(e.to_string()))?;
        let Ok(key) = lamina::streaming::durable::decode::<String>(&key) else {
            continue;
        };
        let Some((value, _)) = json::stored_state(&value) else {
            continue;
        };
        let value = if last { latest(value).0 } else { value };
        let Some(score) = value.as_f64() else {
            continue;
        };
        heap.push(Reverse(Item(score, key, value)));
        if heap.len() > k {
            heap.pop();
        }
    }
    let mut items: Vec<Item> = heap.into_iter().map(|Reverse(i)| i).collect();
    items.sort_by(|a, b| b.cmp(a));
    Ok(items
        .into_iter()
        .map(|Item(_, key, value)| json!({"key": key, "value": value}))
        .collect())
}

fn top(state: &ApiState, view: &str, query: TopQuery) -> Result<Response, ApiError> {
    let _permit = admit(state)?;
    let view = decode_segment(view)?;
    let info = state
        .views
        .iter()
        .find(|v| v.name == view)
        .ok_or_else(|| ApiError::unknown_view(&view))?;
    let k = match query.k.as_deref() {
        None => 10,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|k| (1..=MAX_TOP_K).contains(k))
            .ok_or_else(|| {
                ApiError::bad_parameter(format!(
                    "k must be an integer from 1 to {MAX_TOP_K}, got `{raw}`"
                ))
            })?,
    };
    if query.window_end.is_some() && !matches!(info.kind, ViewKind::Window(_)) {
        return Err(ApiError::bad_parameter(format!(
            "window_end: view `{view}` is not windowed"
        )));
    }
    if matches!(info.kind, ViewKind::State | ViewKind::Last) {
        let items = top_state(state, &view, k, info.kind == ViewKind::Last)?;
        return Ok(warp::reply::json(&json!({"view": view, "items": items})).into_response());
    }
    if let ViewKind::Window(w) = &info.kind {
        let end = window_end(state, &info.stream, w, query.window_end.as_deref())?;
        let items = top_window(state, &view, w, k, end)?;
        return Ok(warp::reply::json(&json!({
            "view": view,
            "items": items,
            "window_start": rfc3339(end - w.window.length.as_millis() as i64),
            "window_end": rfc3339(end),
            "window_end_ms": end,
        }))
        .into_response());
    }
    let items: Vec<_> = state
        .store
        .top(&view, k)
        .map_err(|e| ApiError::internal(e.to_string()))?
        .into_iter()
        .map(|i| json!({"key": i.key, "value": json::value(&i.value)}))
        .collect();
    Ok(warp::reply::json(&json!({"view": view, "items": items})).into_response())
}

fn list_views(state: &ApiState) -> Result<Response, ApiError> {
    let _permit = admit(state)?;
    let views: Vec<_> = state
        .views
        .iter()
        .map(|v| match &v.kind {
            ViewKind::Aggregate(a) => json!({
                "name": v.name,
                "stream": v.stream,
                "aggregate": a,
                "keys": state.store.key_count(&v.name).unwrap_or(0),
            }),
            ViewKind::State => json!({
                "name": v.name,
                "stream": v.stream,
                "aggregate": "state",
                "keys": state.store.state_key_count(&v.name).unwrap_or(0),
            }),
            ViewKind::Last => json!({
                "name": v.name,
                "stream": v.stream,
                "aggregate": "last",
                "keys": state.store.state_key_count(&v.name).unwrap_or(0),
            }),
            ViewKind::Window(w) => json!({
                "name": v.name,
                "stream": v.stream,
                "aggregate": w.aggregate,
                "window": {
                    "length_secs": w.window.length.as_secs(),
                    "slide_secs": w.window.slide.as_secs(),
                    "retention_secs": w.window.retention.as_secs(),
                    "time": if w.event_time { "event" } else { "received" },
                },
                "cells": state.store.state_key_count(&v.name).unwrap_or(0),
                // Late records of the stream: left out of (or folded into)
                // this view, as its stream's policy says.
                "late_records": if w.event_time {
                    state
                        .store
                        .position(&crate::store::Position::Late {
                            stream: v.stream.clone(),
                        })
                        .ok()
                        .flatten()
                        .unwrap_or(0)
                } else {
                    0
                },
            }),
        })
        .collect();
    Ok(
        warp::reply::json(&json!({"views": views, "watermark_epoch": state.store.watermark()}))
            .into_response(),
    )
}

async fn request_run(
    state: Arc<ApiState>,
    auth: Option<HeaderValue>,
) -> Result<Response, ApiError> {
    let _permit = admit(&state)?;
    authorize(&state, auth.as_ref())?;
    let run = state.runs.request("api");
    persist_runs(&state).await;
    Ok(warp::reply::with_status(
        warp::reply::json(&json!({"id": run.id, "state": run.state})),
        StatusCode::ACCEPTED,
    )
    .into_response())
}

fn run_id(raw: &str) -> Result<u64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::bad_parameter(format!("run id must be a number, got `{raw}`")))
}

fn get_run(state: &ApiState, id: &str) -> Result<Response, ApiError> {
    let _permit = admit(state)?;
    let id = run_id(id)?;
    let run = state.runs.get(id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_run",
            format!("no batch run {id}"),
        )
    })?;
    Ok(warp::reply::json(&run).into_response())
}

/// Saves the run history before answering, so that an acknowledged run
/// keeps its id across a crash (a flush: off the async workers).
async fn persist_runs(state: &Arc<ApiState>) {
    let st = Arc::clone(state);
    let _ =
        tokio::task::spawn_blocking(move || crate::server::save_runs(&st.store, &st.runs.list()))
            .await;
}

async fn cancel_run(
    state: Arc<ApiState>,
    id: String,
    auth: Option<HeaderValue>,
) -> Result<Response, ApiError> {
    let _permit = admit(&state)?;
    authorize(&state, auth.as_ref())?;
    let id: &str = &id;
    let id = run_id(id)?;
    let run = state.runs.cancel(id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_run",
            format!("no batch run {id}"),
        )
    })?;
    persist_runs(&state).await;
    Ok(warp::reply::with_status(warp::reply::json(&run), StatusCode::ACCEPTED).into_response())
}

/// All routes.
pub fn routes(
    state: Arc<ApiState>,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
    let s = || with_state(Arc::clone(&state));
    let auth = || raw_header("authorization");

    let healthz = warp::path!("healthz")
        .and(warp::get())
        .and(s())
        .map(|st: State| match st.health.status() {
            Ok(()) => warp::reply::json(&json!({"status": "ok"})).into_response(),
            Err(problems) => warp::reply::with_status(
                warp::reply::json(&problems),
                StatusCode::SERVICE_UNAVAILABLE,
            )
            .into_response(),
        });
    let views = warp::path!("v1" / "views")
        .and(warp::get())
        .and(s())
        .map(|st: State| reply(list_views(&st)));
    let key = warp::path!("v1" / "views" / String / "keys" / String)
        .and(warp::get())
        .and(warp::query::<KeyQuery>())
        .and(s())
        .map(|view: String, key: String, q: KeyQuery, st: State| {
            reply(get_key(&st, &view, &key, q))
        });
    let top = warp::path!("v1" / "views" / String / "top")
        .and(warp::get())
        .and(warp::query::<TopQuery>())
        .and(s())
        // A top-k answer not cached yet scans every key of the view (tens
        // of ms at 10M keys): CPU work, off the async workers.
        .then(|view: String, q: TopQuery, st: State| async move {
            tokio::task::spawn_blocking(move || reply(top(&st, &view, q)))
                .await
                .unwrap_or_else(|e| ApiError::internal(e.to_string()).into_response())
        });
    let runs_post = warp::path!("v1" / "batch" / "runs")
        .and(warp::post())
        .and(auth())
        .and(s())
        .then(|a: Option<HeaderValue>, st: State| async move { reply(request_run(st, a).await) });
    let runs_list = warp::path!("v1" / "batch" / "runs")
        .and(warp::get())
        .and(s())
        .map(|st: State| reply(Ok(warp::reply::json(&json!({"runs": st.runs.list()})))));
    let run_get = warp::path!("v1" / "batch" / "runs" / String)
        .and(warp::get())
        .and(s())
        .map(|id: String, st: State| reply(get_run(&st, &id)));
    let ingest = warp::path!("v1" / "ingest" / String)
        .and(warp::post())
        .and(warp::body::content_length_limit(state.max_body_bytes))
        .and(auth())
        .and(raw_header("idempotency-key"))
        .and(raw_header("content-type"))
        .and(warp::query::raw().or(warp::any().map(String::new)).unify())
        .and(warp::body::stream())
        .and(s())
        .then(
            |stream: String,
             auth: Option<HeaderValue>,
             key: Option<HeaderValue>,
             content_type: Option<HeaderValue>,
             query: String,
             body,
             st: State| async move {
                let request = ingest::IngestRequest {
                    auth,
                    key,
                    query,
                    content_type,
                };
                match ingest::ingest(&st, &stream, request, body).await {
                    Ok(r) => r,
                    Err(e) => e.into_response(),
                }
            },
        );
    let streams_list = warp::path!("v1" / "streams")
        .and(warp::get())
        .and(s())
        .map(|st: State| reply(streams::list(&st)));
    let batches = warp::path!("v1" / "streams" / String / "batches")
        .and(warp::get())
        .and(warp::query::<streams::SinceQuery>())
        .and(s())
        .map(|name: String, q, st: State| reply(streams::batches(&st, &name, q)));
    let dead = warp::path!("v1" / "streams" / String / "dead_letters")
        .and(warp::get())
        .and(warp::query::<streams::LimitQuery>())
        .and(s())
        .map(|name: String, q, st: State| reply(streams::dead_letters(&st, &name, q)));
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(s())
        .map(|st: State| streams::metrics(&st));
    let run_cancel = warp::path!("v1" / "batch" / "runs" / String / "cancel")
        .and(warp::post())
        .and(auth())
        .and(s())
        .then(|id: String, a: Option<HeaderValue>, st: State| async move {
            reply(cancel_run(st, id, a).await)
        });

    let console = warp::path::end().and(warp::get()).map(crate::console::page);
    let console_js = warp::path!("console.js")
        .and(warp::get())
        .map(crate::console::script);
    let openapi_json = warp::path!("v1" / "openapi.json")
        .and(warp::get())
        .map(openapi::reply);

    // In groups, each boxed: one chain of all the routes nests its types
    // deeper than rustc's default recursion limit in release builds.
    let pages = healthz
        .or(console)
        .unify()
        .or(console_js)
        .unify()
        .or(openapi_json)
        .unify()
        .or(metrics)
        .unify()
        .boxed();
    let reads = views
        .or(key)
        .unify()
        .or(top)
        .unify()
        .or(streams_list)
        .unify()
        .or(batches)
        .unify()
        .or(dead)
        .unify()
        .boxed();
    let writes = runs_post
        .or(runs_list)
        .unify()
        .or(run_get)
        .unify()
        .or(run_cancel)
        .unify()
        .or(ingest)
        .unify()
        .boxed();
    pages
        .or(reads)
        .unify()
        .or(writes)
        .unify()
        .recover(error::recover)
        .unify()
}

#[cfg(test)]
mod tests;
