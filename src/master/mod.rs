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

pub mod adapt;
#[cfg(feature = "hdfs")]
pub mod bounded;
pub mod epochs;
pub mod history;
pub mod lease;
pub mod location;
pub mod manifest;
pub mod reader;
pub mod scan;

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion};
use parquet::arrow::AsyncArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

pub use location::{S3Options, StorageUrl, StoreOptions};
pub use manifest::{EpochFile, Manifest, Retired, Segment};

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
    /// Whether the backend can replace the manifest conditionally (S3).
    compare_and_swap: bool,
    /// Whether writes are allowed (see [`lease`]).
    guard: lease::WriteGuard,
    /// Serialises this process's manifest updates (the sealer's and
    /// compaction's), shared by clones: every read-modify-write of the
    /// manifest holds it, so neither undoes the other on backends without
    /// compare-and-swap.
    manifest_lock: Arc<tokio::sync::Mutex<()>>,
}

/// A file's batches, front to back: see [`MasterStore::read_file`].
pub type FileBatches = parquet::arrow::async_reader::ParquetRecordBatchStream<reader::ObjectReader>;

/// The version of the manifest a [`MasterStore::read_manifest`] saw (none:
/// there was no manifest), for a conditional
/// [`MasterStore::replace_manifest`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManifestVersion(Option<UpdateVersion>);

enum ManifestPutError {
    /// The manifest is not the version read.
    Conflict,
    Other(Error),
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
            segments: Vec::new(),
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

/// The largest dictionary page the master dataset's writer keeps per
/// column chunk before falling back to plain pages.
const DICTIONARY_PAGE_LIMIT: usize = 16 << 20;

impl MasterStore {
    /// Opens the dataset at `url` with default [`StoreOptions`]; see
    /// [`open_with`](Self::open_with).
    ///
    /// # Errors
    ///
    /// As [`open_with`](Self::open_with).
    pub fn open(url: &str) -> Result<Self> {
        Self::open_with(url, &StoreOptions::default())
    }

    /// Opens the dataset at `url` (see [`StorageUrl`]: `file://PATH`, whose
    /// directory is created, `s3://BUCKET/PREFIX` or
    /// `hdfs://HOST:PORT/PATH`). Remote stores are not contacted yet.
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] for a URL or settings that cannot work (see
    /// [`location::open_store`]).
    pub fn open_with(url: &str, options: &StoreOptions) -> Result<Self> {
        let location =
            StorageUrl::parse(url).map_err(|e| Error::plan(format!("master dataset: {e}")))?;
        let store = location::open_store(&location, options, true)
            .map_err(|e| Error::plan(format!("master dataset {e}")))?;
        let mut master = MasterStore::with_store(store, url);
        master.compare_and_swap = location.has_compare_and_swap();
        Ok(master)
    }

    /// A dataset on an already built object store (tests, other backends).
    /// The manifest is then replaced by plain atomic puts, never
    /// compare-and-swap (that is for stores opened from an `s3://` URL).
    pub fn with_store(store: Arc<dyn ObjectStore>, url: &str) -> Self {
        MasterStore {
            store,
            url: url.to_owned(),
            compare_and_swap: false,
            guard: Default::default(),
            manifest_lock: Arc::default(),
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
        Ok(self.read_manifest().await?.0)
    }

    /// Holds this process's manifest updates back until the guard is
    /// dropped: take it before [`read_manifest`](Self::read_manifest) and
    /// keep it until [`replace_manifest`](Self::replace_manifest) is done.
    pub async fn lock_manifest(&self) -> tokio::sync::OwnedMutexGuard<()> {
        Arc::clone(&self.manifest_lock).lock_owned().await
    }

    /// Reads the manifest and the version read, for
    /// [`replace_manifest`](Self::replace_manifest).
    ///
    /// # Errors
    ///
    /// As [`manifest`](Self::manifest).
    pub async fn read_manifest(&self) -> Result<(Manifest, ManifestVersion)> {
        match self.store.get(&Path::from(MANIFEST)).await {
            Ok(found) => {
                let version = ManifestVersion(Some(UpdateVersion {
                    e_tag: found.meta.e_tag.clone(),
                    version: found.meta.version.clone(),
                }));
                let bytes = found
                    .bytes()
                    .await
                    .map_err(|e| self.io_error("read the manifest", e))?;
                let manifest = Manifest::from_json(&bytes)
                    .map_err(|e| Error::plan(format!("{}/{MANIFEST}: {e}", self.url)))?;
                Ok((manifest, version))
            }
            Err(object_store::Error::NotFound { .. }) => {
                Ok((Manifest::default(), ManifestVersion(None)))
            }
            Err(e) => Err(self.io_error("read the manifest", e)),
        }
    }

    /// Replaces the manifest unconditionally (a single put: atomic on every
    /// backend, see [`location`]). Tools and tests; the sealer uses
    /// [`replace_manifest`](Self::replace_manifest).
    ///
    /// # Errors
    ///
    /// [`Error::Execution`] when the store cannot be written.
    pub async fn write_manifest(&self, manifest: &Manifest) -> Result<()> {
        match self.put_manifest(manifest, PutMode::Overwrite).await {
            Ok(_) => Ok(()),
            Err(ManifestPutError::Conflict) => Err(self.conflict()),
            Err(ManifestPutError::Other(e)) => Err(e),
        }
    }

    /// Replaces the manifest `read` came with. Where the backend can (S3)
    /// the put is conditional on the manifest being unchanged since it was
    /// read (`If-Match`, or `If-None-Match` when there was none), so a
    /// second writer that got past the lease cannot be overwritten
    /// unnoticed; elsewhere it is an atomic put and the writer lease alone
    /// keeps other writers out.
    ///
    /// # Errors
    ///
    /// [`Error::Execution`] when the store cannot be written or the manifest
    /// changed since it was read.
    pub async fn replace_manifest(
        &self,
        manifest: &Manifest,
        read: &ManifestVersion,
    ) -> Result<ManifestVersion> {
        let mode = match &read.0 {
            _ if !self.compare_and_swap => PutMode::Overwrite,
            None => PutMode::Create,
            Some(version) => PutMode::Update(version.clone()),
        };
        match self.put_manifest(manifest, mode).await {
            Ok(version) => Ok(version),
            Err(ManifestPutError::Conflict) => Err(self.conflict()),
            Err(ManifestPutError::Other(e)) => Err(e),
        }
    }

    fn conflict(&self) -> Error {
        Error::execution(format!(
            "master dataset {}: the manifest was changed by someone else since this server read it; nothing was overwritten (is a second writer using this dataset?)",
            self.url
        ))
    }

    async fn put_manifest(
        &self,
        manifest: &Manifest,
        mode: PutMode,
    ) -> std::result::Result<ManifestVersion, ManifestPutError> {
        self.guard
            .check(&self.url)
            .map_err(ManifestPutError::Other)?;
        let json = manifest.to_json();
        let opts = PutOptions {
            mode,
            ..Default::default()
        };
        match self
            .store
            .put_opts(&Path::from(MANIFEST), PutPayload::from(json), opts)
            .await
        {
            Ok(put) => Ok(ManifestVersion(Some(UpdateVersion {
                e_tag: put.e_tag,
                version: put.version,
            }))),
            Err(
                object_store::Error::Precondition { .. }
                | object_store::Error::AlreadyExists { .. },
            ) => Err(ManifestPutError::Conflict),
            Err(e) => Err(ManifestPutError::Other(
                self.io_error("write the manifest", e),
            )),
        }
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
        self.writer_at(EpochFile::path_for(stream, epoch), stream, epoch, schema)
    }

    /// A streaming writer of one stream's compacted file of epochs
    /// `first..=last` (as [`epoch_writer`](Self::epoch_writer); the caller
    /// fills in the entry's segments).
    ///
    /// # Errors
    ///
    /// [`Error::Execution`] when the encoder cannot start.
    pub fn compacted_writer(
        &self,
        stream: &str,
        first: u64,
        last: u64,
        schema: arrow::datatypes::SchemaRef,
    ) -> Result<EpochWriter> {
        let path = EpochFile::compacted_path_for(stream, first, last);
        self.writer_at(path, stream, last, schema)
    }

    fn writer_at(
        &self,
        path: String,
        stream: &str,
        epoch: u64,
        schema: arrow::datatypes::SchemaRef,
    ) -> Result<EpochWriter> {
        self.guard.check(&self.url)?;
        let props = WriterProperties::builder()
            .set_compression(Compression::ZSTD(ZstdLevel::default()))
            .set_max_row_group_row_count(Some(1 << 20))
            // Room for a key column's whole dictionary in a row group (the
            // default, 1 MiB, falls back to plain pages after ~25,000
            // URLs): batch runs fold wholly dictionary-encoded key columns
            // per dictionary entry. A column of unique values still falls
            // back, after this much.
            .set_dictionary_page_size_limit(DICTIONARY_PAGE_LIMIT)
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

    /// [`scan`](Self::scan), counting what the tasks read into `progress`.
    ///
    /// # Errors
    ///
    /// As [`scan`](Self::scan).
    pub async fn scan_counted(
        &self,
        ctx: &Context,
        files: &[EpochFile],
        columns: Option<&[String]>,
        progress: &Arc<scan::ScanProgress>,
    ) -> Result<Rdd<RecordBatch>> {
        self.scan_with(ctx, files, columns, &[], progress).await
    }

    /// [`scan_counted`](Self::scan_counted), reading the string columns
    /// named in `dictionaries` as dictionary arrays where a row group
    /// stores them wholly dictionary-encoded (see
    /// [`scan::ParquetSource::with_dictionaries`]).
    ///
    /// # Errors
    ///
    /// As [`scan`](Self::scan).
    pub async fn scan_with(
        &self,
        ctx: &Context,
        files: &[EpochFile],
        columns: Option<&[String]>,
        dictionaries: &[String],
        progress: &Arc<scan::ScanProgress>,
    ) -> Result<Rdd<RecordBatch>> {
        let source = scan::ParquetSource::open(self, files, columns)
            .await?
            .with_dictionaries(dictionaries)?
            .with_progress(Arc::clone(progress));
        Ok(ctx.from_source(source))
    }

    /// Reads a file of the dataset front to back, all columns, in batches
    /// of up to 8192 rows (for copying and replaying; batch runs use
    /// [`scan`](Self::scan), which reads row groups in parallel).
    ///
    /// # Errors
    ///
    /// [`Error::Execution`] naming the file when its footer cannot be read
    /// or is not Parquet.
    pub async fn read_file(&self, path: &str) -> Result<FileBatches> {
        let label = format!("{}/{path}", self.url);
        let reader = reader::ObjectReader::new(Arc::clone(&self.store), Path::from(path));
        parquet::arrow::ParquetRecordBatchStreamBuilder::new(reader)
            .await
            .and_then(|b| b.with_batch_size(8192).build())
            .map_err(|e| Error::execution(format!("{label}: not a readable Parquet file: {e}")))
    }

    /// Deletes a file of the dataset; one that is gone already is fine.
    ///
    /// # Errors
    ///
    /// [`Error::Execution`] when the store refuses.
    pub async fn delete_file(&self, path: &str) -> Result<()> {
        self.guard.check(&self.url)?;
        match self.store.delete(&Path::from(path)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.io_error(&format!("delete {path}"), e)),
        }
    }

    /// The objects under `STREAM/` (names relative to the dataset root).
    ///
    /// # Errors
    ///
    /// [`Error::Execution`] when the store cannot be listed.
    pub async fn list_stream(&self, stream: &str) -> Result<Vec<String>> {
        use futures::TryStreamExt;
        let prefix = Path::from(stream);
        let found: Vec<object_store::ObjectMeta> = self
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.io_error(&format!("list {stream}/"), e))?;
        Ok(found.into_iter().map(|m| m.location.to_string()).collect())
    }

    fn io_error(&self, what: &str, e: object_store::Error) -> Error {
        Error::execution(format!("master dataset {}: cannot {what}: {e}", self.url))
    }
}
