//! Parquet's async reader over `object_store`: fetches the footer and only
//! the byte ranges of the row groups and columns a task reads.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, TryFutureExt};
use object_store::path::Path;
use object_store::{GetOptions, GetRange, ObjectStore, ObjectStoreExt};
use parquet::arrow::arrow_reader::ArrowReaderOptions;
use parquet::arrow::async_reader::{AsyncFileReader, MetadataSuffixFetch};
use parquet::errors::{ParquetError, Result};
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};

/// Byte ranges of one object fetched before its reader asked for them
/// (see [`ParquetSource`](super::scan::ParquetSource)'s read-ahead).
#[derive(Debug, Default)]
pub struct Fetched {
    ranges: Vec<(Range<u64>, Bytes)>,
}

/// Ranges closer than this are fetched as one span.
const MERGE_GAP: u64 = 1 << 20;

impl Fetched {
    /// Fetches `ranges` of `path`, ranges less than a MiB apart as one
    /// request, the requests at once. (Splitting a long span into several
    /// requests at once was tried: no faster from s3s-fs, and slower from
    /// local files, whose pieces then had to be copied together.)
    pub async fn fetch(
        store: &dyn ObjectStore,
        path: &Path,
        mut ranges: Vec<Range<u64>>,
    ) -> object_store::Result<Self> {
        ranges.sort_by_key(|r| r.start);
        let mut spans: Vec<Range<u64>> = Vec::new();
        for r in ranges.into_iter().filter(|r| r.end > r.start) {
            match spans.last_mut() {
                Some(last) if r.start <= last.end.saturating_add(MERGE_GAP) => {
                    last.end = last.end.max(r.end);
                }
                _ => spans.push(r),
            }
        }
        let bytes = store.get_ranges(path, &spans).await?;
        Ok(Fetched {
            ranges: spans.into_iter().zip(bytes).collect(),
        })
    }

    /// `range`, when one fetched range holds all of it (no copy).
    fn slice(&self, range: &Range<u64>) -> Option<Bytes> {
        self.ranges.iter().find_map(|(r, bytes)| {
            let from = usize::try_from(range.start.checked_sub(r.start)?).ok()?;
            let to = usize::try_from(range.end.checked_sub(r.start)?).ok()?;
            // A short answer from the store is left to the store to report.
            (range.end <= r.end && from <= to && to <= bytes.len()).then(|| bytes.slice(from..to))
        })
    }
}

/// One object read through its store; the footer is fetched once and reused.
#[derive(Clone)]
pub struct ObjectReader {
    store: Arc<dyn ObjectStore>,
    path: Path,
    metadata: Option<Arc<ParquetMetaData>>,
    /// Ranges fetched ahead: served from here, the rest from the store.
    fetched: Option<Arc<Fetched>>,
}

impl std::fmt::Debug for ObjectReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ObjectReader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ObjectReader {
    /// A reader of `path`; the footer is read on first use.
    pub fn new(store: Arc<dyn ObjectStore>, path: Path) -> Self {
        ObjectReader {
            store,
            path,
            metadata: None,
            fetched: None,
        }
    }

    /// A reader of `path` whose footer is already known.
    pub fn with_metadata(
        store: Arc<dyn ObjectStore>,
        path: Path,
        metadata: Arc<ParquetMetaData>,
    ) -> Self {
        ObjectReader {
            store,
            path,
            metadata: Some(metadata),
            fetched: None,
        }
    }

    /// Serves the ranges `fetched` holds from it, without a request.
    pub fn with_fetched(mut self, fetched: Arc<Fetched>) -> Self {
        self.fetched = Some(fetched);
        self
    }
}

fn external(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for ObjectReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, Result<Bytes>> {
        if let Some(bytes) = self.fetched.as_ref().and_then(|f| f.slice(&range)) {
            return futures::future::ready(Ok(bytes)).boxed();
        }
        self.store
            .get_range(&self.path, range)
            .map_err(external)
            .boxed()
    }

    fn get_byte_ranges(&mut self, ranges: Vec<Range<u64>>) -> BoxFuture<'_, Result<Vec<Bytes>>> {
        async move {
            let mut out: Vec<Option<Bytes>> = match &self.fetched {
                Some(f) => ranges.iter().map(|r| f.slice(r)).collect(),
                None => vec![None; ranges.len()],
            };
            let missing: Vec<Range<u64>> = ranges
                .iter()
                .zip(&out)
                .filter(|(_, b)| b.is_none())
                .map(|(r, _)| r.clone())
                .collect();
            if !missing.is_empty() {
                let mut got = self
                    .store
                    .get_ranges(&self.path, &missing)
                    .await
                    .map_err(external)?
                    .into_iter();
                for slot in out.iter_mut().filter(|b| b.is_none()) {
                    *slot = got.next();
                }
            }
            out.into_iter()
                .map(|b| b.ok_or_else(|| ParquetError::General("a range came back short".into())))
                .collect()
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, Result<Arc<ParquetMetaData>>> {
        async move {
            if let Some(m) = &self.metadata {
                return Ok(Arc::clone(m));
            }
            let metadata = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .load_via_suffix_and_finish(&mut *self)
                .await?;
            let metadata = Arc::new(metadata);
            self.metadata = Some(Arc::clone(&metadata));
            Ok(metadata)
        }
        .boxed()
    }
}

impl MetadataSuffixFetch for &mut ObjectReader {
    fn fetch_suffix(&mut self, suffix: usize) -> BoxFuture<'_, Result<Bytes>> {
        let options = GetOptions {
            range: Some(GetRange::Suffix(suffix as u64)),
            ..Default::default()
        };
        async move {
            let found = self
                .store
                .get_opts(&self.path, options)
                .await
                .map_err(external)?;
            found.bytes().await.map_err(external)
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;

    /// Close ranges become one span, and a reader serves what was fetched
    /// and asks the store for the rest, in the order asked.
    #[tokio::test]
    async fn fetched_ranges_serve_reads_and_the_store_the_rest() {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = Path::from("a/file.parquet");
        let data: Vec<u8> = (0..30_000_000u32).map(|i| (i % 251) as u8).collect();
        store
            .put(&path, Bytes::from(data.clone()).into())
            .await
            .unwrap();
        let want = |r: Range<u64>| Bytes::copy_from_slice(&data[r.start as usize..r.end as usize]);
        let ranges = vec![
            100..1_000,
            1_200_000..1_200_100,
            200_000..300_000,
            5_000_000..25_000_123,
        ];
        let fetched = Fetched::fetch(store.as_ref(), &path, ranges.clone())
            .await
            .unwrap();
        // 100..300_000 and 1_200_000.. are within a MiB: one span.
        let spans: Vec<&Range<u64>> = fetched.ranges.iter().map(|(r, _)| r).collect();
        assert_eq!(spans, [&(100..1_200_100), &(5_000_000..25_000_123)]);
        for r in &ranges {
            assert!(fetched.slice(r) == Some(want(r.clone())), "{r:?}");
        }
        assert_eq!(fetched.slice(&(900..2_000_000)), None, "spans two");
        assert_eq!(fetched.slice(&(29_000_000..29_000_010)), None);

        let mut reader =
            ObjectReader::new(Arc::clone(&store), path.clone()).with_fetched(Arc::new(fetched));
        let asked = vec![
            29_000_000..29_000_010,
            5_000_000..6_000_000,
            0..50,
            200_000..200_001,
        ];
        let got = reader.get_byte_ranges(asked.clone()).await.unwrap();
        let expected: Vec<Bytes> = asked.iter().cloned().map(want).collect();
        assert!(got == expected, "the ranges asked come back in order");
        assert_eq!(
            reader.get_bytes(20_000_000..20_000_005).await.unwrap(),
            want(20_000_000..20_000_005)
        );
    }
}
