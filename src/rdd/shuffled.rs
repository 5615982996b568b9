//! The datasets on the reduce side of a shuffle and the dependency that
//! writes their map side.

use std::sync::Arc;

use crate::context::{Context, TaskContext};
use crate::error::Result;
use crate::partitioner::Partitioner;
use crate::rdd::{BoxIter, Data, Dataset, Dependency, Node, RddId};
use crate::shuffle::{Block, ShuffleDep, ShuffleId, ShuffleStore, fetch};

/// Turns one map partition into one bucket per reduce partition. Either plain
/// bucketing or a map-side combine (see `pair.rs`).
pub(crate) type MapSideFn<K, V, X> =
    Box<dyn for<'a> Fn(BoxIter<'a, (K, V)>, &dyn Partitioner<K>) -> Vec<Vec<(K, X)>> + Send + Sync>;

/// Runs on the driver before the map stage (see [`ShuffleDep::prepare`]).
pub(crate) type PrepareFn = Box<dyn Fn(&Context) -> Result<()> + Send + Sync>;

/// Builds a reduce partition from the blocks every map task wrote for it.
pub(crate) type ReduceFn<K, X, Out> =
    Box<dyn Fn(Vec<Arc<Vec<(K, X)>>>) -> BoxIter<'static, Out> + Send + Sync>;

/// A shuffle of `(K, V)` pairs written as `(K, X)` blocks.
pub(crate) struct ShuffleDependency<K, V, X> {
    pub(crate) id: ShuffleId,
    pub(crate) parent: Arc<dyn Dataset<Item = (K, V)>>,
    pub(crate) partitioner: Arc<dyn Partitioner<K>>,
    pub(crate) map_side: MapSideFn<K, V, X>,
    pub(crate) prepare: Option<PrepareFn>,
    pub(crate) store: Arc<dyn ShuffleStore>,
}

impl<K: Data, V: Data, X: Data> ShuffleDep for ShuffleDependency<K, V, X> {
    fn shuffle_id(&self) -> ShuffleId {
        self.id
    }

    fn parent(&self) -> Arc<dyn Node> {
        Arc::clone(&self.parent) as Arc<dyn Node>
    }

    fn num_reduce_partitions(&self) -> usize {
        self.partitioner.num_partitions()
    }

    fn prepare(&self, ctx: &Context) -> Result<()> {
        match &self.prepare {
            Some(prepare) => prepare(ctx),
            None => Ok(()),
        }
    }

    fn run_map_task(&self, map_partition: usize, tc: &TaskContext) -> Result<()> {
        let input = self.parent.compute(map_partition, tc)?;
        let buckets = (self.map_side)(input, self.partitioner.as_ref());
        // Never publish the output of an iteration that a failure cut short.
        if tc.has_failed() {
            return Ok(());
        }
        let blocks = buckets
            .into_iter()
            .map(|bucket| Arc::new(bucket) as Block)
            .collect();
        self.store.put_map_output(self.id, map_partition, blocks);
        Ok(())
    }
}

impl<K, V, X> Drop for ShuffleDependency<K, V, X> {
    fn drop(&mut self) {
        // The reduce side is gone with this dependency: nothing can read the
        // blocks any more.
        self.store.remove_shuffle(self.id);
    }
}

/// The reduce side of a shuffle.
pub(crate) struct ShuffledRdd<K, X, Out> {
    pub(crate) id: RddId,
    pub(crate) label: &'static str,
    pub(crate) dep: Arc<dyn ShuffleDep>,
    pub(crate) num_maps: usize,
    pub(crate) store: Arc<dyn ShuffleStore>,
    pub(crate) reduce: ReduceFn<K, X, Out>,
}

impl<K: Data, X: Data, Out: Data> Node for ShuffledRdd<K, X, Out> {
    fn id(&self) -> RddId {
        self.id
    }

    fn name(&self) -> String {
        format!("{}#{}", self.label, self.id)
    }

    fn num_partitions(&self) -> usize {
        self.dep.num_reduce_partitions()
    }

    fn dependencies(&self) -> Vec<Dependency> {
        vec![Dependency::Shuffle(Arc::clone(&self.dep))]
    }
}

impl<K: Data, X: Data, Out: Data> Dataset for ShuffledRdd<K, X, Out> {
    type Item = Out;

    fn compute<'a>(&'a self, partition: usize, _: &'a TaskContext) -> Result<BoxIter<'a, Out>> {
        let shuffle = self.dep.shuffle_id();
        let blocks = (0..self.num_maps)
            .map(|m| fetch::<(K, X)>(self.store.as_ref(), shuffle, m, partition))
            .collect::<Result<Vec<_>>>()?;
        Ok((self.reduce)(blocks))
    }
}
