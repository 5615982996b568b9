//! The command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::client::{Client, encode_segment};

/// Lamina: one binary for batch views, streaming views and serving their
/// exact merge over REST.
#[derive(Debug, Parser)]
#[command(name = "lamina", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// How `lamina serve` writes its log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `2026-12-02T05:00:00.000Z  INFO lamina_serving::server: message key=value`.
    Text,
    /// `{"timestamp":…,"level":"INFO","fields":{"message":…,…},"target":…}`.
    Json,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server: receivers, micro-batches, batch runs and the REST API.
    /// Without --config it runs the embedded default (REST on
    /// 127.0.0.1:8080, a TCP line listener on 127.0.0.1:9999 feeding stream
    /// `lines`, view `word_counts`, data under ./lamina-data).
    Serve {
        /// The TOML configuration file (see deploy/lamina.toml).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// How log lines look on stderr: `text` (for people) or `json`
        /// (one object per line, for log collectors).
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
        /// Which log lines are written: `error`, `warn`, `info`, `debug`,
        /// `trace`, or a filter like `info,lamina_speed=debug`. Default:
        /// `RUST_LOG`, else `info`.
        #[arg(long, value_name = "LEVEL")]
        log_level: Option<String>,
    },
    /// Check a configuration file and print every problem, without starting.
    CheckConfig {
        /// The TOML configuration file.
        #[arg(value_name = "FILE")]
        config: PathBuf,
    },
    /// Print the merged value of one key of a view.
    Query {
        /// The view.
        view: String,
        /// The key.
        key: String,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Print the keys with the largest values of a view.
    Top {
        /// The view.
        view: String,
        /// How many keys.
        #[arg(short, long, default_value_t = 10)]
        k: usize,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Send newline-delimited records from FILE (or standard input) to a
    /// stream; returns once the server has them durably.
    Ingest {
        /// The stream.
        stream: String,
        /// The file; standard input when absent.
        file: Option<PathBuf>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Batch runs.
    Batch {
        #[command(subcommand)]
        command: BatchCommand,
    },
    /// Print the server's health, views, streams and latest batch run.
    Status {
        #[command(flatten)]
        server: ServerArgs,
    },
    /// The write-ahead log: check it, or salvage a damaged one (with the
    /// server stopped).
    Wal {
        #[command(subcommand)]
        command: WalCommand,
    },
    /// The state of the program's stateful operators (`update_state_by_key`,
    /// `map_with_state`): list it, or drop one operator's (with the server
    /// stopped).
    State {
        #[command(subcommand)]
        command: StateCommand,
    },
    /// Benchmarks (run them from a release build).
    Bench {
        #[command(subcommand)]
        command: BenchCommand,
    },
}

/// `lamina bench ...`
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Sustained TCP ingest of Zipf-distributed text into `word_counts`,
    /// end-to-end latency and exact counts, against a real server this
    /// command starts.
    Stream(crate::bench::StreamBench),
    /// The cost of many distinct keys: RSS per key, micro-batch and query
    /// times, a batch run, a restart after SIGKILL, against a real server
    /// this command starts.
    Keys(crate::bench::KeysBench),
    /// A TCP server that sends the same realistic text to whoever
    /// connects (like `nc -lk` with fresh Zipf text), paced or as fast as
    /// it is read: the load for programs that read a socket, such as
    /// `examples/network_word_count`.
    Source(crate::bench::SourceBench),
    /// Kafka ingest into `word_counts` as a ratio to a plain consumer loop
    /// (same client library, broker and machine): preloads a topic with
    /// Zipf text, then alternates the two, and checks exact counts.
    Kafka(crate::bench::KafkaBench),
    /// Flume Avro RPC appendBatch into `word_counts`: events/s and the
    /// acknowledgement latency, with exact counts, against a real server
    /// this command starts.
    Flume(crate::bench::FlumeBench),
    /// A batch recompute (word counts over 10M lines, count-and-sum by URL
    /// over 10M events) against DuckDB on the same Parquet files.
    Batch(crate::bench::BatchBench),
}

/// `lamina wal ...`
#[derive(Debug, Subcommand)]
pub enum WalCommand {
    /// Read every segment and report entries, records, seq ranges and
    /// every problem (offset, reason). Exit 0 when the server can start on
    /// the log (clean, or only a torn tail it will cut), 1 when it is
    /// damaged.
    Check(WalArgs),
    /// Rebuild a damaged log from every intact entry: damaged segments are
    /// moved to `<wal>/damaged-<time>/` (never deleted) and rewritten;
    /// lost records are replaced by markers so seqs stay gap-free, and
    /// every lost seq range is printed.
    Salvage(WalArgs),
}

/// `lamina state ...`
#[derive(Debug, Subcommand)]
pub enum StateCommand {
    /// Every operator with stored state and its number of keys.
    List(WalArgs),
    /// Delete one operator's state, e.g. after its type changed
    /// incompatibly: the operator starts empty at the next start.
    Drop {
        /// The operator (as `lamina state list` or the start-up error
        /// names it).
        operator: String,
        #[command(flatten)]
        args: WalArgs,
    },
    /// Recompute one operator's state from the records: every sealed epoch
    /// of the master dataset, then the write-ahead log up to the committed
    /// position; replaces the stored state (server stopped; the same
    /// program and config as the server's).
    Rebuild {
        /// The operator.
        operator: String,
        /// The configuration file; the binary's embedded default without.
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
}

/// Where the write-ahead log is: `<state_dir>/wal`.
#[derive(Debug, clap::Args)]
pub struct WalArgs {
    /// The state directory (`[storage] state_dir`).
    #[arg(long, value_name = "DIR", conflicts_with = "config")]
    pub state_dir: Option<PathBuf>,
    /// Take the state directory from this configuration file. Without
    /// either option: the default, ./lamina-data/state.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// `lamina batch ...`
#[derive(Debug, Subcommand)]
pub enum BatchCommand {
    /// Start a batch run now (or join the one already waiting).
    Run {
        /// Wait until the run ends; exit 1 if it failed or was cancelled.
        #[arg(long)]
        wait: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
}

/// Where the server is.
#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// The server's REST address.
    #[arg(long, env = "LAMINA_SERVER", default_value = "http://127.0.0.1:8080")]
    pub server: String,
    /// Bearer token for write and admin endpoints.
    #[arg(long, env = "LAMINA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

/// Parses the process's arguments and runs the command. Exit code 0 on
/// success, 1 when the command failed, 2 on a usage or configuration error.
pub fn main() -> ExitCode {
    run(Cli::parse(), &crate::app::App::new("lamina"))
}

/// Runs a parsed command line for `app` (the `lamina` binary, or a binary
/// that embeds the server with views of its own).
pub fn run(cli: Cli, app: &crate::app::App) -> ExitCode {
    match cli.command {
        Command::Serve {
            config,
            log_format,
            log_level,
        } => serve(config, log_format, log_level.as_deref(), app),
        Command::Query { view, key, server } => client_command(&server, |c| query(c, &view, &key)),
        Command::Top { view, k, server } => client_command(&server, |c| top(c, &view, k)),
        Command::Ingest {
            stream,
            file,
            server,
        } => client_command(&server, |c| ingest(c, &stream, file.as_deref())),
        Command::Batch {
            command: BatchCommand::Run { wait, server },
        } => client_command(&server, |c| batch_run(c, wait)),
        Command::Status { server } => client_command(&server, status),
        Command::Wal { command } => crate::wal_cli::run(command),
        Command::State {
            command: StateCommand::Rebuild { operator, config },
        } => rebuild(config, &operator, app),
        Command::State { command } => crate::wal_cli::state(command),
        Command::Bench { command } => {
            let result = match command {
                BenchCommand::Stream(args) => crate::bench::stream(&args),
                BenchCommand::Keys(args) => crate::bench::keys(&args),
                BenchCommand::Kafka(args) => crate::bench::kafka(&args),
                BenchCommand::Flume(args) => crate::bench::flume(&args),
                BenchCommand::Batch(args) => crate::bench::batch(&args),
                BenchCommand::Source(args) => crate::bench::source(&args),
            };
            match result {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("lamina bench: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::CheckConfig { config } => match crate::config::Config::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
    }
}

/// The config at `path`, or the app's embedded default; a usage error
/// (exit 2) printed when it does not load.
fn app_config(
    path: Option<&std::path::Path>,
    app: &crate::app::App,
) -> Result<crate::config::Config, ExitCode> {
    match path {
        Some(p) => crate::config::Config::load(p),
        None => app.default_config(),
    }
    .map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })
}

fn rebuild(path: Option<PathBuf>, operator: &str, app: &crate::app::App) -> ExitCode {
    let config = match app_config(path.as_deref(), app) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let started = std::time::Instant::now();
    match crate::rebuild::rebuild(&config, app.program_fn(), operator) {
        Ok(r) => {
            println!(
                "rebuilt the state of `{operator}`: {} keys, from {} sealed epochs ({} records) and {} log records, in {:.1} s",
                r.keys,
                r.epochs,
                r.epoch_records,
                r.log_records,
                started.elapsed().as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("lamina state rebuild: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(
    path: Option<PathBuf>,
    log_format: LogFormat,
    log_level: Option<&str>,
    app: &crate::app::App,
) -> ExitCode {
    let filter = match log_level.map(parse_log_level) {
        Some(Ok(f)) => f,
        Some(Err(e)) => {
            eprintln!("lamina serve: {e}");
            return ExitCode::from(2);
        }
        None => default_filter(),
    };
    let config = match app_config(path.as_deref(), app) {
        Ok(c) => c,
        Err(code) => return code,
    };
    init_logging(filter, log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("lamina-io")
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("lamina: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::server::serve_with_receivers(
        config,
        app.program_fn(),
        app.take_receivers(),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}: {e}", app.name());
            ExitCode::FAILURE
        }
    }
}

fn client_command(args: &ServerArgs, run: impl FnOnce(&Client) -> Result<(), String>) -> ExitCode {
    let client = match Client::new(&args.server, args.token.clone()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("lamina: {e}");
            return ExitCode::from(2);
        }
    };
    match run(&client) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("lamina: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The JSON body of a 2xx answer, or the server's error message.
fn ok_json(resp: crate::client::Response) -> Result<serde_json::Value, String> {
    let body = resp.json();
    if (200..300).contains(&resp.status) {
        return body;
    }
    let detail = body
        .ok()
        .and_then(|b| {
            let e = &b["error"];
            Some(format!(
                "{} ({})",
                e["message"].as_str()?,
                e["code"].as_str()?
            ))
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&resp.body).into_owned());
    Err(format!("server answered {}: {detail}", resp.status))
}

fn query(c: &Client, view: &str, key: &str) -> Result<(), String> {
    let path = format!(
        "/v1/views/{}/keys/{}",
        encode_segment(view),
        encode_segment(key)
    );
    let v = ok_json(c.get(&path)?)?;
    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    Ok(())
}

fn top(c: &Client, view: &str, k: usize) -> Result<(), String> {
    let v = ok_json(c.get(&format!("/v1/views/{}/top?k={k}", encode_segment(view)))?)?;
    for item in v["items"].as_array().into_iter().flatten() {
        println!(
            "{:>12}  {}",
            item["value"],
            item["key"].as_str().unwrap_or_default()
        );
    }
    Ok(())
}

/// Bodies sent per request: well under the default 16 MiB limit.
const INGEST_CHUNK_BYTES: usize = 4 << 20;

fn ingest(c: &Client, stream: &str, file: Option<&std::path::Path>) -> Result<(), String> {
    let data = match file {
        Some(p) => std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?,
        None => {
            let mut buf = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)
                .map_err(|e| format!("standard input: {e}"))?;
            buf
        }
    };
    // Each chunk carries its own idempotency key, so a retry after a lost
    // answer is not counted twice.
    let run_id = format!(
        "cli-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let path = format!("/v1/ingest/{}", encode_segment(stream));
    let mut total = 0u64;
    let mut rest = &data[..];
    let mut index = 0;
    while !rest.is_empty() {
        let mut end = rest.len().min(INGEST_CHUNK_BYTES);
        if end < rest.len() {
            // Cut after a newline so that no record is split.
            end = rest[..end]
                .iter()
                .rposition(|&b| b == b'\n')
                .map_or(end, |p| p + 1);
        }
        let (chunk, tail) = rest.split_at(end);
        let key = format!("{run_id}-{index}");
        let mut attempt = 0;
        let answer = loop {
            attempt += 1;
            match c.post(&path, chunk, &[("Idempotency-Key", &key)]) {
                Ok(r) if r.status >= 500 && attempt < 4 => {}
                Ok(r) => break ok_json(r)?,
                Err(e) if attempt < 4 => eprintln!("lamina: {e}; retrying"),
                Err(e) => return Err(e),
            }
            std::thread::sleep(std::time::Duration::from_millis(200 * attempt));
        };
        total += answer["records"].as_u64().unwrap_or(0);
        rest = tail;
        index += 1;
    }
    println!("{total} records ingested into `{stream}`");
    Ok(())
}

fn batch_run(c: &Client, wait: bool) -> Result<(), String> {
    let v = ok_json(c.post("/v1/batch/runs", b"", &[])?)?;
    let id = v["id"]
        .as_u64()
        .ok_or("the server's answer has no run id")?;
    println!("batch run {id}: {}", v["state"].as_str().unwrap_or("?"));
    if !wait {
        return Ok(());
    }
    // A bar redrawn in place on a terminal; elsewhere (logs, CI) a line
    // at every tenth of the way.
    let terminal = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut shown_tenths = None;
    let mut drawn = false;
    loop {
        std::thread::sleep(std::time::Duration::from_millis(200));
        let run = ok_json(c.get(&format!("/v1/batch/runs/{id}"))?)?;
        let state = run["state"].as_str().unwrap_or("?");
        if let Some((fraction, line)) = progress_line(&run["progress"]) {
            if terminal {
                eprint!("\r{line}\x1b[K");
                drawn = true;
            } else {
                let tenths = (fraction * 10.0).floor() as u64;
                if shown_tenths != Some(tenths) {
                    eprintln!("{line}");
                    shown_tenths = Some(tenths);
                }
            }
        }
        if matches!(state, "succeeded" | "failed" | "cancelled") && drawn {
            eprintln!();
        }
        match state {
            "succeeded" => {
                let took = (run["finished_at_us"].as_i64().unwrap_or(0)
                    - run["started_at_us"].as_i64().unwrap_or(0)) as f64
                    / 1e6;
                let views: Vec<String> = run["views"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|v| format!("{} {} ms", v["view"].as_str().unwrap_or("?"), v["ms"]))
                    .collect();
                println!(
                    "batch run {id}: succeeded in {took:.1} s (generation through epoch {}, {} files, {} rows, {} keys{}{})",
                    run["epoch"],
                    run["files"],
                    run["rows"],
                    run["keys"],
                    if views.is_empty() { "" } else { "; " },
                    views.join(", ")
                );
                let c = &run["compaction"];
                if let Some(error) = c["error"].as_str() {
                    println!("compaction stopped early: {error}");
                } else if c["files_in"].as_u64().unwrap_or(0)
                    + c["files_deleted"].as_u64().unwrap_or(0)
                    > 0
                {
                    println!(
                        "compaction: {} small files ({:.1} MB) merged into {} in {} ms; {} replaced files deleted",
                        c["files_in"],
                        c["bytes_in"].as_f64().unwrap_or(0.0) / 1e6,
                        c["files_out"],
                        c["ms"],
                        c["files_deleted"]
                    );
                }
                return Ok(());
            }
            "failed" | "cancelled" => {
                return Err(format!(
                    "batch run {id}: {state}: {}",
                    run["error"].as_str().unwrap_or("")
                ));
            }
            _ => {}
        }
    }
}

/// A run's progress as a bar and figures, with the fraction done; `None`
/// before the run has planned its reads.
fn progress_line(p: &serde_json::Value) -> Option<(f64, String)> {
    let n = |k: &str| p[k].as_u64().unwrap_or(0);
    let (rows, rows_total) = (n("rows_done"), n("rows_total"));
    let (bytes, bytes_total) = (n("bytes_done"), n("bytes_total"));
    if p.is_null() || (rows_total == 0 && bytes_total == 0) {
        return None;
    }
    let fraction = if bytes_total > 0 {
        bytes as f64 / bytes_total as f64
    } else {
        rows as f64 / rows_total as f64
    }
    .clamp(0.0, 1.0);
    const WIDTH: usize = 30;
    let filled = (fraction * WIDTH as f64).round() as usize;
    let view = match p["view"].as_str() {
        _ if p["compacting"] == true => "  published; compacting the master dataset".to_owned(),
        Some(v) => format!("  view {v} ({}/{})", n("views_done") + 1, n("views_total")),
        None => String::new(),
    };
    let line = format!(
        "[{}{}] {:>3.0}%  {rows}/{rows_total} rows  {:.1}/{:.1} MB{view}",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled),
        fraction * 100.0,
        bytes as f64 / 1e6,
        bytes_total as f64 / 1e6,
    );
    Some((fraction, line))
}

fn status(c: &Client) -> Result<(), String> {
    let health = ok_json(c.get("/healthz")?)?;
    println!("server: {}", health["status"].as_str().unwrap_or("?"));
    let views = ok_json(c.get("/v1/views")?)?;
    println!("watermark epoch: {}", views["watermark_epoch"]);
    for v in views["views"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap_or("?");
        let stream = v["stream"].as_str().unwrap_or("?");
        match v.get("window") {
            // A windowed view keeps cells (bucket x key), not keys.
            Some(w) => println!(
                "view {name}: {} cells ({} over {} s windows every {} s by {} time, of stream {stream}; {} late records)",
                v["cells"],
                v["aggregate"],
                w["length_secs"],
                w["slide_secs"],
                w["time"].as_str().unwrap_or("?"),
                v["late_records"]
            ),
            None => println!(
                "view {name}: {} keys ({} of stream {stream})",
                v["keys"], v["aggregate"]
            ),
        }
    }
    let streams = ok_json(c.get("/v1/streams")?)?;
    for s in streams["streams"].as_array().into_iter().flatten() {
        let mut line = format!(
            "stream {}: {} records, {} dead letters",
            s["name"].as_str().unwrap_or("?"),
            s["records_total"],
            s["dead_letters_total"]
        );
        if let Some(wm) = s["watermark"].as_str() {
            line.push_str(&format!(
                ", watermark {wm}, {} late records",
                s["late_records_total"]
            ));
        }
        println!("{line}");
        // Pull receivers (Kafka) say what they are doing and how far
        // behind the source they are.
        for r in s["receiver_status"].as_array().into_iter().flatten() {
            if let Some(status) = r["status"].as_str() {
                println!(
                    "  receiver {}: {status}; {} records, lag {}",
                    r["receiver"].as_str().unwrap_or("?"),
                    r["records_total"],
                    r["lag_records"]
                );
            }
        }
    }
    let runs = ok_json(c.get("/v1/batch/runs")?)?;
    if let Some(r) = runs["runs"].as_array().and_then(|r| r.first()) {
        println!(
            "latest batch run {}: {} (epoch {})",
            r["id"],
            r["state"].as_str().unwrap_or("?"),
            r["epoch"]
        );
        if let Some((_, line)) = progress_line(&r["progress"]) {
            println!("  {line}");
        }
    }
    Ok(())
}

/// `--log-level`: a level, or a filter of `target=level` directives. A
/// lone word that is not a level is refused: the filter syntax would read
/// it as a target and silence every other line.
fn parse_log_level(level: &str) -> Result<tracing_subscriber::EnvFilter, String> {
    const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];
    let bad = |why: &dyn std::fmt::Display| {
        format!(
            "--log-level {level:?}: {why} (a level: {}; or a filter like `info,lamina_speed=debug`)",
            LEVELS.join(", ")
        )
    };
    let directive = level.contains(['=', ',']);
    if !directive && !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
        return Err(bad(&"not a level"));
    }
    tracing_subscriber::EnvFilter::try_new(level).map_err(|e| bad(&e))
}

/// `RUST_LOG`, else `info`.
fn default_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

/// Logs to stderr through `filter`, as text or one JSON object per line.
fn init_logging(filter: tracing_subscriber::EnvFilter, format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(false)
            .with_span_list(false)
            .try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn log_levels_are_levels_or_filters() {
        for ok in [
            "info",
            "DEBUG",
            "off",
            "warn,lamina_speed=debug",
            "lamina_batch=trace",
        ] {
            assert!(parse_log_level(ok).is_ok(), "{ok}");
        }
        for bad in ["verbose", "lamina_speed=loud", ""] {
            let err = parse_log_level(bad).unwrap_err();
            assert!(err.contains("a level: off, error"), "{err}");
        }
    }

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
