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

/// `history` in `[[stream]]`: Parquet files pyarrow and DuckDB wrote, under
/// hive-style folders, are read by every batch run before the stream's own
/// epochs; a broken file fails the run naming it, and the previous
/// generation keeps serving.
#[test]
fn history_datasets_of_other_tools_are_read_before_the_streams_epochs() {
    let dir = WorkDir::new("history");
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data");
    let old = dir.path().join("old");
    for (folder, file) in [
        ("day=2026-01-01", "pyarrow_zstd_dict.parquet"),
        ("day=2026-01-02", "duckdb.parquet"),
    ] {
        std::fs::create_dir_all(old.join(folder)).unwrap();
        std::fs::copy(data.join(file), old.join(folder).join("part-0.parquet")).unwrap();
    }
    std::fs::write(old.join("_SUCCESS"), b"").unwrap();
    let http = free_port();
    let config = dir.path().join("lamina.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[server]
listen = "127.0.0.1:{http}"

[speed]
batch_interval_ms = 50
epoch_ms = 1000

[[stream]]
name = "events"
format = "json"
schema = [ {{ name = "user", type = "string", nullable = true }}, {{ name = "amount", type = "int64", nullable = true }} ]
history = ["file://{}"]

[[view]]
name = "amount_by_user"
stream = "events"
key = {{ column = "user" }}
aggregate = "sum"
column = "amount"

[batch]
schedule = "off"
"#,
            old.display()
        ),
    )
    .unwrap();
    let args = ["--config", config.to_str().unwrap()];
    let server = Server::start(dir.path(), http, &args);
    let r = server
        .client()
        .post(
            "/v1/ingest/events",
            b"{\"user\": \"u0\", \"amount\": 5}\n",
            &[],
        )
        .unwrap();
    assert_eq!(r.status, 200);
    let run = run_and_wait(&server);
    // 1000 rows in each history file, one ingested.
    assert_eq!(run["rows"], 2001, "{run}");
    let (_, u0) = server.get("/v1/views/amount_by_user/keys/u0");
    assert_eq!(u0["value"], 2 * 552 + 5, "{u0}");

    // A broken file: the run fails naming it; the generation stays.
    std::fs::create_dir_all(old.join("day=2026-01-03")).unwrap();
    std::fs::copy(
        data.join("truncated.parquet"),
        old.join("day=2026-01-03/part-0.parquet"),
    )
    .unwrap();
    let r = server.client().post("/v1/batch/runs", b"", &[]).unwrap();
    let id = r.json().unwrap()["id"].as_u64().unwrap();
    let mut last = serde_json::Value::Null;
    common::eventually(std::time::Duration::from_secs(60), || {
        last = server.get(&format!("/v1/batch/runs/{id}")).1;
        last["state"] == "failed" || last["state"] == "succeeded"
    })
    .expect("the run ends");
    assert_eq!(last["state"], "failed", "{last}");
    assert!(
        last["error"]
            .as_str()
            .is_some_and(|e| e.contains("day=2026-01-03/part-0.parquet")),
        "{last}"
    );
    let (_, u0) = server.get("/v1/views/amount_by_user/keys/u0");
    assert_eq!(u0["value"], 2 * 552 + 5, "{u0}");
    // Removed again: the next run succeeds.
    std::fs::remove_dir_all(old.join("day=2026-01-03")).unwrap();
    let run = run_and_wait(&server);
    assert_eq!(run["rows"], 2001, "{run}");
    assert!(server.terminate().success());
}
