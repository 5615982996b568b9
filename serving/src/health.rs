//! What `/healthz` reports, and recovery from storage that failed.
//!
//! Parts of the server report problems here (the write-ahead log failed, a
//! micro-batch cannot commit, sealing fails) and clear them when they are
//! over. `/healthz` answers 200 while there is none and 503 naming each
//! problem otherwise.
//!
//! Storage failures that the process cannot get over in place — a
//! write-ahead log whose write or fsync failed (it fails for good: after a
//! failed fsync the kernel may have dropped the unwritten pages, so the
//! only safe way on is to reopen and recover the log), a state store whose
//! writes keep failing — are recovered by restarting: a watchdog probes the
//! state directory (write, fsync, delete a small file) and, once the probe
//! succeeds (e.g. disk space came back), replaces the process with a fresh
//! start of the same binary and arguments (same pid). The fresh start is a
//! crash recovery: it replays the log, so every acknowledged record is
//! counted exactly once.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::watch;
use tracing::{error, info, warn};

/// A problem being reported.
#[derive(Debug, Clone)]
struct Problem {
    message: String,
    since_us: i64,
    since: Instant,
    /// Whether only a restart can get over it.
    needs_restart: bool,
}

/// The problems of the server's parts.
#[derive(Debug, Default)]
pub struct Health {
    // A std mutex: a map update or copy, never across an `.await`.
    problems: Mutex<BTreeMap<&'static str, Problem>>,
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, Problem>> {
        self.problems.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reports a problem of `part` (replacing its earlier one, keeping the
    /// time it began). `needs_restart`: the part cannot get over it in
    /// place (see the module docs).
    pub fn report(&self, part: &'static str, message: impl Into<String>, needs_restart: bool) {
        let message = message.into();
        let mut problems = self.lock();
        match problems.get_mut(part) {
            Some(p) => {
                p.message = message;
                p.needs_restart |= needs_restart;
            }
            None => {
                problems.insert(
                    part,
                    Problem {
                        message,
                        since_us: now_us(),
                        since: Instant::now(),
                        needs_restart,
                    },
                );
            }
        }
    }

    /// `part` works again.
    pub fn clear(&self, part: &'static str) {
        self.lock().remove(part);
    }

    /// `Ok` when healthy; otherwise the problems as JSON.
    pub fn status(&self) -> Result<(), Value> {
        let problems = self.lock();
        if problems.is_empty() {
            return Ok(());
        }
        Err(json!({
            "status": "failing",
            "problems": problems
                .iter()
                .map(|(part, p)| json!({
                    "component": part,
                    "message": p.message,
                    "since_us": p.since_us,
                }))
                .collect::<Vec<_>>(),
        }))
    }

    /// The longest-standing problem that needs a restart, and for how long.
    fn restart_needed(&self) -> Option<(String, Duration)> {
        self.lock()
            .iter()
            .filter(|(_, p)| p.needs_restart)
            .map(|(part, p)| (format!("{part}: {}", p.message), p.since.elapsed()))
            .max_by_key(|(_, d)| *d)
    }
}

/// How often the watchdog looks.
const PROBE_EVERY: Duration = Duration::from_secs(1);
/// How long a restart-needing problem must last before the watchdog acts
/// (a micro-batch that failed once may well succeed at the next tick).
const GRACE: Duration = Duration::from_secs(3);
/// Bytes the probe writes: enough that a nearly full disk fails it.
const PROBE_BYTES: usize = 4 << 20;

/// Whether `dir` takes a write and an fsync again.
fn probe(dir: &std::path::Path) -> std::io::Result<()> {
    use std::io::Write;
    let path = dir.join(".lamina-probe");
    let result = (|| {
        let mut f = std::fs::File::create(&path)?;
        f.write_all(&vec![0u8; PROBE_BYTES])?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&path);
    result
}

/// Watches for problems that need a restart; once the state directory is
/// writable again, restarts the process in place (see the module docs).
pub async fn watchdog(
    health: std::sync::Arc<Health>,
    wal: lamina_speed::wal::Wal,
    state_dir: PathBuf,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last_log = Instant::now() - Duration::from_secs(60);
    loop {
        tokio::select! {
            () = tokio::time::sleep(PROBE_EVERY) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        if let Some(failure) = wal.failure() {
            health.report("write_ahead_log", failure, true);
        }
        let Some((what, lasting)) = health.restart_needed() else {
            continue;
        };
        if lasting < GRACE {
            continue;
        }
        let dir = state_dir.clone();
        match tokio::task::spawn_blocking(move || probe(&dir)).await {
            Ok(Ok(())) => {
                warn!(
                    "storage is writable again after `{what}`; restarting to recover (the log is replayed: nothing acknowledged is lost or counted twice)"
                );
                restart();
            }
            Ok(Err(e)) => {
                if last_log.elapsed() > Duration::from_secs(30) {
                    last_log = Instant::now();
                    error!(
                        "{what}; the state directory {} still fails a write ({e}); the server recovers by itself once it does",
                        state_dir.display()
                    );
                }
            }
            Err(e) => warn!("storage probe: {e}"),
        }
    }
}

/// Replaces this process with a fresh start of the same binary and
/// arguments. Returns only if that fails (logged; the server goes on
/// reporting the problem).
fn restart() {
    use std::os::unix::process::CommandExt;
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            error!("cannot restart: the binary's path is unknown ({e})");
            return;
        }
    };
    info!(exe = %exe.display(), "restarting");
    let err = std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .exec();
    error!("cannot restart: {err}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_are_reported_until_cleared() {
        let h = Health::default();
        assert!(h.status().is_ok());
        h.report("wal", "No space left on device", true);
        h.report("micro_batches", "commit failed", false);
        let v = h.status().unwrap_err();
        assert_eq!(v["status"], "failing");
        assert_eq!(v["problems"].as_array().unwrap().len(), 2);
        assert!(h.restart_needed().unwrap().0.contains("wal"));
        h.clear("wal");
        assert!(h.restart_needed().is_none());
        h.clear("micro_batches");
        assert!(h.status().is_ok());
    }
}
