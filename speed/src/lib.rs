//! Lamina's speed layer: receivers, the micro-batch clock, stateful
//! operators, windows, the write-ahead log and the exactly-once commit.
//!
//! Each micro-batch becomes one Arrow record batch per stream that is run
//! through the engine's shared view definition ([`lamina::view`]); its
//! deltas, source positions and batch id commit together.
//!
//! # Layout
//!
//! - [`format`]: raw records (text lines, JSON lines, CSV) to one Arrow
//!   record batch per micro-batch, with a dead letter for every record that
//!   does not parse.
//! - [`wal`]: the write-ahead log of push sources: group commit (one fsync
//!   covers every append that arrived while the previous one ran), torn-tail
//!   recovery (damage to acknowledged entries is refused, then checked or
//!   salvaged by `wal::check` and `wal::salvage`), deletion of segments once
//!   their epochs are sealed.
//! - [`control`]: control records that travel in the log with the data
//!   (rejected records, idempotency keys, lost markers of a salvaged log).
//! - [`commit`]: what a micro-batch commits, and the [`commit::RecordLog`] /
//!   [`commit::CommitSink`] traits it reads and writes through.
//!
//! - [`microbatch`]: the micro-batch clock: each interval's durable records
//!   become one record batch per stream, run through the views and
//!   committed with the log position; closed epochs are sealed into the
//!   master dataset.
//!
//! - [`program`]: the DStream program every micro-batch runs: the streams
//!   as input streams fed from the log, every view (config or Rust) a served
//!   DStream, one engine job per view.
//!
//! - [`backlog`]: the budget of records received but not yet processed;
//!   push sources wait (TCP) or are told to retry (HTTP) beyond it.
//! - [`receivers`]: sources of records (a TCP listener, a TCP client), one
//!   file each, registered in [`receivers::ReceiverConfig`]; they append to the log
//!   and apply backpressure instead of dropping.

pub mod backlog;
pub mod commit;
pub mod control;
pub mod envelope;
pub mod event_time;
pub mod format;
pub mod last;
pub mod microbatch;
pub mod program;
pub mod receivers;
pub mod wal;
