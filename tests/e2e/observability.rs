//! What an operator sees of the real binary after real traffic.
//!
//! - `GET /metrics`: the receivers' counters reach it (TCP and HTTP,
//!   exactly what was sent), the histograms count the micro-batches and the
//!   batch run, and Prometheus's own checker (`promtool check metrics`,
//!   installed by `deploy/install-promtool.sh`) finds nothing wrong. Without
//!   promtool the check is skipped unless `LAMINA_REQUIRE_PEERS=1`.
//! - `--log-format json`: every line is a JSON object; a batch run and a
//!   receiver's state change each get a line; no token and no record body
//!   is ever written.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{Server, WorkDir, eventually, free_port, send_tcp, write_config};

fn promtool() -> Option<PathBuf> {
    let path = std::env::var_os("LAMINA_PROMTOOL")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/lamina/tools/promtool-2.42/promtool"))
        })
        .filter(|p| p.is_file());
    if path.is_none() && std::env::var("LAMINA_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!("promtool is not installed (bash deploy/install-promtool.sh)");
    }
    path
}

/// The value of the sample whose series (name and labels) is exactly
/// `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let (s, v) = l.rsplit_once(' ')?;
        (s == series).then(|| v.parse().ok())?
    })
}

fn metrics(server: &Server) -> String {
    let r = server.client().get("/metrics").unwrap();
    assert_eq!(r.status, 200);
    String::from_utf8(r.body).unwrap()
}

#[test]
fn metrics_count_real_traffic_and_pass_promtool() {
    let dir = WorkDir::new("metrics");
    let (http, tcp) = (free_port(), free_port());
    let config = write_config(dir.path(), http, tcp, "");
    let server = Server::start(dir.path(), http, &["--config", config.to_str().unwrap()]);

    let lines: Vec<String> = (0..300)
        .map(|i| format!("w{} w{}", i % 17, i % 5))
        .collect();
    send_tcp(tcp, &lines);
    let body = "{\"user\":\"ann\",\"amount\":5}\n{\"user\":\"bob\",\"amount\":2}\n";
    let r = server
        .client()
        .post("/v1/ingest/events", body.as_bytes(), &[])
        .unwrap();
    assert_eq!(r.status, 200);
    let tcp_series = format!(
        "lamina_receiver_records_total{{stream=\"lines\",receiver=\"tcp_listen 127.0.0.1:{tcp}\"}}"
    );
    eventually(Duration::from_secs(10), || {
        sample(&metrics(&server), &tcp_series) == Some(300.0)
    })
    .unwrap_or_else(|| panic!("{tcp_series} never reached 300:\n{}", metrics(&server)));
    eventually(Duration::from_secs(10), || {
        common::count(&server, "word_counts", "w3") > 0
            && common::count(&server, "amount_by_user", "ann") == 5
    })
    .expect("counted");
    common::batch_run_and_wait(&server);

    let text = metrics(&server);
    let get =
        |series: &str| sample(&text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"));
    assert_eq!(
        get("lamina_receiver_records_total{stream=\"events\",receiver=\"http\"}"),
        2.0
    );
    assert_eq!(
        get("lamina_receiver_bytes_total{stream=\"events\",receiver=\"http\"}"),
        (body.len() - 2) as f64
    );
    assert_eq!(get("lamina_stream_records_total{stream=\"lines\"}"), 300.0);
    assert!(get("lamina_stream_batch_processing_seconds_count{stream=\"lines\"}") >= 1.0);
    assert!(get("lamina_stream_end_to_end_latency_seconds_count{stream=\"lines\"}") >= 1.0);
    assert_eq!(
        get("lamina_stream_end_to_end_latency_seconds_bucket{stream=\"lines\",le=\"+Inf\"}"),
        get("lamina_stream_end_to_end_latency_seconds_count{stream=\"lines\"}")
    );
    assert_eq!(
        get("lamina_batch_run_duration_seconds_count{state=\"succeeded\"}"),
        1.0
    );
    assert!(get("lamina_state_bytes") > 0.0);
    assert!(get("lamina_wal_bytes") > 0.0);
    assert_eq!(get("lamina_view_keys{view=\"amount_by_user\"}"), 2.0);

    if let Some(promtool) = promtool() {
        let mut child = Command::new(promtool)
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
            "promtool check metrics: {}{}\n{text}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(server.terminate().success());
}

#[test]
fn json_logs_have_a_line_per_run_and_receiver_state_and_never_a_token_or_a_body() {
    let dir = WorkDir::new("jsonlogs");
    let http = free_port();
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    const TOKEN: &str = "tok-4f1d9c2e-never-logged";
    const MARKER: &str = "BODY-7c0ffee-never-logged";
    let config = dir.path().join("lamina.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:{http}"

[auth]
token = "{TOKEN}"

[speed]
batch_interval_ms = 50
epoch_ms = 1000

[[stream]]
name = "events"
format = "json"
schema = [ {{ name = "user", type = "string" }}, {{ name = "amount", type = "int64", nullable = true }} ]
  [[stream.receiver]]
  type = "files"
  path = "file://{}"
  glob = "*.json"
  poll_interval_ms = 50

[[view]]
name = "amount_by_user"
stream = "events"
key = {{ column = "user" }}
aggregate = "sum"
column = "amount"

[batch]
schedule = "off"
"#,
            inbox.display()
        ),
    )
    .unwrap();
    let server = Server::start(
        dir.path(),
        http,
        &[
            "--config",
            config.to_str().unwrap(),
            "--log-format",
            "json",
            "--log-level",
            "info",
        ],
    );
    let bearer = format!("Bearer {TOKEN}");
    let auth = [("authorization", bearer.as_str())];
    let body = format!(
        "{{\"user\":\"{MARKER}\",\"amount\":5}}\n{{\"user\":\"ann\",\"amount\":\"{MARKER}\"}}\n"
    );
    let r = server
        .client()
        .post("/v1/ingest/events", body.as_bytes(), &auth)
        .unwrap();
    assert_eq!(r.status, 200);
    // A wrong token is refused, and not written down either.
    let r = server
        .client()
        .post(
            "/v1/ingest/events",
            body.as_bytes(),
            &[("authorization", "Bearer wrong-tok-9d8e7f-never-logged")],
        )
        .unwrap();
    assert_eq!(r.status, 401);
    // A file for the files receiver: it goes from watching to reading.
    std::fs::write(
        inbox.join("a.json"),
        format!("{{\"user\":\"bob\",\"amount\":3,\"note\":\"{MARKER}\"}}\n"),
    )
    .unwrap();
    eventually(Duration::from_secs(10), || {
        common::count(&server, "amount_by_user", "bob") == 3
    })
    .expect("the file's record is counted");
    let r = server.client().post("/v1/batch/runs", b"", &auth).unwrap();
    assert_eq!(r.status, 202);
    eventually(Duration::from_secs(30), || {
        server.log_text().contains("batch run succeeded")
    })
    .expect("the run ends");
    let log = server.log_text();
    assert!(server.terminate().success());
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    let with = |message: &str| -> Vec<&serde_json::Value> {
        lines
            .iter()
            .filter(|l| l["fields"]["message"] == message)
            .collect()
    };
    let run = with("batch run succeeded");
    assert_eq!(run.len(), 1, "{log}");
    eprintln!("{}", run[0]);
    assert_eq!(run[0]["level"], "INFO");
    assert!(run[0]["fields"]["run"].is_u64(), "{}", run[0]);
    let states: Vec<&str> = with("receiver state changed")
        .iter()
        .map(|l| {
            assert_eq!(l["fields"]["stream"], "events", "{l}");
            assert!(
                l["fields"]["receiver"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("files")),
                "{l}"
            );
            eprintln!("{l}");
            l["fields"]["status"].as_str().unwrap()
        })
        .collect();
    assert!(
        states.iter().any(|s| s.starts_with("reading"))
            && states.iter().any(|s| s.starts_with("watching")),
        "{states:?}"
    );
    for secret in [TOKEN, "wrong-tok-9d8e7f-never-logged", MARKER] {
        assert!(!log.contains(secret), "`{secret}` is in the log:\n{log}");
    }
}
