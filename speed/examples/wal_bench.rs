//! Quick throughput check of the WAL's group commit on this machine's disk.
//!
//! `cargo run --release --example wal_bench -- [appenders] [seconds] [lines] [line_bytes] [dir] [threads|tasks]`
//!
//! Every appender loops: append one batch of `lines` records of
//! `line_bytes` bytes, wait until durable, repeat, for `seconds`. Prints
//! appends/s, records/s, fsyncs/s, records per fsync and append latency.

use std::{
    env,
    path::PathBuf,
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use lamina_speed::wal::{Wal, WalConfig};

fn main() {
    let args: Vec<String> = env::args().skip(1).collect();
    let arg = |i: usize, default: &str| args.get(i).cloned().unwrap_or_else(|| default.into());
    let appenders: usize = arg(0, "8").parse().expect("appenders");
    let seconds: f64 = arg(1, "3").parse().expect("seconds");
    let lines: usize = arg(2, "10").parse().expect("lines");
    let line_bytes: usize = arg(3, "100").parse().expect("line_bytes");
    let dir = PathBuf::from(arg(4, "/work/scratch/wal-target/bench-wal"));
    let mode = arg(5, "threads");
    let _ = std::fs::remove_dir_all(&dir);

    let (wal, _) = Wal::open(WalConfig::new(&dir)).expect("open");
    let batch: Vec<Vec<u8>> = (0..lines)
        .map(|i| vec![b'a' + (i % 26) as u8; line_bytes])
        .collect();
    let batch = Arc::new(batch);
    let duration = Duration::from_secs_f64(seconds);
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let start = Instant::now();

    match mode.as_str() {
        "threads" => {
            let handles: Vec<_> = (0..appenders)
                .map(|a| {
                    let (wal, batch, latencies) =
                        (wal.clone(), Arc::clone(&batch), Arc::clone(&latencies));
                    thread::spawn(move || {
                        let mut mine = Vec::new();
                        while start.elapsed() < duration {
                            let t = Instant::now();
                            wal.append_blocking(a as u32, &batch, 0).expect("append");
                            mine.push(t.elapsed());
                        }
                        latencies.lock().unwrap().extend(mine);
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
        }
        "tasks" => {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .build()
                .unwrap();
            rt.block_on(async {
                let tasks: Vec<_> = (0..appenders)
                    .map(|a| {
                        let (wal, batch, latencies) =
                            (wal.clone(), Arc::clone(&batch), Arc::clone(&latencies));
                        tokio::spawn(async move {
                            let mut mine = Vec::new();
                            while start.elapsed() < duration {
                                let t = Instant::now();
                                wal.append(a as u32, &batch, 0).await.expect("append");
                                mine.push(t.elapsed());
                            }
                            latencies.lock().unwrap().extend(mine);
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            });
        }
        other => panic!("mode must be threads or tasks, not {other}"),
    }
    let elapsed = start.elapsed().as_secs_f64();
    let stats = wal.stats();
    let mut lat = latencies.lock().unwrap().clone();
    lat.sort();
    let pct = |p: f64| lat[((lat.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e3;
    println!(
        "{mode} appenders={appenders} lines/batch={lines} line_bytes={line_bytes}: \
         {:.0} appends/s, {:.0} records/s, {:.0} fsyncs/s, {:.1} appends/fsync, {:.1} MB/s, \
         latency p50 {:.2} ms p99 {:.2} ms",
        stats.appends as f64 / elapsed,
        stats.records as f64 / elapsed,
        stats.fsyncs as f64 / elapsed,
        stats.appends as f64 / stats.fsyncs.max(1) as f64,
        stats.bytes as f64 / elapsed / 1e6,
        pct(0.5),
        pct(0.99),
    );
    wal.close().expect("close");
    let _ = std::fs::remove_dir_all(&dir);
}
