//! The WAL's error type.

use std::{io, ops::Range, path::PathBuf, sync::Arc};

/// Result of WAL operations.
pub type Result<T, E = WalError> = std::result::Result<T, E>;

/// Everything that can go wrong in the write-ahead log.
///
/// `Clone` because one failed write or fsync fails every append of its
/// group commit: each appender gets its own copy of the same error.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum WalError {
    /// An I/O operation on a WAL file or directory failed.
    #[error("WAL I/O error: {op} {path}: {source}")]
    Io {
        /// What was being done: "write", "fsync", "create segment", ...
        op: &'static str,
        path: PathBuf,
        #[source]
        source: Arc<io::Error>,
    },
    /// An earlier write or fsync failed; the WAL accepts no more appends.
    /// Reopening it (which re-reads what is really on disk) is the only way
    /// back.
    #[error("WAL failed earlier and accepts no more appends (reopen to recover): {0}")]
    Failed(#[source] Box<WalError>),
    /// The WAL was closed (or its writer thread is gone).
    #[error("WAL is closed")]
    Closed,
    /// Another `Wal` (in this or another process) has the directory open.
    #[error("WAL directory {path} is locked by another open WAL")]
    Locked { path: PathBuf },
    /// Damage to fsynced data: found by `Wal::open` (anything that is not
    /// a torn tail; nothing was changed on disk), or data that passed
    /// recovery does not read back, or the directory holds a file that
    /// looks like a segment but is not one. `offset` is the byte offset of
    /// the damaged entry in `path`. `lamina wal check` reports every
    /// problem; `lamina wal salvage` rebuilds the log from what is intact.
    #[error("corrupt WAL {path} at byte {offset}: {reason}")]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    /// `read_range` asked for records that are not durable yet.
    #[error("WAL records {requested:?} are not all durable yet (durable below {durable})")]
    NotDurable { requested: Range<u64>, durable: u64 },
    /// `read_range` asked for records whose segments were already deleted.
    #[error("WAL records from {requested_start} were truncated (oldest kept: {oldest})")]
    Truncated { requested_start: u64, oldest: u64 },
    /// A single append does not fit the on-disk format (4 GiB per entry,
    /// 4 GiB per record, 2^32 - 1 records).
    #[error("WAL append too large: {reason}")]
    TooLarge { reason: String },
    /// The configuration cannot work.
    #[error("invalid WAL config: {0}")]
    Config(String),
}

impl WalError {
    pub(super) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        WalError::Io {
            op,
            path: path.into(),
            source: Arc::new(source),
        }
    }
}

/// `map_err` helper: `file.sync_data().map_err(io_err("fsync", &path))`.
pub(super) fn io_err<'a>(
    op: &'static str,
    path: &'a std::path::Path,
) -> impl FnOnce(io::Error) -> WalError + 'a {
    move |source| WalError::io(op, path, source)
}
