//! The newcomer's path, through the real binary with no configuration: the
//! embedded defaults (REST on 127.0.0.1:8080, lines on 127.0.0.1:9999).

mod common;

use std::time::Duration;

use common::{Server, WorkDir, count, eventually, lamina, send_tcp};

#[test]
fn serve_with_no_config_counts_words_folds_them_into_a_batch_and_stops_cleanly() {
    let dir = WorkDir::new("newcomer");
    let server = Server::start(dir.path(), 8080, &[]);
    let lines: Vec<String> = (0..100)
        .map(|i| format!("the quick brown fox {i}"))
        .collect();
    send_tcp(9999, &lines);
    let seen = eventually(Duration::from_secs(5), || {
        count(&server, "word_counts", "the") == 100
    });
    let took = seen.expect("lines sent to 9999 show up in word_counts");
    assert!(
        took < Duration::from_secs(1),
        "visible after {took:?}, expected within a second"
    );
    assert_eq!(count(&server, "word_counts", "fox"), 100);
    assert_eq!(count(&server, "word_counts", "7"), 1);

    // `lamina top` as a client.
    let top = lamina()
        .args(["top", "word_counts", "-k", "2"])
        .output()
        .unwrap();
    assert!(
        top.status.success(),
        "{}",
        String::from_utf8_lossy(&top.stderr)
    );
    let top = String::from_utf8(top.stdout).unwrap();
    assert_eq!(top.lines().count(), 2, "{top}");
    assert!(top.contains("100"), "{top}");

    // `lamina batch run` folds everything so far into a generation; every
    // merged count stays the same.
    let run = lamina().args(["batch", "run", "--wait"]).output().unwrap();
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let said = String::from_utf8_lossy(&run.stdout);
    assert!(
        said.contains("succeeded in") && said.contains("word_counts") && said.contains(" ms"),
        "the summary names each view's time: {said}"
    );
    let (_, the) = server.get("/v1/views/word_counts/keys/the");
    assert_eq!(the["batch_value"], 100, "{the}");
    assert_eq!(the["value"], 100);
    assert!(the["realtime_value"].is_null(), "{the}");

    // More lines on top are counted once.
    send_tcp(9999, &["the end".to_string()]);
    eventually(Duration::from_secs(5), || {
        count(&server, "word_counts", "the") == 101
    })
    .expect("counted once more");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(count(&server, "word_counts", "the"), 101);
    let (_, the) = server.get("/v1/views/word_counts/keys/the");
    assert_eq!(
        (the["batch_value"].as_i64(), the["realtime_value"].as_i64()),
        (Some(100), Some(1))
    );

    let status = server.terminate();
    assert!(status.success(), "SIGTERM exits 0, got {status}");
    assert!(
        dir.path()
            .join("lamina-data/master/_manifest.json")
            .exists()
    );
}
