//! The in-memory side of the view store: per view, every key's batch value
//! and real-time value, in shards that readers and the writer lock one at a
//! time and only briefly.
//!
//! # Layout of a shard
//!
//! A key is stored once, as bytes in the shard's arena, and named by a dense
//! `u32` id; a hash table of ids finds it. Values are columns indexed by id:
//! the batch value (the served generation) and the real-time value (the
//! deltas of every epoch after the watermark, combined). The deltas of each
//! open epoch are also kept per epoch, sparse, so that a publish can drop
//! the epochs it covers and the store can compact a closed epoch.
//!
//! A count view keeps its values as `i64`, every other view as [`AggValue`]
//! (see [`Cell`]); measured ~100 bytes of RSS per key for a count view at
//! 10M keys (`lamina bench keys`), against ~3 KB with a `String` + `Arc` +
//! ranking node per key and a sled row per key.
//!
//! # Consistency
//!
//! A key lives in exactly one shard, and every change to a key (a delta, a
//! publish) happens under that shard's write lock, together with the
//! shard's watermark. So a reader sees each key either before or after a
//! micro-batch or a publish, never half-way: no gap, no double count.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BinaryHeap};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use hashbrown::HashTable;
use lamina::partitioner::{FastMap, fast_map};
use lamina::view::{AggValue, AggregateKind};
use serde::Serialize;

/// Shards per view: enough that a micro-batch's writer holds any one lock
/// for a small slice of its work. The batch layer's parts (see
/// [`lamina::view::partials`]).
pub(super) const SHARDS: usize = lamina::view::partials::PARTS;

/// The merged answer for one key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Answer {
    /// `batch_value` ⊕ `realtime_value`.
    pub value: AggValue,
    /// The value in the served generation, if the key is in it.
    pub batch_value: Option<AggValue>,
    /// The sum of the deltas of epochs after the watermark, if any.
    pub realtime_value: Option<AggValue>,
    /// The served generation (epochs `<=` it are in `batch_value`).
    pub watermark_epoch: Option<u64>,
}

/// One entry of a top-k answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RankedItem {
    /// The key.
    pub key: String,
    /// Its merged value.
    pub value: AggValue,
}

/// A value as a column stores it.
pub(super) trait Cell: Clone + Send + Sync + 'static {
    /// The column form of a state; `None` when it is not of the view's kind.
    fn from_value(value: AggValue, kind: &AggregateKind) -> Option<Self>;
    /// Back to a state.
    fn to_value(&self) -> AggValue;
    /// `self ⊕= other`.
    fn combine(&mut self, other: &Self);
    /// The ranking score (see [`AggValue::scalar`]).
    fn scalar(&self) -> Option<f64>;
}

impl Cell for i64 {
    fn from_value(value: AggValue, _: &AggregateKind) -> Option<Self> {
        match value {
            AggValue::Count(c) => Some(c),
            _ => None,
        }
    }
    fn to_value(&self) -> AggValue {
        AggValue::Count(*self)
    }
    fn combine(&mut self, other: &Self) {
        *self = self.wrapping_add(*other);
    }
    fn scalar(&self) -> Option<f64> {
        Some(*self as f64)
    }
}

impl Cell for AggValue {
    fn from_value(value: AggValue, kind: &AggregateKind) -> Option<Self> {
        (value.kind() == *kind).then_some(value)
    }
    fn to_value(&self) -> AggValue {
        self.clone()
    }
    fn combine(&mut self, other: &Self) {
        // Kinds were checked when the value entered the store.
        let _ = AggValue::combine(self, other);
    }
    fn scalar(&self) -> Option<f64> {
        AggValue::scalar(self)
    }
}

/// The hash a key is stored under: the one the batch layer's partials
/// carry ([`lamina::view::partials::key_hash`]).
pub(super) fn hash_key(key: &[u8]) -> u64 {
    lamina::view::partials::key_hash(key)
}

/// The shard of a hash: the batch layer's part of it, so that a part of a
/// task's partials merges into one shard.
pub(super) fn shard_of(hash: u64) -> usize {
    lamina::view::partials::part_of(hash)
}

/// Why a key could not be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct ShardFull;

/// Keys, stored once.
#[derive(Default)]
struct KeyDict {
    arena: Vec<u8>,
    /// Where key `id` starts in the arena; it ends where the next starts.
    starts: Vec<u32>,
    /// Key ids, by the key's hash.
    table: HashTable<u32>,
}

fn key_in<'a>(arena: &'a [u8], starts: &[u32], id: u32) -> &'a [u8] {
    let i = id as usize;
    let from = starts[i] as usize;
    let to = starts.get(i + 1).map_or(arena.len(), |&e| e as usize);
    &arena[from..to]
}

impl KeyDict {
    fn len(&self) -> usize {
        self.starts.len()
    }

    fn key(&self, id: u32) -> &[u8] {
        key_in(&self.arena, &self.starts, id)
    }

    fn find(&self, hash: u64, key: &[u8]) -> Option<u32> {
        self.table
            .find(hash, |&id| key_in(&self.arena, &self.starts, id) == key)
            .copied()
    }

    fn intern(&mut self, hash: u64, key: &[u8]) -> Result<u32, ShardFull> {
        if let Some(id) = self.find(hash, key) {
            return Ok(id);
        }
        let id = u32::try_from(self.starts.len()).map_err(|_| ShardFull)?;
        let start = u32::try_from(self.arena.len()).map_err(|_| ShardFull)?;
        if self.arena.len() + key.len() > u32::MAX as usize {
            return Err(ShardFull);
        }
        self.arena.extend_from_slice(key);
        self.starts.push(start);
        let KeyDict {
            arena,
            starts,
            table,
        } = self;
        table.insert_unique(hash, id, |&i| hash_key(key_in(arena, starts, i)));
        Ok(id)
    }

    fn heap_bytes(&self) -> usize {
        self.arena.capacity() + self.starts.capacity() * 4 + self.table.capacity() * 5
    }
}

fn slot<V>(column: &mut Vec<Option<V>>, id: u32) -> &mut Option<V> {
    let i = id as usize;
    if column.len() <= i {
        column.resize_with(i + 1, || None);
    }
    &mut column[i]
}

fn add<V: Cell>(into: &mut Option<V>, delta: &V) {
    match into {
        Some(v) => v.combine(delta),
        None => *into = Some(delta.clone()),
    }
}

/// One shard of a view.
pub(super) struct Shard<V> {
    keys: KeyDict,
    batch: Vec<Option<V>>,
    realtime: Vec<Option<V>>,
    /// Deltas of each epoch after the watermark, by key id.
    epochs: BTreeMap<u64, FastMap<u32, V>>,
    watermark: Option<u64>,
    /// Keys with a batch or a real-time value.
    live: usize,
}

impl<V: Cell> Shard<V> {
    fn new(watermark: Option<u64>) -> Self {
        Shard {
            keys: KeyDict::default(),
            batch: Vec::new(),
            realtime: Vec::new(),
            epochs: BTreeMap::new(),
            watermark,
            live: 0,
        }
    }

    fn is_live(&self, id: u32) -> bool {
        let i = id as usize;
        matches!(self.batch.get(i), Some(Some(_))) || matches!(self.realtime.get(i), Some(Some(_)))
    }

    /// Adds a delta of `epoch` to a key.
    pub(super) fn apply(
        &mut self,
        hash: u64,
        key: &str,
        epoch: u64,
        delta: &V,
    ) -> Result<(), ShardFull> {
        let id = self.keys.intern(hash, key.as_bytes())?;
        if !self.is_live(id) {
            self.live += 1;
        }
        add(slot(&mut self.realtime, id), delta);
        match self
            .epochs
            .entry(epoch)
            .or_insert_with(|| fast_map(0))
            .entry(id)
        {
            hashbrown::hash_map::Entry::Occupied(mut e) => e.get_mut().combine(delta),
            hashbrown::hash_map::Entry::Vacant(e) => {
                e.insert(delta.clone());
            }
        }
        Ok(())
    }

    /// Loading: sets a key's batch value (combined, should a key repeat).
    pub(super) fn load_batch(&mut self, hash: u64, key: &str, value: &V) -> Result<(), ShardFull> {
        let id = self.keys.intern(hash, key.as_bytes())?;
        if !self.is_live(id) {
            self.live += 1;
        }
        add(slot(&mut self.batch, id), value);
        Ok(())
    }

    /// Publishing: the id of a key, added without a value if it is new.
    fn intern(&mut self, hash: u64, key: &str) -> Result<u32, ShardFull> {
        self.keys.intern(hash, key.as_bytes())
    }

    /// Publishing generation `watermark`: new batch values, deltas of epochs
    /// `<= watermark` dropped and the real-time values recomputed from the
    /// epochs after it.
    fn replace_batch(&mut self, mut batch: Vec<Option<V>>, watermark: u64) {
        batch.resize_with(self.keys.len(), || None);
        self.batch = batch;
        self.epochs.retain(|&e, _| e > watermark);
        self.realtime.clear();
        self.realtime.resize_with(self.keys.len(), || None);
        for deltas in self.epochs.values() {
            for (&id, d) in deltas {
                add(&mut self.realtime[id as usize], d);
            }
        }
        self.watermark = Some(watermark);
        self.live = (0..self.keys.len() as u32)
            .filter(|&id| self.is_live(id))
            .count();
    }

    fn answer(&self, hash: u64, key: &str) -> Option<Answer> {
        let id = self.keys.find(hash, key.as_bytes())? as usize;
        let batch = self.batch.get(id).and_then(Option::as_ref);
        let realtime = self.realtime.get(id).and_then(Option::as_ref);
        let value = merged(batch, realtime)?;
        Some(Answer {
            value: value.to_value(),
            batch_value: batch.map(Cell::to_value),
            realtime_value: realtime.map(Cell::to_value),
            watermark_epoch: self.watermark,
        })
    }

    /// Calls `f(key, value)` for every delta of `epoch`.
    fn each_delta(&self, epoch: u64, f: &mut dyn FnMut(&str, &V)) {
        if let Some(deltas) = self.epochs.get(&epoch) {
            for (&id, v) in deltas {
                // Keys were UTF-8 when they came in.
                f(std::str::from_utf8(self.keys.key(id)).unwrap_or(""), v);
            }
        }
    }

    fn heap_bytes(&self) -> usize {
        let per = std::mem::size_of::<Option<V>>();
        let epoch_bytes: usize = self
            .epochs
            .values()
            .map(|m| m.capacity() * (4 + std::mem::size_of::<V>() + 1))
            .sum();
        self.keys.heap_bytes()
            + (self.batch.capacity() + self.realtime.capacity()) * per
            + epoch_bytes
    }
}

fn merged<V: Cell>(batch: Option<&V>, realtime: Option<&V>) -> Option<V> {
    match (batch, realtime) {
        (Some(b), Some(r)) => {
            let mut m = b.clone();
            m.combine(r);
            Some(m)
        }
        (Some(v), None) | (None, Some(v)) => Some(v.clone()),
        (None, None) => None,
    }
}

/// Ranking order: larger score first, then key. The heap keeps the `k`
/// best with the worst on top, so `Ord` puts better entries lower.
struct Ranked {
    score: f64,
    key: Vec<u8>,
    value: AggValue,
}

impl Ranked {
    fn order(score: f64, key: &[u8], other_score: f64, other_key: &[u8]) -> Ordering {
        other_score
            .total_cmp(&score)
            .then_with(|| key.cmp(other_key))
    }
}

impl PartialEq for Ranked {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Ranked {}
impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Ranked {
    fn cmp(&self, other: &Self) -> Ordering {
        Ranked::order(self.score, &self.key, other.score, &other.key)
    }
}

/// A computed top-k answer and the version of the view it was computed at.
struct TopCache {
    version: u64,
    k: usize,
    items: Vec<RankedItem>,
}

/// One view: its shards, the kind of its values, and a version that moves
/// with every change (for caching top-k answers).
pub(super) struct ViewTable<V> {
    pub(super) kind: AggregateKind,
    shards: Box<[RwLock<Shard<V>>]>,
    version: std::sync::atomic::AtomicU64,
    top: Mutex<Option<TopCache>>,
}

impl<V: Cell> ViewTable<V> {
    fn new(kind: AggregateKind, watermark: Option<u64>) -> Self {
        ViewTable {
            kind,
            shards: (0..SHARDS)
                .map(|_| RwLock::new(Shard::new(watermark)))
                .collect(),
            version: Default::default(),
            top: Mutex::new(None),
        }
    }

    fn read(&self, shard: usize) -> RwLockReadGuard<'_, Shard<V>> {
        // A panic under the lock leaves at worst one key half-updated by
        // `apply`, whose two assignments cannot panic between them.
        self.shards[shard].read().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn write(&self, shard: usize) -> RwLockWriteGuard<'_, Shard<V>> {
        self.shards[shard]
            .write()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Exclusive access while the store is being opened.
    pub(super) fn shard_mut(&mut self, shard: usize) -> &mut Shard<V> {
        self.shards[shard]
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn cell(&self, value: AggValue) -> Option<V> {
        V::from_value(value, &self.kind)
    }

    pub(super) fn touched(&self) {
        self.version
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    fn get(&self, key: &str) -> Option<Answer> {
        let hash = hash_key(key.as_bytes());
        self.read(shard_of(hash)).answer(hash, key)
    }

    fn len(&self) -> usize {
        (0..SHARDS).map(|s| self.read(s).live).sum()
    }

    fn heap_bytes(&self) -> usize {
        (0..SHARDS).map(|s| self.read(s).heap_bytes()).sum()
    }

    /// The `k` best keys, from a scan of every shard (cached until the view
    /// changes). Each shard is read under its own lock, so the answer may
    /// mix values from before and after a concurrent micro-batch; each
    /// value is a true merged value of its key.
    fn top(&self, k: usize) -> Vec<RankedItem> {
        let version = self.version.load(std::sync::atomic::Ordering::Acquire);
        {
            let cache = self.top.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(c) = cache.as_ref()
                && c.version == version
                && c.k >= k
            {
                return c.items.iter().take(k).cloned().collect();
            }
        }
        let mut heap: BinaryHeap<Ranked> = BinaryHeap::with_capacity(k + 1);
        for s in 0..SHARDS {
            let shard = self.read(s);
            for id in 0..shard.keys.len() {
                let b = shard.batch.get(id).and_then(Option::as_ref);
                let r = shard.realtime.get(id).and_then(Option::as_ref);
                let Some(value) = merged(b, r) else { continue };
                let Some(score) = value.scalar() else {
                    continue;
                };
                let key = shard.keys.key(id as u32);
                if heap.len() >= k
                    && heap.peek().is_some_and(|worst| {
                        Ranked::order(score, key, worst.score, &worst.key) != Ordering::Less
                    })
                {
                    continue;
                }
                heap.push(Ranked {
                    score,
                    key: key.to_vec(),
                    value: value.to_value(),
                });
                if heap.len() > k {
                    heap.pop();
                }
            }
        }
        let items: Vec<RankedItem> = heap
            .into_sorted_vec()
            .into_iter()
            .map(|r| RankedItem {
                key: String::from_utf8_lossy(&r.key).into_owned(),
                value: r.value,
            })
            .collect();
        let mut cache = self.top.lock().unwrap_or_else(|p| p.into_inner());
        *cache = Some(TopCache {
            version,
            k,
            items: items.clone(),
        });
        items
    }
}

/// A view's table, by the type its values are stored as.
pub(super) enum Table {
    /// `count`: values as `i64`.
    Count(ViewTable<i64>),
    /// Every other aggregate.
    Any(ViewTable<AggValue>),
}

/// Runs `$body` with `$t` bound to the typed table.
macro_rules! with_table {
    ($table:expr, $t:ident => $body:expr) => {
        match $table {
            $crate::store::table::Table::Count($t) => $body,
            $crate::store::table::Table::Any($t) => $body,
        }
    };
}
pub(super) use with_table;

impl Table {
    pub(super) fn new(kind: AggregateKind, watermark: Option<u64>) -> Self {
        match kind {
            AggregateKind::Count => Table::Count(ViewTable::new(kind, watermark)),
            other => Table::Any(ViewTable::new(other, watermark)),
        }
    }

    pub(super) fn kind(&self) -> &AggregateKind {
        with_table!(self, t => &t.kind)
    }

    pub(super) fn get(&self, key: &str) -> Option<Answer> {
        with_table!(self, t => t.get(key))
    }

    pub(super) fn top(&self, k: usize) -> Vec<RankedItem> {
        with_table!(self, t => t.top(k))
    }

    pub(super) fn len(&self) -> usize {
        with_table!(self, t => t.len())
    }

    pub(super) fn heap_bytes(&self) -> usize {
        with_table!(self, t => t.heap_bytes())
    }

    /// Calls `f(key, value)` for every delta of `epoch` in one shard,
    /// under that shard's read lock.
    pub(super) fn each_delta(&self, epoch: u64, shard: usize, f: &mut dyn FnMut(&str, AggValue)) {
        with_table!(self, t => t.read(shard).each_delta(epoch, &mut |k, v| f(k, v.to_value())))
    }
}

/// A new generation of one view being built: batch columns per shard,
/// aligned with the shards' key ids. Shards are built independently, each
/// under its own lock, so engine workers merge different shards at once.
pub(super) struct GenBuilder<V> {
    columns: Vec<Mutex<Vec<Option<V>>>>,
}

impl<V: Cell> GenBuilder<V> {
    pub(super) fn new() -> Self {
        GenBuilder {
            columns: (0..SHARDS).map(|_| Mutex::new(Vec::new())).collect(),
        }
    }

    /// The column of shard `s`, locked.
    fn column(&self, s: usize) -> std::sync::MutexGuard<'_, Vec<Option<V>>> {
        self.columns[s].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The column of shard `s`, locked; `None` while another worker holds
    /// it.
    fn try_column(&self, s: usize) -> Option<std::sync::MutexGuard<'_, Vec<Option<V>>>> {
        match self.columns[s].try_lock() {
            Ok(c) => Some(c),
            Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }
    }

    /// Adds `(hash, key, value)` entries of shard `s` (each `hash` is
    /// [`hash_key`] of its key, and its shard is `s`), combined with what
    /// was added for each key before. The key is interned in the served
    /// shard (without a value) under its write lock.
    pub(super) fn add_shard<'k>(
        &self,
        table: &ViewTable<V>,
        s: usize,
        entries: impl Iterator<Item = ((u64, &'k str), V)>,
    ) -> Result<(), ShardFull> {
        let mut column = self.column(s);
        self.add_locked(table, s, &mut column, entries)
    }

    fn add_locked<'k>(
        &self,
        table: &ViewTable<V>,
        s: usize,
        column: &mut Vec<Option<V>>,
        entries: impl Iterator<Item = ((u64, &'k str), V)>,
    ) -> Result<(), ShardFull> {
        let mut shard = table.write(s);
        for ((hash, key), value) in entries {
            debug_assert_eq!(shard_of(hash), s);
            let id = shard.intern(hash, key)?;
            match slot(column, id) {
                Some(v) => v.combine(&value),
                none => *none = Some(value),
            }
        }
        Ok(())
    }

    /// Adds many shards' entries: `parts` yields `(shard, entries)`. A
    /// shard another worker is adding to is done after the others, so two
    /// workers rarely wait for each other.
    pub(super) fn add_parts<'k, I>(
        &self,
        table: &ViewTable<V>,
        parts: Vec<(usize, I)>,
    ) -> Result<(), ShardFull>
    where
        I: Iterator<Item = ((u64, &'k str), V)>,
    {
        let mut deferred = Vec::new();
        for (s, entries) in parts {
            match self.try_column(s) {
                Some(mut column) => self.add_locked(table, s, &mut column, entries)?,
                None => deferred.push((s, entries)),
            }
        }
        for (s, entries) in deferred {
            self.add_shard(table, s, entries)?;
        }
        Ok(())
    }

    /// Calls `f(key, value)` for every value built for shard `s`, under the
    /// shard's read lock.
    pub(super) fn each(&self, table: &ViewTable<V>, s: usize, f: &mut dyn FnMut(&str, &V)) {
        let column = self.column(s);
        let shard = table.read(s);
        for (id, value) in column.iter().enumerate() {
            if let Some(v) = value {
                // Keys were UTF-8 when they came in.
                f(
                    std::str::from_utf8(shard.keys.key(id as u32)).unwrap_or(""),
                    v,
                );
            }
        }
    }

    /// Swaps the new batch values in, shard by shard (the builder is
    /// empty afterwards).
    pub(super) fn publish(&self, table: &ViewTable<V>, watermark: u64) {
        for s in 0..SHARDS {
            let column = std::mem::take(&mut *self.column(s));
            table.write(s).replace_batch(column, watermark);
        }
        table.touched();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stored_once_and_found_again() {
        let mut d = KeyDict::default();
        let words: Vec<String> = (0..10_000).map(|i| format!("w{i}")).collect();
        for (i, w) in words.iter().enumerate() {
            let h = hash_key(w.as_bytes());
            assert_eq!(d.intern(h, w.as_bytes()), Ok(i as u32));
        }
        for (i, w) in words.iter().enumerate() {
            let h = hash_key(w.as_bytes());
            assert_eq!(d.find(h, w.as_bytes()), Some(i as u32));
            assert_eq!(d.intern(h, w.as_bytes()), Ok(i as u32));
            assert_eq!(d.key(i as u32), w.as_bytes());
        }
        assert_eq!(d.find(hash_key(b"nope"), b"nope"), None);
        let empty = hash_key(b"");
        let id = d.intern(empty, b"").unwrap();
        assert_eq!(d.key(id), b"");
    }

    #[test]
    fn shards_spread_keys() {
        let mut per = [0usize; SHARDS];
        for i in 0..64_000 {
            per[shard_of(hash_key(format!("k{i}").as_bytes()))] += 1;
        }
        assert!(per.iter().all(|&n| (700..1300).contains(&n)), "{per:?}");
    }

    fn add(g: &GenBuilder<i64>, t: &ViewTable<i64>, key: &str, value: i64) {
        let h = hash_key(key.as_bytes());
        g.add_shard(t, shard_of(h), std::iter::once(((h, key), value)))
            .unwrap();
    }

    #[test]
    fn publish_keeps_later_epochs_and_drops_covered_ones() {
        let t: ViewTable<i64> = ViewTable::new(AggregateKind::Count, None);
        let h = hash_key(b"a");
        let s = shard_of(h);
        t.write(s).apply(h, "a", 1, &2).unwrap();
        t.write(s).apply(h, "a", 2, &3).unwrap();
        assert_eq!(t.get("a").unwrap().value, AggValue::Count(5));
        let g = GenBuilder::new();
        add(&g, &t, "a", 2);
        add(&g, &t, "b", 7);
        g.publish(&t, 1);
        let a = t.get("a").unwrap();
        assert_eq!(
            (a.value, a.batch_value, a.realtime_value, a.watermark_epoch),
            (
                AggValue::Count(5),
                Some(AggValue::Count(2)),
                Some(AggValue::Count(3)),
                Some(1)
            )
        );
        assert_eq!(t.len(), 2);
        let top: Vec<String> = t.top(5).into_iter().map(|i| i.key).collect();
        assert_eq!(top, ["b", "a"]);
        // A generation without `b` retires it.
        let g = GenBuilder::new();
        add(&g, &t, "a", 5);
        g.publish(&t, 2);
        assert_eq!(t.len(), 1);
        assert!(t.get("b").is_none());
        assert_eq!(t.get("a").unwrap().realtime_value, None);
    }
}
