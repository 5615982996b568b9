//! A real S3-compatible server for tests: s3s-fs (installed by
//! `deploy/install-s3s.sh`; it checks request signatures and keeps objects
//! as files under its root directory, one directory per bucket), started on
//! a free loopback port and stopped by its PID on drop.
//!
//! Included with `#[path]` by the tests that need it.

#![allow(dead_code)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The credentials every test server is started with.
pub const ACCESS_KEY: &str = "lamina-test";
pub const SECRET_KEY: &str = "lamina-test-secret";

pub struct S3Server {
    child: Child,
    pub port: u16,
    /// Objects of bucket `b` live under `root/b/`.
    pub root: PathBuf,
    log: PathBuf,
}

impl S3Server {
    /// The server binary: `$LAMINA_S3S`, else where the install script puts
    /// it. `None` when it is not installed — unless `LAMINA_REQUIRE_PEERS=1`
    /// (the README's test command sets it), which makes a missing server a
    /// failure rather than a skipped test.
    pub fn binary() -> Option<PathBuf> {
        let path = std::env::var_os("LAMINA_S3S")
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .map(|h| PathBuf::from(h).join(".cache/lamina/tools/s3s-fs-0.14.1/bin/s3s-fs"))
            })?;
        if path.is_file() {
            return Some(path);
        }
        assert!(
            std::env::var("LAMINA_REQUIRE_PEERS").as_deref() != Ok("1"),
            "the S3 server is not installed at {} (run `bash deploy/install-s3s.sh`)",
            path.display()
        );
        eprintln!(
            "skipped: no S3 server at {} (run `bash deploy/install-s3s.sh`, or the README's test command)",
            path.display()
        );
        None
    }

    /// Starts a server keeping its objects under `root` (created); waits
    /// until it accepts connections (at most 30 s).
    pub fn start(binary: &Path, root: &Path) -> S3Server {
        static RUN: AtomicU64 = AtomicU64::new(0);
        std::fs::create_dir_all(root).unwrap();
        let log = std::env::temp_dir().join(format!(
            "lamina-s3s-{}-{}.log",
            std::process::id(),
            RUN.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::File::create(&log).unwrap();
        let port = free_port();
        let mut server = S3Server {
            child: spawn(binary, port, root, &log),
            port,
            root: root.to_owned(),
            log,
        };
        server.wait_listening();
        server
    }

    /// Waits (at most 30 s) until the server accepts connections.
    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("s3s-fs exited with {status}:\n{}", self.log_text());
            }
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "s3s-fs did not listen within 30 s:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Creates bucket `name` (a directory under the root).
    pub fn create_bucket(&self, name: &str) {
        std::fs::create_dir_all(self.root.join(name)).unwrap();
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Store options reaching this server.
    pub fn store_options(&self) -> lamina::master::StoreOptions {
        let mut options = lamina::master::StoreOptions::default();
        options.s3.endpoint = Some(self.endpoint());
        options.s3.region = Some("us-east-1".into());
        options.s3.access_key_id = Some(ACCESS_KEY.into());
        options.s3.secret_access_key = Some(SECRET_KEY.into());
        options.s3.allow_http = Some(true);
        options
    }

    /// `[storage.s3]` lines reaching this server.
    pub fn toml(&self) -> String {
        format!(
            "[storage.s3]\nendpoint = \"{}\"\nregion = \"us-east-1\"\naccess_key_id = \"{ACCESS_KEY}\"\nsecret_access_key = \"{SECRET_KEY}\"\nallow_http = true\n",
            self.endpoint()
        )
    }

    /// The `AWS_*` variables reaching this server.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ACCESS_KEY_ID", ACCESS_KEY.into()),
            ("AWS_SECRET_ACCESS_KEY", SECRET_KEY.into()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL by PID (s3s-fs keeps nothing in memory: its objects are
    /// files), then reap.
    pub fn stop(&mut self) {
        if matches!(self.child.try_wait(), Ok(Some(_))) {
            return;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Stops it and starts it again on the same port and root (an S3
    /// outage); waits until it listens.
    pub fn restart(&mut self, binary: &Path) {
        self.stop();
        self.child = spawn(binary, self.port, &self.root, &self.log);
        self.wait_listening();
    }
}

/// Starts s3s-fs on `port` over `root`, appending its output to `log`.
fn spawn(binary: &Path, port: u16, root: &Path, log: &Path) -> Child {
    let out = std::fs::OpenOptions::new().append(true).open(log).unwrap();
    Command::new(binary)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
        .arg(root)
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .expect("s3s-fs starts")
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind(("127.0.0.1", 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
