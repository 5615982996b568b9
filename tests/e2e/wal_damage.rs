//! A damaged write-ahead log, through the real binary.
//!
//! Acknowledged HTTP ingest requests (50 records each, one log entry
//! each), `kill -9` before any micro-batch ran, then one byte flipped in
//! the middle of the newest segment. The server must refuse to start,
//! naming the segment and the offset of the damaged entry and the command
//! to run, and change no file; `lamina wal check` must report the damage
//! (exit 1); `lamina wal salvage` must keep every intact entry; after it
//! the server starts and counts every acknowledged record outside the
//! damaged entry exactly once (and none of the damaged one's).

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::{Server, WorkDir, count, free_port, lamina, lines_config, serve_expecting_exit};

const REQUESTS: usize = 320;
const RECORDS_PER_REQUEST: usize = 50;
const WORDS_PER_LINE: usize = 25;
const WORDS: usize = 40;

/// One long interval: no micro-batch runs between the start and the kill,
/// so every record is replayed from the log at the next start.
fn write_config(dir: &Path, http: u16) -> std::path::PathBuf {
    lines_config(
        dir,
        http,
        None,
        "[speed]\nbatch_interval_ms = 60000\nepoch_ms = 86400000\nwal_segment_bytes = 1048576",
    )
}

/// Every file under `dir`, recursively, by relative path.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let e = e.unwrap();
            let p = e.path();
            if e.file_type().unwrap().is_dir() {
                stack.push(p);
            } else {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.insert(rel, std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn line(r: usize, i: usize) -> String {
    (0..WORDS_PER_LINE)
        .map(|j| format!("w{}", (r * 31 + i * 7 + j * 3) % WORDS))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Runs `lamina args...` in `dir`; returns (exit code, stdout + stderr).
fn run(dir: &Path, args: &[&str]) -> (i32, String) {
    let out = lamina()
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

#[test]
fn flipped_byte_in_the_newest_segment_refuses_start_then_salvage_recovers_the_rest() {
    let work = WorkDir::new("wal-damage");
    let dir = work.path();
    let http = free_port();
    let config = write_config(dir, http);
    let config_arg = config.to_str().unwrap();

    // Ingest; every request is acknowledged (200) before the next.
    let server = Server::start(dir, http, &["--config", config_arg]);
    let client = server.client();
    let mut bodies = Vec::new();
    for r in 0..REQUESTS {
        let body: String = (0..RECORDS_PER_REQUEST)
            .map(|i| line(r, i) + "\n")
            .collect();
        let resp = client
            .post("/v1/ingest/lines", body.as_bytes(), &[])
            .unwrap();
        assert_eq!(resp.status, 200, "{}", String::from_utf8_lossy(&resp.body));
        bodies.push(body);
    }
    server.kill9();

    // Flip a byte in the middle of the newest segment.
    let wal = dir.join("lamina-data/state/wal");
    let mut segments: Vec<String> = std::fs::read_dir(&wal)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".wal"))
        .collect();
    segments.sort();
    assert!(segments.len() >= 2, "want several segments: {segments:?}");
    let newest = segments.last().unwrap().clone();
    let path = wal.join(&newest);
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    // The entry holding that byte, by walking the framing.
    let mut entry = 0;
    loop {
        let len = 8 + u32::from_le_bytes(bytes[entry..entry + 4].try_into().unwrap()) as usize;
        if entry + len > middle {
            break;
        }
        entry += len;
    }
    assert!(entry + 8 + 4 < bytes.len(), "the entry is not the last one");
    let first_seq = u64::from_le_bytes(bytes[entry + 8..entry + 16].try_into().unwrap());
    let records = u32::from_le_bytes(bytes[entry + 16..entry + 20].try_into().unwrap()) as usize;
    assert_eq!(records, RECORDS_PER_REQUEST);
    assert_eq!(first_seq as usize % RECORDS_PER_REQUEST, 0);
    let damaged_request = first_seq as usize / RECORDS_PER_REQUEST;
    bytes[middle] ^= 0x20;
    std::fs::write(&path, &bytes).unwrap();
    let before = snapshot(&wal);
    let data = dir.join("lamina-data");
    let data_before = snapshot(&data);

    // The server refuses to start, naming the segment and the offset.
    let (status, text) = serve_expecting_exit(dir, Path::new(config_arg), Duration::from_secs(30));
    assert!(!status.success(), "{text}");
    assert!(text.contains(&newest), "{text}");
    assert!(text.contains(&format!("byte {entry}")), "{text}");
    assert!(text.contains("lamina wal salvage"), "{text}");
    assert_eq!(snapshot(&wal), before, "the refused start changed files");
    assert_eq!(
        snapshot(&data),
        data_before,
        "the refused start changed files"
    );

    // `wal check` reports it, exit 1, and changes nothing.
    let (code, text) = run(dir, &["wal", "check", "--config", config_arg]);
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(&newest) && text.contains(&format!("{entry}")),
        "{text}"
    );
    assert_eq!(snapshot(&wal), before, "check changed files");

    // `wal salvage` keeps every intact entry and names what was lost.
    let (code, text) = run(dir, &["wal", "salvage", "--config", config_arg]);
    assert_eq!(code, 0, "{text}");
    let lost = format!("{}..{}", first_seq, first_seq + records as u64);
    assert!(text.contains(&lost), "{text}");
    let (code, text) = run(dir, &["wal", "check", "--config", config_arg]);
    assert_eq!(code, 0, "{text}");

    // Every acknowledged record outside the damaged entry, exactly once.
    let mut truth: BTreeMap<String, i64> = BTreeMap::new();
    for (r, body) in bodies.iter().enumerate() {
        if r == damaged_request {
            continue;
        }
        for w in body.split_whitespace() {
            *truth.entry(w.to_string()).or_default() += 1;
        }
    }
    let server = Server::start(dir, http, &["--config", config_arg]);
    for w in 0..WORDS {
        let word = format!("w{w}");
        assert_eq!(
            count(&server, "word_counts", &word),
            truth.get(&word).copied().unwrap_or(0),
            "{word}"
        );
    }
    assert!(server.log_text().contains("lost to write-ahead log damage"));
    // (Not SIGTERM: the micro-batch thread would finish its 60 s interval.)
    server.kill9();
}
