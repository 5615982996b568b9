//! The master dataset on every backend (see tests/support/master.rs) —
//! local files, a real S3-compatible server and, when `HDFS_URL` is set, a
//! real HDFS — against Parquet written by other tools (pyarrow and DuckDB),
//! our own writer (also multipart-sized epochs), manifests (conditional
//! replacement where the backend has it), the writer lease, broken files,
//! and stores that do not answer. Other tools' files as a stream's history:
//! tests/master_history.rs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use lamina::master::{EpochFile, Manifest, MasterStore, StoreOptions};
use lamina::view::{KeySpec, run_view};
use lamina::{Context, Error};

#[path = "support/master.rs"]
mod master;

use master::{Dataset, FIXTURES, Where, as_counts, expected, json_counts, view_columns, views};

on_every_backend!(
    views_over_parquet_written_by_pyarrow_and_duckdb_match_python,
    own_writer_round_trips_and_manifest_snapshots_select_epochs,
    large_epochs_round_trip,
    the_manifest_is_replaced_from_the_version_read,
    one_writer_holds_the_lease,
    broken_parquet_and_missing_columns_are_clear_errors,
);

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
            let columns = view_columns(&spec);
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
