//! Lamina's batch layer: recomputes every view from the master dataset.
//!
//! The master dataset is Parquet on an object store (local disk, S3, HDFS),
//! one file per stream per sealed epoch, listed in a manifest. A batch run
//! reads a snapshot of the sealed epochs up to `E`, runs each view with the
//! engine's shared definition ([`lamina::view`]) over the files' row groups,
//! and publishes the result as generation `E`.
//!
//! This crate currently holds no code of its own: the Parquet scan, the
//! generation store and cron scheduling are the next step (see
//! `docs/architecture.md`). It exists so that the workspace has its final
//! shape and dependency direction: batch depends on the engine, never on the
//! speed or serving layer.

pub use lamina::view::ViewSpec;
