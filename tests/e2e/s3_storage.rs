//! The real binary with its master dataset on a real S3-compatible server
//! (s3s-fs, installed by `deploy/install-s3s.sh`, started here on a free
//! loopback port and stopped by its PID): sealing and batch runs through
//! S3, `kill -9` during runs, an S3 outage mid-run, credentials from the
//! environment instead of `[storage.s3]`, and a plain-HTTP endpoint that
//! was not allowed.

mod common;

#[path = "../support/s3.rs"]
mod s3_server;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use common::{
    Rng, Server, WorkDir, eventually, free_port, ingest_until_acked, lamina, lines_config,
    serve_expecting_exit,
};
use s3_server::S3Server;
use serde_json::Value;

const BUCKET: &str = "lamina-e2e";

fn storage(s3: Option<&S3Server>) -> String {
    format!(
        "[speed]\nbatch_interval_ms = 50\nepoch_ms = 1000\n\n[storage]\nmaster_url = \"s3://{BUCKET}/prod/master\"\nrequest_timeout_ms = 2000\nconnect_timeout_ms = 1000\nretry_timeout_ms = 3000\nmax_retries = 1\n\n{}",
        s3.map_or_else(String::new, S3Server::toml)
    )
}

/// Ingests `n` lines of words drawn from a small vocabulary, each request
/// retried with its key until acknowledged, and adds them to `truth`.
fn ingest(server: &Server, rng: &mut Rng, tag: &str, n: usize, truth: &mut BTreeMap<String, i64>) {
    let client = server.client();
    for i in 0..n {
        let words: Vec<String> = (0..rng.range(1, 4))
            .map(|_| format!("w{}", rng.range(0, 20)))
            .collect();
        for w in &words {
            *truth.entry(w.clone()).or_default() += 1;
        }
        let body = format!("{}\n", words.join(" "));
        ingest_until_acked(&client, "lines", &format!("{tag}-{i}"), &body);
    }
}

/// The merged counts of every word in `truth` that differ from it.
fn differences(server: &Server, truth: &BTreeMap<String, i64>) -> Vec<String> {
    truth
        .iter()
        .filter_map(|(word, want)| {
            let (status, v) = server.get(&format!("/v1/views/word_counts/keys/{word}"));
            let got = v["value"].as_i64().unwrap_or(0);
            (status != 200 || got != *want).then(|| format!("{word}: {got} (want {want}) {v}"))
        })
        .collect()
}

fn assert_exact(server: &Server, truth: &BTreeMap<String, i64>, when: &str) {
    let mut diff = Vec::new();
    let exact = eventually(Duration::from_secs(10), || {
        diff = differences(server, truth);
        diff.is_empty()
    });
    assert!(exact.is_some(), "{when}: {diff:?}\n{}", server.log_text());
}

fn request_run(server: &Server) -> u64 {
    let r = server.client().post("/v1/batch/runs", b"", &[]).unwrap();
    assert_eq!(r.status, 202);
    r.json().unwrap()["id"].as_u64().unwrap()
}

fn wait_run(server: &Server, id: u64, limit: Duration) -> Value {
    let mut last = Value::Null;
    eventually(limit, || {
        last = server.get(&format!("/v1/batch/runs/{id}")).1;
        matches!(
            last["state"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        )
    })
    .unwrap_or_else(|| panic!("run {id} did not end within {limit:?}: {last}"));
    last
}

/// The manifest as s3s-fs keeps it (an object is a file under its root).
fn manifest(s3_root: &Path) -> Value {
    let bytes =
        std::fs::read(s3_root.join(BUCKET).join("prod/master/_manifest.json")).unwrap_or_default();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

#[test]
fn the_master_dataset_on_s3_survives_kill_9_and_an_s3_outage() {
    let Some(binary) = S3Server::binary() else {
        return;
    };
    let seed = common::seed();
    println!("seed {seed} (rerun with LAMINA_E2E_SEED={seed})");
    let mut rng = Rng(seed);
    let dir = WorkDir::new("s3");
    let s3_root = dir.path().join("s3");
    let mut s3 = S3Server::start(&binary, &s3_root);
    s3.create_bucket(BUCKET);
    let http = free_port();
    let config = lines_config(dir.path(), http, None, &storage(Some(&s3)));
    let args = ["--config", config.to_str().unwrap()];
    let mut truth = BTreeMap::new();

    // Sealing and a batch run through S3.
    let mut server = Server::start(dir.path(), http, &args);
    ingest(&server, &mut rng, "a", 30, &mut truth);
    let run = wait_run(&server, request_run(&server), Duration::from_secs(60));
    assert_eq!(run["state"], "succeeded", "{run}\n{}", server.log_text());
    let m = manifest(&s3_root);
    assert!(m["sealed_through"].is_u64(), "{m}");
    let file = m["files"][0]["path"].as_str().unwrap().to_owned();
    assert!(
        s3_root
            .join(BUCKET)
            .join("prod/master")
            .join(&file)
            .is_file(),
        "{file} is in the bucket"
    );
    assert_exact(&server, &truth, "after the first run");

    // kill -9 while a run seals, reads S3 or publishes; then restart.
    for round in 0..2 {
        ingest(&server, &mut rng, &format!("k{round}"), 10, &mut truth);
        request_run(&server);
        std::thread::sleep(rng.millis(0, 400));
        server.kill9();
        server = Server::start(dir.path(), http, &args);
        ingest(&server, &mut rng, &format!("r{round}"), 5, &mut truth);
        let run = wait_run(&server, request_run(&server), Duration::from_secs(60));
        assert_eq!(
            run["state"],
            "succeeded",
            "round {round}: {run}\n{}",
            server.log_text()
        );
        assert_exact(&server, &truth, &format!("after kill -9 round {round}"));
    }

    // S3 goes away: ingest is still acknowledged (the log is local), a run
    // fails with the store's error instead of hanging, /healthz says
    // sealing fails, and queries keep answering exactly.
    s3.stop();
    ingest(&server, &mut rng, "outage", 10, &mut truth);
    let run = wait_run(&server, request_run(&server), Duration::from_secs(40));
    assert_eq!(run["state"], "failed", "{run}");
    println!("during the outage: {run}");
    let error = run["error"].as_str().unwrap_or_default();
    assert!(
        error.contains(&format!("s3://{BUCKET}/prod/master")),
        "the error names the dataset: {run}"
    );
    let unhealthy = eventually(Duration::from_secs(20), || {
        let (status, v) = server.get("/healthz");
        status == 503 && v.to_string().contains("sealing")
    });
    assert!(unhealthy.is_some(), "{:?}", server.get("/healthz"));
    assert_exact(&server, &truth, "during the outage");

    // Back: the next run succeeds and counts everything once.
    s3.restart(&binary);
    let mut last = Value::Null;
    let recovered = eventually(Duration::from_secs(60), || {
        last = wait_run(&server, request_run(&server), Duration::from_secs(40));
        last["state"] == "succeeded"
    });
    assert!(recovered.is_some(), "{last}\n{}", server.log_text());
    assert_exact(&server, &truth, "after the outage");
    assert!(eventually(Duration::from_secs(20), || server.get("/healthz").0 == 200).is_some());
    assert!(server.terminate().success());

    // The same dataset with credentials from the AWS_* variables only, on
    // an empty state directory: the master dataset rebuilds the views.
    std::fs::remove_dir_all(dir.path().join("lamina-data/state")).unwrap();
    let config = lines_config(dir.path(), http, None, &storage(None));
    let mut serve = lamina();
    serve.arg("serve");
    for (key, value) in s3.env() {
        serve.env(key, value);
    }
    let server = Server::start_command(
        serve,
        dir.path(),
        http,
        &["--config", config.to_str().unwrap()],
    );
    let run = wait_run(&server, request_run(&server), Duration::from_secs(60));
    assert_eq!(run["state"], "succeeded", "{run}\n{}", server.log_text());
    assert_exact(&server, &truth, "rebuilt from S3 alone");
    assert!(server.terminate().success());
}

#[test]
fn a_plain_http_endpoint_must_be_allowed() {
    let dir = WorkDir::new("s3-http");
    let http = free_port();
    let config = lines_config(
        dir.path(),
        http,
        None,
        &format!(
            "[storage]\nmaster_url = \"s3://{BUCKET}/p\"\n\n[storage.s3]\nendpoint = \"http://127.0.0.1:{}\"\nregion = \"us-east-1\"\naccess_key_id = \"k\"\nsecret_access_key = \"s\"\n",
            free_port()
        ),
    );
    let (status, output) = serve_expecting_exit(dir.path(), &config, Duration::from_secs(20));
    assert_eq!(status.code(), Some(1), "{output}");
    assert!(
        output.contains("plain HTTP") && output.contains("allow_http"),
        "{output}"
    );
}
