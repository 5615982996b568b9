//! The master dataset against real Parquet written by other tools (pyarrow
//! and DuckDB, see tests/data/make_parquet_fixtures.py), our own writer,
//! manifests, projection, and broken files.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Int64Array, StringArray};
use arrow::record_batch::RecordBatch;
use lamina::master::{EpochFile, Manifest, MasterStore};
use lamina::view::{AggValue, AggregateKind, KeySpec, ViewSpec, run_view};
use lamina::{Context, Error};

const FIXTURES: [&str; 4] = [
    "pyarrow_snappy.parquet",
    "pyarrow_zstd_dict.parquet",
    "pyarrow_plain.parquet",
    "duckdb.parquet",
];

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// A master store over a fresh copy of one fixture, listed as stream `events`
/// epoch 0.
fn fixture_store(name: &str) -> (tempdir::Dir, MasterStore, EpochFile) {
    let dir = tempdir::Dir::new(name);
    let target = dir.path().join(EpochFile::path_for("events", 0));
    std::fs::create_dir_all(target.parent().unwrap()).unwrap();
    std::fs::copy(data_dir().join(name), &target).unwrap();
    let store = MasterStore::open(&format!("file://{}", dir.path().display())).unwrap();
    let file = EpochFile {
        stream: "events".into(),
        epoch: 0,
        path: EpochFile::path_for("events", 0),
        rows: 0,
        bytes: std::fs::metadata(&target).unwrap().len(),
    };
    (dir, store, file)
}

mod tempdir {
    use std::path::{Path, PathBuf};
    use std::sync::atomic::{AtomicU64, Ordering};

    pub struct Dir(PathBuf);

    impl Dir {
        pub fn new(tag: &str) -> Self {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            let p = std::env::temp_dir().join(format!(
                "lamina-master-{}-{}-{}",
                tag.replace('.', "_"),
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = std::fs::remove_dir_all(&p);
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }

        pub fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn views_over_parquet_written_by_pyarrow_and_duckdb_match_python() {
    let want = expected();
    let ctx = Context::builder().threads(2).build().unwrap();
    for name in FIXTURES {
        let (_dir, store, file) = fixture_store(name);
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
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn own_writer_round_trips_and_manifest_snapshots_select_epochs() {
    let dir = tempdir::Dir::new("own");
    let store = MasterStore::open(&format!("file://{}", dir.path().display())).unwrap();
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

#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn broken_parquet_and_missing_columns_are_clear_errors() {
    let ctx = Context::builder().threads(1).build().unwrap();
    for name in ["garbage.parquet", "truncated.parquet"] {
        let (_dir, store, file) = fixture_store(name);
        let err = store.scan(&ctx, &[file], None).await.unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Execution(_)), "{name}: {msg}");
        assert!(
            msg.contains("epoch-00000000000000000000.parquet")
                && msg.contains("not a readable Parquet file"),
            "{msg}"
        );
    }
    let (_dir, store, file) = fixture_store("pyarrow_snappy.parquet");
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
    let dir = tempdir::Dir::new("gone");
    let store = MasterStore::open(&format!("file://{}", dir.path().display())).unwrap();
    let ghost = EpochFile {
        stream: "s".into(),
        epoch: 3,
        path: EpochFile::path_for("s", 3),
        rows: 1,
        bytes: 1,
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
    let err = MasterStore::open("s3://bucket/prefix")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("s3://") && err.contains("not supported"),
        "{err}"
    );
}
