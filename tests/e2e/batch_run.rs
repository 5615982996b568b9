//! Batch runs through the real binary: a run includes everything
//! acknowledged before it was requested, and the master dataset alone
//! rebuilds the batch views.

mod common;

use std::time::Duration;

use common::{Server, WorkDir, eventually, free_port, write_config};

fn run_and_wait(server: &Server) -> serde_json::Value {
    let r = server.client().post("/v1/batch/runs", b"", &[]).unwrap();
    assert_eq!(r.status, 202);
    let id = r.json().unwrap()["id"].as_u64().unwrap();
    let mut last = serde_json::Value::Null;
    eventually(Duration::from_secs(30), || {
        last = server.get(&format!("/v1/batch/runs/{id}")).1;
        matches!(
            last["state"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        )
    })
    .expect("the run ends");
    assert_eq!(last["state"], "succeeded", "{last}");
    last
}

/// Regression: a run requested right after an ingest was acknowledged, but
/// before a micro-batch had taken the records, left them out (they went to
/// the next epoch).
#[test]
fn a_run_right_after_an_ingest_includes_it_and_the_master_dataset_rebuilds_the_views() {
    let dir = WorkDir::new("batchrun");
    let (http, tcp) = (free_port(), free_port());
    let config = write_config(dir.path(), http, tcp, "");
    let args = ["--config", config.to_str().unwrap()];
    let server = Server::start(dir.path(), http, &args);
    let r = server
        .client()
        .post("/v1/ingest/lines", b"alpha beta alpha\n", &[])
        .unwrap();
    assert_eq!(r.status, 200);
    // No wait: the run is requested at once.
    let run = run_and_wait(&server);
    assert_eq!(run["rows"], 1, "{run}");
    let (_, alpha) = server.get("/v1/views/word_counts/keys/alpha");
    assert_eq!(
        (alpha["batch_value"].as_i64(), alpha["value"].as_i64()),
        (Some(2), Some(2)),
        "{alpha}"
    );
    assert!(server.terminate().success());

    // The state directory is gone; the master dataset is not.
    std::fs::remove_dir_all(dir.path().join("lamina-data/state")).unwrap();
    let server = Server::start(dir.path(), http, &args);
    run_and_wait(&server);
    let (_, alpha) = server.get("/v1/views/word_counts/keys/alpha");
    assert_eq!(alpha["value"], 2, "{alpha}");
    assert!(server.terminate().success());
}
