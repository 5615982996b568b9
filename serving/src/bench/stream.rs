//! `lamina bench stream`: sustained TCP ingest into `word_counts`, the
//! end-to-end latency, and the exact counts, against a real server.

use std::collections::HashSet;
use std::io::Write;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::http::KeepAlive;
use super::server::{BatchLog, ServerProcess, epoch_ms, percentile};
use super::text::{
    Distribution, LineGen, Rng, Sampler, Vocabulary, expected_distinct, lines_per_second,
};
use crate::client::encode_segment;

/// How words are drawn from the vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DistributionArg {
    /// Zipf over the frequency rank, exponent `--zipf-s`.
    Zipf,
    /// Every word equally likely.
    Uniform,
}

/// Settings of `lamina bench stream`.
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
    /// Epoch length of the server (default: 300 intervals).
    #[arg(long)]
    pub epoch_ms: Option<u64>,
    /// Load-generator connections.
    #[arg(long, default_value_t = 4)]
    pub connections: usize,
    /// Vocabulary size (distinct words).
    #[arg(long, default_value_t = 100_000)]
    pub vocab: usize,
    /// Several vocabulary sizes, e.g. `10000,100000,1000000`: the whole
    /// benchmark once per size, each against a fresh server (overrides
    /// --vocab).
    #[arg(long, value_delimiter = ',')]
    pub vocabs: Vec<usize>,
    /// How words are drawn by frequency rank.
    #[arg(long, value_enum, default_value_t = DistributionArg::Zipf)]
    pub distribution: DistributionArg,
    /// Exponent of the Zipf distribution.
    #[arg(long, default_value_t = 1.0)]
    pub zipf_s: f64,
    /// Seed of the vocabulary and of the lines.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Keep the server's directory (logs, data) instead of deleting it.
    #[arg(long)]
    pub keep: bool,
    /// Benchmark this server binary instead of `lamina serve`: one that
    /// embeds Lamina and serves `word_counts` as a Rust DStream program,
    /// e.g. `target/release/examples/served_word_count` (started as `BIN
    /// serve --config FILE`, the config without the view).
    #[arg(long, value_name = "BIN")]
    pub server_bin: Option<std::path::PathBuf>,
    /// The view holding the word counts: `word_counts`, or e.g.
    /// `running_counts` of `examples/stateful_word_count` (a state view).
    #[arg(long, default_value = "word_counts")]
    pub view: String,
    /// Also poll the server as an open web console does (its page once,
    /// then every second the requests its script makes) and report how
    /// long each round of requests took under the load.
    #[arg(long)]
    pub console: bool,
}

/// The vocabulary and how words are drawn from it.
struct Workload {
    vocab: Arc<Vocabulary>,
    sampler: Arc<Sampler>,
    probabilities: Vec<f64>,
}

/// Everything sent to one server during its life.
struct Sent {
    /// Per word index.
    counts: Vec<u64>,
    /// Lines of vocabulary words, and marker lines.
    lines: u64,
    markers: u64,
    /// Why the counts may not be what the server received (a failed write).
    errors: Vec<String>,
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
    /// Medians of the read, parse, program and commit phases.
    phases_ms: [f64; 4],
    waiting_ms: Vec<f64>,
    /// Lines of words sent, per word index, distinct words, markers sent.
    lines: u64,
    counts: Vec<u64>,
    distinct: usize,
    markers: u64,
    /// Failed writes: the counts sent may not be what the server got.
    errors: Vec<String>,
    /// Remarks on the run.
    notes: Vec<String>,
    /// With `--console`: how long each second's round of the console's
    /// requests took (ms, sorted), and the requests that failed.
    console_ms: Vec<f64>,
    console_errors: u64,
}

/// What one sender thread did.
struct SenderOut {
    counts: Vec<u64>,
    lines: u64,
    error: Option<String>,
}

/// What an open web console asks every second (serving/src/console/
/// console.js): health, streams, the new micro-batches, views, the top-k
/// of a view, the runs, dead letters. Returns the round times (ms) and the
/// requests that did not answer 200.
fn console_polls(
    client: crate::client::Client,
    view: String,
    stop: Arc<AtomicBool>,
) -> (Vec<f64>, u64) {
    let mut rounds = Vec::new();
    let mut failed = 0u64;
    let mut get = |path: &str| -> Option<serde_json::Value> {
        match client.get(path) {
            Ok(r) if r.status == 200 => Some(r.json().unwrap_or(serde_json::Value::Null)),
            _ => {
                failed += 1;
                None
            }
        }
    };
    get("/");
    get("/console.js");
    let mut since: Option<u64> = None;
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        get("/healthz");
        get("/v1/streams");
        let q = since.map_or(String::new(), |s| format!("?since={s}"));
        if let Some(b) = get(&format!("/v1/streams/lines/batches{q}")) {
            since = b["batches"]
                .as_array()
                .and_then(|b| b.last())
                .and_then(|b| b["id"].as_u64())
                .or(since);
        }
        get("/v1/views");
        get(&format!("/v1/views/{view}/top?k=10"));
        get("/v1/batch/runs");
        get("/v1/streams/lines/dead_letters?limit=20");
        rounds.push(started.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_secs(1).saturating_sub(started.elapsed()));
    }
    rounds.sort_by(f64::total_cmp);
    (rounds, failed)
}

#[allow(clippy::too_many_arguments)]
fn run_at(
    server: &ServerProcess,
    work: &Workload,
    rate: u64,
    secs: u64,
    connections: usize,
    interval_ms: u64,
    run: u64,
    seed: u64,
    console: bool,
) -> RunResult {
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let before = server.processed().unwrap_or(0);
    let mut batches = BatchLog::from_now(server);
    let start = Instant::now();
    let per_conn = rate as f64 / connections as f64;
    let senders: Vec<_> = (0..connections)
        .map(|c| {
            let (sent, stop) = (Arc::clone(&sent), Arc::clone(&stop));
            let mut generator = LineGen::new(
                Arc::clone(&work.vocab),
                Arc::clone(&work.sampler),
                seed ^ (run << 16) ^ c as u64,
            );
            let port = server.tcp;
            std::thread::spawn(move || {
                let mut done = 0u64;
                let error = (|| {
                    let mut s = TcpStream::connect(("127.0.0.1", port))
                        .map_err(|e| format!("sender {c}: cannot connect: {e}"))?;
                    let _ = s.set_nodelay(true);
                    let mut buf = Vec::with_capacity(1 << 20);
                    while !stop.load(Ordering::Relaxed) {
                        let due = (per_conn * start.elapsed().as_secs_f64()) as u64;
                        if due <= done {
                            std::thread::sleep(Duration::from_micros(500));
                            continue;
                        }
                        // What is due, at most 8192 lines per write, every
                        // line generated afresh.
                        let n = (due - done).min(8192);
                        buf.clear();
                        for _ in 0..n {
                            generator.push_line(&mut buf);
                        }
                        s.write_all(&buf).map_err(|e| {
                            format!(
                                "sender {c}: write failed after {done} lines ({e}); the counts of this server are unsure"
                            )
                        })?;
                        done += n;
                        sent.fetch_add(n, Ordering::Relaxed);
                    }
                    Ok(())
                })()
                .err();
                SenderOut {
                    counts: generator.into_counts(),
                    lines: done,
                    error,
                }
            })
        })
        .collect();
    // Markers: one line with a unique word (outside the vocabulary, not
    // counted); poll its key until visible.
    let latencies = {
        let stop = Arc::clone(&stop);
        let port = server.tcp;
        let client = server.client.clone();
        let view = server.view.clone();
        std::thread::spawn(move || {
            let mut out = Vec::new();
            let mut markers = 0u64;
            let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
                return (out, markers);
            };
            let _ = s.set_nodelay(true);
            let pid = std::process::id();
            let mut rng = Rng::new(seed ^ 0x6d61_726b ^ (run << 32));
            while !stop.load(Ordering::Relaxed) {
                // Unique per run: a marker seen in an earlier run would read
                // 1 at once.
                let word = format!("zzmark{pid}x{run}x{markers}");
                let sent_at = Instant::now();
                if s.write_all(format!("{word}\n").as_bytes()).is_err() {
                    break;
                }
                markers += 1;
                let path = format!("/v1/views/{view}/keys/{word}");
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
                // A random pause before the next marker: sending right after
                // the previous one became visible would always land just
                // after a micro-batch tick and measure a whole interval.
                std::thread::sleep(Duration::from_micros(
                    rng.below((interval_ms * 1000).max(1)),
                ));
            }
            (out, markers)
        })
    };
    let console = console.then(|| {
        let (client, view, stop) = (
            server.client.clone(),
            server.view.clone(),
            Arc::clone(&stop),
        );
        std::thread::spawn(move || console_polls(client, view, stop))
    });
    // Lag samples and micro-batch statistics once a second.
    let mut lags = Vec::new();
    while start.elapsed() < Duration::from_secs(secs) {
        std::thread::sleep(Duration::from_secs(1));
        let processed = server.processed().unwrap_or(0).saturating_sub(before);
        lags.push(sent.load(Ordering::Relaxed).saturating_sub(processed));
        batches.poll(server);
    }
    let elapsed = start.elapsed().as_secs_f64();
    let total_sent = sent.load(Ordering::Relaxed);
    let processed_at_end = server.processed().unwrap_or(0).saturating_sub(before);
    stop.store(true, Ordering::Relaxed);
    let mut counts = vec![0u64; work.vocab.len()];
    let mut lines = 0;
    let mut errors = Vec::new();
    for s in senders {
        match s.join() {
            Ok(out) => {
                for (total, c) in counts.iter_mut().zip(out.counts) {
                    *total += c;
                }
                lines += out.lines;
                errors.extend(out.error);
            }
            Err(_) => errors.push("a sender thread panicked".into()),
        }
    }
    let (mut latencies_ms, markers) = latencies.join().unwrap_or_default();
    let (console_ms, console_errors) = console
        .map(|c| c.join().unwrap_or_default())
        .unwrap_or_default();
    latencies_ms.sort_by(f64::total_cmp);
    batches.poll(server);
    // Let the server drain before the next run.
    let drain = Instant::now();
    let mut notes = Vec::new();
    let mut waiting = lines + markers;
    while waiting > 0 && drain.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
        let processed = server.processed().unwrap_or(0).saturating_sub(before);
        waiting = (lines + markers).saturating_sub(processed);
    }
    if waiting > 0 {
        notes.push(format!(
            "not drained 30 s after the run: {waiting} lines still to be taken in (the next run starts with them)"
        ));
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
    let distinct = counts.iter().filter(|&&c| c > 0).count();
    RunResult {
        target: rate,
        sent_rate,
        processed_rate: processed_at_end as f64 / elapsed,
        lag_first_third,
        lag_last_third,
        lag_end,
        latencies_ms,
        sustained,
        processing_ms: batches.processing_ms(),
        phases_ms: batches.phase_medians(),
        waiting_ms: batches.waiting_ms(),
        lines,
        counts,
        distinct,
        markers,
        errors,
        notes,
        console_ms,
        console_errors,
    }
}

fn report(label: &str, r: &RunResult, work: &Workload, interval_ms: u64) {
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
        "             micro-batches: processing p50 {:.1} ms p99 {:.1} ms; first record's wait for processing p50 {:.1} ms p99 {:.1} ms ({} batches)",
        percentile(&r.processing_ms, 0.5),
        percentile(&r.processing_ms, 0.99),
        percentile(&r.waiting_ms, 0.5),
        percentile(&r.waiting_ms, 0.99),
        r.processing_ms.len()
    );
    let [read, parse, program, commit] = r.phases_ms;
    println!(
        "             phases (medians): read {read:.1} ms, parse {parse:.1} ms, program {program:.1} ms, commit {commit:.1} ms"
    );
    // ~10 words a line: the distinct words one interval's input touches.
    let words_per_batch = r.target as f64 * interval_ms as f64 / 1e3 * 10.0;
    println!(
        "             distinct words sent: {} of {} ({} lines); expected distinct words per micro-batch at the target rate ≈ {:.0} (of ~{:.0} words)",
        r.distinct,
        work.vocab.len(),
        r.lines,
        expected_distinct(&work.probabilities, words_per_batch),
        words_per_batch
    );
    if !r.console_ms.is_empty() {
        println!(
            "             web console: {} polls, a round of its 7 requests p50 {:.1} ms p99 {:.1} ms max {:.1} ms; {} requests failed",
            r.console_ms.len(),
            percentile(&r.console_ms, 0.5),
            percentile(&r.console_ms, 0.99),
            r.console_ms.last().copied().unwrap_or(0.0),
            r.console_errors
        );
    }
    for e in &r.errors {
        println!("             error: {e}");
    }
    for note in &r.notes {
        println!("             note: {note}");
    }
}

/// Once the server has taken in everything sent, compares its counts of a
/// random sample of 2,000 vocabulary words and of the 100 most sent ones
/// with what was sent during its life. Whether all matched.
fn check_exact(server: &ServerProcess, work: &Workload, sent: &Sent, seed: u64) -> bool {
    let expected = sent.lines + sent.markers;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut processed = server.processed().unwrap_or(0);
    let mut next_progress = Instant::now() + Duration::from_secs(5);
    while processed < expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        processed = server.processed().unwrap_or(processed);
        if Instant::now() > next_progress {
            println!("  waiting for the server to take in every line: {processed} of {expected}");
            next_progress += Duration::from_secs(5);
        }
    }
    if processed < expected {
        println!(
            "  exact counts: not checked: the server took in {processed} of {expected} lines within 120 s"
        );
        return false;
    }
    let n = work.vocab.len();
    let mut rng = Rng::new(seed ^ 0x0065_7861_6374);
    let mut sample: Vec<usize> = Vec::new();
    let mut seen = HashSet::new();
    let random = 2000.min(n);
    while sample.len() < random {
        let i = rng.below(n as u64) as usize;
        if seen.insert(i) {
            sample.push(i);
        }
    }
    let mut by_count: Vec<usize> = (0..n).collect();
    by_count.sort_by_key(|&i| std::cmp::Reverse(sent.counts[i]));
    for &i in by_count.iter().take(100) {
        if seen.insert(i) {
            sample.push(i);
        }
    }
    let mut client = KeepAlive::new(server.http, Duration::from_secs(10));
    let mut mismatches = 0;
    for &i in &sample {
        let word = work.vocab.word(i);
        let path = format!("/v1/views/{}/keys/{}", server.view, encode_segment(word));
        let got = match client.get_json(&path) {
            Ok((404, _)) => Ok(0),
            // A state view has no state for a word never sent.
            Ok((200, v)) if v["value"].is_null() => Ok(0),
            Ok((200, v)) => v["value"]
                .as_u64()
                .ok_or_else(|| format!("no count in {v}")),
            Ok((status, v)) => Err(format!("status {status}: {v}")),
            Err(e) => Err(e),
        };
        if got.as_ref().ok() != Some(&sent.counts[i]) {
            mismatches += 1;
            if mismatches <= 5 {
                match got {
                    Ok(c) => println!(
                        "  mismatch: `{word}` (rank {}): server {c}, sent {}",
                        i + 1,
                        sent.counts[i]
                    ),
                    Err(e) => println!("  mismatch: `{word}` (rank {}): {e}", i + 1),
                }
            }
        }
    }
    for e in &sent.errors {
        println!("  exact counts unsure: {e}");
    }
    println!(
        "  exact counts: checked {} keys, {mismatches} mismatches",
        sample.len()
    );
    mismatches == 0 && sent.errors.is_empty()
}

/// Runs the benchmark once per vocabulary size and prints its figures.
///
/// # Errors
///
/// A message when the server cannot be started, or when a count read back
/// differs from the count sent.
pub fn stream(args: &StreamBench) -> Result<(), String> {
    let epoch_ms = epoch_ms(args.interval_ms, args.epoch_ms)?;
    if args.connections == 0 {
        return Err("--connections must be at least 1".into());
    }
    if !(args.zipf_s.is_finite() && args.zipf_s >= 0.0) {
        return Err(format!("--zipf-s must be >= 0, got {}", args.zipf_s));
    }
    let sizes = if args.vocabs.is_empty() {
        vec![args.vocab]
    } else {
        args.vocabs.clone()
    };
    if let Some(bad) = sizes.iter().find(|&&n| n == 0 || n > 100_000_000) {
        return Err(format!("vocabulary sizes must be 1..=100000000, got {bad}"));
    }
    let dist = match args.distribution {
        DistributionArg::Zipf => Distribution::Zipf(args.zipf_s),
        DistributionArg::Uniform => Distribution::Uniform,
    };
    let mut failed = Vec::new();
    for n in sizes {
        if !stream_one(args, n, dist, epoch_ms)? {
            failed.push(n);
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the counts read back could not be confirmed exact (vocabulary {failed:?})"
        ))
    }
}

/// The whole benchmark with a vocabulary of `n` words against a fresh
/// server; whether the counts were exact.
fn stream_one(
    args: &StreamBench,
    n: usize,
    dist: Distribution,
    epoch_ms: u64,
) -> Result<bool, String> {
    let built = Instant::now();
    let vocab = Arc::new(Vocabulary::new(n, args.seed));
    let sampler = Arc::new(Sampler::new(n, dist));
    let probabilities = dist.probabilities(n);
    let build_s = built.elapsed().as_secs_f64();
    let mean_len = (0..n).map(|i| vocab.word_len(i)).sum::<usize>() as f64 / n as f64;
    let token_len: f64 = probabilities
        .iter()
        .enumerate()
        .map(|(i, p)| p * vocab.word_len(i) as f64)
        .sum();
    let work = Workload {
        vocab,
        sampler,
        probabilities,
    };
    let speed = lines_per_second(&work.vocab, &work.sampler, 0.3);
    let mut server = ServerProcess::start(
        &format!("v{n}"),
        args.interval_ms,
        epoch_ms,
        args.keep,
        args.server_bin.as_deref(),
    )?;
    server.view.clone_from(&args.view);
    let s = dist.exponent();
    println!(
        "lamina bench stream: vocabulary {n} words ({} s={s}; built in {build_s:.2} s; mean word length {mean_len:.2} letters, {token_len:.2} weighted by frequency), 8-12 words a line generated afresh; generator: {:.2} M lines/s on one thread",
        match dist {
            Distribution::Zipf(_) => "zipf",
            Distribution::Uniform => "uniform",
        },
        speed / 1e6
    );
    println!(
        "  server: interval {} ms, epoch {epoch_ms} ms, {} connections, pid {}, data in {}",
        args.interval_ms,
        args.connections,
        server.pid(),
        server.dir.display()
    );
    let mut sent = Sent {
        counts: vec![0; n],
        lines: 0,
        markers: 0,
        errors: Vec::new(),
    };
    let mut run_no = 0u64;
    let mut run = |rate: u64, secs: u64, sent: &mut Sent| {
        run_no += 1;
        let r = run_at(
            &server,
            &work,
            rate,
            secs,
            args.connections,
            args.interval_ms,
            run_no,
            args.seed,
            args.console,
        );
        for (total, c) in sent.counts.iter_mut().zip(&r.counts) {
            *total += c;
        }
        sent.lines += r.lines;
        sent.markers += r.markers;
        sent.errors.extend(r.errors.iter().cloned());
        r
    };
    let best = match args.rate {
        Some(rate) => rate,
        None => {
            let mut rate = 50_000u64;
            let mut best = 0;
            loop {
                let r = run(rate, args.trial_secs, &mut sent);
                report("trial", &r, &work, args.interval_ms);
                if !r.sustained || rate >= 6_400_000 {
                    break;
                }
                best = rate;
                rate *= 2;
            }
            // One step between the last good and the first bad rate.
            let between = best + best / 2;
            if best > 0 {
                let r = run(between, args.trial_secs, &mut sent);
                report("trial", &r, &work, args.interval_ms);
                if r.sustained {
                    best = between;
                }
            }
            best.max(1)
        }
    };
    let full = run(best, args.duration_secs, &mut sent);
    report("sustained", &full, &work, args.interval_ms);
    let half = run((best / 2).max(1), args.duration_secs.min(30), &mut sent);
    report("half rate", &half, &work, args.interval_ms);
    let distinct = sent.counts.iter().filter(|&&c| c > 0).count();
    println!(
        "  server life: {} lines ({} markers), {distinct} distinct words sent",
        sent.lines + sent.markers,
        sent.markers
    );
    let exact = check_exact(&server, &work, &sent, args.seed);
    println!(
        "RESULT interval_ms={} sustained_lines_per_s={} sustained={} p50_ms_at_half={:.1} p99_ms_at_half={:.1} peak_rss_mib={:.0} vocab={n} distribution={} s={s} distinct_keys={distinct} exact={}",
        args.interval_ms,
        best,
        full.sustained,
        percentile(&half.latencies_ms, 0.5),
        percentile(&half.latencies_ms, 0.99),
        server.peak_rss_mib().unwrap_or(f64::NAN),
        match dist {
            Distribution::Zipf(_) => "zipf",
            Distribution::Uniform => "uniform",
        },
        if exact { "yes" } else { "no" }
    );
    Ok(exact)
}
