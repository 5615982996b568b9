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

#[test]
fn parquet_files_written_by_pyarrow_are_read_as_rows() {
    let Some(python) = common::peer_python() else {
        return;
    };
    let dir = WorkDir::new("files-parquet");
    let inbox = dir.path().join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let http = free_port();
    let config = format!(
        r#"
[server]
listen = "127.0.0.1:{http}"

[speed]
batch_interval_ms = 50

[[stream]]
name = "sales"
format = "json"
schema = [ {{ name = "shop", type = "string" }}, {{ name = "amount", type = "int64", nullable = true }}, {{ name = "at", type = "timestamp" }} ]
  [[stream.receiver]]
  type = "files"
  path = "{}"
  poll_interval_ms = 50

[[view]]
name = "amount_by_shop"
stream = "sales"
key = {{ column = "shop" }}
aggregate = "sum"
column = "amount"

[batch]
schedule = "off"
"#,
        inbox.display()
    );
    let path = dir.path().join("lamina.toml");
    std::fs::write(&path, config).unwrap();
    let server = Server::start(dir.path(), http, &["--config", path.to_str().unwrap()]);
    // 50,000 rows in several row groups, dictionary-encoded shop names, a
    // null, snappy; written under a dot name and renamed in.
    let script = format!(
        r#"
import os, pyarrow as pa, pyarrow.parquet as pq
n = 50000
shops = [f"shop{{i % 7}}" for i in range(n)]
amounts = [None if i == 3 else i % 100 for i in range(n)]
at = pa.array([1764547200000 + i for i in range(n)], type=pa.timestamp("ms", tz="UTC"))
t = pa.table({{"shop": pa.array(shops).dictionary_encode(), "amount": pa.array(amounts, type=pa.int64()), "at": at}})
tmp = os.path.join({inbox:?}, ".sales.parquet")
pq.write_table(t, tmp, row_group_size=8192, compression="snappy")
os.rename(tmp, os.path.join({inbox:?}, "sales.parquet"))
"#,
        inbox = inbox.display().to_string()
    );
    let out = std::process::Command::new(python)
        .args(["-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Expected sums per shop, as the script computes them.
    let mut expected = [0i64; 7];
    for i in 0..50_000i64 {
        if i != 3 {
            expected[(i % 7) as usize] += i % 100;
        }
    }
    let exact = eventually(Duration::from_secs(30), || {
        (0..7).all(|s| count(&server, "amount_by_shop", &format!("shop{s}")) == expected[s])
    });
    assert!(exact.is_some(), "{}", server.log_text());
    let (_, streams) = server.get("/v1/streams");
    assert_eq!(streams["streams"][0]["records_total"], 50_000, "{streams}");
    assert_eq!(streams["streams"][0]["dead_letters_total"], 0, "{streams}");
}
