//! The master-dataset tests' backends and fixtures (`tests/master_*.rs`):
//! a fresh [`Dataset`] location per test on local files, a real
//! S3-compatible server (s3s-fs, installed by `deploy/install-s3s.sh`) or,
//! when `HDFS_URL` is set, a real HDFS; `on_every_backend!` makes a test
//! per backend (`local::`, `s3::`, `hdfs::`) of each `async fn(Dataset)`.
//! Without the S3 server the `s3::` tests skip themselves unless
//! `LAMINA_REQUIRE_PEERS=1`; without `HDFS_URL` (e.g.
//! `hdfs://namenode:9000/tmp/lamina-tests`) the `hdfs::` tests skip
//! themselves.
//!
//! The fixtures are Parquet files written by pyarrow and DuckDB
//! (tests/data/make_parquet_fixtures.py) with the answers Python computed.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use lamina::master::{EpochFile, MasterStore, StoreOptions};
use lamina::view::{AggValue, AggregateKind, KeySpec, ViewSpec};
use object_store::path::Path as StorePath;
use object_store::{ObjectStoreExt, PutPayload};

#[path = "s3.rs"]
mod s3_server;

pub use s3_server::S3Server;

pub const FIXTURES: [&str; 4] = [
    "pyarrow_snappy.parquet",
    "pyarrow_zstd_dict.parquet",
    "pyarrow_plain.parquet",
    "duckdb.parquet",
];

pub fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

#[derive(Debug, Clone, Copy)]
pub enum Where {
    Local,
    S3,
    Hdfs,
}

/// A fresh, empty dataset location on one backend, removed on drop (local
/// and S3: the directory or bucket directory; HDFS: left to the cluster's
/// retention, under a unique path).
pub struct Dataset {
    pub url: String,
    pub options: StoreOptions,
    dir: PathBuf,
    _server: Option<S3Server>,
}

impl Dataset {
    /// `None` when the backend is not available here (see the module
    /// docs).
    pub fn new(kind: Where, tag: &str) -> Option<Dataset> {
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

    pub fn open(&self) -> MasterStore {
        MasterStore::open_with(&self.url, &self.options).unwrap()
    }

    /// Puts `bytes` at `path` under the dataset's root, as another tool
    /// would.
    pub async fn put(&self, path: &str, bytes: Vec<u8>) {
        self.open()
            .object_store()
            .put(&StorePath::from(path), PutPayload::from(bytes))
            .await
            .unwrap();
    }

    /// A store over one fixture copied in as stream `events` epoch 0, and
    /// its manifest entry.
    pub async fn fixture(&self, name: &str) -> (MasterStore, EpochFile) {
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
#[macro_export]
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

pub fn expected() -> serde_json::Value {
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(data_dir().join("expected.json")).unwrap()).unwrap();
    assert!(
        v["word_counts"].as_object().is_some_and(|m| m.len() == 8),
        "fixture answers are present"
    );
    v
}

pub fn as_counts(rows: Vec<(String, AggValue)>) -> BTreeMap<String, i64> {
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

pub fn json_counts(v: &serde_json::Value) -> BTreeMap<String, i64> {
    v.as_object()
        .unwrap()
        .iter()
        .map(|(k, n)| (k.clone(), n.as_i64().unwrap()))
        .collect()
}

pub fn views() -> [(ViewSpec, &'static str); 3] {
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

/// The columns `spec` reads: its key column, then its value column.
pub fn view_columns(spec: &ViewSpec) -> Vec<String> {
    let mut columns = vec![];
    match &spec.key {
        KeySpec::Words(c) | KeySpec::Column(c) => columns.push(c.clone()),
        other => panic!("not a fixture view's key: {other:?}"),
    }
    columns.extend(spec.column.clone());
    columns
}
