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
    assert_eq!(count(&server, "amount_by_user", "ann"), 5);
    assert_eq!(count(&server, "amount_by_user", "bob"), 2);

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
