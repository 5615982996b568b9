//! The master dataset on every backend — local files, a real
//! S3-compatible server (s3s-fs, installed by `deploy/install-s3s.sh`) and,
//! when `HDFS_URL` is set, a real HDFS — against Parquet written by other
//! tools (pyarrow and DuckDB, see tests/data/make_parquet_fixtures.py), our
//! own writer (also multipart-sized epochs), manifests (conditional
//! replacement where the backend has it), the writer lease, broken files,
//! and stores that do not answer.
//!
//! Every case is one `async fn(Dataset)`; `on_every_backend!` makes a test
//! of it per backend (`local::`, `s3::`, `hdfs::`). Without the S3 server
//! the `s3::` tests skip themselves unless `LAMINA_REQUIRE_PEERS=1`; without
//! `HDFS_URL` (e.g. `hdfs://namenode:9000/tmp/lamina-tests`) the `hdfs::`
//! tests skip themselves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use lamina::master::history::{HistoryDataset, scan_as};
use lamina::master::{EpochFile, Manifest, MasterStore, StoreOptions};
use lamina::view::{AggValue, AggregateKind, KeySpec, ViewSpec, run_view};
use lamina::{Context, Error};
use object_store::path::Path as StorePath;
use object_store::{ObjectStoreExt, PutPayload};

#[path = "support/s3.rs"]
mod s3_server;

use s3_server::S3Server;

const FIXTURES: [&str; 4] = [
    "pyarrow_snappy.parquet",
    "pyarrow_zstd_dict.parquet",
    "pyarrow_plain.parquet",
    "duckdb.parquet",
];

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

#[derive(Debug, Clone, Copy)]
enum Where {
    Local,
    S3,
    Hdfs,
}

/// A fresh, empty dataset location on one backend, removed on drop (local
/// and S3: the directory or bucket directory; HDFS: left to the cluster's
/// retention, under a unique path).
struct Dataset {
    url: String,
    options: StoreOptions,
    dir: PathBuf,
    _server: Option<S3Server>,
}

impl Dataset {
    /// `None` when the backend is not available here (see the module
    /// docs).
    fn new(kind: Where, tag: &str) -> Option<Dataset> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let unique = format!(
            "{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = std::env::temp_dir().join(format!("lamina-master-{unique}"));
        let _ = std::fs::remove_dir_all(&dir);
        let mut options = StoreOptions::default();
        match kind {
            Where::Local => Some(Dataset {
                url: format!("file://{}", dir.display()),
                options,
                dir,
                _server: None,
            }),
            Where::S3 => {
                let server = S3Server::start(&S3Server::binary()?, &dir);
                server.create_bucket("lamina-test");
                options = server.store_options();
                Some(Dataset {
                    url: "s3://lamina-test/datasets/master".into(),
                    options,
                    dir,
                    _server: Some(server),
                })
            }
            Where::Hdfs => {
                let base = std::env::var("HDFS_URL").ok()?;
                Some(Dataset {
                    url: format!("{}/{unique}", base.trim_end_matches('/')),
                    options,
                    dir,
                    _server: None,
                })
            }
        }
    }

    fn open(&self) -> MasterStore {
        MasterStore::open_with(&self.url, &self.options).unwrap()
    }

    /// Puts `bytes` at `path` under the dataset's root, as another tool
    /// would.
    async fn put(&self, path: &str, bytes: Vec<u8>) {
        self.open()
            .object_store()
            .put(&StorePath::from(path), PutPayload::from(bytes))
            .await
            .unwrap();
    }

    /// A store over one fixture copied in as stream `events` epoch 0, and
    /// its manifest entry.
    async fn fixture(&self, name: &str) -> (MasterStore, EpochFile) {
        let bytes = std::fs::read(data_dir().join(name)).unwrap();
        let file = EpochFile {
            stream: "events".into(),
            epoch: 0,
            path: EpochFile::path_for("events", 0),
            rows: 0,
            bytes: bytes.len() as u64,
            segments: Vec::new(),
        };
        self.put(&file.path, bytes).await;
        (self.open(), file)
    }
}

impl Drop for Dataset {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// One test per backend for each named `async fn(Dataset)`.
macro_rules! on_every_backend {
    ($($case:ident),* $(,)?) => {
        on_every_backend!(@in local, Local, $($case),*);
        on_every_backend!(@in s3, S3, $($case),*);
        on_every_backend!(@in hdfs, Hdfs, $($case),*);
    };
    (@in $module:ident, $kind:ident, $($case:ident),*) => {
        mod $module {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    if let Some(dataset) = super::Dataset::new(super::Where::$kind, stringify!($case)) {
                        super::$case(dataset).await;
                    }
                }
            )*
        }
    };
}

on_every_backend!(
    views_over_parquet_written_by_pyarrow_and_duckdb_match_python,
    own_writer_round_trips_and_manifest_snapshots_select_epochs,
    large_epochs_round_trip,
    the_manifest_is_replaced_from_the_version_read,
    one_writer_holds_the_lease,
    broken_parquet_and_missing_columns_are_clear_errors,
    history_of_other_tools_reads_as_the_stream,
    key_columns_are_dictionaries_only_where_wholly_encoded,
);

fn expected() -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data_dir().join("expected.json")).unwrap()).unwrap();
    assert!(
        v["word_counts"].as_object().is_some_and(|m| m.len() == 8),
        "fixture answers are present"
    );
    v
}

fn as_counts(rows: Vec<(String, AggValue)>) -> BTreeMap<String, i64> {
    rows.into_iter()
        .map(|(k, v)| {
            let n = match v {
                AggValue::Sum(s) => match s.value() {
                    lamina::view::Num::Int(i) => i,
                    other => panic!("not an integer sum: {other:?}"),
                },
                AggValue::Count(c) => c,
                other => panic!("unexpected {other:?}"),
            };
            (k, n)
        })
        .collect()
}

fn json_counts(v: &serde_json::Value) -> BTreeMap<String, i64> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, n)| (k.clone(), n.as_i64().unwrap()))
        .collect()
}

fn views() -> [(ViewSpec, &'static str); 3] {
    let v = |name: &str, key, aggregate, column: Option<&str>| ViewSpec {
        name: name.into(),
        key,
        aggregate,
        column: column.map(String::from),
    };
    [
        (
            v(
                "word_counts",
                KeySpec::Words("line".into()),
                AggregateKind::Count,
                None,
            ),
            "word_counts",
        ),
        (
            v(
                "amount_by_user",
                KeySpec::Column("user".into()),
                AggregateKind::Sum,
                Some("amount"),
            ),
            "amount_by_user",
        ),
        (
            v(
                "events_by_user",
                KeySpec::Column("user".into()),
                AggregateKind::Count,
                None,
            ),
            "events_by_user",
        ),
    ]
}

async fn views_over_parquet_written_by_pyarrow_and_duckdb_match_python(d: Dataset) {
    let want = expected();
    let mut read_as_dictionary = Vec::new();
    let ctx = Context::builder().threads(2).build().unwrap();
    for name in FIXTURES {
        let (store, file) = d.fixture(name).await;
        let all = store
            .scan(&ctx, std::slice::from_ref(&file), None)
            .await
            .unwrap();
        let rows: usize = all
            .run_async(|_, it| Ok(it.map(|b| b.num_rows()).sum::<usize>()))
            .await
            .unwrap()
            .iter()
            .sum();
        assert_eq!(
            rows as i64,
            want["rows"].as_i64().unwrap(),
            "{name}: row count"
        );
        for (spec, key) in views() {
            // Read only the columns the view needs.
            let mut columns = vec![];
            match &spec.key {
                KeySpec::Words(c) | KeySpec::Column(c) => columns.push(c.clone()),
                _ => unreachable!(),
            }
            columns.extend(spec.column.clone());
            let input = store
                .scan(&ctx, std::slice::from_ref(&file), Some(&columns))
                .await
                .unwrap();
            let got = as_counts(run_view(&spec, &input).collect_async().await.unwrap());
            assert_eq!(got, json_counts(&want[key]), "{name}: view {key}");
            // The key column read as a dictionary where the file stores it
            // wholly dictionary-encoded: the same answer.
            if let KeySpec::Column(c) = &spec.key {
                let progress = Default::default();
                let input = store
                    .scan_with(
                        &ctx,
                        std::slice::from_ref(&file),
                        Some(&columns),
                        std::slice::from_ref(c),
                        &progress,
                    )
                    .await
                    .unwrap();
                let types: Vec<arrow::datatypes::DataType> = input
                    .run_async({
                        let c = c.clone();
                        move |_, it| {
                            Ok(it
                                .map(|b| b.column_by_name(&c).unwrap().data_type().clone())
                                .collect::<Vec<_>>())
                        }
                    })
                    .await
                    .unwrap()
                    .concat();
                if types
                    .iter()
                    .any(|t| matches!(t, arrow::datatypes::DataType::Dictionary(..)))
                {
                    read_as_dictionary.push(name);
                }
                let got = as_counts(run_view(&spec, &input).collect_async().await.unwrap());
                assert_eq!(
                    got,
                    json_counts(&want[key]),
                    "{name}: view {key}, key column as a dictionary ({types:?})"
                );
            }
        }
    }
    // pyarrow writes small string columns wholly dictionary-encoded and
    // says so in its page encoding statistics.
    assert!(
        read_as_dictionary.iter().any(|n| n.contains("pyarrow")),
        "no fixture was read as a dictionary: {read_as_dictionary:?} of {FIXTURES:?}"
    );
}

async fn own_writer_round_trips_and_manifest_snapshots_select_epochs(d: Dataset) {
    let store = d.open();
    assert_eq!(
        store.manifest().await.unwrap(),
        Manifest::default(),
        "no manifest yet is empty"
    );
    let batch = |words: &[&str], n: i64| {
        RecordBatch::try_from_iter([
            ("line", Arc::new(StringArray::from(words.to_vec())) as _),
            ("n", Arc::new(Int64Array::from(vec![n; words.len()])) as _),
        ])
        .unwrap()
    };
    let e0 = store
        .write_epoch_file("lines", 0, &[batch(&["a b", "b"], 1), batch(&["c"], 2)])
        .await
        .unwrap();
    let e1 = store
        .write_epoch_file("lines", 1, &[batch(&["a"], 3)])
        .await
        .unwrap();
    assert_eq!((e0.rows, e1.rows), (3, 1));
    // Writing the same epoch again (a retry after a crash) replaces it.
    let e1 = store
        .write_epoch_file("lines", 1, &[batch(&["a"], 3)])
        .await
        .unwrap();
    let mut m = store.manifest().await.unwrap();
    m.seal(0, vec![e0]);
    m.seal(1, vec![e1]);
    store.write_manifest(&m).await.unwrap();
    let m = store.manifest().await.unwrap();
    assert_eq!(m.sealed_through, Some(1));

    let ctx = Context::builder().threads(2).build().unwrap();
    let spec = &views()[0].0;
    let run = |through: u64| {
        let files: Vec<EpochFile> = m.snapshot("lines", through).cloned().collect();
        let (store, ctx) = (store.clone(), ctx.clone());
        async move {
            let input = store
                .scan(&ctx, &files, Some(&["line".to_string()]))
                .await
                .unwrap();
            as_counts(run_view(spec, &input).collect_async().await.unwrap())
        }
    };
    let through0 = run(0).await;
    assert_eq!(
        through0,
        BTreeMap::from([("a".into(), 1), ("b".into(), 2), ("c".into(), 1)])
    );
    let through1 = run(1).await;
    assert_eq!(through1["a"], 2);
}

async fn broken_parquet_and_missing_columns_are_clear_errors(d: Dataset) {
    let ctx = Context::builder().threads(1).build().unwrap();
    for name in ["garbage.parquet", "truncated.parquet"] {
        let (store, file) = d.fixture(name).await;
        let err = store.scan(&ctx, &[file], None).await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Execution(_)), "{name}: {msg}");
        assert!(
            msg.contains("epoch-00000000000000000000.parquet")
                && msg.contains("not a readable Parquet file"),
            "{msg}"
        );
    }
    let (store, file) = d.fixture("pyarrow_snappy.parquet").await;
    let err = store
        .scan(&ctx, &[file], Some(&["nope".to_string()]))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Plan(_)));
    assert!(
        err.to_string().contains("no column `nope`")
            && err.to_string().contains("user, line, amount, ts"),
        "{err}"
    );
    // A file listed in the manifest but gone from the store.
    let ghost = EpochFile {
        stream: "s".into(),
        epoch: 3,
        path: EpochFile::path_for("s", 3),
        rows: 1,
        bytes: 1,
        segments: Vec::new(),
    };
    let err = store.scan(&ctx, &[ghost], None).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("epoch-00000000000000000003.parquet"),
        "{err}"
    );
}

#[test]
fn unsupported_schemes_are_refused_by_name() {
    let err = MasterStore::open("gs://bucket/prefix")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("gs://") && err.contains("unsupported scheme"),
        "{err}"
    );
    let err = MasterStore::open("./plain/path").unwrap_err().to_string();
    assert!(err.contains("is not a URL"), "{err}");
}

/// An epoch bigger than one upload part (object_store's `BufWriter` goes
/// multipart above 10 MiB) is written in parts and reads back whole.
async fn large_epochs_round_trip(d: Dataset) {
    let store = d.open();
    let schema = Arc::new(arrow::datatypes::Schema::new(vec![
        arrow::datatypes::Field::new("line", arrow::datatypes::DataType::Utf8, false),
        arrow::datatypes::Field::new("n", arrow::datatypes::DataType::Int64, false),
    ]));
    // Incompressible lines: 64 symbols, 6 bits a byte.
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let (batches, rows_per_batch, line_len) = (8, 50_000, 48);
    let mut writer = store.epoch_writer("big", 7, Arc::clone(&schema)).unwrap();
    let mut want_sum = 0i64;
    let mut want_bytes = 0u64;
    for b in 0..batches {
        let lines: Vec<String> = (0..rows_per_batch)
            .map(|_| {
                (0..line_len)
                    .map(|_| ALPHABET[(next() % 64) as usize] as char)
                    .collect()
            })
            .collect();
        want_bytes += lines
            .iter()
            .flat_map(|l| l.bytes())
            .map(u64::from)
            .sum::<u64>();
        let ns: Vec<i64> = (0..rows_per_batch)
            .map(|i| (b * rows_per_batch + i) as i64)
            .collect();
        want_sum += ns.iter().sum::<i64>();
        let batch = RecordBatch::try_new(
            Arc::clone(&schema),
            vec![
                Arc::new(StringArray::from(lines)),
                Arc::new(Int64Array::from(ns)),
            ],
        )
        .unwrap();
        writer.write(&batch).await.unwrap();
    }
    let file = writer.finish().await.unwrap();
    assert_eq!(file.rows, (batches * rows_per_batch) as u64);
    assert!(
        file.bytes > 12 << 20,
        "the epoch must be bigger than one part: {} bytes",
        file.bytes
    );
    let ctx = Context::builder().threads(2).build().unwrap();
    let n_sum = |a: &arrow::array::ArrayRef| {
        let n = a.as_any().downcast_ref::<Int64Array>().unwrap();
        n.values().iter().map(|&v| i128::from(v)).sum::<i128>()
    };
    assert_eq!(
        scan_total(&store, &ctx, &file, "n", n_sum).await,
        i128::from(want_sum)
    );
    // The line column alone: one chunk of over 12 MB, fetched as one span
    // and read back byte for byte.
    let byte_sum = |a: &arrow::array::ArrayRef| {
        let lines = a.as_any().downcast_ref::<StringArray>().unwrap();
        lines.values().iter().map(|&x| i128::from(x)).sum::<i128>()
    };
    assert_eq!(
        scan_total(&store, &ctx, &file, "line", byte_sum).await,
        i128::from(want_bytes)
    );
}

/// `column` of `file` scanned as a dataset, `per_batch` of each batch's
/// column summed over all tasks.
async fn scan_total(
    store: &MasterStore,
    ctx: &Context,
    file: &EpochFile,
    column: &str,
    per_batch: fn(&arrow::array::ArrayRef) -> i128,
) -> i128 {
    let input = store
        .scan(ctx, std::slice::from_ref(file), Some(&[column.to_string()]))
        .await
        .unwrap();
    let sums = input
        .run_async(move |_, it| Ok(it.map(|b| per_batch(b.column(0))).sum::<i128>()))
        .await
        .unwrap();
    sums.iter().sum()
}

/// `replace_manifest` is a compare-and-swap on S3 (a writer whose read is
/// stale overwrites nothing) and an atomic put elsewhere (the lease is the
/// guard there).
async fn the_manifest_is_replaced_from_the_version_read(d: Dataset) {
    let (a, b) = (d.open(), d.open());
    let (ma, va) = a.read_manifest().await.unwrap();
    let (mut mb, vb) = b.read_manifest().await.unwrap();
    assert_eq!((&ma, &mb), (&Manifest::default(), &Manifest::default()));
    let file = |epoch| EpochFile {
        stream: "s".into(),
        epoch,
        path: EpochFile::path_for("s", epoch),
        rows: 1,
        bytes: 1,
        segments: Vec::new(),
    };
    let mut ma = ma;
    ma.seal(0, vec![file(0)]);
    let va = a.replace_manifest(&ma, &va).await.unwrap();
    mb.seal(5, vec![file(5)]);
    let stale = b.replace_manifest(&mb, &vb).await;
    let compare_and_swap = d.url.starts_with("s3://");
    if compare_and_swap {
        let err = stale.unwrap_err().to_string();
        assert!(err.contains("changed by someone else"), "{err}");
        assert_eq!(a.manifest().await.unwrap(), ma, "nothing was overwritten");
        // From the version it wrote, A goes on.
        ma.seal(1, vec![file(1)]);
        a.replace_manifest(&ma, &va).await.unwrap();
        assert_eq!(a.manifest().await.unwrap().sealed_through, Some(1));
    } else {
        stale.unwrap();
        assert_eq!(a.manifest().await.unwrap(), mb, "the last put wins");
    }
}

async fn one_writer_holds_the_lease(d: Dataset) {
    let (a, b) = (d.open(), d.open());
    let lease = a
        .acquire_writer_lease("A", "/state/a", Duration::from_secs(30))
        .await
        .unwrap();
    let err = b
        .acquire_writer_lease("B", "/state/b", Duration::from_secs(30))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("/state/a"), "{err}");
    lease.release().await.unwrap();
    let short = b
        .acquire_writer_lease("B", "/state/b", Duration::from_millis(1))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    // Expired: taken over, and its old owner stops writing.
    a.acquire_writer_lease("A", "/state/a", Duration::from_secs(30))
        .await
        .unwrap();
    assert!(short.renew().await.is_err());
    assert!(b.write_manifest(&Manifest::default()).await.is_err());
    a.write_manifest(&Manifest::default()).await.unwrap();
}

/// A loopback listener that accepts connections and never answers: a
/// server that hangs.
fn black_hole() -> (std::net::TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_s3_endpoint_that_hangs_fails_within_the_timeouts() {
    let (_listener, port) = black_hole();
    let mut options = StoreOptions {
        request_timeout: Duration::from_millis(500),
        retry_timeout: Duration::from_secs(2),
        max_retries: 2,
        ..Default::default()
    };
    options.s3.endpoint = Some(format!("http://127.0.0.1:{port}"));
    options.s3.region = Some("us-east-1".into());
    options.s3.access_key_id = Some("k".into());
    options.s3.secret_access_key = Some("s".into());
    options.s3.allow_http = Some(true);
    let store = MasterStore::open_with("s3://bkt/p", &options).unwrap();
    let started = Instant::now();
    let err = store.manifest().await.unwrap_err().to_string();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.contains("s3://bkt/p") && err.contains("manifest"),
        "{err}"
    );
}

#[cfg(feature = "hdfs")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_namenode_fails_within_the_timeout() {
    let (_listener, port) = black_hole();
    let options = StoreOptions {
        request_timeout: Duration::from_millis(500),
        ..Default::default()
    };
    let url = format!("hdfs://127.0.0.1:{port}/lamina");
    let store = MasterStore::open_with(&url, &options).unwrap();
    let started = Instant::now();
    let err = store.manifest().await.unwrap_err().to_string();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        err.contains(&url) && err.contains("timed out after 500ms"),
        "{err}"
    );
    let started = Instant::now();
    let err = store
        .write_epoch_file(
            "s",
            0,
            &[
                RecordBatch::try_from_iter([("n", Arc::new(Int64Array::from(vec![1])) as _)])
                    .unwrap(),
            ],
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(err.contains("timed out"), "{err}");
}

/// Files of other tools under hive-style folders, with the files and
/// folders such tools leave beside them, read as a stream whose schema
/// differs from theirs: by name, one column from the folders, one absent.
async fn history_of_other_tools_reads_as_the_stream(d: Dataset) {
    use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    for (i, name) in FIXTURES.iter().enumerate() {
        let bytes = std::fs::read(data_dir().join(name)).unwrap();
        d.put(&format!("hist/region=r{i}/part-0.parquet"), bytes.clone())
            .await;
        if i == 0 {
            d.put("hist/region=r0/.part-0.parquet.crc", b"crc".to_vec())
                .await;
            d.put("hist/_SUCCESS", Vec::new()).await;
            d.put("hist/_temporary/0/part-9.parquet", bytes).await;
        }
    }
    let url = format!("{}/hist", d.url);
    let history = HistoryDataset::open(&url, &d.options).unwrap();
    let listing = history.list().await.unwrap();
    let labels: Vec<_> = listing.files.iter().map(|f| f.label.clone()).collect();
    assert_eq!(labels.len(), 4, "{labels:?}");
    assert!(
        labels[0].ends_with("hist/region=r0/part-0.parquet"),
        "{labels:?}"
    );

    let field = |n: &str, t: DataType, nullable| Field::new(n, t, nullable);
    let stream = |amount: DataType, extra: Option<Field>| {
        let mut fields = vec![
            field("user", DataType::Utf8, true),
            field("line", DataType::Utf8, false),
            field("amount", amount, true),
            field(
                "ts",
                DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
                false,
            ),
            field("region", DataType::Utf8, false),
            field("note", DataType::Utf8, true),
        ];
        fields.extend(extra);
        Arc::new(Schema::new(fields))
    };
    let target = stream(DataType::Int64, None);
    let ctx = Context::builder().threads(2).build().unwrap();
    let want = expected();
    for (spec, key) in views() {
        let mut columns = vec![];
        match &spec.key {
            KeySpec::Words(c) | KeySpec::Column(c) => columns.push(c.clone()),
            _ => unreachable!(),
        }
        columns.extend(spec.column.clone());
        let (input, rows) = scan_as(&ctx, &listing.files, Some(&columns), &target, None)
            .await
            .unwrap();
        assert_eq!(rows, 4 * want["rows"].as_u64().unwrap());
        let got = as_counts(run_view(&spec, &input).collect_async().await.unwrap());
        let four_times: BTreeMap<String, i64> = json_counts(&want[key])
            .into_iter()
            .map(|(k, n)| (k, 4 * n))
            .collect();
        assert_eq!(got, four_times, "view {key}");
    }
    // The folder's value and the absent column, for every row.
    let (all, _) = scan_as(&ctx, &listing.files, None, &target, None)
        .await
        .unwrap();
    let per_region = all
        .run_async(|_, it| {
            let mut seen = BTreeMap::<String, usize>::new();
            for b in it {
                assert_eq!(b.num_columns(), 6);
                assert_eq!(b.column_by_name("note").unwrap().null_count(), b.num_rows());
                let region = b
                    .column_by_name("region")
                    .unwrap()
                    .as_any()
                    .downcast_ref::<StringArray>()
                    .unwrap();
                for r in region.iter() {
                    *seen.entry(r.unwrap().to_owned()).or_default() += 1;
                }
            }
            Ok(seen)
        })
        .await
        .unwrap()
        .into_iter()
        .fold(BTreeMap::<String, usize>::new(), |mut all, part| {
            for (k, n) in part {
                *all.entry(k).or_default() += n;
            }
            all
        });
    assert_eq!(
        per_region,
        (0..4)
            .map(|i| (format!("r{i}"), 1000))
            .collect::<BTreeMap<_, _>>()
    );

    // A type that does not match, and a required column nowhere.
    let err = scan_as(
        &ctx,
        &listing.files,
        None,
        &stream(DataType::Boolean, None),
        None,
    )
    .await
    .err()
    .unwrap();
    let msg = err.to_string();
    assert!(matches!(err, Error::Plan(_)), "{msg}");
    assert!(
        msg.contains("hist/region=r0/part-0.parquet")
            && msg.contains("column `amount` is Int64 in the file")
            && msg.contains("Boolean"),
        "{msg}"
    );
    // A folder value that is not of the column's type: refused before a
    // row is read, naming the file and the folder.
    let numeric_region = Arc::new(Schema::new(vec![
        field("line", DataType::Utf8, false),
        field("region", DataType::Int64, false),
    ]));
    let err = scan_as(&ctx, &listing.files, None, &numeric_region, None)
        .await
        .err()
        .unwrap();
    let msg = err.to_string();
    assert!(matches!(err, Error::Plan(_)), "{msg}");
    assert!(
        msg.contains("hist/region=r0/part-0.parquet") && msg.contains("folder `region=r0`"),
        "{msg}"
    );
    let required = Field::new("country", DataType::Utf8, false);
    let err = scan_as(
        &ctx,
        &listing.files,
        None,
        &stream(DataType::Int64, Some(required)),
        None,
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(err.contains("no column `country`"), "{err}");
}

/// Lamina's writer keeps a key column's dictionary whole (up to 16 MiB), so
/// a batch run's scan reads it as a dictionary; a file whose pages fell
/// back from dictionary to plain (another writer's 64 KiB limit) is read
/// as plain strings. Both give the same counts.
async fn key_columns_are_dictionaries_only_where_wholly_encoded(d: Dataset) {
    use arrow::datatypes::DataType;
    // 200,000 rows over 50,000 distinct 42-byte URLs: a 2 MB dictionary,
    // beyond parquet's 1 MiB default.
    let urls: Vec<String> = (0..200_000u64)
        .map(|i| format!("https://shop.example/item/{:07}?ref=x", (i * 7919) % 50_000))
        .collect();
    let batch = RecordBatch::try_from_iter([(
        "url",
        Arc::new(StringArray::from(urls.clone())) as arrow::array::ArrayRef,
    )])
    .unwrap();
    let store = d.open();
    let own = store
        .write_epoch_file("events", 0, std::slice::from_ref(&batch))
        .await
        .unwrap();
    let mut bytes = Vec::new();
    let props = parquet::file::properties::WriterProperties::builder()
        .set_dictionary_page_size_limit(64 << 10)
        .build();
    let mut writer =
        parquet::arrow::ArrowWriter::try_new(&mut bytes, batch.schema(), Some(props)).unwrap();
    writer.write(&batch).unwrap();
    writer.close().unwrap();
    let fallback = EpochFile {
        stream: "events".into(),
        epoch: 1,
        path: EpochFile::path_for("events", 1),
        rows: urls.len() as u64,
        bytes: bytes.len() as u64,
        segments: Vec::new(),
    };
    d.put(&fallback.path, bytes).await;

    let mut want: BTreeMap<String, i64> = BTreeMap::new();
    for u in &urls {
        *want.entry(u.clone()).or_default() += 1;
    }
    let spec = ViewSpec {
        name: "by_url".into(),
        key: KeySpec::Column("url".into()),
        aggregate: AggregateKind::Count,
        column: None,
    };
    let ctx = Context::builder().threads(2).build().unwrap();
    let url = ["url".to_string()];
    for (file, dictionary) in [(own, true), (fallback, false)] {
        let progress = Default::default();
        let input = store
            .scan_with(
                &ctx,
                std::slice::from_ref(&file),
                Some(&url),
                &url,
                &progress,
            )
            .await
            .unwrap();
        let types: Vec<DataType> = input
            .run_async(|_, it| {
                Ok(it
                    .map(|b| b.column(0).data_type().clone())
                    .collect::<Vec<_>>())
            })
            .await
            .unwrap()
            .concat();
        assert!(!types.is_empty());
        assert!(
            types
                .iter()
                .all(|t| matches!(t, DataType::Dictionary(..)) == dictionary),
            "{}: expected dictionary = {dictionary}, read {types:?}",
            file.path
        );
        let got = as_counts(run_view(&spec, &input).collect_async().await.unwrap());
        assert_eq!(got, want, "{}", file.path);
    }
}
