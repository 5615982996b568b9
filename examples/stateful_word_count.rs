//! StatefulNetworkWordCount run as a server: running totals per word kept
//! with `update_state_by_key` and served as the view `running_counts`.
//!
//! ```text
//! cargo run --release --example stateful_word_count                  # embedded defaults
//! cargo run --release --example stateful_word_count -- --config FILE # like `lamina serve`
//!
//! printf 'to be or not to be\n' | nc -q1 127.0.0.1 9999
//! curl -s http://127.0.0.1:8080/v1/views/running_counts/keys/be
//! curl -s 'http://127.0.0.1:8080/v1/views/running_counts/top?k=5'
//! ```
//!
//! The state is data (a word and an `i64`): every micro-batch commits the
//! totals it changed in the same transaction as the write-ahead-log position
//! it read up to, and a restart hands the operator its committed state
//! before the log is replayed — so after `kill -9` every total is exact:
//! no word lost, none counted twice. A state view is the operator's state
//! itself: batch runs do not recompute it (see docs/streaming.md, "Serving
//! state").
//!
//! Without `--config` it serves REST on 127.0.0.1:8080 and a TCP line
//! listener on 127.0.0.1:9999 feeding the text stream `lines`, with data
//! under ./lamina-data — `lamina serve`'s defaults, with `running_counts`
//! defined here in Rust. A config given with `--config` must have a text
//! stream `lines` and no view named `running_counts`. Every other
//! subcommand of `lamina` works too (`stateful_word_count state list`,
//! `... query running_counts be`).

use std::process::ExitCode;

use lamina_serving::app::App;

// The allocator of the `lamina` binary (see docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    App::new("stateful_word_count")
        .with_default_config(lamina_serving::app::TEXT_DEFAULTS)
        .program(|program| {
            let pairs = program
                .text_stream("lines")?
                .flat_map(|line| {
                    line.split_whitespace()
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .map(|word| (word, 1i64));
            // The running total of each word: the batch's count added to the
            // total so far (Spark's updateStateByKey). Counting the batch
            // first (reduce_by_key combines within each partition before its
            // shuffle) hands the state one value per word instead of one per
            // occurrence: at 300k lines/s, 118 ms of work per micro-batch
            // instead of 368 ms (docs/BENCHMARKS.md).
            let totals = pairs.reduce_by_key(|a, b| a + b).update_state_by_key(
                |counts: Vec<i64>, total: Option<i64>| {
                    Some(total.unwrap_or(0) + counts.iter().sum::<i64>())
                },
            );
            totals.serve_state_as("running_counts")?;
            Ok(())
        })
        .main()
}
