//! Event time through the speed layer, against a sequential reference:
//! random out-of-order event times, appended in random chunks and cut into
//! random micro-batches; a windowed count must hold exactly the reference's
//! buckets (late records left out or folded, by the policy), and the late
//! total must match — whatever the batching.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use lamina::streaming::durable::decode;
use lamina::streaming::windowed_view::WindowSpec;
use lamina::view::{AggValue, AggregateKind, KeySpec, ViewSpec};
use lamina_serving::store::{Position, ViewStore};
use lamina_speed::commit::{CommitSink, RecordLog};
use lamina_speed::event_time::{EventTime, LatePolicy};
use lamina_speed::format::{ColumnDef, ColumnType, Format};
use lamina_speed::microbatch::{Clock, MicroBatcher, StatsLog};
use lamina_speed::program::Program;
use lamina_speed::wal::{Wal, WalConfig};

struct Dir(PathBuf);

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

const SLIDE_MS: i64 = 1_000;
const LENGTH_MS: i64 = 4_000;

fn run(seed: u64, policy: LatePolicy) {
    let mut rng = Rng(seed * 7919 + 17);
    let lateness_ms = 500 * rng.below(4) as i64;
    let dir = Dir(std::env::temp_dir().join(format!(
        "lamina-event-time-{}-{seed}-{policy:?}",
        std::process::id()
    )));
    let _ = std::fs::remove_dir_all(&dir.0);
    let (wal, _) = Wal::open(WalConfig::new(dir.0.join("wal"))).unwrap();
    let store = Arc::new(ViewStore::open(&dir.0.join("state"), &[]).unwrap());
    let ctx = lamina::Context::builder()
        .threads(1 + rng.below(2) as usize)
        .build()
        .unwrap();
    let clock = Clock {
        interval: Duration::from_millis(10),
        epoch: Duration::from_secs(3600),
        max_records: 1_000_000,
        max_bytes: 64 << 20,
    };
    let format = Format::Json(vec![
        ColumnDef::new("ts", ColumnType::Int64),
        ColumnDef::new("user", ColumnType::String),
    ]);
    let program = Program::new(&ctx, clock.interval, &[("clicks".into(), format)]).unwrap();
    program
        .set_event_time("clicks", EventTime::new("ts", lateness_ms * 1000, policy))
        .unwrap();
    let window = WindowSpec::new(
        Duration::from_millis(LENGTH_MS as u64),
        Duration::from_millis(SLIDE_MS as u64),
        Duration::from_millis(lateness_ms as u64),
    )
    .unwrap();
    let spec = ViewSpec {
        name: "w".into(),
        key: KeySpec::Column("user".into()),
        aggregate: AggregateKind::Count,
        column: None,
    };
    program
        .add_windowed_view("clicks", &spec, window, "ts")
        .unwrap();
    let log: Arc<dyn RecordLog> = Arc::new(wal.clone());
    let sink: Arc<dyn CommitSink> = Arc::clone(&store) as Arc<dyn CommitSink>;
    let stats = Arc::new(StatsLog::new(10, &["clicks".into()]));
    let mut batcher = MicroBatcher::resume(Arc::new(program), log, sink, stats, clock).unwrap();

    // Event times drift forward with jumps back of up to three latenesses
    // (plus a second): some records on time though behind, some late.
    let n = 150 + rng.below(150) as i64;
    let mut records = Vec::new();
    let mut t = 1_000_000i64;
    for _ in 0..n {
        t += rng.below(120) as i64;
        let back = if rng.below(4) == 0 {
            rng.below((3 * lateness_ms + 1_000) as u64) as i64
        } else {
            0
        };
        records.push((t - back, format!("u{}", rng.below(3))));
    }
    let mut sent = 0usize;
    let mut now_us = 1_000_000i64;
    while sent < records.len() {
        let chunk = 1 + rng.below(30) as usize;
        let lines: Vec<String> = records[sent..(sent + chunk).min(records.len())]
            .iter()
            .map(|(ts, u)| format!("{{\"ts\":{ts},\"user\":\"{u}\"}}"))
            .collect();
        let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
        wal.append_blocking(0, &refs, now_us).unwrap();
        sent += lines.len();
        if rng.below(3) == 0 {
            now_us += 10_000;
            batcher.run_once(now_us).unwrap();
        }
    }
    while !batcher.caught_up() {
        now_us += 10_000;
        batcher.run_once(now_us).unwrap();
    }

    // The reference, record by record in log order.
    let mut wm = i64::MIN;
    let mut late = 0u64;
    let mut cells: BTreeMap<(i64, String), i64> = BTreeMap::new();
    for (ts, user) in &records {
        let at = if *ts < wm {
            late += 1;
            match policy {
                LatePolicy::Aside => None,
                LatePolicy::Fold => Some(wm),
            }
        } else {
            Some(*ts)
        };
        if let Some(at) = at {
            *cells
                .entry((at.div_euclid(SLIDE_MS) * SLIDE_MS, user.clone()))
                .or_default() += 1;
        }
        wm = wm.max(ts - lateness_ms);
    }
    // Buckets behind the newest by more than the retention are evicted.
    let newest = cells.keys().map(|(b, _)| *b).max().unwrap();
    let retention = window.retention.as_millis() as i64;
    cells.retain(|(b, _), _| *b >= newest + SLIDE_MS - retention);

    let got: BTreeMap<(i64, String), i64> = store
        .state_entries("w")
        .map(|row| {
            let (k, v) = row.unwrap();
            let cell: (i64, String) = decode(&k).unwrap();
            let (value, _): (AggValue, i64) = decode(&v).unwrap();
            match value {
                AggValue::Count(c) => (cell, c),
                other => panic!("{other:?}"),
            }
        })
        .collect();
    assert_eq!(
        got, cells,
        "seed {seed}, {policy:?}, lateness {lateness_ms} ms"
    );
    let stored_late = store
        .position(&Position::Late {
            stream: "clicks".into(),
        })
        .unwrap()
        .unwrap_or(0);
    assert_eq!(stored_late, late, "seed {seed}, {policy:?}");
    let dead = store.dead_letter_count("clicks").unwrap();
    match policy {
        LatePolicy::Aside => assert_eq!(dead, late),
        LatePolicy::Fold => assert_eq!(dead, 0),
    }
}

#[test]
fn windows_over_out_of_order_event_times_match_the_reference_whatever_the_batching() {
    for seed in 0..12 {
        run(seed, LatePolicy::Aside);
        run(seed, LatePolicy::Fold);
    }
}
