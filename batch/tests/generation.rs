//! A batch run computes every view over exactly the sealed epochs the
//! manifest lists.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::StringArray;
use arrow::record_batch::RecordBatch;
use lamina::Context;
use lamina::master::MasterStore;
use lamina::view::{AggValue, AggregateKind, KeySpec, ViewSpec};
use lamina_batch::{BatchView, ViewInput, compute_generation};
use tokio::sync::watch;

fn temp_master(tag: &str) -> (std::path::PathBuf, MasterStore) {
    let dir = std::env::temp_dir().join(format!("lamina-batch-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = MasterStore::open(&format!("file://{}", dir.display())).unwrap();
    (dir, store)
}

fn lines(text: &[&str]) -> RecordBatch {
    RecordBatch::try_from_iter([("line", Arc::new(StringArray::from(text.to_vec())) as _)]).unwrap()
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn generation_covers_exactly_the_sealed_epochs() {
    let (dir, master) = temp_master("sealed");
    let ctx = Context::builder().threads(2).build().unwrap();
    let (_tx, rx) = watch::channel(false);
    assert!(
        compute_generation(&ctx, &master, &word_counts(), rx.clone())
            .await
            .unwrap()
            .is_none(),
        "nothing sealed yet"
    );

    let e0 = master
        .write_epoch_file("lines", 0, &[lines(&["a b", "a"])])
        .await
        .unwrap();
    let e1 = master
        .write_epoch_file("lines", 1, &[lines(&["b c"])])
        .await
        .unwrap();
    // Epoch 2's file exists but is not sealed (not in the manifest): a batch
    // run must not read it, or the real-time deltas of epoch 2 would count
    // twice.
    master
        .write_epoch_file("lines", 2, &[lines(&["z z z"])])
        .await
        .unwrap();
    let mut m = master.manifest().await.unwrap();
    m.seal(0, vec![e0]);
    m.seal(1, vec![e1]);
    master.write_manifest(&m).await.unwrap();

    let g = compute_generation(&ctx, &master, &word_counts(), rx)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(g.epoch, 1);
    assert_eq!((g.stats.files, g.stats.rows), (2, 3));
    assert_eq!(g.keys(), 3);
    let got: BTreeMap<String, AggValue> = g
        .into_rows()
        .map(|(v, k, val)| {
            assert_eq!(v, "word_counts");
            (k, val)
        })
        .collect();
    let want: BTreeMap<String, AggValue> = [("a", 2), ("b", 2), ("c", 1)]
        .into_iter()
        .map(|(k, c)| (k.to_string(), AggValue::Count(c)))
        .collect();
    assert_eq!(got, want);
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_cancelled_run_returns_an_error_and_a_broken_file_names_itself() {
    let (dir, master) = temp_master("cancel");
    let ctx = Context::builder().threads(1).build().unwrap();
    let e0 = master
        .write_epoch_file("lines", 0, &[lines(&["a"])])
        .await
        .unwrap();
    let mut m = master.manifest().await.unwrap();
    m.seal(0, vec![e0.clone()]);
    master.write_manifest(&m).await.unwrap();

    let (tx, rx) = watch::channel(true);
    let err = compute_generation(&ctx, &master, &word_counts(), rx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("cancelled"), "{err}");
    drop(tx);

    std::fs::write(dir.join(&e0.path), b"not parquet").unwrap();
    let (_tx, rx) = watch::channel(false);
    let err = compute_generation(&ctx, &master, &word_counts(), rx)
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&e0.path), "{err}");
    let _ = std::fs::remove_dir_all(dir);
}

/// The progress of a run ends with every planned row and byte read, one
/// view after the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn progress_ends_exact() {
    let (dir, master) = temp_master("progress");
    let ctx = Context::builder().threads(2).build().unwrap();
    let mut files = Vec::new();
    for epoch in 0..3 {
        let text: Vec<String> = (0..10_000).map(|i| format!("w{} x", i % 97)).collect();
        let refs: Vec<&str> = text.iter().map(String::as_str).collect();
        files.push(
            master
                .write_epoch_file("lines", epoch, &[lines(&refs)])
                .await
                .unwrap(),
        );
    }
    let bytes: u64 = files.iter().map(|f| f.bytes).sum();
    let mut m = master.manifest().await.unwrap();
    m.seal(2, files);
    master.write_manifest(&m).await.unwrap();
    let mut views = word_counts();
    let mut second = word_counts();
    if let BatchView::Config(v) = &mut second[0] {
        v.spec.name = "again".into();
    }
    views.extend(second);
    let progress = lamina_batch::RunProgress::new();
    let (_tx, rx) = watch::channel(false);
    let sink: lamina_batch::RowSink = Arc::new(|_, _| {});
    let summary = lamina_batch::stream_generation_with(
        &ctx,
        &master,
        &Default::default(),
        &views,
        &progress,
        rx,
        move |_| sink,
    )
    .await
    .unwrap()
    .unwrap();
    let p = progress.snapshot();
    assert_eq!(summary.stats.rows, 30_000);
    assert_eq!(
        (p.rows_done, p.rows_total, p.bytes_done, p.bytes_total),
        (60_000, 60_000, 2 * bytes, 2 * bytes),
        "two views over the same 30,000 rows: {p:?}"
    );
    assert_eq!((p.views_done, p.views_total, p.view), (2, 2, None));
    assert_eq!(summary.stats.views.len(), 2);
    let _ = std::fs::remove_dir_all(dir);
}

/// The engine behind the backend trait computes what the engine computes
/// directly.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn the_engine_backend_computes_the_same_generation() {
    use lamina_batch::{BatchBackend, EngineBackend, Job, RunProgress};
    use std::sync::Mutex;
    let (dir, master) = temp_master("backend");
    let ctx = Context::builder().threads(2).build().unwrap();
    let e0 = master
        .write_epoch_file("lines", 0, &[lines(&["a b a", "c"])])
        .await
        .unwrap();
    let mut m = master.manifest().await.unwrap();
    m.seal(0, vec![e0]);
    master.write_manifest(&m).await.unwrap();
    let backend: Box<dyn BatchBackend> = Box::new(EngineBackend::new(ctx.clone()));
    assert_eq!(backend.name(), "engine");
    let got: Arc<Mutex<BTreeMap<String, i64>>> = Arc::default();
    let into = Arc::clone(&got);
    let progress = RunProgress::new();
    let (_tx, rx) = watch::channel(false);
    let views = word_counts();
    let job = Job {
        master: &master,
        histories: &Default::default(),
        views: &views,
        progress: &progress,
        cancel: rx.clone(),
    };
    let summary = backend
        .compute(
            job,
            Box::new(move |_| {
                Arc::new(move |_: &str, rows: lamina::view::Partials| {
                    let mut all = into.lock().unwrap();
                    for (k, v) in rows.into_rows() {
                        if let AggValue::Count(n) = v {
                            *all.entry(k).or_default() += n;
                        }
                    }
                })
            }),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(summary.epoch, 0);
    let direct = compute_generation(&ctx, &master, &views, rx)
        .await
        .unwrap()
        .unwrap();
    let want: BTreeMap<String, i64> = direct
        .into_rows()
        .map(|(_, k, v)| match v {
            AggValue::Count(n) => (k, n),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(*got.lock().unwrap(), want);
    assert_eq!(want["a"], 2);
    let _ = std::fs::remove_dir_all(dir);
}
