//! The engine's error type.

use std::fmt;

/// A `Result` whose error defaults to the engine's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while defining or running a job.
///
/// The categories follow the usual split of query engines: a *plan* error is
/// a mistake in how a dataset or view was defined and will fail again on
/// retry; an *execution* error happened while a task ran (a source failed, a
/// closure panicked) and may succeed when the task is recomputed from
/// lineage; *internal* errors are bugs in the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The dataset or view is defined wrongly (bad argument, missing column,
    /// wrong column type). Retrying does not help.
    #[error("plan error: {0}")]
    Plan(String),

    /// A task failed while it ran: a source could not be read, user code
    /// returned an error or panicked.
    #[error("execution error: {0}")]
    Execution(String),

    /// A shuffle block a task needed is gone (for example evicted or lost);
    /// the scheduler recomputes the map side from lineage and retries.
    #[error("shuffle {shuffle} output of map partition {map_partition} is missing")]
    ShuffleFetch {
        /// The shuffle whose output is missing.
        shuffle: usize,
        /// The map partition whose output is missing.
        map_partition: usize,
    },

    /// A stage kept failing after every allowed attempt.
    #[error(
        "job failed: stage {stage} ({rdd}) partition {partition} failed {attempts} times; last error: {source}"
    )]
    TaskFailed {
        /// The stage that failed.
        stage: usize,
        /// Name of the dataset the failing task computed.
        rdd: String,
        /// The partition that kept failing.
        partition: usize,
        /// How many attempts were made.
        attempts: usize,
        /// The error of the last attempt.
        #[source]
        source: Box<Error>,
    },

    /// An Arrow kernel or array access failed.
    #[error("arrow error: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    /// A bug in the engine: an invariant did not hold.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Builds an [`Error::Execution`] from anything printable; handy in
    /// closures: `.map_err(Error::execution)`.
    pub fn execution(msg: impl fmt::Display) -> Self {
        Error::Execution(msg.to_string())
    }

    /// Builds an [`Error::Plan`] from anything printable.
    pub fn plan(msg: impl fmt::Display) -> Self {
        Error::Plan(msg.to_string())
    }

    /// Whether recomputing the failed task might succeed. Plan errors are
    /// deterministic and are not retried.
    pub fn is_retryable(&self) -> bool {
        !matches!(self, Error::Plan(_) | Error::Internal(_))
    }
}
