//! The [`Context`]: a CPU pool, the shuffle store and the partition cache that
//! every dataset of one program shares; and the per-task [`TaskContext`].

use std::cell::RefCell;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::cache::PartitionCache;
use crate::error::{Error, Result};
use crate::rdd::{BoxIter, Data, ParallelCollection, PartitionSource, Rdd, RddId, SourceRdd};
use crate::shuffle::{InMemoryShuffleStore, ShuffleId, ShuffleStore};

/// Settings of a [`Context`]. Build one with [`Context::builder`].
#[derive(Debug, Clone)]
pub struct ContextConfig {
    /// Worker threads of the CPU pool. Default: the number of cores.
    pub threads: usize,
    /// Attempts per task before the job fails (Spark's
    /// `spark.task.maxFailures`). Default: 4.
    pub max_task_attempts: usize,
    /// Times a stage may be resubmitted because shuffle output it needed was
    /// lost. Default: 4.
    pub max_stage_attempts: usize,
    /// Budget of the partition cache used by [`Rdd::cache`], in estimated
    /// bytes (element count times the element's in-memory size; heap data
    /// behind pointers is not counted). Least recently used partitions are
    /// evicted beyond it and recomputed from lineage when needed again.
    /// Default: 1 GiB.
    pub cache_capacity_bytes: usize,
}

impl Default for ContextConfig {
    fn default() -> Self {
        ContextConfig {
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
            max_task_attempts: 4,
            max_stage_attempts: 4,
            cache_capacity_bytes: 1 << 30,
        }
    }
}

/// Builds a [`Context`].
#[derive(Debug, Default)]
pub struct ContextBuilder {
    config: ContextConfig,
    name: Option<String>,
}

impl ContextBuilder {
    /// Number of worker threads of the CPU pool (at least 1).
    pub fn threads(mut self, threads: usize) -> Self {
        self.config.threads = threads;
        self
    }

    /// Attempts per task before the job fails (at least 1).
    pub fn max_task_attempts(mut self, attempts: usize) -> Self {
        self.config.max_task_attempts = attempts;
        self
    }

    /// Budget of the partition cache in estimated bytes.
    pub fn cache_capacity_bytes(mut self, bytes: usize) -> Self {
        self.config.cache_capacity_bytes = bytes;
        self
    }

    /// Prefix of the worker threads' names (default `lamina-cpu`).
    pub fn thread_name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Starts the CPU pool.
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] for zero threads or zero attempts; [`Error::Internal`]
    /// if the operating system refuses to start the threads.
    pub fn build(self) -> Result<Context> {
        let config = self.config;
        if config.threads == 0 {
            return Err(Error::plan("context: threads must be at least 1"));
        }
        if config.max_task_attempts == 0 || config.max_stage_attempts == 0 {
            return Err(Error::plan(
                "context: max_task_attempts and max_stage_attempts must be at least 1",
            ));
        }
        let name = self.name.unwrap_or_else(|| "lamina-cpu".to_owned());
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(config.threads)
            .thread_name(move |i| format!("{name}-{i}"))
            .build()
            .map_err(|e| Error::Internal(format!("cannot start the CPU pool: {e}")))?;
        Ok(Context {
            inner: Arc::new(Inner {
                cache: PartitionCache::new(config.cache_capacity_bytes),
                config,
                pool,
                next_rdd: AtomicUsize::new(0),
                next_shuffle: AtomicUsize::new(0),
                shuffle: Arc::new(InMemoryShuffleStore::default()),
            }),
        })
    }
}

/// Shared state of all datasets of one program: the CPU pool that runs
/// tasks, the shuffle store and the partition cache.
///
/// Cheap to clone. CPU work of jobs runs on the pool's own threads, never on
/// the caller's async runtime.
#[derive(Clone)]
pub struct Context {
    inner: Arc<Inner>,
}

struct Inner {
    config: ContextConfig,
    pool: rayon::ThreadPool,
    next_rdd: AtomicUsize,
    next_shuffle: AtomicUsize,
    shuffle: Arc<dyn ShuffleStore>,
    cache: PartitionCache,
}

impl fmt::Debug for Context {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Context {
    /// A context with default settings: one worker thread per core.
    ///
    /// # Panics
    ///
    /// If the operating system cannot start the worker threads.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Self {
        Context::builder()
            .build()
            .expect("the default context configuration is valid")
    }

    /// A builder for a context with custom settings.
    pub fn builder() -> ContextBuilder {
        ContextBuilder::default()
    }

    /// The settings this context runs with.
    pub fn config(&self) -> &ContextConfig {
        &self.inner.config
    }

    /// Default partition count for new datasets: the number of worker threads.
    pub fn default_parallelism(&self) -> usize {
        self.inner.config.threads
    }

    /// A dataset of the given elements split into `partitions` contiguous
    /// slices (at least one).
    pub fn parallelize<T: Data>(&self, data: Vec<T>, partitions: usize) -> Rdd<T> {
        let id = self.new_rdd_id();
        Rdd::from_dataset(self, ParallelCollection::new(id, data, partitions.max(1)))
    }

    /// A dataset whose partitions are read from `source` (Parquet row groups,
    /// a micro-batch's record batches, ...).
    pub fn from_source<S: PartitionSource>(&self, source: S) -> Rdd<S::Item> {
        let id = self.new_rdd_id();
        Rdd::from_dataset(self, SourceRdd::new(id, source))
    }

    /// The store that holds shuffle map outputs. Exposed so that tests and
    /// operators can simulate lost shuffle data.
    pub fn shuffle_store(&self) -> &Arc<dyn ShuffleStore> {
        &self.inner.shuffle
    }

    /// The cache behind [`Rdd::cache`].
    pub fn partition_cache(&self) -> &PartitionCache {
        &self.inner.cache
    }

    pub(crate) fn pool(&self) -> &rayon::ThreadPool {
        &self.inner.pool
    }

    pub(crate) fn new_rdd_id(&self) -> RddId {
        self.inner.next_rdd.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn new_shuffle_id(&self) -> ShuffleId {
        self.inner.next_shuffle.fetch_add(1, Ordering::Relaxed)
    }
}

/// What a running task knows about itself, handed to `compute`.
///
/// A task runs on one worker thread, so the context is not shared between
/// threads.
pub struct TaskContext {
    ctx: Context,
    stage: usize,
    partition: usize,
    attempt: usize,
    failure: RefCell<Option<Error>>,
}

impl fmt::Debug for TaskContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskContext")
            .field("stage", &self.stage)
            .field("partition", &self.partition)
            .field("attempt", &self.attempt)
            .finish_non_exhaustive()
    }
}

impl TaskContext {
    pub(crate) fn new(ctx: &Context, stage: usize, partition: usize, attempt: usize) -> Self {
        TaskContext {
            ctx: ctx.clone(),
            stage,
            partition,
            attempt,
            failure: RefCell::new(None),
        }
    }

    /// The context the task belongs to.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The stage the task belongs to (numbered within its job).
    pub fn stage(&self) -> usize {
        self.stage
    }

    /// The partition the task computes.
    pub fn partition(&self) -> usize {
        self.partition
    }

    /// 0 for the first attempt, 1 for the first retry, ...
    pub fn attempt(&self) -> usize {
        self.attempt
    }

    /// Fails the task from inside an iterator that cannot return an error:
    /// the iterator should end after calling this. The first failure wins;
    /// the task's result is discarded and the error reported (and retried if
    /// retryable).
    pub fn fail(&self, error: Error) {
        let mut slot = self.failure.borrow_mut();
        if slot.is_none() {
            *slot = Some(error);
        }
    }

    /// Whether [`fail`](Self::fail) was called: long iterators may stop early.
    pub fn has_failed(&self) -> bool {
        self.failure.borrow().is_some()
    }

    /// Adapts a fallible iterator (a decoder, a reader) to a plain one: it
    /// ends at the first `Err`, which fails the task with that error.
    pub fn stop_on_error<'a, T: 'a>(
        &'a self,
        iter: impl Iterator<Item = Result<T>> + 'a,
    ) -> BoxIter<'a, T> {
        Box::new(iter.map_while(move |item| match item {
            Ok(v) => Some(v),
            Err(e) => {
                self.fail(e);
                None
            }
        }))
    }

    pub(crate) fn take_failure(&self) -> Option<Error> {
        self.failure.borrow_mut().take()
    }
}
