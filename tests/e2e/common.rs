//! Shared helpers of the end-to-end tests: start the real `lamina` binary as
//! a user would, wait for it, talk to it, stop it by its PID.

#![allow(dead_code)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use lamina_serving::client::Client;
use serde_json::Value;

/// The binary under test.
pub fn lamina() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lamina"))
}

/// A fresh working directory, removed on drop.
pub struct WorkDir(pub PathBuf);

impl WorkDir {
    pub fn new(tag: &str) -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let p = std::env::temp_dir().join(format!(
            "lamina-e2e-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        WorkDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A free port on 127.0.0.1 for a server a test starts. Taken below the
/// kernel's ephemeral range (32768 and up), from which outgoing connections
/// of tests running in parallel get their local ports: a port found free
/// there could be taken by a client before the server binds it. Never the
/// same port twice in one test process; checked free by binding it.
pub fn free_port() -> u16 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let start = (u64::from(std::process::id()) * 7919) % 12_000;
    loop {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        assert!(n < 12_000, "no free port left below 32000");
        let port = 20_000 + ((start + n * 13) % 12_000) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

/// A running server, killed on drop if still running.
pub struct Server {
    pub child: Child,
    pub http: u16,
    pub log: PathBuf,
}

impl Server {
    /// Starts `lamina serve` in `dir` with `args`, logging to `dir/serve-N.log`,
    /// and waits until `/healthz` answers on `http` (at most 20 s).
    pub fn start(dir: &Path, http: u16, args: &[&str]) -> Server {
        let mut serve = lamina();
        serve.arg("serve");
        Server::start_command(serve, dir, http, args)
    }

    /// Like [`start`](Self::start) for another server binary (e.g. an
    /// example that embeds the server), given as a command with its
    /// leading arguments.
    pub fn start_command(command: Command, dir: &Path, http: u16, args: &[&str]) -> Server {
        Server::start_command_with(command, dir, http, args, Stdio::null())
    }

    /// Like [`start_command`](Self::start_command), with the server's
    /// standard input from `stdin` (e.g. `Stdio::piped()`; take it from
    /// `server.child.stdin`).
    pub fn start_command_with(
        mut command: Command,
        dir: &Path,
        http: u16,
        args: &[&str],
        stdin: Stdio,
    ) -> Server {
        static RUN: AtomicU64 = AtomicU64::new(0);
        let log = dir.join(format!("serve-{}.log", RUN.fetch_add(1, Ordering::Relaxed)));
        let out = std::fs::File::create(&log).unwrap();
        let child = command
            .args(args)
            .current_dir(dir)
            .env("RUST_LOG", "info")
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(stdin)
            .spawn()
            .expect("the lamina binary starts");
        let mut server = Server { child, http, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = server.client().get("/healthz")
                && r.status == 200
            {
                return server;
            }
            if let Ok(Some(status)) = server.child.try_wait() {
                panic!(
                    "lamina serve exited with {status} during start-up:\n{}",
                    server.log_text()
                );
            }
            assert!(
                Instant::now() < deadline,
                "lamina serve did not answer within 20 s:\n{}",
                server.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn client(&self) -> Client {
        Client::new(&format!("http://127.0.0.1:{}", self.http), None)
            .unwrap()
            .with_timeout(Duration::from_secs(10))
    }

    pub fn get(&self, path: &str) -> (u16, Value) {
        let r = self.client().get(path).unwrap();
        (r.status, r.json().unwrap_or(Value::Null))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM by PID; waits for the exit (at most 30 s).
    pub fn terminate(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "lamina did not stop within 30 s of SIGTERM:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL by PID: the process gets no chance to clean up.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Sends lines over one TCP connection and closes it.
pub fn send_tcp(port: u16, lines: &[String]) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut body = lines.join("\n");
    body.push('\n');
    s.write_all(body.as_bytes()).unwrap();
}

/// The merged count of a key (0 when absent).
pub fn count(server: &Server, view: &str, key: &str) -> i64 {
    let (status, v) = server.get(&format!("/v1/views/{view}/keys/{key}"));
    assert_eq!(status, 200, "{v}");
    v["value"].as_i64().unwrap_or(0)
}

/// Requests a batch run over REST and waits (at most 60 s) until it ends;
/// panics unless it succeeded. Returns the run's last state.
pub fn batch_run_and_wait(server: &Server) -> Value {
    let r = server.client().post("/v1/batch/runs", b"", &[]).unwrap();
    assert_eq!(r.status, 202);
    let id = r.json().unwrap()["id"].as_u64().unwrap();
    let mut last = Value::Null;
    eventually(Duration::from_secs(60), || {
        last = server.get(&format!("/v1/batch/runs/{id}")).1;
        matches!(
            last["state"].as_str(),
            Some("succeeded" | "failed" | "cancelled")
        )
    })
    .expect("the run ends");
    assert_eq!(last["state"], "succeeded", "{last}");
    last
}

/// Polls `f` until it returns true, at most `limit`; returns the time it took.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return Some(start.elapsed());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    None
}

/// A config file with the given ports and a JSON stream besides the default
/// text one, written to `dir/lamina.toml`.
pub fn write_config(dir: &Path, http: u16, tcp: u16, extra: &str) -> PathBuf {
    let text = format!(
        r#"
[server]
listen = "127.0.0.1:{http}"

[speed]
batch_interval_ms = 50
epoch_ms = 1000

[[stream]]
name = "lines"
format = "text"
  [[stream.receiver]]
  type = "tcp_listen"
  listen = "127.0.0.1:{tcp}"

[[stream]]
name = "events"
format = "json"
schema = [ {{ name = "user", type = "string" }}, {{ name = "amount", type = "int64", nullable = true }} ]

[[view]]
name = "word_counts"
stream = "lines"
key = {{ words = "line" }}
aggregate = "count"

[[view]]
name = "amount_by_user"
stream = "events"
key = {{ column = "user" }}
aggregate = "sum"
column = "amount"

[batch]
schedule = "off"
{extra}
"#
    );
    let path = dir.join("lamina.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// SplitMix64: a small seeded generator for picking moments, words and
/// amounts reproducibly.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }

    /// Uniform in `lo..=hi` milliseconds.
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(self.range(lo, hi))
    }
}

/// A config with one text stream `lines` (fed by a TCP listener on `tcp`
/// when given), the view `word_counts` (words of `line`, counted) and
/// scheduled batch runs off; `sections` adds tables such as `[speed]` or
/// `[storage]`. Written to `dir/lamina.toml`.
pub fn lines_config(dir: &Path, http: u16, tcp: Option<u16>, sections: &str) -> PathBuf {
    let receiver = tcp.map_or_else(String::new, |tcp| {
        format!("  [[stream.receiver]]\n  type = \"tcp_listen\"\n  listen = \"127.0.0.1:{tcp}\"\n")
    });
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{http}\"\n\n{sections}\n\n[[stream]]\nname = \"lines\"\nformat = \"text\"\n{receiver}\n[[view]]\nname = \"word_counts\"\nstream = \"lines\"\nkey = {{ words = \"line\" }}\naggregate = \"count\"\n\n[batch]\nschedule = \"off\"\n"
    );
    let path = dir.join("lamina.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `lamina serve --config CONFIG` in `dir`, expecting it to exit
/// within `limit`; returns its exit status and output (logged to
/// `dir/refused.log`). Panics, killing it, when it is still running then.
pub fn serve_expecting_exit(dir: &Path, config: &Path, limit: Duration) -> (ExitStatus, String) {
    let log = dir.join("refused.log");
    let out = std::fs::File::create(&log).unwrap();
    let mut child = lamina()
        .args(["serve", "--config"])
        .arg(config)
        .current_dir(dir)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return (status, std::fs::read_to_string(&log).unwrap_or_default());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "lamina serve was expected to exit but is still running after {limit:?}:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Sends one ingest request to `stream` until it is acknowledged, with the
/// same `Idempotency-Key` every attempt (a retry of a request that made it
/// into the log before a kill counts once). Panics after 60 s.
pub fn ingest_until_acked(client: &Client, stream: &str, key: &str, body: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = client.post(
            &format!("/v1/ingest/{stream}"),
            body.as_bytes(),
            &[("Idempotency-Key", key)],
        ) && r.status == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "request {key} not acknowledged");
        std::thread::sleep(Duration::from_millis(15));
    }
}

/// A Kafka-wire broker (tansu, installed by `deploy/install-tansu.sh`) on a
/// free loopback port with its own SQLite file, stopped by its PID on drop.
pub struct Tansu {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Tansu {
    /// The broker binary: `$LAMINA_TANSU`, else where the install script
    /// puts it. `None` when it is not installed — unless
    /// `LAMINA_REQUIRE_PEERS=1` (the README's test command sets it), which
    /// makes a missing broker a failure rather than a skipped test.
    pub fn binary() -> Option<PathBuf> {
        let path = std::env::var_os("LAMINA_TANSU")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|h| PathBuf::from(h).join(".cache/lamina/tools/tansu-0.6.0/bin/tansu"))
            })?;
        if path.is_file() {
            return Some(path);
        }
        assert!(
            std::env::var("LAMINA_REQUIRE_PEERS").as_deref() != Ok("1"),
            "the Kafka-wire broker is not installed at {} (run `bash deploy/install-tansu.sh`)",
            path.display()
        );
        eprintln!(
            "skipped: no Kafka-wire broker at {} (run `bash deploy/install-tansu.sh`, or the README's test command)",
            path.display()
        );
        None
    }

    /// Starts the broker on `port` with its data in `dir`; waits until it
    /// accepts connections (at most 30 s).
    pub fn start(binary: &Path, dir: &Path, port: u16) -> Tansu {
        static RUN: AtomicU64 = AtomicU64::new(0);
        let log = dir.join(format!("tansu-{}.log", RUN.fetch_add(1, Ordering::Relaxed)));
        let out = std::fs::File::create(&log).unwrap();
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(binary)
            .args([
                "broker",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .args(["--storage-engine", "sqlite://tansu.db"])
            .current_dir(dir)
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .stdin(Stdio::null())
            .spawn()
            .expect("tansu starts");
        let mut tansu = Tansu { child, port, log };
        let up = eventually(Duration::from_secs(30), || {
            if let Ok(Some(status)) = tansu.child.try_wait() {
                panic!("tansu exited with {status}:\n{}", tansu.log_text());
            }
            TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        assert!(
            up.is_some(),
            "tansu did not listen within 30 s:\n{}",
            tansu.log_text()
        );
        tansu
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM by PID, then SIGKILL after 10 s.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        if eventually(Duration::from_secs(10), || {
            matches!(self.child.try_wait(), Ok(Some(_)))
        })
        .is_none()
        {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The Python interpreter with the test peers' packages (Apache Avro),
/// installed by `deploy/install-pytools.sh`: `$LAMINA_PYTHON`, else where
/// the script puts it. `None` (the test skips) when missing, unless
/// `LAMINA_REQUIRE_PEERS=1`.
pub fn peer_python() -> Option<PathBuf> {
    let path = std::env::var_os("LAMINA_PYTHON")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .map(|h| PathBuf::from(h).join(".cache/lamina/tools/py-1/bin/python"))
        })?;
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var("LAMINA_REQUIRE_PEERS").as_deref() != Ok("1"),
        "the test peers' Python is not installed at {} (run `bash deploy/install-pytools.sh`)",
        path.display()
    );
    eprintln!(
        "skipped: no test peers' Python at {} (run `bash deploy/install-pytools.sh`, or the README's test command)",
        path.display()
    );
    None
}

/// A test peer script under `tests/peers/`.
pub fn peer_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/peers")
        .join(name)
}

/// The seed of a test's random choices: `LAMINA_E2E_SEED` (to replay a
/// run's choices), else the clock.
pub fn seed() -> u64 {
    std::env::var("LAMINA_E2E_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}
