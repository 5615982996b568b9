//! The master dataset: every record ever ingested, as Parquet on an object
//! store, one file per stream per sealed epoch, listed in a manifest.
//!
//! The speed layer writes it (when an epoch is sealed) and the batch layer
//! reads it (a snapshot of the sealed epochs), so it lives here, shared, and
//! behind the `master` cargo feature.
//!
//! - [`manifest`]: the list readers trust instead of listing directories.
//! - [`scan`]: a [`PartitionSource`](crate::PartitionSource) over Parquet row
//!   groups, read with column projection.
//! - [`reader`]: Parquet's async reader over `object_store`.
//!
//! Paths never come from users: a file's path is built from a validated
//! stream name and an epoch number, and object-store paths cannot contain
//! `..`, so nothing escapes the configured root.

pub mod lease;
pub mod manifest;
pub mod reader;
pub mod scan;

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

pub use manifest::{EpochFile, Manifest};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::rdd::Rdd;

/// Name of the manifest object under the dataset's root.
pub const MANIFEST: &str = "_manifest.json";

/// The master dataset at one URL.
#[derive(Clone)]
pub struct MasterStore {
    store: Arc<dyn ObjectStore>,
    url: String,
    /// Whether writes are allowed (see [`lease`]).
    guard: lease::WriteGuard,
}

/// A Parquet file being written: see [`MasterStore::epoch_writer`].
pub struct EpochWriter {
    master: MasterStore,
    writer: AsyncArrowWriter<object_store::buffered::BufWriter>,
    schema: arrow::datatypes::SchemaRef,
    stream: String,
    epoch: u64,
    path: String,
    rows: u64,
}

impl std::fmt::Debug for EpochWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EpochWriter")
            .field("path", &self.path)
            .field("rows", &self.rows)
            .finish_non_exhaustive()
    }
}

impl EpochWriter {
    /// Appends a batch.
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] for a batch of another schema; [`Error::Execution`]
    /// for store or encoding failures.
    pub async fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        if batch.schema() != self.schema {
            return Err(Error::plan(format!(
                "stream `{}` epoch {}: batches have different schemas",
                self.stream, self.epoch
            )));
        }
        self.rows += batch.num_rows() as u64;
        self.writer
            .write(batch)
            .await
            .map_err(|e| Error::execution(format!("{}/{}: {e}", self.master.url, self.path)))
    }

    /// Finishes the file and returns its manifest entry.
    ///
    /// # Errors
    ///
    /// [`Error::Execution`] for store or encoding failures.
    pub async fn finish(self) -> Result<EpochFile> {
        let EpochWriter {
            master,
            writer,
            stream,
            epoch,
            path,
            rows,
            ..
        } = self;
        writer
            .close()
            .await
            .map_err(|e| Error::execution(format!("{}/{path}: {e}", master.url)))?;
        let meta = master
            .store
            .head(&Path::from(path.as_str()))
            .await
            .map_err(|e| master.io_error(&format!("stat {path}"), e))?;
        Ok(EpochFile {
            stream,
            epoch,
            path,
            rows,
            bytes: meta.size,
        })
    }
}

impl std::fmt::Debug for MasterStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterStore")
            .field("url", &self.url)
            .finish()
    }
}

impl MasterStore {
    /// Opens the dataset at `url`: `file://PATH` (relative paths are
    /// relative to the working directory; the directory is created) or a
    /// plain path.
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] for a scheme this build cannot reach (`s3://` and
    /// `hdfs://` are not built in yet) or a directory that cannot be created.
    pub fn open(url: &str) -> Result<Self> {
        let path = match url.split_once("://") {
            None => url,
            Some(("file", rest)) => rest,
            Some((scheme, _)) => {
                return Err(Error::plan(format!(
                    "master dataset `{url}`: the {scheme}:// scheme is not supported by this build yet (use file://)"
                )));
            }
        };
        if path.is_empty() {
            return Err(Error::plan("master dataset: empty path"));
        }
        std::fs::create_dir_all(path).map_err(|e| {
            Error::plan(format!("master dataset `{url}`: cannot create {path}: {e}"))
        })?;
        let store = object_store::local::LocalFileSystem::new_with_prefix(path)
            .map_err(|e| Error::plan(format!("master dataset `{url}`: {e}")))?;
        Ok(MasterStore::with_store(Arc::new(store), url))
    }

    /// A dataset on an already built object store (tests, other backends).
    pub fn with_store(store: Arc<dyn ObjectStore>, url: &str) -> Self {
        MasterStore {
            store,
            url: url.to_owned(),
            guard: Default::default(),
        }
    }

    /// The URL the dataset was opened with.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The object store underneath.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Reads the manifest; an absent one is an empty dataset.
    ///
    /// # Errors
    ///
    /// [`Error::Execution`] when the store cannot be read,
    /// [`Error::Plan`] when the manifest is not valid.
    pub async fn manifest(&self) -> Result<Manifest> {
        match self.store.get(&Path::from(MANIFEST)).await {
            Ok(found) => {
                let bytes = found
                    .bytes()
                    .await
                    .map_err(|e| self.io_error("read the manifest", e))?;
                Manifest::from_json(&bytes)
                    .map_err(|e| Error::plan(format!("{}/{MANIFEST}: {e}", self.url)))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(Manifest::default()),
            Err(e) => Err(self.io_error("read the manifest", e)),
        }
    }

    /// Replaces the manifest (a single put: atomic on local disk and S3).
    ///
    /// # Errors
    ///
    /// [`Error::Execution`] when the store cannot be written.
    pub async fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        self.guard.check(&self.url)?;
        let json = manifest.to_json();
        self.store
            .put(&Path::from(MANIFEST), PutPayload::from(json))
            .await
            .map_err(|e| self.io_error("write the manifest", e))?;
        Ok(())
    }

    /// Writes the records of one stream in one epoch as one Parquet file;
    /// see [`epoch_writer`](Self::epoch_writer).
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] for batches of different schemas or none at all;
    /// [`Error::Execution`] for store or encoding failures.
    pub async fn write_epoch_file(
        &self,
        stream: &str,
        epoch: u64,
        batches: &[RecordBatch],
    ) -> Result<EpochFile> {
        let first = batches.first().ok_or_else(|| {
            Error::plan(format!(
                "stream `{stream}` epoch {epoch}: no batches to write"
            ))
        })?;
        let mut writer = self.epoch_writer(stream, epoch, first.schema())?;
        for batch in batches {
            writer.write(batch).await?;
        }
        writer.finish().await
    }

    /// A streaming writer of one stream's file for one epoch (zstd, row
    /// groups of up to 1M rows, so memory stays bounded by one row group
    /// whatever the epoch's size). The name depends only on the stream and
    /// the epoch, so writing it again after a crash replaces the same
    /// object. Does not touch the manifest.
    ///
    /// # Errors
    ///
    /// [`Error::Execution`] when the encoder cannot start.
    pub fn epoch_writer(
        &self,
        stream: &str,
        epoch: u64,
        schema: arrow::datatypes::SchemaRef,
    ) -> Result<EpochWriter> {
        self.guard.check(&self.url)?;
        let path = EpochFile::path_for(stream, epoch);
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_row_count(Some(1 << 20))
            .build();
        let sink = object_store::buffered::BufWriter::new(
            Arc::clone(&self.store),
            Path::from(path.as_str()),
        );
        let writer = AsyncArrowWriter::try_new(sink, Arc::clone(&schema), Some(props))
            .map_err(|e| Error::execution(format!("{}/{path}: {e}", self.url)))?;
        Ok(EpochWriter {
            master: self.clone(),
            writer,
            schema,
            stream: stream.to_owned(),
            epoch,
            path,
            rows: 0,
        })
    }

    /// A dataset over the row groups of `files`, reading only the named
    /// columns (all columns with `None`). Loads every file's footer first.
    ///
    /// # Errors
    ///
    /// [`Error::Execution`] naming the file when a footer cannot be read or
    /// is not Parquet; [`Error::Plan`] when a projected column is missing.
    pub async fn scan(
        &self,
        ctx: &Context,
        files: &[EpochFile],
        columns: Option<&[String]>,
    ) -> Result<Rdd<RecordBatch>> {
        let source = scan::ParquetSource::open(self, files, columns).await?;
        Ok(ctx.from_source(source))
    }

    fn io_error(&self, what: &str, e: object_store::Error) -> Error {
        Error::execution(format!("master dataset {}: cannot {what}: {e}", self.url))
    }
}
