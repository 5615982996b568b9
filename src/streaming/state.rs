//! Stateful operators: state per key carried from batch to batch (Spark's
//! `updateStateByKey`).
//!
//! The state is a dataset of `(key, state)` pairs, materialised after each
//! batch. A batch computes the new state from the old one and the batch's
//! values — a `cogroup` on the engine — and the new state replaces the old
//! one only once every output operation of the batch has succeeded: a
//! failed batch runs again from the old state, never applying an update
//! twice.
//!
//! State lives in memory in this version: it is not part of the server's
//! micro-batch commit yet (it restarts empty), and a stateful stream cannot
//! be served.

use std::sync::{Arc, Mutex};

use crate::error::Result;
use crate::rdd::{Data, Key};
use crate::streaming::Time;
use crate::streaming::context::BatchOutcome;
use crate::streaming::dstream::{BatchScope, DStream};
use crate::streaming::input::InputBatch;
use crate::streaming::output::OutputOp;

/// Blocks of `(key, state)`.
type StateBlocks<K, S> = Vec<Arc<Vec<(K, S)>>>;

/// Computes a stream every batch although no output needs it then (a
/// stateful stream must see every batch).
struct EveryBatch<T: Data>(DStream<T>);

impl<T: Data> OutputOp for EveryBatch<T> {
    fn run(&self, scope: &BatchScope, _: &mut BatchOutcome) -> Result<()> {
        if self.0.has_rdd_at(scope.time()) {
            scope.rdd(&self.0)?;
        }
        Ok(())
    }
}

impl<K: Key, V: Data> DStream<(K, V)> {
    /// Every batch, for every key that has state or new values:
    /// `state = f(the batch's values of the key, the previous state)`;
    /// `None` removes the key. The stream's RDD is the state after the
    /// batch (every key that has one). Spark's `updateStateByKey`.
    pub fn update_state_by_key<S: Data>(
        &self,
        f: impl Fn(Vec<V>, Option<S>) -> Option<S> + Send + Sync + 'static,
    ) -> DStream<(K, S)> {
        self.update_state_by_key_with_time(move |_, _, values, state| f(values, state))
    }

    /// [`update_state_by_key`](Self::update_state_by_key) whose function
    /// also gets the batch time and the key.
    pub fn update_state_by_key_with_time<S: Data>(
        &self,
        f: impl Fn(Time, &K, Vec<V>, Option<S>) -> Option<S> + Send + Sync + 'static,
    ) -> DStream<(K, S)> {
        let parent = self.clone();
        let state: Arc<Mutex<StateBlocks<K, S>>> = Arc::default();
        let f = Arc::new(f);
        let stream = DStream::from_fn(&self.ssc, Arc::clone(&self.inputs), move |scope| {
            let ctx = scope.context();
            let time = scope.time();
            let batch = scope.rdd(&parent)?;
            let old = state.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let old_rdd = InputBatch::from_shared_blocks(ctx, old).rdd;
            let f = Arc::clone(&f);
            let grouped = batch.cogroup(&old_rdd);
            let new = grouped.flat_map(move |(k, (values, olds))| {
                let old = olds.into_iter().next();
                f(time, &k, values, old).map(|s| (k, s))
            });
            let blocks: StateBlocks<K, S> = new
                .run(|_, it| Ok(Arc::new(it.collect::<Vec<(K, S)>>())))?
                .into_iter()
                .filter(|b| !b.is_empty())
                .collect();
            let committed = Arc::clone(&state);
            let next = blocks.clone();
            scope.on_success(move || {
                *committed.lock().unwrap_or_else(|p| p.into_inner()) = next;
            });
            Ok(InputBatch::from_shared_blocks(ctx, blocks).rdd)
        })
        .inherit(self)
        .stateful();
        self.ssc.add_output(Arc::new(EveryBatch(stream.clone())));
        stream
    }
}
