//! The server under test: a real `lamina serve` (this binary) started in a
//! temporary directory with a generated config, observed from outside
//! (REST and `/proc`), killed and restarted on the same data.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use crate::client::Client;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_or(0, |a| a.port())
}

/// A `lamina serve` child process. Dropping it stops the server (SIGTERM,
/// then SIGKILL after 20 s) and deletes its directory unless kept.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    /// REST client (one connection per request).
    pub client: Client,
    /// REST port.
    pub http: u16,
    /// Port of the TCP line listener feeding stream `lines`.
    pub tcp: u16,
    /// The server's directory: config, `serve.log`, data.
    pub dir: PathBuf,
    config: PathBuf,
    keep: bool,
    server_bin: Option<PathBuf>,
    /// The view the benchmark reads (`word_counts` unless told).
    pub view: String,
}

/// Servers alive (pid, directory, whether kept), for [`guard_signals`].
static LIVE: Mutex<Vec<(u32, PathBuf, bool)>> = Mutex::new(Vec::new());

fn live() -> std::sync::MutexGuard<'static, Vec<(u32, PathBuf, bool)>> {
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// On SIGINT, SIGTERM or SIGHUP, kills the servers started (SIGKILL),
/// deletes their directories unless kept, and exits 130: an interrupted
/// benchmark leaves no server behind.
fn guard_signals() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        std::thread::spawn(|| {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            let signalled = rt.block_on(async {
                use tokio::signal::unix::{SignalKind, signal};
                let (Ok(mut int), Ok(mut term), Ok(mut hup)) = (
                    signal(SignalKind::interrupt()),
                    signal(SignalKind::terminate()),
                    signal(SignalKind::hangup()),
                ) else {
                    return false;
                };
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                    _ = hup.recv() => {}
                }
                true
            });
            if !signalled {
                return;
            }
            for (pid, dir, keep) in live().drain(..) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
                if !keep {
                    // Give the kernel a moment to close the server's files.
                    std::thread::sleep(Duration::from_millis(100));
                    let _ = std::fs::remove_dir_all(&dir);
                }
            }
            eprintln!("lamina bench: interrupted; the server was stopped");
            std::process::exit(130);
        });
    });
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let pid = self.child.id();
        live().retain(|(p, _, _)| *p != pid);
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
    /// Starts a server with one text stream `lines` fed by a TCP listener,
    /// the view `word_counts` (count of the words of `line`), the
    /// write-ahead log on and scheduled batch runs off, and waits until
    /// `/healthz` answers. `label` names its directory.
    ///
    /// With `server_bin`, that binary is started instead (`BIN serve
    /// --config FILE`): a server that embeds Lamina and defines
    /// `word_counts` itself as a Rust program (such as the example
    /// `served_word_count`), so the config leaves the view out.
    pub fn start(
        label: &str,
        interval_ms: u64,
        epoch_ms: u64,
        keep: bool,
        server_bin: Option<&std::path::Path>,
    ) -> Result<Self, String> {
        Self::start_with(label, interval_ms, epoch_ms, keep, server_bin, None)
    }

    /// Like [`start`](Self::start), with `receiver` (the TOML of one
    /// `[[stream.receiver]]` table) feeding `lines` instead of the TCP
    /// listener.
    pub fn start_with(
        label: &str,
        interval_ms: u64,
        epoch_ms: u64,
        keep: bool,
        server_bin: Option<&std::path::Path>,
        receiver: Option<&str>,
    ) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!(
            "lamina-bench-{}-{label}-{interval_ms}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let (http, tcp) = (free_port(), free_port());
        let view = if server_bin.is_some() {
            ""
        } else {
            "[[view]]\nname = \"word_counts\"\nstream = \"lines\"\nkey = { words = \"line\" }\naggregate = \"count\"\n\n"
        };
        let receiver = receiver.map_or_else(
            || format!("  [[stream.receiver]]\n  type = \"tcp_listen\"\n  listen = \"127.0.0.1:{tcp}\"\n"),
            str::to_owned,
        );
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:{http}\"\n\n[speed]\nbatch_interval_ms = {interval_ms}\nepoch_ms = {epoch_ms}\n\n\
             [[stream]]\nname = \"lines\"\nformat = \"text\"\n{receiver}\n\
             {view}[batch]\nschedule = \"off\"\n"
        );
        Self::launch(dir, http, tcp, &config, keep, server_bin)
    }

    /// Starts `lamina serve` on a config of the caller's: `config(http)`
    /// is its text for REST port `http` (the `tcp` port is unused).
    pub fn start_config(
        label: &str,
        keep: bool,
        config: impl FnOnce(u16) -> String,
    ) -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("lamina-bench-{}-{label}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let http = free_port();
        let text = config(http);
        Self::launch(dir, http, 0, &text, keep, None)
    }

    fn launch(
        dir: PathBuf,
        http: u16,
        tcp: u16,
        config: &str,
        keep: bool,
        server_bin: Option<&std::path::Path>,
    ) -> Result<Self, String> {
        let path = dir.join("lamina.toml");
        std::fs::write(&path, config).map_err(|e| e.to_string())?;
        guard_signals();
        let child = spawn(&dir, &path, keep, server_bin)?;
        let client = Client::new(&format!("http://127.0.0.1:{http}"), None)?
            .with_timeout(Duration::from_secs(5));
        let server = ServerProcess {
            view: "word_counts".to_owned(),
            child,
            client,
            http,
            tcp,
            dir,
            config: path,
            keep,
            server_bin: server_bin.map(std::path::Path::to_path_buf),
        };
        server.wait_healthy(Duration::from_secs(30))?;
        Ok(server)
    }

    /// Waits until `/healthz` answers 200.
    pub fn wait_healthy(&self, timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        while self.client.get("/healthz").map(|r| r.status) != Ok(200) {
            if self.exited() {
                return Err(format!("the server exited; see {}", self.log().display()));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the server did not answer /healthz within {} s; see {}",
                    timeout.as_secs(),
                    self.log().display()
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Kills the server with SIGKILL (no shutdown of any kind), waits for
    /// it to be gone, and starts it again on the same directory and config.
    /// Returns the instant of the new spawn.
    pub fn kill_and_restart(&mut self) -> Result<Instant, String> {
        self.child
            .kill()
            .map_err(|e| format!("cannot kill the server: {e}"))?;
        let _ = self.child.wait();
        let pid = self.child.id();
        live().retain(|(p, _, _)| *p != pid);
        let at = Instant::now();
        self.child = spawn(
            &self.dir,
            &self.config,
            self.keep,
            self.server_bin.as_deref(),
        )?;
        Ok(at)
    }

    /// A client of its REST API.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The server's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its log file.
    pub fn log(&self) -> PathBuf {
        self.dir.join("serve.log")
    }

    /// Whether the process has ended (gone from /proc, or a zombie).
    pub fn exited(&self) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid())) {
            // The state follows the parenthesised command name.
            Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| {
                matches!(rest.trim_start().chars().next(), Some('Z' | 'X'))
            }),
            Err(_) => true,
        }
    }

    /// Records taken into micro-batches of stream `lines` since the server
    /// started.
    pub fn processed(&self) -> Option<u64> {
        self.client
            .get("/v1/streams")
            .ok()
            .and_then(|r| r.json().ok())
            .and_then(|v| v["streams"][0]["records_total"].as_u64())
    }

    /// A field of `/proc/PID/status` in bytes (`VmRSS`, `VmHWM`).
    pub fn status_bytes(&self, field: &str) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).ok()?;
        let kb: u64 = status
            .lines()
            .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        Some(kb * 1024)
    }

    /// Current resident set size.
    pub fn rss(&self) -> Option<u64> {
        self.status_bytes("VmRSS")
    }

    /// Peak resident set size (`VmHWM`).
    pub fn peak_rss_mib(&self) -> Option<f64> {
        self.status_bytes("VmHWM").map(|b| b as f64 / MIB)
    }
}

/// The epoch length: `epoch_ms`, by default 300 intervals (as the
/// benchmarks always had); it must be a multiple of the interval.
pub fn epoch_ms(interval_ms: u64, epoch_ms: Option<u64>) -> Result<u64, String> {
    let epoch = epoch_ms.unwrap_or(interval_ms * 300);
    if interval_ms == 0 || epoch < interval_ms || !epoch.is_multiple_of(interval_ms) {
        return Err(format!(
            "--epoch-ms ({epoch}) must be a multiple of --interval-ms ({interval_ms}), which must be > 0"
        ));
    }
    Ok(epoch)
}

/// Bytes in a MiB.
pub const MIB: f64 = 1024.0 * 1024.0;

fn spawn(
    dir: &std::path::Path,
    config: &std::path::Path,
    keep: bool,
    server_bin: Option<&std::path::Path>,
) -> Result<Child, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("serve.log"))
        .map_err(|e| e.to_string())?;
    let exe = match server_bin {
        // The server runs in its own directory: a relative path would not
        // be found from there.
        Some(bin) => std::fs::canonicalize(bin)
            .map_err(|e| format!("--server-bin {}: {e}", bin.display()))?,
        None => std::env::current_exe().map_err(|e| e.to_string())?,
    };
    let child = Command::new(exe)
        .args(["serve", "--config"])
        .arg(config)
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start the server: {e}"))?;
    live().push((child.id(), dir.to_path_buf(), keep));
    Ok(child)
}

/// One micro-batch that had records, as `/v1/streams/lines/batches` shows
/// it.
#[derive(Debug, Clone, Copy)]
pub struct BatchTimes {
    /// Records in it.
    pub records: u64,
    /// Processing time (ms).
    pub processing_ms: f64,
    /// From the first record's arrival to the start of processing (ms).
    pub waiting_ms: Option<f64>,
    /// Read, parse, program and commit times (ms).
    pub phases: [f64; 4],
    /// When its first record arrived and when its processing ended (µs
    /// since the Unix epoch).
    pub span_us: Option<(i64, i64)>,
}

/// Collects micro-batches by id. The endpoint keeps only the most recent
/// batches, so it is polled (every second) during a run and merged here.
#[derive(Debug, Default)]
pub struct BatchLog {
    last: Option<u64>,
    batches: BTreeMap<u64, BatchTimes>,
}

impl BatchLog {
    /// A log of the batches after the most recent one now.
    pub fn from_now(server: &ServerProcess) -> Self {
        let mut log = BatchLog::default();
        log.poll(server);
        log.batches.clear();
        log
    }

    /// Fetches the batches after the last one seen.
    pub fn poll(&mut self, server: &ServerProcess) {
        let path = match self.last {
            Some(id) => format!("/v1/streams/lines/batches?since={id}"),
            None => "/v1/streams/lines/batches".to_owned(),
        };
        let Some(v) = server.client.get(&path).ok().and_then(|r| r.json().ok()) else {
            return;
        };
        for b in v["batches"].as_array().into_iter().flatten() {
            let Some(id) = b["id"].as_u64() else { continue };
            self.last = Some(self.last.map_or(id, |l| l.max(id)));
            let records = b["records"].as_u64().unwrap_or(0);
            if records == 0 {
                continue;
            }
            let waiting_ms = match (
                b["processing_start_us"].as_i64(),
                b["first_receive_us"].as_i64(),
            ) {
                (Some(start), Some(first)) => Some((start - first) as f64 / 1e3),
                _ => None,
            };
            self.batches.insert(
                id,
                BatchTimes {
                    records,
                    processing_ms: b["processing_ms"].as_f64().unwrap_or(0.0),
                    waiting_ms,
                    phases: ["read_ms", "parse_ms", "program_ms", "commit_ms"]
                        .map(|p| b["phases"][p].as_f64().unwrap_or(0.0)),
                    span_us: b["first_receive_us"]
                        .as_i64()
                        .zip(b["processing_end_us"].as_i64()),
                },
            );
        }
    }

    /// Processing times, sorted.
    pub fn processing_ms(&self) -> Vec<f64> {
        sorted(self.batches.values().map(|b| b.processing_ms).collect())
    }

    /// The median of each phase (read, parse, program, commit), in ms.
    pub fn phase_medians(&self) -> [f64; 4] {
        [0, 1, 2, 3].map(|i| {
            let v = sorted(self.batches.values().map(|b| b.phases[i]).collect());
            v.get(v.len() / 2).copied().unwrap_or(0.0)
        })
    }

    /// Waits of the first record before processing, sorted.
    pub fn waiting_ms(&self) -> Vec<f64> {
        sorted(self.batches.values().filter_map(|b| b.waiting_ms).collect())
    }

    /// Records in the batches collected.
    pub fn records(&self) -> u64 {
        self.batches.values().map(|b| b.records).sum()
    }

    /// From the first record's arrival to the end of the last batch's
    /// processing, over the batches collected (seconds).
    pub fn span_secs(&self) -> Option<f64> {
        let first = self
            .batches
            .values()
            .filter_map(|b| b.span_us)
            .map(|s| s.0)
            .min()?;
        let last = self
            .batches
            .values()
            .filter_map(|b| b.span_us)
            .map(|s| s.1)
            .max()?;
        Some((last - first) as f64 / 1e6)
    }

    /// Number of batches with records collected.
    pub fn len(&self) -> usize {
        self.batches.len()
    }
}

/// `v`, sorted.
pub fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// The `p` quantile of sorted values (nearest rank); NaN when empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// The counts of 2,000 random words and the 100 most frequent equal what
/// was sent (`counts`, per vocabulary index); `seed` picks the words.
pub fn check_counts(
    server: &ServerProcess,
    vocab: &super::text::Vocabulary,
    counts: &[u64],
    seed: u64,
) -> Result<(), String> {
    let mut rng = super::text::Rng::new(seed);
    let mut words: Vec<usize> = (0..2000)
        .map(|_| rng.below(vocab.len() as u64) as usize)
        .collect();
    words.extend(0..100.min(vocab.len()));
    for i in words {
        let word = vocab.word(i);
        // Words are lowercase ASCII letters: no escaping needed.
        let got = server
            .client()
            .get(&format!("/v1/views/word_counts/keys/{word}"))
            .ok()
            .and_then(|r| r.json().ok())
            .and_then(|v| v["value"].as_i64())
            .ok_or_else(|| format!("cannot read the count of `{word}`"))?;
        if got != counts[i] as i64 {
            return Err(format!(
                "word `{word}`: lamina counted {got}, {} were sent",
                counts[i]
            ));
        }
    }
    Ok(())
}
