//! An S3 server that goes away in the middle of a batch run's reads (a
//! real s3s-fs, stopped by its PID once the run has handed over its first
//! partition): the run fails within the store's deadlines with an error
//! naming the file it could not read, and once the server is back the next
//! run computes the exact generation. Skips itself without s3s-fs unless
//! `LAMINA_REQUIRE_PEERS=1`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::StringArray;
use arrow::record_batch::RecordBatch;
use lamina::Context;
use lamina::master::MasterStore;
use lamina::view::{AggValue, AggregateKind, KeySpec, ViewSpec};
use lamina_batch::{BatchView, ViewInput, compute_generation, stream_generation};
use tokio::sync::watch;

#[path = "../../tests/support/s3.rs"]
mod s3_server;

use s3_server::S3Server;

fn word_counts() -> Vec<BatchView> {
    vec![BatchView::Config(ViewInput {
        stream: "lines".into(),
        spec: ViewSpec {
            name: "word_counts".into(),
            key: KeySpec::Words("line".into()),
            aggregate: AggregateKind::Count,
            column: None,
        },
    })]
}

fn lines(epoch: u64) -> RecordBatch {
    let text: Vec<String> = (0..200)
        .map(|i| format!("w{} w{} e{epoch}", i % 7, (i * 3 + epoch) % 11))
        .collect();
    RecordBatch::try_from_iter([("line", Arc::new(StringArray::from(text)) as _)]).unwrap()
}

async fn counts(ctx: &Context, master: &MasterStore) -> lamina::Result<BTreeMap<String, AggValue>> {
    let (_tx, rx) = watch::channel(false);
    let g = compute_generation(ctx, master, &word_counts(), rx)
        .await?
        .expect("sealed epochs");
    Ok(g.into_rows().map(|(_, k, v)| (k, v)).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_server_that_goes_away_mid_run_fails_it_and_the_next_run_succeeds() {
    let Some(binary) = S3Server::binary() else {
        return;
    };
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "lamina-s3-faults-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let server = S3Server::start(&binary, &dir);
    server.create_bucket("lamina-test");
    let mut options = server.store_options();
    options.request_timeout = Duration::from_secs(2);
    options.connect_timeout = Duration::from_secs(1);
    options.retry_timeout = Duration::from_secs(2);
    options.max_retries = 1;
    let master = MasterStore::open_with("s3://lamina-test/faults/master", &options).unwrap();
    let mut files = Vec::new();
    for epoch in 0..12 {
        files.push(
            master
                .write_epoch_file("lines", epoch, &[lines(epoch)])
                .await
                .unwrap(),
        );
    }
    let mut m = master.manifest().await.unwrap();
    m.seal(11, files);
    master.write_manifest(&m).await.unwrap();
    // One task at a time: the server goes away between row groups.
    let ctx = Context::builder().threads(1).build().unwrap();
    let expected = counts(&ctx, &master).await.unwrap();
    assert_eq!(expected.get("e3"), Some(&AggValue::Count(200)));

    // The run's first partition reaches the sink: the server stops.
    let server = Arc::new(Mutex::new(server));
    let stopped = Arc::new(AtomicBool::new(false));
    let (_tx, rx) = watch::channel(false);
    let started = Instant::now();
    let result = {
        let (server, stopped) = (Arc::clone(&server), Arc::clone(&stopped));
        stream_generation(&ctx, &master, &word_counts(), rx, move |_| {
            Arc::new(move |_, _| {
                if !stopped.swap(true, Ordering::SeqCst) {
                    server.lock().unwrap().stop();
                }
            })
        })
        .await
    };
    let took = started.elapsed();
    assert!(stopped.load(Ordering::SeqCst), "the run reached its sink");
    let err = result
        .expect_err("a run whose store went away fails")
        .to_string();
    eprintln!("the run failed after {took:?}: {err}");
    assert!(
        err.contains("s3://lamina-test/faults/master/lines/epoch-"),
        "the error names the file: {err}"
    );
    assert!(
        took < Duration::from_secs(20),
        "bounded by the deadlines: {took:?}"
    );

    // Back: the next run reads everything again, exactly.
    server.lock().unwrap().restart(&binary);
    assert_eq!(counts(&ctx, &master).await.unwrap(), expected);
    drop(server);
    let _ = std::fs::remove_dir_all(&dir);
}
