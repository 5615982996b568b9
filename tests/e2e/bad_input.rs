//! Bad input through the real binary: a clear error each, nothing else
//! lost, no panic, the server keeps serving.

mod common;

use std::time::Duration;

use common::{Server, WorkDir, count, eventually, free_port, lamina, write_config};
use serde_json::json;

#[test]
fn bad_configs_are_refused_with_the_key_named() {
    let dir = WorkDir::new("badconfig");
    let cases = [
        ("[server]\nlisen = \"127.0.0.1:1\"\n", "server.lisen"),
        ("[batch]\nschedule = \"*/61 * * * *\"\n", "batch.schedule"),
        (
            "[speed]\nbatch_interval_ms = 1\n",
            "speed.batch_interval_ms",
        ),
        (
            "[[view]]\nname = \"v\"\nstream = \"nope\"\nkey = { words = \"line\" }\naggregate = \"count\"\n",
            "stream",
        ),
        ("[server\n", "expected"),
    ];
    for (text, named) in cases {
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, text).unwrap();
        let out = lamina()
            .args(["serve", "--config"])
            .arg(&path)
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{text}: {stderr}");
        assert!(
            stderr.contains(named),
            "{text}: error should name `{named}`: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
        let check = lamina().arg("check-config").arg(&path).output().unwrap();
        assert_eq!(check.status.code(), Some(2));
    }
    // Several problems are reported together.
    let path = dir.path().join("two.toml");
    std::fs::write(&path, "[server]\nlisen = 1\n[speed]\nepoch_mss = 5\n").unwrap();
    let out = lamina().arg("check-config").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("server.lisen") && stderr.contains("speed.epoch_mss"),
        "{stderr}"
    );
    assert!(
        !dir.path().join("lamina-data").exists(),
        "a refused config starts nothing"
    );
}

#[test]
fn bad_records_and_requests_get_clear_errors_and_lose_nothing_else() {
    let dir = WorkDir::new("badinput");
    let (http, tcp) = (free_port(), free_port());
    let config = write_config(dir.path(), http, tcp, "");
    let server = Server::start(dir.path(), http, &["--config", config.to_str().unwrap()]);
    let client = server.client();

    // JSON records: two good, one malformed, one with a wrong type.
    let body = "{\"user\":\"ann\",\"amount\":5}\n{oops\n{\"user\":\"ann\",\"amount\":\"x\"}\n{\"user\":\"bob\",\"amount\":2}\n";
    let r = client
        .post("/v1/ingest/events", body.as_bytes(), &[])
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let dead = || server.get("/v1/streams/events/dead_letters").1;
    eventually(Duration::from_secs(5), || dead()["total"] == 2).expect("two dead letters");
    let reasons: Vec<String> = dead()["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["reason"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains("amount") && r.contains("int64")),
        "{reasons:?}"
    );
    // The dead letters are committed with the micro-batch; its views are
    // visible once the batch has been applied to the in-memory tables, a
    // moment later (docs/rest.md: visible from `processing_end_us`).
    eventually(Duration::from_secs(5), || {
        count(&server, "amount_by_user", "ann") == 5 && count(&server, "amount_by_user", "bob") == 2
    })
    .unwrap_or_else(|| {
        panic!(
            "good records counted: ann={} bob={}",
            count(&server, "amount_by_user", "ann"),
            count(&server, "amount_by_user", "bob")
        )
    });

    // Oversized body and oversized record: refused whole, nothing appended.
    let big = vec![b'a'; 17 << 20];
    let r = client.post("/v1/ingest/lines", &big, &[]).unwrap();
    assert_eq!(
        (r.status, r.json().unwrap()["error"]["code"].clone()),
        (413, json!("body_too_large"))
    );
    let mut long = vec![b'b'; (1 << 20) + 1];
    long.extend_from_slice(b"\nshort line\n");
    let r = client.post("/v1/ingest/lines", &long, &[]).unwrap();
    assert_eq!(
        (r.status, r.json().unwrap()["error"]["code"].clone()),
        (413, json!("record_too_large"))
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        count(&server, "word_counts", "short"),
        0,
        "a refused request appends nothing"
    );

    // Unknown view, unknown stream, bad parameter.
    let (status, v) = server.get("/v1/views/nope/keys/x");
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (404, json!("unknown_view"))
    );
    let r = client.post("/v1/ingest/nope", b"x\n", &[]).unwrap();
    assert_eq!(r.status, 404);
    let (status, v) = server.get("/v1/views/word_counts/top?k=zero");
    assert_eq!(
        (status, v["error"]["code"].clone()),
        (400, json!("bad_parameter"))
    );

    // The server still serves and counts.
    let r = client
        .post("/v1/ingest/lines", b"still here\n", &[])
        .unwrap();
    assert_eq!(r.status, 200);
    eventually(Duration::from_secs(5), || {
        count(&server, "word_counts", "still") == 1
    })
    .expect("still counting");
    assert!(
        !server.log_text().contains("panicked"),
        "{}",
        server.log_text()
    );
    assert!(server.terminate().success());
}

/// What a raw HTTP exchange answered: status, body, and how long it took.
struct RawAnswer {
    status: u16,
    body: String,
    took: Duration,
}

/// Writes `request` as bytes on a fresh connection (then closes the sending
/// side if `half_close`) and reads the answer until the server closes the
/// connection, at most `limit`.
fn raw_exchange(http: u16, request: &[u8], half_close: bool, limit: Duration) -> RawAnswer {
    use std::io::{Read, Write};
    let started = std::time::Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", http)).unwrap();
    s.set_read_timeout(Some(limit)).unwrap();
    s.write_all(request).unwrap();
    if half_close {
        s.shutdown(std::net::Shutdown::Write).unwrap();
    }
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => panic!(
                "no complete answer within {limit:?} ({e}); got {:?}",
                String::from_utf8_lossy(&answer)
            ),
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    RawAnswer {
        status,
        body,
        took: started.elapsed(),
    }
}

fn error_code(answer: &RawAnswer) -> String {
    let v: serde_json::Value = serde_json::from_str(&answer.body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", answer.body));
    v["error"]["code"].as_str().unwrap_or_default().to_owned()
}

#[test]
fn malformed_requests_are_4xx_with_json_codes_and_never_hang() {
    let dir = WorkDir::new("badhttp");
    let (http, tcp) = (free_port(), free_port());
    let config = write_config(dir.path(), http, tcp, "");
    // A short request timeout, so that a stalled body is answered quickly.
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[server]\n",
        "[server]\nrequest_timeout_ms = 1500\n",
        1,
    );
    std::fs::write(&config, text).unwrap();
    let server = Server::start(dir.path(), http, &["--config", config.to_str().unwrap()]);
    let limit = Duration::from_secs(10);
    // Request bytes as they are: headers need not be ASCII.
    let post = |headers: &[u8], body: &[u8]| {
        let mut req =
            b"POST /v1/ingest/lines HTTP/1.1\r\nHost: x\r\nConnection: close\r\n".to_vec();
        req.extend_from_slice(headers);
        req.extend_from_slice(b"\r\n");
        req.extend_from_slice(body);
        req
    };

    // A body shorter than its Content-Length, the sending side closed.
    let a = raw_exchange(
        http,
        &post(b"Content-Length: 100\r\n", b"truncated line\n"),
        true,
        limit,
    );
    assert_eq!(
        (a.status, error_code(&a).as_str()),
        (400, "bad_body"),
        "{}",
        a.body
    );

    // The same body, the connection left open: answered once the request
    // timeout passes, not held forever.
    let a = raw_exchange(
        http,
        &post(b"Content-Length: 100\r\n", b"stalled line\n"),
        false,
        limit,
    );
    assert_eq!(
        (a.status, error_code(&a).as_str()),
        (408, "request_timeout"),
        "{}",
        a.body
    );
    assert!(
        a.took >= Duration::from_millis(1400) && a.took < Duration::from_secs(6),
        "{:?}",
        a.took
    );

    // Header values that are not ASCII.
    let a = raw_exchange(
        http,
        &post(
            b"Content-Length: 2\r\nIdempotency-Key: k\xc3\xa9y\r\n",
            b"x\n",
        ),
        false,
        limit,
    );
    assert_eq!(
        (a.status, error_code(&a).as_str()),
        (400, "bad_parameter"),
        "{}",
        a.body
    );
    // No token is configured: the Authorization header is not looked at.
    let a = raw_exchange(
        http,
        &post(
            b"Content-Length: 2\r\nAuthorization: Bearer \xff\xfe\r\n",
            b"x\n",
        ),
        false,
        limit,
    );
    assert_eq!(a.status, 200, "{}", a.body);

    // Malformed before any route runs: hyper answers these itself, with
    // an empty body (documented in docs/rest.md); still 4xx, at once.
    let long_uri = format!(
        "GET /v1/views/{} HTTP/1.1\r\nHost: x\r\n\r\n",
        "a".repeat(70_000)
    );
    for (request, want) in [
        (
            b"GET /v1/views HTTP/1.1\r\nBad Header: x\r\n\r\n".to_vec(),
            400,
        ),
        (b"NOT-HTTP\r\n\r\n".to_vec(), 400),
        (long_uri.into_bytes(), 414),
    ] {
        let a = raw_exchange(http, &request, false, limit);
        assert_eq!(
            a.status,
            want,
            "{:?}",
            String::from_utf8_lossy(&request[..40])
        );
    }

    // Headers that never end: the connection is closed (hyper answers
    // nothing) once the request timeout passes. (A connection that sends
    // no byte at all is not timed: hyper starts the timer at the first.)
    for partial in [
        &b"GET /healthz HTTP/1.1\r\nHost: x\r\n"[..],
        b"POST /v1/ingest/li",
    ] {
        use std::io::{Read, Write};
        let started = std::time::Instant::now();
        let mut s = std::net::TcpStream::connect(("127.0.0.1", http)).unwrap();
        s.set_read_timeout(Some(limit)).unwrap();
        s.write_all(partial).unwrap();
        let mut answer = Vec::new();
        let read = s.read_to_end(&mut answer);
        let took = started.elapsed();
        assert!(
            read.is_ok() || took < limit,
            "{:?}: not closed within {limit:?}: {read:?}",
            String::from_utf8_lossy(partial)
        );
        assert!(
            took >= Duration::from_millis(1400) && took < Duration::from_secs(6),
            "{took:?}"
        );
    }

    // Nothing of the refused requests was ingested; the server still serves.
    eventually(Duration::from_secs(5), || {
        count(&server, "word_counts", "x") == 1
    })
    .expect("the one good record counted");
    assert_eq!(count(&server, "word_counts", "truncated"), 0);
    assert_eq!(count(&server, "word_counts", "stalled"), 0);
    assert!(
        !server.log_text().contains("panicked"),
        "{}",
        server.log_text()
    );
    assert!(server.terminate().success());
}

/// The value of a metric line starting with `prefix` in `/metrics`.
fn metric(server: &Server, prefix: &str) -> Option<f64> {
    let r = server.client().get("/metrics").ok()?;
    let text = String::from_utf8_lossy(&r.body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn idle_tcp_connections_never_lock_producers_out_and_show_in_metrics() {
    use std::io::{Read, Write};
    let dir = WorkDir::new("idletcp");
    let (http, tcp) = (free_port(), free_port());
    let config = write_config(dir.path(), http, tcp, "");
    let listen = format!("listen = \"127.0.0.1:{tcp}\"\n");
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        &listen,
        &format!("{listen}  max_connections = 2\n  idle_timeout_ms = 2500\n"),
        1,
    );
    std::fs::write(&config, text).unwrap();
    let server = Server::start(dir.path(), http, &["--config", config.to_str().unwrap()]);
    let labels = format!("{{stream=\"lines\",receiver=\"tcp_listen 127.0.0.1:{tcp}\"}}");
    let active = format!("lamina_receiver_connections_active{labels}");

    // Both slots held by connections that send nothing.
    let idle: Vec<_> = (0..2)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", tcp)).unwrap())
        .collect();
    eventually(Duration::from_secs(5), || {
        metric(&server, &active) == Some(2.0)
    })
    .expect("two connections open");
    // Once they have been idle for a second, a new producer takes a slot.
    std::thread::sleep(Duration::from_millis(1200));
    let mut producer = std::net::TcpStream::connect(("127.0.0.1", tcp)).unwrap();
    producer.write_all(b"evicting producer\n").unwrap();
    producer.shutdown(std::net::Shutdown::Write).unwrap();
    producer
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let _ = producer.read_to_end(&mut Vec::new());
    eventually(Duration::from_secs(5), || {
        count(&server, "word_counts", "evicting") == 1
    })
    .expect("the new producer's line counted");
    let evicted = format!("lamina_receiver_connections_evicted_total{labels}");
    assert_eq!(metric(&server, &evicted), Some(1.0));
    // The other idle connection is closed by its idle timeout.
    let idle_closed = format!("lamina_receiver_connections_idle_closed_total{labels}");
    eventually(Duration::from_secs(6), || {
        metric(&server, &idle_closed) == Some(1.0)
    })
    .expect("closed after idle_timeout_ms");
    eventually(Duration::from_secs(5), || {
        metric(&server, &active) == Some(0.0)
    })
    .expect("no connection left open");
    let log = server.log_text();
    assert!(log.contains("closing the longest-idle one"), "{log}");
    assert!(log.contains("sent nothing for"), "{log}");
    drop(idle);
    assert!(server.terminate().success());
}
