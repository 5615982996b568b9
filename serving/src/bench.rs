//! `lamina bench stream`: the speed layer's throughput and latency, measured
//! from outside as a user would.
//!
//! It starts a real `lamina serve` (this binary) in a temporary directory
//! with a generated config (one text stream fed by the TCP listener, the
//! `word_counts` view, the write-ahead log on), and drives it with its own
//! load generator speaking the listener's protocol: ~10-word lines over a
//! few TCP connections, paced to a target rate.
//!
//! - **Sustained rate**: a rate is sustained when the generator actually sent
//!   it (≥ 95 %) and the records taken into micro-batches kept up: the lag
//!   (sent − processed) at the end stays under two intervals' worth plus
//!   0.5 s of input, and the average lag of the last third of the run is at
//!   most 1.25 × that of the first third plus one interval's input.
//!   Without `--rate`, rates double from 50k lines/s until one fails, then
//!   the best is confirmed for the full duration.
//! - **Latency**: a line with a unique marker word is sent on its own
//!   connection; the marker's key is queried (every 0.5 ms) until it reads 1,
//!   and the time from send to that answer is the end-to-end latency (sent →
//!   counted and visible to a query). The next marker follows after a random
//!   pause of up to one interval, so that markers fall at every phase of the
//!   micro-batch clock.
//! - **Peak RSS** of the server process (`VmHWM`).

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::client::Client;

/// Settings of one benchmark.
#[derive(Debug, Clone, clap::Args)]
pub struct StreamBench {
    /// Target rate in lines/s; without it, find the highest sustained rate.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Length of the measured run.
    #[arg(long, default_value_t = 60)]
    pub duration_secs: u64,
    /// Length of each trial while searching for the highest rate.
    #[arg(long, default_value_t = 10)]
    pub trial_secs: u64,
    /// Micro-batch interval of the server.
    #[arg(long, default_value_t = 200)]
    pub interval_ms: u64,
    /// Load-generator connections.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Keep the server's directory (logs, data) instead of deleting it.
    #[arg(long)]
    pub keep: bool,
}

/// What one run at one rate measured.
#[derive(Debug, Clone)]
struct RunResult {
    target: u64,
    sent_rate: f64,
    processed_rate: f64,
    lag_first_third: u64,
    lag_last_third: u64,
    lag_end: u64,
    latencies_ms: Vec<f64>,
    sustained: bool,
    /// Per micro-batch during the run: processing time and the wait from
    /// the first record's arrival to the start of processing (ms, sorted).
    processing_ms: Vec<f64>,
    waiting_ms: Vec<f64>,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(0, |a| a.port())
}

struct ServerProcess {
    child: Child,
    client: Client,
    tcp: u16,
    dir: PathBuf,
    keep: bool,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl ServerProcess {
    fn start(interval_ms: u64, keep: bool) -> Result<Self, String> {
        let dir =
            std::env::temp_dir().join(format!("lamina-bench-{}-{interval_ms}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let (http, tcp) = (free_port(), free_port());
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:{http}\"\n\n[speed]\nbatch_interval_ms = {interval_ms}\nepoch_ms = {}\n\n\
             [[stream]]\nname = \"lines\"\nformat = \"text\"\n  [[stream.receiver]]\n  type = \"tcp_listen\"\n  listen = \"127.0.0.1:{tcp}\"\n\n\
             [[view]]\nname = \"word_counts\"\nstream = \"lines\"\nkey = {{ words = \"line\" }}\naggregate = \"count\"\n\n[batch]\nschedule = \"off\"\n",
            interval_ms * 300
        );
        let path = dir.join("lamina.toml");
        std::fs::write(&path, config).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.join("serve.log")).map_err(|e| e.to_string())?;
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let child = Command::new(exe)
            .args(["serve", "--config"])
            .arg(&path)
            .current_dir(&dir)
            .env("RUST_LOG", "warn")
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start the server: {e}"))?;
        let client = Client::new(&format!("http://127.0.0.1:{http}"), None)?
            .with_timeout(Duration::from_secs(5));
        let server = ServerProcess {
            child,
            client,
            tcp,
            dir,
            keep,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while server.client.get("/healthz").map(|r| r.status) != Ok(200) {
            if Instant::now() > deadline {
                return Err(format!(
                    "the server did not start; see {}",
                    server.dir.join("serve.log").display()
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(server)
    }

    fn processed(&self) -> u64 {
        self.client
            .get("/v1/streams")
            .ok()
            .and_then(|r| r.json().ok())
            .and_then(|v| v["streams"][0]["records_total"].as_u64())
            .unwrap_or(0)
    }

    fn last_batch_id(&self) -> Option<u64> {
        let v = self
            .client
            .get("/v1/streams/lines/batches")
            .ok()?
            .json()
            .ok()?;
        v["batches"].as_array()?.last()?["id"].as_u64()
    }

    /// Processing times and arrival-to-processing waits of the kept
    /// micro-batches after `since` that had records, sorted.
    fn batch_times(&self, since: Option<u64>) -> (Vec<f64>, Vec<f64>) {
        let path = match since {
            Some(id) => format!("/v1/streams/lines/batches?since={id}"),
            None => "/v1/streams/lines/batches".to_owned(),
        };
        let Some(v) = self.client.get(&path).ok().and_then(|r| r.json().ok()) else {
            return (Vec::new(), Vec::new());
        };
        let mut processing = Vec::new();
        let mut waiting = Vec::new();
        for b in v["batches"].as_array().into_iter().flatten() {
            if b["records"].as_u64().unwrap_or(0) == 0 {
                continue;
            }
            processing.push(b["processing_ms"].as_f64().unwrap_or(0.0));
            if let (Some(start), Some(first)) = (
                b["processing_start_us"].as_i64(),
                b["first_receive_us"].as_i64(),
            ) {
                waiting.push((start - first) as f64 / 1e3);
            }
        }
        processing.sort_by(f64::total_cmp);
        waiting.sort_by(f64::total_cmp);
        (processing, waiting)
    }

    fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).ok()?;
        let kb: f64 = status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    }
}

/// A corpus of ~10-word lines over a 10,000-word vocabulary, as one buffer
/// the senders write slices of.
fn corpus() -> (Vec<u8>, Vec<usize>) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let mut bytes = Vec::new();
    let mut ends = Vec::new();
    for _ in 0..20_000 {
        for w in 0..10 {
            if w > 0 {
                bytes.push(b' ');
            }
            bytes.extend_from_slice(format!("w{}", next() % 10_000).as_bytes());
        }
        bytes.push(b'\n');
        ends.push(bytes.len());
    }
    (bytes, ends)
}

fn run_at(
    server: &ServerProcess,
    rate: u64,
    secs: u64,
    connections: usize,
    interval_ms: u64,
) -> RunResult {
    let (bytes, ends) = corpus();
    let bytes = Arc::new(bytes);
    let ends = Arc::new(ends);
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let before = server.processed();
    let first_batch = server.last_batch_id();
    let start = Instant::now();
    let per_conn = rate as f64 / connections as f64;
    let senders: Vec<_> = (0..connections)
        .map(|c| {
            let (bytes, ends, sent, stop) = (
                Arc::clone(&bytes),
                Arc::clone(&ends),
                Arc::clone(&sent),
                Arc::clone(&stop),
            );
            let port = server.tcp;
            std::thread::spawn(move || {
                let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                    return;
                };
                let _ = s.set_nodelay(true);
                let mut line = (c * 5_000) % ends.len();
                let mut done = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    let due = (per_conn * start.elapsed().as_secs_f64()) as u64;
                    if due <= done {
                        std::thread::sleep(Duration::from_micros(500));
                        continue;
                    }
                    // Send what is due (at most 8192 lines per write), as
                    // contiguous slices of the corpus.
                    let n = (due - done).min(8192) as usize;
                    let mut left = n;
                    while left > 0 {
                        let take = left.min(ends.len() - line);
                        let from = if line == 0 { 0 } else { ends[line - 1] };
                        let to = ends[line + take - 1];
                        if s.write_all(&bytes[from..to]).is_err() {
                            return;
                        }
                        line = (line + take) % ends.len();
                        left -= take;
                    }
                    done += n as u64;
                    sent.fetch_add(n as u64, Ordering::Relaxed);
                }
            })
        })
        .collect();
    // Markers: one line with a unique word every 10 ms; poll until visible.
    let latencies = {
        let stop = Arc::clone(&stop);
        let port = server.tcp;
        let client = server.client.clone();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                return out;
            };
            let _ = s.set_nodelay(true);
            let run = std::process::id();
            let mut i = 0u64;
            let mut rng: u64 = 0x2545_f491_4f6c_dd1d ^ rate;
            while !stop.load(Ordering::Relaxed) {
                let word = format!("zzmark{run}x{rate}x{i}");
                let sent_at = Instant::now();
                if s.write_all(format!("{word}\n").as_bytes()).is_err() {
                    break;
                }
                let path = format!("/v1/views/word_counts/keys/{word}");
                let deadline = sent_at + Duration::from_secs(10);
                loop {
                    let seen = client
                        .get(&path)
                        .ok()
                        .and_then(|r| r.json().ok())
                        .is_some_and(|v| v["value"].as_i64() == Some(1));
                    if seen {
                        out.push(sent_at.elapsed().as_secs_f64() * 1e3);
                        break;
                    }
                    if Instant::now() > deadline || stop.load(Ordering::Relaxed) {
                        break;
                    }
                    std::thread::sleep(Duration::from_micros(500));
                }
                i += 1;
                // A random pause before the next marker: sending right after
                // the previous one became visible would always land just
                // after a micro-batch tick and measure a whole interval.
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                std::thread::sleep(Duration::from_micros(rng % (interval_ms * 1000).max(1)));
            }
            out
        })
    };
    // Lag samples once a second.
    let mut lags = Vec::new();
    while start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(1));
        let processed = server.processed().saturating_sub(before);
        lags.push(sent.load(Ordering::Relaxed).saturating_sub(processed));
    }
    let elapsed = start.elapsed().as_secs_f64();
    let total_sent = sent.load(Ordering::Relaxed);
    let processed_at_end = server.processed().saturating_sub(before);
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        let _ = s.join();
    }
    let mut latencies_ms = latencies.join().unwrap_or_default();
    latencies_ms.sort_by(f64::total_cmp);
    let (processing_ms, waiting_ms) = server.batch_times(first_batch);
    // Let the server drain before the next run.
    let drain = Instant::now();
    while server.processed().saturating_sub(before) < sent.load(Ordering::Relaxed)
        && drain.elapsed() < Duration::from_secs(30)
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    let third = (lags.len() / 3).max(1);
    let avg = |l: &[u64]| l.iter().sum::<u64>() / l.len().max(1) as u64;
    let lag_first_third = avg(&lags[..third.min(lags.len())]);
    let lag_last_third = avg(&lags[lags.len().saturating_sub(third)..]);
    let lag_end = total_sent.saturating_sub(processed_at_end);
    let sent_rate = total_sent as f64 / elapsed;
    // Input of one interval, and of two intervals plus half a second.
    let interval_lines = rate as f64 * interval_ms as f64 / 1e3;
    let allowed_lag = rate as f64 * (2.0 * interval_ms as f64 / 1e3 + 0.5);
    let sustained = sent_rate >= 0.95 * rate as f64
        && (lag_end as f64) <= allowed_lag
        && (lag_last_third as f64) <= 1.25 * lag_first_third as f64 + interval_lines;
    RunResult {
        target: rate,
        sent_rate,
        processed_rate: processed_at_end as f64 / elapsed,
        lag_first_third,
        lag_last_third,
        lag_end,
        latencies_ms,
        sustained,
        processing_ms,
        waiting_ms,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn report(label: &str, r: &RunResult) {
    println!(
        "  {label:<10} target {:>9} lines/s  sent {:>11.0}/s  processed {:>11.0}/s  lag avg first/last third {}/{}  at end {}  sustained: {}  latency p50 {:.1} ms p99 {:.1} ms ({} markers)",
        r.target,
        r.sent_rate,
        r.processed_rate,
        r.lag_first_third,
        r.lag_last_third,
        r.lag_end,
        if r.sustained { "yes" } else { "NO" },
        percentile(&r.latencies_ms, 0.5),
        percentile(&r.latencies_ms, 0.99),
        r.latencies_ms.len()
    );
    println!(
        "             micro-batches: processing p50 {:.1} ms p99 {:.1} ms; first record's wait for processing p50 {:.1} ms p99 {:.1} ms ({} batches kept)",
        percentile(&r.processing_ms, 0.5),
        percentile(&r.processing_ms, 0.99),
        percentile(&r.waiting_ms, 0.5),
        percentile(&r.waiting_ms, 0.99),
        r.processing_ms.len()
    );
}

/// Runs the benchmark and prints its figures.
///
/// # Errors
///
/// A message when the server cannot be started.
pub fn stream(args: &StreamBench) -> Result<(), String> {
    let server = ServerProcess::start(args.interval_ms, args.keep)?;
    println!(
        "lamina bench stream: interval {} ms, {} connections, server pid {}, data in {}",
        args.interval_ms,
        args.connections,
        server.child.id(),
        Path::new(&server.dir).display()
    );
    let best = match args.rate {
        Some(rate) => rate,
        None => {
            let mut rate = 50_000u64;
            let mut best = 0;
            loop {
                let r = run_at(
                    &server,
                    rate,
                    args.trial_secs,
                    args.connections,
                    args.interval_ms,
                );
                report("trial", &r);
                if !r.sustained || rate >= 6_400_000 {
                    break;
                }
                best = rate;
                rate *= 2;
            }
            // One step between the last good and the first bad rate.
            let between = best + best / 2;
            if best > 0 {
                let r = run_at(
                    &server,
                    between,
                    args.trial_secs,
                    args.connections,
                    args.interval_ms,
                );
                report("trial", &r);
                if r.sustained {
                    best = between;
                }
            }
            best.max(1)
        }
    };
    let full = run_at(
        &server,
        best,
        args.duration_secs,
        args.connections,
        args.interval_ms,
    );
    report("sustained", &full);
    let half = run_at(
        &server,
        (best / 2).max(1),
        args.duration_secs.min(30),
        args.connections,
        args.interval_ms,
    );
    report("half rate", &half);
    println!(
        "RESULT interval_ms={} sustained_lines_per_s={} sustained={} p50_ms_at_half={:.1} p99_ms_at_half={:.1} peak_rss_mib={:.0}",
        args.interval_ms,
        best,
        full.sustained,
        percentile(&half.latencies_ms, 0.5),
        percentile(&half.latencies_ms, 0.99),
        server.peak_rss_mib().unwrap_or(f64::NAN)
    );
    Ok(())
}
