//! [`StreamingContext`]: the batch interval, the graph of input streams and
//! output operations, and the clock that runs one batch per interval.

use std::any::Any;
use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::rdd::Data;
use crate::streaming::Time;
use crate::streaming::dstream::{BatchScope, DStream, InputId, InputRdds, input_stream};
use crate::streaming::durable::{DurableState, ServedState, StateDelta, StateInfo};
use crate::streaming::input::{InputStream, QueueInput};
use crate::streaming::output::{OutputOp, ServedDelta, ServedView};

/// The shortest batch interval.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// What one batch did.
#[derive(Debug, Clone, Default)]
pub struct BatchOutcome {
    /// The batch's time.
    pub time: Time,
    /// Records per input stream, by name, in registration order.
    pub records: Vec<(String, u64)>,
    /// The merged partials of every served view, in declaration order.
    pub served: Vec<ServedDelta>,
    /// The state changes of every stateful operator that changed state
    /// (see [`durable`](super::durable)), to be committed with the batch.
    pub state: Vec<StateDelta>,
    /// How long the batch took, inputs to last output.
    pub processing: Duration,
}

impl BatchOutcome {
    /// Records over all inputs.
    pub fn total_records(&self) -> u64 {
        self.records.iter().map(|(_, n)| n).sum()
    }
}

/// An input stream behind its element type.
trait ErasedInput: Send + Sync {
    fn name(&self) -> String;
    fn start(&self) -> Result<()>;
    fn stop(&self);
    fn batch(&self, ctx: &Context, time: Time) -> Result<(Box<dyn Any + Send + Sync>, u64)>;
}

struct Typed<T>(Arc<dyn InputStream<T>>, PhantomData<fn() -> T>);

impl<T: Data> ErasedInput for Typed<T> {
    fn name(&self) -> String {
        self.0.name()
    }
    fn start(&self) -> Result<()> {
        self.0.start()
    }
    fn stop(&self) {
        self.0.stop()
    }
    fn batch(&self, ctx: &Context, time: Time) -> Result<(Box<dyn Any + Send + Sync>, u64)> {
        let b = self.0.next_batch(ctx, time)?;
        Ok((Box::new(b.rdd), b.records))
    }
}

#[derive(Default)]
struct Graph {
    inputs: Vec<(InputId, Arc<dyn ErasedInput>)>,
    outputs: Vec<Arc<dyn OutputOp>>,
    served: Vec<ServedView>,
    states: Vec<Arc<dyn DurableState>>,
    served_states: Vec<ServedState>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Initialized,
    Active,
    Stopped,
}

struct RunState {
    phase: Phase,
    /// The first batch error; it stops the context.
    error: Option<Error>,
    clock: Option<JoinHandle<()>>,
}

type Listener = Arc<dyn Fn(&BatchOutcome) + Send + Sync>;

struct Inner {
    ctx: Context,
    interval: Duration,
    next_id: AtomicUsize,
    graph: Mutex<Graph>,
    /// Held while a batch runs: batches never overlap.
    batch: Mutex<()>,
    run: Mutex<RunState>,
    changed: Condvar,
    listener: Mutex<Option<Listener>>,
    /// A batch ran but is neither committed nor dropped yet (see
    /// [`StreamingContext::run_batch_pending`]).
    pending: std::sync::atomic::AtomicBool,
    /// Batches' outcomes are committed (see [`StreamingContext::set_durable`]).
    durable: std::sync::atomic::AtomicBool,
}

/// The entry point of a DStream program (Spark's `StreamingContext`): an
/// engine [`Context`] and a batch interval. Declare input streams,
/// transformations and output operations, then [`start`](Self::start) it
/// — or drive it batch by batch with [`run_batch`](Self::run_batch).
///
/// Cheap to clone; clones share the program.
#[derive(Clone)]
pub struct StreamingContext {
    inner: Arc<Inner>,
}

impl fmt::Debug for StreamingContext {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StreamingContext")
            .field("interval", &self.inner.interval)
            .finish_non_exhaustive()
    }
}

impl StreamingContext {
    /// A context that runs a batch every `interval` (at least 10 ms).
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] for an interval under 10 ms.
    pub fn new(ctx: Context, interval: Duration) -> Result<Self> {
        if interval < MIN_INTERVAL {
            return Err(Error::plan(format!(
                "the batch interval must be at least {} ms (got {:?})",
                MIN_INTERVAL.as_millis(),
                interval
            )));
        }
        Ok(StreamingContext {
            inner: Arc::new(Inner {
                ctx,
                interval,
                next_id: AtomicUsize::new(0),
                graph: Mutex::new(Graph::default()),
                batch: Mutex::new(()),
                run: Mutex::new(RunState {
                    phase: Phase::Initialized,
                    error: None,
                    clock: None,
                }),
                changed: Condvar::new(),
                listener: Mutex::new(None),
                pending: std::sync::atomic::AtomicBool::new(false),
                durable: std::sync::atomic::AtomicBool::new(false),
            }),
        })
    }

    /// The engine context batches run on.
    pub fn context(&self) -> &Context {
        &self.inner.ctx
    }

    /// The batch interval.
    pub fn interval(&self) -> Duration {
        self.inner.interval
    }

    pub(crate) fn next_id(&self) -> usize {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn graph(&self) -> std::sync::MutexGuard<'_, Graph> {
        self.inner.graph.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run_state(&self) -> std::sync::MutexGuard<'_, RunState> {
        self.inner.run.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A stream fed by `source` (a receiver of your own, a [`FedInput`]
    /// (super::FedInput), ...). Keep a clone of the `Arc` to talk to the
    /// source.
    pub fn input_stream<T: Data>(&self, source: Arc<dyn InputStream<T>>) -> DStream<T> {
        let id = self.next_id();
        self.graph()
            .inputs
            .push((id, Arc::new(Typed(source, PhantomData))));
        input_stream(self, id)
    }

    /// A stream of prepared batches, one per batch interval, then empty
    /// batches (Spark's `queueStream`); each batch is split into as many
    /// partitions as the context has threads. For tests and demos.
    pub fn queue_stream<T: Data>(&self, batches: impl IntoIterator<Item = Vec<T>>) -> DStream<T> {
        let parts = self.inner.ctx.default_parallelism().max(1);
        let queue = QueueInput::new(batches.into_iter().map(|b| split(b, parts)));
        self.input_stream(Arc::new(queue))
    }

    /// The name of input stream `id`.
    pub fn input_name(&self, id: InputId) -> Option<String> {
        self.graph()
            .inputs
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, s)| s.name())
    }

    /// The served views, in declaration order.
    pub fn served_views(&self) -> Vec<ServedView> {
        self.graph().served.clone()
    }

    /// Whether a batch without new records can still produce output: the
    /// program has output operations other than served views (a print, a
    /// `foreach_rdd`, a window that slides). A program of served views only
    /// has nothing to do for an empty batch.
    pub fn acts_on_empty_batches(&self) -> bool {
        let g = self.graph();
        g.outputs.len() > g.served.len()
    }

    pub(crate) fn add_output(&self, op: Arc<dyn OutputOp>) {
        self.graph().outputs.push(op);
    }

    pub(crate) fn add_served(&self, view: ServedView, op: Arc<dyn OutputOp>) -> Result<()> {
        if view.name().is_empty() {
            return Err(Error::plan("a served view needs a name"));
        }
        let mut graph = self.graph();
        if graph.served.iter().any(|v| v.name() == view.name())
            || graph.served_states.iter().any(|v| v.name() == view.name())
        {
            return Err(Error::plan(format!(
                "view `{}` is served twice: view names must be unique",
                view.name()
            )));
        }
        graph.served.push(view);
        graph.outputs.push(op);
        Ok(())
    }

    /// Calls `f` with the outcome of every batch the clock runs (e.g. to
    /// log throughput). Replaces an earlier listener.
    pub fn set_batch_listener(&self, f: impl Fn(&BatchOutcome) + Send + Sync + 'static) {
        *self
            .inner
            .listener
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(f));
    }

    /// Runs the batch at `time` now, on the calling thread: takes every
    /// input's records and runs every output operation, in declaration
    /// order, each as a job on the engine; then stateful operators move to
    /// the batch's state. Batches never overlap: a call waits for a batch
    /// running on another thread.
    ///
    /// # Errors
    ///
    /// The first input or output operation that failed; later output
    /// operations of the batch do not run, and no state changes.
    pub fn run_batch(&self, time: Time) -> Result<BatchOutcome> {
        let (outcome, pending) = self.run_batch_pending(time)?;
        pending.commit();
        Ok(outcome)
    }

    /// Runs the batch at `time` like [`run_batch`](Self::run_batch) but
    /// leaves stateful operators at their old state until the returned
    /// [`PendingBatch`] is committed — after the caller has made the
    /// batch's outcome (its served deltas and [state
    /// changes](BatchOutcome::state)) durable. Dropping it instead leaves
    /// the state as before the batch, so the same input can run again.
    ///
    /// # Errors
    ///
    /// As [`run_batch`](Self::run_batch); [`Error::Plan`] while an earlier
    /// batch is pending.
    pub fn run_batch_pending(&self, time: Time) -> Result<(BatchOutcome, PendingBatch)> {
        let _one_at_a_time = self.inner.batch.lock().unwrap_or_else(|p| p.into_inner());
        if self.inner.pending.load(Ordering::Acquire) {
            return Err(Error::plan(
                "the previous batch is still pending: commit or drop it before the next",
            ));
        }
        let start = Instant::now();
        let (inputs, outputs) = {
            let g = self.graph();
            (g.inputs.clone(), g.outputs.clone())
        };
        let ctx = &self.inner.ctx;
        let mut rdds = InputRdds::new();
        let mut outcome = BatchOutcome {
            time,
            ..BatchOutcome::default()
        };
        for (id, input) in &inputs {
            let (rdd, records) = input.batch(ctx, time)?;
            rdds.insert_boxed(*id, rdd);
            outcome.records.push((input.name(), records));
        }
        let scope = BatchScope::new(ctx, time, rdds);
        for op in &outputs {
            op.run(&scope, &mut outcome)?;
        }
        outcome.state = scope.take_state();
        self.inner.pending.store(true, Ordering::Release);
        let pending = PendingBatch {
            on_success: scope.into_on_success(),
            inner: Arc::clone(&self.inner),
        };
        outcome.processing = start.elapsed();
        Ok((outcome, pending))
    }

    /// Declares that the caller commits every batch's outcome (the server
    /// does): windows then also report the batches they keep as state
    /// changes (see [`window`](super::window)), which costs encoding each
    /// kept batch. Stateful operators always report their changes.
    pub fn set_durable(&self, durable: bool) {
        self.inner.durable.store(durable, Ordering::Release);
    }

    /// Whether batches' outcomes are committed.
    pub fn is_durable(&self) -> bool {
        self.inner.durable.load(Ordering::Acquire)
    }

    /// Every stateful operator of the program, in declaration order.
    pub fn stateful_operators(&self) -> Vec<StateInfo> {
        self.graph().states.iter().map(|s| s.info()).collect()
    }

    /// The stateful operators whose state is served as a view.
    pub fn served_states(&self) -> Vec<ServedState> {
        self.graph().served_states.clone()
    }

    /// Replaces the state of operator `name` by `entries` (CBOR key, CBOR
    /// [`Stored`](super::durable::Stored) state, as its
    /// [`StateDelta`]s wrote them): what a server does at start-up, before
    /// the first batch. Returns the number of keys.
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] when no operator has that name, or an entry does not
    /// decode as the operator's key and state types (the message names the
    /// operator and the types).
    pub fn restore_state(
        &self,
        name: &str,
        entries: &mut dyn Iterator<Item = (Vec<u8>, Vec<u8>)>,
    ) -> Result<usize> {
        let op = self
            .graph()
            .states
            .iter()
            .find(|s| s.info().name == name)
            .cloned()
            .ok_or_else(|| Error::plan(format!("no stateful operator is named `{name}`")))?;
        op.restore(entries)
    }

    /// Registers a stateful operator; its default name is
    /// `{kind}-{n}`, `n` counting the stateful operators so far.
    pub(crate) fn add_state(&self, op: Arc<dyn DurableState>) {
        self.graph().states.push(op);
    }

    /// The default name of the next stateful operator of `kind`.
    pub(crate) fn next_state_name(&self, kind: &str) -> String {
        format!("{kind}-{}", self.graph().states.len())
    }

    /// Renames a stateful operator, keeping names unique and valid.
    pub(crate) fn rename_state(&self, op: &Arc<dyn DurableState>, name: &str) -> Result<()> {
        if !super::durable::valid_name(name) {
            return Err(Error::plan(format!(
                "`{name}` cannot name a state: use 1 to 128 of A-Z a-z 0-9 _ . -"
            )));
        }
        let g = self.graph();
        let current = op.info().name;
        if current != name && g.states.iter().any(|s| s.info().name == name) {
            return Err(Error::plan(format!(
                "two stateful operators are named `{name}`: state names must be unique"
            )));
        }
        op.set_name(name.to_owned());
        Ok(())
    }

    /// Serves the state of `op` as the view `name` (which renames it).
    pub(crate) fn serve_state(
        &self,
        op: &Arc<dyn DurableState>,
        name: &str,
        inputs: Arc<[InputId]>,
    ) -> Result<ServedState> {
        {
            let g = self.graph();
            if g.served.iter().any(|v| v.name() == name)
                || g.served_states.iter().any(|v| v.name() == name)
            {
                return Err(Error::plan(format!(
                    "view `{name}` is served twice: view names must be unique"
                )));
            }
        }
        self.rename_state(op, name)?;
        let view = ServedState {
            info: op.info(),
            inputs,
        };
        self.graph().served_states.push(view.clone());
        Ok(view)
    }

    /// Starts the inputs and the clock: from now on a batch runs every
    /// interval, at times that are multiples of the interval. A batch that
    /// overruns delays the next (batches never overlap). The first failed
    /// batch stops the context; [`await_termination`](Self::await_termination)
    /// returns its error.
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] when the context was started before or has no output
    /// operation; an input's error when it cannot start.
    pub fn start(&self) -> Result<()> {
        let mut run = self.run_state();
        if run.phase != Phase::Initialized {
            return Err(Error::plan(
                "a streaming context can be started once (create a new one to restart)",
            ));
        }
        if self.graph().outputs.is_empty() {
            return Err(Error::plan(
                "no output operation is registered: nothing would run (add print, foreach_rdd, save_as_text_files or serve)",
            ));
        }
        let inputs: Vec<_> = self
            .graph()
            .inputs
            .iter()
            .map(|(_, i)| Arc::clone(i))
            .collect();
        for (n, input) in inputs.iter().enumerate() {
            if let Err(e) = input.start() {
                inputs[..n].iter().for_each(|i| i.stop());
                return Err(e);
            }
        }
        let me = self.clone();
        let clock = std::thread::Builder::new()
            .name("lamina-streaming-clock".into())
            .spawn(move || me.clock_loop())
            .map_err(|e| Error::Internal(format!("cannot start the clock thread: {e}")))?;
        run.phase = Phase::Active;
        run.clock = Some(clock);
        Ok(())
    }

    fn clock_loop(&self) {
        let interval = self.inner.interval.as_millis().max(1) as i64;
        // The first batch time: the next multiple of the interval.
        let mut next = (Time::now().millis() / interval + 1) * interval;
        loop {
            // Wait for the batch time, or for a stop.
            {
                let mut run = self.run_state();
                loop {
                    if run.phase == Phase::Stopped {
                        return;
                    }
                    let wait = next - Time::now().millis();
                    if wait <= 0 {
                        break;
                    }
                    run = self
                        .inner
                        .changed
                        .wait_timeout(run, Duration::from_millis(wait as u64))
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
            match self.run_batch(Time::from_millis(next)) {
                Ok(outcome) => {
                    let listener = self
                        .inner
                        .listener
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .clone();
                    if let Some(f) = listener {
                        f(&outcome);
                    }
                }
                Err(e) => {
                    let mut run = self.run_state();
                    run.error.get_or_insert(Error::Execution(format!(
                        "the batch at {} failed: {e}",
                        Time::from_millis(next)
                    )));
                    run.phase = Phase::Stopped;
                    self.inner.changed.notify_all();
                    return;
                }
            }
            next += interval;
        }
    }

    /// Stops the clock after the batch that is running (if any), then stops
    /// the inputs. Records an input received but that no batch took are
    /// dropped. The program is released: the context cannot be started
    /// again.
    pub fn stop(&self) {
        let clock = {
            let mut run = self.run_state();
            run.phase = Phase::Stopped;
            self.inner.changed.notify_all();
            run.clock.take()
        };
        // A stop from inside a batch (the clock thread) cannot wait for itself.
        if let Some(clock) = clock
            && clock.thread().id() != std::thread::current().id()
        {
            let _ = clock.join();
        }
        let graph = std::mem::take(&mut *self.graph());
        for (_, input) in &graph.inputs {
            input.stop();
        }
    }

    /// Waits until the context stops: [`stop`](Self::stop) from another
    /// thread, or a failed batch.
    ///
    /// # Errors
    ///
    /// The error of the batch that stopped the context.
    pub fn await_termination(&self) -> Result<()> {
        self.await_termination_timeout(Duration::MAX).map(|_| ())
    }

    /// Like [`await_termination`](Self::await_termination) for at most
    /// `timeout`; `Ok(true)` when the context stopped.
    ///
    /// # Errors
    ///
    /// As [`await_termination`](Self::await_termination).
    pub fn await_termination_timeout(&self, timeout: Duration) -> Result<bool> {
        let deadline = Instant::now().checked_add(timeout);
        let mut run = self.run_state();
        while run.phase != Phase::Stopped {
            let left = match deadline {
                Some(d) => d.saturating_duration_since(Instant::now()),
                None => Duration::from_secs(3600),
            };
            if left.is_zero() {
                return Ok(false);
            }
            run = self
                .inner
                .changed
                .wait_timeout(run, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        match run.error.take() {
            Some(e) => Err(e),
            None => Ok(true),
        }
    }
}

/// A batch that ran but whose state changes are not applied yet (see
/// [`StreamingContext::run_batch_pending`]).
#[must_use = "a pending batch changes no state until it is committed"]
pub struct PendingBatch {
    on_success: Vec<Box<dyn FnOnce() + Send>>,
    inner: Arc<Inner>,
}

impl fmt::Debug for PendingBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingBatch")
            .field("updates", &self.on_success.len())
            .finish()
    }
}

impl PendingBatch {
    /// The batch's outcome is durable: stateful operators move to the
    /// batch's state.
    pub fn commit(mut self) {
        for f in std::mem::take(&mut self.on_success) {
            f();
        }
    }
}

impl Drop for PendingBatch {
    fn drop(&mut self) {
        self.inner.pending.store(false, Ordering::Release);
    }
}

/// `data` cut into at most `parts` contiguous blocks of near-equal size.
pub(crate) fn split<T>(data: Vec<T>, parts: usize) -> Vec<Vec<T>> {
    let len = data.len();
    let parts = parts.clamp(1, len.max(1));
    let mut out = Vec::with_capacity(parts);
    let mut it = data.into_iter();
    for i in 0..parts {
        let n = (i + 1) * len / parts - i * len / parts;
        out.push(it.by_ref().take(n).collect());
    }
    out
}
