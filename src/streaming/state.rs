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
//! The state is data (serde, CBOR): each batch's changes go into the
//! batch's outcome, which the server commits with the batch, and a server
//! hands the committed state back at start-up (see [`durable`](super::durable)).

use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};
use crate::rdd::{Data, Key};
use crate::streaming::Time;
use crate::streaming::context::BatchOutcome;
use crate::streaming::dstream::{BatchScope, DStream};
use crate::streaming::durable::{
    DurableState, SharedName, StateChange, StateData, StateDelta, StateInfo, decode_entry, encode,
    name_of,
};
use crate::streaming::input::InputBatch;
use crate::streaming::output::OutputOp;

/// Blocks of `(key, state)`.
type StateBlocks<K, S> = Vec<Arc<Vec<(K, S)>>>;

/// Computes a stream every batch although no output needs it then (a
/// stateful stream must see every batch).
pub(crate) struct EveryBatch<T: Data>(pub(crate) DStream<T>);

impl<T: Data> OutputOp for EveryBatch<T> {
    fn run(&self, scope: &BatchScope, _: &mut BatchOutcome) -> Result<()> {
        if self.0.has_rdd_at(scope.time()) {
            scope.rdd(&self.0)?;
        }
        Ok(())
    }
}

/// The state of an `update_state_by_key`.
struct UpdateState<K, S> {
    name: SharedName,
    blocks: Arc<Mutex<StateBlocks<K, S>>>,
    parts: usize,
}

impl<K: Key + StateData, S: StateData> DurableState for UpdateState<K, S> {
    fn info(&self) -> StateInfo {
        StateInfo {
            name: name_of(&self.name),
            kind: "update_state_by_key",
            key_type: std::any::type_name::<K>(),
            state_type: std::any::type_name::<S>(),
        }
    }

    fn set_name(&self, name: String) {
        *self.name.lock().unwrap_or_else(|p| p.into_inner()) = name;
    }

    fn restore(&self, entries: &mut dyn Iterator<Item = (Vec<u8>, Vec<u8>)>) -> Result<usize> {
        let info = self.info();
        let mut all = Vec::new();
        for (k, v) in entries {
            let (key, (state, _)) = decode_entry::<K, S>(&info, &k, &v)?;
            all.push((key, state));
        }
        let n = all.len();
        *self.blocks.lock().unwrap_or_else(|p| p.into_inner()) =
            crate::streaming::context::split(all, self.parts)
                .into_iter()
                .filter(|b| !b.is_empty())
                .map(Arc::new)
                .collect();
        Ok(n)
    }
}

impl<K: Key + StateData, V: Data> DStream<(K, V)> {
    /// Every batch, for every key that has state or new values:
    /// `state = f(the batch's values of the key, the previous state)`;
    /// `None` removes the key. The stream's RDD is the state after the
    /// batch (every key that has one). Spark's `updateStateByKey`.
    ///
    /// Keys and states are serde types: the state is kept as data, so a
    /// server commits it with each batch and restores it after a restart
    /// (see [`durable`](super::durable)). A batch records as changed the
    /// keys that had values, were added or removed, and those whose state
    /// `f` changed without values (found by comparing encodings).
    pub fn update_state_by_key<S: StateData>(
        &self,
        f: impl Fn(Vec<V>, Option<S>) -> Option<S> + Send + Sync + 'static,
    ) -> DStream<(K, S)> {
        self.update_state_by_key_with_time(move |_, _, values, state| f(values, state))
    }

    /// [`update_state_by_key`](Self::update_state_by_key) whose function
    /// also gets the batch time and the key.
    pub fn update_state_by_key_with_time<S: StateData>(
        &self,
        f: impl Fn(Time, &K, Vec<V>, Option<S>) -> Option<S> + Send + Sync + 'static,
    ) -> DStream<(K, S)> {
        let parent = self.clone();
        let op = Arc::new(UpdateState::<K, S> {
            name: Arc::new(Mutex::new(self.ssc.next_state_name("update_state_by_key"))),
            blocks: Arc::default(),
            parts: self.ssc.context().default_parallelism().max(1),
        });
        let (state, name) = (Arc::clone(&op.blocks), Arc::clone(&op.name));
        let f = Arc::new(f);
        let mut stream = DStream::from_fn(&self.ssc, Arc::clone(&self.inputs), move |scope| {
            let ctx = scope.context();
            let time = scope.time();
            let batch = scope.rdd(&parent)?;
            let old = state.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let old_rdd = InputBatch::from_shared_blocks(ctx, old).rdd;
            let f = Arc::clone(&f);
            let now = time.millis();
            let parts = batch.cogroup(&old_rdd).run(move |_, it| {
                let mut kept: Vec<(K, S)> = Vec::new();
                let mut changes = Vec::new();
                for (k, (values, olds)) in it {
                    let had_values = !values.is_empty();
                    let old = olds.into_iter().next();
                    let existed = old.is_some();
                    // Without values, a state is unchanged unless its
                    // encoding says otherwise.
                    let before = match (&old, had_values) {
                        (Some(s), false) => Some(encode(s)?),
                        _ => None,
                    };
                    match f(time, &k, values, old) {
                        Some(s) => {
                            let changed = match &before {
                                Some(b) => encode(&s)? != *b,
                                None => true,
                            };
                            if changed {
                                changes.push(StateChange {
                                    key: encode(&k)?,
                                    state: Some(encode(&(&s, now))?),
                                });
                            }
                            kept.push((k, s));
                        }
                        None if existed => changes.push(StateChange {
                            key: encode(&k)?,
                            state: None,
                        }),
                        None => {}
                    }
                }
                Ok((Arc::new(kept), changes))
            })?;
            let mut blocks: StateBlocks<K, S> = Vec::with_capacity(parts.len());
            let mut changes = Vec::new();
            for (block, c) in parts {
                if !block.is_empty() {
                    blocks.push(block);
                }
                changes.extend(c);
            }
            scope.record_state(StateDelta {
                operator: name_of(&name),
                changes,
            });
            let committed = Arc::clone(&state);
            let next = blocks.clone();
            scope.on_success(move || {
                *committed.lock().unwrap_or_else(|p| p.into_inner()) = next;
            });
            Ok(InputBatch::from_shared_blocks(ctx, blocks).rdd)
        })
        .inherit(self)
        .stateful();
        let op: Arc<dyn DurableState> = op;
        self.ssc.add_state(Arc::clone(&op));
        stream.state = Some(op);
        self.ssc.add_output(Arc::new(EveryBatch(stream.clone())));
        stream
    }
}

impl<T: Data> DStream<T> {
    /// Names the state of the stateful operator this stream is the output
    /// of (`update_state_by_key`, or either stream of a `map_with_state`):
    /// the name its state is committed and restored under. Default names
    /// (`update_state_by_key-0`, ...) follow declaration order, so name the
    /// state of a program you will change.
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] when the stream is no operator's state, the name is
    /// invalid (1 to 128 of `[A-Za-z0-9_.-]`) or another operator has it.
    pub fn name_state(&self, name: &str) -> Result<()> {
        let op = self.state.as_ref().ok_or_else(|| {
            Error::plan(format!(
                "cannot name state `{name}`: this stream is not the output of update_state_by_key or map_with_state"
            ))
        })?;
        self.ssc.rename_state(op, name)
    }
}

impl<S: StateData> DStream<(String, S)> {
    /// Serves the state of the stateful operator this stream is the output
    /// of (`update_state_by_key`, or a `map_with_state`'s
    /// [`state_snapshots`](MapWithState::state_snapshots)) as the view
    /// `name`, which also names the state. The server answers each key's
    /// committed state as JSON — no batch-layer merge: the state is the
    /// view, and it survives restarts with the batch commits.
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] when the stream is no operator's state, or the name
    /// is invalid or taken by a view or another operator's state.
    pub fn serve_state_as(&self, name: impl Into<String>) -> Result<crate::streaming::ServedState> {
        let name = name.into();
        let op = self.state.as_ref().ok_or_else(|| {
            Error::plan(format!(
                "view `{name}`: serve_state_as serves the state of update_state_by_key or map_with_state (its state_snapshots); this stream is not one"
            ))
        })?;
        self.ssc.serve_state(op, &name, Arc::clone(&self.inputs))
    }
}

/// A key's state as a [`map_with_state`](DStream::map_with_state)
/// function sees it (Spark's `State`).
#[derive(Debug)]
pub struct State<S> {
    value: Option<S>,
    timing_out: bool,
}

impl<S> State<S> {
    /// Whether the key has state.
    pub fn exists(&self) -> bool {
        self.value.is_some()
    }

    /// The state, if any.
    pub fn get(&self) -> Option<&S> {
        self.value.as_ref()
    }

    /// Sets the state.
    ///
    /// # Errors
    ///
    /// [`Error::Plan`](crate::Error::Plan) when the key is timing out: its
    /// state is being removed.
    pub fn update(&mut self, state: S) -> Result<()> {
        if self.timing_out {
            return Err(crate::Error::plan(
                "cannot update the state of a key that is timing out",
            ));
        }
        self.value = Some(state);
        Ok(())
    }

    /// Removes the state.
    pub fn remove(&mut self) {
        self.value = None;
    }

    /// Whether the call is for a key that timed out (no new data for the
    /// spec's timeout): its state is removed after the call.
    pub fn is_timing_out(&self) -> bool {
        self.timing_out
    }
}

/// The mapping function of a [`StateSpec`].
type MapFn<K, V, S, U> = dyn Fn(Time, &K, Option<V>, &mut State<S>) -> U + Send + Sync;

/// What [`map_with_state`](DStream::map_with_state) does (Spark's
/// `StateSpec`): a function called once per record of a key with new data
/// (with the record's value) and once for a key that timed out (with
/// `None`), and an optional idle timeout.
pub struct StateSpec<K, V, S, U> {
    func: Arc<MapFn<K, V, S, U>>,
    timeout: Option<std::time::Duration>,
    name: Option<String>,
    initial: Option<InitialFn<K, S>>,
}

/// Collects a spec's initial state.
type InitialFn<K, S> = Arc<dyn Fn() -> Result<Vec<(K, S)>> + Send + Sync>;

impl<K, V, S, U> std::fmt::Debug for StateSpec<K, V, S, U> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateSpec")
            .field("timeout", &self.timeout)
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<K, V, S, U> StateSpec<K, V, S, U> {
    /// A spec calling `f(batch time, key, value, state)`.
    pub fn function(
        f: impl Fn(Time, &K, Option<V>, &mut State<S>) -> U + Send + Sync + 'static,
    ) -> Self {
        StateSpec {
            func: Arc::new(f),
            timeout: None,
            name: None,
            initial: None,
        }
    }

    /// The state to start from (Spark's `initialState`): its keys' states
    /// before the first batch, which takes them in and commits them with
    /// its own changes (a key of both: the function sees the initial
    /// state). Ignored when the operator's state was restored (a server
    /// restarting from its committed state).
    pub fn initial_state(mut self, rdd: crate::rdd::Rdd<(K, S)>) -> Self
    where
        K: Data,
        S: Data,
    {
        self.initial = Some(Arc::new(move || rdd.collect()));
        self
    }

    /// Names the operator's state (see [`DStream::name_state`]); checked
    /// when the spec is used.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = Some(name.into());
        self
    }

    /// Removes a key's state once it has had no new data for `idle`; the
    /// function is called for it one last time, timing out.
    pub fn timeout(mut self, idle: std::time::Duration) -> Self {
        self.timeout = Some(idle);
        self
    }
}

/// One partition of a `map_with_state` state: each key's state and the
/// batch time (ms) of its last data, and the keys in the order of their
/// last data (entries of keys that got data again later are stale and
/// skipped) — so finding the keys that timed out costs the keys that did.
struct Part<K, S> {
    states: crate::partitioner::FastMap<K, (S, i64)>,
    by_time: std::collections::VecDeque<(i64, K)>,
}

impl<K: Key, S> Default for Part<K, S> {
    fn default() -> Self {
        Part {
            states: crate::partitioner::fast_map(0),
            by_time: std::collections::VecDeque::new(),
        }
    }
}

/// A key's state after a batch: `None` when removed.
type Change<K, S> = (K, Option<(S, i64)>);

/// The last batch's changes (its time in ms), one list per partition.
type BatchChanges<K, S> = Arc<Mutex<Option<(i64, Arc<Vec<Vec<Change<K, S>>>>)>>>;

/// The state of a `map_with_state`, per partition.
struct MapState<K, S> {
    name: SharedName,
    parts: Arc<Vec<Mutex<Part<K, S>>>>,
}

impl<K: Key + StateData, S: StateData> DurableState for MapState<K, S> {
    fn info(&self) -> StateInfo {
        StateInfo {
            name: name_of(&self.name),
            kind: "map_with_state",
            key_type: std::any::type_name::<K>(),
            state_type: std::any::type_name::<S>(),
        }
    }

    fn set_name(&self, name: String) {
        *self.name.lock().unwrap_or_else(|p| p.into_inner()) = name;
    }

    fn restore(&self, entries: &mut dyn Iterator<Item = (Vec<u8>, Vec<u8>)>) -> Result<usize> {
        use crate::partitioner::Partitioner;
        let info = self.info();
        let n = self.parts.len();
        let by = crate::partitioner::HashPartitioner::new(n);
        let mut fresh: Vec<Part<K, S>> = (0..n).map(|_| Part::default()).collect();
        let mut keys = 0;
        for (k, v) in entries {
            let (key, (state, last)) = decode_entry::<K, S>(&info, &k, &v)?;
            let part = &mut fresh[Partitioner::partition(&by, &key)];
            part.by_time.push_back((last, key.clone()));
            part.states.insert(key, (state, last));
            keys += 1;
        }
        for (slot, mut part) in self.parts.iter().zip(fresh) {
            // Idle timeouts walk keys in the order of their last data.
            part.by_time
                .make_contiguous()
                .sort_by_key(|(last, _)| *last);
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = part;
        }
        Ok(keys)
    }
}

impl<K: Key + StateData, V: Data> DStream<(K, V)> {
    /// Spark's `mapWithState`: the spec's function runs for every record
    /// of a batch (in order, per key) and for every key that timed out —
    /// only for those, so a batch costs the keys it touches, not every key
    /// with state. The stream holds the function's results; its
    /// [`state_snapshots`](MapWithState::state_snapshots) the state after
    /// each batch. The new state replaces the old one only when the batch
    /// succeeded.
    ///
    /// Keys and states are serde types: a server commits each batch's
    /// changes (the keys touched or timed out) and restores the state after
    /// a restart, the time of each key's last data included.
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] when the spec names the state with an invalid name
    /// or one another operator has.
    pub fn map_with_state<S: StateData, U: Data>(
        &self,
        spec: StateSpec<K, V, S, U>,
    ) -> Result<MapWithState<K, S, U>> {
        let parts = self.ssc.context().default_parallelism().max(1);
        let state: Arc<Vec<Mutex<Part<K, S>>>> =
            Arc::new((0..parts).map(|_| Mutex::new(Part::default())).collect());
        let op = Arc::new(MapState {
            name: Arc::new(Mutex::new(self.ssc.next_state_name("map_with_state"))),
            parts: Arc::clone(&state),
        });
        let op_name = Arc::clone(&op.name);
        let op: Arc<dyn DurableState> = op;
        self.ssc.add_state(Arc::clone(&op));
        if let Some(name) = &spec.name {
            self.ssc.rename_state(&op, name)?;
        }
        let changes: BatchChanges<K, S> = Arc::default();
        let parent = self.clone();
        let func = Arc::clone(&spec.func);
        let timeout_ms = spec.timeout.map(|d| d.as_millis() as i64);
        let (st, ch) = (Arc::clone(&state), Arc::clone(&changes));
        // Taken in by the first batch that succeeds, unless state was
        // restored before it.
        let initial = Arc::new(Mutex::new(spec.initial));
        let mapped = DStream::from_fn(&self.ssc, Arc::clone(&self.inputs), move |scope| {
            let time = scope.time();
            let now = time.millis();
            let partitioner = crate::partitioner::HashPartitioner::new(parts);
            let batch = scope.rdd(&parent)?.partition_by(partitioner.clone());
            let first = initial.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let restored = st.iter().any(|p| {
                !p.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .states
                    .is_empty()
            });
            let seed: Arc<Vec<Vec<(K, S)>>> = match first {
                Some(collect) if !restored => {
                    use crate::partitioner::Partitioner;
                    let mut by_part: Vec<Vec<(K, S)>> = (0..parts).map(|_| Vec::new()).collect();
                    for (k, s) in collect()? {
                        by_part[partitioner.partition(&k)].push((k, s));
                    }
                    Arc::new(by_part)
                }
                _ => Arc::new(Vec::new()),
            };
            let taken = Arc::clone(&initial);
            scope.on_success(move || {
                taken.lock().unwrap_or_else(|p| p.into_inner()).take();
            });
            let (state, func) = (Arc::clone(&st), Arc::clone(&func));
            let results = batch.run(move |tc, it| {
                let part = state[tc.partition()]
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                let mut touched: crate::partitioner::FastMap<K, Option<(S, i64)>> =
                    crate::partitioner::fast_map(0);
                for (k, s) in seed.get(tc.partition()).into_iter().flatten() {
                    touched.insert(k.clone(), Some((s.clone(), now)));
                }
                let mut out = Vec::new();
                for (k, v) in it {
                    let current = match touched.get(&k) {
                        Some(c) => c.as_ref().map(|(s, _)| s.clone()),
                        None => part.states.get(&k).map(|(s, _)| s.clone()),
                    };
                    let mut st = State {
                        value: current,
                        timing_out: false,
                    };
                    out.push(func(time, &k, Some(v), &mut st));
                    touched.insert(k, st.value.map(|s| (s, now)));
                }
                if let Some(t) = timeout_ms {
                    for (last, k) in part.by_time.iter().take_while(|(last, _)| *last <= now - t) {
                        let live = part.states.get(k).is_some_and(|(_, l)| l == last);
                        if !live || touched.contains_key(k) {
                            continue;
                        }
                        let mut st = State {
                            value: part.states.get(k).map(|(s, _)| s.clone()),
                            timing_out: true,
                        };
                        out.push(func(time, k, None, &mut st));
                        touched.insert(k.clone(), None);
                    }
                }
                let changes = touched.into_iter().collect::<Vec<Change<K, S>>>();
                let mut encoded = Vec::with_capacity(changes.len());
                for (k, change) in &changes {
                    match change {
                        Some(stored) => encoded.push(StateChange {
                            key: encode(k)?,
                            state: Some(encode(stored)?),
                        }),
                        None if part.states.contains_key(k) => encoded.push(StateChange {
                            key: encode(k)?,
                            state: None,
                        }),
                        None => {}
                    }
                }
                Ok((out, changes, encoded))
            })?;
            let mut outputs = Vec::with_capacity(results.len());
            let mut all_changes = Vec::with_capacity(results.len());
            let mut delta = StateDelta {
                operator: name_of(&op_name),
                changes: Vec::new(),
            };
            for (out, change, encoded) in results {
                outputs.push(Arc::new(out));
                all_changes.push(change);
                delta.changes.extend(encoded);
            }
            scope.record_state(delta);
            let all_changes = Arc::new(all_changes);
            *ch.lock().unwrap_or_else(|p| p.into_inner()) = Some((now, Arc::clone(&all_changes)));
            let commit_to = Arc::clone(&st);
            scope.on_success(move || {
                for (p, changes) in all_changes.iter().enumerate() {
                    let mut part = commit_to[p].lock().unwrap_or_else(|e| e.into_inner());
                    for (k, change) in changes {
                        match change {
                            Some((s, last)) => {
                                part.by_time.push_back((*last, k.clone()));
                                part.states.insert(k.clone(), (s.clone(), *last));
                            }
                            None => {
                                part.states.remove(k);
                            }
                        }
                    }
                    if let Some(t) = timeout_ms {
                        // Entries up to the timeout line are either timed
                        // out (removed above) or stale.
                        while part.by_time.front().is_some_and(|(last, k)| {
                            *last <= now - t || part.states.get(k).is_none_or(|(_, l)| l != last)
                        }) {
                            part.by_time.pop_front();
                        }
                    }
                }
            });
            Ok(InputBatch::from_shared_blocks(scope.context(), outputs).rdd)
        })
        .inherit(self)
        .stateful();
        let mut mapped = mapped;
        mapped.state = Some(Arc::clone(&op));
        self.ssc.add_output(Arc::new(EveryBatch(mapped.clone())));
        let main = mapped.clone();
        let snapshots = DStream::from_fn(&self.ssc, Arc::clone(&self.inputs), move |scope| {
            // The batch's changes, over the state before it.
            scope.rdd(&main)?;
            let now = scope.time().millis();
            let changes = changes.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let blocks: Vec<Arc<Vec<(K, S)>>> = state
                .iter()
                .enumerate()
                .map(|(p, part)| {
                    let part = part.lock().unwrap_or_else(|e| e.into_inner());
                    let mut merged: crate::partitioner::FastMap<K, S> = part
                        .states
                        .iter()
                        .map(|(k, (s, _))| (k.clone(), s.clone()))
                        .collect();
                    if let Some((t, changes)) = &changes
                        && *t == now
                    {
                        for (k, change) in &changes[p] {
                            match change {
                                Some((s, _)) => {
                                    merged.insert(k.clone(), s.clone());
                                }
                                None => {
                                    merged.remove(k);
                                }
                            }
                        }
                    }
                    Arc::new(merged.into_iter().collect())
                })
                .collect();
            Ok(InputBatch::from_shared_blocks(scope.context(), blocks).rdd)
        })
        .inherit(self)
        .stateful();
        let mut snapshots = snapshots;
        snapshots.state = Some(op);
        Ok(MapWithState { mapped, snapshots })
    }
}

/// The streams of a [`map_with_state`](DStream::map_with_state).
#[derive(Debug, Clone)]
pub struct MapWithState<K: Data, S: Data, U: Data> {
    mapped: DStream<U>,
    snapshots: DStream<(K, S)>,
}

impl<K: Data, S: Data, U: Data> MapWithState<K, S, U> {
    /// What the function returned, every batch.
    pub fn stream(&self) -> &DStream<U> {
        &self.mapped
    }

    /// Every key's state after each batch (costs every key with state).
    pub fn state_snapshots(&self) -> &DStream<(K, S)> {
        &self.snapshots
    }
}
