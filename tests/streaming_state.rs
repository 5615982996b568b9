//! `update_state_by_key` against a sequential reference, and a failed
//! batch that runs again without applying its update twice.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lamina::streaming::input::QueueInput;
use lamina::streaming::{InputStream, StreamingContext, Time};
use lamina::{Context, Error};

mod support;

use support::Rng;

/// The update under test: a running total per key; a key whose total
/// passes 40 is removed, and a key with no new values loses 1 (removed at
/// 0) — so keys come, go, and come back.
fn update(values: Vec<i64>, state: Option<i64>) -> Option<i64> {
    let total = state.unwrap_or(0) + values.iter().sum::<i64>() - i64::from(values.is_empty());
    (total > 0 && total <= 40).then_some(total)
}

#[test]
fn update_state_by_key_matches_the_reference() {
    for seed in 0..30 {
        let mut rng = Rng(seed);
        let ctx = Context::builder()
            .threads(1 + rng.below(3) as usize)
            .build()
            .unwrap();
        let ssc = StreamingContext::new(ctx, Duration::from_millis(50)).unwrap();
        let n = 3 + rng.below(10) as usize;
        let batches: Vec<Vec<(u8, i64)>> = (0..n)
            .map(|_| {
                let len = if rng.below(4) == 0 {
                    0
                } else {
                    rng.below(30) as usize
                };
                (0..len)
                    .map(|_| (rng.below(12) as u8, 1 + rng.below(4) as i64))
                    .collect()
            })
            .collect();
        let queue = QueueInput::new(batches.iter().map(|b| {
            let cut = b.len() / 3;
            vec![b[..cut].to_vec(), b[cut..].to_vec()]
        }));
        let stream = ssc.input_stream(Arc::new(queue) as Arc<dyn InputStream<(u8, i64)>>);
        let states = stream.update_state_by_key(update);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let into = Arc::clone(&seen);
        states.foreach_rdd(move |rdd, _| {
            let mut got = rdd.collect()?;
            got.sort();
            into.lock().unwrap().push(got);
            Ok(())
        });
        let mut reference: BTreeMap<u8, i64> = BTreeMap::new();
        for (i, batch) in batches.iter().enumerate() {
            ssc.run_batch(Time::from_millis(50 * (i as i64 + 1)))
                .unwrap();
            let mut values: BTreeMap<u8, Vec<i64>> = BTreeMap::new();
            for (k, v) in batch {
                values.entry(*k).or_default().push(*v);
            }
            let keys: Vec<u8> = reference.keys().chain(values.keys()).copied().collect();
            let mut next = BTreeMap::new();
            for k in keys {
                if let Some(s) = update(
                    values.get(&k).cloned().unwrap_or_default(),
                    reference.get(&k).copied(),
                ) {
                    next.insert(k, s);
                }
            }
            reference = next;
            let expect: Vec<(u8, i64)> = reference.iter().map(|(k, v)| (*k, *v)).collect();
            assert_eq!(seen.lock().unwrap()[i], expect, "seed {seed} batch {i}");
        }
    }
}

#[test]
fn a_failed_batch_runs_again_from_the_old_state() {
    let ctx = Context::builder().threads(2).build().unwrap();
    let ssc = StreamingContext::new(ctx, Duration::from_millis(50)).unwrap();
    let queue = Arc::new(QueueInput::new(vec![vec![vec![('a', 1i64), ('a', 2)]]]));
    let stream = ssc.input_stream(Arc::clone(&queue) as Arc<dyn InputStream<(char, i64)>>);
    let totals = stream.update_state_by_key(|vs: Vec<i64>, s: Option<i64>| {
        Some(s.unwrap_or(0) + vs.iter().sum::<i64>())
    });
    let fail_once = Arc::new(AtomicBool::new(true));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (f, into) = (Arc::clone(&fail_once), Arc::clone(&seen));
    totals.foreach_rdd(move |rdd, _| {
        let got = rdd.collect()?;
        if f.swap(false, Ordering::SeqCst) {
            return Err(Error::execution("the sink is down"));
        }
        into.lock().unwrap().push(got);
        Ok(())
    });
    assert!(ssc.run_batch(Time::from_millis(50)).is_err());
    // The same records again (as the server's log replays them).
    queue.push(vec![vec![('a', 1), ('a', 2)]]);
    ssc.run_batch(Time::from_millis(50)).unwrap();
    queue.push(vec![vec![('a', 10)]]);
    ssc.run_batch(Time::from_millis(100)).unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![vec![('a', 3)], vec![('a', 13)]]);
}

#[test]
fn a_stateful_stream_is_updated_every_batch_even_when_its_output_slides() {
    let ctx = Context::builder().threads(2).build().unwrap();
    let ssc = StreamingContext::new(ctx, Duration::from_millis(50)).unwrap();
    let stream = ssc.queue_stream((1..=4).map(|i| vec![('k', i as i64)]));
    let totals = stream.update_state_by_key(|vs: Vec<i64>, s: Option<i64>| {
        Some(s.unwrap_or(0) + vs.iter().sum::<i64>())
    });
    let seen = Arc::new(Mutex::new(Vec::new()));
    let into = Arc::clone(&seen);
    totals
        .window(Duration::from_millis(100), Duration::from_millis(100))
        .unwrap()
        .foreach_rdd(move |rdd, t| {
            let mut got = rdd.collect()?;
            got.sort();
            into.lock().unwrap().push((t.millis(), got));
            Ok(())
        });
    for i in 1..=4 {
        ssc.run_batch(Time::from_millis(50 * i)).unwrap();
    }
    // Totals 1, 3, 6, 10; windows of two batches at 100 and 200 ms.
    assert_eq!(
        *seen.lock().unwrap(),
        vec![
            (100, vec![('k', 1), ('k', 3)]),
            (200, vec![('k', 6), ('k', 10)])
        ]
    );
    let err = totals
        .map(|(k, v)| (k.to_string(), v))
        .serve("t")
        .unwrap_err();
    assert!(
        err.to_string().contains("stateful stream cannot be served"),
        "{err}"
    );
}

/// The function under test: a running count per key; it returns the new
/// count for a record and `-last count` for a key that timed out.
fn count_fn(
    _: Time,
    _: &u8,
    value: Option<i64>,
    state: &mut lamina::streaming::state::State<i64>,
) -> i64 {
    match value {
        Some(v) => {
            let n = state.get().copied().unwrap_or(0) + v;
            state.update(n).unwrap();
            n
        }
        None => {
            assert!(state.is_timing_out());
            assert!(state.update(0).is_err(), "no update while timing out");
            -state.get().copied().unwrap()
        }
    }
}

#[test]
fn map_with_state_matches_the_reference_with_timeouts() -> lamina::Result<()> {
    use lamina::streaming::state::StateSpec;
    for seed in 0..30 {
        let mut rng = Rng(seed ^ 0x77);
        let ctx = Context::builder()
            .threads(1 + rng.below(3) as usize)
            .build()
            .unwrap();
        let ssc = StreamingContext::new(ctx, Duration::from_millis(50)).unwrap();
        let n = 5 + rng.below(15) as usize;
        // Many empty batches, so that keys time out and come back.
        let batches: Vec<Vec<(u8, i64)>> = (0..n)
            .map(|_| {
                let len = if rng.below(2) == 0 {
                    0
                } else {
                    rng.below(12) as usize
                };
                (0..len)
                    .map(|_| (rng.below(6) as u8, 1 + rng.below(3) as i64))
                    .collect()
            })
            .collect();
        let timeout_batches = 1 + rng.below(3) as i64;
        let queue = QueueInput::new(batches.iter().map(|b| vec![b.clone()]));
        let stream = ssc.input_stream(Arc::new(queue) as Arc<dyn InputStream<(u8, i64)>>);
        let mapped = stream.map_with_state(
            StateSpec::function(count_fn)
                .timeout(Duration::from_millis(50 * timeout_batches as u64)),
        )?;
        let outs = Arc::new(Mutex::new(Vec::new()));
        let snaps = Arc::new(Mutex::new(Vec::new()));
        let (o, sn) = (Arc::clone(&outs), Arc::clone(&snaps));
        mapped.stream().foreach_rdd(move |rdd, _| {
            let mut got = rdd.collect()?;
            got.sort();
            o.lock().unwrap().push(got);
            Ok(())
        });
        mapped.state_snapshots().foreach_rdd(move |rdd, _| {
            let mut got = rdd.collect()?;
            got.sort();
            sn.lock().unwrap().push(got);
            Ok(())
        });
        // Reference: state and the batch time of each key's last data.
        let mut state: BTreeMap<u8, (i64, i64)> = BTreeMap::new();
        for (i, batch) in batches.iter().enumerate() {
            let now = 50 * (i as i64 + 1);
            ssc.run_batch(Time::from_millis(now)).unwrap();
            let mut expect_out = Vec::new();
            let mut touched = std::collections::BTreeSet::new();
            for (k, v) in batch {
                let e = state.entry(*k).or_insert((0, now));
                e.0 += v;
                e.1 = now;
                touched.insert(*k);
                expect_out.push(e.0);
            }
            let timed_out: Vec<u8> = state
                .iter()
                .filter(|(k, (_, last))| {
                    !touched.contains(k) && *last <= now - 50 * timeout_batches
                })
                .map(|(k, _)| *k)
                .collect();
            for k in timed_out {
                expect_out.push(-state.remove(&k).unwrap().0);
            }
            expect_out.sort();
            let expect_snap: Vec<(u8, i64)> = state.iter().map(|(k, (s, _))| (*k, *s)).collect();
            assert_eq!(outs.lock().unwrap()[i], expect_out, "seed {seed} batch {i}");
            assert_eq!(
                snaps.lock().unwrap()[i],
                expect_snap,
                "seed {seed} batch {i}"
            );
        }
    }
    Ok(())
}

/// A program's stateful operators, restarted mid-stream from the state
/// changes its batches reported (what a server commits), go on exactly as
/// if never stopped: same outputs, same state — timeouts included, whose
/// clock is each key's last-data time stored with its state.
#[test]
fn state_restored_from_the_reported_changes_continues_exactly() -> lamina::Result<()> {
    use lamina::streaming::state::StateSpec;
    /// The program: a running total with removals, and counts with a
    /// timeout of two batches. Outputs of every batch go to `seen`.
    fn program(
        threads: usize,
        batches: Vec<Vec<(u8, i64)>>,
        seen: &Arc<Mutex<Vec<String>>>,
    ) -> lamina::Result<StreamingContext> {
        let ctx = Context::builder().threads(threads).build().unwrap();
        let ssc = StreamingContext::new(ctx, Duration::from_millis(50))?;
        let queue = QueueInput::new(batches.into_iter().map(|b| vec![b]));
        let stream = ssc.input_stream(Arc::new(queue) as Arc<dyn InputStream<(u8, i64)>>);
        let totals = stream.update_state_by_key(update);
        let counts = stream.map_with_state(
            StateSpec::function(count_fn)
                .timeout(Duration::from_millis(100))
                .name("counts"),
        )?;
        let (a, b) = (Arc::clone(seen), Arc::clone(seen));
        totals.foreach_rdd(move |rdd, t| {
            let mut got = rdd.collect()?;
            got.sort();
            a.lock()
                .unwrap()
                .push(format!("{} totals {got:?}", t.millis()));
            Ok(())
        });
        counts.stream().foreach_rdd(move |rdd, t| {
            let mut got = rdd.collect()?;
            got.sort();
            b.lock()
                .unwrap()
                .push(format!("{} counts {got:?}", t.millis()));
            Ok(())
        });
        Ok(ssc)
    }
    for seed in 0..20 {
        let mut rng = Rng(seed ^ 0x51);
        let n = 6 + rng.below(10) as usize;
        let batches: Vec<Vec<(u8, i64)>> = (0..n)
            .map(|_| {
                let len = if rng.below(3) == 0 {
                    0
                } else {
                    rng.below(10) as usize
                };
                (0..len)
                    .map(|_| (rng.below(8) as u8, 1 + rng.below(3) as i64))
                    .collect()
            })
            .collect();
        let cut = 1 + rng.below(n as u64 - 1) as usize;
        let time = |i: usize| Time::from_millis(50 * (i as i64 + 1));

        // Never stopped.
        let whole = Arc::new(Mutex::new(Vec::new()));
        let ssc = program(1 + rng.below(3) as usize, batches.clone(), &whole)?;
        for i in 0..n {
            ssc.run_batch(time(i))?;
        }

        // Stopped after `cut` batches, restarted from the stored changes
        // (with another thread count: state is re-partitioned on restore).
        let parts = Arc::new(Mutex::new(Vec::new()));
        let mut stored = support::Stored::new();
        let first = program(1 + rng.below(3) as usize, batches[..cut].to_vec(), &parts)?;
        for i in 0..cut {
            let outcome = first.run_batch(time(i))?;
            support::apply_changes(&mut stored, &outcome);
        }
        let second = program(1 + rng.below(3) as usize, batches[cut..].to_vec(), &parts)?;
        let names: Vec<String> = second
            .stateful_operators()
            .into_iter()
            .map(|o| o.name)
            .collect();
        assert_eq!(names, ["update_state_by_key-0", "counts"]);
        support::restore_all(&second, &stored)?;
        for i in cut..n {
            second.run_batch(time(i))?;
        }
        assert_eq!(
            *parts.lock().unwrap(),
            *whole.lock().unwrap(),
            "seed {seed}, restarted after batch {cut}"
        );
    }
    Ok(())
}

/// Idle timeouts bound the state: keys that stop getting data leave it,
/// in memory and in what the server stores (the reported changes). Fresh
/// keys every batch: with a timeout of 5 batches the state never holds
/// more than 6 batches' keys; without one it grows with every batch.
#[test]
fn timeouts_bound_the_state() -> lamina::Result<()> {
    use lamina::streaming::state::StateSpec;
    const KEYS: u64 = 200;
    const BATCHES: u64 = 60;
    let run = |timeout: Option<Duration>| -> lamina::Result<(usize, usize)> {
        let ctx = Context::builder().threads(2).build().unwrap();
        let ssc = StreamingContext::new(ctx, Duration::from_millis(50))?;
        let stream = ssc.queue_stream(
            (0..BATCHES).map(|b| (0..KEYS).map(|k| (b * KEYS + k, 1i64)).collect::<Vec<_>>()),
        );
        let mut spec = StateSpec::function(
            |_: Time, _: &u64, v: Option<i64>, s: &mut lamina::streaming::state::State<i64>| {
                if let Some(v) = v {
                    s.update(v).unwrap();
                }
            },
        );
        if let Some(t) = timeout {
            spec = spec.timeout(t);
        }
        let mapped = stream.map_with_state(spec)?;
        let sizes = Arc::new(Mutex::new(Vec::new()));
        let into = Arc::clone(&sizes);
        mapped.state_snapshots().foreach_rdd(move |rdd, _| {
            into.lock().unwrap().push(rdd.count()?);
            Ok(())
        });
        let mut stored = std::collections::HashSet::new();
        let mut most_stored = 0;
        for b in 1..=BATCHES {
            let outcome = ssc.run_batch(Time::from_millis(50 * b as i64))?;
            for delta in &outcome.state {
                for c in &delta.changes {
                    match c.state {
                        Some(_) => stored.insert(c.key.clone()),
                        None => stored.remove(&c.key),
                    };
                }
            }
            most_stored = most_stored.max(stored.len());
        }
        let most_in_memory = *sizes.lock().unwrap().iter().max().unwrap() as usize;
        Ok((most_in_memory, most_stored))
    };
    let bounded = run(Some(Duration::from_millis(250)))?;
    let unbounded = run(None)?;
    assert!(
        bounded.0 <= 6 * KEYS as usize && bounded.1 <= 6 * KEYS as usize,
        "{bounded:?}"
    );
    assert_eq!(
        unbounded,
        ((KEYS * BATCHES) as usize, (KEYS * BATCHES) as usize)
    );
    Ok(())
}

/// The initial state is there for the first batch (and committed with it),
/// and ignored when state was restored.
#[test]
fn map_with_state_starts_from_its_initial_state_unless_restored() -> lamina::Result<()> {
    use lamina::streaming::state::StateSpec;
    let run = |restore: Option<Vec<(Vec<u8>, Vec<u8>)>>| -> lamina::Result<_> {
        let ctx = Context::builder().threads(2).build().unwrap();
        let ssc = StreamingContext::new(ctx.clone(), Duration::from_millis(50))?;
        let stream = ssc.queue_stream(vec![vec![(1u8, 1i64), (3, 1)]]);
        let initial = ctx.parallelize(vec![(1u8, 10i64), (2, 20)], 2);
        let mapped = stream.map_with_state(
            StateSpec::function(count_fn)
                .initial_state(initial)
                .name("c"),
        )?;
        let snaps = Arc::new(Mutex::new(Vec::new()));
        let into = Arc::clone(&snaps);
        mapped.state_snapshots().foreach_rdd(move |rdd, _| {
            let mut got = rdd.collect()?;
            got.sort();
            into.lock().unwrap().push(got);
            Ok(())
        });
        if let Some(entries) = restore {
            ssc.restore_state("c", &mut entries.into_iter())?;
        }
        let outcome = ssc.run_batch(Time::from_millis(50))?;
        ssc.run_batch(Time::from_millis(100))?;
        let snaps = snaps.lock().unwrap().clone();
        Ok((snaps, outcome.state))
    };
    let (snaps, state) = run(None)?;
    let first = vec![(1u8, 11i64), (2, 20), (3, 1)];
    assert_eq!(snaps, vec![first.clone(), first]);
    // Committed with the first batch: all three keys.
    assert_eq!(state[0].changes.len(), 3);
    // Restored state wins over the initial one.
    use lamina::streaming::durable::encode;
    let stored = vec![(encode(&5u8)?, encode(&(7i64, 0i64))?)];
    let (snaps, _) = run(Some(stored))?;
    assert_eq!(snaps[0], vec![(1u8, 1i64), (3, 1), (5, 7)]);
    Ok(())
}
