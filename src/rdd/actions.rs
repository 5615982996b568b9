//! Actions: the methods that run a job and bring results back to the caller.

use crate::context::TaskContext;
use crate::error::Result;
use crate::rdd::{BoxIter, Data, Rdd};
use crate::scheduler::{CancelToken, JobFuture, run_job, run_job_each};

impl<T: Data> Rdd<T> {
    /// Runs `f` over every partition on the CPU pool and returns its results
    /// in partition order. The building block of the other actions.
    ///
    /// # Errors
    ///
    /// The job's error when a task keeps failing (see
    /// [`Error::TaskFailed`](crate::Error::TaskFailed)).
    pub fn run<R: Send>(
        &self,
        f: impl Fn(&TaskContext, BoxIter<'_, T>) -> Result<R> + Sync,
    ) -> Result<Vec<R>> {
        let all: Vec<usize> = (0..self.num_partitions()).collect();
        run_job(&self.ctx, &self.node, &all, &CancelToken::default(), f)
    }

    /// Like [`run`](Self::run), as a future that never blocks the async
    /// runtime: the job runs on the CPU pool. Dropping the future cancels the
    /// job.
    pub fn run_async<R: Send + 'static>(
        &self,
        f: impl Fn(&TaskContext, BoxIter<'_, T>) -> Result<R> + Send + Sync + 'static,
    ) -> JobFuture<Vec<R>> {
        let rdd = self.clone();
        JobFuture::spawn(&self.ctx, move |cancel| {
            let all: Vec<usize> = (0..rdd.num_partitions()).collect();
            run_job(&rdd.ctx, &rdd.node, &all, cancel, f)
        })
    }

    /// Like [`run_async`](Self::run_async), but hands each partition's
    /// result to `emit(partition, result)` as soon as its task has
    /// succeeded, instead of holding every result until the job ends: a
    /// consumer can take (and free) partitions while others still run.
    ///
    /// `emit` runs on the CPU pool's worker that ran the task, once per
    /// partition: a retried task emits only from the attempt that
    /// succeeded. Partitions arrive in completion order, not partition
    /// order.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run). Results emitted before the job failed (or was
    /// cancelled) stay emitted: the consumer must be able to discard them.
    pub fn run_each_async<R: Send + 'static>(
        &self,
        f: impl Fn(&TaskContext, BoxIter<'_, T>) -> Result<R> + Send + Sync + 'static,
        emit: impl Fn(usize, R) + Send + Sync + 'static,
    ) -> JobFuture<()> {
        let rdd = self.clone();
        JobFuture::spawn(&self.ctx, move |cancel| {
            let all: Vec<usize> = (0..rdd.num_partitions()).collect();
            run_job_each(&rdd.ctx, &rdd.node, &all, cancel, f, &emit)
        })
    }

    /// All elements, in partition order.
    pub fn collect(&self) -> Result<Vec<T>> {
        Ok(self.run(|_, it| Ok(it.collect::<Vec<T>>()))?.concat())
    }

    /// [`collect`](Self::collect) as a future.
    pub async fn collect_async(&self) -> Result<Vec<T>> {
        Ok(self
            .run_async(|_, it| Ok(it.collect::<Vec<T>>()))
            .await?
            .concat())
    }

    /// Number of elements.
    pub fn count(&self) -> Result<u64> {
        Ok(self.run(|_, it| Ok(it.count() as u64))?.into_iter().sum())
    }

    /// [`count`](Self::count) as a future.
    pub async fn count_async(&self) -> Result<u64> {
        Ok(self
            .run_async(|_, it| Ok(it.count() as u64))
            .await?
            .into_iter()
            .sum())
    }

    /// Merges all elements with an associative, commutative `f`; `None` for
    /// an empty dataset.
    pub fn reduce(&self, f: impl Fn(T, T) -> T + Sync) -> Result<Option<T>> {
        let partials = self.run(|_, it| Ok(it.reduce(&f)))?;
        Ok(partials.into_iter().flatten().reduce(&f))
    }

    /// Folds every partition starting from `zero`, then folds the partial
    /// results starting from `zero` again (Spark's semantics: `zero` must be
    /// the identity of `f`).
    pub fn fold(&self, zero: T, f: impl Fn(T, T) -> T + Sync) -> Result<T> {
        let partials = self.run(|_, it| Ok(it.fold(zero.clone(), &f)))?;
        Ok(partials.into_iter().fold(zero, &f))
    }

    /// The first `n` elements in partition order. Scans one partition first
    /// and then more at a time (four times as many each round), so a small
    /// `take` on a big dataset computes few partitions.
    pub fn take(&self, n: usize) -> Result<Vec<T>> {
        let mut out = Vec::with_capacity(n.min(1 << 16));
        let total = self.num_partitions();
        let mut next = 0;
        let mut batch = 1;
        while out.len() < n && next < total {
            let end = (next + batch).min(total);
            let partitions: Vec<usize> = (next..end).collect();
            let want = n - out.len();
            let parts = run_job(
                &self.ctx,
                &self.node,
                &partitions,
                &CancelToken::default(),
                |_, it| Ok(it.take(want).collect::<Vec<T>>()),
            )?;
            for part in parts {
                let room = n - out.len();
                out.extend(part.into_iter().take(room));
            }
            next = end;
            batch *= 4;
        }
        Ok(out)
    }

    /// Runs `f` on every partition for its side effects.
    pub fn foreach_partition(&self, f: impl Fn(BoxIter<'_, T>) + Sync) -> Result<()> {
        self.run(|_, it| {
            f(it);
            Ok(())
        })?;
        Ok(())
    }
}
