//! The server's side of a batch run (`lamina_batch::RunSteps`): closing
//! the current epoch on the speed layer's signals, and computing and
//! publishing into the view store. The protocol itself (one run at a time,
//! the order of the steps, the history) is `lamina_batch::run_worker`.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use lamina::master::MasterStore;
use lamina_batch::{BatchView, Outcome, RunRecord};
use lamina_speed::microbatch::Clock;
use lamina_speed::microbatch::seal::SealState;
use lamina_speed::wal::Wal;
use tokio::sync::watch;

use crate::server::{now_us, save_runs};
use crate::store::ViewStore;

/// What the batch worker needs.
pub(crate) struct BatchWorker {
    pub(crate) master: MasterStore,
    pub(crate) views: Vec<BatchView>,
    /// Streams' histories, read by every run before their epochs.
    pub(crate) histories: lamina_batch::Histories,
    pub(crate) store: Arc<ViewStore>,
    pub(crate) clock: Clock,
    pub(crate) epoch_floor: Arc<std::sync::atomic::AtomicU64>,
    /// What the sealer reports.
    pub(crate) sealed: watch::Receiver<SealState>,
    /// The log position the micro-batches committed through.
    pub(crate) committed: watch::Receiver<u64>,
    pub(crate) wal: Wal,
    /// A reader of another server's dataset: nothing of its own to seal.
    pub(crate) read_only: bool,
}

/// Longest wait for the current epoch to be sealed before a run.
const SEAL_WAIT: Duration = Duration::from_secs(120);

impl lamina_batch::RunSteps for BatchWorker {
    fn close_epoch<'a>(
        &'a mut self,
        cancel: &'a watch::Receiver<bool>,
    ) -> lamina_batch::worker::Step<'a, Result<(), String>> {
        Box::pin(async move {
            if self.read_only {
                return Ok(());
            }
            self.close_current_epoch(cancel).await
        })
    }

    fn compute_and_publish<'a>(
        &'a self,
        backend: &'a dyn lamina_batch::BatchBackend,
        progress: &'a lamina_batch::RunProgress,
        cancel: &'a watch::Receiver<bool>,
    ) -> lamina_batch::worker::Step<'a, Outcome> {
        Box::pin(async move {
            let sources = crate::publishing::Sources {
                backend,
                master: &self.master,
                histories: &self.histories,
                views: &self.views,
            };
            crate::publishing::run_and_publish(&sources, &self.store, progress, cancel).await
        })
    }

    fn save_history(&self, runs: &[RunRecord]) {
        save_runs(&self.store, runs);
    }
}

impl BatchWorker {
    /// Ends the current epoch now and waits until it is sealed, so that a
    /// run includes everything ingested before it was requested.
    async fn close_current_epoch(&mut self, cancel: &watch::Receiver<bool>) -> Result<(), String> {
        // Everything acknowledged before the request must be in a micro-batch
        // first: only then is it in an epoch this run can seal.
        let acknowledged = self.wal.durable_seq();
        let mut cancel = cancel.clone();
        tokio::select! {
            done = tokio::time::timeout(SEAL_WAIT, self.committed.wait_for(|&c| c >= acknowledged)) => match done {
                Ok(Ok(_)) => {}
                Ok(Err(_)) => return Err("the speed layer stopped".into()),
                Err(_) => return Err(format!(
                    "the speed layer did not process the records acknowledged before the run within {SEAL_WAIT:?}"
                )),
            },
            _ = cancel.wait_for(|c| *c) => return Err("cancelled".into()),
        }
        let current = self
            .clock
            .epoch_of(now_us())
            .max(self.epoch_floor.load(Ordering::Acquire));
        // Attempts before this point may have failed for earlier epochs;
        // only a later one can say something about `current`.
        let attempts_before = self.sealed.borrow().attempts;
        self.epoch_floor.fetch_max(current + 1, Ordering::AcqRel);
        let mut outcome = None;
        tokio::select! {
            sealed = tokio::time::timeout(SEAL_WAIT, self.sealed.wait_for(|s| {
                outcome = s.outcome_for(current, attempts_before);
                outcome.is_some()
            })) => match sealed {
                Ok(Ok(_)) => outcome.unwrap_or(Ok(())).map_err(|e| {
                    format!("sealing epoch {current} into the master dataset failed: {e}")
                }),
                Ok(Err(_)) => Err("the sealer stopped".into()),
                Err(_) => Err(format!("epoch {current} was not sealed within {SEAL_WAIT:?}")),
            },
            _ = cancel.wait_for(|c| *c) => Err("cancelled".into()),
        }
    }
}
