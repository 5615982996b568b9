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
//! Window contents live in memory: they are not part of the server's
//! micro-batch commit yet, and a windowed stream cannot be served.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::partitioner::{FastMap, fast_map};
use crate::rdd::{Data, Key, Rdd};
use crate::streaming::Time;
use crate::streaming::context::{BatchOutcome, split};
use crate::streaming::dstream::{BatchScope, DStream};
use crate::streaming::input::InputBatch;
use crate::streaming::output::OutputOp;

/// Blocks of one batch.
type Blocks<T> = Vec<Arc<Vec<T>>>;

/// The last result of an incremental window, with its time (ms).
type Previous<T> = Arc<Mutex<Option<(i64, Blocks<T>)>>>;

/// Materialised batches of a stream, by time, oldest first.
type Remembered<T> = Arc<Mutex<VecDeque<(Time, Blocks<T>)>>>;

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
}

impl<T: Data> OutputOp for Remember<T> {
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
        let mut store = lock(&self.store);
        // A batch run again (after a failure) replaces what it kept.
        store.retain(|(t, _)| *t != time);
        store.push_back((time, blocks));
        let oldest = time.millis() - ms(self.keep);
        store.retain(|(t, _)| t.millis() > oldest);
        Ok(())
    }
}

/// Registers the materialisation of `stream`'s batches for `keep`.
fn remember<T: Data>(stream: &DStream<T>, keep: Duration) -> Remembered<T> {
    let store: Remembered<T> = Arc::default();
    stream.ssc.add_output(Arc::new(Remember {
        stream: stream.clone(),
        keep,
        store: Arc::clone(&store),
    }));
    store
}

/// The blocks of the remembered batches with time in `(from, to]`.
fn blocks_between<T: Data>(store: &Remembered<T>, from: i64, to: i64) -> Blocks<T> {
    lock(store)
        .iter()
        .filter(|(t, _)| t.millis() > from && t.millis() <= to)
        .flat_map(|(_, b)| b.iter().cloned())
        .collect()
}

impl<T: Data> DStream<T> {
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

impl<T: Key> DStream<T> {
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

impl<K: Key, V: Data> DStream<(K, V)> {
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
