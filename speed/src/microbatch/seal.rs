//! Sealing epochs: writing each closed epoch's records to the master
//! dataset as one Parquet file per stream, listing them in the manifest,
//! and only then letting the write-ahead log delete them.
//!
//! Order matters for crash safety:
//! 1. flush the state store, so the commits of the epochs being sealed (and
//!    their epoch-start positions) are durable;
//! 2. write the files — named by stream and epoch, so rewriting after a
//!    crash replaces the same objects;
//! 3. write the manifest, which is what makes the files part of the dataset;
//! 4. delete the log segments that only hold sealed records.
//!
//! A crash anywhere leaves the previous manifest valid and the records still
//! in the log; the next seal does the work again.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use lamina::master::{EpochFile, MasterStore};

use crate::commit::{CommitSink, Position, PositionKind, RecordLog};
use crate::control::{self, Kind};
use crate::envelope::{Envelope, with_source_columns};
use crate::format::Format;
use crate::microbatch::buffer::RecordBuffer;

/// Log records read and parsed at a time while sealing.
const SEAL_CHUNK_RECORDS: u64 = 262_144;

/// What the sealer tells the batch layer (a `tokio::sync::watch` value):
/// a batch run that closed epoch `e` waits until `sealed_through >= e`, or
/// fails at once with the error of a seal attempt that tried to seal `e`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SealState {
    /// The last epoch in the master dataset.
    pub sealed_through: Option<u64>,
    /// Seal attempts that did some work or failed, so far.
    pub attempts: u64,
    /// The last attempt's error when it failed.
    pub failure: Option<SealFailure>,
}

/// A failed seal attempt: see [`SealState`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealFailure {
    /// The attempt was to seal every epoch up to this one.
    pub through: u64,
    /// Why it failed.
    pub message: String,
}

impl SealState {
    /// The state after a seal attempt: `Ok(Some(through))` sealed through
    /// an epoch, `Ok(None)` had nothing to do (not counted), `Err` failed
    /// trying to seal through `target`.
    pub fn record(&mut self, target: u64, outcome: Result<Option<u64>, &str>) {
        match outcome {
            Ok(None) => return,
            Ok(Some(through)) => {
                self.sealed_through = self.sealed_through.max(Some(through));
                self.failure = None;
            }
            Err(message) => {
                self.failure = Some(SealFailure {
                    through: target,
                    message: message.to_owned(),
                });
            }
        }
        self.attempts += 1;
    }

    /// Whether epoch `epoch` is sealed (`Some(Ok)`), failed to seal in an
    /// attempt after `attempts_before` (`Some(Err)`), or neither yet.
    pub fn outcome_for(&self, epoch: u64, attempts_before: u64) -> Option<Result<(), String>> {
        if self.sealed_through.is_some_and(|s| s >= epoch) {
            return Some(Ok(()));
        }
        match &self.failure {
            Some(f) if self.attempts > attempts_before && f.through >= epoch => {
                Some(Err(f.message.clone()))
            }
            _ => None,
        }
    }
}

/// Seals epochs of the configured streams.
pub struct Sealer {
    master: MasterStore,
    log: Arc<dyn RecordLog>,
    sink: Arc<dyn CommitSink>,
    /// Stream `i` of the log: its name and format.
    streams: Vec<(String, Format)>,
    /// Whether stream `i`'s files have the source columns (see
    /// [`crate::envelope`]).
    source_columns: Vec<bool>,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer")
            .field("master", &self.master)
            .finish_non_exhaustive()
    }
}

/// What one call sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealReport {
    /// Every epoch `<=` this is now sealed.
    pub sealed_through: u64,
    /// Files written.
    pub files: Vec<EpochFile>,
}

impl Sealer {
    /// A sealer writing to `master`.
    pub fn new(
        master: MasterStore,
        log: Arc<dyn RecordLog>,
        sink: Arc<dyn CommitSink>,
        streams: Vec<(String, Format)>,
    ) -> Self {
        Sealer {
            source_columns: vec![false; streams.len()],
            master,
            log,
            sink,
            streams,
        }
    }

    /// Writes the source columns of the streams `source_columns[i]` is true
    /// for (those whose micro-batches have them, see
    /// [`crate::program::Program::has_source_columns`]), so that batch
    /// views over them see what the speed layer saw.
    pub fn with_source_columns(mut self, source_columns: Vec<bool>) -> Self {
        self.source_columns = source_columns;
        self
    }

    /// Seals every epoch before `current` that is not sealed yet; `None`
    /// when there was nothing to do.
    ///
    /// # Errors
    ///
    /// A message naming what failed; the manifest and the log are unchanged
    /// then, and a later call retries.
    pub async fn seal_before(&self, current: u64) -> Result<Option<SealReport>, String> {
        let Some(target) = current.checked_sub(1) else {
            return Ok(None);
        };
        // Held until the manifest is replaced: compaction's updates wait.
        let _manifest_lock = self.master.lock_manifest().await;
        let (mut manifest, version) = self
            .master
            .read_manifest()
            .await
            .map_err(|e| e.to_string())?;
        if manifest.sealed_through.is_some_and(|s| s >= target) {
            return Ok(None);
        }
        // 1. Everything committed so far, durable.
        let sink = Arc::clone(&self.sink);
        blocking(move || sink.flush()).await?;
        let committed_end = self.sink.position(&Position::Wal)?.unwrap_or(0);
        let starts: BTreeMap<u64, u64> = self
            .sink
            .positions_of(&PositionKind::EpochStart)?
            .into_iter()
            .filter_map(|(p, seq)| match p {
                Position::EpochStart(epoch) => Some((epoch, seq)),
                _ => None,
            })
            .collect();
        let end_of = |epoch: u64| {
            starts
                .range(epoch + 1..)
                .next()
                .map_or(committed_end, |(_, &s)| s)
        };
        let mut files = Vec::new();
        for (&epoch, &start) in starts.range(..=target) {
            if manifest.sealed_through.is_some_and(|s| epoch <= s) {
                continue;
            }
            let end = end_of(epoch);
            // 2. One file per stream with records in the epoch, written in
            // chunks of the log so that memory stays bounded however long
            // the epoch is.
            let mut writers: BTreeMap<String, lamina::master::EpochWriter> = BTreeMap::new();
            let mut from = start;
            while from < end {
                let to = end.min(from.saturating_add(SEAL_CHUNK_RECORDS));
                for (stream, batch) in self.read_epoch(from..to).await? {
                    if batch.num_rows() == 0 {
                        continue;
                    }
                    let writer = match writers.entry(stream) {
                        std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
                        std::collections::btree_map::Entry::Vacant(e) => {
                            let w = self
                                .master
                                .epoch_writer(e.key(), epoch, batch.schema())
                                .map_err(|e| e.to_string())?;
                            e.insert(w)
                        }
                    };
                    writer.write(&batch).await.map_err(|e| e.to_string())?;
                }
                from = to;
            }
            for writer in writers.into_values() {
                files.push(writer.finish().await.map_err(|e| e.to_string())?);
            }
        }
        // 3. The commit point (conditional on the manifest read in step 0
        // where the store can).
        manifest.seal(target, files.clone());
        self.master
            .replace_manifest(&manifest, &version)
            .await
            .map_err(|e| e.to_string())?;
        // 4. The sealed records are in the dataset now.
        let (log, before) = (Arc::clone(&self.log), end_of(target));
        blocking(move || log.truncate_before(before)).await?;
        Ok(Some(SealReport {
            sealed_through: target,
            files,
        }))
    }

    /// Reads a sequence range from the log and parses each stream's records
    /// (dead letters are left out, as in the micro-batches).
    async fn read_epoch(
        &self,
        range: std::ops::Range<u64>,
    ) -> Result<Vec<(String, RecordBatch)>, String> {
        let log = Arc::clone(&self.log);
        let streams = self.streams.clone();
        let source_columns = self.source_columns.clone();
        // Blocking file reads and CPU-bound parsing: off the async runtime.
        tokio::task::spawn_blocking(move || {
            let mut buffers: Vec<RecordBuffer> =
                streams.iter().map(|_| RecordBuffer::default()).collect();
            log.read(range, &mut |r| {
                // Data of plain and keyed appends; keys and rejected records
                // are not data.
                let stream = match control::kind(r.stream) {
                    Kind::Data(s) => s,
                    Kind::Keyed(s) if r.seq != r.entry_first_seq => s,
                    // An envelope that does not decode is a dead letter in
                    // the micro-batches too.
                    Kind::Enveloped(s) => {
                        if let (Some(b), Ok(e)) =
                            (buffers.get_mut(s as usize), Envelope::decode(r.payload))
                            && e.rejected.is_none()
                        {
                            b.push_enveloped(r.seq, r.receive_us, &e);
                        }
                        return;
                    }
                    _ => return,
                };
                if let Some(b) = buffers.get_mut(stream as usize) {
                    b.push(r.seq, r.receive_us, r.payload);
                }
            })?;
            streams
                .iter()
                .zip(&buffers)
                .enumerate()
                .map(|(i, ((name, format), buffer))| {
                    let parsed = format.parse(buffer.records());
                    let batch = if source_columns.get(i).copied().unwrap_or(false) {
                        with_source_columns(
                            &parsed.batch,
                            buffer.meta(),
                            parsed.accepted.iter().copied(),
                        )
                        .map_err(|e| format!("stream `{name}`: {e}"))?
                    } else {
                        parsed.batch
                    };
                    Ok((name.clone(), batch))
                })
                .collect()
        })
        .await
        .map_err(|e| format!("sealing task failed: {e}"))?
    }
}

/// Runs fsync-bound work (a state flush, deleting log segments) off the
/// async runtime's workers.
async fn blocking(f: impl FnOnce() -> Result<(), String> + Send + 'static) -> Result<(), String> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| format!("sealing task failed: {e}"))?
}

#[cfg(test)]
mod tests {
    use super::SealState;

    #[test]
    fn a_run_hears_only_of_seals_that_concern_its_epoch() {
        let mut s = SealState {
            sealed_through: Some(3),
            ..Default::default()
        };
        assert_eq!(s.outcome_for(3, 0), Some(Ok(())));
        assert_eq!(s.outcome_for(5, 0), None);
        // A failure from before the run's request says nothing.
        s.record(4, Err("s3 down"));
        let before = s.attempts;
        assert_eq!(s.outcome_for(5, before), None);
        // Nothing to do is not an attempt.
        s.record(5, Ok(None));
        assert_eq!(s.outcome_for(5, before), None);
        // A later failure trying to seal through epoch 5 fails the run.
        s.record(5, Err("s3 down"));
        assert_eq!(s.outcome_for(5, before), Some(Err("s3 down".into())));
        // ... but not a run waiting for a later epoch.
        assert_eq!(s.outcome_for(6, before), None);
        // A success clears the failure.
        s.record(5, Ok(Some(5)));
        assert_eq!(
            (s.outcome_for(5, before), s.failure.clone()),
            (Some(Ok(())), None)
        );
    }
}
