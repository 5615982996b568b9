//! Compaction of the master dataset on local files and on a real
//! S3-compatible server (s3s-fs, installed by `deploy/install-s3s.sh`;
//! the `s3_` tests skip themselves without it unless
//! `LAMINA_REQUIRE_PEERS=1`): small epoch files merge into one that reads
//! back epoch by epoch, replaced files go after their retention, a crash's
//! leftovers are cleaned up, and a reader racing the sealer and compaction
//! never sees an epoch twice or not at all.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arrow::array::{Array, Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use lamina::Context;
use lamina::master::epochs::StreamEpochs;
use lamina::master::{Manifest, MasterStore, StoreOptions};
use lamina_batch::{CompactionPolicy, compact};
use object_store::ObjectStoreExt;
use tokio::sync::watch;

#[path = "../../tests/support/s3.rs"]
mod s3_server;

use s3_server::S3Server;

/// A fresh dataset: a local directory, or a bucket on a fresh s3s-fs.
struct Dataset {
    url: String,
    options: StoreOptions,
    dir: PathBuf,
    _server: Option<S3Server>,
}

impl Dataset {
    fn local(tag: &str) -> Dataset {
        let dir = unique_dir(tag);
        Dataset {
            url: format!("file://{}", dir.display()),
            options: StoreOptions::default(),
            dir,
            _server: None,
        }
    }

    fn s3(tag: &str) -> Option<Dataset> {
        let dir = unique_dir(tag);
        let server = S3Server::start(&S3Server::binary()?, &dir);
        server.create_bucket("lamina-test");
        Some(Dataset {
            url: "s3://lamina-test/compaction/master".into(),
            options: server.store_options(),
            dir,
            _server: Some(server),
        })
    }

    fn open(&self) -> MasterStore {
        MasterStore::open_with(&self.url, &self.options).unwrap()
    }
}

impl Drop for Dataset {
    fn drop(&mut self) {
        self._server.take();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn unique_dir(tag: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "lamina-compaction-{tag}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("user", DataType::Utf8, false),
        Field::new("amount", DataType::Int64, true),
    ]))
}

/// Epoch `e`'s records of a stream: `rows(e)` rows whose amounts are
/// `e * 1000 + i`, so every epoch's sum is distinct.
fn rows(e: u64) -> usize {
    (e as usize * 7) % 23 + 1
}

fn batch(e: u64) -> RecordBatch {
    let n = rows(e);
    let users: Vec<String> = (0..n).map(|i| format!("u{}", i % 5)).collect();
    let amounts: Vec<i64> = (0..n).map(|i| e as i64 * 1000 + i as i64).collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(users)),
            Arc::new(Int64Array::from(amounts)),
        ],
    )
    .unwrap()
}

fn sum_of(batches: &[RecordBatch]) -> (usize, i64) {
    let mut rows = 0;
    let mut sum = 0;
    for b in batches {
        rows += b.num_rows();
        let a = b
            .column_by_name("amount")
            .unwrap()
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap();
        sum += a.iter().flatten().sum::<i64>();
    }
    (rows, sum)
}

fn expected(e: u64) -> (usize, i64) {
    sum_of(&[batch(e)])
}

/// Seals epoch `e` of `streams` as the sealer does: files first, then the
/// manifest, under the manifest lock.
async fn seal(master: &MasterStore, e: u64, streams: &[&str]) {
    let mut files = Vec::new();
    for s in streams {
        files.push(master.write_epoch_file(s, e, &[batch(e)]).await.unwrap());
    }
    let _lock = master.lock_manifest().await;
    let (mut m, v) = master.read_manifest().await.unwrap();
    m.seal(e, files);
    master.replace_manifest(&m, &v).await.unwrap();
}

fn policy(min_files: usize, retention: Duration) -> CompactionPolicy {
    CompactionPolicy {
        target_bytes: 1 << 20,
        min_files,
        retention,
    }
}

fn never() -> watch::Receiver<bool> {
    watch::channel(false).1
}

/// Reads every epoch of `stream` back through the manifest's entries and
/// checks each against what was sealed.
async fn check_epochs(master: &MasterStore, stream: &str, sealed: &[u64]) {
    let manifest = master.manifest().await.unwrap();
    let mut reader = StreamEpochs::new(master, &manifest, stream);
    for e in 0..=sealed.iter().max().copied().unwrap_or(0) + 1 {
        let got = sum_of(&reader.take(e).await.unwrap());
        let want = if sealed.contains(&e) {
            expected(e)
        } else {
            (0, 0)
        };
        assert_eq!(got, want, "stream {stream} epoch {e}");
    }
}

fn shape(m: &Manifest, stream: &str) -> Vec<(u64, u64)> {
    m.files
        .iter()
        .filter(|f| f.stream == stream)
        .map(|f| (f.first_epoch(), f.epoch))
        .collect()
}

async fn small_epochs_merge_and_read_back_epoch_by_epoch(d: Dataset) {
    let master = d.open();
    for e in 1..=12 {
        let streams: &[&str] = if e == 2 || e == 5 {
            &["a", "b"]
        } else {
            &["a"]
        };
        seal(&master, e, streams).await;
    }
    let before = master.manifest().await.unwrap();
    let ctx = Context::new();
    let scan_sum = |m: Manifest| {
        let (master, ctx) = (master.clone(), ctx.clone());
        async move {
            let files: Vec<_> = m.snapshot("a", u64::MAX).cloned().collect();
            let rdd = master.scan(&ctx, &files, None).await.unwrap();
            tokio::task::spawn_blocking(move || sum_of(&rdd.collect().unwrap()))
                .await
                .unwrap()
        }
    };
    let total = scan_sum(before.clone()).await;

    // Pass 1 merges a's 12 files; b's 2 are under min_files.
    let report = compact(&master, &policy(3, Duration::ZERO), &never()).await;
    assert_eq!(report.error, None);
    assert_eq!(
        (report.files_in, report.files_out, report.files_deleted),
        (12, 1, 0)
    );
    assert_eq!(report.rows, (1..=12).map(|e| rows(e) as u64).sum::<u64>());
    let m = master.manifest().await.unwrap();
    assert_eq!(shape(&m, "a"), vec![(1, 12)]);
    assert_eq!(shape(&m, "b"), vec![(2, 2), (5, 5)]);
    assert_eq!(m.retired.len(), 12);
    assert_eq!(m.version, 2);
    assert_eq!(m.sealed_through, Some(12));
    // Retired files stay until the next pass finds their retention over.
    assert_eq!(master.list_stream("a").await.unwrap().len(), 13);
    assert_eq!(
        scan_sum(m.clone()).await,
        total,
        "a batch run reads the same"
    );
    check_epochs(&master, "a", &(1..=12).collect::<Vec<_>>()).await;
    check_epochs(&master, "b", &[2, 5]).await;

    // Pass 2: the retired files go; the merged file and new epochs merge.
    for e in 13..=15 {
        seal(&master, e, &["a"]).await;
    }
    let report = compact(&master, &policy(3, Duration::ZERO), &never()).await;
    assert_eq!(report.error, None);
    assert_eq!(
        (report.files_in, report.files_out, report.files_deleted),
        (4, 1, 12)
    );
    let m = master.manifest().await.unwrap();
    assert_eq!(shape(&m, "a"), vec![(1, 15)]);
    check_epochs(&master, "a", &(1..=15).collect::<Vec<_>>()).await;

    // Pass 3 deletes what pass 2 replaced; nothing left to merge.
    let report = compact(&master, &policy(3, Duration::ZERO), &never()).await;
    assert_eq!((report.files_in, report.files_deleted), (0, 4));
    let m = master.manifest().await.unwrap();
    assert!(m.retired.is_empty());
    assert_eq!(
        master.list_stream("a").await.unwrap(),
        vec!["a/compacted-00000000000000000001-00000000000000000015.parquet"]
    );
    let want: (usize, i64) = (1..=15)
        .map(expected)
        .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
    assert_eq!(scan_sum(m).await, want);
}

async fn retention_keeps_replaced_files_for_older_readers(d: Dataset) {
    let master = d.open();
    for e in 1..=4 {
        seal(&master, e, &["a"]).await;
    }
    let old = master.manifest().await.unwrap();
    let keep = policy(2, Duration::from_secs(3600));
    assert_eq!(compact(&master, &keep, &never()).await.files_in, 4);
    // A reader that read the manifest before the pass still reads.
    check_epochs_of(&master, &old, "a", 1..=4).await;
    let report = compact(&master, &keep, &never()).await;
    assert_eq!((report.files_in, report.files_deleted), (0, 0));
    check_epochs_of(&master, &old, "a", 1..=4).await;
    assert_eq!(master.manifest().await.unwrap().retired.len(), 4);
}

async fn check_epochs_of(
    master: &MasterStore,
    m: &Manifest,
    stream: &str,
    epochs: std::ops::RangeInclusive<u64>,
) {
    let mut reader = StreamEpochs::new(master, m, stream);
    for e in epochs {
        assert_eq!(sum_of(&reader.take(e).await.unwrap()), expected(e));
    }
}

async fn a_crashed_pass_leaves_nothing_behind(d: Dataset) {
    let master = d.open();
    for e in 1..=3 {
        seal(&master, e, &["a"]).await;
    }
    // A merged file written before a crash, never listed.
    let stray = "a/compacted-00000000000000000001-00000000000000000002.parquet";
    master
        .object_store()
        .put(
            &object_store::path::Path::from(stray),
            object_store::PutPayload::from(b"half".to_vec()),
        )
        .await
        .unwrap();
    let report = compact(&master, &policy(2, Duration::ZERO), &never()).await;
    assert_eq!(report.error, None);
    assert_eq!((report.files_in, report.files_deleted), (3, 1));
    let names = master.list_stream("a").await.unwrap();
    assert!(!names.iter().any(|n| n == stray), "{names:?}");
    check_epochs(&master, "a", &[1, 2, 3]).await;

    // A pass stopped by shutdown commits nothing and leaves the dataset
    // as it was.
    for e in 4..=6 {
        seal(&master, e, &["a"]).await;
    }
    let before = master.manifest().await.unwrap();
    let (stop, stopping) = watch::channel(true);
    let report = compact(&master, &policy(2, Duration::from_secs(3600)), &stopping).await;
    drop(stop);
    assert!(
        report
            .error
            .as_deref()
            .is_some_and(|e| e.contains("stopping")),
        "{report:?}"
    );
    assert_eq!(master.manifest().await.unwrap(), before);
}

async fn readers_never_see_an_epoch_twice_or_missing_while_sealing_and_compacting(d: Dataset) {
    let master = d.open();
    const EPOCHS: u64 = 40;
    let done = Arc::new(AtomicBool::new(false));
    let sealer = {
        let master = master.clone();
        tokio::spawn(async move {
            for e in 1..=EPOCHS {
                seal(&master, e, &["a", "b"]).await;
            }
        })
    };
    let compactor = {
        let (master, done) = (master.clone(), Arc::clone(&done));
        tokio::spawn(async move {
            let mut passes = 0;
            let mut merged = 0;
            while !done.load(Ordering::Relaxed) {
                let report =
                    compact(&master, &policy(2, Duration::from_secs(3600)), &never()).await;
                assert_eq!(report.error, None);
                merged += report.files_in;
                passes += 1;
            }
            (passes, merged)
        })
    };
    let mut seen = 0;
    let mut checks = 0;
    while seen < EPOCHS {
        let m = master.manifest().await.unwrap();
        let sealed = m.sealed_through.unwrap_or(0);
        for stream in ["a", "b"] {
            // Exactly epochs 1..=sealed, each once, with its rows.
            let mut epochs: BTreeMap<u64, u64> = BTreeMap::new();
            for f in m.files.iter().filter(|f| f.stream == stream) {
                for s in f.epochs() {
                    assert!(
                        epochs.insert(s.epoch, s.rows).is_none(),
                        "epoch {} listed twice",
                        s.epoch
                    );
                }
            }
            let want: BTreeMap<u64, u64> = (1..=sealed).map(|e| (e, rows(e) as u64)).collect();
            assert_eq!(epochs, want, "stream {stream} at sealed_through {sealed}");
        }
        // And the listed files are there and hold what they say.
        check_epochs_of(&master, &m, "a", 1..=sealed).await;
        seen = sealed;
        checks += 1;
    }
    sealer.await.unwrap();
    done.store(true, Ordering::Relaxed);
    let (passes, merged) = compactor.await.unwrap();
    assert!(
        checks > 3 && passes > 1 && merged > 0,
        "{checks} {passes} {merged}"
    );
    // Settled: one more pass, then everything reads back.
    compact(&master, &policy(2, Duration::from_secs(3600)), &never()).await;
    let m = master.manifest().await.unwrap();
    assert_eq!(m.sealed_through, Some(EPOCHS));
    check_epochs(&master, "b", &(1..=EPOCHS).collect::<Vec<_>>()).await;
    assert!(m.files.len() < 2 * EPOCHS as usize, "{}", m.files.len());
}

async fn files_whose_columns_differ_merge_apart(d: Dataset) {
    let master = d.open();
    for e in 1..=3 {
        seal(&master, e, &["a"]).await;
    }
    // The stream gained a column at epoch 4.
    let wider = Arc::new(Schema::new(vec![
        Field::new("user", DataType::Utf8, false),
        Field::new("amount", DataType::Int64, true),
        Field::new("region", DataType::Utf8, true),
    ]));
    for e in 4..=6 {
        let b = batch(e);
        let region: Arc<dyn Array> = Arc::new(StringArray::from(vec![Some("eu"); b.num_rows()]));
        let b = RecordBatch::try_new(
            Arc::clone(&wider),
            vec![Arc::clone(b.column(0)), Arc::clone(b.column(1)), region],
        )
        .unwrap();
        let f = master.write_epoch_file("a", e, &[b]).await.unwrap();
        let (mut m, v) = master.read_manifest().await.unwrap();
        m.seal(e, vec![f]);
        master.replace_manifest(&m, &v).await.unwrap();
    }
    let report = compact(&master, &policy(2, Duration::ZERO), &never()).await;
    assert_eq!(report.error, None);
    assert_eq!((report.files_in, report.files_out), (6, 2));
    let m = master.manifest().await.unwrap();
    assert_eq!(shape(&m, "a"), vec![(1, 3), (4, 6)]);
    check_epochs(&master, "a", &[1, 2, 3, 4, 5, 6]).await;
}

macro_rules! on_local_and_s3 {
    ($($case:ident),* $(,)?) => {
        mod local {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Dataset::local(stringify!($case))).await;
                }
            )*
        }
        mod s3 {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(d) = super::Dataset::s3(stringify!($case)) {
                        super::$case(d).await;
                    }
                }
            )*
        }
    };
}

on_local_and_s3!(
    small_epochs_merge_and_read_back_epoch_by_epoch,
    retention_keeps_replaced_files_for_older_readers,
    a_crashed_pass_leaves_nothing_behind,
    readers_never_see_an_epoch_twice_or_missing_while_sealing_and_compacting,
    files_whose_columns_differ_merge_apart,
);
