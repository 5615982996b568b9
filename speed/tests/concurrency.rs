//! Concurrent appenders: group commit, backpressure, async appends that
//! never block the runtime.

mod common;

use std::{
    ops::Range,
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

use common::{TempDir, read_all};
use lamina_speed::wal::{Wal, WalConfig};

/// Runs `f` on a thread and fails the test if it does not finish in
/// `limit`: a deadlock fails instead of hanging the suite.
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit).expect("timed out: deadlock?")
}

fn payload(appender: usize, n: usize, i: usize) -> String {
    format!("appender {appender} append {n} record {i}")
}

/// `ranges[a][n]` (the seqs of append `n` of appender `a`) flattened and
/// sorted, after checking that they tile `0..end` with no gap or overlap.
fn tiles(ranges: &[Vec<Range<u64>>]) -> Vec<(Range<u64>, usize, usize)> {
    let mut all: Vec<(Range<u64>, usize, usize)> = ranges
        .iter()
        .enumerate()
        .flat_map(|(a, rs)| rs.iter().enumerate().map(move |(n, r)| (r.clone(), a, n)))
        .collect();
    all.sort_by_key(|(r, _, _)| r.start);
    let mut next = 0;
    for (r, _, _) in &all {
        assert_eq!(r.start, next, "gap or overlap in seqs");
        next = r.end;
    }
    all
}

/// Checks that the appends tile the seqs and read back as appended.
fn assert_all_durable(wal: &Wal, ranges: &[Vec<Range<u64>>]) {
    let all = tiles(ranges);
    let next = all.last().map_or(0, |(r, _, _)| r.end);
    assert_eq!(wal.durable_seq(), next);
    let records = read_all(wal, 0..next);
    for (r, a, n) in all {
        for (i, seq) in r.enumerate() {
            let (s, stream, _, p) = &records[seq as usize];
            assert_eq!((*s, *stream), (seq, a as u32));
            assert_eq!(p, payload(a, n, i).as_bytes());
        }
    }
}

fn run_threads(wal: &Wal, threads: usize, appends: usize, lines: usize) -> Vec<Vec<Range<u64>>> {
    let handles: Vec<_> = (0..threads)
        .map(|a| {
            let wal = wal.clone();
            thread::spawn(move || {
                (0..appends)
                    .map(|n| {
                        let recs: Vec<String> = (0..lines).map(|i| payload(a, n, i)).collect();
                        wal.append_blocking(a as u32, &recs, 0).unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn group_commit_8_threads_x_200_appends_share_fsyncs() {
    let tmp = TempDir::new("group");
    let (wal, _) = Wal::open(tmp.config(1 << 20)).unwrap();
    let w = wal.clone();
    let ranges = within(Duration::from_secs(30), move || run_threads(&w, 8, 200, 1));
    let stats = wal.stats();
    eprintln!("8 x 200 appends: {stats:?}");
    assert_eq!(stats.appends, 1600);
    assert!(
        stats.fsyncs < 1600 / 4,
        "{} fsyncs for 1600 appends",
        stats.fsyncs
    );
    assert_all_durable(&wal, &ranges);
    wal.close().unwrap();
}

#[test]
fn tiny_budget_makes_appends_wait_but_all_complete() {
    let tmp = TempDir::new("backpressure");
    // Smaller than any single entry: every append takes the whole budget,
    // so they go through one at a time, and none may deadlock.
    let cfg = WalConfig {
        max_pending_bytes: 16,
        ..tmp.config(4096)
    };
    let (wal, _) = Wal::open(cfg).unwrap();
    let w = wal.clone();
    let ranges = within(Duration::from_secs(30), move || run_threads(&w, 6, 40, 3));
    let stats = wal.stats();
    assert_eq!((stats.appends, stats.pending_bytes), (240, 0));
    assert_all_durable(&wal, &ranges);
    wal.close().unwrap();
}

#[test]
fn budget_of_a_few_entries_still_groups_commits() {
    let tmp = TempDir::new("budget");
    let cfg = WalConfig {
        max_pending_bytes: 600, // about 4 entries of 3 records
        ..tmp.config(1 << 20)
    };
    let (wal, _) = Wal::open(cfg).unwrap();
    let w = wal.clone();
    let ranges = within(Duration::from_secs(30), move || run_threads(&w, 8, 30, 3));
    assert_eq!(wal.stats().appends, 240);
    assert_all_durable(&wal, &ranges);
}

/// On a single-threaded runtime: if an append blocked the worker during
/// its fsync, the tasks would run one after another and every append would
/// need its own fsync.
#[test]
fn async_appends_do_not_block_a_current_thread_runtime() {
    let tmp = TempDir::new("async");
    let (wal, _) = Wal::open(tmp.config(8192)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let w = wal.clone();
    let ranges = within(Duration::from_secs(30), move || {
        rt.block_on(async move {
            let tasks: Vec<_> = (0..8)
                .map(|a| {
                    let wal = w.clone();
                    tokio::spawn(async move {
                        let mut out = Vec::new();
                        for n in 0..50 {
                            let recs: Vec<String> = (0..2).map(|i| payload(a, n, i)).collect();
                            out.push(wal.append(a as u32, &recs, 0).await.unwrap());
                        }
                        out
                    })
                })
                .collect();
            let mut ranges = Vec::new();
            for t in tasks {
                ranges.push(t.await.unwrap());
            }
            ranges
        })
    });
    let stats = wal.stats();
    eprintln!("8 tasks x 50 appends on one thread: {stats:?}");
    assert!(
        stats.fsyncs < 400 / 2,
        "{} fsyncs for 400 appends",
        stats.fsyncs
    );
    assert_all_durable(&wal, &ranges);
}

/// Tasks on a multi-thread runtime and plain threads, at once, rotating
/// segments, with the micro-batch reader and truncation running alongside.
#[test]
fn tasks_threads_reader_and_truncation_together() {
    let tmp = TempDir::new("mixed");
    let (wal, _) = Wal::open(tmp.config(2048)).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let tasks: Vec<_> = (0..4)
        .map(|a| {
            let wal = wal.clone();
            rt.spawn(async move {
                let mut out = Vec::new();
                for n in 0..60 {
                    let recs: Vec<String> = (0..1 + n % 4).map(|i| payload(a, n, i)).collect();
                    out.push(wal.append(a as u32, &recs, 0).await.unwrap());
                }
                out
            })
        })
        .collect();
    let w = wal.clone();
    let threads = thread::spawn(move || run_threads(&w, 2, 60, 2));
    // The micro-batch loop: read what is durable, then truncate below half
    // of it; reads of retained seqs must keep working throughout.
    let reader = {
        let wal = wal.clone();
        thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            let mut reads = 0;
            while wal.stats().appends < 360 && Instant::now() < deadline {
                let durable = wal.durable_seq();
                wal.truncate_before(durable / 2).unwrap();
                // A concurrent truncate may delete a segment under the read.
                let from = wal.first_seq();
                let mut next = from;
                wal.read_range(from..durable, |seq, _, _, _| {
                    assert_eq!(seq, next);
                    next += 1;
                })
                .unwrap();
                assert_eq!(next, durable.max(from));
                reads += 1;
                thread::sleep(Duration::from_millis(2));
            }
            reads
        })
    };
    let mut ranges: Vec<Vec<Range<u64>>> = rt.block_on(async {
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    });
    ranges.extend(threads.join().unwrap());
    assert!(reader.join().unwrap() > 0);
    assert_eq!(wal.stats().appends, 4 * 60 + 2 * 60);
    // Everything truncated is below first_seq; the rest reads back intact.
    let first = wal.first_seq();
    let mut seqs = 0;
    wal.read_range(first..wal.durable_seq(), |_, _, _, _| seqs += 1)
        .unwrap();
    assert_eq!(seqs, wal.durable_seq() - first);
    let end = tiles(&ranges).last().unwrap().0.end;
    assert_eq!(end, wal.durable_seq());
}
