//! The partition cache behind [`Rdd::cache`](crate::Rdd::cache).
//!
//! Computed partitions are kept in memory up to a byte budget; the least
//! recently used ones are evicted first. An evicted partition is not an
//! error: the next task that needs it recomputes it from lineage.

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use crate::rdd::RddId;

type Entry = Arc<dyn Any + Send + Sync>;

/// A byte-bounded LRU map from `(dataset, partition)` to computed partitions.
pub struct PartitionCache {
    capacity_bytes: usize,
    // A std mutex: sections are map updates only, never I/O or user code.
    state: Mutex<CacheState>,
}

#[derive(Default)]
struct CacheState {
    entries: HashMap<(RddId, usize), (Entry, usize, u64)>,
    /// Last-use tick -> key, for finding the least recently used entry.
    by_use: BTreeMap<u64, (RddId, usize)>,
    tick: u64,
    used_bytes: usize,
    hits: u64,
    misses: u64,
    evictions: u64,
}

/// Counters of a [`PartitionCache`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    /// Partitions currently cached.
    pub partitions: usize,
    /// Estimated bytes currently cached.
    pub used_bytes: usize,
    /// Lookups that found their partition.
    pub hits: u64,
    /// Lookups that did not.
    pub misses: u64,
    /// Partitions evicted to stay within the budget.
    pub evictions: u64,
}

impl fmt::Debug for PartitionCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PartitionCache")
            .field("capacity_bytes", &self.capacity_bytes)
            .field("stats", &self.stats())
            .finish()
    }
}

impl PartitionCache {
    pub(crate) fn new(capacity_bytes: usize) -> Self {
        PartitionCache {
            capacity_bytes,
            state: Mutex::new(CacheState::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        // Every section leaves the state consistent before it can panic.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn get<T: Send + Sync + 'static>(
        &self,
        rdd: RddId,
        partition: usize,
    ) -> Option<Arc<Vec<T>>> {
        let mut state = self.lock();
        let state = &mut *state;
        state.tick += 1;
        let tick = state.tick;
        let Some((entry, _, last_use)) = state.entries.get_mut(&(rdd, partition)) else {
            state.misses += 1;
            return None;
        };
        state.by_use.remove(last_use);
        *last_use = tick;
        state.by_use.insert(tick, (rdd, partition));
        state.hits += 1;
        Arc::clone(entry).downcast::<Vec<T>>().ok()
    }

    pub(crate) fn put<T: Send + Sync + 'static>(
        &self,
        rdd: RddId,
        partition: usize,
        data: Arc<Vec<T>>,
    ) {
        let bytes = data.len() * std::mem::size_of::<T>();
        if bytes > self.capacity_bytes {
            return;
        }
        let mut state = self.lock();
        Self::remove_locked(&mut state, rdd, partition);
        while state.used_bytes + bytes > self.capacity_bytes {
            let Some((_, victim)) = state.by_use.pop_first() else {
                break;
            };
            if let Some((_, size, _)) = state.entries.remove(&victim) {
                state.used_bytes -= size;
                state.evictions += 1;
            }
        }
        state.tick += 1;
        let tick = state.tick;
        state.by_use.insert(tick, (rdd, partition));
        state.entries.insert((rdd, partition), (data, bytes, tick));
        state.used_bytes += bytes;
    }

    fn remove_locked(state: &mut CacheState, rdd: RddId, partition: usize) -> bool {
        match state.entries.remove(&(rdd, partition)) {
            Some((_, size, last_use)) => {
                state.by_use.remove(&last_use);
                state.used_bytes -= size;
                true
            }
            None => false,
        }
    }

    /// Drops one cached partition; returns whether it was cached. The next
    /// use recomputes it from lineage.
    pub fn evict(&self, rdd: RddId, partition: usize) -> bool {
        let mut state = self.lock();
        let removed = Self::remove_locked(&mut state, rdd, partition);
        if removed {
            state.evictions += 1;
        }
        removed
    }

    /// Drops every cached partition of a dataset.
    pub fn evict_rdd(&self, rdd: RddId) {
        let mut state = self.lock();
        let keys: Vec<_> = state
            .entries
            .keys()
            .filter(|(r, _)| *r == rdd)
            .copied()
            .collect();
        for (r, p) in keys {
            Self::remove_locked(&mut state, r, p);
        }
    }

    /// Current counters.
    pub fn stats(&self) -> CacheStats {
        let state = self.lock();
        CacheStats {
            partitions: state.entries.len(),
            used_bytes: state.used_bytes,
            hits: state.hits,
            misses: state.misses,
            evictions: state.evictions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evicts_least_recently_used_within_budget() {
        // Room for two partitions of 10 u64s.
        let cache = PartitionCache::new(160);
        cache.put(1, 0, Arc::new(vec![0u64; 10]));
        cache.put(1, 1, Arc::new(vec![1u64; 10]));
        assert!(cache.get::<u64>(1, 0).is_some()); // 0 is now the most recent
        cache.put(1, 2, Arc::new(vec![2u64; 10]));
        assert!(
            cache.get::<u64>(1, 1).is_none(),
            "1 was least recently used"
        );
        assert!(cache.get::<u64>(1, 0).is_some());
        assert!(cache.get::<u64>(1, 2).is_some());
        let stats = cache.stats();
        assert_eq!(stats.partitions, 2);
        assert_eq!(stats.used_bytes, 160);
        assert_eq!(stats.evictions, 1);
    }

    #[test]
    fn oversized_partition_is_not_cached() {
        let cache = PartitionCache::new(8);
        cache.put(1, 0, Arc::new(vec![0u64; 2]));
        assert!(cache.get::<u64>(1, 0).is_none());
    }

    #[test]
    fn explicit_eviction() {
        let cache = PartitionCache::new(1 << 20);
        cache.put(3, 0, Arc::new(vec![1u8]));
        cache.put(3, 1, Arc::new(vec![1u8]));
        assert!(cache.evict(3, 0));
        assert!(!cache.evict(3, 0));
        cache.evict_rdd(3);
        assert_eq!(cache.stats().partitions, 0);
        assert_eq!(cache.stats().used_bytes, 0);
    }
}
