//! Reading the master dataset as a dataset of record batches: one partition
//! per Parquet row group, only the projected columns.

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};

use super::reader::ObjectReader;
use super::{EpochFile, MasterStore};
use crate::context::TaskContext;
use crate::error::{Error, Result};
use crate::rdd::{BoxIter, PartitionSource};

struct Part {
    file: usize,
    row_group: usize,
}

struct File {
    path: Path,
    label: String,
    metadata: ArrowReaderMetadata,
    projection: ProjectionMask,
}

/// Row groups of Parquet files as partitions.
///
/// Reading a partition fetches that row group's projected column chunks and
/// decodes them on the worker thread that runs the task (the object-store
/// I/O is driven by the tokio runtime the scan was created on). Memory per
/// task is bounded by one row group.
pub struct ParquetSource {
    store: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Handle,
    files: Vec<File>,
    parts: Vec<Part>,
}

impl std::fmt::Debug for ParquetSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ParquetSource")
            .field("files", &self.files.len())
            .field("row_groups", &self.parts.len())
            .finish_non_exhaustive()
    }
}

impl ParquetSource {
    /// Reads every file's footer and plans one partition per row group.
    /// Must be called inside a tokio runtime, which later drives the I/O of
    /// the tasks.
    ///
    /// # Errors
    ///
    /// [`Error::Execution`] naming the file when its footer cannot be read
    /// or is not Parquet; [`Error::Plan`] when a projected column is missing.
    pub async fn open(
        master: &MasterStore,
        files: &[EpochFile],
        columns: Option<&[String]>,
    ) -> Result<Self> {
        let store = Arc::clone(master.object_store());
        let mut opened = Vec::with_capacity(files.len());
        let mut parts = Vec::new();
        for (i, f) in files.iter().enumerate() {
            let label = format!("{}/{}", master.url(), f.path);
            let path = Path::from(f.path.as_str());
            let mut reader = ObjectReader::new(Arc::clone(&store), path.clone());
            let metadata = ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::new())
                .await
                .map_err(|e| {
                    Error::execution(format!("{label}: not a readable Parquet file: {e}"))
                })?;
            let projection = match columns {
                None => ProjectionMask::all(),
                Some(names) => {
                    let schema = metadata.schema();
                    let indices = names
                        .iter()
                        .map(|n| {
                            schema.index_of(n).map_err(|_| {
                                Error::plan(format!(
                                    "{label}: no column `{n}` (columns: {})",
                                    field_names(schema)
                                ))
                            })
                        })
                        .collect::<Result<Vec<usize>>>()?;
                    ProjectionMask::roots(metadata.parquet_schema(), indices)
                }
            };
            for rg in 0..metadata.metadata().num_row_groups() {
                parts.push(Part {
                    file: i,
                    row_group: rg,
                });
            }
            opened.push(File {
                path,
                label,
                metadata,
                projection,
            });
        }
        Ok(ParquetSource {
            store,
            runtime: tokio::runtime::Handle::current(),
            files: opened,
            parts,
        })
    }

    async fn read_row_group(&self, part: &Part) -> Result<Vec<RecordBatch>> {
        let file = &self.files[part.file];
        let reader = ObjectReader::with_metadata(
            Arc::clone(&self.store),
            file.path.clone(),
            Arc::clone(file.metadata.metadata()),
        );
        let stream =
            ParquetRecordBatchStreamBuilder::new_with_metadata(reader, file.metadata.clone())
                .with_row_groups(vec![part.row_group])
                .with_projection(file.projection.clone())
                .with_batch_size(8192)
                .build()
                .map_err(|e| {
                    Error::execution(format!("{}: row group {}: {e}", file.label, part.row_group))
                })?;
        stream.try_collect().await.map_err(|e| {
            Error::execution(format!("{}: row group {}: {e}", file.label, part.row_group))
        })
    }
}

fn field_names(schema: &arrow::datatypes::Schema) -> String {
    schema
        .fields()
        .iter()
        .map(|f| f.name().as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

impl PartitionSource for ParquetSource {
    type Item = RecordBatch;

    fn num_partitions(&self) -> usize {
        self.parts.len()
    }

    fn read<'a>(
        &'a self,
        partition: usize,
        _: &'a TaskContext,
    ) -> Result<BoxIter<'a, RecordBatch>> {
        // Worker threads are not tokio threads, so blocking on the runtime
        // here is allowed; the decoding inside the stream runs on this
        // worker, the I/O on the runtime's reactor.
        let batches = self
            .runtime
            .block_on(self.read_row_group(&self.parts[partition]))?;
        Ok(Box::new(batches.into_iter()))
    }

    fn describe(&self) -> String {
        "parquet".to_owned()
    }
}
