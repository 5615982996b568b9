//! A deadline on every call of an object store that has none of its own.
//!
//! The HDFS client waits for an unreachable NameNode for minutes (FACTS.md:
//! a `head` did not return within 170 s), and the batch and speed layers
//! must fail a run or a seal with an error instead of hanging. [`Bounded`]
//! wraps such a store: each call, each item of a listing or a read stream,
//! and each step of a multipart upload must finish within the deadline or
//! fails with [`object_store::Error::Generic`] saying what timed out.
//! S3 needs no wrapper: its HTTP client has request and connect timeouts.

use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, UploadPart,
};

type StoreResult<T> = object_store::Result<T>;

/// `inner` with a deadline on every call.
#[derive(Debug)]
pub struct Bounded {
    inner: Arc<dyn ObjectStore>,
    timeout: Duration,
}

impl Bounded {
    /// Wraps `inner`; every call gets `timeout`.
    pub fn new(inner: Arc<dyn ObjectStore>, timeout: Duration) -> Self {
        Bounded { inner, timeout }
    }
}

impl fmt::Display for Bounded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (each call within {:?})", self.inner, self.timeout)
    }
}

#[derive(Debug)]
struct TimedOut {
    what: String,
    after: Duration,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} timed out after {:?} (is the server reachable? see storage.request_timeout_ms)",
            self.what, self.after
        )
    }
}

impl std::error::Error for TimedOut {}

fn timed_out(what: String, after: Duration) -> object_store::Error {
    object_store::Error::Generic {
        store: "bounded",
        source: Box::new(TimedOut { what, after }),
    }
}

async fn within<T>(
    after: Duration,
    what: impl FnOnce() -> String,
    call: impl Future<Output = StoreResult<T>>,
) -> StoreResult<T> {
    match tokio::time::timeout(after, call).await {
        Ok(result) => result,
        Err(_) => Err(timed_out(what(), after)),
    }
}

/// `stream` with a deadline on each item.
fn each_within<T: Send + 'static>(
    after: Duration,
    what: String,
    stream: BoxStream<'static, StoreResult<T>>,
) -> BoxStream<'static, StoreResult<T>> {
    futures::stream::unfold(Some(stream), move |state| {
        let what = what.clone();
        async move {
            let mut stream = state?;
            match tokio::time::timeout(after, stream.next()).await {
                Ok(Some(item)) => Some((item, Some(stream))),
                Ok(None) => None,
                // One error, then the stream ends.
                Err(_) => Some((Err(timed_out(what, after)), None)),
            }
        }
    })
    .boxed()
}

#[async_trait]
impl ObjectStore for Bounded {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> StoreResult<PutResult> {
        within(
            self.timeout,
            || format!("put {location}"),
            self.inner.put_opts(location, payload, opts),
        )
        .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> StoreResult<Box<dyn MultipartUpload>> {
        let inner = within(
            self.timeout,
            || format!("start the upload of {location}"),
            self.inner.put_multipart_opts(location, opts),
        )
        .await?;
        Ok(Box::new(BoundedUpload {
            inner,
            timeout: self.timeout,
            location: location.to_string(),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> StoreResult<GetResult> {
        let mut result = within(
            self.timeout,
            || format!("get {location}"),
            self.inner.get_opts(location, options),
        )
        .await?;
        if let GetResultPayload::Stream(stream) = result.payload {
            result.payload = GetResultPayload::Stream(each_within(
                self.timeout,
                format!("read {location}"),
                stream,
            ));
        }
        Ok(result)
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> StoreResult<Vec<Bytes>> {
        within(
            self.timeout,
            || format!("read {} ranges of {location}", ranges.len()),
            self.inner.get_ranges(location, ranges),
        )
        .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, StoreResult<Path>>,
    ) -> BoxStream<'static, StoreResult<Path>> {
        each_within(
            self.timeout,
            "delete".to_owned(),
            self.inner.delete_stream(locations),
        )
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, StoreResult<ObjectMeta>> {
        let what = format!("list {}", prefix.map_or("/".to_owned(), Path::to_string));
        each_within(self.timeout, what, self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, StoreResult<ObjectMeta>> {
        let what = format!("list {}", prefix.map_or("/".to_owned(), Path::to_string));
        each_within(
            self.timeout,
            what,
            self.inner.list_with_offset(prefix, offset),
        )
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> StoreResult<ListResult> {
        within(
            self.timeout,
            || format!("list {}", prefix.map_or("/".to_owned(), Path::to_string)),
            self.inner.list_with_delimiter(prefix),
        )
        .await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> StoreResult<()> {
        within(
            self.timeout,
            || format!("copy {from} to {to}"),
            self.inner.copy_opts(from, to, options),
        )
        .await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> StoreResult<()> {
        within(
            self.timeout,
            || format!("rename {from} to {to}"),
            self.inner.rename_opts(from, to, options),
        )
        .await
    }
}

#[derive(Debug)]
struct BoundedUpload {
    inner: Box<dyn MultipartUpload>,
    timeout: Duration,
    location: String,
}

#[async_trait]
impl MultipartUpload for BoundedUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let part = self.inner.put_part(data);
        let (after, location) = (self.timeout, self.location.clone());
        Box::pin(within(
            after,
            move || format!("upload a part of {location}"),
            part,
        ))
    }

    async fn complete(&mut self) -> StoreResult<PutResult> {
        let (after, location) = (self.timeout, self.location.clone());
        within(
            after,
            move || format!("complete the upload of {location}"),
            self.inner.complete(),
        )
        .await
    }

    async fn abort(&mut self) -> StoreResult<()> {
        let (after, location) = (self.timeout, self.location.clone());
        within(
            after,
            move || format!("abort the upload of {location}"),
            self.inner.abort(),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    use super::*;

    /// A store whose every call waits forever (an unreachable server).
    #[derive(Debug)]
    struct Stalled;

    impl fmt::Display for Stalled {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("Stalled")
        }
    }

    #[async_trait]
    impl ObjectStore for Stalled {
        async fn put_opts(&self, _: &Path, _: PutPayload, _: PutOptions) -> StoreResult<PutResult> {
            futures::future::pending().await
        }
        async fn put_multipart_opts(
            &self,
            _: &Path,
            _: PutMultipartOptions,
        ) -> StoreResult<Box<dyn MultipartUpload>> {
            futures::future::pending().await
        }
        async fn get_opts(&self, _: &Path, _: GetOptions) -> StoreResult<GetResult> {
            futures::future::pending().await
        }
        fn delete_stream(
            &self,
            _: BoxStream<'static, StoreResult<Path>>,
        ) -> BoxStream<'static, StoreResult<Path>> {
            futures::stream::pending().boxed()
        }
        fn list(&self, _: Option<&Path>) -> BoxStream<'static, StoreResult<ObjectMeta>> {
            futures::stream::pending().boxed()
        }
        async fn list_with_delimiter(&self, _: Option<&Path>) -> StoreResult<ListResult> {
            futures::future::pending().await
        }
        async fn copy_opts(&self, _: &Path, _: &Path, _: CopyOptions) -> StoreResult<()> {
            futures::future::pending().await
        }
    }

    #[tokio::test]
    async fn every_call_of_a_stalled_store_fails_in_time() {
        let store = Bounded::new(Arc::new(Stalled), Duration::from_millis(50));
        let path = Path::from("a/b");
        let started = std::time::Instant::now();
        let errors = [
            store.get(&path).await.err(),
            store.head(&path).await.err(),
            store.put(&path, PutPayload::from_static(b"x")).await.err(),
            store.delete(&path).await.err(),
            store.list(None).next().await.and_then(Result::err),
            store.list_with_delimiter(None).await.err(),
            store.copy(&path, &path).await.err(),
            store.put_multipart(&path).await.err(),
        ];
        for error in errors {
            let error = error.expect("a stalled call must fail").to_string();
            assert!(error.contains("timed out after 50ms"), "{error}");
        }
        assert!(started.elapsed() < Duration::from_secs(5));
        // A listing that timed out ends after its error.
        let mut listing = store.list(None);
        assert!(listing.next().await.unwrap().is_err());
        assert!(listing.next().await.is_none());
    }

    #[tokio::test]
    async fn a_working_store_is_unchanged() {
        let store = Bounded::new(Arc::new(InMemory::new()), Duration::from_secs(5));
        let path = Path::from("x/y.parquet");
        store
            .put(&path, PutPayload::from_static(b"hello"))
            .await
            .unwrap();
        let got = store.get(&path).await.unwrap().bytes().await.unwrap();
        assert_eq!(&got[..], b"hello");
        let listed: Vec<_> = store.list(None).collect().await;
        assert_eq!(listed.len(), 1);
        let mut upload = store.put_multipart(&Path::from("z")).await.unwrap();
        upload
            .put_part(PutPayload::from_static(b"ab"))
            .await
            .unwrap();
        upload.complete().await.unwrap();
        assert_eq!(store.head(&Path::from("z")).await.unwrap().size, 2);
    }
}
