//! Wide transformations: everything that moves data between partitions
//! through a shuffle (`reduce_by_key`, `group_by_key`, `join`, `sort_by_key`,
//! `distinct`, `repartition`, ...).
//!
//! All of them are built from one primitive, [`Rdd::shuffle_with`]: a map
//! side that splits each parent partition into buckets (optionally combining
//! values per key first, which is what makes `reduce_by_key` cheap), and a
//! reduce side that builds each output partition from its buckets.

use std::hash::Hash;

use hashbrown::hash_map::Entry;
use std::sync::Arc;

use crate::context::Context;
use crate::error::Result;
use crate::partitioner::{
    FastMap, HashPartitioner, ModuloPartitioner, Partitioner, RangePartitioner, fast_map,
};
use crate::rdd::sample::SplitMix64;
use crate::rdd::shuffled::{MapSideFn, PrepareFn, ReduceFn, ShuffleDependency, ShuffledRdd};
use crate::rdd::{BoxIter, Data, Key, Rdd};
use crate::scheduler::{CancelToken, run_job};

/// Splits `(key, value)` pairs into one bucket per partition.
fn bucketize<K, X>(
    pairs: impl Iterator<Item = (K, X)>,
    partitioner: &dyn Partitioner<K>,
) -> Vec<Vec<(K, X)>> {
    let mut buckets: Vec<Vec<(K, X)>> = (0..partitioner.num_partitions())
        .map(|_| Vec::new())
        .collect();
    for (k, x) in pairs {
        buckets[partitioner.partition(&k)].push((k, x));
    }
    buckets
}

/// Merges `value` into the combiner of `key`, creating it if absent. The
/// old combiner is moved out and back in (`replace_entry_with`), so a
/// by-value merge function needs neither a clone nor an `Option` wrapper
/// that would make every map entry larger.
#[inline]
fn upsert<K: Eq + Hash, V, C>(
    map: &mut FastMap<K, C>,
    key: K,
    value: V,
    create: impl FnOnce(V) -> C,
    merge: impl FnOnce(C, V) -> C,
) {
    match map.entry(key) {
        Entry::Occupied(e) => {
            e.replace_entry_with(|_, old| Some(merge(old, value)));
        }
        Entry::Vacant(e) => {
            e.insert(create(value));
        }
    }
}

/// The reduce side of a keyed aggregation: folds every block's `(key, x)`
/// pairs into one combiner per key. Blocks stay in the shuffle store (a
/// retried or later job reads them again), so they are borrowed: each key is
/// cloned once, when it leaves, not once per block it appears in.
fn merge_blocks<K: Key, X, C>(
    blocks: &[Arc<Vec<(K, X)>>],
    create: impl Fn(&X) -> C,
    merge: impl Fn(C, &X) -> C,
) -> std::vec::IntoIter<(K, C)> {
    let capacity = blocks.iter().map(|b| b.len()).max().unwrap_or(0);
    let mut map: FastMap<&K, C> = fast_map(capacity);
    for block in blocks {
        for (k, x) in block.iter() {
            upsert(&mut map, k, x, &create, &merge);
        }
    }
    let merged: Vec<(K, C)> = map.into_iter().map(|(k, c)| (k.clone(), c)).collect();
    merged.into_iter()
}

impl<K: Key, V: Data> Rdd<(K, V)> {
    /// The shuffle primitive every wide transformation is built on.
    ///
    /// `map_side` turns a parent partition into one bucket of `(K, X)` pairs
    /// per partition of `partitioner`; `reduce` builds each output partition
    /// from the buckets all map tasks wrote for it; `prepare` runs on the
    /// driver before the map stage.
    pub(crate) fn shuffle_with<X: Data, Out: Data>(
        &self,
        label: &'static str,
        partitioner: Arc<dyn Partitioner<K>>,
        map_side: MapSideFn<K, V, X>,
        prepare: Option<PrepareFn>,
        reduce: ReduceFn<K, X, Out>,
    ) -> Rdd<Out> {
        let store = Arc::clone(self.ctx.shuffle_store());
        let dep = ShuffleDependency {
            id: self.ctx.new_shuffle_id(),
            parent: Arc::clone(&self.node),
            partitioner,
            map_side,
            prepare,
            store: Arc::clone(&store),
        };
        let node = ShuffledRdd {
            id: self.ctx.new_rdd_id(),
            label,
            num_maps: self.num_partitions(),
            dep: Arc::new(dep),
            store,
            reduce,
        };
        Rdd::from_dataset(&self.ctx, node)
    }

    /// Redistributes the pairs by `partitioner`, unchanged.
    pub fn partition_by(&self, partitioner: impl Partitioner<K> + 'static) -> Rdd<(K, V)> {
        self.shuffle_with(
            "partition_by",
            Arc::new(partitioner),
            Box::new(|input, p| bucketize(input, p)),
            None,
            Box::new(|blocks| Box::new(blocks.into_iter().flat_map(|b| b.as_ref().clone()))),
        )
    }

    /// The general keyed aggregation, like Spark's `combineByKey`: values of
    /// a key are folded into a combiner of type `C` with `create` and
    /// `merge_value`, and combiners from different partitions are merged with
    /// `merge_combiners`. With `map_side_combine`, each map task combines its
    /// own values before the shuffle (less data moved when keys repeat).
    pub fn combine_by_key<C: Data>(
        &self,
        create: impl Fn(V) -> C + Send + Sync + 'static,
        merge_value: impl Fn(C, V) -> C + Send + Sync + 'static,
        merge_combiners: impl Fn(C, C) -> C + Send + Sync + 'static,
        partitions: usize,
        map_side_combine: bool,
    ) -> Rdd<(K, C)> {
        let partitioner: Arc<dyn Partitioner<K>> = Arc::new(HashPartitioner::new(partitions));
        let create = Arc::new(create);
        let merge_value = Arc::new(merge_value);
        let merge_combiners = Arc::new(merge_combiners);
        if map_side_combine {
            let (c1, m1) = (Arc::clone(&create), Arc::clone(&merge_value));
            self.shuffle_with(
                "combine_by_key",
                partitioner,
                Box::new(move |input, p| {
                    let mut map = fast_map(0);
                    for (k, v) in input {
                        upsert(&mut map, k, v, &*c1, &*m1);
                    }
                    bucketize(map.into_iter(), p)
                }),
                None,
                Box::new(move |blocks| {
                    Box::new(merge_blocks(
                        &blocks,
                        |c: &C| c.clone(),
                        |acc, c| merge_combiners(acc, c.clone()),
                    ))
                }),
            )
        } else {
            self.shuffle_with(
                "combine_by_key",
                partitioner,
                Box::new(|input, p| bucketize(input, p)),
                None,
                Box::new(move |blocks| {
                    Box::new(merge_blocks(
                        &blocks,
                        |v: &V| create(v.clone()),
                        |acc, v| merge_value(acc, v.clone()),
                    ))
                }),
            )
        }
    }

    /// Merges the values of each key with an associative, commutative `f`,
    /// combining on the map side first. Output has as many partitions as the
    /// input.
    ///
    /// ```
    /// let ctx = lamina::Context::builder().threads(2).build().unwrap();
    /// let counts = ctx
    ///     .parallelize(vec![("a", 1), ("b", 1), ("a", 1)], 2)
    ///     .reduce_by_key(|x, y| x + y);
    /// let mut counts = counts.collect().unwrap();
    /// counts.sort();
    /// assert_eq!(counts, vec![("a", 2), ("b", 1)]);
    /// ```
    pub fn reduce_by_key(&self, f: impl Fn(V, V) -> V + Send + Sync + 'static) -> Rdd<(K, V)> {
        self.reduce_by_key_into(f, self.num_partitions())
    }

    /// [`reduce_by_key`](Self::reduce_by_key) into `partitions` partitions.
    pub fn reduce_by_key_into(
        &self,
        f: impl Fn(V, V) -> V + Send + Sync + 'static,
        partitions: usize,
    ) -> Rdd<(K, V)> {
        let f = Arc::new(f);
        let g = Arc::clone(&f);
        self.combine_by_key(
            |v| v,
            move |a, b| f(a, b),
            move |a, b| g(a, b),
            partitions,
            true,
        )
    }

    /// Folds the values of each key into an accumulator that starts at
    /// `zero`: `seq` adds a value, `comb` merges two accumulators.
    pub fn aggregate_by_key<C: Data>(
        &self,
        zero: C,
        seq: impl Fn(C, V) -> C + Send + Sync + 'static,
        comb: impl Fn(C, C) -> C + Send + Sync + 'static,
    ) -> Rdd<(K, C)> {
        let seq = Arc::new(seq);
        let seq2 = Arc::clone(&seq);
        self.combine_by_key(
            move |v| seq2(zero.clone(), v),
            move |c, v| seq(c, v),
            comb,
            self.num_partitions(),
            true,
        )
    }

    /// All values of each key in one vector (order unspecified). Moves every
    /// value through the shuffle: prefer `reduce_by_key` when a fold will do.
    pub fn group_by_key(&self) -> Rdd<(K, Vec<V>)> {
        self.combine_by_key(
            |v| vec![v],
            |mut vs, v| {
                vs.push(v);
                vs
            },
            |mut a, b| {
                a.extend(b);
                a
            },
            self.num_partitions(),
            false,
        )
    }

    /// For each key of either dataset, its values in `self` and in `other`.
    pub fn cogroup<W: Data>(&self, other: &Rdd<(K, W)>) -> Rdd<(K, CoGroup<V, W>)> {
        let partitions = self.num_partitions().max(other.num_partitions());
        let left = self.map_values(|v| Side::Left(v));
        let right = other.map_values(|w| Side::Right(w));
        left.union(&right).combine_by_key(
            |side| {
                let mut groups = (Vec::new(), Vec::new());
                side.push_into(&mut groups);
                groups
            },
            |mut groups, side| {
                side.push_into(&mut groups);
                groups
            },
            |mut a, b| {
                a.0.extend(b.0);
                a.1.extend(b.1);
                a
            },
            partitions,
            false,
        )
    }

    /// Inner join: every pair of values with equal keys.
    pub fn join<W: Data>(&self, other: &Rdd<(K, W)>) -> Rdd<(K, (V, W))> {
        self.cogroup(other).flat_map(|(k, (vs, ws))| {
            let mut out = Vec::with_capacity(vs.len() * ws.len());
            for v in &vs {
                for w in &ws {
                    out.push((k.clone(), (v.clone(), w.clone())));
                }
            }
            out
        })
    }

    /// Left outer join: every value of `self`, with each matching value of
    /// `other` or `None`.
    pub fn left_outer_join<W: Data>(&self, other: &Rdd<(K, W)>) -> Rdd<(K, (V, Option<W>))> {
        self.cogroup(other).flat_map(|(k, (vs, ws))| {
            let mut out = Vec::with_capacity(vs.len() * ws.len().max(1));
            for v in &vs {
                if ws.is_empty() {
                    out.push((k.clone(), (v.clone(), None)));
                }
                for w in &ws {
                    out.push((k.clone(), (v.clone(), Some(w.clone()))));
                }
            }
            out
        })
    }

    /// Number of pairs per key, collected on the caller.
    pub fn count_by_key(&self) -> Result<std::collections::HashMap<K, u64>> {
        Ok(self
            .map_values(|_| 1u64)
            .reduce_by_key(|a, b| a + b)
            .collect()?
            .into_iter()
            .collect())
    }
}

/// The values of one key on each side of a [`Rdd::cogroup`].
pub type CoGroup<V, W> = (Vec<V>, Vec<W>);

/// A value tagged with the side of a cogroup it came from.
#[derive(Clone)]
enum Side<V, W> {
    Left(V),
    Right(W),
}

impl<V, W> Side<V, W> {
    fn push_into(self, groups: &mut (Vec<V>, Vec<W>)) {
        match self {
            Side::Left(v) => groups.0.push(v),
            Side::Right(w) => groups.1.push(w),
        }
    }
}

impl<K: Key + Ord, V: Data> Rdd<(K, V)> {
    /// Sorts by key into ranges: partition `i` holds smaller keys than
    /// partition `i + 1` (larger when descending), each partition sorted, so
    /// `collect` returns all pairs in order. Pairs with equal keys keep no
    /// particular order. Range bounds come from a sample of the keys, taken
    /// by an extra job when the sort first runs.
    pub fn sort_by_key(&self, ascending: bool) -> Rdd<(K, V)> {
        let partitions = self.num_partitions();
        let partitioner = Arc::new(RangePartitioner::<K>::new(partitions, ascending));
        let sampler = Arc::clone(&partitioner);
        let parent = self.clone();
        let prepare: PrepareFn = Box::new(move |ctx: &Context| {
            if !sampler.is_prepared() {
                sampler.set_bounds_from_sample(sample_keys(ctx, &parent, partitions)?);
            }
            Ok(())
        });
        self.shuffle_with(
            "sort_by_key",
            partitioner,
            Box::new(|input, p| bucketize(input, p)),
            Some(prepare),
            Box::new(move |blocks| {
                let mut pairs: Vec<(K, V)> =
                    blocks.iter().flat_map(|b| b.iter().cloned()).collect();
                if ascending {
                    pairs.sort_by(|a, b| a.0.cmp(&b.0));
                } else {
                    pairs.sort_by(|a, b| b.0.cmp(&a.0));
                }
                Box::new(pairs.into_iter())
            }),
        )
    }
}

/// A weighted sample of the keys of `rdd` (reservoir sampling per partition;
/// each sampled key stands for `partition size / sample size` keys).
fn sample_keys<K: Key + Ord, V: Data>(
    ctx: &Context,
    rdd: &Rdd<(K, V)>,
    out_partitions: usize,
) -> Result<Vec<(K, f64)>> {
    let per_partition = (20 * out_partitions)
        .div_ceil(rdd.num_partitions().max(1))
        .max(20);
    let all: Vec<usize> = (0..rdd.num_partitions()).collect();
    let samples = run_job(
        ctx,
        rdd.dataset(),
        &all,
        &CancelToken::default(),
        |tc, input| {
            let mut rng = SplitMix64::new(0x005a_3b1e ^ tc.partition() as u64);
            let mut reservoir: Vec<K> = Vec::with_capacity(per_partition);
            let mut seen = 0usize;
            for (k, _) in input {
                seen += 1;
                if reservoir.len() < per_partition {
                    reservoir.push(k);
                } else {
                    let j = (rng.next_u64() % seen as u64) as usize;
                    if j < per_partition {
                        reservoir[j] = k;
                    }
                }
            }
            let weight = if reservoir.is_empty() {
                0.0
            } else {
                seen as f64 / reservoir.len() as f64
            };
            Ok(reservoir
                .into_iter()
                .map(|k| (k, weight))
                .collect::<Vec<_>>())
        },
    )?;
    Ok(samples.into_iter().flatten().collect())
}

impl<T: Key> Rdd<T> {
    /// The distinct elements.
    pub fn distinct(&self) -> Rdd<T> {
        self.map(|x| (x, ())).reduce_by_key(|_, _| ()).keys()
    }

    /// Number of occurrences of each distinct element, collected on the
    /// caller.
    pub fn count_by_value(&self) -> Result<std::collections::HashMap<T, u64>> {
        self.map(|x| (x, ())).count_by_key()
    }
}

impl<T: Data> Rdd<T> {
    /// Redistributes the elements evenly over `partitions` partitions (at
    /// least one) through a shuffle. Use it to grow the partition count or to
    /// fix skew; [`coalesce`](Self::coalesce) shrinks without a shuffle.
    pub fn repartition(&self, partitions: usize) -> Rdd<T> {
        let partitions = partitions.max(1);
        // Round-robin from a per-partition starting point, so that small
        // partitions do not all land on partition 0.
        let keyed = self.map_partitions_with_index(move |index, input: BoxIter<'_, T>| {
            let start = (SplitMix64::new(index as u64).next_u64() % partitions as u64) as usize;
            Box::new(
                input
                    .enumerate()
                    .map(move |(i, x)| ((start + i) % partitions, x)),
            )
        });
        keyed.shuffle_with(
            "repartition",
            Arc::new(ModuloPartitioner::new(partitions)),
            Box::new(|input, p| bucketize(input, p)),
            None,
            Box::new(|blocks| {
                Box::new(
                    blocks
                        .into_iter()
                        .flat_map(|b| b.iter().map(|(_, x)| x.clone()).collect::<Vec<_>>()),
                )
            }),
        )
    }
}
