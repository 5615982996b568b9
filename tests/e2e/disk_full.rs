//! A full disk through the real binary: ingest is refused (503) rather
//! than lost, `/healthz` reports it, and once space returns the server
//! recovers by itself, with every acknowledged record counted exactly once.
//!
//! Needs root to mount a small tmpfs for the state directory; without it
//! the test says so and passes without checking anything (CI runs as
//! root).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Server, WorkDir, count, eventually, free_port, lines_config};

/// A tmpfs of `mib` MiB at `at`, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, mib: u32) -> Option<Tmpfs> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        ok.then(|| Tmpfs(at.to_path_buf()))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Fills the file system of `dir` with a file until a write fails.
fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![7u8; 64 << 10];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.sync_all();
    path
}

#[test]
fn a_full_disk_is_reported_and_the_server_recovers_by_itself_when_space_returns() {
    let dir = WorkDir::new("diskfull");
    let Some(tmpfs) = Tmpfs::mount(&dir.path().join("small"), 48) else {
        eprintln!("skipped: cannot mount a tmpfs here (needs root)");
        return;
    };
    let http = free_port();
    let config = lines_config(
        dir.path(),
        http,
        None,
        &format!(
            "[storage]\nstate_dir = \"{state}\"\nmaster_url = \"file://{master}\"\n\n[speed]\nbatch_interval_ms = 50\nepoch_ms = 60000\nwal_segment_bytes = 1048576",
            state = tmpfs.0.join("state").display(),
            master = dir.path().join("master").display(),
        ),
    );
    let server = Server::start(dir.path(), http, &["--config", config.to_str().unwrap()]);
    let client = server.client();
    let body = "w\n".repeat(2000);
    let mut acknowledged: i64 = 0;
    let ingest = |acknowledged: &mut i64| -> u16 {
        let r = client
            .post("/v1/ingest/lines", body.as_bytes(), &[])
            .unwrap();
        if r.status == 200 {
            *acknowledged += 2000;
        }
        r.status
    };
    for _ in 0..20 {
        assert_eq!(ingest(&mut acknowledged), 200);
    }
    let filler = fill(&tmpfs.0);
    // The disk is full: ingest is refused, never acknowledged and lost.
    let mut refused = None;
    for _ in 0..200 {
        match ingest(&mut acknowledged) {
            200 => {}
            status => {
                refused = Some(status);
                break;
            }
        }
    }
    assert_eq!(refused, Some(503), "{}", server.log_text());
    let unhealthy = eventually(Duration::from_secs(10), || server.get("/healthz").0 == 503);
    assert!(unhealthy.is_some(), "{}", server.log_text());
    let (_, health) = server.get("/healthz");
    assert_eq!(health["status"], "failing", "{health}");
    // Queries still answer.
    assert_eq!(server.get("/v1/views/word_counts/keys/w").0, 200);

    // Space comes back: the server recovers by itself.
    std::fs::remove_file(&filler).unwrap();
    let healthy = eventually(Duration::from_secs(60), || {
        client.get("/healthz").is_ok_and(|r| r.status == 200)
    });
    assert!(healthy.is_some(), "{}", server.log_text());
    assert!(
        server.log_text().contains("restarting to recover"),
        "{}",
        server.log_text()
    );
    assert!(
        eventually(Duration::from_secs(20), || count(
            &server,
            "word_counts",
            "w"
        ) == acknowledged)
        .is_some(),
        "counted {} of {acknowledged} acknowledged\n{}",
        count(&server, "word_counts", "w"),
        server.log_text()
    );
    assert_eq!(ingest(&mut acknowledged), 200);
    assert!(
        eventually(Duration::from_secs(10), || count(
            &server,
            "word_counts",
            "w"
        ) == acknowledged)
        .is_some()
    );
    assert!(server.terminate().success());
    drop(tmpfs);
}
