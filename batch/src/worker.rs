//! The batch-run protocol: one run at a time, each (1) closing the current
//! epoch and waiting until it is sealed, so that the run includes
//! everything acknowledged before it was requested, then (2) computing the
//! generation over the manifest's snapshot with a [`BatchBackend`] while
//! (3) the serving layer publishes it as it comes, then (4) recording how
//! it ended in the run history. The steps that touch the rest of the
//! server (the speed layer's epochs, the serving store) are a [`RunSteps`]
//! the server implements; the order, the cancellation and the history are
//! here. After a successful run, a server that writes the master dataset
//! (5) compacts it ([`compact`](crate::compact)) before the run is
//! recorded as finished, so that runs and compaction never overlap.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use tokio::sync::watch;
use tracing::{info, warn};

use crate::backend::BatchBackend;
use crate::compact::{CompactionPolicy, compact};
use crate::progress::RunProgress;
use crate::runs::{BatchRuns, Outcome, RunRecord};

/// A step in flight.
pub type Step<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The steps of a run that belong to the rest of the server.
pub trait RunSteps: Send {
    /// Step 1: ends the current epoch now and waits until every record
    /// acknowledged before the call is in a sealed epoch. A reader of
    /// another server's dataset has nothing to seal and returns at once.
    /// `Err` names what failed (and is `"cancelled"` when `cancel` turned
    /// true).
    fn close_epoch<'a>(
        &'a mut self,
        cancel: &'a watch::Receiver<bool>,
    ) -> Step<'a, Result<(), String>>;

    /// Steps 2 and 3: computes the generation with `backend`, counting
    /// into `progress`, and publishes it as it is computed; a failed or
    /// cancelled run publishes nothing.
    fn compute_and_publish<'a>(
        &'a self,
        backend: &'a dyn BatchBackend,
        progress: &'a RunProgress,
        cancel: &'a watch::Receiver<bool>,
    ) -> Step<'a, Outcome>;

    /// The run history changed: keep it (durably).
    fn save_history(&self, runs: &[RunRecord]);
}

/// Compaction after each successful run: the dataset and the policy.
#[derive(Debug, Clone)]
pub struct Compaction {
    /// The master dataset (opened for writing).
    pub master: lamina::master::MasterStore,
    /// When to merge and how long to keep what was replaced.
    pub policy: CompactionPolicy,
}

/// Runs the queued runs of `runs` one at a time until `shutdown` turns
/// true, compacting after each successful one when `compaction` is set.
pub async fn run_worker(
    runs: Arc<BatchRuns>,
    backend: Arc<dyn BatchBackend>,
    mut steps: impl RunSteps,
    compaction: Option<Compaction>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (run, cancel, progress) = tokio::select! {
            next = runs.next() => next,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        info!(run = run.id, trigger = %run.trigger, backend = backend.name(), "batch run started");
        let outcome = match steps.close_epoch(&cancel).await {
            Err(_) if *cancel.borrow() => Outcome::Cancelled,
            Err(e) => Outcome::Failed(e),
            Ok(()) => {
                steps
                    .compute_and_publish(backend.as_ref(), &progress, &cancel)
                    .await
            }
        };
        if let (Outcome::Published { .. }, Some(c)) = (&outcome, &compaction) {
            progress.start_compacting();
            let report = compact(&c.master, &c.policy, &shutdown).await;
            runs.set_compaction(run.id, report);
        }
        if let Some(done) = runs.finish(run.id, outcome) {
            match &done.error {
                None => {
                    info!(
                        run = done.id,
                        epoch = done.epoch,
                        keys = done.keys,
                        "batch run succeeded"
                    )
                }
                Some(e) => {
                    warn!(run = done.id, state = ?done.state, "batch run did not publish: {e}")
                }
            }
        }
        steps.save_history(&runs.list());
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::backend::{Computing, Job, StartSink};
    use crate::run::GenerationStats;
    use crate::runs::RunState;

    /// A backend that must not be asked: the steps below never call it.
    struct Unused;

    impl BatchBackend for Unused {
        fn name(&self) -> &'static str {
            "unused"
        }
        fn compute<'a>(&'a self, _: Job<'a>, _: StartSink<'a>) -> Computing<'a> {
            Box::pin(async { panic!("not called by these steps") })
        }
    }

    /// Steps that record what the protocol asked, in order.
    struct Recorded {
        log: Arc<Mutex<Vec<String>>>,
        close: Vec<Result<(), String>>,
    }

    impl RunSteps for Recorded {
        fn close_epoch<'a>(
            &'a mut self,
            _: &'a watch::Receiver<bool>,
        ) -> Step<'a, Result<(), String>> {
            self.log.lock().unwrap().push("close".into());
            let result = self.close.remove(0);
            Box::pin(async move { result })
        }

        fn compute_and_publish<'a>(
            &'a self,
            backend: &'a dyn BatchBackend,
            _: &'a RunProgress,
            _: &'a watch::Receiver<bool>,
        ) -> Step<'a, Outcome> {
            self.log
                .lock()
                .unwrap()
                .push(format!("compute with {}", backend.name()));
            Box::pin(async {
                Outcome::Published {
                    epoch: Some(4),
                    stats: GenerationStats::default(),
                    keys: 2,
                }
            })
        }

        fn save_history(&self, runs: &[RunRecord]) {
            let states: Vec<String> = runs.iter().map(|r| format!("{:?}", r.state)).collect();
            self.log
                .lock()
                .unwrap()
                .push(format!("save {}", states.join(",")));
        }
    }

    #[tokio::test]
    async fn each_run_closes_the_epoch_before_computing_and_is_recorded() {
        let runs = Arc::new(BatchRuns::new(10, vec![]));
        let log = Arc::new(Mutex::new(Vec::new()));
        let steps = Recorded {
            log: Arc::clone(&log),
            close: vec![Ok(()), Err("sealing epoch 9 failed: s3 down".into())],
        };
        let (stop, shutdown) = watch::channel(false);
        let worker = tokio::spawn(run_worker(
            Arc::clone(&runs),
            Arc::new(Unused),
            steps,
            None,
            shutdown,
        ));
        let first = runs.request("api");
        while !runs.get(first.id).unwrap().state.is_final() {
            tokio::task::yield_now().await;
        }
        let second = runs.request("api");
        while !runs.get(second.id).unwrap().state.is_final() {
            tokio::task::yield_now().await;
        }
        stop.send_replace(true);
        worker.await.unwrap();
        assert_eq!(runs.get(first.id).unwrap().state, RunState::Succeeded);
        let failed = runs.get(second.id).unwrap();
        assert_eq!(failed.state, RunState::Failed);
        assert_eq!(
            failed.error.as_deref(),
            Some("sealing epoch 9 failed: s3 down")
        );
        assert_eq!(
            *log.lock().unwrap(),
            [
                "close",
                "compute with unused",
                "save Succeeded",
                "close",
                "save Failed,Succeeded",
            ]
        );
    }
}
