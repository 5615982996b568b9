//! The in-memory side of the view store: per view and key, the batch value
//! and the deltas of epochs after the watermark, plus a ranking for top-k.

use std::cmp::Ordering;
use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use lamina::partitioner::{FastMap, fast_map};
use lamina::view::AggValue;
use serde::Serialize;

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

pub(super) struct Index {
    pub(super) watermark: Option<u64>,
    pub(super) views: HashMap<String, ViewIndex>,
}

impl Index {
    pub(super) fn new(watermark: Option<u64>, views: &[String]) -> Self {
        Index {
            watermark,
            views: views
                .iter()
                .map(|v| (v.clone(), ViewIndex::default()))
                .collect(),
        }
    }
}

#[derive(Default)]
struct KeyState {
    batch: Option<AggValue>,
    /// Deltas of epochs after the watermark, sorted by epoch.
    realtime: Vec<(u64, AggValue)>,
}

impl KeyState {
    fn is_empty(&self) -> bool {
        self.batch.is_none() && self.realtime.is_empty()
    }

    fn realtime_sum(&self) -> Option<AggValue> {
        let mut it = self.realtime.iter().map(|(_, v)| v);
        let mut acc = it.next()?.clone();
        for v in it {
            // Deltas of one key share the view's aggregate kind; a mismatch
            // was refused at commit.
            let _ = acc.combine(v);
        }
        Some(acc)
    }

    fn merged(&self) -> Option<AggValue> {
        match (&self.batch, self.realtime_sum()) {
            (Some(b), Some(r)) => {
                let mut m = b.clone();
                let _ = m.combine(&r);
                Some(m)
            }
            (Some(b), None) => Some(b.clone()),
            (None, r) => r,
        }
    }
}

/// Ranking order: larger score first, then key; keys without a scalar
/// (top-k aggregates) are not ranked.
#[derive(Clone, PartialEq)]
struct Rank(f64, Arc<str>);

impl Eq for Rank {}

impl PartialOrd for Rank {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Rank {
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .0
            .total_cmp(&self.0)
            .then_with(|| self.1.cmp(&other.1))
    }
}

#[derive(Default)]
pub(super) struct ViewIndex {
    keys: FastMap<Arc<str>, KeyState>,
    /// Every key's merged score, for top-k without sorting per query.
    ranking: BTreeSet<Rank>,
    scores: FastMap<Arc<str>, f64>,
}

impl ViewIndex {
    pub(super) fn len(&self) -> usize {
        self.keys.len()
    }

    fn intern(&mut self, key: &str) -> Arc<str> {
        match self.keys.get_key_value(key) {
            Some((k, _)) => Arc::clone(k),
            None => {
                let k: Arc<str> = Arc::from(key);
                self.keys.insert(Arc::clone(&k), KeyState::default());
                k
            }
        }
    }

    /// Loading: sets a key's batch value (ranking rebuilt afterwards).
    pub(super) fn set_batch(&mut self, key: &str, value: AggValue) {
        let k = self.intern(key);
        if let Some(s) = self.keys.get_mut(&k) {
            s.batch = Some(value);
        }
    }

    /// Loading: sets a key's delta of one epoch (ranking rebuilt afterwards).
    pub(super) fn set_delta(&mut self, key: &str, epoch: u64, value: AggValue) {
        let k = self.intern(key);
        if let Some(s) = self.keys.get_mut(&k) {
            insert_sorted(&mut s.realtime, epoch, value);
        }
    }

    pub(super) fn rebuild_ranking(&mut self) {
        self.ranking.clear();
        self.scores.clear();
        let keys: Vec<Arc<str>> = self.keys.keys().cloned().collect();
        for k in keys {
            self.rerank(&k);
        }
    }

    fn rerank(&mut self, key: &Arc<str>) {
        if let Some(old) = self.scores.remove(key) {
            self.ranking.remove(&Rank(old, Arc::clone(key)));
        }
        let score = self
            .keys
            .get(key)
            .and_then(KeyState::merged)
            .and_then(|m| m.scalar());
        if let Some(s) = score {
            self.scores.insert(Arc::clone(key), s);
            self.ranking.insert(Rank(s, Arc::clone(key)));
        }
    }

    /// The new value of `key`'s delta in `epoch` after adding `delta`: what a
    /// commit writes. Does not change the index.
    pub(super) fn merged_delta(
        &self,
        key: &str,
        epoch: u64,
        delta: &AggValue,
    ) -> Result<(Arc<str>, AggValue), String> {
        let (k, existing) = match self.keys.get_key_value(key) {
            Some((k, s)) => (
                Arc::clone(k),
                s.realtime.iter().find(|(e, _)| *e == epoch).map(|(_, v)| v),
            ),
            None => (Arc::from(key), None),
        };
        let mut merged = match existing {
            Some(v) => v.clone(),
            None => return Ok((k, delta.clone())),
        };
        merged.combine(delta).map_err(|e| e.to_string())?;
        Ok((k, merged))
    }

    /// Applies a committed delta (the epoch's new total for the key).
    pub(super) fn put_delta(&mut self, key: Arc<str>, epoch: u64, value: AggValue) {
        let state = self.keys.entry(Arc::clone(&key)).or_default();
        insert_sorted(&mut state.realtime, epoch, value);
        self.rerank(&key);
    }

    /// Publishing generation `watermark`: new batch values, deltas of epochs
    /// `<= watermark` dropped.
    pub(super) fn replace_batch(&mut self, fresh: Vec<(String, AggValue)>, watermark: u64) {
        let mut fresh_map: FastMap<Arc<str>, AggValue> = fast_map(fresh.len());
        for (k, v) in fresh {
            fresh_map.insert(Arc::from(k), v);
        }
        let mut changed: Vec<Arc<str>> = Vec::new();
        self.keys.retain(|k, s| {
            s.batch = fresh_map.remove(k);
            s.realtime.retain(|(e, _)| *e > watermark);
            changed.push(Arc::clone(k));
            !s.is_empty()
        });
        for (k, v) in fresh_map {
            self.keys.insert(
                Arc::clone(&k),
                KeyState {
                    batch: Some(v),
                    realtime: Vec::new(),
                },
            );
            changed.push(k);
        }
        for k in changed {
            self.rerank(&k);
        }
    }

    pub(super) fn answer(&self, key: &str, watermark: Option<u64>) -> Option<Answer> {
        let s = self.keys.get(key)?;
        Some(Answer {
            value: s.merged()?,
            batch_value: s.batch.clone(),
            realtime_value: s.realtime_sum(),
            watermark_epoch: watermark,
        })
    }

    pub(super) fn top(&self, k: usize) -> Vec<RankedItem> {
        self.ranking
            .iter()
            .take(k)
            .filter_map(|Rank(_, key)| {
                let value = self.keys.get(key)?.merged()?;
                Some(RankedItem {
                    key: key.to_string(),
                    value,
                })
            })
            .collect()
    }
}

fn insert_sorted(list: &mut Vec<(u64, AggValue)>, epoch: u64, value: AggValue) {
    match list.binary_search_by_key(&epoch, |(e, _)| *e) {
        Ok(i) => list[i].1 = value,
        Err(i) => list.insert(i, (epoch, value)),
    }
}
