//! Every DStream operation against a sequential reference over the same
//! seeded batches: random batch sizes (empty batches too), random block
//! splits (partitions) and thread counts.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lamina::streaming::input::QueueInput;
use lamina::streaming::{DStream, InputStream, StreamingContext, Time};
use lamina::view::AggValue;
use lamina::{Context, Data};

mod support;

use support::Rng;

/// Seeded batches of small integers (few distinct values, so keys repeat).
fn batches(rng: &mut Rng, n: usize) -> Vec<Vec<i64>> {
    (0..n)
        .map(|_| {
            let len = match rng.below(5) {
                0 => 0,
                1 => rng.below(3) as usize,
                _ => rng.below(400) as usize,
            };
            (0..len).map(|_| rng.below(23) as i64 - 5).collect()
        })
        .collect()
}

/// `batch` cut into a random number of blocks (some empty).
fn blocks<T: Clone>(rng: &mut Rng, batch: &[T]) -> Vec<Vec<T>> {
    let parts = 1 + rng.below(5) as usize;
    let mut cuts: Vec<usize> = (0..parts - 1)
        .map(|_| rng.below(batch.len() as u64 + 1) as usize)
        .collect();
    cuts.sort_unstable();
    let mut out = Vec::new();
    let mut start = 0;
    for c in cuts.into_iter().chain([batch.len()]) {
        out.push(batch[start..c].to_vec());
        start = c;
    }
    out
}

struct Setup {
    ssc: StreamingContext,
    a: DStream<i64>,
    b: DStream<i64>,
    batches_a: Vec<Vec<i64>>,
    batches_b: Vec<Vec<i64>>,
}

fn setup(seed: u64) -> Setup {
    let mut rng = Rng(seed);
    let threads = 1 + rng.below(4) as usize;
    let ctx = Context::builder().threads(threads).build().unwrap();
    let ssc = StreamingContext::new(ctx, Duration::from_millis(50)).unwrap();
    let n = 2 + rng.below(6) as usize;
    let batches_a = batches(&mut rng, n);
    let batches_b = batches(&mut rng, n);
    let qa = QueueInput::new(batches_a.iter().map(|b| blocks(&mut rng, b)));
    let qb = QueueInput::new(batches_b.iter().map(|b| blocks(&mut rng, b)));
    let a = ssc.input_stream(Arc::new(qa) as Arc<dyn InputStream<i64>>);
    let b = ssc.input_stream(Arc::new(qb) as Arc<dyn InputStream<i64>>);
    Setup {
        ssc,
        a,
        b,
        batches_a,
        batches_b,
    }
}

/// Collects every batch of `stream`, each sorted.
fn capture<T: Data + Ord>(stream: &DStream<T>) -> Arc<Mutex<Vec<Vec<T>>>> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let into = Arc::clone(&out);
    stream.foreach_rdd(move |rdd, _| {
        let mut got = rdd.collect()?;
        got.sort();
        into.lock().unwrap().push(got);
        Ok(())
    });
    out
}

fn run(s: &Setup) {
    for i in 0..s.batches_a.len() {
        s.ssc
            .run_batch(Time::from_millis(50 * (i as i64 + 1)))
            .unwrap();
    }
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

fn counts(batch: &[i64]) -> BTreeMap<i64, i64> {
    let mut m = BTreeMap::new();
    for &x in batch {
        *m.entry(x).or_insert(0) += 1;
    }
    m
}

fn pairs(batch: &[i64]) -> Vec<(i64, i64)> {
    batch.iter().map(|&x| (x.rem_euclid(7), x)).collect()
}

const SEEDS: u64 = 24;

#[test]
fn narrow_operations_match_the_reference() {
    for seed in 0..SEEDS {
        let s = setup(seed);
        let map = capture(&s.a.map(|x| x * 3 + 1));
        let flat = capture(&s.a.flat_map(|x| vec![x; (x.rem_euclid(3)) as usize]));
        let filter = capture(&s.a.filter(|x| x % 2 == 0));
        let parts = capture(&s.a.map_partitions(|it| Box::new(std::iter::once(it.sum::<i64>()))));
        let repart = capture(&s.a.repartition(3));
        let union = capture(&s.a.union(&s.b));
        let transform = capture(&s.a.transform(|rdd, time| {
            let t = time.millis();
            Ok(rdd.map(move |x| x + t))
        }));
        run(&s);
        for (i, batch) in s.batches_a.iter().enumerate() {
            let t = 50 * (i as i64 + 1);
            assert_eq!(
                map.lock().unwrap()[i],
                sorted(batch.iter().map(|x| x * 3 + 1).collect()),
                "seed {seed}"
            );
            assert_eq!(
                flat.lock().unwrap()[i],
                sorted(
                    batch
                        .iter()
                        .flat_map(|&x| vec![x; x.rem_euclid(3) as usize])
                        .collect()
                ),
                "seed {seed}"
            );
            assert_eq!(
                filter.lock().unwrap()[i],
                sorted(batch.iter().copied().filter(|x| x % 2 == 0).collect())
            );
            // The partition sums depend on the split; their total does not.
            assert_eq!(
                parts.lock().unwrap()[i].iter().sum::<i64>(),
                batch.iter().sum::<i64>(),
                "seed {seed}"
            );
            assert_eq!(repart.lock().unwrap()[i], sorted(batch.clone()));
            let mut both = batch.clone();
            both.extend(&s.batches_b[i]);
            assert_eq!(union.lock().unwrap()[i], sorted(both));
            assert_eq!(
                transform.lock().unwrap()[i],
                sorted(batch.iter().map(|x| x + t).collect())
            );
        }
    }
}

#[test]
fn aggregations_match_the_reference() {
    for seed in 0..SEEDS {
        let s = setup(seed);
        let count = capture(&s.a.count());
        let reduce = capture(&s.a.reduce(|x, y| x + y));
        let by_value = capture(&s.a.count_by_value());
        let keyed = s.a.map(|x| (x.rem_euclid(7), x));
        let rbk = capture(&keyed.reduce_by_key(|x, y| x + y));
        let rbk2 = capture(&keyed.reduce_by_key_into(|x, y| x.max(y), 2));
        let gbk = capture(&keyed.group_by_key().map(|(k, vs)| (k, sorted(vs))));
        let cbk = capture(&keyed.combine_by_key(
            |v| (v, 1i64),
            |(s, n), v| (s + v, n + 1),
            |a, b| (a.0 + b.0, a.1 + b.1),
        ));
        let values = capture(&keyed.map_values(|v| v * 10));
        run(&s);
        for (i, batch) in s.batches_a.iter().enumerate() {
            assert_eq!(
                count.lock().unwrap()[i],
                vec![batch.len() as i64],
                "seed {seed} batch {i}"
            );
            let sum: Option<i64> = batch.iter().copied().reduce(|x, y| x + y);
            assert_eq!(
                reduce.lock().unwrap()[i],
                sum.into_iter().collect::<Vec<_>>(),
                "seed {seed}"
            );
            assert_eq!(
                by_value.lock().unwrap()[i],
                counts(batch).into_iter().collect::<Vec<_>>()
            );
            let mut groups: BTreeMap<i64, Vec<i64>> = BTreeMap::new();
            for (k, v) in pairs(batch) {
                groups.entry(k).or_default().push(v);
            }
            let sums: Vec<(i64, i64)> =
                groups.iter().map(|(k, vs)| (*k, vs.iter().sum())).collect();
            assert_eq!(rbk.lock().unwrap()[i], sums, "seed {seed}");
            let maxes: Vec<(i64, i64)> = groups
                .iter()
                .map(|(k, vs)| (*k, *vs.iter().max().unwrap()))
                .collect();
            assert_eq!(rbk2.lock().unwrap()[i], maxes);
            let grouped: Vec<(i64, Vec<i64>)> = groups
                .iter()
                .map(|(k, vs)| (*k, sorted(vs.clone())))
                .collect();
            assert_eq!(gbk.lock().unwrap()[i], grouped);
            let combined: Vec<(i64, (i64, i64))> = groups
                .iter()
                .map(|(k, vs)| (*k, (vs.iter().sum(), vs.len() as i64)))
                .collect();
            assert_eq!(cbk.lock().unwrap()[i], combined);
            assert_eq!(
                values.lock().unwrap()[i],
                sorted(pairs(batch).into_iter().map(|(k, v)| (k, v * 10)).collect())
            );
        }
    }
}

#[test]
fn joins_of_two_streams_match_the_reference_batch_by_batch() {
    for seed in 0..SEEDS {
        let s = setup(seed);
        let left = s.a.map(|x| (x.rem_euclid(7), x));
        let right = s.b.map(|x| (x.rem_euclid(5), -x));
        let join = capture(&left.join(&right));
        let outer = capture(&left.left_outer_join(&right));
        let cogroup = capture(
            &left
                .cogroup(&right)
                .map(|(k, (vs, ws))| (k, (sorted(vs), sorted(ws)))),
        );
        let twice = capture(&s.a.transform_with(&s.b, |x, y, _| Ok(x.union(y).map(|v| v * 2))));
        run(&s);
        for i in 0..s.batches_a.len() {
            let l = pairs(&s.batches_a[i]);
            let r: Vec<(i64, i64)> = s.batches_b[i]
                .iter()
                .map(|&x| (x.rem_euclid(5), -x))
                .collect();
            let mut expect_join = Vec::new();
            let mut expect_outer = Vec::new();
            for &(k, v) in &l {
                let matches: Vec<i64> = r
                    .iter()
                    .filter(|(rk, _)| *rk == k)
                    .map(|(_, w)| *w)
                    .collect();
                if matches.is_empty() {
                    expect_outer.push((k, (v, None)));
                }
                for w in matches {
                    expect_join.push((k, (v, w)));
                    expect_outer.push((k, (v, Some(w))));
                }
            }
            assert_eq!(
                join.lock().unwrap()[i],
                sorted(expect_join),
                "seed {seed} batch {i}"
            );
            assert_eq!(
                outer.lock().unwrap()[i],
                sorted(expect_outer),
                "seed {seed} batch {i}"
            );
            let mut groups: BTreeMap<i64, (Vec<i64>, Vec<i64>)> = BTreeMap::new();
            for (k, v) in &l {
                groups.entry(*k).or_default().0.push(*v);
            }
            for (k, w) in &r {
                groups.entry(*k).or_default().1.push(*w);
            }
            let expect: Vec<_> = groups
                .into_iter()
                .map(|(k, (vs, ws))| (k, (sorted(vs), sorted(ws))))
                .collect();
            assert_eq!(cogroup.lock().unwrap()[i], expect, "seed {seed}");
            let mut both: Vec<i64> = s.batches_a[i]
                .iter()
                .chain(&s.batches_b[i])
                .map(|v| v * 2)
                .collect();
            both.sort();
            assert_eq!(twice.lock().unwrap()[i], both);
        }
    }
}

#[test]
fn a_shared_parent_is_computed_once_per_batch() {
    let s = setup(7);
    let computed = Arc::new(Mutex::new(0usize));
    let c = Arc::clone(&computed);
    let shared = s.a.transform(move |rdd, _| {
        *c.lock().unwrap() += 1;
        Ok(rdd.clone())
    });
    let x = capture(&shared.map(|v| v + 1));
    let y = capture(&shared.filter(|v| *v > 0));
    run(&s);
    assert_eq!(*computed.lock().unwrap(), s.batches_a.len());
    assert_eq!(x.lock().unwrap().len(), s.batches_a.len());
    assert_eq!(y.lock().unwrap().len(), s.batches_a.len());
}

#[test]
fn served_views_merge_each_batch_per_key_and_replay_over_other_inputs() {
    for seed in 0..SEEDS {
        let s = setup(seed);
        let view =
            s.a.map(|x| (format!("k{}", x.rem_euclid(7)), 1i64))
                .serve("counts")
                .unwrap();
        assert!(
            s.a.map(|x| (x.to_string(), 1i64)).serve("counts").is_err(),
            "a second view of one name"
        );
        let mut served = Vec::new();
        for i in 0..s.batches_a.len() {
            served.push(
                s.ssc
                    .run_batch(Time::from_millis(50 * (i as i64 + 1)))
                    .unwrap(),
            );
        }
        for (i, batch) in s.batches_a.iter().enumerate() {
            let mut expect: HashMap<String, i64> = HashMap::new();
            for x in batch {
                *expect.entry(format!("k{}", x.rem_euclid(7))).or_insert(0) += 1;
            }
            let delta = &served[i].served;
            assert_eq!(delta.len(), 1);
            assert_eq!(delta[0].view, "counts");
            // A key at most once per partition of the batch.
            let mut seen: HashMap<&str, usize> = HashMap::new();
            for (k, _) in &delta[0].pairs {
                *seen.entry(k).or_insert(0) += 1;
            }
            assert!(seen.values().all(|&n| n <= 5), "seed {seed}: {seen:?}");
            let merged = delta[0].merged();
            let got: HashMap<String, i64> = merged
                .iter()
                .map(|(k, v)| match v {
                    AggValue::Count(n) => (k.clone(), *n),
                    other => panic!("not a count: {other:?}"),
                })
                .collect();
            assert_eq!(got.len(), merged.len(), "merged: each key once");
            assert_eq!(got, expect, "seed {seed} batch {i}");
            assert_eq!(served[i].records[0].1, batch.len() as u64);
        }
        // The same program over other input (what the batch layer does over
        // the master dataset): all batches at once.
        let all: Vec<i64> = s.batches_a.concat();
        let mut inputs = lamina::streaming::InputRdds::new();
        inputs.insert(
            view.input_ids()[0],
            s.ssc.context().parallelize(all.clone(), 3),
        );
        let replayed = view
            .pairs_over(s.ssc.context(), Time::from_millis(0), inputs)
            .unwrap();
        let mut total: HashMap<String, i64> = HashMap::new();
        for (k, v) in replayed.collect().unwrap() {
            let AggValue::Count(n) = v else { panic!() };
            *total.entry(k).or_insert(0) += n;
        }
        let mut expect: HashMap<String, i64> = HashMap::new();
        for x in &all {
            *expect.entry(format!("k{}", x.rem_euclid(7))).or_insert(0) += 1;
        }
        assert_eq!(total, expect, "seed {seed}");
    }
}

#[test]
fn print_writes_a_header_with_the_batch_time_and_the_first_elements() {
    let ctx = Context::builder().threads(2).build().unwrap();
    let ssc = StreamingContext::new(ctx, Duration::from_millis(100)).unwrap();
    let text = Arc::new(Mutex::new(String::new()));
    let into = Arc::clone(&text);
    ssc.queue_stream(vec![(0..15).collect::<Vec<i64>>(), vec![]])
        .print_to(10, move |t| into.lock().unwrap().push_str(t));
    ssc.run_batch(Time::from_millis(1000)).unwrap();
    ssc.run_batch(Time::from_millis(1100)).unwrap();
    let rule = "-------------------------------------------";
    let first: String = (0..10).map(|i| format!("{i}\n")).collect();
    assert_eq!(
        *text.lock().unwrap(),
        format!("{rule}\nTime: 1000 ms\n{rule}\n{first}...\n\n{rule}\nTime: 1100 ms\n{rule}\n\n")
    );
}

#[test]
fn save_as_text_files_writes_a_directory_per_batch() {
    let dir = std::env::temp_dir().join(format!("lamina-save-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let ctx = Context::builder().threads(2).build().unwrap();
    let ssc = StreamingContext::new(ctx, Duration::from_millis(100)).unwrap();
    ssc.queue_stream(vec![vec![1, 2, 3], vec![4]])
        .save_as_text_files(dir.join("out"), "txt");
    ssc.run_batch(Time::from_millis(100)).unwrap();
    ssc.run_batch(Time::from_millis(200)).unwrap();
    for (t, expect) in [(100, vec![1, 2, 3]), (200, vec![4])] {
        let batch = dir.join(format!("out-{t}.txt"));
        assert!(batch.join("_SUCCESS").exists(), "{}", batch.display());
        let mut got: Vec<i64> = Vec::new();
        for entry in std::fs::read_dir(&batch).unwrap() {
            let path = entry.unwrap().path();
            if path
                .file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("part-")
            {
                got.extend(
                    std::fs::read_to_string(path)
                        .unwrap()
                        .lines()
                        .map(|l| l.parse::<i64>().unwrap()),
                );
            }
        }
        got.sort();
        assert_eq!(got, expect);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_failing_batch_stops_the_context_with_its_error() {
    let ctx = Context::builder().threads(2).build().unwrap();
    let ssc = StreamingContext::new(ctx, Duration::from_millis(20)).unwrap();
    assert!(ssc.start().is_err(), "no output operation");
    ssc.queue_stream(vec![vec![1i64]]).foreach_rdd(|rdd, _| {
        rdd.count()?;
        Err(lamina::Error::execution("the sink is down"))
    });
    ssc.start().unwrap();
    let err = ssc
        .await_termination_timeout(Duration::from_secs(10))
        .unwrap_err();
    assert!(err.to_string().contains("the sink is down"), "{err}");
    assert!(ssc.start().is_err(), "cannot start twice");
    ssc.stop();
}

#[test]
fn intervals_under_ten_ms_are_refused() {
    let ctx = Context::builder().threads(1).build().unwrap();
    let err = StreamingContext::new(ctx, Duration::from_millis(5)).unwrap_err();
    assert!(err.to_string().contains("at least 10 ms"), "{err}");
}
