//! Batch runs through the real binary: a run includes everything
//! acknowledged before it was requested, and the master dataset alone
//! rebuilds the batch views.

mod common;

use common::{Server, WorkDir, free_port, write_config};

fn run_and_wait(server: &Server) -> serde_json::Value {
    common::batch_run_and_wait(server)
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
