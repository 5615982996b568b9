//! Partitioners: which reduce partition a key goes to.

use std::hash::{BuildHasher, Hash};
use std::sync::OnceLock;

/// Maps keys to partitions `0..num_partitions()`.
///
/// Must be deterministic: a recomputed map task has to send every key to the
/// same partition as the first attempt did.
pub trait Partitioner<K>: Send + Sync {
    /// Number of partitions keys are spread over.
    fn num_partitions(&self) -> usize;
    /// The partition of `key`, in `0..num_partitions()`.
    fn partition(&self, key: &K) -> usize;
}

/// The hasher every engine-internal hash map and partitioner uses: fast and
/// seeded with a constant so that partitioning is the same in every process
/// and every run (a restarted job must place keys where the first run did).
pub type FixedHasher = foldhash::fast::FixedState;

/// A hash map with the engine's fixed fast hasher.
pub type FastMap<K, V> = hashbrown::HashMap<K, V, FixedHasher>;

/// An empty [`FastMap`] with room for `capacity` entries.
pub fn fast_map<K, V>(capacity: usize) -> FastMap<K, V> {
    FastMap::with_capacity_and_hasher(capacity, FixedHasher::with_seed(0x1a31_4a7e))
}

/// Spreads keys by hash. The default for wide transformations.
#[derive(Debug, Clone)]
pub struct HashPartitioner {
    partitions: usize,
    hasher: FixedHasher,
}

impl HashPartitioner {
    /// A partitioner over `partitions` partitions (at least one).
    pub fn new(partitions: usize) -> Self {
        HashPartitioner {
            partitions: partitions.max(1),
            // A different seed from the hash maps: with the same seed, every
            // key of one reduce partition would share its low hash bits and
            // crowd the buckets of the maps built from it.
            hasher: FixedHasher::with_seed(0x005e_ed0f_1a31),
        }
    }
}

impl<K: Hash> Partitioner<K> for HashPartitioner {
    fn num_partitions(&self) -> usize {
        self.partitions
    }

    fn partition(&self, key: &K) -> usize {
        // Multiply-shift maps the hash uniformly onto the range without a
        // division.
        let h = self.hasher.hash_one(key);
        ((u128::from(h) * self.partitions as u128) >> 64) as usize
    }
}

/// Sends key `k` to partition `k % n`: for data that is already keyed by a
/// partition number (used by `repartition`).
#[derive(Debug, Clone)]
pub struct ModuloPartitioner {
    partitions: usize,
}

impl ModuloPartitioner {
    /// A partitioner over `partitions` partitions (at least one).
    pub fn new(partitions: usize) -> Self {
        ModuloPartitioner {
            partitions: partitions.max(1),
        }
    }
}

impl Partitioner<usize> for ModuloPartitioner {
    fn num_partitions(&self) -> usize {
        self.partitions
    }

    fn partition(&self, key: &usize) -> usize {
        key % self.partitions
    }
}

/// Splits an ordered key space into contiguous ranges, so that partition `i`
/// holds only keys smaller than those of partition `i + 1` (reversed when
/// descending). Used by `sort_by_key`.
///
/// The range bounds are chosen from a sample of the data, taken by a job that
/// the scheduler runs before the shuffle's map stage; until then the
/// partitioner has no bounds and puts every key in partition 0.
#[derive(Debug)]
pub struct RangePartitioner<K> {
    partitions: usize,
    ascending: bool,
    bounds: OnceLock<Vec<K>>,
}

impl<K: Ord + Clone + Send + Sync> RangePartitioner<K> {
    /// A partitioner over `partitions` ranges whose bounds are set later.
    pub fn new(partitions: usize, ascending: bool) -> Self {
        RangePartitioner {
            partitions: partitions.max(1),
            ascending,
            bounds: OnceLock::new(),
        }
    }

    /// Whether the bounds have been chosen.
    pub fn is_prepared(&self) -> bool {
        self.bounds.get().is_some()
    }

    /// Chooses the `partitions - 1` bounds from weighted samples: each
    /// sampled key stands for `weight` keys of the data. Keys are cut so that
    /// every range holds about the same total weight. Later calls do nothing.
    pub fn set_bounds_from_sample(&self, mut sample: Vec<(K, f64)>) {
        sample.sort_by(|a, b| a.0.cmp(&b.0));
        let total: f64 = sample.iter().map(|(_, w)| w).sum();
        let step = total / self.partitions as f64;
        let mut bounds: Vec<K> = Vec::with_capacity(self.partitions.saturating_sub(1));
        let mut cumulative = 0.0;
        let mut target = step;
        for (key, weight) in sample {
            cumulative += weight;
            if bounds.len() + 1 >= self.partitions {
                break;
            }
            if cumulative >= target && bounds.last() != Some(&key) {
                bounds.push(key);
                target += step;
            }
        }
        let _ = self.bounds.set(bounds);
    }
}

impl<K: Ord + Clone + Send + Sync> Partitioner<K> for RangePartitioner<K> {
    fn num_partitions(&self) -> usize {
        self.partitions
    }

    fn partition(&self, key: &K) -> usize {
        let Some(bounds) = self.bounds.get() else {
            return 0;
        };
        // Keys equal to a bound go to the lower range.
        let index = bounds.partition_point(|b| b < key);
        if self.ascending {
            index
        } else {
            self.partitions - 1 - index
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_partitioner_is_in_range_and_spreads() {
        let p = HashPartitioner::new(7);
        let mut seen = [0usize; 7];
        for k in 0..7000u64 {
            let i = Partitioner::<u64>::partition(&p, &k);
            seen[i] += 1;
        }
        assert!(seen.iter().all(|&n| n > 700), "skewed: {seen:?}");
    }

    #[test]
    fn hash_partitioner_is_stable_across_instances() {
        let a = HashPartitioner::new(16);
        let b = HashPartitioner::new(16);
        for k in ["a", "b", "lamina", ""] {
            assert_eq!(
                Partitioner::<&str>::partition(&a, &k),
                Partitioner::<&str>::partition(&b, &k)
            );
        }
    }

    #[test]
    fn range_partitioner_orders_ranges() {
        let p = RangePartitioner::new(4, true);
        p.set_bounds_from_sample((0..100).map(|k| (k, 1.0)).collect());
        let mut last = 0;
        for k in 0..100 {
            let i = p.partition(&k);
            assert!(i >= last && i < 4);
            last = i;
        }
        assert_eq!(last, 3);
        let d = RangePartitioner::new(4, false);
        d.set_bounds_from_sample((0..100).map(|k| (k, 1.0)).collect());
        assert_eq!(d.partition(&0), 3);
        assert_eq!(d.partition(&99), 0);
    }

    #[test]
    fn range_partitioner_with_few_distinct_keys() {
        let p = RangePartitioner::new(8, true);
        p.set_bounds_from_sample(vec![(1, 10.0), (1, 10.0), (2, 1.0)]);
        assert!(p.partition(&1) <= p.partition(&2));
        assert!(p.partition(&2) < 8);
    }
}
