//! Helpers of the receivers' unit tests: a WAL in a temporary directory,
//! reading it back, and bounded waits.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicU32, Ordering},
    time::{Duration, Instant},
};

use crate::{
    control,
    wal::{Wal, WalConfig},
};

/// A directory removed on drop.
#[derive(Debug)]
pub(super) struct TempDir(pub(super) PathBuf);

impl TempDir {
    pub(super) fn new() -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "lamina-receivers-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        // A leftover of an earlier run with the same pid.
        let _ = std::fs::remove_dir_all(&path);
        TempDir(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh WAL whose appends wait while `max_pending_bytes` are not durable.
pub(super) fn open_wal(max_pending_bytes: u64) -> (TempDir, Wal) {
    let dir = TempDir::new();
    let mut cfg = WalConfig::new(dir.0.join("wal"));
    cfg.max_pending_bytes = max_pending_bytes;
    let (wal, _) = Wal::open(cfg).unwrap();
    (dir, wal)
}

/// Every durable record, in seq order, as (kind, payload).
pub(super) fn read_all(wal: &Wal) -> Vec<(control::Kind, Vec<u8>)> {
    let mut out = Vec::new();
    wal.read_range(
        wal.first_seq()..wal.durable_seq(),
        |_, stream, _, payload| {
            out.push((control::kind(stream), payload.to_vec()));
        },
    )
    .unwrap();
    out
}

/// Polls `done` every few milliseconds until it holds; panics naming `what`
/// after `limit`.
pub(super) async fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out after {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Every payload in the log, sorted: what arrived, whatever the order of
/// the connections.
pub(super) fn sorted_payloads(wal: &Wal) -> Vec<Vec<u8>> {
    let mut got: Vec<Vec<u8>> = read_all(wal).into_iter().map(|(_, p)| p).collect();
    got.sort();
    got
}
