//! Window operations against a sequential reference: random batches,
//! random window lengths and slides (multiples of the interval), with and
//! without the inverse function.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lamina::streaming::input::QueueInput;
use lamina::streaming::{DStream, InputStream, StreamingContext, Time};
use lamina::{Context, Data};

const INTERVAL: i64 = 50;

mod support;

use support::Rng;

struct Case {
    ssc: StreamingContext,
    stream: DStream<i64>,
    batches: Vec<Vec<i64>>,
    length: i64,
    slide: i64,
}

fn case(seed: u64) -> Case {
    let mut rng = Rng(seed);
    let ctx = Context::builder()
        .threads(1 + rng.below(3) as usize)
        .build()
        .unwrap();
    let ssc = StreamingContext::new(ctx, Duration::from_millis(INTERVAL as u64)).unwrap();
    let n = 6 + rng.below(14) as usize;
    let batches: Vec<Vec<i64>> = (0..n)
        .map(|_| {
            let len = if rng.below(4) == 0 {
                0
            } else {
                rng.below(60) as usize
            };
            (0..len).map(|_| rng.below(9) as i64).collect()
        })
        .collect();
    let slide = INTERVAL * (1 + rng.below(3) as i64);
    let length = slide * (1 + rng.below(4) as i64);
    let queue = QueueInput::new(batches.iter().map(|b| {
        let cut = b.len() / 2;
        vec![b[..cut].to_vec(), b[cut..].to_vec()]
    }));
    let stream = ssc.input_stream(Arc::new(queue) as Arc<dyn InputStream<i64>>);
    Case {
        ssc,
        stream,
        batches,
        length,
        slide,
    }
}

/// Outputs with their batch time (ms).
type Captured<T> = Arc<Mutex<Vec<(i64, Vec<T>)>>>;

/// Every output of `stream`, with its time, each sorted.
fn capture<T: Data + Ord>(stream: &DStream<T>) -> Captured<T> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let into = Arc::clone(&out);
    stream.foreach_rdd(move |rdd, time| {
        let mut got = rdd.collect()?;
        got.sort();
        into.lock().unwrap().push((time.millis(), got));
        Ok(())
    });
    out
}

fn run(c: &Case) {
    for i in 1..=c.batches.len() as i64 {
        c.ssc.run_batch(Time::from_millis(INTERVAL * i)).unwrap();
    }
}

/// The elements of the window ending at `t`.
fn window_at(c: &Case, t: i64) -> Vec<i64> {
    let mut out: Vec<i64> = c
        .batches
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            let bt = INTERVAL * (*i as i64 + 1);
            bt > t - c.length && bt <= t
        })
        .flat_map(|(_, b)| b.iter().copied())
        .collect();
    out.sort();
    out
}

/// The batch times at which a window sliding by `slide` has a result.
fn slide_times(c: &Case) -> Vec<i64> {
    (1..=c.batches.len() as i64)
        .map(|i| INTERVAL * i)
        .filter(|t| t % c.slide == 0)
        .collect()
}

fn counts(v: &[i64]) -> Vec<(i64, i64)> {
    let mut m = BTreeMap::new();
    for &x in v {
        *m.entry(x).or_insert(0i64) += 1;
    }
    m.into_iter().collect()
}

const SEEDS: u64 = 40;

#[test]
fn windows_match_the_reference() {
    for seed in 0..SEEDS {
        let c = case(seed);
        let (length, slide) = (
            Duration::from_millis(c.length as u64),
            Duration::from_millis(c.slide as u64),
        );
        let window = capture(&c.stream.window(length, slide).unwrap());
        let count = capture(&c.stream.count_by_window(length, slide).unwrap());
        let reduce = capture(
            &c.stream
                .reduce_by_window(|a, b| a + b, length, slide)
                .unwrap(),
        );
        let pairs = c.stream.map(|x| (x % 4, x));
        let by_key = capture(
            &pairs
                .reduce_by_key_and_window(|a, b| a + b, length, slide)
                .unwrap(),
        );
        let by_key_inv = capture(
            &pairs
                .map_values(|_| 1i64)
                .reduce_by_key_and_window_inverse(
                    |a, b| a + b,
                    |a, b| a - b,
                    length,
                    slide,
                    |(_, n)| *n != 0,
                )
                .unwrap(),
        );
        let by_value = capture(&c.stream.count_by_value_and_window(length, slide).unwrap());
        run(&c);
        let times = slide_times(&c);
        let label = format!("seed {seed}, length {} slide {}", c.length, c.slide);
        assert_eq!(
            window
                .lock()
                .unwrap()
                .iter()
                .map(|(t, _)| *t)
                .collect::<Vec<_>>(),
            times,
            "{label}"
        );
        for (i, &t) in times.iter().enumerate() {
            let expect = window_at(&c, t);
            assert_eq!(window.lock().unwrap()[i].1, expect, "{label} at {t}");
            assert_eq!(
                count.lock().unwrap()[i].1,
                vec![expect.len() as i64],
                "{label} at {t}"
            );
            let sum: Option<i64> = expect.iter().copied().reduce(|a, b| a + b);
            assert_eq!(
                reduce.lock().unwrap()[i].1,
                sum.into_iter().collect::<Vec<_>>(),
                "{label}"
            );
            let mut per_key: BTreeMap<i64, (i64, i64)> = BTreeMap::new();
            for x in &expect {
                let e = per_key.entry(x % 4).or_insert((0, 0));
                e.0 += x;
                e.1 += 1;
            }
            let sums: Vec<(i64, i64)> = per_key.iter().map(|(k, (s, _))| (*k, *s)).collect();
            let key_counts: Vec<(i64, i64)> = per_key.iter().map(|(k, (_, n))| (*k, *n)).collect();
            assert_eq!(by_key.lock().unwrap()[i].1, sums, "{label} at {t}");
            assert_eq!(
                by_key_inv.lock().unwrap()[i].1,
                key_counts,
                "{label} at {t} (inverse)"
            );
            assert_eq!(
                by_value.lock().unwrap()[i].1,
                counts(&expect),
                "{label} at {t} (by value)"
            );
        }
    }
}

#[test]
fn window_lengths_and_slides_must_be_multiples_of_the_interval() {
    let c = case(1);
    let err = c
        .stream
        .window(Duration::from_millis(120), Duration::from_millis(50))
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("window length (120ms) must be a positive multiple"),
        "{err}"
    );
    let err = c
        .stream
        .window(Duration::from_millis(100), Duration::from_millis(75))
        .unwrap_err();
    assert!(err.to_string().contains("slide (75ms)"), "{err}");
    assert!(
        c.stream
            .window(Duration::ZERO, Duration::from_millis(50))
            .is_err()
    );
    // A window of a window: multiples of the first one's slide.
    let w = c
        .stream
        .window(Duration::from_millis(200), Duration::from_millis(100))
        .unwrap();
    assert_eq!(w.slide(), Duration::from_millis(100));
    assert!(
        w.window(Duration::from_millis(300), Duration::from_millis(150))
            .is_err()
    );
    assert!(
        w.window(Duration::from_millis(400), Duration::from_millis(200))
            .is_ok()
    );
}

#[test]
fn a_windowed_stream_cannot_be_served_and_mixed_slides_fail_clearly() {
    let c = case(2);
    let w = c
        .stream
        .window(Duration::from_millis(100), Duration::from_millis(100))
        .unwrap();
    let err = w.map(|x| (x.to_string(), 1i64)).serve("w").unwrap_err();
    assert!(
        err.to_string()
            .contains("windowed or stateful stream cannot be served"),
        "{err}"
    );
    // Union of a windowed and a plain stream: an error at the batch, naming both slides.
    c.stream
        .union(&w)
        .foreach_rdd(|rdd, _| rdd.count().map(|_| ()));
    let err = c.ssc.run_batch(Time::from_millis(100)).unwrap_err();
    assert!(err.to_string().contains("different slides"), "{err}");
}

/// In a context whose batches are committed, a window's kept batches are
/// reported as state changes; restarted mid-stream from them, windows go
/// on exactly as if never stopped — plain and incremental. A batch that
/// failed leaves nothing in the window (its retry runs at a later time).
#[test]
fn windows_restored_from_the_reported_changes_continue_exactly() {
    type Seen = Arc<Mutex<Vec<String>>>;
    fn program(
        batches: Vec<Vec<(u8, i64)>>,
        seen: &Seen,
        fail_at: Option<i64>,
    ) -> StreamingContext {
        let ctx = Context::builder().threads(2).build().unwrap();
        let ssc = StreamingContext::new(ctx, Duration::from_millis(INTERVAL as u64)).unwrap();
        ssc.set_durable(true);
        let queue = QueueInput::new(batches.into_iter().map(|b| vec![b]));
        let stream = ssc.input_stream(Arc::new(queue) as Arc<dyn InputStream<(u8, i64)>>);
        let (len, slide) = (Duration::from_millis(200), Duration::from_millis(100));
        let plain = stream
            .reduce_by_key_and_window(|a, b| a + b, len, slide)
            .unwrap();
        let inc = stream
            .reduce_by_key_and_window_inverse(
                |a, b| a + b,
                |a, b| a - b,
                len,
                slide,
                |(_, v)| *v != 0,
            )
            .unwrap();
        for (name, s) in [("plain", plain), ("inverse", inc)] {
            let into = Arc::clone(seen);
            s.foreach_rdd(move |rdd, t| {
                if Some(t.millis()) == fail_at {
                    return Err(lamina::Error::execution("the sink is down"));
                }
                let mut got = rdd.collect()?;
                got.sort();
                into.lock()
                    .unwrap()
                    .push(format!("{} {name} {got:?}", t.millis()));
                Ok(())
            });
        }
        ssc
    }
    for seed in 0..16 {
        let mut rng = Rng(seed ^ 0x3C);
        let n = 8 + rng.below(10) as usize;
        let batches: Vec<Vec<(u8, i64)>> = (0..n)
            .map(|_| {
                (0..rng.below(8))
                    .map(|_| (rng.below(5) as u8, 1 + rng.below(4) as i64))
                    .collect()
            })
            .collect();
        let cut = 1 + rng.below(n as u64 - 1) as usize;
        let time = |i: usize| Time::from_millis(INTERVAL * (i as i64 + 1));
        let whole: Seen = Arc::default();
        let ssc = program(batches.clone(), &whole, None);
        for i in 0..n {
            ssc.run_batch(time(i)).unwrap();
        }
        let parts: Seen = Arc::default();
        let mut stored = support::Stored::new();
        let first = program(batches[..cut].to_vec(), &parts, None);
        for i in 0..cut {
            support::apply_changes(&mut stored, &first.run_batch(time(i)).unwrap());
        }
        let second = program(batches[cut..].to_vec(), &parts, None);
        for op in second.stateful_operators() {
            let entries = stored.get(&op.name).cloned().unwrap_or_default();
            second
                .restore_state(&op.name, &mut entries.into_iter())
                .unwrap();
        }
        for i in cut..n {
            second.run_batch(time(i)).unwrap();
        }
        assert_eq!(
            *parts.lock().unwrap(),
            *whole.lock().unwrap(),
            "seed {seed}, cut {cut}"
        );
    }
    // A failed batch's records are not kept by the window: its retry at
    // the next time is the only one counted.
    let seen: Seen = Arc::default();
    let batches = vec![
        vec![(1u8, 1i64)],
        vec![(1, 10)],
        vec![(1, 10)],
        vec![],
        vec![],
    ];
    let ssc = program(batches, &seen, Some(100));
    ssc.run_batch(Time::from_millis(50)).unwrap();
    assert!(ssc.run_batch(Time::from_millis(100)).is_err());
    // The queue gave its second batch to the failed run; the third is the
    // "retry" of the same records (as the server's log replays them).
    ssc.run_batch(Time::from_millis(150)).unwrap();
    ssc.run_batch(Time::from_millis(200)).unwrap();
    let seen = seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec![
            "200 plain [(1, 11)]".to_string(),
            "200 inverse [(1, 11)]".to_string()
        ]
    );
}
