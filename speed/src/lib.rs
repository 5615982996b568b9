//! Lamina's speed layer: receivers, the micro-batch clock, stateful
//! operators, windows, the write-ahead log and the exactly-once commit.
//!
//! Each micro-batch becomes one Arrow record batch that is run through the
//! engine's shared view definition ([`lamina::view`]); its deltas, source
//! positions and batch id commit together.
//!
//! This crate currently holds no code of its own: receivers and the
//! micro-batch loop are the next step (see `docs/architecture.md`). It
//! exists so that the workspace has its final shape and dependency
//! direction: speed depends on the engine, never on the batch or serving
//! layer.

pub use lamina::view::ViewSpec;
