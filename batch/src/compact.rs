//! Compaction: merging a stream's small epoch files into larger ones, and
//! deleting what compaction replaced once its retention has passed.
//!
//! The sealer writes one file per stream per epoch (a minute by default),
//! so a day of a quiet stream is 1440 small files, each a footer to read
//! and a request to make for every batch run. After each successful run
//! the batch layer merges runs of consecutive small files of a stream
//! into one file of up to [`CompactionPolicy::target_bytes`], keeping the
//! epochs' order and recording each epoch's rows in the new entry
//! ([`Segment`]s), so that `lamina state rebuild` can still replay the
//! dataset epoch by epoch.
//!
//! # What a reader sees
//!
//! A merged file is written under a name no listed file has, and becomes
//! part of the dataset in one manifest replacement that also takes its
//! inputs out: a reader of the manifest sees either the inputs or the
//! merged file, never both and never a half-written one. The inputs are
//! then [`Retired`](lamina::master::Retired): kept for readers that read an
//! older manifest (another server reading the dataset, an external tool)
//! and deleted after [`CompactionPolicy::retention`].
//!
//! # Crashes
//!
//! A crash before the manifest replacement leaves a merged file nothing
//! lists; the next pass deletes such files (only compaction writes
//! `compacted-*` names, one pass at a time, under the writer lease). A
//! crash between deleting expired files and the manifest replacement
//! leaves entries of files that are gone; the next pass deletes them again
//! (a missing file is fine) and drops them.
//!
//! In this process the sealer and compaction take turns on the manifest
//! ([`MasterStore::lock_manifest`]); compaction holds that lock only for
//! the replacement, never while copying.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::SchemaRef;
use futures::StreamExt;
use lamina::master::{EpochFile, FileBatches, Manifest, MasterStore, Segment};
use lamina::{Error, Result};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};

/// When compaction merges files and how long it keeps what it replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompactionPolicy {
    /// Files of at least half this size are left alone; a merged file is
    /// at most about this size.
    pub target_bytes: u64,
    /// A run of small files is merged only when it has at least this many
    /// files (at least 2).
    pub min_files: usize,
    /// How long a replaced file stays in storage for readers of an older
    /// manifest.
    pub retention: Duration,
}

impl Default for CompactionPolicy {
    fn default() -> Self {
        CompactionPolicy {
            target_bytes: 128 << 20,
            min_files: 8,
            retention: Duration::from_secs(3600),
        }
    }
}

/// What one compaction pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactionReport {
    /// Files merged away.
    pub files_in: u64,
    /// Merged files written into the dataset.
    pub files_out: u64,
    /// Bytes of the merged-away files.
    pub bytes_in: u64,
    /// Bytes of the merged files.
    pub bytes_out: u64,
    /// Rows copied.
    pub rows: u64,
    /// Replaced files deleted after their retention, and unlisted merged
    /// files a crash had left.
    pub files_deleted: u64,
    /// How long the pass took.
    pub ms: u64,
    /// Why the pass stopped early; what it had committed stays.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One group of consecutive small files of a stream, to be merged.
#[derive(Debug)]
struct Group {
    stream: String,
    files: Vec<EpochFile>,
}

/// Plans the merges of `manifest`: per stream, runs of consecutive files
/// smaller than half the target, cut where the next file would take the
/// run over the target, each of at least `min_files` files.
fn plan(manifest: &Manifest, policy: &CompactionPolicy) -> Vec<Group> {
    let small = |f: &EpochFile| f.bytes < policy.target_bytes / 2;
    let min_files = policy.min_files.max(2);
    let mut groups = Vec::new();
    let mut current: Vec<EpochFile> = Vec::new();
    let mut bytes = 0u64;
    let close = |current: &mut Vec<EpochFile>, groups: &mut Vec<Group>| {
        if current.len() >= min_files {
            groups.push(Group {
                stream: current[0].stream.clone(),
                files: std::mem::take(current),
            });
        }
        current.clear();
    };
    for f in &manifest.files {
        let joins = current.last().is_some_and(|last| last.stream == f.stream)
            && small(f)
            && bytes + f.bytes <= policy.target_bytes;
        if !joins {
            close(&mut current, &mut groups);
            bytes = 0;
        }
        if small(f) {
            bytes += f.bytes;
            current.push(f.clone());
        }
    }
    close(&mut current, &mut groups);
    groups
}

fn is_compacted_name(path: &str) -> bool {
    path.rsplit('/')
        .next()
        .is_some_and(|n| n.starts_with("compacted-") && n.ends_with(".parquet"))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Runs one compaction pass over `master`. The copying runs on a blocking
/// thread (it is CPU work: decoding and encoding Parquet), driving its I/O
/// on the current runtime. Stops between batches when `cancel` turns true;
/// what was committed before stays, a merged file not yet listed is
/// deleted by the next pass.
pub async fn compact(
    master: &MasterStore,
    policy: &CompactionPolicy,
    cancel: &watch::Receiver<bool>,
) -> CompactionReport {
    let started = Instant::now();
    let (master, policy, cancel) = (master.clone(), policy.clone(), cancel.clone());
    let handle = tokio::runtime::Handle::current();
    let joined = tokio::task::spawn_blocking(move || {
        let mut report = CompactionReport::default();
        if let Err(e) = handle.block_on(pass(&master, &policy, &cancel, &mut report)) {
            report.error = Some(e.to_string());
        }
        report
    })
    .await;
    let mut report = joined.unwrap_or_else(|e| CompactionReport {
        error: Some(format!("compaction stopped: {e}")),
        ..CompactionReport::default()
    });
    report.ms = started.elapsed().as_millis() as u64;
    match &report.error {
        None if report.files_in + report.files_deleted > 0 => info!(
            files_in = report.files_in,
            files_out = report.files_out,
            bytes_in = report.bytes_in,
            bytes_out = report.bytes_out,
            deleted = report.files_deleted,
            ms = report.ms,
            "compaction merged small files of the master dataset"
        ),
        None => {}
        Some(e) => warn!(
            files_in = report.files_in,
            files_out = report.files_out,
            "compaction stopped early: {e}"
        ),
    }
    report
}

async fn pass(
    master: &MasterStore,
    policy: &CompactionPolicy,
    cancel: &watch::Receiver<bool>,
    report: &mut CompactionReport,
) -> Result<()> {
    let manifest = master.manifest().await?;
    let now = now_ms();

    // 1. Merged files a crash left unlisted, and replaced files whose
    // retention has passed: not part of the dataset, so deleted without
    // the lock (only this pass touches them).
    let listed: BTreeSet<&str> = manifest
        .files
        .iter()
        .map(|f| f.path.as_str())
        .chain(manifest.retired.iter().map(|r| r.path.as_str()))
        .collect();
    let streams: BTreeSet<&str> = manifest.files.iter().map(|f| f.stream.as_str()).collect();
    for stream in streams {
        for path in master.list_stream(stream).await? {
            if is_compacted_name(&path) && !listed.contains(path.as_str()) {
                master.delete_file(&path).await?;
                report.files_deleted += 1;
            }
        }
    }
    let retention_ms = i64::try_from(policy.retention.as_millis()).unwrap_or(i64::MAX);
    let mut expired = Vec::new();
    for r in &manifest.retired {
        if r.since_ms.saturating_add(retention_ms) <= now {
            master.delete_file(&r.path).await?;
            report.files_deleted += 1;
            expired.push(r.path.clone());
        }
    }

    // 2. Copy each group into a merged file, unlisted yet. A group whose
    // files' columns differ (the stream's schema changed) is cut there.
    let mut merged: Vec<(Vec<String>, EpochFile)> = Vec::new();
    let mut result = Ok(());
    'groups: for group in plan(&manifest, policy) {
        let parts = match open_by_schema(master, &group).await {
            Ok(parts) => parts,
            Err(e) => {
                result = Err(e);
                break;
            }
        };
        for part in parts {
            if part.len() < policy.min_files.max(2) {
                continue;
            }
            if *cancel.borrow() {
                result = Err(Error::execution("cancelled: the server is stopping"));
                break 'groups;
            }
            let first = part[0].0.first_epoch();
            let last = part[part.len() - 1].0.epoch;
            let path = EpochFile::compacted_path_for(&group.stream, first, last);
            if listed.contains(path.as_str()) {
                // Never overwrite a file a reader may still read.
                continue;
            }
            let inputs = part.iter().map(|(f, _)| f.path.clone()).collect();
            match copy(master, &group.stream, part, cancel).await {
                Ok(file) => merged.push((inputs, file)),
                Err(e) => {
                    result = Err(e);
                    break 'groups;
                }
            }
        }
    }

    // 3. The commit point: one manifest replacement, under the lock the
    // sealer takes too.
    if !merged.is_empty() || !expired.is_empty() {
        let lock = master.lock_manifest().await;
        let (mut current, version) = master.read_manifest().await?;
        current.retired.retain(|r| !expired.contains(&r.path));
        let mut unlisted = Vec::new();
        let mut counted = Vec::new();
        for (inputs, file) in merged {
            if current.replace_files(&inputs, file.clone(), now) {
                counted.push((inputs, file));
            } else {
                unlisted.push(file.path);
            }
        }
        master.replace_manifest(&current, &version).await?;
        drop(lock);
        for (inputs, file) in counted {
            let bytes_in: u64 = manifest
                .files
                .iter()
                .filter(|f| inputs.contains(&f.path))
                .map(|f| f.bytes)
                .sum();
            report.files_in += inputs.len() as u64;
            report.files_out += 1;
            report.bytes_in += bytes_in;
            report.bytes_out += file.bytes;
            report.rows += file.rows;
        }
        for path in unlisted {
            master.delete_file(&path).await?;
        }
    }
    result
}

type Input = (EpochFile, FileBatches);

/// Opens a group's files (their footers) and cuts the group where the
/// columns change.
async fn open_by_schema(master: &MasterStore, group: &Group) -> Result<Vec<Vec<Input>>> {
    let mut parts: Vec<Vec<Input>> = Vec::new();
    let mut schema: Option<SchemaRef> = None;
    for f in &group.files {
        let stream = master.read_file(&f.path).await?;
        if schema.as_ref() != Some(stream.schema()) {
            if schema.is_some() {
                info!(
                    stream = %group.stream,
                    file = %f.path,
                    "compaction: the stream's columns change here; merging the files before and after apart"
                );
            }
            schema = Some(Arc::clone(stream.schema()));
            parts.push(Vec::new());
        }
        if let Some(part) = parts.last_mut() {
            part.push((f.clone(), stream));
        }
    }
    Ok(parts)
}

/// Copies files of one schema, in order, into one merged file.
async fn copy(
    master: &MasterStore,
    stream: &str,
    inputs: Vec<Input>,
    cancel: &watch::Receiver<bool>,
) -> Result<EpochFile> {
    let first = inputs[0].0.first_epoch();
    let last = inputs[inputs.len() - 1].0.epoch;
    let schema = Arc::clone(inputs[0].1.schema());
    let mut writer = master.compacted_writer(stream, first, last, schema)?;
    let mut segments: Vec<Segment> = Vec::new();
    for (f, mut batches) in inputs {
        let mut rows = 0u64;
        while let Some(batch) = batches.next().await {
            if *cancel.borrow() {
                return Err(Error::execution("cancelled: the server is stopping"));
            }
            let batch =
                batch.map_err(|e| Error::execution(format!("{}/{}: {e}", master.url(), f.path)))?;
            rows += batch.num_rows() as u64;
            writer.write(&batch).await?;
        }
        if rows != f.rows {
            return Err(Error::execution(format!(
                "{}/{}: the file has {rows} rows, the manifest says {}; not merging it",
                master.url(),
                f.path,
                f.rows
            )));
        }
        segments.extend(f.epochs());
    }
    let mut file = writer.finish().await?;
    file.segments = segments;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(stream: &str, epoch: u64, bytes: u64) -> EpochFile {
        EpochFile {
            stream: stream.into(),
            epoch,
            path: EpochFile::path_for(stream, epoch),
            rows: 1,
            bytes,
            segments: Vec::new(),
        }
    }

    fn planned(manifest: &Manifest, policy: &CompactionPolicy) -> Vec<(String, Vec<u64>)> {
        plan(manifest, policy)
            .into_iter()
            .map(|g| (g.stream, g.files.iter().map(|f| f.epoch).collect()))
            .collect()
    }

    #[test]
    fn plans_runs_of_small_files_per_stream_up_to_the_target() {
        let policy = CompactionPolicy {
            target_bytes: 100,
            min_files: 2,
            retention: Duration::ZERO,
        };
        let mut m = Manifest::default();
        // a: 1-3 small, 4 big (breaks the run), 5-6 small; b: one file.
        m.seal(
            6,
            vec![
                file("a", 1, 10),
                file("a", 2, 10),
                file("a", 3, 10),
                file("a", 4, 60),
                file("a", 5, 40),
                file("a", 6, 40),
                file("b", 1, 1),
            ],
        );
        assert_eq!(
            planned(&m, &policy),
            vec![("a".into(), vec![1, 2, 3]), ("a".into(), vec![5, 6])]
        );
        // The target cuts runs: 40 + 40 + 40 > 100.
        m.seal(7, vec![file("a", 7, 40)]);
        assert_eq!(
            planned(&m, &policy),
            vec![("a".into(), vec![1, 2, 3]), ("a".into(), vec![5, 6])]
        );
        // min_files leaves short runs alone; streams never mix.
        let strict = CompactionPolicy {
            min_files: 3,
            ..policy
        };
        m.seal(8, vec![file("b", 8, 1)]);
        assert_eq!(planned(&m, &strict), vec![("a".into(), vec![1, 2, 3])]);
    }
}
