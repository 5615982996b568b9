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
//!
//! Receivers, the write-ahead log and the micro-batch loop come next (see
//! `docs/architecture.md`).

pub mod format;
