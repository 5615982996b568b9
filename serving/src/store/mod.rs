//! The view store: batch generations and real-time deltas, durable in sled,
//! merged in memory for queries.
//!
//! # Layout in sled
//!
//! | tree | key | value |
//! |---|---|---|
//! | `meta` | `watermark`, `batch_id`, `layout`, `pos/{source}` (`source` = [`Position::key`]) | big-endian `u64` |
//! | `log` | epoch (BE `u64`), micro-batch id (BE `u64`) | one micro-batch's deltas of every view ([`codec`]) |
//! | `epochs` | epoch, view, `0x00`, chunk (BE `u32`) | a compacted epoch's deltas, in chunks |
//! | `meta` | `compacted/{epoch}` | empty: that epoch's deltas are in `epochs`, not `log` |
//! | `gen` | generation, view, `0x00`, chunk | the batch view, in chunks |
//! | `dead` | stream, `0x00`, seq (BE `u64`) | CBOR `(reason, record)`: records that did not parse |
//! | `meta` | `dead_count/{stream}` | big-endian `u64`: dead letters ever recorded |
//! | `state_log` | micro-batch id | the batch's operator state changes ([`state`]) |
//! | `state` | operator, `0x00`, key | an operator's state of one key, folded from `state_log` |
//!
//! View names never contain `0x00` (config validation allows
//! `[A-Za-z0-9_.-]`), so a view's chunks are one prefix.
//!
//! # The cost of a micro-batch
//!
//! A commit is one sled transaction holding one row — the micro-batch's
//! deltas as one blob — plus its id, source positions and dead letters:
//! its cost is the bytes of its deltas, not a sled write per key. Values
//! are combined in memory ([`table`]). Once an epoch is closed (a later
//! epoch has committed), [`flush`](ViewStore::flush) compacts its
//! micro-batch rows into chunks of the epoch's per-key totals, off the
//! micro-batch's path, so that the rows kept between two batch runs grow
//! with the keys, not with the micro-batches.
//!
//! # The merge
//!
//! A query answers `batch[key]` (generation `E`, covering epochs `<= E`) ⊕ the
//! deltas of epochs `> E`. Each key lives in one shard of its view's
//! [`table`], and every change to it happens under that shard's lock: a
//! micro-batch adds its deltas, a publish replaces the batch values and
//! drops the deltas of epochs `<= E` together with the shard's watermark.
//! A reader sees either the old generation with its deltas or the new one
//! with its deltas — never a gap, never a double count — and waits at most
//! for one shard's slice of a micro-batch, never for sled.
//!
//! # Crash safety
//!
//! sled applies a transaction atomically, also across a crash. A micro-batch
//! commit writes its deltas, its id, its source positions and its operator
//! state changes in one
//! transaction. A publish writes the generation's chunks first (invisible:
//! the watermark still names the old generation), then moves the watermark,
//! and only then deletes what the new watermark makes obsolete. Compacting
//! an epoch writes its chunks, then the marker, then deletes its micro-batch
//! rows. [`ViewStore::open`] finishes whatever a crash interrupted: chunks
//! of unpublished generations, unmarked epoch chunks, rows of marked epochs
//! and anything of epochs `<= E` are ignored and deleted.

mod codec;
mod keys;
mod load;
mod publish;
mod state;
mod table;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::{Mutex, MutexGuard, RwLock};
use std::time::Instant;

use lamina::view::{AggValue, AggregateKind};
use sled::Transactional;
use tracing::info;

use codec::PairList;
pub use lamina_speed::commit::{DeadRecord, MicroBatchCommit, Position, PositionKind};
use load::{Progress, load, open_db};
pub use publish::{PublishSink, Publisher};
pub use table::{Answer, RankedItem};
use table::{SHARDS, Table, ViewTable, hash_key, shard_of, with_table};

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
    /// The state directory was written by an earlier layout of the store.
    #[error(
        "state store {dir}: written by an earlier version of Lamina (layout {found}, this build reads layout {expected}); stop the server, delete that directory and start again: the views are rebuilt from the master dataset by the next batch run (`lamina batch run`), and records not yet sealed are replayed from the write-ahead log"
    )]
    OldLayout {
        /// The directory.
        dir: String,
        /// The layout found (1: before layouts were recorded).
        found: u64,
        /// The layout this build reads.
        expected: u64,
    },
    /// A shard of a view holds 4 GiB of key bytes or 2^32 keys.
    #[error("view `{0}`: a shard of the view is full (4 GiB of keys)")]
    Full(String),
}

/// A `Result` with [`StoreError`].
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Pairs per chunk of a generation or a compacted epoch.
const CHUNK_PAIRS: u64 = 65_536;
/// Bytes per chunk, at most about.
const CHUNK_BYTES: usize = 4 << 20;
/// sled's page cache: the store keeps its rows few and large and serves
/// queries from memory, so sled needs little cache.
const SLED_CACHE_BYTES: u64 = 64 << 20;

/// What the writers (commits, publishes, compaction) share.
#[derive(Debug, Default)]
struct Epochs {
    /// Epochs after the watermark that received deltas.
    open: BTreeSet<u64>,
    /// Of those, the ones compacted into the `epochs` tree.
    compacted: BTreeSet<u64>,
    /// The epoch of the last commit: every epoch before it is closed.
    last: Option<u64>,
}

/// Batch views of all views and real-time deltas, durable and queryable.
pub struct ViewStore {
    db: sled::Db,
    meta: sled::Tree,
    log: sled::Tree,
    epoch_rows: sled::Tree,
    gens: sled::Tree,
    dead: sled::Tree,
    /// The program's operator state (see [`state`]).
    state: sled::Tree,
    /// Each micro-batch's state changes, until folded into `state`.
    state_log: sled::Tree,
    /// State changes not yet folded, and key counts.
    pending: RwLock<state::Pending>,
    tables: BTreeMap<String, Table>,
    // std locks: sections are in-memory updates, never across an `.await`.
    watermark: RwLock<Option<u64>>,
    /// Serialises commits and the epoch bookkeeping.
    epochs: Mutex<Epochs>,
    /// One publish at a time: true while a [`Publisher`] lives (a flag,
    /// not a guard, so that a publisher can move between threads).
    publishing: Mutex<bool>,
    published: std::sync::Condvar,
    /// One compaction at a time.
    compacting: Mutex<()>,
}

impl std::fmt::Debug for ViewStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ViewStore").finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn full(view: &str) -> impl Fn(table::ShardFull) -> StoreError + '_ {
    move |_| StoreError::Full(view.to_owned())
}

fn mismatch(view: &str, table: &Table, value: &AggValue) -> StoreError {
    StoreError::Mismatch {
        view: view.to_owned(),
        detail: format!(
            "the view computes {:?} but a value of kind {:?} was given",
            table.kind(),
            value.kind()
        ),
    }
}

/// Whether a value is of the table's kind.
fn fits(table: &Table, value: &AggValue) -> bool {
    match table {
        Table::Count(_) => matches!(value, AggValue::Count(_)),
        Table::Any(t) => value.kind() == t.kind,
    }
}

impl ViewStore {
    /// Opens (or creates) the store under `dir` for the given views (name
    /// and aggregate), and rebuilds the in-memory tables: generation `E`
    /// plus deltas of epochs `> E`. State of views not listed is not
    /// served (and is dropped by the next publish or compaction).
    ///
    /// # Errors
    ///
    /// sled errors; [`StoreError::Corrupt`] for undecodable values;
    /// [`StoreError::Mismatch`] when a view's stored values are of another
    /// aggregate than configured; [`StoreError::OldLayout`].
    pub fn open(dir: &Path, views: &[(String, AggregateKind)]) -> Result<Self> {
        let started = Instant::now();
        let db = open_db(dir)?;
        let meta = db.open_tree("meta")?;
        match read_u64(&meta, keys::LAYOUT)? {
            Some(keys::LAYOUT_VERSION) => {}
            found => {
                let used = found.is_some()
                    || meta.get(keys::BATCH_ID)?.is_some()
                    || meta.get(keys::WATERMARK)?.is_some();
                if used {
                    return Err(StoreError::OldLayout {
                        dir: dir.display().to_string(),
                        found: found.unwrap_or(1),
                        expected: keys::LAYOUT_VERSION,
                    });
                }
                meta.insert(keys::LAYOUT, &keys::LAYOUT_VERSION.to_be_bytes())?;
            }
        }
        let log = db.open_tree("log")?;
        let epoch_rows = db.open_tree("epochs")?;
        let gens = db.open_tree("gen")?;
        let dead = db.open_tree("dead")?;
        let state_tree = db.open_tree("state")?;
        let state_log = db.open_tree("state_log")?;
        let pending = state::load(&state_tree, &state_log)?;
        let watermark = read_u64(&meta, keys::WATERMARK)?;
        let covered = |epoch: u64| watermark.is_some_and(|w| epoch <= w);
        let mut tables: BTreeMap<String, Table> = views
            .iter()
            .map(|(name, kind)| (name.clone(), Table::new(kind.clone(), watermark)))
            .collect();

        // The published generation; chunks of any other are leftovers.
        let mut progress = Progress::new("the batch views");
        let mut stale = Vec::new();
        for row in gens.iter() {
            let (k, v) = row?;
            if Some(keys::leading_u64(&k)) != watermark {
                stale.push(k);
                continue;
            }
            let view = keys::chunk_view(&k)?;
            let Some(table) = tables.get_mut(view) else {
                continue;
            };
            let mut n = 0;
            codec::Reader::new(&v, "a batch-view chunk").pairs(|key, value| {
                n += 1;
                load(table, view, None, key, value)
            })?;
            progress.row(n);
        }
        for k in stale {
            gens.remove(k)?;
        }

        // Epochs after the watermark: compacted ones from `epochs`, the
        // rest micro-batch by micro-batch from `log`.
        let mut state = Epochs::default();
        for row in meta.scan_prefix(keys::COMPACTED_PREFIX) {
            let (k, _) = row?;
            let epoch = keys::compacted_epoch(&k)?;
            if covered(epoch) {
                meta.remove(k)?;
            } else {
                state.compacted.insert(epoch);
            }
        }
        let mut progress = Progress::new("compacted epochs");
        let mut stale = Vec::new();
        for row in epoch_rows.iter() {
            let (k, v) = row?;
            let epoch = keys::leading_u64(&k);
            if covered(epoch) || !state.compacted.contains(&epoch) {
                stale.push(k);
                continue;
            }
            state.open.insert(epoch);
            let view = keys::chunk_view(&k)?;
            let Some(table) = tables.get_mut(view) else {
                continue;
            };
            let mut n = 0;
            codec::Reader::new(&v, "a compacted epoch's chunk").pairs(|key, value| {
                n += 1;
                load(table, view, Some(epoch), key, value)
            })?;
            progress.row(n);
        }
        for k in stale {
            epoch_rows.remove(k)?;
        }
        let mut progress = Progress::new("micro-batches");
        let mut stale = Vec::new();
        for row in log.iter() {
            let (k, v) = row?;
            let epoch = keys::leading_u64(&k);
            if covered(epoch) || state.compacted.contains(&epoch) {
                stale.push(k);
                continue;
            }
            state.open.insert(epoch);
            let mut n = 0;
            codec::decode_batch(&v, |view, key, value| {
                n += 1;
                match tables.get_mut(view) {
                    Some(table) => load(table, view, Some(epoch), key, value),
                    None => Ok(()),
                }
            })?;
            progress.row(n);
        }
        for k in stale {
            log.remove(k)?;
        }
        // The compacted epochs are among the open ones (a marker without
        // chunks is an epoch with no deltas).
        state.open.extend(state.compacted.iter().copied());
        state.last = state.open.last().copied();
        let keys: usize = tables.values().map(Table::len).sum();
        info!(
            views = tables.len(),
            keys,
            open_epochs = state.open.len(),
            "state store opened in {:.2} s",
            started.elapsed().as_secs_f64()
        );
        Ok(ViewStore {
            db,
            meta,
            log,
            epoch_rows,
            gens,
            dead,
            state: state_tree,
            state_log,
            pending: RwLock::new(pending),
            tables,
            watermark: RwLock::new(watermark),
            epochs: Mutex::new(state),
            publishing: Mutex::new(false),
            published: std::sync::Condvar::new(),
            compacting: Mutex::new(()),
        })
    }

    fn table(&self, view: &str) -> Result<&Table> {
        self.tables
            .get(view)
            .ok_or_else(|| StoreError::UnknownView(view.to_owned()))
    }

    /// The id of the last committed micro-batch.
    pub fn last_batch_id(&self) -> Result<Option<u64>> {
        read_u64(&self.meta, keys::BATCH_ID)
    }

    /// The last committed value of a position (e.g. [`Position::Wal`]).
    pub fn position(&self, position: &Position) -> Result<Option<u64>> {
        read_u64(&self.meta, &keys::position(position))
    }

    /// Every committed position of a family, in key order (epoch starts:
    /// by epoch). Names under the family's prefix that are no position of
    /// it are skipped.
    ///
    /// # Errors
    ///
    /// sled errors or malformed values.
    pub fn positions_of(&self, family: &PositionKind) -> Result<Vec<(Position, u64)>> {
        let mut out = Vec::new();
        for row in self
            .meta
            .scan_prefix(keys::position_prefix(&family.key_prefix()))
        {
            let (k, v) = row?;
            let name = String::from_utf8_lossy(keys::position_name(&k));
            let Some(position) = Position::parse(&name).filter(|p| p.is_of(family)) else {
                continue;
            };
            let bytes: [u8; 8] = v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
                what: name.into_owned(),
                detail: format!("{} bytes, expected 8", v.len()),
            })?;
            out.push((position, u64::from_be_bytes(bytes)));
        }
        Ok(out)
    }

    /// The generation being served (its epochs are `<= watermark`), if any.
    pub fn watermark(&self) -> Option<u64> {
        *self.watermark.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The configured views, sorted by name.
    pub fn views(&self) -> Vec<String> {
        self.tables.keys().cloned().collect()
    }

    /// Commits one micro-batch: its deltas (as one row), id and source
    /// positions in one sled transaction, then makes the deltas visible to
    /// queries, shard by shard.
    ///
    /// Not durable on return (sled flushes in the background): after a crash
    /// the speed layer replays its write-ahead log from the last position
    /// that did survive, so a lost commit is recomputed, never lost or
    /// doubled. Call [`flush`](Self::flush) before deleting log segments.
    ///
    /// # Errors
    ///
    /// [`StoreError::UnknownView`] for a delta of an unconfigured view;
    /// [`StoreError::Mismatch`] when a delta is not of the view's kind or
    /// its epoch is one the served generation covers; sled errors. Nothing
    /// is applied on error.
    pub fn commit(&self, commit: MicroBatchCommit) -> Result<()> {
        // Commits are serialised: the epoch bookkeeping and the order of
        // micro-batch ids must follow the order of commits.
        let mut epochs = lock(&self.epochs);
        // A micro-batch in an epoch the served generation covers would be
        // dropped at the next publish or counted twice: a bug upstream.
        // Refusing keeps its records in the log, and the error says why.
        if let Some(w) = self.watermark()
            && commit.epoch <= w
        {
            return Err(StoreError::Mismatch {
                view: "*".into(),
                detail: format!(
                    "micro-batch {} is in epoch {}, which the served generation {w} already covers",
                    commit.batch_id, commit.epoch
                ),
            });
        }
        for (view, pairs) in &commit.deltas {
            let table = self.table(view)?;
            if let Some((_, bad)) = pairs.iter().find(|(_, v)| !fits(table, v)) {
                return Err(mismatch(view, table, bad));
            }
        }
        let has_deltas = commit.deltas.iter().any(|(_, p)| !p.is_empty());
        let blob = if has_deltas {
            Some(codec::encode_batch(&commit.deltas)?)
        } else {
            None
        };
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
        let row_key = keys::batch(commit.epoch, commit.batch_id);
        let state_row = (!commit.state.is_empty()).then(|| state::encode_log(&commit.state));
        (&self.meta, &self.log, &self.dead, &self.state_log)
            .transaction(|(meta, log, dead, state_log)| {
                if let Some(row) = &state_row {
                    state_log.insert(&commit.batch_id.to_be_bytes(), row.as_slice())?;
                }
                if let Some(blob) = &blob {
                    log.insert(&row_key, blob.as_slice())?;
                }
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
        if has_deltas {
            epochs.open.insert(commit.epoch);
        }
        epochs.last = epochs.last.max(Some(commit.epoch));
        for (view, pairs) in commit.deltas {
            let table = self.table(&view)?;
            with_table!(table, t => apply(t, &view, commit.epoch, pairs)?);
        }
        if state_row.is_some() {
            self.apply_state(commit.batch_id, commit.state)?;
        }
        drop(epochs);
        Ok(())
    }

    /// The merged answer for one key; `None` when the key has no data.
    ///
    /// # Errors
    ///
    /// [`StoreError::UnknownView`].
    pub fn get(&self, view: &str, key: &str) -> Result<Option<Answer>> {
        Ok(self.table(view)?.get(key))
    }

    /// The `k` keys with the largest merged value (by
    /// [`AggValue::scalar`]), largest first; ties by key.
    ///
    /// # Errors
    ///
    /// [`StoreError::UnknownView`].
    pub fn top(&self, view: &str, k: usize) -> Result<Vec<RankedItem>> {
        Ok(self.table(view)?.top(k))
    }

    /// Number of keys with data in a view.
    ///
    /// # Errors
    ///
    /// [`StoreError::UnknownView`].
    pub fn key_count(&self, view: &str) -> Result<usize> {
        Ok(self.table(view)?.len())
    }

    /// Bytes the in-memory tables of a view hold on the heap (an estimate
    /// from the capacities of their arrays).
    ///
    /// # Errors
    ///
    /// [`StoreError::UnknownView`].
    pub fn heap_bytes(&self, view: &str) -> Result<usize> {
        Ok(self.table(view)?.heap_bytes())
    }

    /// Bytes the state store takes on disk (sled's own figure).
    ///
    /// # Errors
    ///
    /// sled errors.
    pub fn disk_bytes(&self) -> Result<u64> {
        Ok(self.db.size_on_disk()?)
    }

    /// Makes everything committed so far durable, after compacting the
    /// closed epochs (see the module docs).
    ///
    /// # Errors
    ///
    /// sled errors.
    pub fn flush(&self) -> Result<()> {
        self.compact()?;
        self.fold_state()?;
        self.db.flush()?;
        Ok(())
    }

    /// Rewrites the micro-batch rows of every closed epoch as chunks of the
    /// epoch's per-key totals. Readers and commits go on meanwhile: a closed
    /// epoch receives nothing, and each shard is read under its lock only
    /// while its deltas are encoded.
    fn compact(&self) -> Result<()> {
        let _one = lock(&self.compacting);
        let todo: Vec<u64> = {
            let e = lock(&self.epochs);
            e.open
                .iter()
                .copied()
                .filter(|&ep| Some(ep) < e.last && !e.compacted.contains(&ep))
                .collect()
        };
        for epoch in todo {
            let started = Instant::now();
            let mut pairs = 0u64;
            for (name, table) in &self.tables {
                let mut list = PairList::default();
                let mut chunk = 0u32;
                for s in 0..SHARDS {
                    let mut failed = None;
                    table.each_delta(epoch, s, &mut |key, value| {
                        if failed.is_none()
                            && let Err(e) = list.push(key, &value)
                        {
                            failed = Some(e);
                        }
                    });
                    if let Some(e) = failed {
                        return Err(e);
                    }
                    if list.len() >= CHUNK_PAIRS || list.bytes() >= CHUNK_BYTES || s == SHARDS - 1 {
                        if list.len() == 0 {
                            continue;
                        }
                        pairs += list.len();
                        self.epoch_rows
                            .insert(keys::chunk(epoch, name, chunk), list.take())?;
                        chunk += 1;
                    }
                }
            }
            // The chunks are durable before the marker makes them the
            // epoch's deltas, and the marker before the rows go.
            self.db.flush()?;
            self.meta.insert(keys::compacted(epoch), &[])?;
            self.db.flush()?;
            let mut rows = 0u64;
            for row in self.log.scan_prefix(epoch.to_be_bytes()).keys() {
                self.log.remove(row?)?;
                rows += 1;
            }
            lock(&self.epochs).compacted.insert(epoch);
            info!(
                epoch,
                micro_batches = rows,
                keys = pairs,
                "state store: compacted a closed epoch in {:.0} ms",
                started.elapsed().as_secs_f64() * 1e3
            );
        }
        Ok(())
    }

    /// Deletes what generation `generation` made obsolete: other
    /// generations' chunks and everything of epochs `<= generation`.
    fn retire(&self, generation: u64) -> Result<()> {
        let _one = lock(&self.compacting);
        for row in self.gens.iter().keys() {
            let k = row?;
            if keys::leading_u64(&k) != generation {
                self.gens.remove(k)?;
            }
        }
        let through = (generation + 1).to_be_bytes();
        for tree in [&self.log, &self.epoch_rows] {
            for row in tree.range(..through.as_slice()).keys() {
                tree.remove(row?)?;
            }
        }
        for row in self.meta.scan_prefix(keys::COMPACTED_PREFIX).keys() {
            let k = row?;
            if keys::compacted_epoch(&k)? <= generation {
                self.meta.remove(k)?;
            }
        }
        Ok(())
    }
}

/// Adds one micro-batch's deltas of a view to its table, shard by shard:
/// each shard's write lock is held only for that shard's keys.
fn apply<V: table::Cell>(
    t: &ViewTable<V>,
    view: &str,
    epoch: u64,
    pairs: Vec<(String, AggValue)>,
) -> Result<()> {
    if pairs.is_empty() {
        return Ok(());
    }
    let mut groups: Vec<Vec<(u64, String, V)>> = (0..SHARDS).map(|_| Vec::new()).collect();
    for (key, value) in pairs {
        let hash = hash_key(key.as_bytes());
        // Checked by the caller before anything was written.
        if let Some(cell) = t.cell(value) {
            groups[shard_of(hash)].push((hash, key, cell));
        }
    }
    for (s, group) in groups.iter().enumerate() {
        if group.is_empty() {
            continue;
        }
        let mut shard = t.write(s);
        for (hash, key, cell) in group {
            shard.apply(*hash, key, epoch, cell).map_err(full(view))?;
        }
    }
    t.touched();
    Ok(())
}

/// A generation's batch values as they are built, by the view's value type.
impl ViewStore {
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

#[cfg(test)]
mod tests;

impl lamina_speed::commit::CommitSink for ViewStore {
    fn commit(&self, commit: MicroBatchCommit) -> std::result::Result<(), String> {
        ViewStore::commit(self, commit).map_err(|e| e.to_string())
    }

    fn position(&self, position: &Position) -> std::result::Result<Option<u64>, String> {
        ViewStore::position(self, position).map_err(|e| e.to_string())
    }

    fn last_batch_id(&self) -> std::result::Result<Option<u64>, String> {
        ViewStore::last_batch_id(self).map_err(|e| e.to_string())
    }

    fn positions_of(
        &self,
        family: &PositionKind,
    ) -> std::result::Result<Vec<(Position, u64)>, String> {
        ViewStore::positions_of(self, family).map_err(|e| e.to_string())
    }

    fn flush(&self) -> std::result::Result<(), String> {
        ViewStore::flush(self).map_err(|e| e.to_string())
    }
}
