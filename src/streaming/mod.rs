//! Discretized streams (Spark Streaming's DStreams) on the engine.
//!
//! A live stream is chopped into micro-batches, one every batch interval,
//! and **each micro-batch is an RDD**: a [`DStream<T>`] is a recipe that,
//! given a batch, yields the `Rdd<T>` of that batch. Every DStream
//! operation is the RDD operation applied batch by batch, and every output
//! operation runs as an ordinary job on the [`Context`](crate::Context) —
//! the same scheduler, shuffles, task retries and CPU pool as batch jobs.
//!
//! ```
//! use lamina::streaming::{StreamingContext, Time};
//! use std::time::Duration;
//!
//! let ssc = StreamingContext::new(lamina::Context::builder().threads(2).build()?,
//!                                 Duration::from_millis(100))?;
//! // Two prepared batches of lines (a queue stream, for tests and demos).
//! let lines = ssc.queue_stream(vec![
//!     vec!["to be or".to_string(), "not to be".to_string()],
//!     vec!["be quick".to_string()],
//! ]);
//! let counts = lines
//!     .flat_map(|l: String| l.split(' ').map(str::to_owned).collect::<Vec<_>>())
//!     .map(|w| (w, 1i64))
//!     .reduce_by_key(|a, b| a + b);
//! let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
//! let into = seen.clone();
//! counts.foreach_rdd(move |rdd, _time| {
//!     let mut batch = rdd.collect()?;
//!     batch.sort();
//!     into.lock().unwrap().push(batch);
//!     Ok(())
//! });
//! ssc.run_batch(Time::from_millis(100))?;
//! ssc.run_batch(Time::from_millis(200))?;
//! let seen = seen.lock().unwrap();
//! assert_eq!(seen[0][0], ("be".to_string(), 2));
//! assert_eq!(seen[1], vec![("be".to_string(), 1), ("quick".to_string(), 1)]);
//! # Ok::<(), lamina::Error>(())
//! ```
//!
//! # Layout
//!
//! - [`context`]: [`StreamingContext`] — the batch interval, the graph of
//!   input streams and output operations, [`run_batch`]
//!   (StreamingContext::run_batch) and the clock thread behind
//!   [`start`](StreamingContext::start).
//! - [`dstream`]: [`DStream`] and its transformations; [`BatchScope`], the
//!   RDDs of one batch (each DStream computed once per batch, so outputs that
//!   share a parent share its RDD and its shuffles).
//! - [`input`]: the [`InputStream`] trait every source implements, queue
//!   streams, and fed streams (whose batches the caller hands in — the
//!   server's write-ahead-log streams).
//! - [`socket`]: `socket_text_stream`, a receiver that connects to a TCP
//!   server and takes its lines, with backpressure.
//! - [`state`]: `update_state_by_key`: state per key from batch to batch,
//!   replaced only when the batch succeeded.
//! - [`window`]: window operations (`window`, `reduce_by_key_and_window`
//!   with and without an inverse function, `count_by_window`, ...): every
//!   batch of the windowed stream is kept in memory while in the window.
//! - [`output`]: output operations: `print`, `foreach_rdd`,
//!   `save_as_text_files`, and `serve` (a stream of `(key, partial)` pairs
//!   that the serving layer answers and merges with the batch layer).
//!
//! # Guarantees
//!
//! Batches run one at a time, in time order; within a batch, output
//! operations run in the order they were declared. A stateless DStream
//! program is a pure function of each batch's input, which is what lets the
//! batch layer run the same program over the master dataset (see
//! [`ServedView::pairs_over`]). Delivery guarantees are the source's: a
//! library-mode socket stream holds its records in memory (lost on a crash,
//! like Spark's receivers without a write-ahead log), while the server's
//! streams are fed from its write-ahead log and committed exactly once.

pub mod context;
pub mod dstream;
pub mod durable;
pub mod input;
pub mod output;
pub mod socket;
pub mod state;
pub mod window;
pub mod windowed_view;

pub use context::PendingBatch;
pub use context::{BatchOutcome, StreamingContext};
pub use dstream::{BatchScope, DStream, InputRdds};
pub use durable::{ServedState, StateData, StateDelta, StateInfo};
pub use input::{FedInput, InputStream};
pub use output::{ServedDelta, ServedValue, ServedView};

use std::fmt;

/// The time of a micro-batch: milliseconds since the Unix epoch, a multiple
/// of the batch interval when the clock schedules it (Spark's `Time`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Time(i64);

impl Time {
    /// The time `ms` milliseconds after the Unix epoch.
    pub const fn from_millis(ms: i64) -> Self {
        Time(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn millis(self) -> i64 {
        self.0
    }

    /// The current wall-clock time.
    pub fn now() -> Self {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        Time(ms)
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ms", self.0)
    }
}
