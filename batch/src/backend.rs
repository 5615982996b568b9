//! Where a batch run's computation happens, behind a trait: the run
//! protocol around it (close the epoch, snapshot the manifest, compute,
//! publish) does not depend on which engine computes. The first
//! implementation is Lamina's own engine in this process
//! ([`EngineBackend`]); the next step out is an external engine (Spark
//! through Spark Connect, say) that reads the same Parquet files and hands
//! back the same partial aggregates.

use std::future::Future;
use std::pin::Pin;

use lamina::master::MasterStore;
use lamina::{Context, Result};
use tokio::sync::watch;

use crate::history::Histories;
use crate::progress::RunProgress;
use crate::run::{BatchView, GenerationSummary, RowSink, stream_generation_with};

/// What a run asks a backend to compute: every view over the master
/// dataset's sealed epochs up to the manifest's `sealed_through` (read by
/// the backend when it starts), each stream's history first.
#[derive(Debug)]
pub struct Job<'a> {
    /// The master dataset.
    pub master: &'a MasterStore,
    /// Streams' histories.
    pub histories: &'a Histories,
    /// The views.
    pub views: &'a [BatchView],
    /// Where the backend counts what it has read.
    pub progress: &'a RunProgress,
    /// Turns true when the run is cancelled: the backend stops and fails.
    pub cancel: watch::Receiver<bool>,
}

/// Called once with the generation's epoch before any row; returns where
/// the partial aggregates go.
pub type StartSink<'a> = Box<dyn FnOnce(u64) -> RowSink + Send + 'a>;

/// A computation in flight.
pub type Computing<'a> =
    Pin<Box<dyn Future<Output = Result<Option<GenerationSummary>>> + Send + 'a>>;

/// Computes a generation: the contract of [`stream_generation_with`]. An
/// implementation hands each view's partial aggregates to the sink (a key
/// may come several times: partials are monoid states the consumer
/// combines), returns `Ok(None)` when nothing is sealed, fails naming the
/// file for unreadable input, and stops when cancelled. What it hands over
/// before failing is discarded by the consumer.
pub trait BatchBackend: Send + Sync {
    /// A short name for logs.
    fn name(&self) -> &'static str;

    /// Computes the job's generation.
    fn compute<'a>(&'a self, job: Job<'a>, start: StartSink<'a>) -> Computing<'a>;
}

/// Lamina's engine in this process: one task per Parquet row group on the
/// context's CPU pool.
#[derive(Debug, Clone)]
pub struct EngineBackend {
    ctx: Context,
}

impl EngineBackend {
    /// A backend computing on `ctx`.
    pub fn new(ctx: Context) -> Self {
        EngineBackend { ctx }
    }
}

impl BatchBackend for EngineBackend {
    fn name(&self) -> &'static str {
        "engine"
    }

    fn compute<'a>(&'a self, job: Job<'a>, start: StartSink<'a>) -> Computing<'a> {
        Box::pin(stream_generation_with(
            &self.ctx,
            job.master,
            job.histories,
            job.views,
            job.progress,
            job.cancel,
            start,
        ))
    }
}
