//! Lamina's engine: resilient distributed datasets in the style of Spark, on
//! one machine's cores, and the view definition that the batch layer and the
//! speed layer share.
//!
//! # Layout
//!
//! - [`context`]: the [`Context`] — the CPU pool every task runs on, the
//!   shuffle store and the partition cache — and the per-task
//!   [`TaskContext`].
//! - [`rdd`]: the [`Dataset`] trait (partitions, dependencies, `compute`),
//!   the typed [`Rdd`] handle, and one file per transformation. Narrow
//!   transformations are pipelined inside a task; wide ones go through a
//!   shuffle.
//! - [`scheduler`]: cuts a job's lineage into stages at shuffles, runs each
//!   stage's tasks on the pool, retries failed tasks by recomputing them from
//!   lineage, and recomputes lost shuffle output.
//! - [`shuffle`] and [`partitioner`]: where map outputs live between stages
//!   and how keys are spread over partitions.
//! - [`cache`]: the byte-bounded LRU cache behind [`Rdd::cache`].
//! - [`columnar`]: Arrow record batches as dataset elements, with typed column
//!   access by name.
//! - [`streaming`]: discretized streams — each micro-batch an RDD, every
//!   DStream operation the RDD operation applied per batch, output
//!   operations run as jobs (Spark Streaming's model).
//! - [`view`]: a view is defined once — a key extractor and a monoid
//!   aggregate, or any pipeline that ends in `(key, monoid)` — and run by both
//!   layers.
//!
//! # Example
//!
//! ```
//! use lamina::Context;
//!
//! let ctx = Context::builder().threads(2).build()?;
//! let lines = ctx.parallelize(vec!["to be or".to_string(), "not to be".to_string()], 2);
//! let mut counts = lines
//!     .flat_map(|l| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
//!     .map(|w| (w, 1u64))
//!     .reduce_by_key(|a, b| a + b)
//!     .collect()?;
//! counts.sort();
//! assert_eq!(counts[0], ("be".to_string(), 2));
//! # Ok::<(), lamina::Error>(())
//! ```

pub mod cache;
pub mod columnar;
pub mod context;
pub mod error;
#[cfg(feature = "master")]
pub mod master;
pub mod metrics;
pub mod partitioner;
pub mod rdd;
pub mod scheduler;
pub mod shuffle;
pub mod streaming;
pub mod view;

pub use context::{Context, ContextBuilder, ContextConfig, TaskContext};
pub use error::{Error, Result};
pub use rdd::{BoxIter, Data, Dataset, Dependency, Key, Node, PartitionSource, Rdd};
pub use scheduler::{CancelToken, JobFuture};
