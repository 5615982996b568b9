//! The batch-run registry: one run at a time, at most one waiting, and a
//! bounded history of what each run did.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, watch};

use lamina::metrics::{Histogram, RUN_BUCKETS};

use crate::compact::CompactionReport;
use crate::progress::{Progress, RunProgress};
use crate::run::GenerationStats;

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// Waiting for the running one to finish.
    Queued,
    /// Computing.
    Running,
    /// Published its generation (or found nothing sealed to compute).
    Succeeded,
    /// Failed; the previous generation keeps serving.
    Failed,
    /// Cancelled before it published; the previous generation keeps serving.
    Cancelled,
}

impl RunState {
    /// Whether the run is over.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            RunState::Succeeded | RunState::Failed | RunState::Cancelled
        )
    }
}

/// One batch run, as the REST API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunRecord {
    /// Unique, increasing.
    pub id: u64,
    /// Current state.
    pub state: RunState,
    /// `schedule` or `api`.
    pub trigger: String,
    /// When it was requested (microseconds since the epoch).
    pub requested_at_us: i64,
    /// When it started computing.
    pub started_at_us: Option<i64>,
    /// When it ended.
    pub finished_at_us: Option<i64>,
    /// The generation it computed: every epoch `<=` this.
    pub epoch: Option<u64>,
    /// What it read.
    #[serde(flatten)]
    pub stats: GenerationStats,
    /// Keys in the generation, all views together.
    pub keys: u64,
    /// Why it failed or was cancelled.
    pub error: Option<String>,
    /// While it runs: what it has read of what it will read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// What compaction did after the generation was published (a
    /// succeeded run of a server that writes the master dataset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compaction: Option<CompactionReport>,
}

/// How a run ended, reported by the worker.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Published generation `epoch` (or nothing was sealed: `None`).
    Published {
        /// The generation.
        epoch: Option<u64>,
        /// What was read.
        stats: GenerationStats,
        /// Keys published.
        keys: u64,
    },
    /// Failed with this error.
    Failed(String),
    /// Stopped by a cancel request.
    Cancelled,
}

struct Inner {
    next_id: u64,
    history_limit: usize,
    /// Oldest first; includes the queued and running runs.
    runs: VecDeque<RunRecord>,
    running: Option<(u64, watch::Sender<bool>, Arc<RunProgress>)>,
}

/// The registry. Shared by the REST handlers (request, cancel, list) and
/// the worker that runs batch jobs ([`next`](Self::next),
/// [`finish`](Self::finish)).
pub struct BatchRuns {
    // A std mutex: sections are small bookkeeping, never across `.await`.
    inner: Mutex<Inner>,
    wake: Notify,
    /// How long finished runs took, from start to end, by final state
    /// (succeeded, failed, cancelled), since this process started.
    durations: [Histogram; 3],
}

impl std::fmt::Debug for BatchRuns {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BatchRuns").finish_non_exhaustive()
    }
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

impl BatchRuns {
    /// A registry keeping `history_limit` finished runs, continuing from
    /// `restored` (the history saved before a restart). Runs that were
    /// queued or running when the process stopped are marked failed.
    pub fn new(history_limit: usize, restored: Vec<RunRecord>) -> Self {
        let mut runs: VecDeque<RunRecord> = restored.into();
        for r in runs.iter_mut().filter(|r| !r.state.is_final()) {
            r.state = RunState::Failed;
            r.finished_at_us = Some(now_us());
            r.error = Some("interrupted: the server stopped during the run".into());
        }
        let next_id = runs.iter().map(|r| r.id + 1).max().unwrap_or(1);
        BatchRuns {
            inner: Mutex::new(Inner {
                next_id,
                history_limit: history_limit.max(1),
                runs,
                running: None,
            }),
            wake: Notify::new(),
            durations: std::array::from_fn(|_| Histogram::new(RUN_BUCKETS)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Asks for a run. If one is already waiting it is returned instead, so
    /// a burst of requests (or a schedule firing during a long run) makes one
    /// run, not a backlog.
    pub fn request(&self, trigger: &str) -> RunRecord {
        let mut inner = self.lock();
        if let Some(waiting) = inner.runs.iter().find(|r| r.state == RunState::Queued) {
            return waiting.clone();
        }
        let record = RunRecord {
            id: inner.next_id,
            state: RunState::Queued,
            trigger: trigger.to_owned(),
            requested_at_us: now_us(),
            started_at_us: None,
            finished_at_us: None,
            epoch: None,
            stats: GenerationStats::default(),
            keys: 0,
            error: None,
            progress: None,
            compaction: None,
        };
        inner.next_id += 1;
        inner.runs.push_back(record.clone());
        Self::trim(&mut inner);
        drop(inner);
        self.wake.notify_one();
        record
    }

    /// Cancels a queued or running run; `None` if there is no such run.
    /// A running run stops at its next opportunity and is marked cancelled
    /// by the worker; a finished run is returned unchanged.
    pub fn cancel(&self, id: u64) -> Option<RunRecord> {
        let mut inner = self.lock();
        if let Some((running, tx, _)) = &inner.running
            && *running == id
        {
            let _ = tx.send(true);
        }
        let record = inner.runs.iter_mut().find(|r| r.id == id)?;
        if record.state == RunState::Queued {
            record.state = RunState::Cancelled;
            record.finished_at_us = Some(now_us());
            record.error = Some("cancelled before it started".into());
        }
        let record = record.clone();
        Self::trim(&mut inner);
        Some(record)
    }

    /// One run (with its progress while it runs).
    pub fn get(&self, id: u64) -> Option<RunRecord> {
        let inner = self.lock();
        let record = inner.runs.iter().find(|r| r.id == id)?;
        Some(Self::with_progress(&inner, record))
    }

    /// All runs in the history, newest first.
    pub fn list(&self) -> Vec<RunRecord> {
        let inner = self.lock();
        inner
            .runs
            .iter()
            .rev()
            .map(|r| Self::with_progress(&inner, r))
            .collect()
    }

    fn with_progress(inner: &Inner, record: &RunRecord) -> RunRecord {
        let mut record = record.clone();
        if let Some((id, _, progress)) = &inner.running
            && *id == record.id
            && record.state == RunState::Running
        {
            record.progress = Some(progress.snapshot());
        }
        record
    }

    /// Worker side: waits for a queued run, marks it running and returns it
    /// with the signal that turns true when it is cancelled and the
    /// counters its progress is read from.
    pub async fn next(&self) -> (RunRecord, watch::Receiver<bool>, Arc<RunProgress>) {
        loop {
            let notified = self.wake.notified();
            {
                let mut inner = self.lock();
                if let Some(idx) = inner.runs.iter().position(|r| r.state == RunState::Queued) {
                    let (tx, rx) = watch::channel(false);
                    let record = &mut inner.runs[idx];
                    record.state = RunState::Running;
                    record.started_at_us = Some(now_us());
                    let record = record.clone();
                    let progress = RunProgress::new();
                    inner.running = Some((record.id, tx, Arc::clone(&progress)));
                    return (record, rx, progress);
                }
            }
            notified.await;
        }
    }

    /// How long finished runs took (seconds), by final state:
    /// `[("succeeded", …), ("failed", …), ("cancelled", …)]`.
    pub fn durations(&self) -> [(&'static str, &Histogram); 3] {
        [
            ("succeeded", &self.durations[0]),
            ("failed", &self.durations[1]),
            ("cancelled", &self.durations[2]),
        ]
    }

    /// Worker side: records what compaction did in run `id`, before it
    /// is [finished](Self::finish).
    pub fn set_compaction(&self, id: u64, report: CompactionReport) {
        if let Some(record) = self.lock().runs.iter_mut().find(|r| r.id == id) {
            record.compaction = Some(report);
        }
    }

    /// Worker side: records how run `id` ended.
    pub fn finish(&self, id: u64, outcome: Outcome) -> Option<RunRecord> {
        let mut inner = self.lock();
        if inner.running.as_ref().is_some_and(|(r, _, _)| *r == id) {
            inner.running = None;
        }
        let record = inner.runs.iter_mut().find(|r| r.id == id)?;
        record.finished_at_us = Some(now_us());
        match outcome {
            Outcome::Published { epoch, stats, keys } => {
                record.state = RunState::Succeeded;
                record.epoch = epoch;
                record.stats = stats;
                record.keys = keys;
            }
            Outcome::Failed(e) => {
                record.state = RunState::Failed;
                record.error = Some(e);
            }
            Outcome::Cancelled => {
                record.state = RunState::Cancelled;
                record.error = Some("cancelled".into());
            }
        }
        let record = record.clone();
        Self::trim(&mut inner);
        drop(inner);
        if let Some(started) = record.started_at_us {
            let state = match record.state {
                RunState::Succeeded => 0,
                RunState::Failed => 1,
                _ => 2,
            };
            let took = record.finished_at_us.unwrap_or(started) - started;
            self.durations[state].observe(took as f64 / 1e6);
        }
        Some(record)
    }

    fn trim(inner: &mut Inner) {
        let limit = inner.history_limit;
        while inner.runs.iter().filter(|r| r.state.is_final()).count() > limit {
            let Some(oldest) = inner.runs.iter().position(|r| r.state.is_final()) else {
                break;
            };
            inner.runs.remove(oldest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_waiting_run_absorbs_repeated_requests() {
        let runs = BatchRuns::new(10, vec![]);
        let a = runs.request("api");
        assert_eq!(
            runs.request("schedule").id,
            a.id,
            "a waiting run absorbs requests"
        );
        let (running, _cancel, _) = runs.next().await;
        assert_eq!((running.id, running.state), (a.id, RunState::Running));
        let b = runs.request("api");
        assert_ne!(b.id, a.id, "a new run queues behind the running one");
        runs.finish(
            a.id,
            Outcome::Published {
                epoch: Some(3),
                stats: GenerationStats {
                    files: 2,
                    rows: 10,
                    bytes: 100,
                    ..Default::default()
                },
                keys: 5,
            },
        );
        let done = runs.get(a.id).unwrap();
        assert_eq!(
            (done.state, done.epoch, done.stats.files),
            (RunState::Succeeded, Some(3), 2)
        );
        assert_eq!(runs.list()[0].id, b.id, "newest first");
    }

    #[tokio::test]
    async fn a_running_run_shows_its_progress() {
        let runs = BatchRuns::new(10, vec![]);
        let a = runs.request("api");
        assert_eq!(runs.get(a.id).unwrap().progress, None, "queued");
        let (_, _cancel, progress) = runs.next().await;
        progress.set_views(1);
        progress.plan(100, 1000);
        progress.start_view("v", 100, 1000);
        progress
            .scan()
            .rows
            .fetch_add(25, std::sync::atomic::Ordering::Relaxed);
        let shown = runs.get(a.id).unwrap().progress.unwrap();
        assert_eq!(
            (shown.view.as_deref(), shown.rows_done, shown.rows_total),
            (Some("v"), 25, 100)
        );
        assert_eq!(runs.list()[0].progress, Some(shown));
        runs.finish(a.id, Outcome::Cancelled);
        assert_eq!(runs.get(a.id).unwrap().progress, None, "finished");
    }

    #[tokio::test]
    async fn cancel_queued_and_running_runs() {
        let runs = BatchRuns::new(10, vec![]);
        let a = runs.request("api");
        let (_, mut cancel, _) = runs.next().await;
        let b = runs.request("api");
        assert_eq!(runs.cancel(b.id).unwrap().state, RunState::Cancelled);
        assert!(!*cancel.borrow());
        runs.cancel(a.id);
        cancel.wait_for(|c| *c).await.unwrap();
        let observed = |runs: &BatchRuns| runs.durations().map(|(_, h)| h.count());
        // Asked to stop is not stopped: no duration yet.
        assert_eq!(observed(&runs), [0, 0, 0]);
        runs.finish(a.id, Outcome::Cancelled);
        assert_eq!(runs.get(a.id).unwrap().state, RunState::Cancelled);
        // The run that started counts once; the one cancelled while queued
        // never ran.
        assert_eq!(observed(&runs), [0, 0, 1]);
        assert!(runs.cancel(999).is_none());
    }

    #[test]
    fn interrupted_runs_are_failed_after_a_restart_and_ids_continue() {
        let runs = BatchRuns::new(10, vec![]);
        let a = runs.request("api");
        let saved = runs.list();
        let restored = BatchRuns::new(10, saved);
        let r = restored.get(a.id).unwrap();
        assert_eq!(r.state, RunState::Failed);
        assert!(r.error.unwrap().contains("interrupted"));
        assert!(restored.request("api").id > a.id);
    }

    #[test]
    fn history_is_bounded() {
        let runs = BatchRuns::new(3, vec![]);
        for _ in 0..6 {
            let r = runs.request("api");
            runs.cancel(r.id);
        }
        assert_eq!(runs.list().len(), 3);
    }
}
