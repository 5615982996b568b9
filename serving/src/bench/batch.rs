//! `lamina bench batch`: a batch recompute through the real server against
//! DuckDB over the same Parquet files, on the same machine, in one run.
//!
//! The data (generated once and cached under `--dir`, by default
//! `~/.cache/lamina/bench-batch/<parameters>`): a master dataset of two
//! streams in `--files` sealed epochs each, written by Lamina's own writer
//! (zstd, row groups of up to 1M rows):
//!
//! - `lines` (text): `--lines` fresh lines of 8–12 words drawn Zipf(1) from
//!   a vocabulary of `--vocab` English-like words (the stream benchmark's
//!   generator, [`super::text`]); view `word_counts` counts the words.
//! - `events` (json: `url` string, `bytes` int64): `--events` events whose
//!   URL is drawn Zipf(1) from `--urls` distinct URLs and whose size is
//!   uniform in 200..50200; view `url_stats` keeps each URL's count and sum
//!   of `bytes` (aggregate `mean`, whose state is exactly that pair).
//!
//! Lamina: a `lamina serve` with `master_read_only = true` over that
//! dataset (it takes no lease and ingests nothing) runs `--repeat` batch
//! runs on request; each run's per-view times come from the run history
//! (`GET /v1/batch/runs/{id}`: from opening the files to the last partial
//! handed to the publisher) and its total from its start and end. Peak RSS
//! is the server's `VmHWM`.
//!
//! DuckDB (Python package, `--python`, with `SET threads` to the number of
//! cores, which the server's engine uses too): the equivalent queries over the same files, each `--repeat`
//! times, each result materialised as a temporary table —
//! `SELECT word, count(*) FROM (SELECT unnest(string_split(line, ' ')) AS
//! word FROM read_parquet(...)) GROUP BY word` and `SELECT url, count(*),
//! sum(bytes) FROM read_parquet(...) GROUP BY url`. Peak RSS is the Python
//! process's `ru_maxrss`. Each DuckDB run reads its files as Lamina's batch
//! runs do: `SET enable_external_file_cache = false`, since DuckDB (1.3 and
//! later) otherwise keeps the files' bytes in memory across the runs of one
//! process, so that only its first run from S3 fetches anything
//! (`--duckdb-file-cache` keeps its default, for comparison).
//!
//! The engines take turns, run by run, in one DuckDB process kept open
//! (DuckDB, Lamina, Lamina, DuckDB, DuckDB, ...): the machine's load moves
//! within minutes, and runs done in blocks (all of one engine's, then the
//! other's) let it fall on one engine and show in the ratio.
//!
//! Exactness: 1000 random keys of each DuckDB result (and its 20 largest)
//! are read back from Lamina's views and must agree (count equal; mean
//! equal to sum / count); a mismatch fails the command.
//!
//! `--s3` repeats the Lamina side with the dataset uploaded to an
//! S3-compatible server (s3s-fs from `deploy/install-s3s.sh`, on loopback),
//! and DuckDB over the same objects when its `httpfs` extension is
//! installed (`deploy/install-benchtools.sh` installs it from PyPI).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Int64Builder, StringBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use lamina::master::{EpochFile, Manifest, MasterStore, StoreOptions};
use serde_json::{Value, json};

use super::duckdb::Duck;
use super::server::{MIB, ServerProcess};
use super::text::{Distribution, LineGen, Rng, Sampler, Vocabulary};

/// `lamina bench batch`.
#[derive(Debug, Clone, clap::Args)]
pub struct BatchBench {
    /// Lines of the `lines` stream.
    #[arg(long, default_value_t = 10_000_000)]
    pub lines: u64,
    /// Events of the `events` stream.
    #[arg(long, default_value_t = 10_000_000)]
    pub events: u64,
    /// Distinct words the lines draw from.
    #[arg(long, default_value_t = 100_000)]
    pub vocab: usize,
    /// Distinct URLs the events draw from.
    #[arg(long, default_value_t = 1_000_000)]
    pub urls: usize,
    /// Sealed epochs (files) per stream.
    #[arg(long, default_value_t = 8)]
    pub files: u64,
    /// Runs of each side; medians are reported.
    #[arg(long, default_value_t = 3)]
    pub repeat: usize,
    /// Runs of each side before those, printed but not counted (a fresh
    /// server's first run also grows its memory).
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// Where the generated dataset is cached.
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Python with the `duckdb` package (default `$LAMINA_BENCH_PYTHON`,
    /// else `~/.cache/lamina/tools/bench-py/bin/python` from
    /// `deploy/install-benchtools.sh`).
    #[arg(long)]
    pub python: Option<PathBuf>,
    /// Also from an S3-compatible server (s3s-fs: `--s3s BIN`, else
    /// `$LAMINA_S3S`, else where `deploy/install-s3s.sh` puts it).
    #[arg(long)]
    pub s3: bool,
    /// The s3s-fs binary for `--s3`.
    #[arg(long)]
    pub s3s: Option<PathBuf>,
    /// Keep the servers' directories.
    #[arg(long)]
    pub keep: bool,
    /// Leave DuckDB's in-memory cache of file bytes on (its default): its
    /// runs after the first then read S3 objects from memory.
    #[arg(long)]
    pub duckdb_file_cache: bool,
}

const WORKLOADS: [(&str, &str); 2] = [("word_counts", "lines"), ("url_stats", "events")];

/// Runs the benchmark; prints a report and one `RESULT` line per source.
///
/// # Errors
///
/// A message for anything that failed, including results that disagree.
pub fn batch(args: &BatchBench) -> Result<(), String> {
    // The server's engine uses every core; DuckDB gets as many threads.
    let threads = std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get);
    let python = python(args)?;
    let dir = args.dir.clone().unwrap_or_else(|| default_dir(args));
    let data = prepare(args, &dir, threads)?;
    println!(
        "dataset {}: {} lines ({} words), {} events; {:.1} MiB of Parquet in {} files",
        dir.display(),
        args.lines,
        data.words,
        args.events,
        data.bytes as f64 / MIB,
        data.files.len()
    );
    let mut sources = vec![Source::Local];
    let mut s3 = None;
    if args.s3 {
        let server = S3::start(args, &dir, &data)?;
        sources.push(Source::S3(server.endpoint()));
        s3 = Some(server);
    }
    for source in &sources {
        let config = duckdb_config(threads, args, &dir, &data, source, s3.as_ref());
        let log = dir.join(format!("duckdb-{}.stderr", source.name()));
        let mut duck = match Duck::start(&python, &config, &log) {
            Ok(d) => Some(d),
            Err(e) => tolerate(source, e)?,
        };
        // The engines take turns, run by run, so that the machine's
        // slower and faster minutes fall on both alike.
        let lamina = lamina_runs(args, &dir, source, s3.as_ref(), &mut |i| {
            if let Some(d) = duck.as_mut()
                && let Err(e) = d.run(i >= args.warmup)
            {
                duck = tolerate(source, e)?;
            }
            Ok(())
        })?;
        let duck = match duck.map(Duck::finish) {
            Some(Ok(d)) => Some(d),
            Some(Err(e)) => tolerate(source, e)?,
            None => None,
        };
        report(args, threads, &data, source, &lamina, duck.as_ref())?;
    }
    drop(s3);
    Ok(())
}

/// DuckDB from S3 is best effort (its httpfs extension may be missing):
/// there its failure is reported and the benchmark goes on without it;
/// locally it is the point of the benchmark.
fn tolerate<T>(source: &Source, e: String) -> Result<Option<T>, String> {
    match source {
        Source::S3(_) => {
            println!("{}: DuckDB not measured: {e}", source.name());
            Ok(None)
        }
        Source::Local => Err(e),
    }
}

#[derive(Debug, Clone)]
enum Source {
    Local,
    /// The S3 server's endpoint.
    S3(String),
}

impl Source {
    fn name(&self) -> &'static str {
        match self {
            Source::Local => "local",
            Source::S3(_) => "s3",
        }
    }
}

fn default_dir(args: &BatchBench) -> PathBuf {
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    // `-w2`: written with the 16 MiB dictionary limit (files of the
    // earlier writer are not reused).
    home.join(".cache/lamina/bench-batch").join(format!(
        "l{}-e{}-v{}-u{}-f{}-w2",
        args.lines, args.events, args.vocab, args.urls, args.files
    ))
}

fn python(args: &BatchBench) -> Result<PathBuf, String> {
    let path = args
        .python
        .clone()
        .or_else(|| std::env::var_os("LAMINA_BENCH_PYTHON").map(PathBuf::from))
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/lamina/tools/bench-py/bin/python"))
        })
        .ok_or("no --python given")?;
    if !path.is_file() {
        return Err(format!(
            "no Python with DuckDB at {} (run `bash deploy/install-benchtools.sh`, or give --python)",
            path.display()
        ));
    }
    Ok(path)
}

/// The generated dataset.
struct Data {
    /// Paths of the Parquet files relative to the dataset root, per stream.
    files: Vec<(String, String)>,
    bytes: u64,
    words: u64,
}

fn lines_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("line", DataType::Utf8, false)]))
}

fn events_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("url", DataType::Utf8, false),
        Field::new("bytes", DataType::Int64, false),
    ]))
}

/// Generates the dataset under `dir/master` unless a complete one is there
/// (`dir/dataset.json` is written last).
fn prepare(args: &BatchBench, dir: &Path, threads: usize) -> Result<Data, String> {
    let stamp = dir.join("dataset.json");
    if let Some(v) = std::fs::read(&stamp)
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
    {
        let files = v["files"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|f| Some((f[0].as_str()?.to_owned(), f[1].as_str()?.to_owned())))
            .collect();
        return Ok(Data {
            files,
            bytes: v["bytes"].as_u64().unwrap_or(0),
            words: v["words"].as_u64().unwrap_or(0),
        });
    }
    let _ = std::fs::remove_dir_all(dir);
    let url = format!("file://{}", dir.join("master").display());
    let master = MasterStore::open(&url).map_err(|e| e.to_string())?;
    let started = Instant::now();
    println!(
        "generating {} lines and {} events into {} ({threads} threads)...",
        args.lines,
        args.events,
        dir.display()
    );
    let vocab = Arc::new(Vocabulary::new(args.vocab, 1));
    let words = Arc::new(Sampler::new(args.vocab, Distribution::Zipf(1.0)));
    let urls = Arc::new(Sampler::new(args.urls, Distribution::Zipf(1.0)));
    let jobs: Vec<(&str, u64)> = (0..args.files)
        .flat_map(|k| [("lines", k), ("events", k)])
        .collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("a runtime");
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(&(stream, epoch)) = jobs.get(i) else {
                        return;
                    };
                    let share =
                        |total: u64| total / args.files + u64::from(epoch < total % args.files);
                    let result = runtime.block_on(async {
                        if stream == "lines" {
                            write_lines(&master, epoch, share(args.lines), &vocab, &words).await
                        } else {
                            write_events(&master, epoch, share(args.events), &urls).await
                        }
                    });
                    results
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .push(result);
                }
            });
        }
    });
    let mut files = Vec::new();
    let mut words_total = 0;
    let mut manifest = Manifest::default();
    let mut by_epoch: std::collections::BTreeMap<u64, Vec<EpochFile>> = Default::default();
    for result in results.into_inner().unwrap_or_else(|p| p.into_inner()) {
        let (file, w) = result?;
        words_total += w;
        files.push((file.stream.clone(), file.path.clone()));
        by_epoch.entry(file.epoch).or_default().push(file);
    }
    for (epoch, epoch_files) in by_epoch {
        manifest.seal(epoch, epoch_files);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    runtime
        .block_on(master.write_manifest(&manifest))
        .map_err(|e| e.to_string())?;
    files.sort();
    let bytes = manifest.files.iter().map(|f| f.bytes).sum();
    let stamp_value = json!({ "files": files, "bytes": bytes, "words": words_total });
    std::fs::write(&stamp, stamp_value.to_string()).map_err(|e| e.to_string())?;
    println!("generated in {:.1} s", started.elapsed().as_secs_f64());
    Ok(Data {
        files,
        bytes,
        words: words_total,
    })
}

const CHUNK: u64 = 65_536;

async fn write_lines(
    master: &MasterStore,
    epoch: u64,
    rows: u64,
    vocab: &Arc<Vocabulary>,
    sampler: &Arc<Sampler>,
) -> Result<(EpochFile, u64), String> {
    let mut generator = LineGen::new(Arc::clone(vocab), Arc::clone(sampler), 0x11_0000 + epoch);
    let mut writer = master
        .epoch_writer("lines", epoch, lines_schema())
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::with_capacity(1 << 20);
    let mut done = 0;
    while done < rows {
        let n = CHUNK.min(rows - done);
        let mut column = StringBuilder::with_capacity(n as usize, n as usize * 64);
        for _ in 0..n {
            buf.clear();
            generator.push_line(&mut buf);
            buf.pop(); // the newline
            column.append_value(std::str::from_utf8(&buf).map_err(|e| e.to_string())?);
        }
        let batch = RecordBatch::try_new(lines_schema(), vec![Arc::new(column.finish())])
            .map_err(|e| e.to_string())?;
        writer.write(&batch).await.map_err(|e| e.to_string())?;
        done += n;
    }
    let words = generator.counts().iter().sum();
    Ok((writer.finish().await.map_err(|e| e.to_string())?, words))
}

async fn write_events(
    master: &MasterStore,
    epoch: u64,
    rows: u64,
    sampler: &Arc<Sampler>,
) -> Result<(EpochFile, u64), String> {
    let mut rng = Rng::new(0x22_0000 + epoch);
    let mut writer = master
        .epoch_writer("events", epoch, events_schema())
        .map_err(|e| e.to_string())?;
    let mut done = 0;
    let mut url = String::with_capacity(64);
    while done < rows {
        let n = CHUNK.min(rows - done);
        let mut urls = StringBuilder::with_capacity(n as usize, n as usize * 40);
        let mut bytes = Int64Builder::with_capacity(n as usize);
        for _ in 0..n {
            let rank = sampler.sample(rng.next_u64());
            url.clear();
            use std::fmt::Write;
            let _ = write!(url, "https://shop.example/item/{rank}?ref=home");
            urls.append_value(&url);
            bytes.append_value(200 + rng.below(50_000) as i64);
        }
        let batch = RecordBatch::try_new(
            events_schema(),
            vec![Arc::new(urls.finish()), Arc::new(bytes.finish())],
        )
        .map_err(|e| e.to_string())?;
        writer.write(&batch).await.map_err(|e| e.to_string())?;
        done += n;
    }
    Ok((writer.finish().await.map_err(|e| e.to_string())?, 0))
}

/// The S3-compatible server holding a copy of the dataset.
struct S3 {
    child: std::process::Child,
    port: u16,
    root: PathBuf,
}

const S3_KEY: &str = "lamina-bench";
const S3_SECRET: &str = "lamina-bench-secret";
const S3_BUCKET: &str = "bench";

impl S3 {
    fn start(args: &BatchBench, dir: &Path, data: &Data) -> Result<S3, String> {
        let binary = args
            .s3s
            .clone()
            .or_else(|| std::env::var_os("LAMINA_S3S").map(PathBuf::from))
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|h| PathBuf::from(h).join(".cache/lamina/tools/s3s-fs-0.14.1/bin/s3s-fs"))
            })
            .filter(|p| p.is_file())
            .ok_or("--s3 needs s3s-fs (run `bash deploy/install-s3s.sh`, or give --s3s)")?;
        let root = dir.join("s3");
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join(S3_BUCKET)).map_err(|e| e.to_string())?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let child = Command::new(&binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", S3_KEY, "--secret-key", S3_SECRET])
            .arg(&root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", binary.display()))?;
        let s3 = S3 { child, port, root };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                return Err("s3s-fs did not listen within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Upload through the S3 API (multipart for big files), as a user
        // would, not by copying into the server's directory.
        let started = Instant::now();
        let url = format!("s3://{S3_BUCKET}/master");
        let remote =
            MasterStore::open_with(&url, &s3.store_options()).map_err(|e| e.to_string())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        let local = dir.join("master");
        runtime.block_on(async {
            use object_store::ObjectStoreExt;
            let mut names: Vec<String> = data.files.iter().map(|(_, p)| p.clone()).collect();
            names.push(lamina::master::MANIFEST.to_owned());
            for name in names {
                let bytes = std::fs::read(local.join(&name)).map_err(|e| format!("{name}: {e}"))?;
                let path = object_store::path::Path::from(name.as_str());
                let upload = remote
                    .object_store()
                    .put_multipart(&path)
                    .await
                    .map_err(|e| format!("{name}: {e}"))?;
                let mut parts = object_store::WriteMultipart::new_with_chunk_size(upload, 8 << 20);
                parts.write(&bytes);
                parts.finish().await.map_err(|e| format!("{name}: {e}"))?;
            }
            Ok::<_, String>(())
        })?;
        println!(
            "uploaded {:.1} MiB to s3s-fs on 127.0.0.1:{port} in {:.1} s",
            data.bytes as f64 / MIB,
            started.elapsed().as_secs_f64()
        );
        Ok(s3)
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn store_options(&self) -> StoreOptions {
        let mut options = StoreOptions::default();
        options.s3.endpoint = Some(self.endpoint());
        options.s3.region = Some("us-east-1".into());
        options.s3.access_key_id = Some(S3_KEY.into());
        options.s3.secret_access_key = Some(S3_SECRET.into());
        options.s3.allow_http = Some(true);
        options
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// Lamina's side: per-view times (ms) of each run, totals, peak RSS.
struct LaminaRuns {
    views: Vec<(String, Vec<f64>)>,
    totals: Vec<f64>,
    rows: u64,
    rss_before_mib: f64,
    peak_rss_mib: f64,
    server: ServerProcess,
}

/// Lamina's runs, `between(i)` called once per run `i`: before the even
/// runs' and after the odd ones', so that neither engine always goes first.
fn lamina_runs(
    args: &BatchBench,
    dir: &Path,
    source: &Source,
    s3: Option<&S3>,
    between: &mut dyn FnMut(usize) -> Result<(), String>,
) -> Result<LaminaRuns, String> {
    let storage = match (source, s3) {
        (Source::S3(endpoint), Some(_)) => format!(
            "master_url = \"s3://{S3_BUCKET}/master\"\n\n[storage.s3]\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\naccess_key_id = \"{S3_KEY}\"\nsecret_access_key = \"{S3_SECRET}\"\nallow_http = true\n"
        ),
        _ => format!("master_url = \"file://{}\"\n", dir.join("master").display()),
    };
    let server =
        ServerProcess::start_config(&format!("batch-{}", source.name()), args.keep, |http| {
            format!(
                r#"[server]
listen = "127.0.0.1:{http}"

[[stream]]
name = "lines"
format = "text"

[[stream]]
name = "events"
format = "json"
schema = [ {{ name = "url", type = "string" }}, {{ name = "bytes", type = "int64" }} ]

[[view]]
name = "word_counts"
stream = "lines"
key = {{ words = "line" }}
aggregate = "count"

[[view]]
name = "url_stats"
stream = "events"
key = {{ column = "url" }}
aggregate = "mean"
column = "bytes"

[batch]
schedule = "off"

[storage]
master_read_only = true
{storage}"#
            )
        })?;
    let rss_before_mib = server.rss().map_or(0.0, |b| b as f64 / MIB);
    let mut views: Vec<(String, Vec<f64>)> = Vec::new();
    let mut totals = Vec::new();
    let mut rows = 0;
    for i in 0..args.warmup + args.repeat {
        if i % 2 == 0 {
            between(i)?;
        }
        let run = run_once(&server)?;
        if i % 2 == 1 {
            between(i)?;
        }
        if i < args.warmup {
            println!("  {} lamina warm-up run: {}", source.name(), run["views"]);
            continue;
        }
        let i = i - args.warmup;
        let total = (run["finished_at_us"].as_i64().unwrap_or(0)
            - run["started_at_us"].as_i64().unwrap_or(0)) as f64
            / 1e3;
        totals.push(total);
        rows = run["rows"].as_u64().unwrap_or(0);
        let mut line = format!(
            "  {} lamina run {}: total {total:.0} ms",
            source.name(),
            i + 1
        );
        for v in run["views"].as_array().into_iter().flatten() {
            let name = v["view"].as_str().unwrap_or("?").to_owned();
            let ms = v["ms"].as_f64().unwrap_or(0.0);
            line.push_str(&format!(", {name} {ms:.0} ms"));
            match views.iter_mut().find(|(n, _)| *n == name) {
                Some((_, times)) => times.push(ms),
                None => views.push((name, vec![ms])),
            }
        }
        println!("{line}");
    }
    let peak_rss_mib = server.peak_rss_mib().unwrap_or(0.0);
    Ok(LaminaRuns {
        views,
        totals,
        rows,
        rss_before_mib,
        peak_rss_mib,
        server,
    })
}

/// Requests a batch run and waits for it; the run's record.
fn run_once(server: &ServerProcess) -> Result<Value, String> {
    let r = server.client().post("/v1/batch/runs", b"", &[])?;
    if r.status != 202 {
        return Err(format!("POST /v1/batch/runs answered {}", r.status));
    }
    let id = r.json().map_err(|e| e.to_string())?["id"]
        .as_u64()
        .ok_or("no run id")?;
    let deadline = Instant::now() + Duration::from_secs(3600);
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let r = server.client().get(&format!("/v1/batch/runs/{id}"))?;
        let v: Value = r.json().map_err(|e| e.to_string())?;
        match v["state"].as_str() {
            Some("succeeded") => return Ok(v),
            Some("failed" | "cancelled") => return Err(format!("batch run {id}: {v}")),
            _ if server.exited() => {
                return Err(format!("the server exited; see {}", server.log().display()));
            }
            _ if Instant::now() > deadline => {
                return Err(format!("batch run {id} took over an hour"));
            }
            _ => {}
        }
    }
}

/// What `DuckDB` reads: every file of the dataset at `source`, the thread
/// count, its file cache setting and, from S3, the server's endpoint and
/// credentials (see [`Duck::start`]).
fn duckdb_config(
    threads: usize,
    args: &BatchBench,
    dir: &Path,
    data: &Data,
    source: &Source,
    s3: Option<&S3>,
) -> Value {
    let mut files = serde_json::Map::new();
    for (stream, path) in &data.files {
        let location = match source {
            Source::Local => dir.join("master").join(path).display().to_string(),
            Source::S3(_) => format!("s3://{S3_BUCKET}/master/{path}"),
        };
        if let Some(list) = files
            .entry(stream.clone())
            .or_insert_with(|| Value::Array(Vec::new()))
            .as_array_mut()
        {
            list.push(Value::String(location));
        }
    }
    let mut config = json!({
        "threads": threads,
        "files": files,
        "file_cache": args.duckdb_file_cache,
    });
    if let (Source::S3(_), Some(s3)) = (source, s3) {
        config["s3"] = json!({
            "key": S3_KEY,
            "secret": S3_SECRET,
            "endpoint": format!("127.0.0.1:{}", s3.port),
        });
    }
    config
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn encode(key: &str) -> String {
    key.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Reads DuckDB's sample keys back from Lamina's views.
fn check_exact(server: &ServerProcess, view: &str, sample: &[Value]) -> Result<usize, String> {
    for row in sample {
        let key = row[0].as_str().unwrap_or_default();
        let n = row[1].as_f64().unwrap_or(0.0);
        let r = server
            .client()
            .get(&format!("/v1/views/{view}/keys/{}", encode(key)))?;
        let v: Value = r.json().map_err(|e| e.to_string())?;
        let got = v["value"].as_f64().unwrap_or(f64::NAN);
        let want = match row.get(2).and_then(Value::as_f64) {
            Some(total) => total / n,
            None => n,
        };
        if (got - want).abs() > 1e-9 * want.abs().max(1.0) {
            return Err(format!(
                "{view} `{key}`: Lamina has {got}, DuckDB {want} ({v})"
            ));
        }
    }
    Ok(sample.len())
}

fn report(
    args: &BatchBench,
    threads: usize,
    data: &Data,
    source: &Source,
    lamina: &LaminaRuns,
    duck: Option<&Value>,
) -> Result<(), String> {
    let name = source.name();
    let mut result = format!(
        "RESULT batch source={name} threads={threads} rows={}",
        lamina.rows
    );
    for (view, stream) in WORKLOADS {
        let ours = lamina
            .views
            .iter()
            .find(|(n, _)| n == view)
            .map_or(0.0, |(_, t)| median(t));
        let rows = if stream == "lines" {
            args.lines
        } else {
            args.events
        };
        let mut line = format!(
            "{name} {view}: Lamina {ours:.0} ms ({:.2} M rows/s)",
            rows as f64 / ours.max(1e-3) / 1e3
        );
        result.push_str(&format!(" {view}_ms={ours:.0}"));
        if let Some(duck) = duck {
            let runs: Vec<f64> = duck[view]["ms"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_f64)
                .collect();
            let theirs = median(&runs);
            let each: Vec<String> = runs.iter().map(|t| format!("{t:.0}")).collect();
            println!("  {name} duckdb {view} runs: {} ms", each.join(", "));
            let checked = check_exact(
                &lamina.server,
                view,
                duck[view]["sample"]
                    .as_array()
                    .map_or(&[][..], Vec::as_slice),
            )?;
            line.push_str(&format!(
                ", DuckDB {} {theirs:.0} ms: ratio {:.2}x ({} keys; {checked} sampled keys agree)",
                duck["version"].as_str().unwrap_or("?"),
                ours / theirs.max(1e-3),
                duck[view]["keys"]
            ));
            result.push_str(&format!(
                " duckdb_{view}_ms={theirs:.0} ratio_{view}={:.2}",
                ours / theirs.max(1e-3)
            ));
        }
        println!("{line}");
    }
    let total = median(&lamina.totals);
    println!(
        "{name}: Lamina run total {total:.0} ms ({:.1} MB/s of Parquet); server RSS {:.0} MiB before the runs, peak {:.0} MiB{}",
        data.bytes as f64 / 1e6 / (total / 1e3).max(1e-6),
        lamina.rss_before_mib,
        lamina.peak_rss_mib,
        duck.map_or(String::new(), |d| format!(
            "; DuckDB peak RSS {:.0} MiB",
            d["peak_rss_mib"].as_f64().unwrap_or(0.0)
        ))
    );
    result.push_str(&format!(
        " total_ms={total:.0} peak_rss_mib={:.0}",
        lamina.peak_rss_mib
    ));
    println!("{result}");
    Ok(())
}
