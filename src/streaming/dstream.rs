//! [`DStream`]: a stream as a sequence of RDDs, one per batch, and its
//! transformations — each the RDD operation of the same name applied to
//! every batch.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::rdd::{BoxIter, CoGroup, Data, Key, Rdd};
use crate::streaming::Time;
use crate::streaming::context::StreamingContext;

/// Identifies an input stream within its [`StreamingContext`].
pub type InputId = usize;

/// The RDD of each input stream for one batch.
#[derive(Default)]
pub struct InputRdds {
    rdds: HashMap<InputId, Box<dyn Any + Send + Sync>>,
}

impl fmt::Debug for InputRdds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("InputRdds")
            .field("inputs", &self.rdds.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl InputRdds {
    /// No inputs.
    pub fn new() -> Self {
        InputRdds::default()
    }

    /// Sets the RDD of input `id` (see [`DStream::input_ids`]).
    pub fn insert<T: Data>(&mut self, id: InputId, rdd: Rdd<T>) {
        self.rdds.insert(id, Box::new(rdd));
    }

    pub(crate) fn insert_boxed(&mut self, id: InputId, rdd: Box<dyn Any + Send + Sync>) {
        self.rdds.insert(id, rdd);
    }

    fn get<T: Data>(&self, id: InputId) -> Result<Rdd<T>> {
        let any = self
            .rdds
            .get(&id)
            .ok_or_else(|| Error::plan(format!("input stream {id} has no data for this batch")))?;
        any.downcast_ref::<Rdd<T>>().cloned().ok_or_else(|| {
            Error::plan(format!(
                "input stream {id} was given an RDD of another element type than {}",
                std::any::type_name::<T>()
            ))
        })
    }
}

/// The RDDs of one batch: the inputs' RDDs, and every DStream's RDD once
/// computed. A DStream is computed once per batch, so two outputs that share
/// a parent share its RDD, and a shuffle under it runs once.
pub struct BatchScope {
    ctx: Context,
    time: Time,
    inputs: InputRdds,
    memo: Mutex<HashMap<usize, Box<dyn Any + Send + Sync>>>,
    /// Run once every output operation of the batch succeeded: stateful
    /// operators move their state to the batch's (a failed batch is run
    /// again from the old state).
    on_success: Mutex<Vec<Box<dyn FnOnce() + Send>>>,
    /// The state changes stateful operators made in the batch.
    state: Mutex<Vec<crate::streaming::durable::StateDelta>>,
}

impl fmt::Debug for BatchScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchScope")
            .field("time", &self.time)
            .field("inputs", &self.inputs)
            .finish_non_exhaustive()
    }
}

impl BatchScope {
    /// The scope of the batch at `time` with the given inputs.
    pub fn new(ctx: &Context, time: Time, inputs: InputRdds) -> Self {
        BatchScope {
            ctx: ctx.clone(),
            time,
            inputs,
            memo: Mutex::new(HashMap::new()),
            on_success: Mutex::new(Vec::new()),
            state: Mutex::new(Vec::new()),
        }
    }

    /// Records a stateful operator's changes of this batch.
    pub(crate) fn record_state(&self, delta: crate::streaming::durable::StateDelta) {
        if !delta.changes.is_empty() {
            self.state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(delta);
        }
    }

    pub(crate) fn take_state(&self) -> Vec<crate::streaming::durable::StateDelta> {
        std::mem::take(&mut *self.state.lock().unwrap_or_else(|p| p.into_inner()))
    }

    pub(crate) fn into_on_success(self) -> Vec<Box<dyn FnOnce() + Send>> {
        std::mem::take(&mut *self.on_success.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Runs `f` when the batch has succeeded (see [`commit`](Self::commit)).
    pub(crate) fn on_success(&self, f: impl FnOnce() + Send + 'static) {
        self.on_success
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(f));
    }

    /// The batch's time.
    pub fn time(&self) -> Time {
        self.time
    }

    /// The engine context jobs run on.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The RDD of `stream` in this batch (computed once, then reused).
    ///
    /// # Errors
    ///
    /// An input of the stream has no RDD in this scope, or a transformation
    /// failed to build its RDD (e.g. `transform` returned an error).
    pub fn rdd<T: Data>(&self, stream: &DStream<T>) -> Result<Rdd<T>> {
        if let Some(rdd) = self
            .lock()
            .get(&stream.id)
            .and_then(|any| any.downcast_ref::<Rdd<T>>())
        {
            return Ok(rdd.clone());
        }
        // Not under the lock: computing calls back for the parents.
        let rdd = (stream.compute)(self)?;
        self.lock().insert(stream.id, Box::new(rdd.clone()));
        Ok(rdd)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<usize, Box<dyn Any + Send + Sync>>> {
        self.memo.lock().unwrap_or_else(|p| p.into_inner())
    }
}

type Compute<T> = dyn Fn(&BatchScope) -> Result<Rdd<T>> + Send + Sync;

/// A discretized stream: for every batch, an `Rdd<T>`.
///
/// Cheap to clone. Transformations return a new stream and compute nothing;
/// output operations ([`print`](DStream::print),
/// [`foreach_rdd`](DStream::foreach_rdd), ...) register a job that runs for
/// every batch once the context runs.
pub struct DStream<T: Data> {
    pub(crate) ssc: StreamingContext,
    pub(crate) id: usize,
    /// The input streams this one is computed from (sorted, unique).
    pub(crate) inputs: Arc<[InputId]>,
    /// How often the stream has an RDD: every batch interval, or every
    /// slide of a window it is computed from. Output operations run at
    /// batch times that are multiples of it.
    pub(crate) slide: Duration,
    /// Computed from a window or a stateful operator: its RDDs depend on
    /// earlier batches.
    pub(crate) windowed: bool,
    /// The stateful operator whose state this stream is (its output after
    /// each batch), to serve or name it.
    pub(crate) state: Option<Arc<dyn crate::streaming::durable::DurableState>>,
    compute: Arc<Compute<T>>,
}

impl<T: Data> Clone for DStream<T> {
    fn clone(&self) -> Self {
        DStream {
            ssc: self.ssc.clone(),
            id: self.id,
            inputs: Arc::clone(&self.inputs),
            slide: self.slide,
            windowed: self.windowed,
            state: self.state.clone(),
            compute: Arc::clone(&self.compute),
        }
    }
}

impl<T: Data> fmt::Debug for DStream<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DStream")
            .field("id", &self.id)
            .field("inputs", &self.inputs)
            .finish()
    }
}

impl<T: Data> DStream<T> {
    /// A stream computed per batch by `compute`, from the given inputs.
    pub(crate) fn from_fn(
        ssc: &StreamingContext,
        inputs: Arc<[InputId]>,
        compute: impl Fn(&BatchScope) -> Result<Rdd<T>> + Send + Sync + 'static,
    ) -> Self {
        DStream {
            ssc: ssc.clone(),
            id: ssc.next_id(),
            inputs,
            slide: ssc.interval(),
            windowed: false,
            state: None,
            compute: Arc::new(compute),
        }
    }

    /// The same stream with the slide and windowing of `parent`.
    pub(crate) fn inherit<P: Data>(mut self, parent: &DStream<P>) -> Self {
        self.slide = parent.slide;
        self.windowed = parent.windowed;
        self
    }

    /// The same stream with the given slide, computed from a window.
    pub(crate) fn windowed_with_slide(mut self, slide: Duration) -> Self {
        self.slide = slide;
        self.windowed = true;
        self
    }

    /// The same stream, marked as depending on earlier batches (state).
    pub(crate) fn stateful(mut self) -> Self {
        self.windowed = true;
        self
    }

    /// How often the stream has an RDD: the batch interval, or the slide of
    /// the window it is computed from.
    pub fn slide(&self) -> Duration {
        self.slide
    }

    /// Whether the stream is computed from a window or a stateful operator
    /// (its RDDs depend on earlier batches, kept in memory).
    pub fn is_windowed(&self) -> bool {
        self.windowed
    }

    /// Whether the stream has an RDD at `time`: a multiple of its slide.
    pub(crate) fn has_rdd_at(&self, time: Time) -> bool {
        let slide = self.slide.as_millis().max(1) as i64;
        time.millis().rem_euclid(slide) == 0
    }

    /// The streaming context the stream belongs to.
    pub fn context(&self) -> &StreamingContext {
        &self.ssc
    }

    /// The input streams this stream is computed from.
    pub fn input_ids(&self) -> &[InputId] {
        &self.inputs
    }

    /// The stream's RDD for the batch of `scope`.
    ///
    /// # Errors
    ///
    /// As [`BatchScope::rdd`].
    pub fn rdd_in(&self, scope: &BatchScope) -> Result<Rdd<T>> {
        scope.rdd(self)
    }

    /// A stream computed per batch from this one's RDD.
    fn derive<U: Data>(&self, f: impl Fn(Rdd<T>) -> Rdd<U> + Send + Sync + 'static) -> DStream<U> {
        let parent = self.clone();
        DStream::from_fn(&self.ssc, Arc::clone(&self.inputs), move |scope| {
            Ok(f(scope.rdd(&parent)?))
        })
        .inherit(self)
    }

    /// Any RDD-to-RDD function applied to every batch (Spark's
    /// `transform`): e.g. a join of each batch with a dataset computed
    /// elsewhere. `f` gets the batch's RDD and time; an error fails the
    /// batch.
    pub fn transform<U: Data>(
        &self,
        f: impl Fn(&Rdd<T>, Time) -> Result<Rdd<U>> + Send + Sync + 'static,
    ) -> DStream<U> {
        let parent = self.clone();
        DStream::from_fn(&self.ssc, Arc::clone(&self.inputs), move |scope| {
            f(&scope.rdd(&parent)?, scope.time())
        })
        .inherit(self)
    }

    /// [`transform`](Self::transform) over the batches of two streams.
    pub fn transform_with<U: Data, W: Data>(
        &self,
        other: &DStream<U>,
        f: impl Fn(&Rdd<T>, &Rdd<U>, Time) -> Result<Rdd<W>> + Send + Sync + 'static,
    ) -> DStream<W> {
        let (a, b) = (self.clone(), other.clone());
        DStream::from_fn(
            &self.ssc,
            merge_inputs(&self.inputs, &other.inputs),
            move |scope| {
                same_slide(&a, &b)?;
                f(&scope.rdd(&a)?, &scope.rdd(&b)?, scope.time())
            },
        )
        .inherit_both(self, other)
    }

    /// `f` applied to every element.
    pub fn map<U: Data>(&self, f: impl Fn(T) -> U + Send + Sync + 'static) -> DStream<U> {
        let f = Arc::new(f);
        self.derive(move |rdd| {
            let f = Arc::clone(&f);
            rdd.map(move |x| f(x))
        })
    }

    /// `f` applied to every element, the results flattened.
    pub fn flat_map<U: Data, I: IntoIterator<Item = U> + 'static>(
        &self,
        f: impl Fn(T) -> I + Send + Sync + 'static,
    ) -> DStream<U> {
        let f = Arc::new(f);
        self.derive(move |rdd| {
            let f = Arc::clone(&f);
            rdd.flat_map(move |x| f(x))
        })
    }

    /// The elements `f` accepts.
    pub fn filter(&self, f: impl Fn(&T) -> bool + Send + Sync + 'static) -> DStream<T> {
        let f = Arc::new(f);
        self.derive(move |rdd| {
            let f = Arc::clone(&f);
            rdd.filter(move |x| f(x))
        })
    }

    /// `f` applied to each partition of every batch as a whole.
    pub fn map_partitions<U: Data>(
        &self,
        f: impl for<'a> Fn(BoxIter<'a, T>) -> BoxIter<'a, U> + Send + Sync + 'static,
    ) -> DStream<U> {
        let f = Arc::new(f);
        self.derive(move |rdd| {
            let f = Arc::clone(&f);
            rdd.map_partitions(move |it| f(it))
        })
    }

    /// Every batch spread evenly over `partitions` partitions (a shuffle).
    pub fn repartition(&self, partitions: usize) -> DStream<T> {
        self.derive(move |rdd| rdd.repartition(partitions))
    }

    /// The elements of both streams, batch by batch.
    pub fn union(&self, other: &DStream<T>) -> DStream<T> {
        self.transform_with(other, |a, b, _| Ok(a.union(b)))
    }

    /// One element per batch: the number of elements in it (0 for an empty
    /// batch).
    pub fn count(&self) -> DStream<i64> {
        self.derive(|rdd| {
            let zero = rdd.context().parallelize(vec![((), 0i64)], 1);
            rdd.map_partitions(|it| Box::new(std::iter::once(((), it.count() as i64))))
                .union(&zero)
                .reduce_by_key_into(|a, b| a + b, 1)
                .values()
        })
    }

    /// One element per batch: the batch's elements merged with an
    /// associative, commutative `f` (nothing for an empty batch).
    pub fn reduce(&self, f: impl Fn(T, T) -> T + Send + Sync + 'static) -> DStream<T> {
        let f = Arc::new(f);
        self.derive(move |rdd| {
            let f = Arc::clone(&f);
            rdd.map(|x| ((), x))
                .reduce_by_key_into(move |a, b| f(a, b), 1)
                .values()
        })
    }
}

impl<T: Key> DStream<T> {
    /// Per batch, every distinct element with its number of occurrences.
    pub fn count_by_value(&self) -> DStream<(T, i64)> {
        self.map(|x| (x, 1i64)).reduce_by_key(|a, b| a + b)
    }
}

impl<K: Key, V: Data> DStream<(K, V)> {
    /// `f` applied to every value, keys kept.
    pub fn map_values<W: Data>(
        &self,
        f: impl Fn(V) -> W + Send + Sync + 'static,
    ) -> DStream<(K, W)> {
        let f = Arc::new(f);
        self.derive(move |rdd| {
            let f = Arc::clone(&f);
            rdd.map_values(move |v| f(v))
        })
    }

    /// Per batch, the values of each key merged with an associative,
    /// commutative `f` (combined on the map side first).
    pub fn reduce_by_key(&self, f: impl Fn(V, V) -> V + Send + Sync + 'static) -> DStream<(K, V)> {
        let f = Arc::new(f);
        self.derive(move |rdd| {
            let f = Arc::clone(&f);
            rdd.reduce_by_key(move |a, b| f(a, b))
        })
    }

    /// [`reduce_by_key`](Self::reduce_by_key) into `partitions` partitions.
    pub fn reduce_by_key_into(
        &self,
        f: impl Fn(V, V) -> V + Send + Sync + 'static,
        partitions: usize,
    ) -> DStream<(K, V)> {
        let f = Arc::new(f);
        self.derive(move |rdd| {
            let f = Arc::clone(&f);
            rdd.reduce_by_key_into(move |a, b| f(a, b), partitions)
        })
    }

    /// Per batch, all values of each key.
    pub fn group_by_key(&self) -> DStream<(K, Vec<V>)> {
        self.derive(|rdd| rdd.group_by_key())
    }

    /// Per batch, Spark's `combineByKey`: values folded into a combiner per
    /// key (see [`Rdd::combine_by_key`]), combined on the map side.
    pub fn combine_by_key<C: Data>(
        &self,
        create: impl Fn(V) -> C + Send + Sync + 'static,
        merge_value: impl Fn(C, V) -> C + Send + Sync + 'static,
        merge_combiners: impl Fn(C, C) -> C + Send + Sync + 'static,
    ) -> DStream<(K, C)> {
        let (create, merge_value, merge_combiners) = (
            Arc::new(create),
            Arc::new(merge_value),
            Arc::new(merge_combiners),
        );
        self.derive(move |rdd| {
            let (c, mv, mc) = (
                Arc::clone(&create),
                Arc::clone(&merge_value),
                Arc::clone(&merge_combiners),
            );
            let partitions = rdd.num_partitions();
            rdd.combine_by_key(
                move |v| c(v),
                move |a, v| mv(a, v),
                move |a, b| mc(a, b),
                partitions,
                true,
            )
        })
    }

    /// Per batch, each key's values in both streams.
    pub fn cogroup<W: Data>(&self, other: &DStream<(K, W)>) -> DStream<(K, CoGroup<V, W>)> {
        self.transform_with(other, |a, b, _| Ok(a.cogroup(b)))
    }

    /// Per batch, every pair of values with equal keys in the two streams.
    pub fn join<W: Data>(&self, other: &DStream<(K, W)>) -> DStream<(K, (V, W))> {
        self.transform_with(other, |a, b, _| Ok(a.join(b)))
    }

    /// Per batch, every value of this stream with each matching value of
    /// `other`, or `None`.
    pub fn left_outer_join<W: Data>(
        &self,
        other: &DStream<(K, W)>,
    ) -> DStream<(K, (V, Option<W>))> {
        self.transform_with(other, |a, b, _| Ok(a.left_outer_join(b)))
    }
}

impl<T: Data> DStream<T> {
    /// The slide of `a` (see [`same_slide`]), windowed when either is.
    fn inherit_both<A: Data, B: Data>(mut self, a: &DStream<A>, b: &DStream<B>) -> Self {
        self.slide = a.slide;
        self.windowed = a.windowed || b.windowed;
        self
    }
}

/// Two streams combined batch by batch must have their RDDs at the same
/// times (Spark's rule).
fn same_slide<A: Data, B: Data>(a: &DStream<A>, b: &DStream<B>) -> Result<()> {
    if a.slide == b.slide {
        Ok(())
    } else {
        Err(Error::plan(format!(
            "cannot combine streams with different slides ({:?} and {:?}): window both alike",
            a.slide, b.slide
        )))
    }
}

/// The sorted union of two input lists.
fn merge_inputs(a: &[InputId], b: &[InputId]) -> Arc<[InputId]> {
    let mut all: Vec<InputId> = a.iter().chain(b).copied().collect();
    all.sort_unstable();
    all.dedup();
    all.into()
}

/// A stream that yields the RDD its input was given for each batch.
pub(crate) fn input_stream<T: Data>(ssc: &StreamingContext, input: InputId) -> DStream<T> {
    DStream::from_fn(ssc, Arc::from([input]), move |scope| {
        scope.inputs.get::<T>(input)
    })
}
