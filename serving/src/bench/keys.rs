//! `lamina bench keys`: what a large number of distinct keys costs the
//! server — memory per key, micro-batch time, query latency, a batch run,
//! and a restart after SIGKILL — with every key checked exact.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::http::KeepAlive;
use super::server::{BatchLog, MIB, ServerProcess, epoch_ms, percentile, sorted};
use super::text::Rng;

/// Settings of `lamina bench keys`.
#[derive(Debug, Clone, clap::Args)]
pub struct KeysBench {
    /// Distinct keys to send: one line each, every key new (`k` + its
    /// index in base 36).
    #[arg(long, default_value_t = 10_000_000)]
    pub keys: u64,
    /// Target rate in lines (keys) per second.
    #[arg(long, default_value_t = 500_000)]
    pub rate: u64,
    /// Micro-batch interval of the server.
    #[arg(long, default_value_t = 200)]
    pub interval_ms: u64,
    /// Epoch length of the server (default: 300 intervals).
    #[arg(long)]
    pub epoch_ms: Option<u64>,
    /// Load-generator connections.
    #[arg(long, default_value_t = 2)]
    pub connections: usize,
    /// Longest wait of each phase (ingest, batch run, restart), in seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Stop (with an error) when the server's RSS goes over this, before
    /// it takes the machine's memory.
    #[arg(long, default_value_t = 12_288)]
    pub max_rss_mib: u64,
    /// Seed of the keys queried.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Keep the server's directory (logs, data) instead of deleting it.
    #[arg(long)]
    pub keep: bool,
}

/// Appends key `i` (`k` + `i` in base 36) to `out`.
fn push_key(i: u64, out: &mut Vec<u8>) {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut digits = [0u8; 13];
    let mut at = digits.len();
    let mut v = i;
    loop {
        at -= 1;
        digits[at] = DIGITS[(v % 36) as usize];
        v /= 36;
        if v == 0 {
            break;
        }
    }
    out.push(b'k');
    out.extend_from_slice(&digits[at..]);
}

/// Key `i` as a string.
fn key(i: u64) -> String {
    let mut out = Vec::with_capacity(14);
    push_key(i, &mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn mib(bytes: Option<u64>) -> f64 {
    bytes.map_or(f64::NAN, |b| b as f64 / MIB)
}

/// An error when the server's RSS is over `max_mib`.
fn over_limit(server: &ServerProcess, max_mib: u64, during: &str) -> Result<(), String> {
    match server.rss() {
        Some(rss) if rss > max_mib << 20 => Err(format!(
            "the server's RSS reached {:.0} MiB during {during}, over --max-rss-mib {max_mib}; stopped",
            rss as f64 / MIB
        )),
        _ => Ok(()),
    }
}

/// The count of `key` in `word_counts`: 404 (never seen) reads 0.
fn count_of(client: &mut KeepAlive, key: &str) -> Result<u64, String> {
    match client.get_json(&format!("/v1/views/word_counts/keys/{key}"))? {
        (404, _) => Ok(0),
        (200, v) => v["value"]
            .as_u64()
            .ok_or_else(|| format!("no count for `{key}` in {v}")),
        (status, v) => Err(format!("`{key}`: status {status}: {v}")),
    }
}

/// Queries `n` random keys of `0..keys` once each; latencies (ms, sorted)
/// and the keys that did not read 1.
fn check_random_keys(
    client: &mut KeepAlive,
    rng: &mut Rng,
    keys: u64,
    n: usize,
) -> (Vec<f64>, Vec<String>) {
    let mut latencies = Vec::with_capacity(n);
    let mut wrong = Vec::new();
    for _ in 0..n {
        let k = key(rng.below(keys));
        let t = Instant::now();
        let got = count_of(client, &k);
        latencies.push(t.elapsed().as_secs_f64() * 1e3);
        match got {
            Ok(1) => {}
            Ok(c) => wrong.push(format!("`{k}` reads {c}, expected 1")),
            Err(e) => wrong.push(e),
        }
    }
    (sorted(latencies), wrong)
}

/// The sender threads of the keys.
struct Senders {
    threads: Vec<std::thread::JoinHandle<()>>,
    /// Lines sent so far.
    sent: Arc<AtomicU64>,
    /// The first error of a sender.
    error: Arc<Mutex<Option<String>>>,
}

/// Sends keys `0..keys` over `connections` connections paced to `rate`
/// lines/s.
fn start_senders(port: u16, keys: u64, rate: u64, connections: usize) -> Senders {
    let sent = Arc::new(AtomicU64::new(0));
    let error = Arc::new(Mutex::new(None));
    let start = Instant::now();
    let per_conn = rate as f64 / connections as f64;
    let c_n = connections as u64;
    let threads = (0..c_n)
        .map(|c| {
            let (sent, error) = (Arc::clone(&sent), Arc::clone(&error));
            // Connection c sends the keys of its contiguous range.
            let (lo, hi) = (keys * c / c_n, keys * (c + 1) / c_n);
            std::thread::spawn(move || {
                let result = (|| {
                    let mut s = TcpStream::connect(("127.0.0.1", port))
                        .map_err(|e| format!("sender {c}: cannot connect: {e}"))?;
                    let _ = s.set_nodelay(true);
                    let mut buf = Vec::with_capacity(1 << 17);
                    let mut next = lo;
                    while next < hi {
                        let due = lo + ((per_conn * start.elapsed().as_secs_f64()) as u64);
                        if due <= next {
                            std::thread::sleep(Duration::from_micros(500));
                            continue;
                        }
                        let end = due.min(hi).min(next + 8192);
                        buf.clear();
                        for i in next..end {
                            push_key(i, &mut buf);
                            buf.push(b'\n');
                        }
                        s.write_all(&buf)
                            .map_err(|e| format!("sender {c}: write failed: {e}"))?;
                        sent.fetch_add(end - next, Ordering::Relaxed);
                        next = end;
                    }
                    Ok::<(), String>(())
                })();
                if let Err(e) = result {
                    let mut slot = error.lock().unwrap_or_else(|p| p.into_inner());
                    slot.get_or_insert(e);
                }
            })
        })
        .collect();
    Senders {
        threads,
        sent,
        error,
    }
}

/// Runs the benchmark and prints its figures.
///
/// # Errors
///
/// A message when the server cannot be started, does not keep up within
/// the timeouts, or a key does not read back exactly.
pub fn keys(args: &KeysBench) -> Result<(), String> {
    let epoch_ms = epoch_ms(args.interval_ms, args.epoch_ms)?;
    if args.keys == 0 || args.rate == 0 || args.connections == 0 {
        return Err("--keys, --rate and --connections must be at least 1".into());
    }
    let n = args.keys;
    let timeout = Duration::from_secs(args.timeout_secs);
    let mut server = ServerProcess::start("keys", args.interval_ms, epoch_ms, args.keep, None)?;
    println!(
        "lamina bench keys: {n} distinct keys (one a line, `{}`..`{}`) at {} lines/s over {} connections; server interval {} ms, epoch {epoch_ms} ms, pid {}, data in {}",
        key(0),
        key(n - 1),
        args.rate,
        args.connections,
        args.interval_ms,
        server.pid(),
        server.dir.display()
    );
    let mut problems: Vec<String> = Vec::new();

    // Ingest.
    std::thread::sleep(Duration::from_secs(1));
    let baseline = server.rss();
    let before = server
        .processed()
        .ok_or("the server does not answer GET /v1/streams")?;
    let mut batches = BatchLog::from_now(&server);
    let start = Instant::now();
    let Senders {
        threads: senders,
        sent,
        error: send_error,
    } = start_senders(server.tcp, n, args.rate, args.connections);
    let mut next_progress = 5.0;
    let mut next_poll = 1.0;
    let mut processed = 0;
    let mut all_sent_at = None;
    loop {
        std::thread::sleep(Duration::from_millis(100));
        processed = server
            .processed()
            .map_or(processed, |p| p.saturating_sub(before));
        let s = sent.load(Ordering::Relaxed);
        let t = start.elapsed().as_secs_f64();
        if s == n && all_sent_at.is_none() {
            all_sent_at = Some(t);
        }
        if processed >= n {
            break;
        }
        if t >= next_poll {
            batches.poll(&server);
            next_poll += 1.0;
        }
        if t >= next_progress {
            println!(
                "  {t:6.1} s: sent {s} of {n}, processed {processed} ({:.0} % of sent), RSS {:.0} MiB",
                100.0 * processed as f64 / s.max(1) as f64,
                mib(server.rss())
            );
            next_progress += 5.0;
        }
        if let Some(e) = send_error.lock().unwrap_or_else(|p| p.into_inner()).take() {
            return Err(e);
        }
        over_limit(&server, args.max_rss_mib, "the ingest")?;
        if server.exited() {
            return Err(format!(
                "the server exited during the ingest (processed {processed} of {n}); see {}",
                server.log().display()
            ));
        }
        if start.elapsed() > timeout {
            return Err(format!(
                "the server did not process all keys within {} s (sent {s}, processed {processed} of {n})",
                args.timeout_secs
            ));
        }
    }
    let ingest_s = start.elapsed().as_secs_f64();
    let after = server.rss();
    for h in senders {
        let _ = h.join();
    }
    batches.poll(&server);
    let per_key = match (baseline, after) {
        (Some(b), Some(a)) => (a as f64 - b as f64) / n as f64,
        _ => f64::NAN,
    };
    println!(
        "  ingest: sent in {:.1} s ({:.0} keys/s), all processed after {ingest_s:.1} s ({:.0} keys/s)",
        all_sent_at.unwrap_or(ingest_s),
        n as f64 / all_sent_at.unwrap_or(ingest_s),
        n as f64 / ingest_s
    );
    println!(
        "  RSS: {:.0} MiB before the ingest, {:.0} MiB after: {per_key:.0} bytes per distinct key",
        mib(baseline),
        mib(after)
    );
    let processing = batches.processing_ms();
    let (p50, p99, max) = (
        percentile(&processing, 0.5),
        percentile(&processing, 0.99),
        processing.last().copied().unwrap_or(f64::NAN),
    );
    println!(
        "  micro-batches during the ingest: {} with records ({} records seen of {n}), processing p50 {p50:.1} ms p99 {p99:.1} ms max {max:.1} ms",
        batches.len(),
        batches.records()
    );

    // Queries while the keys are there.
    let mut client = KeepAlive::new(server.http, Duration::from_secs(30));
    let mut views_ms = Vec::new();
    let mut view_keys = None;
    for _ in 0..20 {
        let t = Instant::now();
        let (status, v) = client.get_json("/v1/views")?;
        views_ms.push(t.elapsed().as_secs_f64() * 1e3);
        if status != 200 {
            return Err(format!("GET /v1/views answered {status}: {v}"));
        }
        view_keys = v["views"][0]["keys"].as_u64();
    }
    let views_ms = percentile(&sorted(views_ms), 0.5);
    let mut rng = Rng::new(args.seed);
    let (query_ms, wrong) = check_random_keys(&mut client, &mut rng, n, 1000);
    let (q50, q99) = (percentile(&query_ms, 0.5), percentile(&query_ms, 0.99));
    println!(
        "  GET /v1/views: median {views_ms:.2} ms, reports {} keys; point queries of 1000 random keys: p50 {q50:.3} ms p99 {q99:.3} ms, {} not reading 1",
        view_keys.map_or("?".to_owned(), |k| k.to_string()),
        wrong.len()
    );
    let mut exact = wrong.is_empty();
    if view_keys != Some(n) {
        exact = false;
        println!("  mismatch: GET /v1/views reports {view_keys:?} keys, expected {n}");
    }
    for w in wrong.iter().take(5) {
        println!("  mismatch: {w}");
    }

    // A batch run over everything.
    let steady = server.rss();
    let t0 = Instant::now();
    let resp = server.client.post("/v1/batch/runs", b"", &[])?;
    let id = resp
        .json()
        .ok()
        .and_then(|v| v["id"].as_u64())
        .ok_or_else(|| {
            format!(
                "POST /v1/batch/runs answered {}: {}",
                resp.status,
                String::from_utf8_lossy(&resp.body)
            )
        })?;
    let mut peak = steady.unwrap_or(0);
    let mut tick = 0u64;
    let run = loop {
        std::thread::sleep(Duration::from_millis(50));
        peak = peak.max(server.rss().unwrap_or(0));
        over_limit(&server, args.max_rss_mib, "the batch run")?;
        tick += 1;
        if tick.is_multiple_of(4)
            && let Ok((200, v)) = client.get_json(&format!("/v1/batch/runs/{id}"))
            && matches!(
                v["state"].as_str(),
                Some("succeeded" | "failed" | "cancelled")
            )
        {
            break Some(v);
        }
        if server.exited() {
            return Err(format!(
                "the server exited during the batch run; see {}",
                server.log().display()
            ));
        }
        if t0.elapsed() > timeout {
            problems.push(format!(
                "batch run {id} did not end within {} s",
                args.timeout_secs
            ));
            break None;
        }
    };
    let peak_ratio = match steady {
        Some(s) if s > 0 => peak as f64 / s as f64,
        _ => f64::NAN,
    };
    let mut batch_run_s = f64::NAN;
    if let Some(run) = &run {
        let state = run["state"].as_str().unwrap_or("?");
        let us = |f: &str| run[f].as_i64();
        let server_s = match (us("requested_at_us"), us("finished_at_us")) {
            (Some(a), Some(b)) => Some((b - a) as f64 / 1e6),
            _ => None,
        };
        let computing_s = match (us("started_at_us"), us("finished_at_us")) {
            (Some(a), Some(b)) => (b - a) as f64 / 1e6,
            _ => f64::NAN,
        };
        if state == "succeeded" {
            batch_run_s = server_s.unwrap_or_else(|| t0.elapsed().as_secs_f64());
        } else {
            problems.push(format!(
                "batch run {id} {state}: {}",
                run["error"].as_str().unwrap_or("")
            ));
        }
        println!(
            "  batch run {id}: {state} in {batch_run_s:.2} s (requested → finished; computing {computing_s:.2} s), epoch {}, {} rows, {} keys; RSS steady {:.0} MiB, peak {:.0} MiB during it (x{peak_ratio:.2})",
            run["epoch"],
            run["rows"],
            run["keys"],
            mib(steady),
            peak as f64 / MIB
        );
    }

    // Restart after SIGKILL.
    let known = key(0);
    let spawned = server.kill_and_restart()?;
    let mut healthy_s = None;
    let mut probe = KeepAlive::new(server.http, Duration::from_secs(5));
    let restart_s = loop {
        if healthy_s.is_none() && server.client.get("/healthz").map(|r| r.status) == Ok(200) {
            healthy_s = Some(spawned.elapsed().as_secs_f64());
        }
        if healthy_s.is_some() && count_of(&mut probe, &known) == Ok(1) {
            break spawned.elapsed().as_secs_f64();
        }
        if server.exited() {
            return Err(format!(
                "the server exited after the restart; see {}",
                server.log().display()
            ));
        }
        if spawned.elapsed() > timeout {
            return Err(format!(
                "after a restart, the server did not answer /healthz and `{known}` = 1 within {} s",
                args.timeout_secs
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut client = KeepAlive::new(server.http, Duration::from_secs(30));
    let (_, wrong) = check_random_keys(&mut client, &mut rng, n, 1000);
    println!(
        "  restart after SIGKILL: /healthz after {:.2} s, `{known}` reads 1 after {restart_s:.2} s; 1000 random keys: {} not reading 1; RSS {:.0} MiB",
        healthy_s.unwrap_or(f64::NAN),
        wrong.len(),
        mib(server.rss())
    );
    for w in wrong.iter().take(5) {
        println!("  mismatch after the restart: {w}");
    }
    exact &= wrong.is_empty();
    for p in &problems {
        println!("  problem: {p}");
    }
    println!(
        "RESULT keys={n} rss_bytes_per_key={per_key:.0} batch_p50_ms={p50:.1} batch_p99_ms={p99:.1} batch_max_ms={max:.1} views_ms={views_ms:.2} query_p50_ms={q50:.3} query_p99_ms={q99:.3} batch_run_s={batch_run_s:.2} batch_run_peak_ratio={peak_ratio:.2} restart_s={restart_s:.2} exact={}",
        if exact { "yes" } else { "no" }
    );
    if !exact {
        return Err("some keys did not read back exactly".into());
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_base_36_and_distinct() {
        assert_eq!(key(0), "k0");
        assert_eq!(key(35), "kz");
        assert_eq!(key(36), "k10");
        assert_eq!(key(10_000_000), "k5yc1s");
        let all: std::collections::HashSet<String> = (0..100_000).map(key).collect();
        assert_eq!(all.len(), 100_000);
    }
}
