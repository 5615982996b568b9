//! Word count two ways on the engine: the generic RDD API (Spark style) and
//! the `word_counts` view definition over Arrow batches that the batch and
//! speed layers run. Both must agree.
//!
//! ```text
//! cargo run --release -p lamina --example wordcount -- [FILE] [--top N]
//! ```
//!
//! Reads FILE (or standard input) and prints the N most frequent words.

use std::io::Read;
use std::sync::Arc;
use std::time::Instant;

use arrow::array::StringArray;
use arrow::record_batch::RecordBatch;
use lamina::view::{AggValue, AggregateKind, KeySpec, ViewSpec, run_view};
use lamina::{Context, Error};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut path = None;
    let mut top = 10usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--top" => top = args.next().ok_or("--top needs a number")?.parse()?,
            "-h" | "--help" => {
                println!("usage: wordcount [FILE] [--top N]   (reads standard input without FILE)");
                return Ok(());
            }
            _ => path = Some(arg),
        }
    }
    let mut text = String::new();
    match &path {
        Some(p) => {
            text = std::fs::read_to_string(p).map_err(|e| format!("cannot read {p}: {e}"))?
        }
        None => {
            std::io::stdin().read_to_string(&mut text)?;
        }
    }
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let ctx = Context::new();
    let parts = ctx.default_parallelism() * 2;

    // 1. The generic RDD API.
    let t = Instant::now();
    let mut by_rdd = ctx
        .parallelize(lines.clone(), parts)
        .flat_map(|l: String| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .map(|w| (w, 1u64))
        .reduce_by_key(|a, b| a + b)
        .collect()?;
    let rdd_time = t.elapsed();
    by_rdd.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));

    // 2. The view definition over Arrow record batches.
    let t = Instant::now();
    let batches: Vec<RecordBatch> = lines
        .chunks(8192)
        .map(|chunk| {
            RecordBatch::try_from_iter([(
                "line",
                Arc::new(StringArray::from_iter_values(chunk)) as _,
            )])
        })
        .collect::<Result<_, _>>()
        .map_err(Error::from)?;
    let view = ViewSpec {
        name: "word_counts".into(),
        key: KeySpec::Words("line".into()),
        aggregate: AggregateKind::Count,
        column: None,
    };
    let by_view = run_view(&view, &ctx.from_batches(batches, parts)).collect()?;
    let view_time = t.elapsed();

    let view_total: i64 = by_view
        .iter()
        .map(|(_, v)| if let AggValue::Count(c) = v { *c } else { 0 })
        .sum();
    let rdd_total: u64 = by_rdd.iter().map(|p| p.1).sum();
    assert_eq!(
        by_view.len(),
        by_rdd.len(),
        "the two paths found different words"
    );
    assert_eq!(
        view_total as u64, rdd_total,
        "the two paths counted differently"
    );

    println!(
        "{} lines, {rdd_total} words, {} distinct ({} worker threads; rdd {:.1?}, view {:.1?})",
        lines.len(),
        by_rdd.len(),
        ctx.default_parallelism(),
        rdd_time,
        view_time
    );
    for (word, count) in by_rdd.iter().take(top) {
        println!("{count:>8}  {word}");
    }
    Ok(())
}
