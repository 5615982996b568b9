//! Exactly-once under `kill -9`, through the real binary.
//!
//! A producer thread sends HTTP ingest requests to `lines` and `events`,
//! each with its own `Idempotency-Key`, and retries every request (same key,
//! same body) until it is acknowledged, so the ground truth is "every
//! request exactly once". Meanwhile the test kills the server with SIGKILL
//! at seeded random moments — some in the middle of a batch run, some right
//! after an epoch boundary while the epoch before it is being sealed — and
//! restarts it on the same directory and ports — at once, so that it
//! usually comes back in the epoch it died in, or after the next epoch
//! boundary. After every restart, requests acknowledged before the kill are
//! sent again and must be answered `duplicate`. After the last restart a
//! final batch run folds everything into a generation, and every key of
//! both views must equal the ground truth exactly, also after a clean
//! stop and start. Each kill prints what was in flight.
//!
//! The seed is printed; `LAMINA_E2E_SEED=N` replays a run's choices (the
//! moments still depend on the machine's timing).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{Rng, Server, WorkDir, eventually, free_port, seed, write_config};
use lamina_serving::client::Client;
use serde_json::Value;

/// Kills per run: each [`KillKind`] twice.
const KILLS: usize = 6;
/// Records per ingest request.
const RECORDS_PER_REQUEST: usize = 20;
/// Distinct words of `lines` (`w0`..`w49`) and users of `events`.
const WORDS: u64 = 50;
const USERS: u64 = 5;
/// Epoch length of the config `common::write_config` writes.
const EPOCH_US: i64 = 1_000_000;
/// Longest any one request may take to be acknowledged, restarts included.
const ACK_DEADLINE: Duration = Duration::from_secs(40);

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// One ingest request and what it adds to the views.
#[derive(Debug, Clone)]
struct Request {
    index: usize,
    stream: &'static str,
    key: String,
    body: String,
    /// `(view, key, amount)` for every record, summed by the truth.
    effects: Vec<(&'static str, String, i64)>,
}

fn request(index: usize, seed: u64, rng: &mut Rng) -> Request {
    let key = format!("crash-{seed}-{index}");
    let mut body = String::new();
    let mut effects = Vec::new();
    // Two thirds words, one third events.
    if index % 3 == 2 {
        for _ in 0..RECORDS_PER_REQUEST {
            let user = format!("u{}", rng.range(0, USERS - 1));
            let amount = rng.range(0, 250) as i64 - 50;
            body.push_str(&format!("{{\"user\":\"{user}\",\"amount\":{amount}}}\n"));
            effects.push(("amount_by_user", user, amount));
        }
        Request {
            index,
            stream: "events",
            key,
            body,
            effects,
        }
    } else {
        for _ in 0..RECORDS_PER_REQUEST {
            let words: Vec<String> = (0..rng.range(1, 5))
                .map(|_| format!("w{}", rng.range(0, WORDS - 1)))
                .collect();
            for w in &words {
                effects.push(("word_counts", w.clone(), 1));
            }
            body.push_str(&words.join(" "));
            body.push('\n');
        }
        Request {
            index,
            stream: "lines",
            key,
            body,
            effects,
        }
    }
}

/// The producer's state, shared with the test thread.
#[derive(Debug, Default)]
struct Ledger {
    /// Every acknowledged request, in order.
    acked: Vec<Request>,
    /// The request being sent and how many attempts it took so far.
    in_flight: Option<(usize, &'static str, String, u32)>,
    /// Acknowledgements that said `duplicate`: an earlier attempt had made
    /// it into the log before the server died without answering.
    acked_as_duplicate: usize,
    /// Attempts that failed (refused, reset, 5xx, 409) and were retried.
    retries: usize,
}

fn lock(ledger: &Mutex<Ledger>) -> std::sync::MutexGuard<'_, Ledger> {
    // A panicking holder leaves plain counters behind; keep reading them.
    ledger.lock().unwrap_or_else(PoisonError::into_inner)
}

fn post_ingest(client: &Client, req: &Request) -> Result<(u16, Value), String> {
    let r = client.post(
        &format!("/v1/ingest/{}", req.stream),
        req.body.as_bytes(),
        &[("Idempotency-Key", req.key.as_str())],
    )?;
    Ok((r.status, r.json().unwrap_or(Value::Null)))
}

/// Sends `req` until it is acknowledged; the answer's `duplicate` flag.
fn send_until_acked(
    client: &Client,
    req: &Request,
    ledger: &Mutex<Ledger>,
) -> Result<bool, String> {
    let deadline = Instant::now() + ACK_DEADLINE;
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        lock(ledger).in_flight = Some((req.index, req.stream, req.key.clone(), attempt));
        match post_ingest(client, req) {
            Ok((200, v)) => {
                let duplicate = v["duplicate"] == true;
                if !duplicate && v["records"] != RECORDS_PER_REQUEST {
                    return Err(format!("request {} acknowledged as {v}", req.key));
                }
                return Ok(duplicate);
            }
            // 409: an attempt the server still runs holds the key; 5xx and
            // transport errors: the server is down or restarting.
            Ok((409 | 500..=599, _)) | Err(_) => {}
            Ok((status, v)) => {
                return Err(format!("request {} answered {status}: {v}", req.key));
            }
        }
        if Instant::now() > deadline {
            return Err(format!(
                "request {} not acknowledged within {ACK_DEADLINE:?} ({attempt} attempts)",
                req.key
            ));
        }
        lock(ledger).retries += 1;
        thread::sleep(Duration::from_millis(15));
    }
}

/// Sends requests until `stop`, each until acknowledged.
fn produce(base: &str, seed: u64, stop: &AtomicBool, ledger: &Mutex<Ledger>) -> Result<(), String> {
    let client = Client::new(base, None)?.with_timeout(Duration::from_secs(5));
    let mut rng = Rng(seed ^ 0x5EED);
    for index in 0..100_000 {
        if stop.load(Ordering::Acquire) {
            break;
        }
        let req = request(index, seed, &mut rng);
        let duplicate = send_until_acked(&client, &req, ledger)?;
        let mut l = lock(ledger);
        l.in_flight = None;
        l.acked_as_duplicate += usize::from(duplicate);
        l.acked.push(req);
    }
    Ok(())
}

/// The ground truth: every acknowledged request once.
fn truth(acked: &[Request]) -> BTreeMap<&'static str, BTreeMap<String, i64>> {
    let mut views: BTreeMap<&'static str, BTreeMap<String, i64>> = BTreeMap::new();
    views.insert("word_counts", BTreeMap::new());
    views.insert("amount_by_user", BTreeMap::new());
    for req in acked {
        for (view, key, amount) in &req.effects {
            *views
                .get_mut(view)
                .expect("a configured view")
                .entry(key.clone())
                .or_default() += amount;
        }
    }
    views
}

/// Every key of `view` as the server ranks them (all of them: far fewer
/// than `k`).
fn all_keys(server: &Server, view: &str) -> Result<BTreeMap<String, i64>, String> {
    let (status, v) = server_get(server, &format!("/v1/views/{view}/top?k=10000"))?;
    if status != 200 {
        return Err(format!("top of {view}: {status} {v}"));
    }
    let items = v["items"].as_array().ok_or(format!("top of {view}: {v}"))?;
    items
        .iter()
        .map(|i| {
            Ok((
                i["key"].as_str().ok_or(format!("{i}"))?.to_owned(),
                i["value"].as_i64().ok_or(format!("{i}"))?,
            ))
        })
        .collect()
}

fn server_get(server: &Server, path: &str) -> Result<(u16, Value), String> {
    let r = server.client().get(path)?;
    Ok((r.status, r.json().unwrap_or(Value::Null)))
}

/// Differences between the served views and the truth; empty when exact.
fn differences(
    server: &Server,
    truth: &BTreeMap<&'static str, BTreeMap<String, i64>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (view, expected) in truth {
        let served = match all_keys(server, view) {
            Ok(s) => s,
            Err(e) => return vec![e],
        };
        for (key, want) in expected {
            match served.get(key) {
                Some(got) if got == want => {}
                got => out.push(format!("{view}[{key}]: served {got:?}, truth {want}")),
            }
        }
        for (key, got) in &served {
            if !expected.contains_key(key) {
                out.push(format!("{view}[{key}]: served {got}, never ingested"));
            }
        }
    }
    out
}

/// Requests a batch run; its id.
fn request_run(server: &Server) -> Result<u64, String> {
    let r = server.client().post("/v1/batch/runs", b"", &[])?;
    let v = r.json()?;
    if r.status != 202 {
        return Err(format!("POST /v1/batch/runs: {} {v}", r.status));
    }
    v["id"].as_u64().ok_or(format!("run without id: {v}"))
}

/// Polls run `id` until it is over (at most `limit`); its record.
fn wait_run(server: &Server, id: u64, limit: Duration) -> Value {
    let mut last = Value::Null;
    let done = eventually(limit, || {
        if let Ok((200, v)) = server_get(server, &format!("/v1/batch/runs/{id}")) {
            last = v;
        }
        matches!(
            last["state"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        )
    });
    assert!(
        done.is_some(),
        "batch run {id} did not finish within {limit:?}; last seen {last}\n{}",
        tail(&server.log_text())
    );
    last
}

fn tail(log: &str) -> String {
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A run's state, and its error or generation.
fn run_summary(run: &Value) -> String {
    match (&run["state"], &run["error"]) {
        (Value::String(state), Value::String(e)) => format!("{state} ({e})"),
        (Value::String(state), _) => format!("{state} (epoch {})", run["epoch"]),
        _ => run.to_string(),
    }
}

/// Records the server replayed from the log at its last start.
fn replayed(log: &str) -> String {
    log.lines()
        .filter(|l| l.contains("replayed records"))
        .filter_map(|l| l.split("records=").nth(1))
        .next_back()
        .unwrap_or("0")
        .trim()
        .to_owned()
}

/// Rows of `stream` in the master dataset's manifest.
fn master_rows(dir: &Path, stream: &str) -> u64 {
    std::fs::read(dir.join("lamina-data/master/_manifest.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|m| {
            m["files"].as_array().map(|files| {
                files
                    .iter()
                    .filter(|f| f["stream"] == stream)
                    .filter_map(|f| f["rows"].as_u64())
                    .sum()
            })
        })
        .unwrap_or(0)
}

fn sealed_through(dir: &Path) -> Option<u64> {
    let bytes = std::fs::read(dir.join("lamina-data/master/_manifest.json")).ok()?;
    serde_json::from_slice::<Value>(&bytes).ok()?["sealed_through"].as_u64()
}

/// Sleeps until `offset` past the next epoch boundary of the wall clock
/// (the server's epochs are aligned to it).
fn sleep_past_next_epoch(offset: Duration) {
    let now = now_us();
    let next = (now / EPOCH_US + 1) * EPOCH_US;
    thread::sleep(Duration::from_micros((next - now) as u64) + offset);
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum KillKind {
    /// At a random moment.
    Anytime,
    /// Shortly after requesting a batch run: while it closes the epoch,
    /// seals, reads the master dataset or publishes.
    DuringBatchRun,
    /// Just after an epoch boundary, while the closed epoch is sealed.
    DuringSealing,
}

#[test]
fn kill_9_at_random_moments_loses_nothing_and_counts_nothing_twice() {
    let seed = seed();
    println!("seed {seed} (rerun with LAMINA_E2E_SEED={seed})");
    let started = Instant::now();
    let dir = WorkDir::new("crash");
    let (http, tcp) = (free_port(), free_port());
    let config = write_config(dir.path(), http, tcp, "");
    let config = config.to_str().unwrap();
    let args = ["--config", config];
    let mut server = Server::start(dir.path(), http, &args);
    let base = format!("http://127.0.0.1:{http}");

    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (ledger, stop, base) = (Arc::clone(&ledger), Arc::clone(&stop), base.clone());
        thread::spawn(move || produce(&base, seed, &stop, &ledger))
    };
    let acked = || lock(&ledger).acked.len();

    // Some data and a sealed epoch first, so that runs and seals have work.
    eventually(Duration::from_secs(10), || {
        acked() >= 10 && sealed_through(dir.path()).is_some()
    })
    .expect("the producer gets acknowledgements and an epoch is sealed");

    let mut rng = Rng(seed);
    let mut notes: Vec<String> = Vec::new();
    // Every kind twice, in a seeded order.
    let mut kinds = [
        KillKind::DuringBatchRun,
        KillKind::DuringSealing,
        KillKind::Anytime,
    ]
    .repeat(KILLS / 3);
    for i in (1..kinds.len()).rev() {
        kinds.swap(i, rng.range(0, i as u64) as usize);
    }
    for (k, &kind) in kinds.iter().enumerate() {
        let up_since = Instant::now();
        let mut run = None;
        let mut note = String::new();
        match kind {
            KillKind::Anytime => thread::sleep(rng.millis(100, 800)),
            KillKind::DuringBatchRun => {
                // Early in an epoch, so that a quick restart lands in the
                // same wall-clock epoch as the one the run closed early.
                sleep_past_next_epoch(rng.millis(0, 300));
                let id = request_run(&server).expect("a batch run is accepted");
                let delay = rng.millis(0, 300);
                thread::sleep(delay);
                let seen = server_get(&server, &format!("/v1/batch/runs/{id}"))
                    .map(|(_, v)| v)
                    .unwrap_or_else(Value::String);
                note.push_str(&format!(
                    "batch run {id} requested {delay:?} before, {}; ",
                    run_summary(&seen)
                ));
                run = Some((id, seen["requested_at_us"].clone()));
            }
            KillKind::DuringSealing => sleep_past_next_epoch(rng.millis(0, 80)),
        }
        let at = now_us();
        let in_flight = lock(&ledger).in_flight.clone();
        let acked_before = acked();
        server.kill9();
        note = format!(
            "kill {}/{KILLS} ({kind:?}) after {:?} up, {} ms into epoch {}, sealed through {:?}: {note}producer in flight {in_flight:?}, {acked_before} acknowledged",
            k + 1,
            up_since.elapsed(),
            (at % EPOCH_US) / 1000,
            at / EPOCH_US,
            sealed_through(dir.path()),
        );
        // Down briefly (the restart usually lands in the same epoch), or
        // until the next epoch (the restart finds a new one).
        if rng.range(0, 2) == 0 {
            sleep_past_next_epoch(rng.millis(0, 100));
        } else {
            thread::sleep(rng.millis(0, 150));
        }
        let restart = Instant::now();
        server = Server::start(dir.path(), http, &args);
        let restarted_at = now_us();
        note.push_str(&format!(
            "; restarted in {:?}{}, replayed {}",
            restart.elapsed(),
            if restarted_at / EPOCH_US == at / EPOCH_US {
                " (same epoch)"
            } else {
                ""
            },
            replayed(&server.log_text())
        ));
        if let Some((id, requested_at)) = run {
            // The run was interrupted, or finished before the kill.
            let after = match server_get(&server, &format!("/v1/batch/runs/{id}")) {
                Ok((200, v)) if v["requested_at_us"] != requested_at => {
                    format!("id reused by another run: {}", run_summary(&v))
                }
                Ok((200, v)) => run_summary(&v),
                Ok((status, v)) => format!("{status} {v}"),
                Err(e) => e,
            };
            note.push_str(&format!("; run {id} after the restart: {after}"));
        }

        // Retries of requests acknowledged before the kill are no-ops.
        let retried: Vec<Request> = {
            let l = lock(&ledger);
            (0..3)
                .map(|_| l.acked[rng.range(0, l.acked.len() as u64 - 1) as usize].clone())
                .collect()
        };
        let client = server.client();
        for req in &retried {
            let answer = post_ingest(&client, req);
            assert!(
                matches!(&answer, Ok((200, v)) if v["duplicate"] == true),
                "retrying acknowledged request {} after {note}: {answer:?}",
                req.key
            );
        }
        note.push_str(&format!(
            "; retried {:?}: duplicate",
            retried.iter().map(|r| r.index).collect::<Vec<_>>()
        ));
        println!("{note}");
        notes.push(note);
        // Progress after every restart, so kills do not only hit start-ups.
        eventually(Duration::from_secs(20), || acked() > acked_before)
            .unwrap_or_else(|| panic!("no acknowledgement after {}", notes.join("\n")));
    }

    stop.store(true, Ordering::Release);
    producer
        .join()
        .expect("the producer does not panic")
        .unwrap_or_else(|e| panic!("{e}\n{}", notes.join("\n")));
    let acked_requests = lock(&ledger).acked.clone();
    let truth = truth(&acked_requests);

    // Before the final run: the merged answers (earlier runs during the
    // kills have published generations already), for diagnosis only.
    let mut before_final = Vec::new();
    let exact_before = eventually(Duration::from_secs(5), || {
        before_final = differences(&server, &truth);
        before_final.is_empty()
    });
    let before_final = match exact_before {
        Some(_) => "exact".to_owned(),
        None => format!("{} differences", before_final.len()),
    };

    // A final run folds everything into one generation.
    let id = request_run(&server).expect("the final batch run is accepted");
    let run = wait_run(&server, id, Duration::from_secs(30));
    assert_eq!(
        run["state"],
        "succeeded",
        "final batch run: {run}\n{}\n{}",
        notes.join("\n"),
        tail(&server.log_text())
    );

    // Every acknowledged record is durable, so it shows up within a few
    // micro-batches; then nothing may change any more.
    let mut diff = Vec::new();
    let exact = eventually(Duration::from_secs(10), || {
        diff = differences(&server, &truth);
        diff.is_empty()
    });
    let sent_records = |stream: &str| {
        acked_requests.iter().filter(|r| r.stream == stream).count() * RECORDS_PER_REQUEST
    };
    let report = |diff: &[String], server: &Server| {
        format!(
            "{} differences from the truth of {} acknowledged requests:\n{}\n\
             before the final batch run the answers were {before_final}; \
             the master dataset holds {} of {} acknowledged lines and {} of {} events\n\
             kills (seed {seed}):\n{}\nserver log:\n{}",
            diff.len(),
            acked_requests.len(),
            diff.join("\n"),
            master_rows(dir.path(), "lines"),
            sent_records("lines"),
            master_rows(dir.path(), "events"),
            sent_records("events"),
            notes.join("\n"),
            tail(&server.log_text())
        )
    };
    assert!(exact.is_some(), "{}", report(&diff, &server));
    thread::sleep(Duration::from_millis(300));
    let diff = differences(&server, &truth);
    assert!(diff.is_empty(), "later: {}", report(&diff, &server));

    // Per key: the merged value, and its two halves adding up to it.
    for (view, keys) in &truth {
        for (key, want) in keys {
            let (status, v) = server_get(&server, &format!("/v1/views/{view}/keys/{key}"))
                .expect("the server answers");
            assert_eq!(status, 200, "{v}");
            assert_eq!(v["value"], *want, "{view}[{key}]: {v}");
            let parts = [&v["batch_value"], &v["realtime_value"]];
            assert!(
                parts.iter().any(|p| !p.is_null()),
                "{view}[{key}] has a value but neither half: {v}"
            );
            let sum: i64 = parts.iter().filter_map(|p| p.as_i64()).sum();
            assert_eq!(sum, *want, "{view}[{key}]: halves do not add up: {v}");
        }
    }

    // And the same after a clean stop and start.
    let status = server.terminate();
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    let server = Server::start(dir.path(), http, &args);
    let diff = differences(&server, &truth);
    assert!(
        diff.is_empty(),
        "after a clean restart: {}",
        report(&diff, &server)
    );
    let status = server.terminate();
    assert!(status.success(), "SIGTERM exits 0, got {status}");

    let l = lock(&ledger);
    println!(
        "{} requests acknowledged ({} of them as duplicates of an attempt cut by a kill), {} retried attempts, {KILLS} kills, {:?}",
        l.acked.len(),
        l.acked_as_duplicate,
        l.retries,
        started.elapsed()
    );
}
