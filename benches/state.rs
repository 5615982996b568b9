//! `map_with_state`: the cost of a batch follows the keys it touches, not
//! the keys with state.
//!
//! ```text
//! cargo bench -p lamina --bench state
//! ```
//!
//! Builds the state up to 1M and then 10M keys (batches of 500k new keys),
//! and at each size runs 30 batches that each touch 10,000 random existing
//! keys (u64 keys, i64 running counts, a 2-thread context), printing the
//! median and p90 ms per batch and the ratio 10M / 1M. `LAMINA_BENCH_KEYS`
//! replaces the sizes (comma-separated).

use std::sync::Arc;
use std::time::{Duration, Instant};

use lamina::Context;
use lamina::streaming::input::QueueInput;
use lamina::streaming::state::{State, StateSpec};
use lamina::streaming::{InputStream, StreamingContext, Time};

// The seeded generator of the streaming tests.
#[path = "../tests/support/mod.rs"]
mod support;

use support::Rng;

fn count(_: Time, _: &u64, v: Option<i64>, st: &mut State<i64>) -> i64 {
    let c = st.get().copied().unwrap_or(0) + v.unwrap_or(0);
    if v.is_some() {
        st.update(c).expect("not timing out");
    }
    c
}

fn median(mut v: Vec<f64>, q: f64) -> f64 {
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * q) as usize]
}

fn main() {
    let sizes: Vec<u64> = std::env::var("LAMINA_BENCH_KEYS")
        .ok()
        .map(|s| s.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1_000_000, 10_000_000]);
    let ctx = Context::builder().threads(2).build().expect("context");
    let ssc = StreamingContext::new(ctx, Duration::from_millis(50)).expect("interval");
    let queue = Arc::new(QueueInput::<(u64, i64)>::new(Vec::new()));
    let stream = ssc.input_stream(Arc::clone(&queue) as Arc<dyn InputStream<(u64, i64)>>);
    let mapped = stream
        .map_with_state(StateSpec::function(count))
        .expect("a fresh context");
    mapped
        .stream()
        .foreach_rdd(|rdd, _| rdd.count().map(|_| ()));
    let mut time = 0i64;
    let mut next = |ssc: &StreamingContext| {
        time += 50;
        ssc.run_batch(Time::from_millis(time)).expect("batch");
    };
    let mut keys = 0u64;
    let mut rng = Rng(7);
    let mut medians = Vec::new();
    for &size in &sizes {
        let fill = Instant::now();
        while keys < size {
            let n = (size - keys).min(500_000);
            let batch: Vec<(u64, i64)> = (keys..keys + n).map(|k| (k, 1)).collect();
            queue.push(vec![batch]);
            next(&ssc);
            keys += n;
        }
        let fill_s = fill.elapsed().as_secs_f64();
        let mut times = Vec::new();
        for _ in 0..30 {
            let batch: Vec<(u64, i64)> = (0..10_000).map(|_| (rng.next() % keys, 1)).collect();
            queue.push(vec![batch]);
            let t = Instant::now();
            next(&ssc);
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        let (p50, p90) = (median(times.clone(), 0.5), median(times, 0.9));
        println!(
            "map_with_state: {keys} keys of state, batches touching 10,000 keys: p50 {p50:.2} ms, p90 {p90:.2} ms (state built in {fill_s:.1} s)"
        );
        medians.push(p50);
    }
    if medians.len() >= 2 {
        println!(
            "ratio of p50s, {} keys / {} keys: {:.2}",
            sizes[sizes.len() - 1],
            sizes[0],
            medians[medians.len() - 1] / medians[0]
        );
    }
}
