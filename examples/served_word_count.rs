//! NetworkWordCount run as a server: the same DStream program as
//! `network_word_count`, served as the view `word_counts` — queryable over
//! REST, kept through crashes by the write-ahead log, and folded into batch
//! views by batch runs over the master dataset (the batch layer runs this
//! same program), merged exactly.
//!
//! ```text
//! cargo run --release --example served_word_count                  # embedded defaults
//! cargo run --release --example served_word_count -- --config FILE # like `lamina serve`
//!
//! printf 'to be or not to be\n' | nc -q1 127.0.0.1 9999
//! curl -s http://127.0.0.1:8080/v1/views/word_counts/keys/be
//! cargo run --release -- batch run --wait                          # or: served_word_count batch run --wait
//! ```
//!
//! Without `--config` it serves REST on 127.0.0.1:8080 and a TCP line
//! listener on 127.0.0.1:9999 feeding the text stream `lines`, with data
//! under ./lamina-data — `lamina serve`'s defaults, with `word_counts`
//! defined here in Rust instead of in the config. A config given with
//! `--config` must have a text stream `lines` and no view named
//! `word_counts`. Every other subcommand of `lamina` works too
//! (`served_word_count status`, `... query word_counts be`).

use std::process::ExitCode;

use lamina_serving::app::App;

// The allocator of the `lamina` binary (see docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    App::new("served_word_count")
        .with_default_config(lamina_serving::app::TEXT_DEFAULTS)
        .program(|program| {
            let lines = program.text_stream("lines")?;
            let words = lines.flat_map(|line| {
                line.split_whitespace()
                    .map(str::to_owned)
                    .collect::<Vec<_>>()
            });
            let pairs = words.map(|word| (word, 1i64));
            // `serve` merges each batch's pairs per key itself: no
            // reduce_by_key is needed (and over the whole master dataset in
            // a batch run it would cost a shuffle of every word).
            pairs.serve("word_counts")?;
            Ok(())
        })
        .main()
}
