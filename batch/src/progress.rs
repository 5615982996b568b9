//! A batch run's progress while it is in flight: rows and bytes read of
//! the total the run will read, and the view being computed. Shown by
//! `GET /v1/batch/runs/{id}`, `lamina status` and `lamina batch run --wait`.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use lamina::master::scan::ScanProgress;
use serde::{Deserialize, Serialize};

/// What a running run has done, as the REST API shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The view being computed.
    pub view: Option<String>,
    /// Views done, and in all.
    pub views_done: u64,
    /// Views the run computes.
    pub views_total: u64,
    /// Rows read so far.
    pub rows_done: u64,
    /// Rows the run reads in all (each view reads its stream's rows; a
    /// stream's history counts once its files are opened).
    pub rows_total: u64,
    /// Bytes of Parquet read so far.
    pub bytes_done: u64,
    /// Bytes the run reads in all.
    pub bytes_total: u64,
    /// The generation is published and compaction is merging small files
    /// of the master dataset.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub compacting: bool,
}

#[derive(Debug, Default)]
struct Views {
    current: Option<String>,
    done: u64,
    total: u64,
    /// Rows and bytes of the views done.
    base_rows: u64,
    base_bytes: u64,
    /// The current view's planned rows and bytes, and the scan counters
    /// when it started.
    planned_rows: u64,
    planned_bytes: u64,
    start_rows: u64,
    start_bytes: u64,
}

/// The counters of one run, shared by the computation and the registry.
#[derive(Debug, Default)]
pub struct RunProgress {
    scan: Arc<ScanProgress>,
    rows_total: AtomicU64,
    bytes_total: AtomicU64,
    views: Mutex<Views>,
    compacting: std::sync::atomic::AtomicBool,
}

impl RunProgress {
    /// Fresh counters.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    /// The counters the run's scans add to.
    pub fn scan(&self) -> &Arc<ScanProgress> {
        &self.scan
    }

    fn views(&self) -> std::sync::MutexGuard<'_, Views> {
        self.views.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The run will read `rows` and `bytes` more (called as it plans).
    pub fn plan(&self, rows: u64, bytes: u64) {
        self.rows_total.fetch_add(rows, Ordering::Relaxed);
        self.bytes_total.fetch_add(bytes, Ordering::Relaxed);
    }

    /// The run computes `views` views.
    pub fn set_views(&self, views: u64) {
        self.views().total = views;
    }

    /// View `name` starts, planned to read `rows` and `bytes`.
    pub fn start_view(&self, name: &str, rows: u64, bytes: u64) {
        let mut v = self.views();
        v.current = Some(name.to_owned());
        v.planned_rows = rows;
        v.planned_bytes = bytes;
        v.start_rows = self.scan.rows.load(Ordering::Relaxed);
        v.start_bytes = self.scan.bytes.load(Ordering::Relaxed);
    }

    /// The current view read more than planned (its history's rows, known
    /// once its files are opened).
    pub fn grow_view(&self, rows: u64, bytes: u64) {
        self.plan(rows, bytes);
        let mut v = self.views();
        v.planned_rows += rows;
        v.planned_bytes += bytes;
    }

    /// The current view is done: what it planned counts as read.
    pub fn finish_view(&self) {
        let mut v = self.views();
        v.base_rows += v.planned_rows;
        v.base_bytes += v.planned_bytes;
        v.planned_rows = 0;
        v.planned_bytes = 0;
        v.done += 1;
        v.current = None;
    }

    /// Compaction has started (after the generation was published).
    pub fn start_compacting(&self) {
        self.compacting.store(true, Ordering::Relaxed);
    }

    /// What has been done so far.
    pub fn snapshot(&self) -> Progress {
        let v = self.views();
        let read_rows = self.scan.rows.load(Ordering::Relaxed) - v.start_rows;
        let read_bytes = self.scan.bytes.load(Ordering::Relaxed) - v.start_bytes;
        let rows_total = self.rows_total.load(Ordering::Relaxed);
        let bytes_total = self.bytes_total.load(Ordering::Relaxed);
        Progress {
            view: v.current.clone(),
            views_done: v.done,
            views_total: v.total,
            rows_done: (v.base_rows + read_rows.min(v.planned_rows)).min(rows_total),
            rows_total,
            bytes_done: (v.base_bytes + read_bytes.min(v.planned_bytes)).min(bytes_total),
            bytes_total,
            compacting: self.compacting.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_stay_within_the_plan_and_end_exact() {
        let p = RunProgress::new();
        p.set_views(2);
        p.plan(100, 1000);
        p.plan(50, 400);
        p.start_view("a", 100, 1000);
        p.scan().rows.fetch_add(60, Ordering::Relaxed);
        p.scan().bytes.fetch_add(500, Ordering::Relaxed);
        let s = p.snapshot();
        assert_eq!(
            (s.view.as_deref(), s.rows_done, s.bytes_done),
            (Some("a"), 60, 500)
        );
        // Footers and overheads make the bytes read differ from the plan.
        p.scan().rows.fetch_add(40, Ordering::Relaxed);
        p.scan().bytes.fetch_add(480, Ordering::Relaxed);
        p.finish_view();
        p.start_view("b", 50, 400);
        p.grow_view(10, 0);
        p.scan().rows.fetch_add(1000, Ordering::Relaxed);
        let s = p.snapshot();
        assert_eq!((s.rows_done, s.rows_total, s.views_done), (160, 160, 1));
        p.finish_view();
        let s = p.snapshot();
        assert_eq!(
            (
                s.rows_done,
                s.rows_total,
                s.bytes_done,
                s.bytes_total,
                s.views_done
            ),
            (160, 160, 1400, 1400, 2)
        );
    }
}
