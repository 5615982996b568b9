//! One writer per master dataset: a second server pointed at a dataset
//! another server writes to is refused at start-up, through the real
//! binary. (Regression: both started, their batch runs mixed epochs, and
//! ~676k acknowledged records disappeared from one of them.)

mod common;

use std::time::Duration;

use common::{
    Server, WorkDir, count, eventually, free_port, send_tcp, serve_expecting_exit, write_config,
};

/// Runs a server that must be refused; its exit code and output.
fn refused(dir: &std::path::Path, config: &std::path::Path) -> (Option<i32>, String) {
    let (status, log) = serve_expecting_exit(dir, config, Duration::from_secs(20));
    (status.code(), log)
}

#[test]
fn a_second_writer_of_the_same_master_dataset_is_refused() {
    let shared = WorkDir::new("shared-master");
    let master = format!(
        "[storage]\nmaster_url = \"file://{}\"\n",
        shared.path().display()
    );
    let a_dir = WorkDir::new("shared-a");
    let b_dir = WorkDir::new("shared-b");
    let (a_http, a_tcp) = (free_port(), free_port());
    let a_config = write_config(a_dir.path(), a_http, a_tcp, &master);
    let b_config = write_config(b_dir.path(), free_port(), free_port(), &master);
    let a_args = ["--config", a_config.to_str().unwrap()];

    let a = Server::start(a_dir.path(), a_http, &a_args);
    send_tcp(a_tcp, &["one two".to_string()]);
    assert!(
        eventually(Duration::from_secs(10), || count(&a, "word_counts", "one")
            == 1)
        .is_some()
    );

    let (code, log) = refused(b_dir.path(), &b_config);
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("another writer"), "{log}");
    assert!(
        log.contains(&a_dir.path().display().to_string()),
        "the error names the other server's state directory: {log}"
    );
    assert!(!log.contains("panicked"), "{log}");

    // The first server goes on: its records are sealed and batch-run.
    let r = a.client().post("/v1/batch/runs", b"", &[]).unwrap();
    let (status, run) = (r.status, r.json().unwrap());
    assert_eq!(status, 202, "{run}");
    let id = run["id"].as_u64().unwrap();
    assert!(
        eventually(Duration::from_secs(30), || a
            .get(&format!("/v1/batch/runs/{id}"))
            .1["state"]
            == "succeeded")
        .is_some(),
        "{}",
        a.log_text()
    );
    assert_eq!(count(&a, "word_counts", "one"), 1);

    // Reading it stays possible, read-only, while its writer runs: no
    // lease, no ingest, batch runs over what the writer sealed.
    let r_dir = WorkDir::new("shared-reader");
    let r_http = free_port();
    let r_config = write_config(
        r_dir.path(),
        r_http,
        free_port(),
        &format!("{master}master_read_only = true\n"),
    );
    let reader = Server::start(
        r_dir.path(),
        r_http,
        &["--config", r_config.to_str().unwrap()],
    );
    let r = reader
        .client()
        .post("/v1/ingest/lines", b"x\n", &[])
        .unwrap();
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json().unwrap()["error"]["code"], "read_only");
    let r = reader.client().post("/v1/batch/runs", b"", &[]).unwrap();
    let id = r.json().unwrap()["id"].as_u64().unwrap();
    assert!(
        eventually(Duration::from_secs(30), || reader
            .get(&format!("/v1/batch/runs/{id}"))
            .1["state"]
            == "succeeded")
        .is_some(),
        "{}",
        reader.log_text()
    );
    assert_eq!(count(&reader, "word_counts", "one"), 1);
    assert!(reader.terminate().success());
    // The writer was not disturbed.
    send_tcp(a_tcp, &["one".to_string()]);
    assert!(
        eventually(Duration::from_secs(10), || count(&a, "word_counts", "one")
            == 2)
        .is_some()
    );

    // Killed and restarted on its own state, the owner takes its lease
    // back at once.
    a.kill9();
    let a = Server::start(a_dir.path(), a_http, &a_args);
    assert_eq!(count(&a, "word_counts", "one"), 2);
    let (code, log) = refused(b_dir.path(), &b_config);
    assert_eq!(code, Some(1), "{log}");

    // Stopped, it releases the lease: the other server may start.
    assert!(a.terminate().success());
    let b_http: u16 = std::fs::read_to_string(&b_config)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("listen = \"127.0.0.1:"))
        .and_then(|p| p.trim_end_matches('"').parse().ok())
        .unwrap();
    let b = Server::start(
        b_dir.path(),
        b_http,
        &["--config", b_config.to_str().unwrap()],
    );
    assert!(b.terminate().success());
}
