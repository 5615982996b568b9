//! The DAG scheduler: cuts a job's lineage into stages at shuffles and runs
//! each stage's tasks, one per partition, on the context's CPU pool.
//!
//! A job runs in rounds. Each round finds the shuffles whose map output is
//! incomplete (a shuffle whose output is complete, for example from an
//! earlier job, is reused and its parents are not visited), runs the missing
//! map tasks of every such shuffle whose own parents are complete — stages
//! that do not depend on each other run side by side — and finally the
//! result tasks. A task that fails is retried in place by computing its
//! partition again from lineage, up to `max_task_attempts`. A task that finds
//! a shuffle block missing cannot be fixed by a plain retry: the round ends,
//! the next one recomputes the lost map outputs, and the task is tried again
//! (at most `max_stage_attempts` times).

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context as PollContext, Poll};

use rayon::prelude::*;

use crate::context::{Context, TaskContext};
use crate::error::{Error, Result};
use crate::rdd::{BoxIter, Data, Dataset, Dependency, Node};
use crate::shuffle::{ShuffleDep, ShuffleId};

/// A flag a caller sets to stop a job: tasks not yet started are skipped and
/// the job ends with an error.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    /// Asks the job to stop.
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    /// Whether [`cancel`](Self::cancel) was called.
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Per-job bookkeeping: stage numbers for error messages and cancellation.
struct Job<'c> {
    ctx: &'c Context,
    cancel: &'c CancelToken,
    stage_numbers: HashMap<ShuffleId, usize>,
    next_stage: AtomicUsize,
}

impl<'c> Job<'c> {
    fn stage_number(&mut self, shuffle: ShuffleId) -> usize {
        let next = &self.next_stage;
        *self
            .stage_numbers
            .entry(shuffle)
            .or_insert_with(|| next.fetch_add(1, Ordering::Relaxed))
    }
}

/// Runs `func` over the listed partitions of `rdd` and returns one result per
/// partition, in the order given.
///
/// # Errors
///
/// [`Error::TaskFailed`] naming the stage and partition when a task fails
/// `max_task_attempts` times (or once, for a non-retryable error), or when
/// lost shuffle output could not be recomputed within `max_stage_attempts`
/// rounds; [`Error::Execution`] when the job was cancelled.
pub(crate) fn run_job<T, R, F>(
    ctx: &Context,
    rdd: &Arc<dyn Dataset<Item = T>>,
    partitions: &[usize],
    cancel: &CancelToken,
    func: F,
) -> Result<Vec<R>>
where
    T: Data,
    R: Send,
    F: Fn(&TaskContext, BoxIter<'_, T>) -> Result<R> + Sync,
{
    let results: std::sync::Mutex<Vec<Option<R>>> =
        std::sync::Mutex::new(partitions.iter().map(|_| None).collect());
    run_job_each(ctx, rdd, partitions, cancel, func, &|i, r| {
        results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
    })?;
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|r| r.ok_or_else(|| Error::Internal("a result task produced nothing".into())))
        .collect()
}

/// Like [`run_job`], handing each partition's result to `emit(index, result)`
/// (index into `partitions`) as soon as its task has succeeded, on the
/// worker that ran it, instead of collecting them. A result is emitted once:
/// only the attempt that succeeded emits, so a retried task never emits
/// twice. When the job fails, the results emitted before stay emitted.
pub(crate) fn run_job_each<T, R, F>(
    ctx: &Context,
    rdd: &Arc<dyn Dataset<Item = T>>,
    partitions: &[usize],
    cancel: &CancelToken,
    func: F,
    emit: &(dyn Fn(usize, R) + Sync),
) -> Result<()>
where
    T: Data,
    R: Send,
    F: Fn(&TaskContext, BoxIter<'_, T>) -> Result<R> + Sync,
{
    if let Some(&p) = partitions.iter().find(|&&p| p >= rdd.num_partitions()) {
        return Err(Error::plan(format!(
            "{} has {} partitions; partition {p} does not exist",
            rdd.name(),
            rdd.num_partitions()
        )));
    }
    let node: Arc<dyn Node> = Arc::clone(rdd) as Arc<dyn Node>;
    let mut job = Job {
        ctx,
        cancel,
        stage_numbers: HashMap::new(),
        next_stage: AtomicUsize::new(0),
    };
    let mut done: Vec<bool> = vec![false; partitions.len()];
    let max_rounds = ctx.config().max_stage_attempts;
    for round in 0.. {
        job.compute_missing_shuffles(&node)?;
        let result_stage = job.next_stage.fetch_add(1, Ordering::Relaxed);
        let pending: Vec<usize> = (0..partitions.len()).filter(|&i| !done[i]).collect();
        let name = rdd.name();
        let run_one = |&i: &usize| {
            let partition = partitions[i];
            let outcome = run_task(&job, result_stage, partition, &name, |tc| {
                let iter = rdd.compute(partition, tc)?;
                func(tc, iter)
            });
            (i, outcome.map(|r| emit(i, r)))
        };
        let outcomes: Vec<(usize, Result<()>)> = if pending.len() == 1 {
            // One task: run it here. Handing it to a worker buys no
            // parallelism and moves its output to another core's cache
            // (a micro-batch's single partition is then committed by the
            // calling thread).
            pending.iter().map(run_one).collect()
        } else {
            ctx.pool()
                .install(|| pending.par_iter().with_max_len(1).map(run_one).collect())
        };
        let mut lost_shuffle_output = None;
        for (i, outcome) in outcomes {
            match outcome {
                Ok(()) => done[i] = true,
                Err(e @ Error::ShuffleFetch { .. }) => lost_shuffle_output = Some(e),
                Err(e) => return Err(e),
            }
        }
        match lost_shuffle_output {
            None => break,
            Some(e) if round + 1 >= max_rounds => {
                return Err(Error::TaskFailed {
                    stage: result_stage,
                    rdd: name,
                    partition: 0,
                    attempts: round + 1,
                    source: Box::new(e),
                });
            }
            Some(_) => continue,
        }
    }
    Ok(())
}

impl Job<'_> {
    /// Runs map tasks until every shuffle the result stage reads from has
    /// complete output.
    fn compute_missing_shuffles(&mut self, root: &Arc<dyn Node>) -> Result<()> {
        let max_resubmits = self.ctx.config().max_stage_attempts;
        // Without lost output every round completes the ready stages, so the
        // loop ends after at most (depth of the DAG) rounds; rounds caused by
        // lost output are bounded separately.
        let mut resubmits = 0;
        loop {
            let needed = self.incomplete_shuffles(root);
            if needed.is_empty() {
                return Ok(());
            }
            // Ready: incomplete shuffles none of whose parent shuffles are
            // incomplete.
            let incomplete: HashSet<ShuffleId> =
                needed.iter().map(|(d, _)| d.shuffle_id()).collect();
            let ready: Vec<Arc<dyn ShuffleDep>> = needed
                .into_iter()
                .filter(|(_, parents)| !parents.iter().any(|p| incomplete.contains(p)))
                .map(|(d, _)| d)
                .collect();
            let mut tasks = Vec::new();
            for dep in &ready {
                if self.cancel.is_cancelled() {
                    return Err(Error::Execution("job cancelled".into()));
                }
                dep.prepare(self.ctx)?;
                let stage = self.stage_number(dep.shuffle_id());
                let store = self.ctx.shuffle_store();
                let maps = dep.parent().num_partitions();
                for m in 0..maps {
                    if !store.has_map_output(dep.shuffle_id(), m) {
                        tasks.push((Arc::clone(dep), stage, m));
                    }
                }
            }
            let job = &*self;
            let outcomes: Vec<Result<()>> = self.ctx.pool().install(|| {
                tasks
                    .par_iter()
                    .with_max_len(1)
                    .map(|(dep, stage, m)| {
                        let name = dep.parent().name();
                        run_task(job, *stage, *m, &name, |tc| dep.run_map_task(*m, tc))
                    })
                    .collect()
            });
            let mut lost = None;
            for outcome in outcomes {
                match outcome {
                    Ok(()) => {}
                    // Lost output of a grandparent: the next round recomputes it.
                    Err(e @ Error::ShuffleFetch { .. }) => lost = Some(e),
                    Err(e) => return Err(e),
                }
            }
            if let Some(e) = lost {
                resubmits += 1;
                if resubmits >= max_resubmits {
                    return Err(Error::Execution(format!(
                        "gave up recomputing lost shuffle output after {resubmits} resubmissions: {e}"
                    )));
                }
            }
        }
    }

    /// The shuffles reachable from `root` without crossing a complete shuffle
    /// whose output is incomplete, each with the ids of its own parent
    /// shuffles.
    fn incomplete_shuffles(
        &self,
        root: &Arc<dyn Node>,
    ) -> Vec<(Arc<dyn ShuffleDep>, Vec<ShuffleId>)> {
        let store = self.ctx.shuffle_store();
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut stack = stage_parents(root);
        while let Some(dep) = stack.pop() {
            if !seen.insert(dep.shuffle_id()) {
                continue;
            }
            let maps = dep.parent().num_partitions();
            let complete = (0..maps).all(|m| store.has_map_output(dep.shuffle_id(), m));
            if complete {
                continue;
            }
            let parents = stage_parents(&dep.parent());
            let parent_ids = parents.iter().map(|p| p.shuffle_id()).collect();
            stack.extend(parents);
            out.push((dep, parent_ids));
        }
        out
    }
}

/// The shuffle dependencies at the boundary of the stage that computes
/// `node`: found by following narrow dependencies.
fn stage_parents(node: &Arc<dyn Node>) -> Vec<Arc<dyn ShuffleDep>> {
    let mut out = Vec::new();
    let mut stack = vec![Arc::clone(node)];
    let mut seen = HashSet::new();
    while let Some(n) = stack.pop() {
        if !seen.insert(n.id()) {
            continue;
        }
        for dep in n.dependencies() {
            match dep {
                Dependency::Narrow(parent) => stack.push(parent),
                Dependency::Shuffle(s) => out.push(s),
            }
        }
    }
    out
}

/// Runs one task with retries. Errors and panics of an attempt are caught;
/// a retryable failure recomputes the partition from lineage in a fresh
/// attempt.
fn run_task<R>(
    job: &Job<'_>,
    stage: usize,
    partition: usize,
    rdd: &str,
    body: impl Fn(&TaskContext) -> Result<R>,
) -> Result<R> {
    let max_attempts = job.ctx.config().max_task_attempts;
    let mut attempts = 0;
    let last_error = loop {
        if job.cancel.is_cancelled() {
            return Err(Error::Execution("job cancelled".into()));
        }
        let tc = TaskContext::new(job.ctx, stage, partition, attempts);
        attempts += 1;
        let outcome = match catch_unwind(AssertUnwindSafe(|| body(&tc))) {
            // An error recorded by an iterator is the root cause: it made the
            // iteration stop early, so the result (or a later error) is void.
            Ok(result) => match (tc.take_failure(), result) {
                (Some(e), _) | (None, Err(e)) => Err(e),
                (None, Ok(r)) => Ok(r),
            },
            Err(panic) => Err(Error::Execution(format!(
                "task panicked: {}",
                panic_message(panic.as_ref())
            ))),
        };
        match outcome {
            Ok(r) => return Ok(r),
            Err(e @ Error::ShuffleFetch { .. }) => return Err(e),
            Err(e) if !e.is_retryable() || attempts >= max_attempts => break e,
            Err(_) => continue,
        }
    };
    Err(Error::TaskFailed {
        stage,
        rdd: rdd.to_owned(),
        partition,
        attempts,
        source: Box::new(last_error),
    })
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// A job running on the CPU pool, awaited from async code.
///
/// The job starts when created, not when first polled. Dropping the future
/// cancels the job: tasks not yet started are skipped; running tasks finish.
#[derive(Debug)]
pub struct JobFuture<R> {
    rx: tokio::sync::oneshot::Receiver<Result<R>>,
    cancel: CancelToken,
}

impl<R: Send + 'static> JobFuture<R> {
    pub(crate) fn spawn(
        ctx: &Context,
        job: impl FnOnce(&CancelToken) -> Result<R> + Send + 'static,
    ) -> Self {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let cancel = CancelToken::default();
        let token = cancel.clone();
        // The driver runs on a pool thread: its blocking waits for tasks are
        // rayon joins, which keep executing tasks instead of parking.
        ctx.pool().spawn(move || {
            let _ = tx.send(job(&token));
        });
        JobFuture { rx, cancel }
    }

    /// A token that cancels the job without dropping the future.
    pub fn cancel_token(&self) -> CancelToken {
        self.cancel.clone()
    }
}

impl<R> Future for JobFuture<R> {
    type Output = Result<R>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut PollContext<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.rx).poll(cx).map(|r| {
            r.unwrap_or_else(|_| {
                Err(Error::Internal(
                    "the job's driver ended without a result".into(),
                ))
            })
        })
    }
}

impl<R> Drop for JobFuture<R> {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}
