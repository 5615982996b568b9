//! How a batch run's generation reaches the view store: computed by the
//! batch layer task by task, each task's partials merged into the new
//! generation by the worker that computed them, so the rows are never held
//! whole beside the store; a failed or cancelled run publishes nothing.

use std::sync::Arc;

use lamina::master::MasterStore;
use lamina_batch::{BatchBackend, BatchView, Histories, Job, Outcome, RowSink, RunProgress};

/// What a batch run reads and computes, and what computes it.
#[derive(Clone, Copy)]
pub(crate) struct Sources<'a> {
    pub backend: &'a dyn BatchBackend,
    pub master: &'a MasterStore,
    pub histories: &'a Histories,
    pub views: &'a [BatchView],
}
use tokio::sync::watch;

use crate::store::{Publisher, ViewStore};

/// A run's generation on its way into the store: begun once the backend
/// knows its epoch, fed by the engine's workers as tasks complete (each
/// worker merges its task's partials into the store's shards itself, so
/// the merge runs on every core and no partial waits in a queue), and
/// finished once the computation succeeded. Dropped unfinished, it
/// publishes nothing.
struct Publishing {
    store: Arc<ViewStore>,
    cancel: watch::Receiver<bool>,
    publisher: std::sync::Mutex<Option<Publisher<Arc<ViewStore>>>>,
    /// The first error of a sink or of beginning the publish.
    failure: Arc<std::sync::Mutex<Option<String>>>,
}

impl Publishing {
    fn new(store: &Arc<ViewStore>, cancel: &watch::Receiver<bool>) -> Self {
        Publishing {
            store: Arc::clone(store),
            cancel: cancel.clone(),
            publisher: Default::default(),
            failure: Default::default(),
        }
    }

    fn fail(failure: &std::sync::Mutex<Option<String>>, e: impl std::fmt::Display) {
        failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert_with(|| e.to_string());
    }

    fn failed(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Begins publishing generation `epoch` and returns where its partials
    /// go. Runs on the async side and only sets up memory (no sled I/O:
    /// what an interrupted attempt left is cleared when the publish
    /// finishes); it would wait only for another publish, and batch runs
    /// run one at a time.
    fn start(&self, epoch: u64) -> RowSink {
        let failure = Arc::clone(&self.failure);
        match self.store.begin_publish_shared(epoch) {
            Ok(publisher) => {
                let sink = publisher.sink();
                *self.publisher.lock().unwrap_or_else(|p| p.into_inner()) = Some(publisher);
                let cancel = self.cancel.clone();
                Arc::new(move |view: &str, partials| {
                    // After a failure or a cancel the run publishes nothing:
                    // no point merging more.
                    if *cancel.borrow()
                        || failure.lock().unwrap_or_else(|p| p.into_inner()).is_some()
                    {
                        return;
                    }
                    if let Err(e) = sink.add(view, partials) {
                        Self::fail(&failure, e);
                    }
                })
            }
            Err(e) => {
                Self::fail(&failure, e);
                Arc::new(|_: &str, _| {})
            }
        }
    }

    /// Makes the generation the served one: `Ok(Some(keys))`, or
    /// `Ok(None)` when cancelled before the watermark moved. Blocking.
    fn finish(self) -> Result<Option<u64>, String> {
        if let Some(e) = self.failed() {
            return Err(e);
        }
        let publisher = self
            .publisher
            .into_inner()
            .unwrap_or_else(|p| p.into_inner());
        let Some(publisher) = publisher else {
            return Err("the publisher never started".into());
        };
        let cancel = self.cancel;
        publisher
            .finish_unless(&|| *cancel.borrow())
            .map_err(|e| e.to_string())
    }
}

/// Computes a generation and publishes it as it is computed: each task's
/// partials are merged into the new generation's columns by the worker
/// that computed them, as soon as the task completes, and freed then, so
/// the rows are never held whole beside the store. A failed or cancelled
/// run drops the half-built generation; the previous one keeps serving.
pub(crate) async fn run_and_publish(
    sources: &Sources<'_>,
    store: &Arc<ViewStore>,
    progress: &RunProgress,
    cancel: &watch::Receiver<bool>,
) -> Outcome {
    let Sources {
        backend,
        master,
        histories,
        views,
    } = *sources;
    let publishing = Publishing::new(store, cancel);
    let job = Job {
        master,
        histories,
        views,
        progress,
        cancel: cancel.clone(),
    };
    let computed = backend
        .compute(job, Box::new(|epoch| publishing.start(epoch)))
        .await;
    let cancelled = || *cancel.borrow();
    match computed {
        Ok(Some(summary)) if !cancelled() => {
            let epoch = summary.epoch;
            match tokio::task::spawn_blocking(move || publishing.finish()).await {
                // Published, even if a cancel came after the point of no
                // return.
                Ok(Ok(Some(keys))) => Outcome::Published {
                    epoch: Some(epoch),
                    stats: summary.stats,
                    keys,
                },
                Ok(Ok(None)) => Outcome::Cancelled,
                Ok(Err(e)) => Outcome::Failed(format!("publishing generation {epoch}: {e}")),
                Err(e) => Outcome::Failed(format!("publishing generation {epoch}: {e}")),
            }
        }
        Ok(_) if cancelled() => Outcome::Cancelled,
        Ok(None) => Outcome::Published {
            epoch: None,
            stats: Default::default(),
            keys: 0,
        },
        Err(_) if cancelled() => Outcome::Cancelled,
        Err(e) => Outcome::Failed(e.to_string()),
        Ok(Some(_)) => unreachable!("matched above"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lamina::view::{AggValue, AggregateKind, Partials};

    fn store(tag: &str) -> (Arc<ViewStore>, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("lamina-publishing-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let views = [("v".to_string(), AggregateKind::Count)];
        (Arc::new(ViewStore::open(&dir, &views).unwrap()), dir)
    }

    fn rows(n: i64) -> Partials {
        Partials::from_rows([("k".to_owned(), AggValue::Count(n))])
    }

    /// Regression: a cancel that came while the run was publishing was
    /// answered 202, and the run then published anyway.
    #[test]
    fn a_cancel_before_the_watermark_moves_publishes_nothing() {
        let (store, dir) = store("cancel");
        let (cancel_tx, cancel) = watch::channel(false);
        let publishing = Publishing::new(&store, &cancel);
        let sink = publishing.start(4);
        sink("v", rows(1));
        sink("v", rows(2));
        cancel_tx.send(true).unwrap();
        assert_eq!(publishing.finish(), Ok(None));
        assert_eq!(store.watermark(), None);
        assert!(store.get("v", "k").unwrap().is_none());

        // Not cancelled: the partials of `k` are combined and published.
        let (_cancel_tx, cancel) = watch::channel(false);
        let publishing = Publishing::new(&store, &cancel);
        let sink = publishing.start(4);
        sink("v", rows(1));
        sink("v", rows(2));
        assert_eq!(publishing.finish(), Ok(Some(1)));
        assert_eq!(store.watermark(), Some(4));
        assert_eq!(
            store.get("v", "k").unwrap().unwrap().value,
            AggValue::Count(3)
        );
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A run whose computation failed drops its publishing unfinished:
    /// nothing is published, and the next run can publish.
    #[test]
    fn a_run_that_did_not_finish_publishes_nothing() {
        let (store, dir) = store("unfinished");
        let (_cancel_tx, cancel) = watch::channel(false);
        let publishing = Publishing::new(&store, &cancel);
        let late = publishing.start(2);
        late("v", rows(1));
        drop(publishing);
        assert_eq!(store.watermark(), None);
        // A sink that outlives its run adds nothing to the next one.
        let publishing = Publishing::new(&store, &cancel);
        let sink = publishing.start(3);
        late("v", rows(100));
        sink("v", rows(5));
        assert_eq!(publishing.finish(), Ok(Some(1)));
        assert_eq!(
            store.get("v", "k").unwrap().unwrap().value,
            AggValue::Count(5)
        );
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Partials of the wrong kind fail the publish, naming the view; the
    /// previous generation keeps serving.
    #[test]
    fn a_sink_error_fails_the_run() {
        let (store, dir) = store("mismatch");
        let (_cancel_tx, cancel) = watch::channel(false);
        let publishing = Publishing::new(&store, &cancel);
        let sink = publishing.start(1);
        sink("v", rows(1));
        sink(
            "v",
            Partials::from_rows([("k".to_owned(), AggValue::Mean(Default::default()))]),
        );
        let err = publishing.finish().unwrap_err();
        assert!(err.contains("view `v`"), "{err}");
        assert_eq!(store.watermark(), None);
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// Workers merging at once into the same shards lose nothing.
    #[test]
    fn concurrent_sinks_combine_exactly() {
        let (store, dir) = store("concurrent");
        let (_cancel_tx, cancel) = watch::channel(false);
        let publishing = Publishing::new(&store, &cancel);
        let sink = publishing.start(1);
        std::thread::scope(|s| {
            for t in 0..4i64 {
                let sink = Arc::clone(&sink);
                s.spawn(move || {
                    for round in 0..20 {
                        let rows =
                            (0..2_000).map(|k| (format!("key-{k}"), AggValue::Count(t + round)));
                        sink("v", Partials::from_rows(rows));
                    }
                });
            }
        });
        assert_eq!(publishing.finish(), Ok(Some(2_000)));
        // Each key: sum over t in 0..4 and round in 0..20 of t + round.
        let want = (0..4)
            .map(|t| (0..20).map(|r| t + r).sum::<i64>())
            .sum::<i64>();
        for k in [0, 1, 999, 1_999] {
            assert_eq!(
                store.get("v", &format!("key-{k}")).unwrap().unwrap().value,
                AggValue::Count(want)
            );
        }
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }
}
