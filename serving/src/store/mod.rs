//! The view store: batch generations and real-time deltas, durable in sled,
//! merged in memory for queries.
//!
//! # Layout in sled
//!
//! | tree | key | value |
//! |---|---|---|
//! | `meta` | `watermark`, `batch_id`, `pos/{source}` | big-endian `u64` |
//! | `deltas` | view, `0x00`, epoch (BE `u64`), key | CBOR [`AggValue`]: the sum of the epoch's micro-batches for that key |
//! | `gen` | generation (BE `u64`), view, `0x00`, key | CBOR [`AggValue`]: the batch view |
//! | `dead` | stream, `0x00`, seq (BE `u64`) | CBOR `(reason, record)`: records that did not parse |
//! | `meta` | `dead_count/{stream}` | big-endian `u64`: dead letters ever recorded |
//!
//! View names never contain `0x00` (config validation allows
//! `[A-Za-z0-9_.-]`), so a view's rows are one prefix.
//!
//! # The merge
//!
//! A query answers `batch[key]` (generation `E`, covering epochs `<= E`) ⊕ the
//! deltas of epochs `> E`. The in-memory [`index`] holds exactly that per key,
//! behind one lock: a micro-batch commit adds its deltas, a publish replaces
//! the batch values and drops the deltas of epochs `<= E` in the same critical
//! section, so a reader sees either the old generation with its deltas or the
//! new one with its deltas — never a gap, never a double count.
//!
//! # Crash safety
//!
//! sled applies a transaction atomically, also across a crash. A micro-batch
//! commit writes its deltas, its id and its source positions in one
//! transaction. A publish writes the generation's rows first (invisible: the
//! watermark still names the old generation), then moves the watermark in one
//! transaction, and only then deletes what the new watermark makes obsolete.
//! [`ViewStore::open`] finishes whatever a crash interrupted: rows of
//! unpublished generations and deltas of epochs `<= E` are ignored and
//! deleted.

mod index;
mod keys;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use lamina::view::AggValue;
use sled::Transactional;

pub use index::{Answer, RankedItem};
use index::{Index, ViewIndex};
pub use lamina_speed::commit::{DeadRecord, MicroBatchCommit};

/// Errors of the view store.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// No view of that name is configured.
    #[error("unknown view `{0}`")]
    UnknownView(String),
    /// sled failed (I/O, corruption).
    #[error("state store: {0}")]
    Sled(#[from] sled::Error),
    /// A stored value could not be decoded: the state directory was written
    /// by an incompatible version or is damaged.
    #[error("state store: cannot decode {what}: {detail}")]
    Corrupt {
        /// What was being decoded.
        what: String,
        /// The decoder's message.
        detail: String,
    },
    /// Partial aggregates of different kinds met (a view's aggregate was
    /// changed while its state was kept).
    #[error("view `{view}`: {detail}")]
    Mismatch {
        /// The view.
        view: String,
        /// What did not fit.
        detail: String,
    },
}

/// A `Result` with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Batch views of all views and real-time deltas, durable and queryable.
pub struct ViewStore {
    db: sled::Db,
    meta: sled::Tree,
    deltas: sled::Tree,
    gens: sled::Tree,
    dead: sled::Tree,
    // A std RwLock: sections are in-memory map updates and lookups, never
    // I/O and never across an `.await`.
    index: RwLock<Index>,
}

impl std::fmt::Debug for ViewStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewStore").finish_non_exhaustive()
    }
}

impl ViewStore {
    /// Opens (or creates) the store under `dir` for the given views, and
    /// rebuilds the in-memory index: generation `E` plus deltas of epochs
    /// `> E`. State of views not listed is left alone but not served.
    ///
    /// # Errors
    ///
    /// sled errors, or [`StoreError::Corrupt`] for undecodable values.
    pub fn open(dir: &Path, views: &[String]) -> Result<Self> {
        let db = sled::Config::new().path(dir).open()?;
        let meta = db.open_tree("meta")?;
        let deltas = db.open_tree("deltas")?;
        let gens = db.open_tree("gen")?;
        let dead = db.open_tree("dead")?;
        let watermark = read_u64(&meta, keys::WATERMARK)?;
        let mut index = Index::new(watermark, views);

        // The published generation.
        if let Some(e) = watermark {
            for row in gens.scan_prefix(e.to_be_bytes()) {
                let (k, v) = row?;
                let (view, key) = keys::split_gen(&k)?;
                if let Some(vi) = index.views.get_mut(view) {
                    vi.set_batch(key, decode(&v, "a batch value")?);
                }
            }
        }
        // Leftovers of generations that were written but not published, or
        // superseded: a crash can leave either.
        let stale: Vec<sled::IVec> = gens
            .iter()
            .keys()
            .filter_map(|k| k.ok())
            .filter(|k| Some(keys::gen_of(k)) != watermark)
            .collect();
        for k in stale {
            gens.remove(k)?;
        }
        // Deltas: epochs after the watermark are served, earlier ones are
        // already in the generation.
        let mut obsolete = Vec::new();
        for row in deltas.iter() {
            let (k, v) = row?;
            let (view, epoch, key) = keys::split_delta(&k)?;
            if watermark.is_some_and(|e| epoch <= e) {
                obsolete.push(k);
                continue;
            }
            if let Some(vi) = index.views.get_mut(view) {
                vi.set_delta(key, epoch, decode(&v, "a delta")?);
            }
        }
        for k in obsolete {
            deltas.remove(k)?;
        }
        for vi in index.views.values_mut() {
            vi.rebuild_ranking();
        }
        Ok(ViewStore {
            db,
            meta,
            deltas,
            gens,
            dead,
            index: RwLock::new(index),
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, Index> {
        // Writers never leave the index half-updated before a panic point
        // that matters for readers (each key update is one assignment).
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The id of the last committed micro-batch.
    pub fn last_batch_id(&self) -> Result<Option<u64>> {
        read_u64(&self.meta, keys::BATCH_ID)
    }

    /// The last committed position of a source (e.g. `"wal"`).
    pub fn position(&self, source: &str) -> Result<Option<u64>> {
        read_u64(&self.meta, &keys::position(source))
    }

    /// Every committed position whose name starts with `prefix`.
    ///
    /// # Errors
    ///
    /// sled errors or malformed values.
    pub fn positions_with_prefix(&self, prefix: &str) -> Result<Vec<(String, u64)>> {
        let mut out = Vec::new();
        for row in self.meta.scan_prefix(keys::position(prefix)) {
            let (k, v) = row?;
            let name = String::from_utf8_lossy(&k[b"pos/".len()..]).into_owned();
            let bytes: [u8; 8] = v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                what: name.clone(),
                detail: format!("{} bytes, expected 8", v.len()),
            })?;
            out.push((name, u64::from_be_bytes(bytes)));
        }
        Ok(out)
    }

    /// The generation being served (its epochs are `<= watermark`), if any.
    pub fn watermark(&self) -> Option<u64> {
        self.read().watermark
    }

    /// The configured views, sorted by name.
    pub fn views(&self) -> Vec<String> {
        let mut v: Vec<String> = self.read().views.keys().cloned().collect();
        v.sort();
        v
    }

    /// Commits one micro-batch: its deltas, id and source positions in one
    /// sled transaction, then makes the deltas visible to queries.
    ///
    /// Not durable on return (sled flushes in the background): after a crash
    /// the speed layer replays its write-ahead log from the last position
    /// that did survive, so a lost commit is recomputed, never lost or
    /// doubled. Call [`flush`](Self::flush) before deleting log segments.
    ///
    /// # Errors
    ///
    /// [`StoreError::UnknownView`] for a delta of an unconfigured view;
    /// [`StoreError::Mismatch`] when a delta does not fit the stored kind;
    /// sled errors. Nothing is applied on error.
    pub fn commit(&self, commit: MicroBatchCommit) -> Result<()> {
        // The write lock is held from computing the new per-epoch values to
        // applying them, so two commits (or a commit and a publish) cannot
        // interleave. Readers wait for the sled transaction too, which is
        // short: it writes to sled's page cache and never fsyncs.
        let mut index = self.write();
        // A micro-batch in an epoch the served generation covers would be
        // dropped at the next publish or counted twice: a bug upstream.
        // Refusing keeps its records in the log, and the error says why.
        if index.watermark.is_some_and(|w| commit.epoch <= w) {
            return Err(StoreError::Mismatch {
                view: "*".into(),
                detail: format!(
                    "micro-batch {} is in epoch {}, which the served generation {} already covers",
                    commit.batch_id,
                    commit.epoch,
                    index.watermark.unwrap_or_default()
                ),
            });
        }
        let mut staged: Vec<(String, Arc<str>, AggValue)> = Vec::new();
        let mut rows: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        for (view, pairs) in &commit.deltas {
            let vi = index
                .views
                .get(view.as_str())
                .ok_or_else(|| StoreError::UnknownView(view.clone()))?;
            for (key, delta) in pairs {
                let (key_arc, merged) =
                    vi.merged_delta(key, commit.epoch, delta)
                        .map_err(|detail| StoreError::Mismatch {
                            view: view.clone(),
                            detail,
                        })?;
                rows.push((keys::delta(view, commit.epoch, key), encode(&merged)?));
                staged.push((view.clone(), key_arc, merged));
            }
        }
        let mut positions: Vec<(Vec<u8>, u64)> = commit
            .positions
            .iter()
            .map(|(s, p)| (keys::position(s), *p))
            .collect();
        let mut dead_rows: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(commit.dead_letters.len());
        let mut dead_counts: HashMap<&str, u64> = HashMap::new();
        for d in &commit.dead_letters {
            dead_rows.push((
                keys::dead(&d.stream, d.seq),
                encode_dead(&d.reason, &d.record)?,
            ));
            *dead_counts.entry(d.stream.as_str()).or_default() += 1;
        }
        for (stream, n) in dead_counts {
            let key = keys::dead_count(stream);
            let before = read_u64(&self.meta, &key)?.unwrap_or(0);
            positions.push((key, before + n));
        }
        (&self.meta, &self.deltas, &self.dead)
            .transaction(|(meta, deltas, dead)| {
                let mut batch = sled::Batch::default();
                for (k, v) in &rows {
                    batch.insert(k.as_slice(), v.as_slice());
                }
                deltas.apply_batch(&batch)?;
                for (k, v) in &dead_rows {
                    dead.insert(k.as_slice(), v.as_slice())?;
                }
                meta.insert(keys::BATCH_ID, &commit.batch_id.to_be_bytes())?;
                for (k, p) in &positions {
                    meta.insert(k.as_slice(), &p.to_be_bytes())?;
                }
                Ok::<_, sled::transaction::ConflictableTransactionError<()>>(())
            })
            .map_err(tx_error)?;
        for (view, key, merged) in staged {
            if let Some(vi) = index.views.get_mut(view.as_str()) {
                vi.put_delta(key, commit.epoch, merged);
            }
        }
        Ok(())
    }

    /// Publishes generation `generation`: the batch view of every view over
    /// all epochs `<= generation`, replacing the previous one and retiring
    /// the deltas it covers, in one step as far as readers can tell.
    ///
    /// `rows` are `(view, key, value)`; views absent from `rows` get an empty
    /// batch view. Rows of unconfigured views are an error.
    ///
    /// # Errors
    ///
    /// sled errors, [`StoreError::UnknownView`]. On error the previous
    /// generation keeps serving.
    pub fn publish(
        &self,
        generation: u64,
        rows: impl IntoIterator<Item = (String, String, AggValue)>,
    ) -> Result<()> {
        if self.watermark().is_some_and(|w| generation < w) {
            return Err(StoreError::Mismatch {
                view: "*".into(),
                detail: format!("generation {generation} is older than the one served"),
            });
        }
        let known: Vec<String> = self.views();
        // 1. Write the rows; invisible until the watermark moves.
        let mut fresh: HashMap<String, Vec<(String, AggValue)>> =
            known.iter().map(|v| (v.clone(), Vec::new())).collect();
        let mut batch = sled::Batch::default();
        let mut pending = 0;
        for (view, key, value) in rows {
            let Some(list) = fresh.get_mut(&view) else {
                return Err(StoreError::UnknownView(view));
            };
            batch.insert(keys::batch_row(generation, &view, &key), encode(&value)?);
            list.push((key, value));
            pending += 1;
            if pending == 10_000 {
                self.gens.apply_batch(std::mem::take(&mut batch))?;
                pending = 0;
            }
        }
        self.gens.apply_batch(batch)?;
        // Make the rows durable before the watermark can point at them.
        self.db.flush()?;
        // 2. Move the watermark: the commit point.
        self.meta
            .insert(keys::WATERMARK, &generation.to_be_bytes())?;
        self.meta.flush()?;
        // 3. Swap in memory, in one critical section.
        {
            let mut index = self.write();
            index.watermark = Some(generation);
            for (view, list) in fresh {
                if let Some(vi) = index.views.get_mut(view.as_str()) {
                    vi.replace_batch(list, generation);
                }
            }
        }
        // 4. Delete what the new watermark made obsolete. A crash here is
        // finished by `open`.
        for row in self.gens.iter().keys() {
            let k = row?;
            if keys::gen_of(&k) != generation {
                self.gens.remove(k)?;
            }
        }
        let mut obsolete = Vec::new();
        for row in self.deltas.iter().keys() {
            let k = row?;
            let (_, epoch, _) = keys::split_delta(&k)?;
            if epoch <= generation {
                obsolete.push(k);
            }
        }
        for k in obsolete {
            self.deltas.remove(k)?;
        }
        Ok(())
    }

    /// The merged answer for one key; `None` when the key has no data.
    ///
    /// # Errors
    ///
    /// [`StoreError::UnknownView`].
    pub fn get(&self, view: &str, key: &str) -> Result<Option<Answer>> {
        let index = self.read();
        let vi: &ViewIndex = index
            .views
            .get(view)
            .ok_or_else(|| StoreError::UnknownView(view.to_owned()))?;
        Ok(vi.answer(key, index.watermark))
    }

    /// The `k` keys with the largest merged value (by
    /// [`AggValue::scalar`]), largest first; ties by key.
    ///
    /// # Errors
    ///
    /// [`StoreError::UnknownView`].
    pub fn top(&self, view: &str, k: usize) -> Result<Vec<RankedItem>> {
        let index = self.read();
        let vi = index
            .views
            .get(view)
            .ok_or_else(|| StoreError::UnknownView(view.to_owned()))?;
        Ok(vi.top(k))
    }

    /// Number of keys with data in a view.
    ///
    /// # Errors
    ///
    /// [`StoreError::UnknownView`].
    pub fn key_count(&self, view: &str) -> Result<usize> {
        let index = self.read();
        let vi = index
            .views
            .get(view)
            .ok_or_else(|| StoreError::UnknownView(view.to_owned()))?;
        Ok(vi.len())
    }

    /// Number of dead letters ever recorded for a stream.
    ///
    /// # Errors
    ///
    /// sled errors.
    pub fn dead_letter_count(&self, stream: &str) -> Result<u64> {
        Ok(read_u64(&self.meta, &keys::dead_count(stream))?.unwrap_or(0))
    }

    /// The most recent `limit` dead letters of a stream, newest first.
    ///
    /// # Errors
    ///
    /// sled errors or undecodable rows.
    pub fn dead_letters(&self, stream: &str, limit: usize) -> Result<Vec<DeadRecord>> {
        let mut out = Vec::new();
        for row in self
            .dead
            .scan_prefix(keys::dead_prefix(stream))
            .rev()
            .take(limit)
        {
            let (k, v) = row?;
            let seq = keys::dead_seq(&k)?;
            let (reason, record): (String, ciborium::Value) = ciborium::from_reader(v.as_ref())
                .map_err(|e| StoreError::Corrupt {
                    what: "a dead letter".into(),
                    detail: e.to_string(),
                })?;
            out.push(DeadRecord {
                stream: stream.to_owned(),
                seq,
                reason,
                record: match record {
                    ciborium::Value::Bytes(b) => b,
                    _ => Vec::new(),
                },
            });
        }
        Ok(out)
    }

    /// Stores a small named document (e.g. the batch-run history).
    ///
    /// # Errors
    ///
    /// sled errors.
    pub fn save_blob(&self, name: &str, bytes: &[u8]) -> Result<()> {
        self.meta.insert(keys::blob(name), bytes)?;
        Ok(())
    }

    /// A document stored with [`save_blob`](Self::save_blob).
    ///
    /// # Errors
    ///
    /// sled errors.
    pub fn load_blob(&self, name: &str) -> Result<Option<Vec<u8>>> {
        Ok(self.meta.get(keys::blob(name))?.map(|v| v.to_vec()))
    }

    /// Saves the batch-run history durably (flushed before returning), so
    /// that a run acknowledged to a client keeps its id across a crash.
    ///
    /// # Errors
    ///
    /// sled errors.
    pub fn save_runs(&self, runs: &[lamina_batch::RunRecord]) -> Result<()> {
        let bytes = serde_json::to_vec(runs).map_err(|e| StoreError::Corrupt {
            what: "the batch-run history".into(),
            detail: e.to_string(),
        })?;
        self.save_blob(RUNS_BLOB, &bytes)?;
        self.meta.flush()?;
        Ok(())
    }

    /// The saved batch-run history (empty when none, or unreadable — which
    /// is reported in the error).
    ///
    /// # Errors
    ///
    /// sled errors or an undecodable history.
    pub fn load_runs(&self) -> Result<Vec<lamina_batch::RunRecord>> {
        match self.load_blob(RUNS_BLOB)? {
            None => Ok(Vec::new()),
            Some(bytes) => serde_json::from_slice(&bytes).map_err(|e| StoreError::Corrupt {
                what: "the batch-run history".into(),
                detail: e.to_string(),
            }),
        }
    }

    /// Makes everything committed so far durable.
    ///
    /// # Errors
    ///
    /// sled errors.
    pub fn flush(&self) -> Result<()> {
        self.db.flush()?;
        Ok(())
    }
}

const RUNS_BLOB: &str = "batch_runs";

fn tx_error(e: sled::transaction::TransactionError<()>) -> StoreError {
    match e {
        sled::transaction::TransactionError::Storage(e) => StoreError::Sled(e),
        sled::transaction::TransactionError::Abort(()) => StoreError::Corrupt {
            what: "a transaction".into(),
            detail: "aborted".into(),
        },
    }
}

fn read_u64(tree: &sled::Tree, key: &[u8]) -> Result<Option<u64>> {
    match tree.get(key)? {
        None => Ok(None),
        Some(v) => {
            let bytes: [u8; 8] = v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                what: String::from_utf8_lossy(key).into_owned(),
                detail: format!("{} bytes, expected 8", v.len()),
            })?;
            Ok(Some(u64::from_be_bytes(bytes)))
        }
    }
}

fn encode(value: &AggValue) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(32);
    ciborium::into_writer(value, &mut out).map_err(|e| StoreError::Corrupt {
        what: "a value".into(),
        detail: e.to_string(),
    })?;
    Ok(out)
}

fn encode_dead(reason: &str, record: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(reason.len() + record.len() + 8);
    ciborium::into_writer(&(reason, serde_bytes_like(record)), &mut out).map_err(|e| {
        StoreError::Corrupt {
            what: "a dead letter".into(),
            detail: e.to_string(),
        }
    })?;
    Ok(out)
}

/// Records as CBOR byte strings rather than arrays of numbers.
fn serde_bytes_like(record: &[u8]) -> ciborium::Value {
    ciborium::Value::Bytes(record.to_vec())
}

fn decode(bytes: &[u8], what: &str) -> Result<AggValue> {
    ciborium::from_reader(bytes).map_err(|e| StoreError::Corrupt {
        what: what.into(),
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests;

impl lamina_speed::commit::CommitSink for ViewStore {
    fn commit(&self, commit: MicroBatchCommit) -> std::result::Result<(), String> {
        ViewStore::commit(self, commit).map_err(|e| e.to_string())
    }

    fn position(&self, name: &str) -> std::result::Result<Option<u64>, String> {
        ViewStore::position(self, name).map_err(|e| e.to_string())
    }

    fn last_batch_id(&self) -> std::result::Result<Option<u64>, String> {
        ViewStore::last_batch_id(self).map_err(|e| e.to_string())
    }

    fn positions_with_prefix(
        &self,
        prefix: &str,
    ) -> std::result::Result<Vec<(String, u64)>, String> {
        ViewStore::positions_with_prefix(self, prefix).map_err(|e| e.to_string())
    }

    fn flush(&self) -> std::result::Result<(), String> {
        ViewStore::flush(self).map_err(|e| e.to_string())
    }
}
