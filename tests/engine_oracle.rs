//! Oracle tests: every transformation and action against a plain sequential
//! computation on seeded random input, with random partition and thread
//! counts (like differential dataflow's reduce_reference tests).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};

use lamina::{Context, Rdd};
use proptest::prelude::*;

fn ctx(threads: usize) -> Context {
    Context::builder().threads(threads).build().unwrap()
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

/// Small keys so that keys repeat; values of either sign.
fn pairs() -> impl Strategy<Value = Vec<(u8, i32)>> {
    prop::collection::vec((0u8..20, -1000i32..1000), 0..300)
}

fn setup() -> impl Strategy<Value = (usize, usize)> {
    // (partitions, threads)
    (1usize..9, 1usize..5)
}

fn group_reference<V: Clone>(data: &[(u8, V)]) -> BTreeMap<u8, Vec<V>> {
    let mut m: BTreeMap<u8, Vec<V>> = BTreeMap::new();
    for (k, v) in data {
        m.entry(*k).or_default().push(v.clone());
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]

    #[test]
    fn narrow_transformations((parts, threads) in setup(), data in pairs()) {
        let ctx = ctx(threads);
        let rdd = ctx.parallelize(data.clone(), parts);
        prop_assert_eq!(rdd.num_partitions(), parts);
        // Narrow transformations keep partition order, so collect is exact.
        prop_assert_eq!(rdd.collect().unwrap(), data.clone());
        prop_assert_eq!(
            rdd.map(|(k, v)| (k, v * 2)).collect().unwrap(),
            data.iter().map(|&(k, v)| (k, v * 2)).collect::<Vec<_>>()
        );
        prop_assert_eq!(
            rdd.filter(|(_, v)| v % 3 == 0).collect().unwrap(),
            data.iter().filter(|(_, v)| v % 3 == 0).cloned().collect::<Vec<_>>()
        );
        prop_assert_eq!(
            rdd.flat_map(|(k, v)| vec![v; usize::from(k % 3)]).collect().unwrap(),
            data.iter().flat_map(|&(k, v)| vec![v; usize::from(k % 3)]).collect::<Vec<_>>()
        );
        prop_assert_eq!(
            rdd.map_values(|v| i64::from(v) + 1).collect().unwrap(),
            data.iter().map(|&(k, v)| (k, i64::from(v) + 1)).collect::<Vec<_>>()
        );
        prop_assert_eq!(rdd.keys().collect().unwrap(), data.iter().map(|p| p.0).collect::<Vec<_>>());
        prop_assert_eq!(rdd.values().collect().unwrap(), data.iter().map(|p| p.1).collect::<Vec<_>>());
        prop_assert_eq!(
            rdd.values().key_by(|v| v.rem_euclid(7)).collect().unwrap(),
            data.iter().map(|&(_, v)| (v.rem_euclid(7), v)).collect::<Vec<_>>()
        );
        let sums = rdd.map_partitions(|it| Box::new(std::iter::once(it.map(|(_, v)| i64::from(v)).sum::<i64>())));
        prop_assert_eq!(sums.num_partitions(), parts);
        prop_assert_eq!(sums.collect().unwrap().iter().sum::<i64>(), data.iter().map(|p| i64::from(p.1)).sum::<i64>());
        let indexed = rdd.map_partitions_with_index(|i, it| Box::new(it.map(move |_| i)));
        let idx = indexed.collect().unwrap();
        prop_assert!(idx.windows(2).all(|w| w[0] <= w[1]) && idx.iter().all(|&i| i < parts));
    }

    #[test]
    fn union_coalesce_repartition((parts, threads) in setup(), a in pairs(), b in pairs(), target in 1usize..12) {
        let ctx = ctx(threads);
        let ra = ctx.parallelize(a.clone(), parts);
        let rb = ctx.parallelize(b.clone(), 3);
        let u = ra.union(&rb);
        prop_assert_eq!(u.num_partitions(), parts + 3);
        prop_assert_eq!(u.collect().unwrap(), [a.clone(), b.clone()].concat());
        let c = ra.coalesce(target);
        prop_assert_eq!(c.num_partitions(), target.min(parts));
        prop_assert_eq!(c.collect().unwrap(), a.clone());
        let r = ra.repartition(target);
        prop_assert_eq!(r.num_partitions(), target);
        prop_assert_eq!(sorted(r.collect().unwrap()), sorted(a.clone()));
        // Round-robin placement keeps partitions within one element of even
        // per source partition.
        let sizes = r.run(|_, it| Ok(it.count())).unwrap();
        prop_assert_eq!(sizes.iter().sum::<usize>(), a.len());
    }

    #[test]
    fn keyed_aggregations((parts, threads) in setup(), data in pairs()) {
        let ctx = ctx(threads);
        let rdd = ctx.parallelize(data.clone(), parts);
        let groups = group_reference(&data);
        let sums: BTreeMap<u8, i64> = groups.iter().map(|(k, vs)| (*k, vs.iter().map(|&v| i64::from(v)).sum())).collect();

        let got: BTreeMap<u8, i64> = rdd.map_values(i64::from).reduce_by_key(|a, b| a + b).collect().unwrap().into_iter().collect();
        prop_assert_eq!(&got, &sums);

        let into = rdd.map_values(i64::from).reduce_by_key_into(|a, b| a + b, 5);
        prop_assert_eq!(into.num_partitions(), 5);
        prop_assert_eq!(into.collect().unwrap().into_iter().collect::<BTreeMap<_, _>>(), sums.clone());

        // (count, max) per key through aggregate_by_key.
        let agg: BTreeMap<u8, (u32, i32)> = rdd
            .aggregate_by_key((0u32, i32::MIN), |(n, m), v| (n + 1, m.max(v)), |(n1, m1), (n2, m2)| (n1 + n2, m1.max(m2)))
            .collect().unwrap().into_iter().collect();
        let agg_ref: BTreeMap<u8, (u32, i32)> = groups.iter()
            .map(|(k, vs)| (*k, (vs.len() as u32, *vs.iter().max().unwrap()))).collect();
        prop_assert_eq!(agg, agg_ref);

        let grouped: BTreeMap<u8, Vec<i32>> = rdd.group_by_key().collect().unwrap().into_iter()
            .map(|(k, vs)| (k, sorted(vs))).collect();
        let grouped_ref: BTreeMap<u8, Vec<i32>> = groups.iter().map(|(k, vs)| (*k, sorted(vs.clone()))).collect();
        prop_assert_eq!(grouped, grouped_ref);

        let counts = rdd.count_by_key().unwrap();
        prop_assert_eq!(counts.len(), groups.len());
        for (k, vs) in &groups {
            prop_assert_eq!(counts[k], vs.len() as u64);
        }

        let distinct = sorted(rdd.keys().distinct().collect().unwrap());
        prop_assert_eq!(distinct, groups.keys().copied().collect::<Vec<_>>());

        let by_value = rdd.values().map(|v| v.rem_euclid(5)).count_by_value().unwrap();
        let mut by_value_ref: HashMap<i32, u64> = HashMap::new();
        for (_, v) in &data {
            *by_value_ref.entry(v.rem_euclid(5)).or_default() += 1;
        }
        prop_assert_eq!(by_value, by_value_ref);
    }

    #[test]
    fn joins((parts, threads) in setup(), a in pairs(), b in pairs()) {
        let ctx = ctx(threads);
        let ra = ctx.parallelize(a.clone(), parts);
        let rb = ctx.parallelize(b.clone(), 4);
        let mut join_ref = Vec::new();
        let mut left_ref = Vec::new();
        for &(ka, va) in &a {
            let matches: Vec<i32> = b.iter().filter(|(kb, _)| *kb == ka).map(|p| p.1).collect();
            if matches.is_empty() {
                left_ref.push((ka, (va, None)));
            }
            for vb in matches {
                join_ref.push((ka, (va, vb)));
                left_ref.push((ka, (va, Some(vb))));
            }
        }
        prop_assert_eq!(sorted(ra.join(&rb).collect().unwrap()), sorted(join_ref));
        prop_assert_eq!(sorted(ra.left_outer_join(&rb).collect().unwrap()), sorted(left_ref));

        let cg: BTreeMap<u8, (Vec<i32>, Vec<i32>)> = ra.cogroup(&rb).collect().unwrap().into_iter()
            .map(|(k, (l, r))| (k, (sorted(l), sorted(r)))).collect();
        let (ga, gb) = (group_reference(&a), group_reference(&b));
        let mut cg_ref = BTreeMap::new();
        for k in ga.keys().chain(gb.keys()) {
            cg_ref.insert(*k, (
                sorted(ga.get(k).cloned().unwrap_or_default()),
                sorted(gb.get(k).cloned().unwrap_or_default()),
            ));
        }
        prop_assert_eq!(cg, cg_ref);
    }

    #[test]
    fn sort_by_key((parts, threads) in setup(), data in prop::collection::vec((any::<i16>(), any::<u8>()), 0..400), ascending in any::<bool>()) {
        let ctx = ctx(threads);
        let rdd = ctx.parallelize(data.clone(), parts);
        let out = rdd.sort_by_key(ascending).collect().unwrap();
        let keys: Vec<i16> = out.iter().map(|p| p.0).collect();
        let mut keys_ref: Vec<i16> = data.iter().map(|p| p.0).collect();
        keys_ref.sort();
        if !ascending {
            keys_ref.reverse();
        }
        prop_assert_eq!(keys, keys_ref);
        prop_assert_eq!(sorted(out), sorted(data));
    }

    #[test]
    fn actions((parts, threads) in setup(), data in prop::collection::vec(-1000i64..1000, 0..300), n in 0usize..350) {
        let ctx = ctx(threads);
        let rdd = ctx.parallelize(data.clone(), parts);
        prop_assert_eq!(rdd.count().unwrap(), data.len() as u64);
        prop_assert_eq!(rdd.reduce(|a, b| a + b).unwrap(), data.iter().copied().reduce(|a, b| a + b));
        prop_assert_eq!(rdd.fold(0, |a, b| a + b).unwrap(), data.iter().sum::<i64>());
        prop_assert_eq!(rdd.take(n).unwrap(), data.iter().copied().take(n).collect::<Vec<_>>());
        let seen = AtomicUsize::new(0);
        rdd.foreach_partition(|it| { seen.fetch_add(it.count(), Ordering::Relaxed); }).unwrap();
        prop_assert_eq!(seen.into_inner(), data.len());
    }

    #[test]
    fn sample_is_a_deterministic_subset((parts, threads) in setup(), data in prop::collection::vec(any::<u32>(), 0..300), seed in any::<u64>()) {
        let ctx = ctx(threads);
        let rdd = ctx.parallelize(data.clone(), parts);
        let s1 = rdd.sample(false, 0.3, seed).collect().unwrap();
        let s2 = rdd.sample(false, 0.3, seed).collect().unwrap();
        prop_assert_eq!(&s1, &s2);
        // Without replacement the sample is a subsequence of the input.
        let mut it = data.iter();
        prop_assert!(s1.iter().all(|x| it.any(|y| y == x)));
        prop_assert_eq!(rdd.sample(false, 1.0, seed).collect().unwrap(), data.clone());
        prop_assert!(rdd.sample(false, 0.0, seed).collect().unwrap().is_empty());
        let w1 = rdd.sample(true, 2.0, seed).collect().unwrap();
        prop_assert_eq!(&w1, &rdd.sample(true, 2.0, seed).collect().unwrap());
        prop_assert!(w1.iter().all(|x| data.contains(x)));
    }
}

#[test]
fn sample_fraction_is_close_on_large_input() {
    let ctx = ctx(2);
    let rdd = ctx.parallelize((0..100_000u32).collect(), 4);
    let n = rdd.sample(false, 0.25, 7).count().unwrap();
    assert!((23_000..27_000).contains(&n), "kept {n} of 100000 at 0.25");
    let m = rdd.sample(true, 0.5, 7).count().unwrap();
    assert!(
        (46_000..54_000).contains(&m),
        "drew {m} of 100000 at 0.5 with replacement"
    );
}

#[test]
fn empty_and_single_partition_edge_cases() {
    let ctx = ctx(2);
    let empty: Rdd<(u8, i32)> = ctx.parallelize(Vec::new(), 3);
    assert_eq!(empty.count().unwrap(), 0);
    assert!(
        empty
            .reduce_by_key(|a, b| a + b)
            .collect()
            .unwrap()
            .is_empty()
    );
    assert!(empty.sort_by_key(true).collect().unwrap().is_empty());
    assert_eq!(empty.map(|p| p.1).reduce(|a, b| a + b).unwrap(), None);
    assert!(empty.take(5).unwrap().is_empty());
    let zero_parts = ctx.parallelize(vec![1, 2, 3], 0);
    assert_eq!(zero_parts.num_partitions(), 1);
    assert_eq!(zero_parts.collect().unwrap(), vec![1, 2, 3]);
}

#[test]
fn shuffle_output_is_reused_across_jobs() {
    let ctx = ctx(2);
    let computed = std::sync::Arc::new(AtomicUsize::new(0));
    let counter = std::sync::Arc::clone(&computed);
    let sums = ctx
        .parallelize((0..1000u32).collect(), 4)
        .map(move |x| {
            counter.fetch_add(1, Ordering::Relaxed);
            (x % 10, u64::from(x))
        })
        .reduce_by_key(|a, b| a + b);
    assert_eq!(sums.count().unwrap(), 10);
    assert_eq!(computed.load(Ordering::Relaxed), 1000);
    // The second action reads the shuffle written by the first.
    assert_eq!(sums.collect().unwrap().len(), 10);
    assert_eq!(computed.load(Ordering::Relaxed), 1000);
}

#[test]
fn lineage_shows_stages() {
    let ctx = ctx(1);
    let rdd = ctx
        .parallelize(vec![(1, 1)], 2)
        .map_values(|v| v + 1)
        .reduce_by_key(|a, b| a + b);
    let lineage = rdd.lineage();
    assert!(lineage.contains("combine_by_key"), "{lineage}");
    assert!(lineage.contains("+- shuffle"), "{lineage}");
    assert!(lineage.contains("parallelize"), "{lineage}");
}
