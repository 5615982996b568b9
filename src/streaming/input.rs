//! Input streams: where each batch's records come from.
//!
//! Every source — the queue stream of tests, the library's socket stream,
//! the server's write-ahead-log streams, and receivers written by users —
//! implements [`InputStream`]: asked for the batch at a time, it hands over
//! the records received for it as an RDD whose partitions are blocks of the
//! batch.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use crate::context::Context;
use crate::error::Result;
use crate::rdd::{BoxIter, Data, PartitionSource, Rdd};
use crate::streaming::Time;

/// One batch of an input stream.
#[derive(Debug, Clone)]
pub struct InputBatch<T: Data> {
    /// The records, one partition per block.
    pub rdd: Rdd<T>,
    /// How many records the batch holds (for statistics).
    pub records: u64,
}

impl<T: Data> InputBatch<T> {
    /// A batch with one partition per block.
    pub fn from_blocks(ctx: &Context, blocks: Vec<Vec<T>>) -> Self {
        let records = blocks.iter().map(|b| b.len() as u64).sum();
        let blocks: Vec<Arc<Vec<T>>> = blocks
            .into_iter()
            .filter(|b| !b.is_empty())
            .map(Arc::new)
            .collect();
        InputBatch {
            rdd: ctx.from_source(Blocks(blocks)),
            records,
        }
    }

    /// A batch over blocks shared with someone else (e.g. a window's
    /// remembered batches): no element is copied.
    pub(crate) fn from_shared_blocks(ctx: &Context, blocks: Vec<Arc<Vec<T>>>) -> Self {
        let records = blocks.iter().map(|b| b.len() as u64).sum();
        let blocks = blocks.into_iter().filter(|b| !b.is_empty()).collect();
        InputBatch {
            rdd: ctx.from_source(Blocks(blocks)),
            records,
        }
    }

    /// A batch with no records (one empty partition).
    pub fn empty(ctx: &Context) -> Self {
        InputBatch::from_blocks(ctx, Vec::new())
    }
}

/// Blocks of records as partitions; a batch with no blocks has one empty
/// partition (jobs over it run one trivial task).
struct Blocks<T>(Vec<Arc<Vec<T>>>);

impl<T: Data> PartitionSource for Blocks<T> {
    type Item = T;

    fn num_partitions(&self) -> usize {
        self.0.len().max(1)
    }

    fn read<'a>(&'a self, partition: usize, _: &'a crate::TaskContext) -> Result<BoxIter<'a, T>> {
        match self.0.get(partition) {
            Some(block) => Ok(Box::new(block.iter().cloned())),
            None => Ok(Box::new(std::iter::empty())),
        }
    }

    fn describe(&self) -> String {
        "batch_blocks".to_owned()
    }
}

/// A source of records for a DStream (Spark's `InputDStream` and
/// `Receiver`). Implement it to plug in a source of your own and register
/// it with [`StreamingContext::input_stream`](super::StreamingContext::input_stream).
///
/// `next_batch` is called once per batch, in time order, from the
/// context's clock thread. It must not block for long: a receiver collects
/// records in the background (between [`start`](Self::start) and
/// [`stop`](Self::stop)) and hands over what it has.
pub trait InputStream<T: Data>: Send + Sync + 'static {
    /// A name for statistics and error messages.
    fn name(&self) -> String;

    /// Starts receiving (called by [`StreamingContext::start`](super::StreamingContext::start)).
    ///
    /// # Errors
    ///
    /// The source cannot start; the context does not start then.
    fn start(&self) -> Result<()> {
        Ok(())
    }

    /// Stops receiving; records not yet handed over are dropped.
    fn stop(&self) {}

    /// The records of the batch at `time`: everything received since the
    /// previous batch.
    ///
    /// # Errors
    ///
    /// The source failed; the batch fails (and the context stops).
    fn next_batch(&self, ctx: &Context, time: Time) -> Result<InputBatch<T>>;
}

/// Prepared batches handed out one per batch, then empty batches (Spark's
/// `queueStream` with `oneAtATime`). More can be pushed while running.
#[derive(Debug)]
pub struct QueueInput<T> {
    queue: Mutex<VecDeque<Vec<Vec<T>>>>,
}

impl<T: Data> QueueInput<T> {
    /// A queue of batches, each given as its blocks (partitions).
    pub fn new(batches: impl IntoIterator<Item = Vec<Vec<T>>>) -> Self {
        QueueInput {
            queue: Mutex::new(batches.into_iter().collect()),
        }
    }

    /// Appends a batch (as its blocks).
    pub fn push(&self, blocks: Vec<Vec<T>>) {
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(blocks);
    }
}

impl<T: Data> InputStream<T> for QueueInput<T> {
    fn name(&self) -> String {
        "queue".to_owned()
    }

    fn next_batch(&self, ctx: &Context, _: Time) -> Result<InputBatch<T>> {
        let blocks = self
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front();
        Ok(InputBatch::from_blocks(ctx, blocks.unwrap_or_default()))
    }
}

/// An input whose batches the caller hands in before each batch runs: how
/// the server feeds each stream's records from its write-ahead log into the
/// program. A batch without a fed RDD is empty.
pub struct FedInput<T: Data> {
    name: String,
    next: Mutex<Option<InputBatch<T>>>,
}

impl<T: Data> std::fmt::Debug for FedInput<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FedInput")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<T: Data> FedInput<T> {
    /// An input named `name` with nothing fed yet.
    pub fn new(name: impl Into<String>) -> Self {
        FedInput {
            name: name.into(),
            next: Mutex::new(None),
        }
    }

    /// Sets the next batch's records (replacing any not taken yet).
    pub fn feed(&self, batch: InputBatch<T>) {
        *self.next.lock().unwrap_or_else(|p| p.into_inner()) = Some(batch);
    }
}

impl<T: Data> InputStream<T> for FedInput<T> {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn next_batch(&self, ctx: &Context, _: Time) -> Result<InputBatch<T>> {
        let fed = self.next.lock().unwrap_or_else(|p| p.into_inner()).take();
        Ok(fed.unwrap_or_else(|| InputBatch::empty(ctx)))
    }
}
