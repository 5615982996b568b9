//! Reading Parquet files as a dataset of record batches: one partition per
//! row group, only the projected columns. The master dataset's own epochs
//! are read as written; files of other tools (a stream's history, see
//! [`history`](super::history)) are read *as the stream*: columns matched
//! by name, cast to the stream's types, hive-style `key=value` folders as
//! columns, and a clear error naming the file and the column otherwise.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow::record_batch::RecordBatch;
use futures::StreamExt;
use object_store::ObjectStore;
use object_store::path::Path;
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};

use super::reader::{Fetched, ObjectReader};
use super::{EpochFile, MasterStore};
use crate::context::TaskContext;
use crate::error::{Error, Result};
use crate::rdd::{BoxIter, PartitionSource};

/// What the tasks of a scan have read so far, shared with whoever shows
/// progress.
#[derive(Debug, Default)]
pub struct ScanProgress {
    /// Rows handed to tasks.
    pub rows: AtomicU64,
    /// Bytes (compressed, all columns) of the row groups finished.
    pub bytes: AtomicU64,
}

struct Part {
    file: usize,
    row_group: usize,
    /// Read with the file's `dictionary` metadata: the requested string
    /// columns come as dictionary arrays.
    dictionary: bool,
}

struct File {
    store: Arc<dyn ObjectStore>,
    path: Path,
    label: String,
    metadata: ArrowReaderMetadata,
    projection: ProjectionMask,
    /// How the read batches become the stream's (`None`: as read).
    adapt: Option<Arc<super::adapt::Adapter>>,
    /// The metadata reading some string columns as dictionaries (see
    /// [`ParquetSource::with_dictionaries`]).
    dictionary: Option<ArrowReaderMetadata>,
}

/// One file to scan: where it is, and how to name it in errors.
#[derive(Clone)]
pub struct ScanFile {
    /// The store it is in.
    pub store: Arc<dyn ObjectStore>,
    /// Its path in the store.
    pub path: Path,
    /// Its URL, for messages.
    pub label: String,
    /// Hive-style `key=value` folders above it (already decoded).
    pub partitions: Vec<(String, Option<String>)>,
}

impl std::fmt::Debug for ScanFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScanFile")
            .field("label", &self.label)
            .field("partitions", &self.partitions)
            .finish_non_exhaustive()
    }
}

/// Row groups of Parquet files as partitions.
///
/// Reading a partition fetches that row group's projected column chunks and
/// decodes them on the worker thread that runs the task (the object-store
/// I/O is driven by the tokio runtime the scan was created on). Once its
/// own chunks are in, a task starts fetching the next row group's, so that
/// the task which reads it next (the engine's workers take row groups
/// mostly in order) finds them fetched instead of waiting a round trip per
/// row group; up to two row groups per engine worker and 96 MiB (one row
/// group when a single one is larger) are fetched ahead at once, so the
/// memory a scan holds does not grow with the data.
pub struct ParquetSource {
    runtime: tokio::runtime::Handle,
    files: Vec<File>,
    parts: Vec<Part>,
    progress: Option<Arc<ScanProgress>>,
    ahead: std::sync::Mutex<ReadAhead>,
}

/// Footers read at once when a scan opens.
const FOOTERS_AT_ONCE: usize = 8;

/// Which row groups are being fetched ahead of their task.
#[derive(Default)]
struct ReadAhead {
    /// Partitions whose task began (nothing more to fetch ahead for them).
    started: Vec<bool>,
    /// Fetches in flight or done, by partition, not yet taken by a task,
    /// with their bytes.
    pending: std::collections::HashMap<
        usize,
        (u64, tokio::task::JoinHandle<object_store::Result<Fetched>>),
    >,
}

impl ReadAhead {
    fn pending_bytes(&self) -> u64 {
        self.pending.values().map(|(bytes, _)| bytes).sum()
    }
}

/// Bytes of column chunks fetched ahead of their tasks at most (one row
/// group more when a single one is larger): enough that a worker finds its
/// next row group fetched even when the store serves slower than the
/// workers decode for a while (an S3 server sharing the machine's cores),
/// and a bound on the memory a scan holds independent of the data's size.
const READ_AHEAD_BYTES: u64 = 96 << 20;

impl Drop for ParquetSource {
    fn drop(&mut self) {
        // A scan that ends early (a failed or cancelled run) drops what it
        // fetched ahead and stops what is still in flight.
        let ahead = self.ahead.get_mut().unwrap_or_else(|e| e.into_inner());
        for (_, (_, fetch)) in ahead.pending.drain() {
            fetch.abort();
        }
    }
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
        let files: Vec<ScanFile> = files
            .iter()
            .map(|f| ScanFile {
                store: Arc::clone(master.object_store()),
                path: Path::from(f.path.as_str()),
                label: format!("{}/{}", master.url(), f.path),
                partitions: Vec::new(),
            })
            .collect();
        Self::open_files(&files, columns, None).await
    }

    /// Like [`open`](Self::open) for files of any store. With `target`
    /// (a stream's schema) each file is read as that stream: see
    /// [`adapt`](super::adapt); `columns` then name target columns.
    ///
    /// # Errors
    ///
    /// As [`open`](Self::open); with `target` also [`Error::Plan`] naming
    /// the file and the column whose type cannot be read as the stream's,
    /// or a non-nullable column that is missing.
    pub async fn open_files(
        files: &[ScanFile],
        columns: Option<&[String]>,
        target: Option<&arrow::datatypes::SchemaRef>,
    ) -> Result<Self> {
        let mut opened = Vec::with_capacity(files.len());
        let mut parts = Vec::new();
        // Footers are small reads: a round trip each, so several at once.
        // (Owned inputs: a future borrowing `files` would not be `Send`
        // for every lifetime, as the caller's boxed future needs.)
        let readers: Vec<(ObjectReader, String)> = files
            .iter()
            .map(|f| {
                let reader = ObjectReader::new(Arc::clone(&f.store), f.path.clone());
                (reader, f.label.clone())
            })
            .collect();
        let footers: Vec<Result<ArrowReaderMetadata>> = futures::stream::iter(readers)
            .map(|(mut reader, label)| async move {
                ArrowReaderMetadata::load_async(&mut reader, ArrowReaderOptions::new())
                    .await
                    .map_err(|e| {
                        Error::execution(format!("{label}: not a readable Parquet file: {e}"))
                    })
            })
            .buffered(FOOTERS_AT_ONCE)
            .collect()
            .await;
        for ((i, f), metadata) in files.iter().enumerate().zip(footers) {
            let label = f.label.clone();
            let metadata = metadata?;
            let (projection, adapt) = match target {
                Some(target) => {
                    let adapter = super::adapt::Adapter::plan(
                        &label,
                        &metadata,
                        target,
                        columns,
                        &f.partitions,
                    )?;
                    let mask =
                        ProjectionMask::roots(metadata.parquet_schema(), adapter.file_columns());
                    (mask, Some(Arc::new(adapter)))
                }
                None => (projection_of(&label, &metadata, columns)?, None),
            };
            for rg in 0..metadata.metadata().num_row_groups() {
                parts.push(Part {
                    file: i,
                    row_group: rg,
                    dictionary: false,
                });
            }
            opened.push(File {
                store: Arc::clone(&f.store),
                path: f.path.clone(),
                label,
                metadata,
                projection,
                adapt,
                dictionary: None,
            });
        }
        let ahead = std::sync::Mutex::new(ReadAhead {
            started: vec![false; parts.len()],
            pending: Default::default(),
        });
        Ok(ParquetSource {
            runtime: tokio::runtime::Handle::current(),
            files: opened,
            parts,
            progress: None,
            ahead,
        })
    }

    /// Reads the string columns named in `columns` as dictionary arrays
    /// (`Dictionary(Int32, Utf8)`) from every row group that stores all of
    /// them wholly dictionary-encoded, as the file says in its page
    /// encoding statistics: decoding is then one index per row, and a fold
    /// can keep state per dictionary entry (the reader gives a column
    /// chunk's batches one shared dictionary). Other row groups, files of
    /// other tools read as a stream's history, and columns that are not
    /// plain strings are read as before: a row group whose pages fell back
    /// from dictionary to plain would otherwise be re-encoded batch by
    /// batch.
    ///
    /// # Errors
    ///
    /// [`Error::Execution`] naming the file when its schema with
    /// dictionaries is refused by the reader.
    pub fn with_dictionaries(mut self, columns: &[String]) -> Result<Self> {
        use arrow::datatypes::{DataType, Field, Schema};
        if columns.is_empty() {
            return Ok(self);
        }
        for (i, file) in self.files.iter_mut().enumerate() {
            if file.adapt.is_some() {
                continue;
            }
            let schema = file.metadata.schema();
            let parquet = file.metadata.metadata();
            // (arrow field, parquet leaf) of each requested plain string column.
            let wanted: Vec<(usize, usize)> = columns
                .iter()
                .filter_map(|name| {
                    let field = schema.index_of(name).ok()?;
                    let leaf = parquet
                        .file_metadata()
                        .schema_descr()
                        .columns()
                        .iter()
                        .position(|c| c.path().parts() == [name.as_str()])?;
                    (schema.field(field).data_type() == &DataType::Utf8).then_some((field, leaf))
                })
                .collect();
            if wanted.is_empty() {
                continue;
            }
            let all_dictionary = |rg: usize| {
                wanted.iter().all(|&(_, leaf)| {
                    let chunk = parquet.row_group(rg).column(leaf);
                    chunk.dictionary_page_offset().is_some()
                        && chunk.page_encoding_stats_mask().is_some_and(|m| {
                            m.is_only(parquet::basic::Encoding::PLAIN_DICTIONARY)
                                || m.is_only(parquet::basic::Encoding::RLE_DICTIONARY)
                        })
                })
            };
            let mut any = false;
            for part in self.parts.iter_mut().filter(|p| p.file == i) {
                part.dictionary = all_dictionary(part.row_group);
                any |= part.dictionary;
            }
            if !any {
                continue;
            }
            let fields: Vec<Field> = schema
                .fields()
                .iter()
                .enumerate()
                .map(|(f, field)| {
                    if wanted.iter().any(|&(w, _)| w == f) {
                        Field::new(
                            field.name(),
                            DataType::Dictionary(
                                Box::new(DataType::Int32),
                                Box::new(DataType::Utf8),
                            ),
                            field.is_nullable(),
                        )
                    } else {
                        field.as_ref().clone()
                    }
                })
                .collect();
            let hinted = Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()));
            let options = ArrowReaderOptions::new().with_schema(hinted);
            file.dictionary = Some(
                ArrowReaderMetadata::try_new(Arc::clone(parquet), options).map_err(|e| {
                    Error::execution(format!("{}: reading as dictionaries: {e}", file.label))
                })?,
            );
        }
        Ok(self)
    }

    /// Counts what its tasks read into `progress` (rows as batches are
    /// taken, bytes as row groups finish).
    pub fn with_progress(mut self, progress: Arc<ScanProgress>) -> Self {
        self.progress = Some(progress);
        self
    }

    /// Bytes of all the files' row groups (compressed, all columns).
    pub fn bytes(&self) -> u64 {
        self.files
            .iter()
            .flat_map(|f| f.metadata.metadata().row_groups())
            .map(|rg| rg.compressed_size().max(0) as u64)
            .sum()
    }

    /// Rows in all the files, from their footers.
    pub fn rows(&self) -> u64 {
        self.files
            .iter()
            .map(|f| f.metadata.metadata().file_metadata().num_rows().max(0) as u64)
            .sum()
    }

    /// The byte ranges of a row group's projected column chunks: what
    /// the Parquet reader asks for when it opens the row group. A chunk
    /// whose offsets make no sense (negative, or over 4 GiB long) is left
    /// out: the reader asks for it itself and reports the file as corrupt.
    fn chunk_ranges(&self, part: &Part) -> Vec<std::ops::Range<u64>> {
        let file = &self.files[part.file];
        let rg = file.metadata.metadata().row_group(part.row_group);
        rg.columns()
            .iter()
            .enumerate()
            .filter(|(leaf, _)| file.projection.leaf_included(*leaf))
            .filter_map(|(_, chunk)| {
                let start = chunk
                    .dictionary_page_offset()
                    .unwrap_or(chunk.data_page_offset());
                let start = u64::try_from(start).ok()?;
                let len = u64::try_from(chunk.compressed_size())
                    .ok()
                    .filter(|&n| n <= 1 << 32)?;
                Some(start..start.checked_add(len)?)
            })
            .collect()
    }

    /// Starts fetching the column chunks of the partitions after
    /// `partition` that [`to_fetch_ahead`] picks.
    fn read_ahead(&self, partition: usize) {
        let mut ahead = self.ahead.lock().unwrap_or_else(|e| e.into_inner());
        let picked = to_fetch_ahead(
            partition,
            self.parts.len(),
            &ahead,
            |next| self.chunk_ranges(&self.parts[next]),
            2 * rayon::current_num_threads(),
            READ_AHEAD_BYTES,
        );
        for (next, ranges, size) in picked {
            let file = &self.files[self.parts[next].file];
            let store = Arc::clone(&file.store);
            let path = file.path.clone();
            let fetch = self
                .runtime
                .spawn(async move { Fetched::fetch(store.as_ref(), &path, ranges).await });
            ahead.pending.insert(next, (size, fetch));
        }
    }

    /// Partition `partition`'s column chunks: fetched ahead if they were
    /// (a failed read-ahead is retried here, so its error is this task's),
    /// else fetched now.
    fn take_chunks(&self, partition: usize) -> Result<Fetched> {
        let pending = {
            let mut ahead = self.ahead.lock().unwrap_or_else(|e| e.into_inner());
            ahead.started[partition] = true;
            ahead.pending.remove(&partition)
        };
        if let Some((_, fetch)) = pending
            && let Ok(Ok(fetched)) = self.runtime.block_on(fetch)
        {
            return Ok(fetched);
        }
        let part = &self.parts[partition];
        let file = &self.files[part.file];
        let ranges = self.chunk_ranges(part);
        self.runtime
            .block_on(Fetched::fetch(file.store.as_ref(), &file.path, ranges))
            .map_err(|e| {
                Error::execution(format!("{}: row group {}: {e}", file.label, part.row_group))
            })
    }

    /// The stream of one row group's batches (8192 rows each), reading
    /// the column chunks from `fetched` (the rest from the store).
    async fn open_row_group(
        &self,
        part: &Part,
        fetched: Arc<Fetched>,
    ) -> Result<parquet::arrow::async_reader::ParquetRecordBatchStream<ObjectReader>> {
        let file = &self.files[part.file];
        let reader = ObjectReader::with_metadata(
            Arc::clone(&file.store),
            file.path.clone(),
            Arc::clone(file.metadata.metadata()),
        )
        .with_fetched(fetched);
        let metadata = match (&file.dictionary, part.dictionary) {
            (Some(dictionary), true) => dictionary.clone(),
            _ => file.metadata.clone(),
        };
        ParquetRecordBatchStreamBuilder::new_with_metadata(reader, metadata)
            .with_row_groups(vec![part.row_group])
            .with_projection(file.projection.clone())
            .with_batch_size(8192)
            .build()
            .map_err(|e| {
                Error::execution(format!("{}: row group {}: {e}", file.label, part.row_group))
            })
    }
}

/// The partitions after `partition` to fetch ahead now, with their
/// chunks' ranges (`ranges_of`) and bytes: in order, skipping those whose tasks began
/// or that are being fetched, while fewer than `most` fetches are pending
/// and fewer than `budget` bytes (so one row group larger than the budget
/// is still fetched ahead when nothing else is). Workers take row groups in
/// order (each its own run of them), so the ones just after `partition`
/// are what it needs next; at most `2 * most` are looked at.
fn to_fetch_ahead(
    partition: usize,
    partitions: usize,
    ahead: &ReadAhead,
    ranges_of: impl Fn(usize) -> Vec<std::ops::Range<u64>>,
    most: usize,
    budget: u64,
) -> Vec<(usize, Vec<std::ops::Range<u64>>, u64)> {
    let mut pending = ahead.pending.len();
    let mut bytes = ahead.pending_bytes();
    let mut picked = Vec::new();
    for next in (partition + 1..partitions).take(2 * most) {
        if pending >= most || bytes >= budget {
            break;
        }
        if ahead.started.get(next).copied().unwrap_or(true) || ahead.pending.contains_key(&next) {
            continue;
        }
        let ranges = ranges_of(next);
        let size: u64 = ranges.iter().map(|r| r.end - r.start).sum();
        bytes += size;
        pending += 1;
        picked.push((next, ranges, size));
    }
    picked
}

fn projection_of(
    label: &str,
    metadata: &ArrowReaderMetadata,
    columns: Option<&[String]>,
) -> Result<ProjectionMask> {
    let Some(names) = columns else {
        return Ok(ProjectionMask::all());
    };
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
    Ok(ProjectionMask::roots(metadata.parquet_schema(), indices))
}

pub(super) fn field_names(schema: &arrow::datatypes::Schema) -> String {
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
        tc: &'a TaskContext,
    ) -> Result<BoxIter<'a, RecordBatch>> {
        // Worker threads are not tokio threads, so blocking on the runtime
        // here is allowed; the decoding inside the stream runs on this
        // worker, the I/O on the runtime's reactor. Batches are decoded as
        // the task takes them, so a task holds one batch, not its whole
        // row group.
        let part = &self.parts[partition];
        let file = &self.files[part.file];
        let fetched = Arc::new(self.take_chunks(partition)?);
        // This task's chunks are in: the next row groups' fetches overlap
        // this one's decoding.
        self.read_ahead(partition);
        let mut stream = self.runtime.block_on(self.open_row_group(part, fetched))?;
        let fail = move |e: String| {
            tc.fail(Error::execution(format!(
                "{}: row group {}: {e}",
                file.label, part.row_group
            )));
            None
        };
        let progress = self.progress.as_deref();
        let group_bytes = file
            .metadata
            .metadata()
            .row_group(part.row_group)
            .compressed_size()
            .max(0) as u64;
        Ok(Box::new(std::iter::from_fn(move || {
            let next = self.runtime.block_on(stream.next());
            if let Some(p) = progress {
                match &next {
                    Some(Ok(batch)) => {
                        p.rows.fetch_add(batch.num_rows() as u64, Ordering::Relaxed);
                    }
                    None => {
                        p.bytes.fetch_add(group_bytes, Ordering::Relaxed);
                    }
                    Some(Err(_)) => {}
                }
            }
            match next? {
                Ok(batch) => match &file.adapt {
                    None => Some(batch),
                    Some(adapt) => match adapt.apply(&batch) {
                        Ok(batch) => Some(batch),
                        Err(e) => {
                            tc.fail(e);
                            None
                        }
                    },
                },
                Err(e) => fail(e.to_string()),
            }
        })))
    }

    fn describe(&self) -> String {
        "parquet".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Row groups `0..n` of `sizes[i]` bytes each, one range per group.
    fn picks(
        partition: usize,
        ahead: &ReadAhead,
        sizes: &[u64],
        most: usize,
        budget: u64,
    ) -> Vec<usize> {
        to_fetch_ahead(
            partition,
            sizes.len(),
            ahead,
            // Two ranges per group: the sizes are summed.
            |i| vec![0..sizes[i] / 2, 0..sizes[i] - sizes[i] / 2],
            most,
            budget,
        )
        .into_iter()
        .map(|(i, ranges, size)| {
            assert_eq!(size, sizes[i], "{ranges:?}");
            i
        })
        .collect()
    }

    fn ahead(n: usize, started: &[usize], pending: &[(usize, u64)]) -> ReadAhead {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut a = ReadAhead {
            started: vec![false; n],
            pending: Default::default(),
        };
        for &s in started {
            a.started[s] = true;
        }
        for &(p, bytes) in pending {
            let handle = rt.spawn(async {
                Err(object_store::Error::Generic {
                    store: "test",
                    source: "never fetched".into(),
                })
            });
            a.pending.insert(p, (bytes, handle));
        }
        a
    }

    #[test]
    fn fetches_ahead_in_order_up_to_the_count_and_the_bytes() {
        let mb = 1 << 20;
        // Four at most, the next ones in order.
        let a = ahead(10, &[0], &[]);
        assert_eq!(picks(0, &a, &[mb; 10], 4, 96 * mb), [1, 2, 3, 4]);
        // Begun and pending partitions are skipped and count.
        let a = ahead(10, &[0, 1, 2], &[(3, mb)]);
        assert_eq!(picks(0, &a, &[mb; 10], 4, 96 * mb), [4, 5, 6]);
        // The bytes: 40 MiB groups stop at three (120 MiB, the last one
        // started under the budget); a group over the budget alone still
        // goes when nothing is pending, and nothing more after it.
        let a = ahead(10, &[0], &[]);
        assert_eq!(picks(0, &a, &[40 * mb; 10], 8, 96 * mb), [1, 2, 3]);
        assert_eq!(picks(0, &a, &[200 * mb; 10], 8, 96 * mb), [1]);
        let a = ahead(10, &[0], &[(1, 100 * mb)]);
        assert!(picks(0, &a, &[mb; 10], 8, 96 * mb).is_empty());
        // The last partitions: nothing past the end.
        let a = ahead(10, &[9], &[]);
        assert!(picks(9, &a, &[mb; 10], 4, 96 * mb).is_empty());
        assert_eq!(
            picks(7, &ahead(10, &[7], &[]), &[mb; 10], 4, 96 * mb),
            [8, 9]
        );
    }
}
