//! Helpers shared by the integration tests.

#![allow(dead_code)] // each test binary uses a different subset

use std::{
    fs,
    ops::Range,
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
};

use lamina_speed::wal::{Wal, WalConfig};

/// A fresh directory under cargo's per-target temp dir, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("wal-{name}-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&path);
        TempDir(path)
    }

    pub fn config(&self, segment_bytes: u64) -> WalConfig {
        WalConfig {
            segment_bytes,
            ..WalConfig::new(&self.0)
        }
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// One record: (seq, stream, receive_time_us, payload).
pub type Record = (u64, u32, i64, Vec<u8>);

pub fn read_all(wal: &Wal, range: Range<u64>) -> Vec<Record> {
    let mut out = Vec::new();
    wal.read_range(range, |seq, stream, t, p| {
        out.push((seq, stream, t, p.to_vec()))
    })
    .unwrap();
    out
}

/// Segment files as (name, bytes), sorted by name.
pub type Files = Vec<(String, Vec<u8>)>;

/// The segment files in `dir`.
pub fn segment_files(dir: &Path) -> Files {
    let mut files: Vec<(String, Vec<u8>)> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect();
    files.sort();
    files
}

/// Replaces the segment files of `dir` with `files`.
pub fn restore(dir: &Path, files: &[(String, Vec<u8>)]) {
    for (name, _) in segment_files(dir) {
        fs::remove_file(dir.join(name)).unwrap();
    }
    for (name, bytes) in files {
        fs::write(dir.join(name), bytes).unwrap();
    }
}

/// Offsets of the entries of one segment's bytes, by walking the framing
/// (`len: u32 LE` counts the bytes after the 8-byte len + crc).
pub fn entry_offsets(segment: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = 0;
    while at < segment.len() {
        offsets.push(at);
        let len = u32::from_le_bytes(segment[at..at + 4].try_into().unwrap()) as usize;
        at += 8 + len;
    }
    assert_eq!(at, segment.len(), "segment ends inside an entry");
    offsets
}
