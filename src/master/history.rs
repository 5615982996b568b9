//! A stream's history: Parquet datasets written by other tools (Spark,
//! pyarrow, DuckDB, ...) that every batch run reads before the stream's
//! own epochs (`history = ["s3://bucket/events/", ...]` in `[[stream]]`).
//!
//! A dataset is every `*.parquet` file under its URL, at any depth, except
//! files and folders whose names start with `_` or `.` (`_SUCCESS`,
//! `_delta_log/`, `.crc` files, temporary files being written). Folders
//! named `key=value` (hive-style partitioning) give the files below them
//! column `key` when the file itself has no such column. Files are listed
//! again by every run, so files added later are read by the next run; a
//! file must not be changed once written.

use std::sync::Arc;

use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path;

use super::location::{StorageUrl, StoreOptions, open_store};
use super::scan::ScanFile;
use crate::error::{Error, Result};

/// One history dataset.
#[derive(Clone)]
pub struct HistoryDataset {
    url: String,
    store: Arc<dyn ObjectStore>,
}

impl std::fmt::Debug for HistoryDataset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HistoryDataset")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// What a listing found.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    /// The files, in path order.
    pub files: Vec<ScanFile>,
    /// Their total size in bytes.
    pub bytes: u64,
}

impl HistoryDataset {
    /// The dataset at `url` (a `file://` directory must exist). Remote
    /// stores are not contacted yet.
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] for a URL or settings that cannot work.
    pub fn open(url: &str, options: &StoreOptions) -> Result<Self> {
        let location =
            StorageUrl::parse(url).map_err(|e| Error::plan(format!("history dataset: {e}")))?;
        let store = open_store(&location, options, false)
            .map_err(|e| Error::plan(format!("history dataset {e}")))?;
        Ok(HistoryDataset {
            url: location.to_string(),
            store,
        })
    }

    /// The URL, normalised.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Lists the dataset's Parquet files.
    ///
    /// # Errors
    ///
    /// [`Error::Execution`] when the store cannot be listed.
    pub async fn list(&self) -> Result<Listing> {
        let mut found: Vec<(Path, u64)> = self
            .store
            .list(None)
            .map_ok(|meta| (meta.location, meta.size))
            .try_collect()
            .await
            .map_err(|e| {
                Error::execution(format!("history dataset {}: cannot list it: {e}", self.url))
            })?;
        found.retain(|(path, _)| is_data_file(path));
        found.sort();
        let bytes = found.iter().map(|(_, size)| size).sum();
        let base = self.url.trim_end_matches('/');
        let files = found
            .into_iter()
            .map(|(path, _)| ScanFile {
                store: Arc::clone(&self.store),
                label: format!("{base}/{path}"),
                partitions: partitions_of(&path),
                path,
            })
            .collect();
        Ok(Listing { files, bytes })
    }
}

/// The files as a dataset of the stream with schema `target`, reading
/// only `columns` of it (all with `None`); also the rows the files hold.
/// With `progress`, the tasks count what they read into it.
///
/// # Errors
///
/// As [`ParquetSource::open_files`](super::scan::ParquetSource::open_files).
pub async fn scan_as(
    ctx: &crate::Context,
    files: &[ScanFile],
    columns: Option<&[String]>,
    target: &arrow::datatypes::SchemaRef,
    progress: Option<&Arc<super::scan::ScanProgress>>,
) -> Result<(crate::rdd::Rdd<arrow::record_batch::RecordBatch>, u64)> {
    let mut source = super::scan::ParquetSource::open_files(files, columns, Some(target)).await?;
    let rows = source.rows();
    if let Some(p) = progress {
        source = source.with_progress(Arc::clone(p));
    }
    Ok((ctx.from_source(source), rows))
}

/// A `*.parquet` file with no part of its path hidden (`_x`, `.x`).
fn is_data_file(path: &Path) -> bool {
    let parts: Vec<_> = path.parts().collect();
    parts
        .iter()
        .all(|p| !p.as_ref().starts_with('_') && !p.as_ref().starts_with('.'))
        && parts
            .last()
            .is_some_and(|name| name.as_ref().to_ascii_lowercase().ends_with(".parquet"))
}

/// The `key=value` folders of a path, values percent-decoded (Spark and
/// Hive escape `/`, `=`, `%`, ... that way); Hive's
/// `__HIVE_DEFAULT_PARTITION__` is null.
fn partitions_of(path: &Path) -> Vec<(String, Option<String>)> {
    let parts: Vec<_> = path.parts().collect();
    let folders = &parts[..parts.len().saturating_sub(1)];
    folders
        .iter()
        .filter_map(|p| {
            let (key, value) = p.as_ref().split_once('=')?;
            let value = percent_decode(value);
            let value = (value != "__HIVE_DEFAULT_PARTITION__").then_some(value);
            Some((percent_decode(key), value))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(hex) = s.get(i + 1..i + 3)
            && let Ok(b) = u8::from_str_radix(hex, 16)
        {
            out.push(b);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_files_and_hive_folders() {
        let p = |s: &str| Path::parse(s).unwrap();
        assert!(is_data_file(&p("part-0.parquet")));
        assert!(is_data_file(&p("date=2026-01-01/part-0.PARQUET")));
        assert!(!is_data_file(&p("_SUCCESS")));
        assert!(!is_data_file(&p("_delta_log/0.parquet")));
        assert!(!is_data_file(&p("date=1/.part-0.parquet.crc")));
        assert!(!is_data_file(&p("date=1/part-0.json")));
        assert_eq!(
            partitions_of(&p(
                "country=NO/city=Bod%C3%B8/x=__HIVE_DEFAULT_PARTITION__/f.parquet"
            )),
            vec![
                ("country".into(), Some("NO".into())),
                ("city".into(), Some("Bodø".into())),
                ("x".into(), None),
            ]
        );
        assert!(partitions_of(&p("plain/f.parquet")).is_empty());
    }
}
