//! The `files` receiver through the real binary: files renamed into a
//! directory are read once, exactly — also when the server is killed in the
//! middle of a large file — and their name and offset are columns.

mod common;

use std::time::Duration;

use common::{Server, WorkDir, count, eventually, free_port};

#[test]
fn new_files_are_read_once_exactly_through_kill_9() {
    let dir = WorkDir::new("files");
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let http = free_port();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{http}"

[speed]
batch_interval_ms = 50
# Small batches: a large file takes many micro-batches, so the kill below
# lands in the middle of one.
max_batch_records = 2000

[[stream]]
name = "lines"
format = "text"
  [[stream.receiver]]
  type = "files"
  path = "file://{}"
  glob = "*.txt"
  poll_interval_ms = 50

[[view]]
name = "word_counts"
stream = "lines"
key = {{ words = "line" }}
aggregate = "count"

[[view]]
name = "per_file"
stream = "lines"
key = {{ column = "_source" }}
aggregate = "count"

[batch]
schedule = "off"
"#,
        inbox.display()
    );
    let path = dir.path().join("lamina.toml");
    std::fs::write(&path, config).unwrap();
    let args = ["--config", path.to_str().unwrap()];
    let server = Server::start(dir.path(), http, &args);

    // Written elsewhere, renamed in: never seen half-written.
    let write = |name: &str, lines: usize, word: &str| {
        let tmp = inbox.join(format!(".{name}"));
        let body: String = (0..lines)
            .map(|i| format!("{word} n{}\n", i % 10))
            .collect();
        std::fs::write(&tmp, body).unwrap();
        std::fs::rename(&tmp, inbox.join(name)).unwrap();
    };
    write("a.txt", 100, "alpha");
    write("skip.csv", 50, "skipped");
    std::fs::write(inbox.join(".half.txt"), "hidden\n").unwrap();
    assert!(
        eventually(Duration::from_secs(20), || count(
            &server,
            "word_counts",
            "alpha"
        ) == 100)
        .is_some()
    );
    // A large file; killed while it is being taken in.
    write("big.txt", 200_000, "beta");
    assert!(
        eventually(Duration::from_secs(30), || count(
            &server,
            "word_counts",
            "beta"
        ) > 0)
        .is_some()
    );
    server.kill9();
    let server = Server::start(dir.path(), http, &args);
    write("c.txt", 10, "gamma");
    let exact = eventually(Duration::from_secs(60), || {
        count(&server, "word_counts", "beta") == 200_000
            && count(&server, "word_counts", "gamma") == 10
    });
    assert!(
        exact.is_some(),
        "beta {} gamma {}\n{}",
        count(&server, "word_counts", "beta"),
        count(&server, "word_counts", "gamma"),
        server.log_text()
    );
    assert_eq!(count(&server, "word_counts", "alpha"), 100);
    assert_eq!(count(&server, "word_counts", "skipped"), 0);
    assert_eq!(count(&server, "word_counts", "hidden"), 0);
    assert_eq!(count(&server, "per_file", "file:big.txt"), 200_000);
    // Nothing is read twice after a clean restart either.
    assert!(server.terminate().success());
    let server = Server::start(dir.path(), http, &args);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(count(&server, "word_counts", "beta"), 200_000);
    let (_, streams) = server.get("/v1/streams");
    assert_eq!(streams["streams"][0]["records_total"], 200_110, "{streams}");
}
