//! The merge under concurrency, through the real binary: while a writer
//! ingests and readers query hot words without pause, batch runs succeed,
//! fail (a sealed Parquet file overwritten with garbage) and are cancelled.
//! No reader may ever see a gap or a double count.
//!
//! Bounds each reader checks, for a hot word `w`, around one query:
//! - never below its own previous answer for `w`;
//! - never below the count of the records the speed layer had committed
//!   *before* the query was sent (`records_total` of the stream, read
//!   first): every committed record is in exactly one of the batch view
//!   and the real-time deltas;
//! - never above the count of the requests *sent* when the answer came
//!   back: a request's records can become visible a moment before its
//!   200 reaches the writer.
//!
//! An acknowledgement means "durable", not "visible": the next micro-batch
//! makes it visible. So answers below the count acknowledged before the
//! query, or above the count acknowledged after it, are not errors; the
//! test counts and prints them.

mod common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use common::{Rng, Server, WorkDir, eventually, free_port, write_config};
use lamina_serving::client::Client;
use serde_json::Value;

/// The words readers watch, and the other words lines are made of.
const HOT: [&str; 4] = ["alpha", "beta", "gamma", "delta"];
const COLD: u64 = 30;
/// Lines per ingest request: `records_total / LINES` requests are committed.
const LINES: usize = 10;
/// Reader threads.
const READERS: usize = 2;
/// Nothing in this test runs longer.
const TEST_LIMIT: Duration = Duration::from_secs(50);

/// What the writer has done, shared with the readers and the test.
#[derive(Debug)]
struct Ledger {
    /// `cum[n][h]`: occurrences of `HOT[h]` in the first `n` requests.
    cum: Vec<[i64; HOT.len()]>,
    /// Requests whose POST has started.
    sent: usize,
    /// Requests answered 200.
    acked: usize,
    /// Every word's count over the acknowledged requests.
    words: BTreeMap<String, i64>,
}

/// What went wrong, from any thread, with the phase it happened in.
#[derive(Debug, Default)]
struct Problems {
    list: Vec<String>,
    total: usize,
}

struct Shared {
    ledger: Mutex<Ledger>,
    problems: Mutex<Problems>,
    /// What the batch driver is doing, for messages.
    phase: Mutex<String>,
    stop_writer: AtomicBool,
    stop_readers: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Holders only update plain data; a panic elsewhere leaves it usable.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    fn problem(&self, what: String) {
        let what = format!("[{}] {what}", lock(&self.phase));
        let mut p = lock(&self.problems);
        p.total += 1;
        if p.list.len() < 20 {
            p.list.push(what);
        }
    }

    fn set_phase(&self, phase: impl Into<String>) {
        let phase = phase.into();
        println!("{phase}");
        *lock(&self.phase) = phase;
    }
}

/// Ingests requests of `LINES` lines until stopped.
fn write(base: &str, shared: &Shared) {
    let client = Client::new(base, None)
        .unwrap()
        .with_timeout(Duration::from_secs(10));
    let mut rng = Rng(7);
    let deadline = Instant::now() + TEST_LIMIT;
    while !shared.stop_writer.load(Ordering::Acquire) && Instant::now() < deadline {
        let mut body = String::new();
        let mut words: Vec<String> = Vec::new();
        for _ in 0..LINES {
            let line: Vec<String> = (0..rng.range(1, 6))
                .map(|_| match rng.range(0, 9) {
                    h @ 0..=3 => HOT[h as usize].to_owned(),
                    _ => format!("c{}", rng.range(0, COLD - 1)),
                })
                .collect();
            body.push_str(&line.join(" "));
            body.push('\n');
            words.extend(line);
        }
        {
            let mut l = lock(&shared.ledger);
            let mut next = *l.cum.last().expect("cum starts with zeros");
            for w in &words {
                if let Some(h) = HOT.iter().position(|h| h == w) {
                    next[h] += 1;
                }
            }
            l.cum.push(next);
            l.sent += 1;
        }
        match client.post("/v1/ingest/lines", body.as_bytes(), &[]) {
            Ok(r) if r.status == 200 => {
                let mut l = lock(&shared.ledger);
                l.acked += 1;
                for w in words {
                    *l.words.entry(w).or_default() += 1;
                }
            }
            other => {
                let sent = lock(&shared.ledger).sent;
                shared.problem(format!(
                    "writer: request {sent} not acknowledged: {:?}",
                    other.map(|r| (r.status, String::from_utf8_lossy(&r.body).into_owned()))
                ));
                return;
            }
        }
    }
}

/// What one reader saw.
#[derive(Debug, Default)]
struct ReaderStats {
    reads: usize,
    /// Answers below the count acknowledged before the query (not yet
    /// committed by a micro-batch).
    behind_acked: usize,
    /// Answers above the count acknowledged after it (visible before the
    /// writer got its 200).
    ahead_of_acked: usize,
    /// Generations seen serving, in order.
    watermarks: Vec<u64>,
}

fn records_total(client: &Client) -> Result<u64, String> {
    let v = client.get("/v1/streams")?.json()?;
    v["streams"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["name"] == "lines"))
        .and_then(|s| s["records_total"].as_u64())
        .ok_or_else(|| format!("no records_total for lines in {v}"))
}

/// Queries the hot words in turn until stopped, checking every answer.
fn read(base: &str, shared: &Shared, offset: usize) -> ReaderStats {
    let client = Client::new(base, None)
        .unwrap()
        .with_timeout(Duration::from_secs(10));
    let mut stats = ReaderStats::default();
    let mut last = [0i64; HOT.len()];
    let deadline = Instant::now() + TEST_LIMIT;
    let mut turn = offset;
    while !shared.stop_readers.load(Ordering::Acquire) && Instant::now() < deadline {
        turn += 1;
        let h = turn % HOT.len();
        let word = HOT[h];
        let committed = match records_total(&client) {
            Ok(r) => r as usize / LINES,
            Err(e) => {
                shared.problem(format!("reader: {e}"));
                return stats;
            }
        };
        let (acked_before, floor) = {
            let l = lock(&shared.ledger);
            (l.cum[l.acked][h], l.cum.get(committed).map(|c| c[h]))
        };
        let answer = client
            .get(&format!("/v1/views/word_counts/keys/{word}"))
            .and_then(|r| match r.status {
                200 => r.json(),
                s => Err(format!("{s} {}", String::from_utf8_lossy(&r.body))),
            });
        let (acked_after, ceiling) = {
            let l = lock(&shared.ledger);
            (l.cum[l.acked][h], l.cum[l.sent][h])
        };
        let v = match answer {
            Ok(v) => v,
            Err(e) => {
                shared.problem(format!("reader: GET {word}: {e}"));
                return stats;
            }
        };
        stats.reads += 1;
        let Some(value) = v["value"].as_i64() else {
            shared.problem(format!("{word}: no value in {v}"));
            continue;
        };
        let Some(floor) = floor else {
            shared.problem(format!(
                "{word}: {committed} requests' records committed, more than were sent"
            ));
            continue;
        };
        if value < last[h] {
            shared.problem(format!("{word}: {value} after {} earlier: {v}", last[h]));
        }
        if value < floor {
            shared.problem(format!(
                "{word}: {value} < {floor}, the count in the {committed} requests committed before the query: {v}"
            ));
        }
        if value > ceiling {
            shared.problem(format!(
                "{word}: {value} > {ceiling}, the count in every request sent so far: {v}"
            ));
        }
        let halves: i64 = [&v["batch_value"], &v["realtime_value"]]
            .iter()
            .filter_map(|p| p.as_i64())
            .sum();
        if halves != value && value != 0 {
            shared.problem(format!("{word}: halves do not add up: {v}"));
        }
        match (v["watermark_epoch"].as_u64(), stats.watermarks.last()) {
            (Some(w), Some(&seen)) if w < seen => {
                shared.problem(format!("{word}: generation {w} after {seen}: {v}"));
            }
            (Some(w), Some(&seen)) if w == seen => {}
            (Some(w), _) => stats.watermarks.push(w),
            (None, Some(seen)) => {
                shared.problem(format!("{word}: no generation after {seen}: {v}"));
            }
            (None, None) => {}
        }
        stats.behind_acked += usize::from(value < acked_before);
        stats.ahead_of_acked += usize::from(value > acked_after);
        last[h] = last[h].max(value);
    }
    stats
}

fn get(server: &Server, path: &str) -> Value {
    let (status, v) = server.get(path);
    assert_eq!(status, 200, "GET {path}: {v}");
    v
}

fn request_run(server: &Server) -> u64 {
    let r = server.client().post("/v1/batch/runs", b"", &[]).unwrap();
    let v = r.json().unwrap();
    assert_eq!(r.status, 202, "POST /v1/batch/runs: {v}");
    v["id"].as_u64().expect("a run id")
}

/// Polls run `id` until it is over; its record.
fn wait_run(server: &Server, id: u64) -> Value {
    let mut last = Value::Null;
    let done = eventually(Duration::from_secs(20), || {
        last = get(server, &format!("/v1/batch/runs/{id}"));
        matches!(
            last["state"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        )
    });
    assert!(done.is_some(), "batch run {id} did not finish: {last}");
    last
}

/// Runs a batch run that must succeed; its generation's epoch.
fn run_ok(server: &Server, shared: &Shared, what: &str) -> u64 {
    let id = request_run(server);
    shared.set_phase(format!("run {id}: {what}"));
    let run = wait_run(server, id);
    assert_eq!(run["state"], "succeeded", "run {id}: {run}");
    run["epoch"].as_u64().expect("a generation with data")
}

fn watermark(server: &Server) -> Option<u64> {
    get(server, "/v1/views")["watermark_epoch"].as_u64()
}

/// A sealed file of `lines` listed in the manifest.
fn sealed_lines_file(master: &std::path::Path) -> Option<PathBuf> {
    let manifest: Value =
        serde_json::from_slice(&std::fs::read(master.join("_manifest.json")).ok()?).ok()?;
    let file = manifest["files"]
        .as_array()?
        .iter()
        .find(|f| f["stream"] == "lines" && f["rows"].as_u64() > Some(0))?;
    Some(master.join(file["path"].as_str()?))
}

#[test]
fn answers_stay_exact_while_batch_runs_succeed_fail_and_are_cancelled() {
    let started = Instant::now();
    let dir = WorkDir::new("merge");
    let (http, tcp) = (free_port(), free_port());
    let config = write_config(dir.path(), http, tcp, "");
    let server = Server::start(dir.path(), http, &["--config", config.to_str().unwrap()]);
    let base = format!("http://127.0.0.1:{http}");
    let master = dir.path().join("lamina-data/master");

    let shared = Arc::new(Shared {
        ledger: Mutex::new(Ledger {
            cum: vec![[0; HOT.len()]],
            sent: 0,
            acked: 0,
            words: BTreeMap::new(),
        }),
        problems: Mutex::new(Problems::default()),
        phase: Mutex::new("warm-up".into()),
        stop_writer: AtomicBool::new(false),
        stop_readers: AtomicBool::new(false),
    });
    let writer = {
        let (shared, base) = (Arc::clone(&shared), base.clone());
        thread::spawn(move || write(&base, &shared))
    };
    let readers: Vec<_> = (0..READERS)
        .map(|i| {
            let (shared, base) = (Arc::clone(&shared), base.clone());
            thread::spawn(move || read(&base, &shared, i))
        })
        .collect();
    let check = |when: &str| {
        let p = lock(&shared.problems);
        assert!(
            p.total == 0,
            "{} problems {when}, the first ones:\n{}",
            p.total,
            p.list.join("\n")
        );
    };

    // Data in a sealed epoch first.
    eventually(Duration::from_secs(10), || {
        lock(&shared.ledger).acked >= 20 && sealed_lines_file(&master).is_some()
    })
    .expect("requests are acknowledged and an epoch of lines is sealed");

    // Runs that succeed.
    let mut generation = 0;
    for i in 0..3 {
        let epoch = run_ok(&server, &shared, &format!("success {}", i + 1));
        assert!(epoch >= generation, "generations go forward");
        generation = epoch;
        assert_eq!(watermark(&server), Some(generation));
    }
    check("during successful runs");

    // A run that fails: a sealed file is not Parquet any more.
    let victim = sealed_lines_file(&master).expect("a sealed file of lines");
    let original = std::fs::read(&victim).unwrap();
    std::fs::write(&victim, vec![b'#'; original.len()]).unwrap();
    let id = request_run(&server);
    shared.set_phase(format!("run {id}: fails on {}", victim.display()));
    let run = wait_run(&server, id);
    assert_eq!(run["state"], "failed", "run {id}: {run}");
    let name = victim.file_name().unwrap().to_str().unwrap();
    assert!(
        run["error"].as_str().is_some_and(|e| e.contains(name)),
        "the error names the file {name}: {run}"
    );
    assert_eq!(
        watermark(&server),
        Some(generation),
        "the old generation keeps serving"
    );
    std::fs::write(&victim, &original).unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), original, "restored");
    check("around the failed run");
    generation = run_ok(&server, &shared, "success after the restore");
    assert_eq!(watermark(&server), Some(generation));

    // Runs cancelled right after they are requested (or, if the cancel came
    // too late, succeeded) until one cancel takes effect; then one cancelled
    // while it runs.
    let mut cancelled = 0;
    for attempt in 1..=6 {
        let while_running = cancelled > 0;
        let id = request_run(&server);
        shared.set_phase(format!(
            "run {id}: cancelled {} (attempt {attempt})",
            if while_running {
                "while running"
            } else {
                "at once"
            }
        ));
        if while_running {
            eventually(Duration::from_secs(5), || {
                get(&server, &format!("/v1/batch/runs/{id}"))["state"] != "queued"
            });
        }
        let r = server
            .client()
            .post(&format!("/v1/batch/runs/{id}/cancel"), b"", &[])
            .unwrap();
        assert_eq!(r.status, 202, "{}", String::from_utf8_lossy(&r.body));
        let run = wait_run(&server, id);
        match run["state"].as_str() {
            Some("cancelled") => {
                cancelled += 1;
                assert_eq!(watermark(&server), Some(generation), "cancelled: {run}");
            }
            Some("succeeded") => generation = run["epoch"].as_u64().unwrap(),
            _ => panic!("run {id} neither cancelled nor succeeded: {run}"),
        }
        println!("run {id}: {}", run["state"]);
        if while_running {
            break;
        }
    }
    assert!(cancelled > 0, "no cancel took effect in 6 tries");
    check("around the cancelled runs");
    run_ok(&server, &shared, "success after the cancels");

    // At rest: the writer stopped, a last run, every record committed.
    shared.set_phase("at rest");
    shared.stop_writer.store(true, Ordering::Release);
    writer.join().expect("the writer does not panic");
    check("when the writer stopped");
    run_ok(&server, &shared, "the last one");
    let (acked, words) = {
        let l = lock(&shared.ledger);
        (l.acked, l.words.clone())
    };
    let client = server.client();
    eventually(Duration::from_secs(10), || {
        records_total(&client).is_ok_and(|r| r == (acked * LINES) as u64)
    })
    .expect("every acknowledged record is committed");
    shared.stop_readers.store(true, Ordering::Release);
    let stats: Vec<ReaderStats> = readers
        .into_iter()
        .map(|r| r.join().expect("a reader does not panic"))
        .collect();
    check("while reading");
    for w in HOT {
        let v = get(&server, &format!("/v1/views/word_counts/keys/{w}"));
        assert_eq!(v["value"], words[w], "{w} at rest: {v}");
    }
    let mut expected: Vec<(&String, &i64)> = words.iter().collect();
    expected.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let top = get(&server, "/v1/views/word_counts/top?k=5");
    let items: Vec<(String, i64)> = top["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|i| {
            (
                i["key"].as_str().unwrap().to_owned(),
                i["value"].as_i64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, i64)> = expected
        .iter()
        .take(5)
        .map(|(k, v)| ((*k).clone(), **v))
        .collect();
    assert_eq!(items, want, "top 5 at rest: {top}");
    for (key, value) in &items {
        let v = get(&server, &format!("/v1/views/word_counts/keys/{key}"));
        assert_eq!(
            v["value"], *value,
            "{key}: top says {value}, the key says {v}"
        );
    }

    let status = server.terminate();
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    for (i, s) in stats.iter().enumerate() {
        // The reads spanned the runs: they saw several generations.
        assert!(
            s.reads > 100 && s.watermarks.len() >= 3,
            "reader {i} read {} times, saw generations {:?}",
            s.reads,
            s.watermarks
        );
        println!(
            "reader {i}: {} reads over generations {:?}; {} below the count acknowledged before (not committed yet), {} above the count acknowledged after (committed before the 200 arrived)",
            s.reads, s.watermarks, s.behind_acked, s.ahead_of_acked
        );
    }
    println!(
        "{acked} requests ({} lines) in {:?}",
        acked * LINES,
        started.elapsed()
    );
}
