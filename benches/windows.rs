//! A 30 s window sliding every 1 s over the NetworkWordCount load, with and
//! without an inverse function.
//!
//! ```text
//! cargo bench -p lamina --bench windows
//! ```
//!
//! Every 1 s batch holds fresh lines of 8 words drawn Zipf (s = 1) from a
//! 100,000-word vocabulary (`LAMINA_BENCH_LINES` lines per batch, default
//! 20,000). The same batches run through `reduce_by_key_and_window` (the
//! window's pairs reduced every slide) and
//! `reduce_by_key_and_window_inverse` (last window + entering batch −
//! leaving batch, keys at 0 dropped), on a 2-thread context. After 30
//! batches fill the window, 20 more are timed; the bench prints the median
//! ms per batch of each, the lines per second they sustain, and the ratio.
//! Both must agree on every window (checked). `LAMINA_BENCH_DURABLE=1`
//! runs them as the server does (`set_durable`: every kept batch encoded
//! as a state change).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lamina::Context;
use lamina::streaming::input::QueueInput;
use lamina::streaming::{DStream, InputStream, StreamingContext, Time};

#[path = "../tests/support/mod.rs"]
mod support;

use support::{Rng, Zipf};

const VOCABULARY: usize = 100_000;
const WORDS_PER_LINE: usize = 8;
const FILL: usize = 30;
const TIMED: usize = 20;

fn lines(n: usize, zipf: &Zipf, rng: &mut Rng) -> Vec<String> {
    (0..n)
        .map(|_| {
            (0..WORDS_PER_LINE)
                .map(|_| format!("w{}", zipf.rank(rng.unit())))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

type Windows = Arc<Mutex<Vec<Vec<(String, i64)>>>>;

fn program(inverse: bool) -> (StreamingContext, Arc<QueueInput<String>>, Windows) {
    let ctx = Context::builder().threads(2).build().expect("context");
    let ssc = StreamingContext::new(ctx, Duration::from_secs(1)).expect("interval");
    ssc.set_durable(std::env::var("LAMINA_BENCH_DURABLE").is_ok_and(|v| v == "1"));
    let queue = Arc::new(QueueInput::<String>::new(Vec::new()));
    let lines: DStream<String> =
        ssc.input_stream(Arc::clone(&queue) as Arc<dyn InputStream<String>>);
    let pairs = lines
        .flat_map(|l: String| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .map(|w| (w, 1i64));
    let (len, slide) = (Duration::from_secs(30), Duration::from_secs(1));
    let windowed = if inverse {
        pairs
            .reduce_by_key_and_window_inverse(
                |a, b| a + b,
                |a, b| a - b,
                len,
                slide,
                |(_, c)| *c > 0,
            )
            .expect("window")
    } else {
        pairs
            .reduce_by_key_and_window(|a, b| a + b, len, slide)
            .expect("window")
    };
    let seen: Windows = Arc::default();
    let into = Arc::clone(&seen);
    windowed.foreach_rdd(move |rdd, _| {
        let mut w = rdd.collect()?;
        w.sort();
        into.lock().unwrap().push(w);
        Ok(())
    });
    (ssc, queue, seen)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let per_batch: usize = std::env::var("LAMINA_BENCH_LINES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20_000);
    let zipf = Zipf::new(VOCABULARY);
    let mut rng = Rng(7);
    let (plain, plain_q, plain_seen) = program(false);
    let (inv, inv_q, inv_seen) = program(true);
    let (mut plain_ms, mut inv_ms) = (Vec::new(), Vec::new());
    for b in 0..FILL + TIMED {
        // Fresh lines every batch; both programs get the same ones.
        let batch = lines(per_batch, &zipf, &mut rng);
        let time = Time::from_millis(1000 * (b as i64 + 1));
        let parts = |v: &Vec<String>| {
            let half = v.len() / 2;
            vec![v[..half].to_vec(), v[half..].to_vec()]
        };
        plain_q.push(parts(&batch));
        inv_q.push(parts(&batch));
        // Alternate which runs first, so that neither always runs on a
        // cache the other warmed.
        let timed = |ssc: &StreamingContext| {
            let start = Instant::now();
            ssc.run_batch(time).expect("batch");
            start.elapsed().as_secs_f64() * 1e3
        };
        let (p, i) = if b % 2 == 0 {
            let p = timed(&plain);
            (p, timed(&inv))
        } else {
            let i = timed(&inv);
            (timed(&plain), i)
        };
        if b >= FILL {
            plain_ms.push(p);
            inv_ms.push(i);
        }
    }
    assert_eq!(
        *plain_seen.lock().unwrap(),
        *inv_seen.lock().unwrap(),
        "the two windows differ"
    );
    let (p, i) = (median(plain_ms), median(inv_ms));
    println!(
        "window 30 s / slide 1 s, {per_batch} lines ({} words) per batch, Zipf over {VOCABULARY} words, {TIMED} batches after {FILL}:",
        per_batch * WORDS_PER_LINE
    );
    println!(
        "  without inverse: {p:.1} ms per batch (median) = {:.0} lines/s",
        per_batch as f64 / p * 1e3
    );
    println!(
        "  with inverse:    {i:.1} ms per batch (median) = {:.0} lines/s",
        per_batch as f64 / i * 1e3
    );
    println!("  throughput ratio (with / without inverse): {:.2}", p / i);
}
