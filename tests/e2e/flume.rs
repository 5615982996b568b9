//! The `flume_avro` receiver through the real binary, driven by an
//! independent client — Apache Avro's own Python IPC `Requestor` over
//! Avro's Netty framing (`tests/peers/flume_avro_client.py`) — and Flume's
//! HTTP source JSON on the ingest endpoint.
//!
//! - Every acknowledged event is counted once, its headers in `_headers`.
//! - With a backlog budget far below the load, the receiver answers FAILED
//!   (nothing stored), the client retries, and the counts are still exact.
//!
//! Skipped (with a message) when the peers' Python is not installed, unless
//! `LAMINA_REQUIRE_PEERS=1` — the README's test command installs it and sets
//! that.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::{Server, WorkDir, count, eventually, free_port, peer_python, peer_script};

fn config(dir: &Path, http: u16, flume: u16, speed: &str) -> String {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:{http}"

[speed]
{speed}

[[stream]]
name = "lines"
format = "text"
  [[stream.receiver]]
  type = "flume_avro"
  listen = "127.0.0.1:{flume}"

[[view]]
name = "word_counts"
stream = "lines"
key = {{ words = "line" }}
aggregate = "count"

[[view]]
name = "by_headers"
stream = "lines"
key = {{ column = "_headers" }}
aggregate = "count"

[batch]
schedule = "off"
"#
    );
    let path = dir.join("lamina.toml");
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Runs the Python client: `batches` appendBatch calls of `per_batch`
/// events; returns the acknowledged batches it printed.
fn send(python: &Path, port: u16, batches: u32, per_batch: u32, prefix: &str) -> usize {
    let out = Command::new(python)
        .arg(peer_script("flume_avro_client.py"))
        .args(["127.0.0.1", &port.to_string()])
        .args([&batches.to_string(), &per_batch.to_string(), prefix])
        .output()
        .expect("the client runs");
    assert!(
        out.status.success(),
        "client failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).lines().count()
}

#[test]
fn avro_rpc_batches_are_counted_once_with_their_headers() {
    let Some(python) = peer_python() else {
        return;
    };
    let dir = WorkDir::new("flume");
    let (http, flume) = (free_port(), free_port());
    let cfg = config(dir.path(), http, flume, "batch_interval_ms = 50");
    let server = Server::start(dir.path(), http, &["--config", cfg.as_str()]);
    assert_eq!(send(&python, flume, 20, 50, "a"), 20);
    // Every body has one word w0..w9: 1000 events, 100 of each.
    let exact = eventually(Duration::from_secs(20), || {
        (0..10).all(|i| count(&server, "word_counts", &format!("w{i}")) == 100)
    });
    assert!(exact.is_some(), "{}", server.log_text());
    assert_eq!(count(&server, "by_headers", r#"{"batch":"7"}"#), 50);

    // Flume's HTTP source JSON on the ingest endpoint, into the same stream.
    let body = r#"[{"headers": {"batch": "http"}, "body": "w1 w2"}, {"body": "w1"}]"#;
    let r = server
        .client()
        .post("/v1/ingest/lines?format=flume", body.as_bytes(), &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(
        eventually(Duration::from_secs(10), || count(
            &server,
            "word_counts",
            "w1"
        ) == 102)
        .is_some()
    );
    assert_eq!(count(&server, "by_headers", r#"{"batch":"http"}"#), 1);
    assert_eq!(count(&server, "word_counts", "w2"), 101);
}

#[test]
fn a_full_backlog_answers_failed_and_the_retried_batches_count_once() {
    let Some(python) = peer_python() else {
        return;
    };
    let dir = WorkDir::new("flume-backlog");
    let (http, flume) = (free_port(), free_port());
    // Micro-batches every 2 s and room for 1000 unprocessed records: most
    // batches of 500 find the backlog full and are answered FAILED.
    let cfg = config(
        dir.path(),
        http,
        flume,
        "batch_interval_ms = 2000\nmax_backlog_records = 1000",
    );
    let server = Server::start(dir.path(), http, &["--config", cfg.as_str()]);
    assert_eq!(send(&python, flume, 8, 500, "b"), 8);
    let exact = eventually(Duration::from_secs(30), || {
        (0..10).all(|i| count(&server, "word_counts", &format!("w{i}")) == 400)
    });
    assert!(exact.is_some(), "{}", server.log_text());
    let metrics = server.client().get("/metrics").unwrap();
    let text = String::from_utf8_lossy(&metrics.body).into_owned();
    let waits: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("lamina_backlog_waits_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(waits > 0.0, "no batch was refused:\n{text}");
}
