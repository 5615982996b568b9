//! `lamina bench kafka`: Kafka ingest into `word_counts`, as a ratio to a
//! plain consumer loop on the same broker, client library and machine.
//!
//! 1. **Preload**: `--records` fresh lines of Zipf text (the same generator
//!    as `lamina bench stream`: `--vocab` words, 8–12 a line) are produced
//!    to a new topic of `--partitions` partitions, in batches of 1,000.
//! 2. **Plain loop**: one task per partition fetches the topic from offset 0
//!    to its end with rskafka (the client Lamina uses, the same fetch size
//!    and wait) and only counts records and bytes: the most any consumer
//!    can take from this broker on this machine.
//! 3. **Lamina**: a real `lamina serve` with a `kafka` receiver on the topic
//!    and the `word_counts` view; timed from the arrival of the first record
//!    (the first micro-batch's `first_receive_us`) to the end of the
//!    micro-batch that took the last one, so that start-up is not counted. Every record is appended to the
//!    write-ahead log, parsed, counted per word and committed.
//! 4. Steps 2 and 3 alternate `--runs` times (machines are noisy: ratios
//!    of one run, medians); each Lamina run starts on an empty state
//!    directory. Then the counts of 2,000 random words and the 100 most
//!    frequent are compared with what was produced; a mismatch fails the
//!    command.
//!
//! The broker: `--brokers HOST:PORT` of a running one, or `--tansu BIN`
//! (what `deploy/install-tansu.sh` prints) to start one on a free loopback
//! port with its data in a temporary directory, stopped by its PID.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rskafka::client::partition::{Compression, OffsetAt, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::Record;

use super::server::{BatchLog, ServerProcess, percentile, sorted};
use super::text::{Distribution, LineGen, Sampler, Vocabulary};

/// `lamina bench kafka`.
#[derive(Debug, clap::Args)]
pub struct KafkaBench {
    /// A running broker, `HOST:PORT`.
    #[arg(long, conflicts_with = "tansu")]
    pub brokers: Option<String>,
    /// A tansu binary to start a broker with (see `deploy/install-tansu.sh`).
    #[arg(long)]
    pub tansu: Option<PathBuf>,
    /// Lines produced to the topic.
    #[arg(long, default_value_t = 1_000_000)]
    pub records: u64,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 3)]
    pub partitions: i32,
    /// Vocabulary size (distinct words), drawn Zipf(1).
    #[arg(long, default_value_t = 100_000)]
    pub vocab: usize,
    /// Micro-batch interval of the server.
    #[arg(long, default_value_t = 200)]
    pub interval_ms: u64,
    /// Alternating runs of the plain loop and of Lamina.
    #[arg(long, default_value_t = 3)]
    pub runs: u32,
    /// Seed of the vocabulary and the lines.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Most bytes one fetch returns per partition: the receiver's default.
const FETCH_MAX_BYTES: i32 = 4 << 20;
/// Longest a fetch waits at the broker.
const FETCH_WAIT_MS: i32 = 100;

/// A broker this command started, stopped by its PID on drop.
struct Broker {
    child: Child,
    dir: PathBuf,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_broker(bin: &std::path::Path) -> Result<(Broker, String), String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let dir = std::env::temp_dir().join(format!("lamina-bench-kafka-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let url = format!("tcp://127.0.0.1:{port}");
    let log = std::fs::File::create(dir.join("tansu.log")).map_err(|e| e.to_string())?;
    let child = Command::new(bin)
        .args([
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .args(["--storage-engine", "sqlite://tansu.db"])
        .current_dir(&dir)
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", bin.display()))?;
    let broker = Broker { child, dir };
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err("the broker did not listen within 30 s".into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((broker, format!("127.0.0.1:{port}")))
}

async fn connect(brokers: &str) -> Result<Client, String> {
    ClientBuilder::new(vec![brokers.to_owned()])
        .build()
        .await
        .map_err(|e| format!("cannot reach {brokers}: {e}"))
}

/// Produces `n` lines round-robin over the partitions; returns the word
/// counts.
async fn preload(
    client: &Client,
    topic: &str,
    partitions: i32,
    n: u64,
    vocab: &Arc<Vocabulary>,
    seed: u64,
) -> Result<Vec<u64>, String> {
    let sampler = Arc::new(Sampler::new(vocab.len(), Distribution::Zipf(1.0)));
    let mut lines = LineGen::new(Arc::clone(vocab), sampler, seed);
    let mut pcs = Vec::new();
    for p in 0..partitions {
        pcs.push(
            client
                .partition_client(topic, p, UnknownTopicHandling::Retry)
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let mut sent = 0u64;
    let mut batch = 0usize;
    let start = Instant::now();
    let mut line = Vec::with_capacity(128);
    while sent < n {
        let k = 1000.min(n - sent);
        let now = rskafka::chrono::Utc::now();
        let records: Vec<Record> = (0..k)
            .map(|_| {
                line.clear();
                lines.push_line(&mut line);
                line.pop();
                Record {
                    key: None,
                    value: Some(line.clone()),
                    headers: BTreeMap::new(),
                    timestamp: now,
                }
            })
            .collect();
        pcs[batch % pcs.len()]
            .produce(records, Compression::NoCompression)
            .await
            .map_err(|e| format!("produce failed: {e}"))?;
        sent += k;
        batch += 1;
        if batch.is_multiple_of(100) {
            eprint!(
                "\r  produced {sent} of {n} ({:.0}/s)",
                sent as f64 / start.elapsed().as_secs_f64()
            );
        }
    }
    eprintln!(
        "\r  produced {sent} lines in {:.1} s ({:.0}/s)",
        start.elapsed().as_secs_f64(),
        sent as f64 / start.elapsed().as_secs_f64()
    );
    Ok(lines.into_counts())
}

/// The plain loop: every partition from 0 to its end, concurrently;
/// returns records and seconds.
async fn plain_loop(client: &Client, topic: &str, partitions: i32) -> Result<(u64, f64), String> {
    let mut tasks = tokio::task::JoinSet::new();
    // Timed like Lamina: from the first record's arrival to the last.
    let first: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    for p in 0..partitions {
        let pc = client
            .partition_client(topic, p, UnknownTopicHandling::Retry)
            .await
            .map_err(|e| e.to_string())?;
        let first = Arc::clone(&first);
        tasks.spawn(async move {
            let end = pc
                .get_offset(OffsetAt::Latest)
                .await
                .map_err(|e| e.to_string())?;
            let (mut offset, mut records, mut bytes) = (0i64, 0u64, 0u64);
            while offset < end {
                let (got, _hwm) = pc
                    .fetch_records(offset, 1..FETCH_MAX_BYTES, FETCH_WAIT_MS)
                    .await
                    .map_err(|e| e.to_string())?;
                if !got.is_empty() {
                    first
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .get_or_insert_with(Instant::now);
                }
                for r in &got {
                    records += 1;
                    bytes += r.record.value.as_ref().map_or(0, Vec::len) as u64;
                    offset = offset.max(r.offset + 1);
                }
            }
            Ok::<_, String>((records, bytes))
        });
    }
    let mut total = 0;
    while let Some(joined) = tasks.join_next().await {
        let (records, _bytes) = joined.map_err(|e| e.to_string())??;
        total += records;
    }
    let start = first
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .ok_or("the topic is empty")?;
    Ok((total, start.elapsed().as_secs_f64()))
}

/// One Lamina run: records and seconds from the first micro-batch with
/// records to the last.
fn lamina_run(
    label: &str,
    args: &KafkaBench,
    brokers: &str,
    topic: &str,
    total: u64,
) -> Result<(ServerProcess, u64, f64), String> {
    let receiver = format!(
        "  [[stream.receiver]]\n  type = \"kafka\"\n  brokers = \"{brokers}\"\n  topic = \"{topic}\"\n  fetch_max_wait_ms = {FETCH_WAIT_MS}\n"
    );
    let epoch = super::server::epoch_ms(args.interval_ms, None)?;
    let server =
        ServerProcess::start_with(label, args.interval_ms, epoch, false, None, Some(&receiver))?;
    let deadline = Instant::now() + Duration::from_secs(600);
    // Every micro-batch (the endpoint keeps only the recent ones: polled
    // often).
    let mut batches = BatchLog::default();
    loop {
        batches.poll(&server);
        if batches.records() >= total {
            break;
        }
        if Instant::now() > deadline || server.exited() {
            return Err(format!(
                "the server took {} of {total} records in 600 s (log: {})",
                batches.records(),
                server.log().display()
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // From the first record's arrival in the server to the end of the
    // micro-batch that took the last one: start-up is not counted.
    let secs = batches.span_secs().unwrap_or(f64::NAN);
    Ok((server, total, secs))
}

/// Runs `lamina bench kafka`.
///
/// # Errors
///
/// No broker, a failed produce or fetch, a server that does not keep up
/// within 10 minutes, or counts that differ from what was produced.
pub fn kafka(args: &KafkaBench) -> Result<(), String> {
    let (_broker, brokers) = match (&args.brokers, &args.tansu) {
        (Some(b), _) => (None, b.clone()),
        (None, Some(bin)) => {
            let (broker, address) = start_broker(bin)?;
            (Some(broker), address)
        }
        (None, None) => {
            return Err(
                "give --brokers HOST:PORT or --tansu BIN (bash deploy/install-tansu.sh prints it)"
                    .into(),
            );
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let topic = format!("bench-{}", std::process::id());
    let vocab = Arc::new(Vocabulary::new(args.vocab, args.seed));
    eprintln!(
        "bench kafka: {} lines of Zipf(1) text over {} words to {} partitions of `{topic}` at {brokers}",
        args.records, args.vocab, args.partitions
    );
    let counts = rt.block_on(async {
        let client = connect(&brokers).await?;
        client
            .controller_client()
            .map_err(|e| e.to_string())?
            .create_topic(&topic, args.partitions, 1, 10_000)
            .await
            .map_err(|e| format!("cannot create `{topic}`: {e}"))?;
        preload(
            &client,
            &topic,
            args.partitions,
            args.records,
            &vocab,
            args.seed,
        )
        .await
    })?;
    let mut plain = Vec::new();
    let mut lamina = Vec::new();
    let mut ratios = Vec::new();
    let mut last_server = None;
    for run in 0..args.runs {
        let (n, secs) = rt.block_on(async {
            let client = connect(&brokers).await?;
            plain_loop(&client, &topic, args.partitions).await
        })?;
        if n != args.records {
            return Err(format!(
                "the plain loop read {n} of {} records",
                args.records
            ));
        }
        let p = n as f64 / secs;
        drop(last_server.take());
        let (server, n, secs) = lamina_run(
            &format!("kafka-{run}"),
            args,
            &brokers,
            &topic,
            args.records,
        )?;
        let l = n as f64 / secs;
        eprintln!(
            "  run {}: plain loop {:.0} records/s, lamina {:.0} records/s (ratio {:.2}), peak RSS {:.0} MiB",
            run + 1,
            p,
            l,
            l / p,
            server.peak_rss_mib().unwrap_or(0.0)
        );
        plain.push(p);
        lamina.push(l);
        ratios.push(l / p);
        last_server = Some(server);
    }
    let server = last_server.ok_or("--runs must be at least 1")?;
    super::server::check_counts(&server, &vocab, &counts, args.seed ^ 0xc0de)?;
    let (plain, lamina, ratios) = (sorted(plain), sorted(lamina), sorted(ratios));
    println!(
        "RESULT kafka records={} partitions={} vocab={} interval_ms={} plain_median={:.0}/s lamina_median={:.0}/s ratio_median={:.2} ratio_min={:.2} exact=true",
        args.records,
        args.partitions,
        args.vocab,
        args.interval_ms,
        percentile(&plain, 0.5),
        percentile(&lamina, 0.5),
        percentile(&ratios, 0.5),
        ratios.first().copied().unwrap_or(0.0)
    );
    Ok(())
}
