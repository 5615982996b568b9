//! The REST contract: paths, JSON shapes, status codes and error codes.

use std::sync::Arc;

use lamina::view::{AggValue, AggregateKind};
use lamina_batch::BatchRuns;
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use lamina_speed::microbatch::StatsLog;
use lamina_speed::wal::{Wal, WalConfig};

use super::{ApiState, IngestState, StreamInfo, ViewInfo, routes};
use crate::store::{MicroBatchCommit, ViewStore};

struct Fixture {
    state: Arc<ApiState>,
    dir: std::path::PathBuf,
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn fixture(tag: &str, token: Option<&str>, permits: usize) -> Fixture {
    let dir = std::env::temp_dir().join(format!("lamina-api-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = ViewStore::open(
        &dir,
        &[(
            "word_counts".to_string(),
            lamina::view::AggregateKind::Count,
        )],
    )
    .unwrap();
    store
        .commit(MicroBatchCommit {
            dead_letters: vec![],
            state: vec![],
            batch_id: 1,
            epoch: 0,
            positions: vec![],
            deltas: vec![(
                "word_counts".into(),
                vec![
                    ("to".into(), AggValue::Count(3)),
                    ("be".into(), AggValue::Count(2)),
                    ("a/b c".into(), AggValue::Count(1)),
                ],
            )],
        })
        .unwrap();
    let state = ApiState {
        store: Arc::new(store),
        runs: Arc::new(BatchRuns::new(10, vec![])),
        views: vec![ViewInfo {
            name: "word_counts".into(),
            stream: "lines".into(),
            kind: super::ViewKind::Aggregate(AggregateKind::Count),
        }],
        token: token.map(String::from),
        permits: Semaphore::new(permits),
        streams: vec![StreamInfo {
            name: "lines".into(),
            format: "text".into(),
            receivers: vec!["tcp_listen 127.0.0.1:1".into()],
            receiver_counters: vec![(
                "tcp_listen 127.0.0.1:1".into(),
                Arc::new(Default::default()),
            )],
        }],
        stats: Arc::new(StatsLog::new(10, &["lines".to_string()])),
        ingest: Some(IngestState {
            wal: Wal::open(WalConfig::new(dir.join("wal"))).unwrap().0,
            streams: vec![("lines".into(), 16)],
            idempotency_window_us: 3_600_000_000,
            in_flight: Default::default(),
            recent: Default::default(),
            backlog: None,
            read_only: false,
            counters: vec![Arc::default()],
        }),
        max_body_bytes: 1024,
        request_timeout: std::time::Duration::from_secs(5),
        health: Default::default(),
    };
    Fixture {
        state: Arc::new(state),
        dir,
    }
}

async fn call(f: &Fixture, method: &str, path: &str, auth: Option<&str>) -> (u16, Value) {
    send(f, method, path, auth, None, b"").await
}

async fn send(
    f: &Fixture,
    method: &str,
    path: &str,
    auth: Option<&str>,
    key: Option<&str>,
    body: &[u8],
) -> (u16, Value) {
    let mut req = warp::test::request().method(method).path(path).body(body);
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let resp = req.reply(&routes(Arc::clone(&f.state))).await;
    let body: Value = serde_json::from_slice(resp.body()).unwrap_or(Value::Null);
    (resp.status().as_u16(), body)
}

#[tokio::test]
async fn key_lookups_answer_the_contract_shape() {
    let f = fixture("keys", None, 8);
    let (status, body) = call(&f, "GET", "/v1/views/word_counts/keys/to", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"view": "word_counts", "key": "to", "value": 3, "batch_value": null, "realtime_value": 3, "watermark_epoch": null})
    );
    // Percent-encoded keys are decoded.
    let (_, body) = call(&f, "GET", "/v1/views/word_counts/keys/a%2Fb%20c", None).await;
    assert_eq!(body["key"], "a/b c");
    assert_eq!(body["value"], 1);
    // A key never seen has the identity of the aggregate.
    let (status, body) = call(&f, "GET", "/v1/views/word_counts/keys/never", None).await;
    assert_eq!((status, body["value"].clone()), (200, json!(0)));
    let (status, body) = call(&f, "GET", "/v1/views/nope/keys/x", None).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "unknown_view");
    let (status, body) = call(&f, "GET", "/v1/views/word_counts/keys/%zz", None).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("bad_parameter"))
    );
}

#[tokio::test]
async fn top_and_views() {
    let f = fixture("top", None, 8);
    let (status, body) = call(&f, "GET", "/v1/views/word_counts/top?k=2", None).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"view": "word_counts", "items": [{"key": "to", "value": 3}, {"key": "be", "value": 2}]})
    );
    let (_, body) = call(&f, "GET", "/v1/views/word_counts/top", None).await;
    assert_eq!(
        body["items"].as_array().unwrap().len(),
        3,
        "k defaults to 10"
    );
    for bad in ["k=0", "k=abc", "k=10001", "k=-1"] {
        let (status, body) =
            call(&f, "GET", &format!("/v1/views/word_counts/top?{bad}"), None).await;
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (400, json!("bad_parameter")),
            "{bad}"
        );
    }
    let (status, body) = call(&f, "GET", "/v1/views", None).await;
    assert_eq!(status, 200);
    assert_eq!(body["views"][0]["name"], "word_counts");
    assert_eq!(body["views"][0]["keys"], 3);
    let (status, body) = call(&f, "GET", "/healthz", None).await;
    assert_eq!((status, body), (200, json!({"status": "ok"})));
    let (status, body) = call(&f, "GET", "/v1/nothing/here", None).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("not_found"))
    );
}

#[tokio::test]
async fn batch_runs_need_the_token_when_one_is_configured() {
    let f = fixture("runs", Some("s3cret"), 8);
    let (status, body) = call(&f, "POST", "/v1/batch/runs", None).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (401, json!("unauthorized"))
    );
    let (status, _) = call(&f, "POST", "/v1/batch/runs", Some("Bearer wrong")).await;
    assert_eq!(status, 401);
    let (status, body) = call(&f, "POST", "/v1/batch/runs", Some("Bearer s3cret")).await;
    assert_eq!(status, 202);
    assert_eq!(body["state"], "queued");
    let id = body["id"].as_u64().unwrap();
    let (status, body) = call(&f, "GET", &format!("/v1/batch/runs/{id}"), None).await;
    assert_eq!((status, body["id"].as_u64()), (200, Some(id)));
    let (_, body) = call(&f, "GET", "/v1/batch/runs", None).await;
    assert_eq!(body["runs"][0]["id"].as_u64(), Some(id));
    let (status, body) = call(&f, "GET", "/v1/batch/runs/999", None).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("unknown_run"))
    );
    let (status, body) = call(&f, "GET", "/v1/batch/runs/x", None).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("bad_parameter"))
    );
    let (status, body) = call(
        &f,
        "POST",
        &format!("/v1/batch/runs/{id}/cancel"),
        Some("Bearer s3cret"),
    )
    .await;
    assert_eq!((status, body["state"].clone()), (202, json!("cancelled")));
}

#[tokio::test]
async fn requests_beyond_the_concurrency_cap_get_503() {
    let f = fixture("cap", None, 0);
    let (status, body) = call(&f, "GET", "/v1/views/word_counts/keys/to", None).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (503, json!("overloaded"))
    );
}

#[tokio::test]
async fn ingest_is_durable_before_it_answers_and_idempotent_with_a_key() {
    let f = fixture("ingest", None, 8);
    let (status, body) = send(&f, "POST", "/v1/ingest/lines", None, None, b"a b\nc\n").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (
            body["records"].clone(),
            body["first_seq"].clone(),
            body["last_seq"].clone()
        ),
        (json!(2), json!(0), json!(1))
    );
    let wal = &f.state.ingest.as_ref().unwrap().wal;
    assert_eq!(wal.durable_seq(), 2, "answered only once durable");

    let (status, body) = send(&f, "POST", "/v1/ingest/lines", None, Some("k1"), b"x\n").await;
    assert_eq!((status, body["duplicate"].clone()), (200, json!(false)));
    let (status, body) = send(&f, "POST", "/v1/ingest/lines", None, Some("k1"), b"x\n").await;
    assert_eq!(
        (status, body["duplicate"].clone()),
        (200, json!(true)),
        "a retry appends nothing"
    );
    assert_eq!(wal.durable_seq(), 4, "the key and one record");

    let (status, body) = send(&f, "POST", "/v1/ingest/nope", None, None, b"x").await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("unknown_stream"))
    );
    let (status, body) = send(
        &f,
        "POST",
        "/v1/ingest/lines",
        None,
        None,
        b"short\nthis line is longer than sixteen\n",
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (413, json!("record_too_large"))
    );
    let (status, body) = send(&f, "POST", "/v1/ingest/lines", None, None, &[b'a'; 2000]).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (413, json!("body_too_large"))
    );
    assert_eq!(wal.durable_seq(), 4, "rejected requests append nothing");
    let (status, _) = send(&f, "POST", "/v1/ingest/lines", None, Some(""), b"x").await;
    assert_eq!(status, 400);
    // HTTP ingest's counters (receiver `http` in /metrics): the records and
    // bytes it made durable — not the duplicate, not the refused requests.
    let counted = f.state.ingest.as_ref().unwrap().counters[0].snapshot();
    assert_eq!((counted.records, counted.bytes, counted.errors), (3, 5, 0));
}

#[tokio::test]
async fn streams_batches_dead_letters_and_metrics() {
    let f = fixture("streams", None, 8);
    let (status, body) = call(&f, "GET", "/v1/streams", None).await;
    assert_eq!(
        (status, body["streams"][0]["name"].clone()),
        (200, json!("lines"))
    );
    let (status, body) = call(&f, "GET", "/v1/streams/lines/batches?since=3", None).await;
    assert_eq!((status, body["batches"].clone()), (200, json!([])));
    let (status, _) = call(&f, "GET", "/v1/streams/lines/batches?since=x", None).await;
    assert_eq!(status, 400);
    let (status, body) = call(&f, "GET", "/v1/streams/nope/batches", None).await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (404, json!("unknown_stream"))
    );
    let (status, body) = call(&f, "GET", "/v1/streams/lines/dead_letters", None).await;
    assert_eq!((status, body["total"].clone()), (200, json!(0)));
    let resp = warp::test::request()
        .path("/metrics")
        .reply(&routes(Arc::clone(&f.state)))
        .await;
    assert_eq!(resp.status(), 200);
    let text = String::from_utf8(resp.body().to_vec()).unwrap();
    assert!(
        text.contains("lamina_view_keys{view=\"word_counts\"} 3"),
        "{text}"
    );
    let memory: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("lamina_view_memory_bytes{view=\"word_counts\"} "))
        .and_then(|v| v.parse().ok())
        .expect("a memory gauge for the view");
    assert!(memory > 0.0, "{text}");
    assert!(
        text.contains("# TYPE lamina_wal_fsyncs_total counter"),
        "{text}"
    );
    for name in [
        "lamina_receiver_connections_refused_total",
        "lamina_receiver_connections_evicted_total",
        "lamina_receiver_connections_idle_closed_total",
        "lamina_receiver_connections_active",
    ] {
        assert!(
            text.contains(&format!(
                "{name}{{stream=\"lines\",receiver=\"tcp_listen 127.0.0.1:1\"}} 0"
            )),
            "{name}: {text}"
        );
    }
}

/// Sends a request with raw header bytes (not necessarily ASCII).
async fn send_raw_headers(f: &Fixture, path: &str, headers: &[(&str, &[u8])]) -> (u16, Value) {
    let mut req = warp::test::request().method("POST").path(path).body("x\n");
    for (name, value) in headers {
        req = req.header(*name, warp::http::HeaderValue::from_bytes(value).unwrap());
    }
    let resp = req.reply(&routes(Arc::clone(&f.state))).await;
    let body: Value = serde_json::from_slice(resp.body()).unwrap_or(Value::Null);
    (resp.status().as_u16(), body)
}

#[tokio::test]
async fn non_ascii_headers_are_client_errors_with_a_json_code() {
    let f = fixture("nonascii", None, 8);
    let wal = &f.state.ingest.as_ref().unwrap().wal;
    // An Idempotency-Key that is not ASCII: 400, nothing appended.
    let (status, body) = send_raw_headers(
        &f,
        "/v1/ingest/lines",
        &[("idempotency-key", "clé-ü".as_bytes())],
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("bad_parameter")),
        "{body}"
    );
    assert_eq!(wal.durable_seq(), 0, "nothing appended");
    // Without a configured token the Authorization header is not looked at.
    let (status, body) = send_raw_headers(
        &f,
        "/v1/ingest/lines",
        &[("authorization", b"Bearer \xff\xfe")],
    )
    .await;
    assert_eq!((status, body["records"].clone()), (200, json!(1)), "{body}");
    let (status, _) = send_raw_headers(
        &f,
        "/v1/batch/runs",
        &[("authorization", b"Bearer \xc3\xa9")],
    )
    .await;
    assert_eq!(status, 202);

    // With a token, a non-ASCII Authorization is a wrong token: 401.
    let f = fixture("nonascii-auth", Some("s3cret"), 8);
    for path in [
        "/v1/ingest/lines",
        "/v1/batch/runs",
        "/v1/batch/runs/1/cancel",
    ] {
        let (status, body) =
            send_raw_headers(&f, path, &[("authorization", b"Bearer s3cr\xc3\xa9t")]).await;
        assert_eq!(
            (status, body["error"]["code"].clone()),
            (401, json!("unauthorized")),
            "{path}: {body}"
        );
    }
    // The right token and a non-ASCII key: the key is the problem.
    let (status, body) = send_raw_headers(
        &f,
        "/v1/ingest/lines",
        &[
            ("authorization", b"Bearer s3cret"),
            ("idempotency-key", b"\x80"),
        ],
    )
    .await;
    assert_eq!(
        (status, body["error"]["code"].clone()),
        (400, json!("bad_parameter")),
        "{body}"
    );
    assert_eq!(f.state.ingest.as_ref().unwrap().wal.durable_seq(), 0);
}

#[tokio::test]
async fn every_rejection_is_json_with_a_code() {
    let f = fixture("rejections", None, 8);
    let cases: [(&str, &str, u16, &str); 5] = [
        ("GET", "/nope", 404, "not_found"),
        ("DELETE", "/v1/views", 405, "method_not_allowed"),
        (
            "GET",
            "/v1/views/word_counts/top?k=1&x=2",
            400,
            "bad_parameter",
        ),
        (
            "GET",
            "/v1/views/word_counts/keys/%ZZ",
            400,
            "bad_parameter",
        ),
        (
            "GET",
            "/v1/streams/lines/batches?since=x",
            400,
            "bad_parameter",
        ),
    ];
    for (method, path, want_status, want_code) in cases {
        let (status, body) = call(&f, method, path, None).await;
        assert_eq!(
            (status, body["error"]["code"].as_str()),
            (want_status, Some(want_code)),
            "{method} {path}: {body}"
        );
        assert!(body["error"]["message"].is_string(), "{body}");
    }
}

async fn send_typed(f: &Fixture, path: &str, content_type: &str, body: &[u8]) -> (u16, Value) {
    let resp = warp::test::request()
        .method("POST")
        .path(path)
        .header("content-type", content_type)
        .body(body)
        .reply(&routes(Arc::clone(&f.state)))
        .await;
    let body: Value = serde_json::from_slice(resp.body()).unwrap_or(Value::Null);
    (resp.status().as_u16(), body)
}

#[tokio::test]
async fn flume_http_json_events_are_stored_in_envelopes_with_their_headers() {
    use lamina_speed::envelope::Envelope;
    let f = fixture("flume-json", None, 8);
    let wal = &f.state.ingest.as_ref().unwrap().wal;
    let events =
        br#"[{"headers": {"host": "h1", "app": "web"}, "body": "to be"}, {"body": "or not"}]"#;
    // Selected by the query parameter...
    let (status, body) = send(
        &f,
        "POST",
        "/v1/ingest/lines?format=flume",
        None,
        None,
        events,
    )
    .await;
    assert_eq!((status, body["records"].clone()), (200, json!(2)), "{body}");
    // ... or by the Content-Type, with a charset other than UTF-8.
    let (status, body) = send_typed(
        &f,
        "/v1/ingest/lines",
        "application/flume+json; charset=ISO-8859-1",
        b"[{\"headers\": {\"h\": \"caf\xe9\"}, \"body\": \"na\xefve\"}]",
    )
    .await;
    assert_eq!((status, body["records"].clone()), (200, json!(1)), "{body}");
    let mut got = Vec::new();
    wal.read_range(0..wal.durable_seq(), |_, stream, _, payload| {
        let e = Envelope::decode(payload).unwrap();
        let headers: Vec<String> = e
            .headers
            .iter()
            .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v)))
            .collect();
        got.push((
            stream,
            headers.join(","),
            String::from_utf8_lossy(e.value).into_owned(),
        ));
    })
    .unwrap();
    let id = lamina_speed::control::ENVELOPED;
    assert_eq!(
        got,
        [
            (id, "app=web,host=h1".to_owned(), "to be".to_owned()),
            (id, String::new(), "or not".to_owned()),
            (id, "h=café".to_owned(), "naïve".to_owned()),
        ]
    );
    // Bad input: nothing appended, a clear error.
    let before = wal.durable_seq();
    for (path, body, code) in [
        (
            "/v1/ingest/lines?format=flume",
            &b"{\"body\": 1}"[..],
            "bad_body",
        ),
        (
            "/v1/ingest/lines?format=flume",
            br#"[{"body": "longer than sixteen bytes"}]"#,
            "record_too_large",
        ),
        ("/v1/ingest/lines?format=avro", b"[]", "bad_parameter"),
        ("/v1/ingest/lines?fromat=flume", b"[]", "bad_parameter"),
    ] {
        let (status, reply) = send(&f, "POST", path, None, None, body).await;
        assert_eq!(reply["error"]["code"], code, "{path}: {status} {reply}");
    }
    let (status, reply) = send_typed(
        &f,
        "/v1/ingest/lines",
        "application/flume+json; charset=koi8-r",
        b"[]",
    )
    .await;
    assert_eq!(
        (status, reply["error"]["code"].clone()),
        (415, json!("unsupported_charset"))
    );
    assert_eq!(wal.durable_seq(), before);
    // Counted as HTTP ingest.
    let counted = f.state.ingest.as_ref().unwrap().counters[0].snapshot();
    assert_eq!(counted.records, 3);
}
