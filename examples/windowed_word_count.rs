//! Word counts over a sliding window of the text a TCP server sends —
//! Spark Streaming's windowed word count (`reduceByKeyAndWindow` with an
//! inverse function) on Lamina's engine.
//!
//! ```text
//! nc -lk 9999                     # in one terminal: type lines here
//! cargo run --release --example windowed_word_count -- localhost 9999 [BATCH_INTERVAL_MS] \
//!     [--window-secs 30] [--slide-secs 5]
//! ```
//!
//! Every slide (default 5 s) it prints the first ten counts of the last
//! window (default 30 s), computed incrementally: the previous window's
//! counts, plus the batches that entered, minus the batches that left —
//! words whose count falls to 0 are dropped. The window's batches are kept
//! in memory (library mode: nothing is written to disk).

use std::time::Duration;

use lamina::Context;
use lamina::streaming::StreamingContext;

// The allocator of the `lamina` binary (see docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const USAGE: &str =
    "usage: windowed_word_count HOST PORT [BATCH_INTERVAL_MS] [--window-secs N] [--slide-secs N]";

fn main() {
    if let Err(e) = run() {
        eprintln!("windowed_word_count: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut positional = Vec::new();
    let (mut window_secs, mut slide_secs) = (30.0f64, 5.0f64);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--window-secs" => window_secs = args.next().ok_or(USAGE)?.parse()?,
            "--slide-secs" => slide_secs = args.next().ok_or(USAGE)?.parse()?,
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            _ => positional.push(arg),
        }
    }
    let [host, port, rest @ ..] = positional.as_slice() else {
        return Err(USAGE.into());
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
    let pairs = lines
        .flat_map(|line| {
            line.split_whitespace()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .map(|word| (word, 1i64));
    let windowed = pairs.reduce_by_key_and_window_inverse(
        |a, b| a + b,
        |a, b| a - b,
        Duration::from_secs_f64(window_secs),
        Duration::from_secs_f64(slide_secs),
        |(_, count)| *count > 0,
    )?;
    windowed.print();
    ssc.start()?;
    ssc.await_termination()?;
    Ok(())
}
