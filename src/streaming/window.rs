//! Window operations: a stream whose RDD at time `t` covers the batches of
//! the last `length` (Spark's `window`, `reduceByKeyAndWindow`, ...).
//!
//! A window needs the batches it covers after their inputs are gone, so
//! every batch of the windowed stream is materialised once — collected into
//! blocks and kept in memory until it leaves the window. The windowed
//! stream has an RDD at every multiple of its slide; output operations over
//! it run then (see [`DStream::slide`]).
//!
//! `reduce_by_key_and_window_inverse` is incremental: the window at `t` is
//! the window at `t - slide` plus the batches that entered, minus (with the
//! inverse function) those that left — its cost per slide follows those
//! batches and the keys of the window, not the window's records.
//!
//! Window contents live in memory, and — in a context whose batches are
//! committed (the server's, see [`StreamingContext::set_durable`]) — each
//! batch a window keeps is also reported as a state change (CBOR of its
//! elements, removed when it leaves the window), committed with the batch,
//! and restored at start-up: after `kill -9` a window holds exactly the
//! batches it held at the last commit. A batch becomes part of the window's
//! memory only when it succeeded (a failed batch leaves nothing behind).
//! A windowed stream cannot be served (its results overlap).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::partitioner::{FastMap, fast_map};
use crate::rdd::{Data, Key, Rdd};
use crate::streaming::Time;
use crate::streaming::context::{BatchOutcome, StreamingContext, split};
use crate::streaming::dstream::{BatchScope, DStream};
use crate::streaming::durable::{
    DurableState, SharedName, StateChange, StateData, StateDelta, StateInfo, decode_entry, encode,
    name_of,
};
use crate::streaming::input::InputBatch;
use crate::streaming::output::OutputOp;

/// Blocks of one batch.
type Blocks<T> = Vec<Arc<Vec<T>>>;

/// The last result of an incremental window, with its time (ms).
type Previous<T> = Arc<Mutex<Option<(i64, Blocks<T>)>>>;

/// Materialised batches of a stream, by time, oldest first; and the batch
/// running now, until it succeeds.
struct Kept<T> {
    committed: VecDeque<(Time, Blocks<T>)>,
    pending: Option<(Time, Blocks<T>)>,
}

impl<T> Default for Kept<T> {
    fn default() -> Self {
        Kept {
            committed: VecDeque::new(),
            pending: None,
        }
    }
}

type Remembered<T> = Arc<Mutex<Kept<T>>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

/// Checks that `what` is a positive multiple of `unit`.
fn check_multiple(what: &str, d: Duration, unit: Duration) -> Result<()> {
    let (d_ms, unit_ms) = (d.as_millis(), unit.as_millis().max(1));
    if d.is_zero() || !d_ms.is_multiple_of(unit_ms) || !d.subsec_nanos().is_multiple_of(1_000_000) {
        return Err(Error::plan(format!(
            "the {what} ({d:?}) must be a positive multiple of the stream's slide ({unit:?}, the batch interval unless windowed)"
        )));
    }
    Ok(())
}

/// The output operation that materialises every batch of a stream for the
/// windows over it, and forgets batches older than `keep`.
struct Remember<T: Data> {
    stream: DStream<T>,
    keep: Duration,
    store: Remembered<T>,
    name: SharedName,
}

impl<T: StateData> OutputOp for Remember<T> {
    fn run(&self, scope: &BatchScope, _: &mut BatchOutcome) -> Result<()> {
        let time = scope.time();
        if !self.stream.has_rdd_at(time) {
            return Ok(());
        }
        let rdd = scope.rdd(&self.stream)?;
        let blocks: Blocks<T> = rdd
            .run(|_, it| Ok(Arc::new(it.collect::<Vec<T>>())))?
            .into_iter()
            .filter(|b| !b.is_empty())
            .collect();
        let oldest = time.millis() - ms(self.keep);
        if self.stream.ssc.is_durable() {
            let mut changes = Vec::new();
            let all: Vec<&T> = blocks.iter().flat_map(|b| b.iter()).collect();
            changes.push(StateChange {
                key: encode(&time.millis())?,
                state: Some(encode(&(all, time.millis()))?),
            });
            for (t, _) in lock(&self.store).committed.iter() {
                if t.millis() <= oldest {
                    changes.push(StateChange {
                        key: encode(&t.millis())?,
                        state: None,
                    });
                }
            }
            scope.record_state(StateDelta {
                operator: name_of(&self.name),
                changes,
            });
        }
        // Seen by this batch's windows; kept once the batch succeeded (a
        // batch run again replaces it).
        lock(&self.store).pending = Some((time, blocks));
        let store = Arc::clone(&self.store);
        scope.on_success(move || {
            let mut kept = lock(&store);
            if let Some((t, b)) = kept.pending.take() {
                kept.committed.retain(|(old, _)| *old != t);
                kept.committed.push_back((t, b));
            }
            kept.committed.retain(|(t, _)| t.millis() > oldest);
        });
        Ok(())
    }
}

impl<T: StateData> DurableState for Remember<T> {
    fn info(&self) -> StateInfo {
        StateInfo {
            name: name_of(&self.name),
            kind: "window",
            key_type: "i64 (batch time, ms)",
            state_type: std::any::type_name::<Vec<T>>(),
        }
    }

    fn set_name(&self, name: String) {
        *self.name.lock().unwrap_or_else(|p| p.into_inner()) = name;
    }

    fn restore(&self, entries: &mut dyn Iterator<Item = (Vec<u8>, Vec<u8>)>) -> Result<usize> {
        let info = self.info();
        let parts = self.stream.ssc.context().default_parallelism().max(1);
        let mut batches = Vec::new();
        for (k, v) in entries {
            let (time, (elements, _)) = decode_entry::<i64, Vec<T>>(&info, &k, &v)?;
            let blocks: Blocks<T> = split(elements, parts)
                .into_iter()
                .filter(|b| !b.is_empty())
                .map(Arc::new)
                .collect();
            batches.push((Time::from_millis(time), blocks));
        }
        batches.sort_by_key(|(t, _)| *t);
        let n = batches.len();
        let mut kept = lock(&self.store);
        kept.committed = batches.into();
        kept.pending = None;
        Ok(n)
    }
}

/// Registers the materialisation of `stream`'s batches for `keep`.
fn remember<T: StateData>(stream: &DStream<T>, keep: Duration) -> Remembered<T> {
    let ssc: &StreamingContext = &stream.ssc;
    let op = Arc::new(Remember {
        stream: stream.clone(),
        keep,
        store: Arc::default(),
        name: Arc::new(Mutex::new(ssc.next_state_name("window"))),
    });
    let store = Arc::clone(&op.store);
    ssc.add_state(Arc::clone(&op) as Arc<dyn DurableState>);
    ssc.add_output(op);
    store
}

/// The blocks of the remembered batches with time in `(from, to]`.
fn blocks_between<T: Data>(store: &Remembered<T>, from: i64, to: i64) -> Blocks<T> {
    let kept = lock(store);
    let pending_time = kept.pending.as_ref().map(|(t, _)| *t);
    kept.committed
        .iter()
        .filter(|(t, _)| Some(*t) != pending_time)
        .chain(kept.pending.iter())
        .filter(|(t, _)| t.millis() > from && t.millis() <= to)
        .flat_map(|(_, b)| b.iter().cloned())
        .collect()
}

impl<T: StateData> DStream<T> {
    /// At every multiple of `slide`, the elements of the batches of the
    /// last `length` (Spark's `window`). Both are multiples of this
    /// stream's slide (the batch interval unless it is windowed already).
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] when `length` or `slide` is not a positive multiple
    /// of this stream's slide.
    pub fn window(&self, length: Duration, slide: Duration) -> Result<DStream<T>> {
        check_multiple("window length", length, self.slide)?;
        check_multiple("slide", slide, self.slide)?;
        let store = remember(self, length);
        Ok(
            DStream::from_fn(&self.ssc, Arc::clone(&self.inputs), move |scope| {
                let t = scope.time().millis();
                let blocks = blocks_between(&store, t - ms(length), t);
                Ok(InputBatch::from_shared_blocks(scope.context(), blocks).rdd)
            })
            .windowed_with_slide(slide),
        )
    }

    /// At every slide, the number of elements in the window.
    ///
    /// # Errors
    ///
    /// As [`window`](Self::window).
    pub fn count_by_window(&self, length: Duration, slide: Duration) -> Result<DStream<i64>> {
        Ok(self.window(length, slide)?.count())
    }

    /// At every slide, the window's elements merged with `f`.
    ///
    /// # Errors
    ///
    /// As [`window`](Self::window).
    pub fn reduce_by_window(
        &self,
        f: impl Fn(T, T) -> T + Send + Sync + 'static,
        length: Duration,
        slide: Duration,
    ) -> Result<DStream<T>> {
        Ok(self.window(length, slide)?.reduce(f))
    }
}

impl<T: Key + StateData> DStream<T> {
    /// At every slide, each distinct element of the window with its count
    /// (incremental; keys whose count drops to 0 are dropped).
    ///
    /// # Errors
    ///
    /// As [`window`](Self::window).
    pub fn count_by_value_and_window(
        &self,
        length: Duration,
        slide: Duration,
    ) -> Result<DStream<(T, i64)>> {
        self.map(|x| (x, 1i64)).reduce_by_key_and_window_inverse(
            |a, b| a + b,
            |a, b| a - b,
            length,
            slide,
            |(_, n)| *n != 0,
        )
    }
}

impl<K: Key + StateData, V: StateData> DStream<(K, V)> {
    /// At every slide, the values of each key in the window merged with
    /// `f` (computed from the window's records each time).
    ///
    /// # Errors
    ///
    /// As [`window`](Self::window).
    pub fn reduce_by_key_and_window(
        &self,
        f: impl Fn(V, V) -> V + Send + Sync + 'static,
        length: Duration,
        slide: Duration,
    ) -> Result<DStream<(K, V)>> {
        Ok(self.window(length, slide)?.reduce_by_key(f))
    }

    /// [`reduce_by_key_and_window`](Self::reduce_by_key_and_window),
    /// incrementally: the previous window's result, plus the batches that
    /// entered (merged with `f`), minus those that left (removed with
    /// `inverse`, which must undo `f`: `inverse(f(a, b), b) == a`). Keys
    /// for which `keep` returns false are dropped from the result — use it
    /// to drop keys whose value went back to the identity (a count of 0);
    /// it must not drop a key that still has values in the window.
    ///
    /// # Errors
    ///
    /// As [`window`](Self::window).
    pub fn reduce_by_key_and_window_inverse(
        &self,
        f: impl Fn(V, V) -> V + Send + Sync + 'static,
        inverse: impl Fn(V, V) -> V + Send + Sync + 'static,
        length: Duration,
        slide: Duration,
        keep: impl Fn(&(K, V)) -> bool + Send + Sync + 'static,
    ) -> Result<DStream<(K, V)>> {
        check_multiple("window length", length, self.slide)?;
        check_multiple("slide", slide, self.slide)?;
        let f = Arc::new(f);
        // Each batch reduced once; the windows work on these.
        let g = Arc::clone(&f);
        let reduced = self.reduce_by_key(move |a, b| g(a, b));
        // Batches leaving at `t` arrived in (t - length - slide, t - length].
        let store = remember(&reduced, length + slide);
        let previous: Previous<(K, V)> = Arc::default();
        let (length_ms, slide_ms) = (ms(length), ms(slide));
        Ok(
            DStream::from_fn(&self.ssc, Arc::clone(&self.inputs), move |scope| {
                let t = scope.time().millis();
                let ctx = scope.context();
                let last = lock(&previous).take();
                let mut merged: FastMap<K, V> = fast_map(0);
                let add = |merged: &mut FastMap<K, V>, blocks: &Blocks<(K, V)>, sub: bool| {
                    for (k, v) in blocks.iter().flat_map(|b| b.iter()) {
                        match merged.remove(k) {
                            Some(acc) if sub => {
                                merged.insert(k.clone(), inverse(acc, v.clone()));
                            }
                            Some(acc) => {
                                merged.insert(k.clone(), f(acc, v.clone()));
                            }
                            // Nothing to remove from: the key was dropped
                            // (its value was the identity).
                            None if sub => {}
                            None => {
                                merged.insert(k.clone(), v.clone());
                            }
                        }
                    }
                };
                match last {
                    // Incremental: the last window, plus what entered,
                    // minus what left.
                    Some((pt, blocks)) if pt == t - slide_ms => {
                        add(&mut merged, &blocks, false);
                        add(&mut merged, &blocks_between(&store, t - slide_ms, t), false);
                        let leaving =
                            blocks_between(&store, t - length_ms - slide_ms, t - length_ms);
                        add(&mut merged, &leaving, true);
                    }
                    // First window (or after a gap): from the batches.
                    _ => add(
                        &mut merged,
                        &blocks_between(&store, t - length_ms, t),
                        false,
                    ),
                }
                let result: Vec<(K, V)> = merged.into_iter().filter(|kv| keep(kv)).collect();
                let parts = split(result, ctx.default_parallelism())
                    .into_iter()
                    .map(Arc::new)
                    .collect::<Blocks<(K, V)>>();
                *lock(&previous) = Some((t, parts.clone()));
                let rdd: Rdd<(K, V)> = InputBatch::from_shared_blocks(ctx, parts).rdd;
                Ok(rdd)
            })
            .windowed_with_slide(slide),
        )
    }
}
