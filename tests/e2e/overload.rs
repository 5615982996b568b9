//! Overload through the real binary: input beyond the backlog budget waits
//! (TCP) or is told to retry (HTTP 503 with Retry-After); nothing
//! acknowledged is lost, and the server keeps answering queries.

mod common;

use std::time::Duration;

use common::{Server, WorkDir, count, eventually, free_port, lines_config, send_tcp};

fn config(dir: &std::path::Path, http: u16, tcp: u16) -> std::path::PathBuf {
    // Slow micro-batches (every 2 s) and the smallest record budget, so the
    // backlog passes its budget within one interval.
    lines_config(
        dir,
        http,
        Some(tcp),
        "[speed]\nbatch_interval_ms = 2000\nepoch_ms = 60000\nmax_backlog_records = 1000",
    )
}

#[test]
fn input_beyond_the_backlog_budget_waits_or_is_told_to_retry_and_nothing_is_lost() {
    let dir = WorkDir::new("overload");
    let (http, tcp) = (free_port(), free_port());
    let path = config(dir.path(), http, tcp);
    let server = Server::start(dir.path(), http, &["--config", path.to_str().unwrap()]);
    let client = server.client();
    let body = "h\n".repeat(600);

    // HTTP: accepted while under budget, then 503 with Retry-After until a
    // micro-batch has taken the backlog, then accepted again.
    let mut accepted = 0;
    let mut refused = None;
    for _ in 0..10 {
        let r = client
            .post("/v1/ingest/lines", body.as_bytes(), &[])
            .unwrap();
        match r.status {
            200 => accepted += 600,
            503 => {
                refused = Some(r);
                break;
            }
            other => panic!("unexpected {other}: {}", r.text()),
        }
    }
    let refused = refused.expect("the budget of 1000 records refused a request");
    assert_eq!(refused.header("retry-after").as_deref(), Some("1"));
    let v = refused.json().unwrap();
    assert_eq!(v["error"]["code"], "backlog_full", "{v}");
    assert!(accepted >= 1000, "accepted {accepted} before refusing");
    // Queries and health answer meanwhile.
    assert_eq!(server.get("/healthz").0, 200);
    assert_eq!(server.get("/v1/views/word_counts/keys/h").0, 200);
    // Once a micro-batch has run, ingest is accepted again.
    let again = eventually(Duration::from_secs(10), || {
        client
            .post("/v1/ingest/lines", body.as_bytes(), &[])
            .unwrap()
            .status
            == 200
    });
    assert!(again.is_some(), "{}", server.log_text());
    accepted += 600;

    // TCP: 5,000 lines at once; the receiver stops reading while the
    // backlog is full, and takes the rest later. None is lost.
    let lines: Vec<String> = (0..5000).map(|_| "t".to_string()).collect();
    send_tcp(tcp, &lines);
    assert!(
        eventually(Duration::from_secs(40), || count(
            &server,
            "word_counts",
            "t"
        ) == 5000)
        .is_some(),
        "tcp lines counted: {}\n{}",
        count(&server, "word_counts", "t"),
        server.log_text()
    );
    assert!(
        eventually(Duration::from_secs(10), || count(
            &server,
            "word_counts",
            "h"
        ) == accepted)
        .is_some(),
        "http lines counted: {} of {accepted}",
        count(&server, "word_counts", "h")
    );
    let metrics = client.get("/metrics").unwrap().text();
    let waits: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("lamina_backlog_waits_total "))
        .and_then(|v| v.parse().ok())
        .expect("the backlog metric");
    assert!(waits >= 2.0, "an HTTP refusal and a TCP wait: {waits}");
    assert!(server.terminate().success());
}
