//! `GET /v1/streams`, the per-micro-batch statistics of a stream, its dead
//! letters, and `GET /metrics`.

use std::fmt::Write as _;
use std::sync::Arc;

use lamina::metrics::Histogram;
use lamina_speed::microbatch::StreamHistograms;
use lamina_speed::receivers::{IngestCounters, IngestSnapshot};

use serde::Deserialize;
use serde_json::json;
use warp::http::StatusCode;
use warp::reply::{Reply, Response};

use super::{ApiError, ApiState};

/// What the API knows about a configured stream.
#[derive(Debug, Clone)]
pub struct StreamInfo {
    /// Its name.
    pub name: String,
    /// `text`, `json` or `csv`.
    pub format: String,
    /// Its receivers, described (e.g. `tcp_listen 127.0.0.1:9999`).
    pub receivers: Vec<String>,
    /// The counters of each receiver, with its description, for `/metrics`.
    pub receiver_counters: Vec<(String, Arc<IngestCounters>)>,
}

fn find<'a>(state: &'a ApiState, raw: &str) -> Result<&'a StreamInfo, ApiError> {
    let name = super::decode_segment(raw)?;
    state
        .streams
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_stream",
                format!("no stream named `{name}`"),
            )
        })
}

/// A stream's committed total of late records.
fn late(state: &ApiState, stream: &str) -> u64 {
    state
        .store
        .position(&crate::store::Position::Late {
            stream: stream.to_owned(),
        })
        .ok()
        .flatten()
        .unwrap_or(0)
}

/// A stream's event-time watermark as RFC 3339, if it has one.
fn watermark(state: &ApiState, stream: &str) -> Option<String> {
    let us = state
        .store
        .position(&crate::store::Position::Watermark {
            stream: stream.to_owned(),
        })
        .ok()
        .flatten()? as i64;
    let mut s = String::new();
    lamina::view::key::write_rfc3339(us, &mut s);
    Some(s)
}

/// `GET /v1/streams`.
pub fn list(state: &ApiState) -> Result<Response, ApiError> {
    let _permit = super::admit(state)?;
    let streams: Vec<_> = state
        .streams
        .iter()
        .map(|s| {
            json!({
                "name": s.name,
                "format": s.format,
                "receivers": s.receivers,
                "receiver_status": s.receiver_counters.iter().map(|(receiver, c)| {
                    let status = c.status();
                    json!({
                        "receiver": receiver,
                        "status": (!status.is_empty()).then_some(status),
                        "records_total": c.snapshot().records,
                        "lag_records": c.snapshot().lag,
                    })
                }).collect::<Vec<_>>(),
                "records_total": state.stats.total_records(&s.name).unwrap_or(0),
                "dead_letters_total": state.store.dead_letter_count(&s.name).unwrap_or(0),
                "late_records_total": late(state, &s.name),
                "watermark": watermark(state, &s.name),
            })
        })
        .collect();
    Ok(warp::reply::json(&json!({"streams": streams})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SinceQuery {
    since: Option<String>,
}

/// `GET /v1/streams/{stream}/batches?since=ID`.
pub fn batches(state: &ApiState, stream: &str, q: SinceQuery) -> Result<Response, ApiError> {
    let _permit = super::admit(state)?;
    let info = find(state, stream)?;
    let since = match q.since.as_deref() {
        None => None,
        Some(raw) => Some(raw.parse::<u64>().map_err(|_| {
            ApiError::bad_parameter(format!("since must be a batch id, got `{raw}`"))
        })?),
    };
    let batches = state.stats.since(&info.name, since).unwrap_or_default();
    Ok(warp::reply::json(&json!({"stream": info.name, "batches": batches})).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitQuery {
    limit: Option<String>,
}

/// `GET /v1/streams/{stream}/dead_letters?limit=N`: the newest first.
pub fn dead_letters(state: &ApiState, stream: &str, q: LimitQuery) -> Result<Response, ApiError> {
    let _permit = super::admit(state)?;
    let info = find(state, stream)?;
    let limit = match q.limit.as_deref() {
        None => 100,
        Some(raw) => raw
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=10_000).contains(n))
            .ok_or_else(|| {
                ApiError::bad_parameter(format!("limit must be 1 to 10000, got `{raw}`"))
            })?,
    };
    let items: Vec<_> = state
        .store
        .dead_letters(&info.name, limit)
        .map_err(|e| ApiError::internal(e.to_string()))?
        .into_iter()
        .map(|d| {
            json!({
                "seq": d.seq,
                "reason": d.reason,
                "record": String::from_utf8_lossy(&d.record),
            })
        })
        .collect();
    Ok(warp::reply::json(&json!({
        "stream": info.name,
        "total": state.store.dead_letter_count(&info.name).unwrap_or(0),
        "items": items,
    }))
    .into_response())
}

/// A receiver counter in `/metrics`: name, type, help, the counter.
type ReceiverMetric = (
    &'static str,
    &'static str,
    &'static str,
    fn(&IngestSnapshot) -> u64,
);

fn histogram_header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
}

/// Bytes of the files directly in `dir` (0 when unreadable).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// `GET /metrics`: Prometheus text format.
pub fn metrics(state: &ApiState) -> Response {
    let mut out = String::new();
    let out = &mut out;
    fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: Vec<(String, f64)>) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    }
    let per_stream = |f: &dyn Fn(&str) -> f64| -> Vec<(String, f64)> {
        state
            .streams
            .iter()
            .map(|s| (format!("{{stream=\"{}\"}}", s.name), f(&s.name)))
            .collect()
    };
    metric(
        out,
        "lamina_stream_records_total",
        "counter",
        "Records taken into micro-batches since start.",
        per_stream(&|s| state.stats.total_records(s).unwrap_or(0) as f64),
    );
    metric(
        out,
        "lamina_stream_dead_letters_total",
        "counter",
        "Records that did not parse, ever.",
        per_stream(&|s| state.store.dead_letter_count(s).unwrap_or(0) as f64),
    );
    metric(
        out,
        "lamina_stream_late_records_total",
        "counter",
        "Records whose event time was before the stream's watermark, ever.",
        per_stream(&|s| late(state, s) as f64),
    );
    metric(
        out,
        "lamina_stream_last_batch_processing_seconds",
        "gauge",
        "Processing time of the stream's last micro-batch.",
        per_stream(&|s| {
            state
                .stats
                .since(s, None)
                .and_then(|b| b.last().map(|b| b.processing_ms / 1e3))
                .unwrap_or(0.0)
        }),
    );
    type Pick = fn(&StreamHistograms) -> &Histogram;
    let stream_histograms: [(&str, &str, Pick); 3] = [
        (
            "lamina_stream_batch_processing_seconds",
            "Processing time of the stream's micro-batches that took records, since start.",
            |h| &h.processing,
        ),
        (
            "lamina_stream_batch_scheduling_delay_seconds",
            "How late the stream's micro-batches that took records started after their scheduled time, since start.",
            |h| &h.scheduling_delay,
        ),
        (
            "lamina_stream_end_to_end_latency_seconds",
            "Per micro-batch, from its earliest record's receipt until the batch was visible to queries, since start.",
            |h| &h.end_to_end,
        ),
    ];
    for (name, help, pick) in stream_histograms {
        histogram_header(out, name, help);
        for s in state.streams.iter() {
            if let Some(h) = state.stats.histograms(&s.name) {
                pick(h).render(name, &format!("stream=\"{}\"", s.name), out);
            }
        }
    }
    histogram_header(
        out,
        "lamina_batch_run_duration_seconds",
        "Batch runs since start, from start to end, by final state.",
    );
    for (st, h) in state.runs.durations() {
        h.render(
            "lamina_batch_run_duration_seconds",
            &format!("state=\"{st}\""),
            out,
        );
    }
    metric(
        out,
        "lamina_state_bytes",
        "gauge",
        "Bytes the state store (views, positions, operator state) takes on disk.",
        vec![(String::new(), state.store.disk_bytes().unwrap_or(0) as f64)],
    );
    metric(
        out,
        "lamina_view_keys",
        "gauge",
        "Keys with data per view.",
        state
            .views
            .iter()
            .map(|v| {
                (
                    format!("{{view=\"{}\"}}", v.name),
                    state.store.key_count(&v.name).unwrap_or(0) as f64,
                )
            })
            .collect(),
    );
    metric(
        out,
        "lamina_view_memory_bytes",
        "gauge",
        "Heap bytes of a view's in-memory table (keys, values, open epochs' deltas), estimated from capacities.",
        state
            .views
            .iter()
            .map(|v| {
                (
                    format!("{{view=\"{}\"}}", v.name),
                    state.store.heap_bytes(&v.name).unwrap_or(0) as f64,
                )
            })
            .collect(),
    );
    metric(
        out,
        "lamina_watermark_epoch",
        "gauge",
        "Epoch through which the served batch generation is complete (-1: none).",
        vec![(
            String::new(),
            state.store.watermark().map_or(-1.0, |w| w as f64),
        )],
    );
    let runs = state.runs.list();
    metric(
        out,
        "lamina_batch_runs",
        "gauge",
        "Batch runs in the history, by state.",
        ["queued", "running", "succeeded", "failed", "cancelled"]
            .iter()
            .map(|st| {
                let n = runs
                    .iter()
                    .filter(|r| {
                        serde_json::to_value(r.state)
                            .ok()
                            .and_then(|v| v.as_str().map(String::from))
                            .as_deref()
                            == Some(st)
                    })
                    .count();
                (format!("{{state=\"{st}\"}}"), n as f64)
            })
            .collect(),
    );
    let per_receiver = |f: &dyn Fn(&IngestSnapshot) -> u64| -> Vec<(String, f64)> {
        state
            .streams
            .iter()
            .flat_map(|s| {
                s.receiver_counters.iter().map(|(receiver, counters)| {
                    (
                        format!("{{stream=\"{}\",receiver=\"{receiver}\"}}", s.name),
                        f(&counters.snapshot()) as f64,
                    )
                })
            })
            .collect()
    };
    let receiver_metrics: [ReceiverMetric; 10] = [
        (
            "lamina_receiver_connections_accepted_total",
            "counter",
            "Connections a receiver accepted (listeners) or established (clients).",
            |c| c.connections_accepted,
        ),
        (
            "lamina_receiver_connections_active",
            "gauge",
            "Connections a receiver has open now.",
            |c| c.connections_active,
        ),
        (
            "lamina_receiver_connections_refused_total",
            "counter",
            "Connections closed at once: max_connections open and none of them idle.",
            |c| c.connections_refused,
        ),
        (
            "lamina_receiver_connections_evicted_total",
            "counter",
            "Idle connections closed to make room for a new one at max_connections.",
            |c| c.connections_evicted,
        ),
        (
            "lamina_receiver_connections_idle_closed_total",
            "counter",
            "Connections closed after sending nothing for idle_timeout_ms.",
            |c| c.connections_idle_closed,
        ),
        (
            "lamina_receiver_records_total",
            "counter",
            "Records a receiver made durable in the write-ahead log.",
            |c| c.records,
        ),
        (
            "lamina_receiver_bytes_total",
            "counter",
            "Payload bytes of the records a receiver made durable (newlines not counted).",
            |c| c.bytes,
        ),
        (
            "lamina_receiver_rejected_total",
            "counter",
            "Records a receiver kept as dead letters (over max_record_bytes).",
            |c| c.rejected,
        ),
        (
            "lamina_receiver_errors_total",
            "counter",
            "Connection errors, failed connects and failed appends of a receiver.",
            |c| c.errors,
        ),
        (
            "lamina_receiver_lag_records",
            "gauge",
            "Records the source holds that a pull receiver (Kafka) has not read yet.",
            |c| c.lag,
        ),
    ];
    for (name, kind, help, field) in receiver_metrics {
        metric(out, name, kind, help, per_receiver(&field));
    }
    if let Some(ingest) = &state.ingest {
        let w = ingest.wal.stats();
        metric(
            out,
            "lamina_wal_appends_total",
            "counter",
            "Appends to the write-ahead log.",
            vec![(String::new(), w.appends as f64)],
        );
        metric(
            out,
            "lamina_wal_records_total",
            "counter",
            "Records appended to the write-ahead log.",
            vec![(String::new(), w.records as f64)],
        );
        metric(
            out,
            "lamina_wal_fsyncs_total",
            "counter",
            "fsyncs of the write-ahead log (group commits).",
            vec![(String::new(), w.fsyncs as f64)],
        );
        metric(
            out,
            "lamina_wal_written_bytes_total",
            "counter",
            "Bytes written to the write-ahead log, framing included.",
            vec![(String::new(), w.bytes as f64)],
        );
        metric(
            out,
            "lamina_wal_segments",
            "gauge",
            "Segment files of the write-ahead log.",
            vec![(String::new(), w.segments as f64)],
        );
        metric(
            out,
            "lamina_wal_bytes",
            "gauge",
            "Bytes the write-ahead log's segment files take on disk.",
            vec![(String::new(), dir_bytes(ingest.wal.dir()) as f64)],
        );
        if let Some(b) = &ingest.backlog {
            metric(
                out,
                "lamina_backlog_records",
                "gauge",
                "Records received and not yet processed by a micro-batch.",
                vec![(String::new(), b.records() as f64)],
            );
            metric(
                out,
                "lamina_backlog_bytes",
                "gauge",
                "Payload bytes received since start and not yet processed.",
                vec![(String::new(), b.bytes() as f64)],
            );
            metric(
                out,
                "lamina_backlog_waits_total",
                "counter",
                "Times a receiver waited, or an HTTP request was told to retry, because the backlog was over its budget.",
                vec![(String::new(), b.waits() as f64)],
            );
        }
    }
    warp::reply::with_header(
        std::mem::take(out),
        "content-type",
        "text/plain; version=0.0.4",
    )
    .into_response()
}
