//! Counts the words of the text a TCP server sends, batch by batch — Spark
//! Streaming's NetworkWordCount on Lamina's engine.
//!
//! ```text
//! nc -lk 9999                     # in one terminal: type lines here
//! cargo run --release --example network_word_count -- localhost 9999 [BATCH_INTERVAL_MS]
//! ```
//!
//! Every batch interval (default 1000 ms) the lines received since the last
//! batch become an RDD; the program splits them into words, pairs each word
//! with 1 and reduces by key — a job on the engine per batch — and prints
//! the first ten counts under the batch time, like Spark's `pprint`. With
//! `--stats`, one line per batch on standard error tells the records taken
//! and the processing time. Stop it with Ctrl-C.

use std::time::Duration;

use lamina::Context;
use lamina::streaming::StreamingContext;

// The allocator of the `lamina` binary (see docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    if let Err(e) = run() {
        eprintln!("network_word_count: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut positional = Vec::new();
    let mut stats = false;
    for arg in std::env::args().skip(1) {
        match arg.as_str() {
            "--stats" => stats = true,
            "-h" | "--help" => {
                println!("usage: network_word_count HOST PORT [BATCH_INTERVAL_MS] [--stats]");
                return Ok(());
            }
            _ => positional.push(arg),
        }
    }
    let [host, port, rest @ ..] = positional.as_slice() else {
        return Err("usage: network_word_count HOST PORT [BATCH_INTERVAL_MS] [--stats]".into());
    };
    let port: u16 = port
        .parse()
        .map_err(|_| format!("PORT must be a number, got {port:?}"))?;
    let interval_ms: u64 = match rest.first() {
        Some(ms) => ms
            .parse()
            .map_err(|_| format!("BATCH_INTERVAL_MS must be a number, got {ms:?}"))?,
        None => 1000,
    };

    let ssc = StreamingContext::new(Context::new(), Duration::from_millis(interval_ms))?;
    let lines = ssc.socket_text_stream(host, port);
    let words = lines.flat_map(|line| {
        line.split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    });
    let pairs = words.map(|word| (word, 1i64));
    let word_counts = pairs.reduce_by_key(|a, b| a + b);
    word_counts.print();

    if stats {
        ssc.set_batch_listener(|b| {
            eprintln!(
                "batch {}: {} records in {:.1} ms",
                b.time,
                b.total_records(),
                b.processing.as_secs_f64() * 1e3
            );
        });
    }
    ssc.start()?;
    ssc.await_termination()?;
    Ok(())
}
