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

/// Compaction through the real binary: after a run, a stream's small epoch
/// files are one merged file; the files it replaced go after the retention
/// (0 here, so at the next run); counts stay exact across runs, `kill -9`
/// and a restart; `lamina batch run --wait` says what was merged.
#[test]
fn small_epoch_files_are_compacted_after_runs_and_counts_stay_exact() {
    use std::time::Duration;
    let dir = WorkDir::new("compaction");
    let (http, tcp) = (free_port(), free_port());
    let config = write_config(
        dir.path(),
        http,
        tcp,
        "compaction_min_files = 2\ncompaction_retention_ms = 0\n",
    );
    let args = ["--config", config.to_str().unwrap()];
    let mut server = Server::start(dir.path(), http, &args);
    let master = dir.path().join("lamina-data/master");
    let manifest = || -> serde_json::Value {
        serde_json::from_slice(&std::fs::read(master.join("_manifest.json")).unwrap()).unwrap()
    };
    let listed = || -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(master.join("lines"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    let mut want = 0i64;
    let ingest = |server: &Server, n: usize| -> i64 {
        let body = "alpha beta\n".repeat(n);
        let r = server
            .client()
            .post("/v1/ingest/lines", body.as_bytes(), &[])
            .unwrap();
        assert_eq!(r.status, 200);
        n as i64
    };
    // Records in 4 epochs (1 s each), then a run: 5 epoch files (the run
    // closes the current epoch) merged into one.
    for i in 0..4 {
        want += ingest(&server, 10 + i);
        std::thread::sleep(Duration::from_millis(1100));
    }
    let cli_run = |server: &Server| {
        let out = common::lamina()
            .args([
                "batch",
                "run",
                "--wait",
                "--server",
                &format!("http://127.0.0.1:{http}"),
            ])
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{said}{}{}",
            String::from_utf8_lossy(&out.stderr),
            server.log_text()
        );
        said
    };
    let said = cli_run(&server);
    assert!(said.contains("compaction: "), "{said}");
    let (_, runs) = server.get("/v1/batch/runs");
    let c = &runs["runs"][0]["compaction"];
    assert!(c["files_in"].as_u64().unwrap() >= 4, "{runs}");
    assert_eq!(c["files_out"], 1, "{runs}");
    assert_eq!(c["error"], serde_json::Value::Null, "{runs}");
    let m = manifest();
    let lines: Vec<&serde_json::Value> = m["files"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["stream"] == "lines")
        .collect();
    assert_eq!(lines.len(), 1, "{m}");
    assert!(
        lines[0]["path"]
            .as_str()
            .unwrap()
            .starts_with("lines/compacted-"),
        "{m}"
    );
    assert_eq!(lines[0]["rows"], want, "{m}");
    assert_eq!(common::count(&server, "word_counts", "alpha"), want);

    // More epochs, kill -9, restart, run: the merged file and the new ones
    // merge again, the replaced files are deleted, counts exact.
    for i in 0..2 {
        want += ingest(&server, 20 + i);
        std::thread::sleep(Duration::from_millis(1100));
    }
    server.kill9();
    server = Server::start(dir.path(), http, &args);
    let run = common::batch_run_and_wait(&server);
    assert!(
        run["compaction"]["files_deleted"].as_u64().unwrap() >= 4,
        "{run}"
    );
    assert_eq!(common::count(&server, "word_counts", "alpha"), want);
    let (_, alpha) = server.get("/v1/views/word_counts/keys/alpha");
    assert_eq!(alpha["batch_value"], want, "{alpha}");
    // One more run deletes what the last one replaced: only the merged
    // file is left.
    common::batch_run_and_wait(&server);
    let names = listed();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].starts_with("compacted-"), "{names:?}");
    assert_eq!(common::count(&server, "word_counts", "beta"), want);
    assert!(server.terminate().success());

    // The merged files alone rebuild the views.
    std::fs::remove_dir_all(dir.path().join("lamina-data/state")).unwrap();
    let server = Server::start(dir.path(), http, &args);
    common::batch_run_and_wait(&server);
    assert_eq!(common::count(&server, "word_counts", "alpha"), want);
    assert!(server.terminate().success());
}
