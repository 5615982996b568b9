//! How long a restart takes to hand stateful operators their state back.
//!
//! ```text
//! cargo bench -p lamina-serving --bench restore
//! ```
//!
//! Commits 1,000,000 keys of `update_state_by_key` state (word → running
//! count, the state of `examples/stateful_word_count`) through the state
//! store's micro-batch commit, in batches of 50,000 changed keys; then, three
//! times: opens the store (what a restart after `kill -9` does: sled
//! recovers its log) and restores the state into a fresh program, printing
//! the seconds of each step and the median. `LAMINA_BENCH_KEYS` changes the
//! number of keys.

use std::time::{Duration, Instant};

use lamina::Context;
use lamina::streaming::durable::{StateChange, encode};
use lamina::streaming::{StateDelta, Time};
use lamina_serving::store::{MicroBatchCommit, Position, ViewStore};
use lamina_serving::views::restore_state;
use lamina_speed::format::Format;
use lamina_speed::program::Program;

fn program() -> Program {
    let p = Program::new(
        &Context::builder().threads(2).build().expect("context"),
        Duration::from_millis(200),
        &[("lines".to_string(), Format::Text)],
    )
    .expect("program");
    p.text_stream("lines")
        .expect("stream")
        .map(|w| (w, 1i64))
        .update_state_by_key(|ones: Vec<i64>, total: Option<i64>| {
            Some(total.unwrap_or(0) + ones.iter().sum::<i64>())
        })
        .serve_state_as("running_counts")
        .expect("view");
    p
}

fn main() {
    let keys: u64 = std::env::var("LAMINA_BENCH_KEYS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let dir = std::env::temp_dir().join(format!("lamina-bench-restore-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let started = Instant::now();
    {
        let store = ViewStore::open(&dir, &[]).expect("store");
        let per_batch = 50_000u64;
        for (batch, first) in (0..keys).step_by(per_batch as usize).enumerate() {
            let changes = (first..(first + per_batch).min(keys))
                .map(|k| StateChange {
                    key: encode(&format!("word{k}")).expect("key"),
                    state: Some(encode(&(k as i64 % 1000 + 1, 1_000i64)).expect("state")),
                })
                .collect();
            store
                .commit(MicroBatchCommit {
                    batch_id: batch as u64 + 1,
                    epoch: 1,
                    positions: vec![(Position::Wal, batch as u64 + 1)],
                    deltas: vec![],
                    dead_letters: vec![],
                    state: vec![StateDelta {
                        operator: "running_counts".into(),
                        changes,
                    }],
                })
                .expect("commit");
        }
        let committed = started.elapsed().as_secs_f64();
        let t = Instant::now();
        store.flush().expect("flush");
        println!(
            "committed {keys} keys of state in {committed:.1} s ({:.0} keys/s), folded and flushed in {:.1} s",
            keys as f64 / committed,
            t.elapsed().as_secs_f64()
        );
    }
    println!("{} bytes on disk", dir_size(&dir));
    let mut totals = Vec::new();
    for run in 1..=3 {
        let t = Instant::now();
        let store = ViewStore::open(&dir, &[]).expect("store");
        let open = t.elapsed().as_secs_f64();
        let p = program();
        let t2 = Instant::now();
        restore_state(&p, &store).expect("restore");
        let restore = t2.elapsed().as_secs_f64();
        // The state is usable: one batch over it.
        p.feed(0, Vec::new());
        p.run_batch(Time::from_millis(200)).expect("batch");
        println!(
            "run {run}: open {open:.2} s, restore {restore:.2} s, total {:.2} s",
            open + restore
        );
        totals.push(open + restore);
    }
    totals.sort_by(f64::total_cmp);
    println!(
        "median restart-to-state: {:.2} s for {keys} keys",
        totals[1]
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn dir_size(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| {
                    let p = e.path();
                    if p.is_dir() {
                        dir_size(&p)
                    } else {
                        e.metadata().map_or(0, |m| m.len())
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}
