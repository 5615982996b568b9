//! Lamina's batch layer: recomputes every view from the master dataset.
//!
//! A batch run reads a snapshot of the master dataset — the files of every
//! sealed epoch up to `E`, as listed in the manifest — runs each view with
//! the engine's shared definition ([`lamina::view`]) over the files' row
//! groups, and returns the result as generation `E`, which the serving
//! layer publishes in one atomic step.
//!
//! # Layout
//!
//! - [`run`]: computing one generation ([`compute_generation`]).
//! - [`backend`]: the computation behind a trait ([`BatchBackend`]); the
//!   engine ([`EngineBackend`]) is its first implementation.
//! - [`history`]: streams' histories, Parquet of other tools read before
//!   the streams' own epochs.
//! - [`worker`]: the run protocol (close the epoch, compute, publish,
//!   record), with the server's side behind [`RunSteps`].
//! - [`compact`]: merging small epoch files after a run, deleting what
//!   was replaced after a retention.
//! - [`runs`]: the run registry: one run at a time, a queue of one, states
//!   and history ([`BatchRuns`]).

pub mod backend;
pub mod compact;
pub mod history;
pub mod progress;
pub mod run;
pub mod runs;
pub mod worker;

pub use backend::{BatchBackend, EngineBackend, Job};
pub use compact::{CompactionPolicy, CompactionReport, compact};
pub use history::{Histories, StreamHistory};
pub use progress::{Progress, RunProgress};
pub use run::{
    BatchView, Generation, GenerationStats, GenerationSummary, ProgramView, RowSink, ViewInput,
    ViewRows, ViewTiming, compute_generation, stream_generation, stream_generation_with,
};
pub use runs::{BatchRuns, Outcome, RunRecord, RunState};
pub use worker::{Compaction, RunSteps, run_worker};
