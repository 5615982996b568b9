//! One-to-one transformations: partition `i` of the child is computed from
//! partition `i` of the parent in the same task, element by element
//! (`map`, `flat_map`, `filter`, `map_partitions`, and those built on them).

use std::marker::PhantomData;
use std::sync::Arc;

use crate::context::TaskContext;
use crate::error::Result;
use crate::rdd::{BoxIter, Data, Dataset, Dependency, Node, Rdd, RddId};

/// How a one-to-one transformation turns a parent partition into a child
/// partition.
pub trait NarrowOp<T, U>: Send + Sync + 'static {
    /// The operator's name in lineage dumps (`map`, `filter`, ...).
    fn name(&self) -> &'static str;

    /// Transforms the parent's iterator lazily. An error found on the way is
    /// reported with [`TaskContext::fail`].
    fn apply<'a>(&'a self, tc: &'a TaskContext, input: BoxIter<'a, T>) -> BoxIter<'a, U>;
}

/// A dataset that applies a [`NarrowOp`] to each partition of its parent.
pub struct OneToOne<T: Data, U, Op> {
    id: RddId,
    parent: Arc<dyn Dataset<Item = T>>,
    op: Op,
    _out: PhantomData<fn() -> U>,
}

impl<T: Data, U, Op> std::fmt::Debug for OneToOne<T, U, Op> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OneToOne")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl<T: Data, U: Data, Op: NarrowOp<T, U>> Node for OneToOne<T, U, Op> {
    fn id(&self) -> RddId {
        self.id
    }

    fn name(&self) -> String {
        format!("{}#{}", self.op.name(), self.id)
    }

    fn num_partitions(&self) -> usize {
        self.parent.num_partitions()
    }

    fn dependencies(&self) -> Vec<Dependency> {
        vec![Dependency::Narrow(Arc::clone(&self.parent) as Arc<dyn Node>)]
    }
}

impl<T: Data, U: Data, Op: NarrowOp<T, U>> Dataset for OneToOne<T, U, Op> {
    type Item = U;

    fn compute<'a>(&'a self, partition: usize, tc: &'a TaskContext) -> Result<BoxIter<'a, U>> {
        let input = self.parent.compute(partition, tc)?;
        Ok(self.op.apply(tc, input))
    }
}

/// `map`: one output per input.
#[derive(Debug)]
pub struct Map<F>(pub F);

impl<T: Data, U: Data, F: Fn(T) -> U + Send + Sync + 'static> NarrowOp<T, U> for Map<F> {
    fn name(&self) -> &'static str {
        "map"
    }

    fn apply<'a>(&'a self, _: &'a TaskContext, input: BoxIter<'a, T>) -> BoxIter<'a, U> {
        Box::new(input.map(&self.0))
    }
}

/// `flat_map`: zero or more outputs per input.
#[derive(Debug)]
pub struct FlatMap<F>(pub F);

impl<T, U, I, F> NarrowOp<T, U> for FlatMap<F>
where
    T: Data,
    U: Data,
    I: IntoIterator<Item = U> + 'static,
    F: Fn(T) -> I + Send + Sync + 'static,
{
    fn name(&self) -> &'static str {
        "flat_map"
    }

    fn apply<'a>(&'a self, _: &'a TaskContext, input: BoxIter<'a, T>) -> BoxIter<'a, U> {
        Box::new(input.flat_map(&self.0))
    }
}

/// `filter`: the inputs the predicate accepts.
#[derive(Debug)]
pub struct Filter<F>(pub F);

impl<T: Data, F: Fn(&T) -> bool + Send + Sync + 'static> NarrowOp<T, T> for Filter<F> {
    fn name(&self) -> &'static str {
        "filter"
    }

    fn apply<'a>(&'a self, _: &'a TaskContext, input: BoxIter<'a, T>) -> BoxIter<'a, T> {
        Box::new(input.filter(&self.0))
    }
}

/// `map_partitions`: a function of the whole partition iterator and the
/// partition index.
#[derive(Debug)]
pub struct MapPartitions<F>(pub F);

impl<F> MapPartitions<F> {
    /// Wraps `f`; the bound here lets closures be inferred as generic over
    /// the iterator's lifetime.
    pub fn new<T, U>(f: F) -> Self
    where
        F: for<'a> Fn(usize, BoxIter<'a, T>) -> BoxIter<'a, U>,
    {
        MapPartitions(f)
    }
}

impl<T, U, F> NarrowOp<T, U> for MapPartitions<F>
where
    T: Data,
    U: Data,
    F: for<'a> Fn(usize, BoxIter<'a, T>) -> BoxIter<'a, U> + Send + Sync + 'static,
{
    fn name(&self) -> &'static str {
        "map_partitions"
    }

    fn apply<'a>(&'a self, tc: &'a TaskContext, input: BoxIter<'a, T>) -> BoxIter<'a, U> {
        (self.0)(tc.partition(), input)
    }
}

impl<T: Data> Rdd<T> {
    /// Applies a [`NarrowOp`] to every partition: the building block of the
    /// element-wise transformations.
    pub fn narrow<U: Data>(&self, op: impl NarrowOp<T, U>) -> Rdd<U> {
        let node = OneToOne {
            id: self.ctx.new_rdd_id(),
            parent: Arc::clone(&self.node),
            op,
            _out: PhantomData,
        };
        Rdd::from_dataset(&self.ctx, node)
    }

    /// Applies `f` to every element.
    ///
    /// ```
    /// let ctx = lamina::Context::builder().threads(2).build().unwrap();
    /// let squares = ctx.parallelize(vec![1, 2, 3], 2).map(|x| x * x);
    /// assert_eq!(squares.collect().unwrap(), vec![1, 4, 9]);
    /// ```
    pub fn map<U: Data>(&self, f: impl Fn(T) -> U + Send + Sync + 'static) -> Rdd<U> {
        self.narrow(Map(f))
    }

    /// Applies `f` to every element and flattens the results.
    ///
    /// ```
    /// let ctx = lamina::Context::builder().threads(2).build().unwrap();
    /// let words = ctx
    ///     .parallelize(vec!["a b".to_string(), "c".to_string()], 2)
    ///     .flat_map(|line| line.split(' ').map(str::to_owned).collect::<Vec<_>>());
    /// assert_eq!(words.collect().unwrap(), vec!["a", "b", "c"]);
    /// ```
    pub fn flat_map<U: Data, I: IntoIterator<Item = U> + 'static>(
        &self,
        f: impl Fn(T) -> I + Send + Sync + 'static,
    ) -> Rdd<U> {
        self.narrow(FlatMap(f))
    }

    /// Keeps the elements for which `f` returns true.
    pub fn filter(&self, f: impl Fn(&T) -> bool + Send + Sync + 'static) -> Rdd<T> {
        self.narrow(Filter(f))
    }

    /// Transforms each partition as a whole, e.g. to set up per-partition
    /// state once. The closure must not borrow from its own environment in
    /// the iterator it returns: clone what the iterator needs into it.
    ///
    /// ```
    /// let ctx = lamina::Context::builder().threads(2).build().unwrap();
    /// let sums = ctx
    ///     .parallelize((1..=4).collect(), 2)
    ///     .map_partitions(|it| Box::new(std::iter::once(it.sum::<i32>())));
    /// assert_eq!(sums.collect().unwrap(), vec![3, 7]);
    /// ```
    pub fn map_partitions<U: Data>(
        &self,
        f: impl for<'a> Fn(BoxIter<'a, T>) -> BoxIter<'a, U> + Send + Sync + 'static,
    ) -> Rdd<U> {
        self.narrow(MapPartitions::new(move |_, it| f(it)))
    }

    /// Like [`map_partitions`](Self::map_partitions), with the partition index.
    pub fn map_partitions_with_index<U: Data>(
        &self,
        f: impl for<'a> Fn(usize, BoxIter<'a, T>) -> BoxIter<'a, U> + Send + Sync + 'static,
    ) -> Rdd<U> {
        self.narrow(MapPartitions(f))
    }

    /// Pairs every element with a key computed from it.
    pub fn key_by<K: Data>(&self, f: impl Fn(&T) -> K + Send + Sync + 'static) -> Rdd<(K, T)> {
        self.map(move |x| (f(&x), x))
    }
}

impl<K: Data, V: Data> Rdd<(K, V)> {
    /// Applies `f` to every value, keeping the keys.
    pub fn map_values<W: Data>(&self, f: impl Fn(V) -> W + Send + Sync + 'static) -> Rdd<(K, W)> {
        self.map(move |(k, v)| (k, f(v)))
    }

    /// The keys.
    pub fn keys(&self) -> Rdd<K> {
        self.map(|(k, _)| k)
    }

    /// The values.
    pub fn values(&self) -> Rdd<V> {
        self.map(|(_, v)| v)
    }
}
