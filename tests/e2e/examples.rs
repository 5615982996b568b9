//! The examples run as written, against a real socket.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::eventually;

/// An example binary. `cargo test` builds the examples next to the test
/// binaries; when only this test was asked for (`--test e2e_examples`) it
/// is built here, with the same profile.
fn example(name: &str) -> Command {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>/examples/<name>
    let path: PathBuf = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("examples").join(name))
        .unwrap();
    if !path.exists() {
        static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let _one = BUILD.lock().unwrap_or_else(|p| p.into_inner());
        if !path.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
            let mut build = Command::new(cargo);
            build.args(["build", "-p", "lamina-serving", "--example", name]);
            if !cfg!(debug_assertions) {
                build.arg("--release");
            }
            let status = build.status().unwrap();
            assert!(status.success(), "building example {name} failed");
        }
    }
    assert!(path.exists(), "{} is not built", path.display());
    Command::new(path)
}

/// Kills the child by its PID on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Accepts one connection within `limit`.
fn accept(listener: &TcpListener, limit: Duration) -> TcpStream {
    listener.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + limit;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false).unwrap();
                return s;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "the example did not connect within {limit:?}"
                );
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("accept: {e}"),
        }
    }
}

/// Word counts summed over every batch the example printed so far, and the
/// number of batch headers.
#[derive(Default)]
struct Printed {
    totals: HashMap<String, i64>,
    headers: usize,
    text: String,
}

fn collect_stdout(child: &mut Child) -> Arc<Mutex<Printed>> {
    let printed = Arc::new(Mutex::new(Printed::default()));
    let into = Arc::clone(&printed);
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let mut p = into.lock().unwrap();
            p.text.push_str(&line);
            p.text.push('\n');
            if line.starts_with("Time: ") {
                p.headers += 1;
            }
            // ("word", 3)
            if let Some((word, n)) = line
                .strip_prefix("(\"")
                .and_then(|l| l.strip_suffix(')'))
                .and_then(|body| body.rsplit_once("\", "))
            {
                *p.totals.entry(word.to_owned()).or_insert(0) += n.parse::<i64>().unwrap();
            }
        }
    });
    printed
}

#[test]
fn network_word_count_counts_the_words_of_each_batch_and_reconnects() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let (tx, stderr_rx) = mpsc::channel::<String>();
    let mut child = example("network_word_count")
        .args(["127.0.0.1", &port, "100", "--stats"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let printed = collect_stdout(&mut child);
    let _running = Running(child);

    let mut conn = accept(&listener, Duration::from_secs(20));
    conn.write_all(b"to be or not to be\nbe quick\n").unwrap();
    let want: HashMap<String, i64> = [("to", 2), ("be", 3), ("or", 1), ("not", 1), ("quick", 1)]
        .into_iter()
        .map(|(w, n)| (w.to_owned(), n))
        .collect();
    let ok = eventually(Duration::from_secs(20), || {
        printed.lock().unwrap().totals == want
    });
    assert!(ok.is_some(), "printed:\n{}", printed.lock().unwrap().text);
    // A batch per interval, also when nothing arrives.
    let headers = printed.lock().unwrap().headers;
    assert!(
        eventually(Duration::from_secs(10), || printed.lock().unwrap().headers
            >= headers + 3)
        .is_some(),
        "empty batches print their header too"
    );

    // The server closes the connection: the receiver connects again and
    // takes the new lines.
    drop(conn);
    let mut again = accept(&listener, Duration::from_secs(20));
    let lines: String = (0..1000)
        .map(|i| {
            if i % 2 == 0 {
                "common\n"
            } else {
                "common extra\n"
            }
        })
        .collect();
    again.write_all(lines.as_bytes()).unwrap();
    let ok = eventually(Duration::from_secs(20), || {
        let p = printed.lock().unwrap();
        p.totals.get("common") == Some(&1000) && p.totals.get("extra") == Some(&500)
    });
    assert!(ok.is_some(), "printed:\n{}", printed.lock().unwrap().text);
    let stats: Vec<String> = stderr_rx.try_iter().collect();
    assert!(
        stats.iter().any(|l| l.contains(" records in ")),
        "--stats prints a line per batch: {stats:?}"
    );
}

#[test]
fn network_word_count_explains_bad_arguments() {
    let out = example("network_word_count")
        .arg("localhost")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("usage: network_word_count HOST PORT"));
    let out = example("network_word_count")
        .args(["localhost", "99999"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("PORT must be a number"));
}
