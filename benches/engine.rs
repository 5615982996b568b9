//! Engine benchmarks: word count over 10M Zipf-distributed words (~100k
//! distinct) and a group-by-sum over 10M (key, value) rows, each through the
//! generic RDD API and through the view definition over Arrow batches, at 1
//! and 2 threads, next to a plain single-threaded hash-map loop over the same
//! data (what one core does with no framework).
//!
//! `cargo bench -p lamina --bench engine` runs them all and prints, after
//! criterion's own output, a table of medians and of the ratios the targets
//! are stated in. Set `LAMINA_BENCH_ROWS` to use fewer rows (default
//! 10_000_000).

// The Zipf ranks of the tests' support module.
#[path = "../tests/support/mod.rs"]
mod support;
use support::Zipf;

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Int64Array, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use criterion::{Criterion, criterion_group, criterion_main};
use lamina::partitioner::{FastMap, fast_map};
use lamina::view::{AggregateKind, KeySpec, ViewSpec, run_view};
use lamina::{Context, Rdd};

// The allocator the `lamina` binary ships with; see serving/src/main.rs.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DISTINCT: usize = 100_000;
const WORDS_PER_LINE: usize = 10;
const BATCH_ROWS: usize = 8192;

fn rows() -> usize {
    std::env::var("LAMINA_BENCH_ROWS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000)
}

/// SplitMix64, for reproducible data without a dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A word of 3-7 lowercase letters for each rank, distinct per rank.
fn word(rank: usize) -> String {
    let mut n = rank + 26 * 26; // at least three letters
    let mut s = String::new();
    while n > 0 {
        s.push((b'a' + (n % 26) as u8) as char);
        n /= 26;
    }
    s
}

struct Data {
    lines: Vec<String>,
    line_batches: Vec<RecordBatch>,
    pairs: Vec<(i64, i64)>,
    pair_batches: Vec<RecordBatch>,
}

fn make_data(rows: usize) -> Data {
    let zipf = Zipf::new(DISTINCT);
    let vocab: Vec<String> = (0..DISTINCT).map(word).collect();
    let mut rng = Rng(42);
    let lines: Vec<String> = (0..rows / WORDS_PER_LINE)
        .map(|_| {
            let words: Vec<&str> = (0..WORDS_PER_LINE)
                .map(|_| vocab[zipf.rank(rng.next_f64())].as_str())
                .collect();
            words.join(" ")
        })
        .collect();
    let line_schema = Arc::new(Schema::new(vec![Field::new("line", DataType::Utf8, false)]));
    let line_batches = lines
        .chunks(BATCH_ROWS)
        .map(|c| {
            RecordBatch::try_new(
                Arc::clone(&line_schema),
                vec![Arc::new(StringArray::from_iter_values(c))],
            )
            .unwrap()
        })
        .collect();
    let pairs: Vec<(i64, i64)> = (0..rows)
        .map(|_| {
            (
                zipf.rank(rng.next_f64()) as i64,
                (rng.next_u64() % 1000) as i64,
            )
        })
        .collect();
    let pair_schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Int64, false),
    ]));
    let pair_batches = pairs
        .chunks(BATCH_ROWS)
        .map(|c| {
            RecordBatch::try_new(
                Arc::clone(&pair_schema),
                vec![
                    Arc::new(Int64Array::from_iter_values(c.iter().map(|p| p.0))),
                    Arc::new(Int64Array::from_iter_values(c.iter().map(|p| p.1))),
                ],
            )
            .unwrap()
        })
        .collect();
    Data {
        lines,
        line_batches,
        pairs,
        pair_batches,
    }
}

// ---- the plain loops: one core, no framework ----

fn plain_word_count(lines: &[String]) -> usize {
    let mut counts: FastMap<&str, u64> = fast_map(0);
    for line in lines {
        for w in line.split_whitespace() {
            *counts.entry(w).or_insert(0) += 1;
        }
    }
    counts.len()
}

fn plain_group_sum(pairs: &[(i64, i64)]) -> usize {
    let mut sums: FastMap<i64, i64> = fast_map(0);
    for &(k, v) in pairs {
        *sums.entry(k).or_insert(0) += v;
    }
    sums.len()
}

// ---- the engine paths ----

fn rdd_word_count(lines: &Rdd<String>) -> usize {
    lines
        .flat_map(|line: String| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|w| (w, 1u64))
        .reduce_by_key(|a, b| a + b)
        .count()
        .unwrap() as usize
}

fn rdd_group_sum(pairs: &Rdd<(i64, i64)>) -> usize {
    pairs.reduce_by_key(|a, b| a + b).count().unwrap() as usize
}

fn view_count(spec: &ViewSpec, batches: &Rdd<RecordBatch>) -> usize {
    run_view(spec, batches).count().unwrap() as usize
}

fn word_count_view() -> ViewSpec {
    ViewSpec {
        name: "word_counts".into(),
        key: KeySpec::Words("line".into()),
        aggregate: AggregateKind::Count,
        column: None,
    }
}

fn group_sum_view() -> ViewSpec {
    ViewSpec {
        name: "sum_by_key".into(),
        key: KeySpec::Column("k".into()),
        aggregate: AggregateKind::Sum,
        column: Some("v".into()),
    }
}

/// One measured case: a name and a closure returning the distinct key count
/// (checked against the plain loop so every path does the same work).
type Case<'a> = (String, Box<dyn Fn() -> usize + 'a>);

fn cases<'a>(data: &'a Data, ctx1: &'a Context, ctx2: &'a Context) -> Vec<Case<'a>> {
    let wc = word_count_view();
    let gs = group_sum_view();
    let mut cases: Vec<Case<'a>> = vec![
        (
            "word_count/plain_1t".into(),
            Box::new(|| plain_word_count(&data.lines)),
        ),
        (
            "group_sum/plain_1t".into(),
            Box::new(|| plain_group_sum(&data.pairs)),
        ),
    ];
    for (t, ctx) in [(1, ctx1), (2, ctx2)] {
        // Datasets are set up once, outside the measured closures; each
        // measurement runs the whole job. One partition per thread, Spark's
        // default parallelism.
        let parts = ctx.default_parallelism();
        let lines = ctx.parallelize(data.lines.clone(), parts);
        let pairs = ctx.parallelize(data.pairs.clone(), parts);
        let line_batches = ctx.from_batches(data.line_batches.clone(), parts);
        let pair_batches = ctx.from_batches(data.pair_batches.clone(), parts);
        let (wc, gs) = (wc.clone(), gs.clone());
        cases.push((
            format!("word_count/rdd_{t}t"),
            Box::new(move || rdd_word_count(&lines)),
        ));
        cases.push((
            format!("word_count/view_{t}t"),
            Box::new(move || view_count(&wc, &line_batches)),
        ));
        cases.push((
            format!("group_sum/rdd_{t}t"),
            Box::new(move || rdd_group_sum(&pairs)),
        ));
        cases.push((
            format!("group_sum/view_{t}t"),
            Box::new(move || view_count(&gs, &pair_batches)),
        ));
    }
    cases
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn engine(c: &mut Criterion) {
    let rows = rows();
    let t = Instant::now();
    let data = make_data(rows);
    eprintln!("generated {rows} rows in {:.1?}", t.elapsed());
    let ctx1 = Context::builder().threads(1).build().unwrap();
    let ctx2 = Context::builder().threads(2).build().unwrap();
    let mut cases = cases(&data, &ctx1, &ctx2);
    // `LAMINA_BENCH_ONLY=word_count/view` keeps the cases whose name contains
    // the text (handy under a profiler); the plain loops always stay, as the
    // baseline of the ratios.
    if let Ok(only) = std::env::var("LAMINA_BENCH_ONLY") {
        cases.retain(|(name, _)| name.contains(&only) || name.contains("plain"));
    }

    // Every path must find the same keys as the plain loop.
    let wc_keys = plain_word_count(&data.lines);
    let gs_keys = plain_group_sum(&data.pairs);
    for (name, f) in &cases {
        let want = if name.starts_with("word_count") {
            wc_keys
        } else {
            gs_keys
        };
        assert_eq!(f(), want, "{name} disagrees with the plain loop");
    }

    let mut group = c.benchmark_group("engine");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(8));
    for (name, f) in &cases {
        group.bench_function(name.as_str(), |b| b.iter(|| black_box(f())));
    }
    group.finish();

    // Criterion reports each case alone; the targets are ratios between cases
    // measured close together, so measure interleaved rounds and compare
    // medians of the same rounds.
    let rounds = 7;
    let mut times: Vec<Vec<Duration>> = vec![Vec::new(); cases.len()];
    for _ in 0..rounds {
        for (i, (_, f)) in cases.iter().enumerate() {
            let t = Instant::now();
            black_box(f());
            times[i].push(t.elapsed());
        }
    }
    let med: Vec<(String, Duration)> = cases
        .iter()
        .zip(times)
        .map(|((n, _), t)| (n.clone(), median(t)))
        .collect();
    let get = |n: &str| med.iter().find(|(m, _)| m == n).map(|p| p.1.as_secs_f64());
    println!("\nmedians of {rounds} interleaved rounds, {rows} rows:");
    for (name, d) in &med {
        println!(
            "  {name:<24} {:>8.1} ms  {:>6.1} M rows/s",
            d.as_secs_f64() * 1e3,
            rows as f64 / d.as_secs_f64() / 1e6
        );
    }
    println!("ratios (higher is better; target in brackets):");
    for w in ["word_count", "group_sum"] {
        let plain = get(&format!("{w}/plain_1t"));
        for path in ["view", "rdd"] {
            let (Some(plain), Some(t1), Some(t2)) = (
                plain,
                get(&format!("{w}/{path}_1t")),
                get(&format!("{w}/{path}_2t")),
            ) else {
                continue;
            };
            let target = if path == "view" { 1.4 } else { 0.7 };
            println!(
                "  {w:<10} {path:<4} 2 threads vs plain 1 thread: {:.2}x [>= {target}]   1->2 thread scaling: {:.2}x [>= 1.6]",
                plain / t2,
                t1 / t2
            );
        }
    }
}

criterion_group!(benches, engine);
criterion_main!(benches);
