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

use common::{Server, WorkDir, eventually, free_port, send_tcp};

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

/// A config for served_word_count: the text stream `lines` fed by a TCP
/// listener, no config view, batch runs on demand only.
fn served_config(dir: &std::path::Path, http: u16, tcp: u16) -> PathBuf {
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{http}\"\n\n[speed]\nbatch_interval_ms = 50\nepoch_ms = 1000\n\n\
         [[stream]]\nname = \"lines\"\nformat = \"text\"\n  [[stream.receiver]]\n  type = \"tcp_listen\"\n  listen = \"127.0.0.1:{tcp}\"\n\n\
         [batch]\nschedule = \"off\"\ncompaction_min_files = 2\ncompaction_retention_ms = 0\n"
    );
    let path = dir.join("served.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn key(server: &Server, word: &str) -> serde_json::Value {
    let (status, v) = server.get(&format!("/v1/views/word_counts/keys/{word}"));
    assert_eq!(status, 200, "{v}");
    v
}

fn batch_run(server: &Server) {
    common::batch_run_and_wait(server);
}

#[test]
fn served_word_count_serves_its_rust_view_merged_with_batch_runs_and_exact_after_kill_9() {
    let dir = WorkDir::new("served-word-count");
    let (http, tcp) = (free_port(), free_port());
    let config = served_config(dir.path(), http, tcp);
    let config = config.to_str().unwrap();
    let server = Server::start_command(
        example("served_word_count"),
        dir.path(),
        http,
        &["--config", config],
    );
    let (status, views) = server.get("/v1/views");
    assert_eq!(status, 200);
    assert!(views.to_string().contains("word_counts"), "{views}");

    let lines: Vec<String> = (0..500)
        .map(|i| format!("to be or not to be w{}", i % 7))
        .collect();
    send_tcp(tcp, &lines);
    let ok = eventually(Duration::from_secs(20), || {
        key(&server, "be")["value"] == 1000
    });
    assert!(
        ok.is_some(),
        "{}\n{}",
        key(&server, "be"),
        server.log_text()
    );
    assert_eq!(key(&server, "w3")["value"], 71);

    // The batch layer runs the same program over the master dataset.
    batch_run(&server);
    let be = key(&server, "be");
    assert_eq!(
        (be["value"].as_i64(), be["batch_value"].as_i64()),
        (Some(1000), Some(1000)),
        "{be}"
    );

    // New records on top of the batch view: no gap, no double count.
    send_tcp(tcp, &vec!["be be quick".to_string(); 100]);
    let ok = eventually(Duration::from_secs(20), || {
        key(&server, "be")["value"] == 1200
    });
    assert!(ok.is_some(), "{}", key(&server, "be"));
    assert_eq!(key(&server, "quick")["value"], 100);

    // kill -9 and restart: the same numbers.
    server.kill9();
    let server = Server::start_command(
        example("served_word_count"),
        dir.path(),
        http,
        &["--config", config],
    );
    let be = key(&server, "be");
    assert_eq!(
        (be["value"].as_i64(), be["batch_value"].as_i64()),
        (Some(1200), Some(1000)),
        "{be}"
    );

    // The client subcommands of `lamina` work through the example too.
    let out = example("served_word_count")
        .args(["query", "word_counts", "quick", "--server"])
        .arg(format!("http://127.0.0.1:{http}"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("100"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(server.terminate().success());
}

#[test]
fn served_word_count_refuses_a_config_without_its_stream_naming_it() {
    let dir = WorkDir::new("served-no-stream");
    let http = free_port();
    let path = dir.path().join("nostream.toml");
    std::fs::write(
        &path,
        format!("[server]\nlisten = \"127.0.0.1:{http}\"\n\n[[stream]]\nname = \"events\"\nformat = \"text\"\n\n[batch]\nschedule = \"off\"\n"),
    )
    .unwrap();
    let out = example("served_word_count")
        .arg("--config")
        .arg(&path)
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no stream `lines` is configured (configured: events)"),
        "{err}"
    );
}

/// The windows windowed_word_count printed: per header, the lines under it.
fn collect_windows(child: &mut Child) -> Arc<Mutex<Vec<Vec<String>>>> {
    let windows = Arc::new(Mutex::new(Vec::new()));
    let into = Arc::clone(&windows);
    let out = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            let mut w = into.lock().unwrap();
            if line.starts_with("Time: ") {
                w.push(Vec::new());
            } else if line.starts_with('(')
                && let Some(last) = w.last_mut()
            {
                last.push(line);
            }
        }
    });
    windows
}

#[test]
fn windowed_word_count_counts_over_the_window_and_forgets_what_left_it() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    let mut child = example("windowed_word_count")
        .args([
            "127.0.0.1",
            &port,
            "100",
            "--window-secs",
            "1",
            "--slide-secs",
            "0.5",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let windows = collect_windows(&mut child);
    let _running = Running(child);
    let mut conn = accept(&listener, Duration::from_secs(20));
    conn.write_all(b"alpha beta alpha\n").unwrap();
    let seen = |w: &Vec<String>| {
        let mut w = w.clone();
        w.sort();
        w == vec!["(\"alpha\", 2)".to_string(), "(\"beta\", 1)".to_string()]
    };
    let ok = eventually(Duration::from_secs(20), || {
        windows.lock().unwrap().iter().any(seen)
    });
    assert!(ok.is_some(), "{:?}", windows.lock().unwrap());
    // A second before the words are a full window (1 s) old: later windows
    // no longer count them (the inverse function took them out, and keys at
    // 0 are dropped).
    let first = windows.lock().unwrap().iter().position(seen).unwrap();
    let ok = eventually(Duration::from_secs(20), || {
        let w = windows.lock().unwrap();
        w.len() > first + 3 && w[first + 1..].iter().any(|w| w.is_empty())
    });
    assert!(ok.is_some(), "{:?}", windows.lock().unwrap());
    // Seen in at most two windows (1 s long, sliding by 0.5 s).
    assert!(windows.lock().unwrap().iter().filter(|w| seen(w)).count() <= 2);
}

/// `stateful_word_count ARGS --config CONFIG` run in `dir`.
fn state_command(dir: &std::path::Path, args: &[&str], config: &str) -> std::process::Output {
    example("stateful_word_count")
        .args(args)
        .args(["--config", config])
        .current_dir(dir)
        .output()
        .unwrap()
}

/// Every key of a state view with its value, by a top-k over all keys.
fn state_view(server: &Server, view: &str) -> Option<HashMap<String, i64>> {
    let r = server
        .client()
        .get(&format!("/v1/views/{view}/top?k=10000"))
        .ok()?;
    let v = r.json().ok()?;
    Some(
        v["items"]
            .as_array()?
            .iter()
            .map(|i| {
                (
                    i["key"].as_str().unwrap_or_default().to_owned(),
                    i["value"].as_i64().unwrap_or(-1),
                )
            })
            .collect(),
    )
}

#[test]
fn stateful_word_count_keeps_exact_running_totals_through_kill_9() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let dir = WorkDir::new("stateful-word-count");
    let (http, tcp) = (free_port(), free_port());
    let config = served_config(dir.path(), http, tcp);
    let config = config.to_str().unwrap().to_owned();
    let start = || {
        Server::start_command(
            example("stateful_word_count"),
            dir.path(),
            http,
            &["--config", &config],
        )
    };
    let mut server = start();
    // A producer sends requests of 20 lines of words w0..w39, each until
    // acknowledged; the truth is every request once.
    let stop = Arc::new(AtomicBool::new(false));
    let truth = Arc::new(Mutex::new(HashMap::<String, i64>::new()));
    let producer = {
        let (stop, truth) = (Arc::clone(&stop), Arc::clone(&truth));
        std::thread::spawn(move || {
            let client =
                lamina_serving::client::Client::new(&format!("http://127.0.0.1:{http}"), None)
                    .unwrap()
                    .with_timeout(Duration::from_secs(5));
            let mut rng = 0x2545F4914F6CDD1Du64;
            let mut next = move |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n
            };
            for i in 0..5_000 {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let mut body = String::new();
                let mut words = Vec::new();
                for _ in 0..20 {
                    let line: Vec<String> =
                        (0..1 + next(4)).map(|_| format!("w{}", next(40))).collect();
                    body.push_str(&line.join(" "));
                    body.push('\n');
                    words.extend(line);
                }
                common::ingest_until_acked(&client, "lines", &format!("swc-{i}"), &body);
                let mut t = truth.lock().unwrap();
                for w in words {
                    *t.entry(w).or_default() += 1;
                }
            }
        })
    };
    // Kill -9 at moments spread over the load, restarting at once.
    for kill in 0..4u64 {
        std::thread::sleep(Duration::from_millis(300 + 170 * kill));
        server.kill9();
        server = start();
    }
    std::thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Release);
    producer.join().unwrap();
    let truth = truth.lock().unwrap().clone();
    assert!(
        truth.values().sum::<i64>() > 1_000,
        "too little load: {truth:?}"
    );
    let ok = eventually(Duration::from_secs(30), || {
        state_view(&server, "running_counts").as_ref() == Some(&truth)
    });
    assert!(
        ok.is_some(),
        "running totals differ from the acknowledged input:\n got {:?}\nwant {truth:?}\n{}",
        state_view(&server, "running_counts"),
        server.log_text()
    );
    assert!(
        server.log_text().contains("restored the operator's state"),
        "{}",
        server.log_text()
    );
    // One key, as a user asks.
    let (status, be) = server.get("/v1/views/running_counts/keys/w7");
    assert_eq!(status, 200);
    assert_eq!(be["value"].as_i64(), truth.get("w7").copied(), "{be}");
    assert!(be["updated_ms"].as_i64().is_some(), "{be}");
    let (_, views) = server.get("/v1/views");
    assert_eq!(views["views"][0]["aggregate"], "state", "{views}");
    assert_eq!(views["views"][0]["keys"], truth.len(), "{views}");
    // A batch run compacts the sealed epochs (runs of 2 files and more
    // here), so the rebuild below replays merged files epoch by epoch.
    batch_run(&server);
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join("lamina-data/master/_manifest.json")).unwrap(),
    )
    .unwrap();
    assert!(
        manifest["files"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["segments"].as_array().is_some_and(|s| s.len() > 1)),
        "{manifest}"
    );
    assert!(server.terminate().success());
    // The state is listed, and dropped, with the server stopped.
    let out = state_command(dir.path(), &["state", "list"], &config);
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        listed.contains(&format!("running_counts\t{} keys", truth.len())),
        "{listed}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = state_command(dir.path(), &["state", "drop", "running_counts"], &config);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let server = start();
    assert_eq!(state_view(&server, "running_counts"), Some(HashMap::new()));
    assert!(server.terminate().success());
    // Rebuilt from the records: the sealed epochs of the master dataset,
    // then the log up to the committed position — the totals again.
    let out = state_command(dir.path(), &["state", "rebuild", "running_counts"], &config);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && said.contains(&format!("{} keys", truth.len())),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Both sources took part: sealed epochs and the log after them.
    let count_before = |word: &str| -> u64 {
        said.split(word)
            .next()
            .and_then(|head| head.split_whitespace().last())
            .and_then(|n| n.trim_start_matches('(').parse().ok())
            .unwrap_or(0)
    };
    assert!(count_before(" sealed epochs") > 0, "{said}");
    let server = start();
    assert_eq!(state_view(&server, "running_counts").as_ref(), Some(&truth));
    assert!(server.terminate().success());
    // An unknown operator is named with the ones the program has.
    let out = state_command(dir.path(), &["state", "rebuild", "nope"], &config);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("it has: running_counts"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn channel_receiver_stores_its_readings_durably_and_they_are_counted() {
    let dir = WorkDir::new("channel-receiver");
    let http = free_port();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{http}\"\n\n[speed]\nbatch_interval_ms = 50\n\n\
         [[stream]]\nname = \"readings\"\nformat = \"json\"\n\
         schema = [ {{ name = \"sensor\", type = \"string\" }}, {{ name = \"celsius\", type = \"float64\" }} ]\n\n\
         [[view]]\nname = \"readings_per_sensor\"\nstream = \"readings\"\nkey = {{ column = \"sensor\" }}\naggregate = \"count\"\n\n\
         [batch]\nschedule = \"off\"\n"
    );
    let path = dir.path().join("channel.toml");
    std::fs::write(&path, config).unwrap();
    let mut command = example("channel_receiver");
    command.env("READINGS", "500");
    let server = Server::start_command(
        command,
        dir.path(),
        http,
        &["--config", path.to_str().unwrap()],
    );
    // 500 readings over five sensors: 100 each, once every batch is stored.
    let counted = eventually(Duration::from_secs(30), || {
        (0..5).all(|s| {
            let (status, v) = server.get(&format!("/v1/views/readings_per_sensor/keys/s{s}"));
            status == 200 && v["value"] == 100
        })
    });
    assert!(counted.is_some(), "{}", server.log_text());
    // Each batch was acknowledged only once durable: the gateway printed
    // every one, up to 500.
    assert!(
        server.log_text().contains("stored 500"),
        "{}",
        server.log_text()
    );
    let (_, streams) = server.get("/v1/streams");
    assert_eq!(streams["streams"][0]["records_total"], 500, "{streams}");
    assert!(
        streams["streams"][0]["receivers"]
            .to_string()
            .contains("channel sensor-gateway"),
        "{streams}"
    );
}

#[test]
fn an_app_receiver_for_a_stream_the_config_lacks_stops_the_start_up() {
    let dir = WorkDir::new("channel-receiver-bad");
    let http = free_port();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:{http}\"\n\n[[stream]]\nname = \"lines\"\nformat = \"text\"\n\n[batch]\nschedule = \"off\"\n"
    );
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, config).unwrap();
    let out = example("channel_receiver")
        .args(["--config", path.to_str().unwrap()])
        .current_dir(dir.path())
        .env("READINGS", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("no stream `readings` in the config (streams: lines)"),
        "{text}"
    );
}

#[test]
fn stdin_receiver_counts_the_lines_piped_into_it() {
    let dir = WorkDir::new("stdin-receiver");
    let (http, tcp) = (free_port(), free_port());
    let config = served_config(dir.path(), http, tcp);
    // The same config with the view the example does not define.
    let text = std::fs::read_to_string(&config).unwrap().replace(
        "[batch]",
        "[[view]]\nname = \"word_counts\"\nstream = \"lines\"\nkey = { words = \"line\" }\naggregate = \"count\"\n\n[batch]",
    );
    std::fs::write(&config, text).unwrap();
    let mut server = Server::start_command_with(
        example("stdin_receiver"),
        dir.path(),
        http,
        &["--config", config.to_str().unwrap()],
        Stdio::piped(),
    );
    let mut stdin = server.child.stdin.take().unwrap();
    for i in 0..1000 {
        writeln!(stdin, "to be or not to be w{}", i % 7).unwrap();
    }
    drop(stdin);
    let ok = eventually(Duration::from_secs(20), || {
        key(&server, "be")["value"] == 2000
    });
    assert!(ok.is_some(), "{}", server.log_text());
    let (_, streams) = server.get("/v1/streams");
    assert!(streams.to_string().contains("\"stdin\""), "{streams}");
    assert_eq!(streams["streams"][0]["records_total"], 1000, "{streams}");
}
