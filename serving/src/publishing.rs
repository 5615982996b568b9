//! How a batch run's generation reaches the view store: computed by the
//! batch layer partition by partition and stored by a publishing thread
//! as it comes, so the rows are never held whole beside the store; a
//! failed or cancelled run publishes nothing.

use std::sync::Arc;

use lamina::master::MasterStore;
use lamina_batch::{BatchBackend, BatchView, Histories, Job, Outcome, RunProgress};

/// What a batch run reads and computes, and what computes it.
#[derive(Clone, Copy)]
pub(crate) struct Sources<'a> {
    pub backend: &'a dyn BatchBackend,
    pub master: &'a MasterStore,
    pub histories: &'a Histories,
    pub views: &'a [BatchView],
}
use tokio::sync::watch;

use crate::store::ViewStore;

/// What the batch worker's publishing thread is told.
enum ToPublisher {
    /// The generation being computed: begin publishing it.
    Start(u64),
    /// One partition of a view's rows.
    Rows(String, Vec<(String, lamina::view::AggValue)>),
    /// Everything was handed over: make the generation the served one.
    Finish,
}

/// Computes a generation and publishes it as it is computed: each
/// partition of rows goes to the store (sled chunks and the new batch
/// columns) as soon as the engine completes it, and is freed then, so the
/// rows are never held whole beside the store. A failed or cancelled run
/// drops the half-built generation; the previous one keeps serving.
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
    // Two partitions in flight at most: a slow store holds the engine's
    // workers back instead of piling rows up.
    let (tx, rx) = std::sync::mpsc::sync_channel::<ToPublisher>(2);
    let publisher = {
        let store = Arc::clone(store);
        let cancel = cancel.clone();
        tokio::task::spawn_blocking(move || publish_from(&store, rx, &cancel))
    };
    let start_tx = tx.clone();
    let sink_tx = tx.clone();
    let job = Job {
        master,
        histories,
        views,
        progress,
        cancel: cancel.clone(),
    };
    let computed = backend
        .compute(
            job,
            Box::new(move |epoch| {
                let _ = start_tx.send(ToPublisher::Start(epoch));
                Arc::new(move |view: &str, rows| {
                    // A publisher that stopped has failed; its error is reported.
                    let _ = sink_tx.send(ToPublisher::Rows(view.to_owned(), rows));
                })
            }),
        )
        .await;
    let finish = matches!(computed, Ok(Some(_))) && !*cancel.borrow();
    if finish {
        let _ = tx.send(ToPublisher::Finish);
    }
    drop(tx);
    let published = publisher.await;
    if let (Ok(Some(summary)), Ok(Ok(Some(keys)))) = (&computed, &published) {
        // Published, even if a cancel came after the point of no return.
        return Outcome::Published {
            epoch: Some(summary.epoch),
            stats: summary.stats.clone(),
            keys: *keys,
        };
    }
    match computed {
        Ok(_) if *cancel.borrow() => Outcome::Cancelled,
        Ok(None) => Outcome::Published {
            epoch: None,
            stats: Default::default(),
            keys: 0,
        },
        Ok(Some(summary)) => {
            let epoch = summary.epoch;
            match published {
                Ok(Ok(Some(keys))) => Outcome::Published {
                    epoch: Some(epoch),
                    stats: summary.stats,
                    keys,
                },
                Ok(Ok(None)) => Outcome::Failed(format!(
                    "publishing generation {epoch}: the publisher stopped"
                )),
                Ok(Err(e)) => Outcome::Failed(format!("publishing generation {epoch}: {e}")),
                Err(e) => Outcome::Failed(format!("publishing generation {epoch}: {e}")),
            }
        }
        Err(_) if *cancel.borrow() => Outcome::Cancelled,
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// The publishing thread: takes a generation's partials from `rx` into the
/// store, which combines them per key; `Ok(Some(keys))` once told to finish, `Ok(None)` when the channel
/// closed first (the run failed or was cancelled: nothing is published).
fn publish_from(
    store: &ViewStore,
    rx: std::sync::mpsc::Receiver<ToPublisher>,
    cancel: &watch::Receiver<bool>,
) -> Result<Option<u64>, crate::store::StoreError> {
    let mut publisher = None;
    let cancelled = || *cancel.borrow();
    for msg in rx {
        if cancelled() {
            // Dropping the publisher discards the half-built generation.
            return Ok(None);
        }
        match msg {
            ToPublisher::Start(epoch) => publisher = Some(store.begin_publish(epoch)?),
            ToPublisher::Rows(view, rows) => {
                let Some(p) = publisher.as_mut() else {
                    continue;
                };
                p.add_rows(&view, rows)?;
            }
            ToPublisher::Finish => {
                return match publisher {
                    Some(p) => p.finish_unless(&cancelled),
                    None => Ok(None),
                };
            }
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use lamina::view::{AggValue, AggregateKind};

    fn store(tag: &str) -> (ViewStore, std::path::PathBuf) {
        let dir =
            std::env::temp_dir().join(format!("lamina-publishing-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let views = [("v".to_string(), AggregateKind::Count)];
        (ViewStore::open(&dir, &views).unwrap(), dir)
    }

    fn rows(n: i64) -> ToPublisher {
        ToPublisher::Rows("v".into(), vec![("k".into(), AggValue::Count(n))])
    }

    /// Regression: a cancel that came while the run was publishing was
    /// answered 202, and the run then published anyway.
    #[test]
    fn a_cancel_before_the_watermark_moves_publishes_nothing() {
        let (store, dir) = store("cancel");
        let (cancel_tx, cancel) = watch::channel(false);
        let (tx, rx) = std::sync::mpsc::channel();
        for msg in [ToPublisher::Start(4), rows(1), rows(2)] {
            tx.send(msg).unwrap();
        }
        cancel_tx.send(true).unwrap();
        tx.send(ToPublisher::Finish).unwrap();
        drop(tx);
        assert_eq!(publish_from(&store, rx, &cancel).unwrap(), None);
        assert_eq!(store.watermark(), None);
        assert!(store.get("v", "k").unwrap().is_none());

        // Not cancelled: the partials of `k` are combined and published.
        let (_cancel_tx, cancel) = watch::channel(false);
        let (tx, rx) = std::sync::mpsc::channel();
        for msg in [ToPublisher::Start(4), rows(1), rows(2), ToPublisher::Finish] {
            tx.send(msg).unwrap();
        }
        assert_eq!(publish_from(&store, rx, &cancel).unwrap(), Some(1));
        assert_eq!(store.watermark(), Some(4));
        assert_eq!(
            store.get("v", "k").unwrap().unwrap().value,
            AggValue::Count(3)
        );
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }

    /// A run whose computation failed closes the channel without `Finish`.
    #[test]
    fn a_run_that_did_not_finish_publishes_nothing() {
        let (store, dir) = store("unfinished");
        let (_cancel_tx, cancel) = watch::channel(false);
        let (tx, rx) = std::sync::mpsc::channel();
        for msg in [ToPublisher::Start(2), rows(1)] {
            tx.send(msg).unwrap();
        }
        drop(tx);
        assert_eq!(publish_from(&store, rx, &cancel).unwrap(), None);
        assert_eq!(store.watermark(), None);
        drop(store);
        let _ = std::fs::remove_dir_all(dir);
    }
}
