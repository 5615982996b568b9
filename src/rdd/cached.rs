//! `cache`: keep computed partitions in memory for later jobs.

use std::sync::Arc;

use crate::context::{Context, TaskContext};
use crate::error::Result;
use crate::rdd::{BoxIter, Data, Dataset, Dependency, Node, Rdd, RddId};

struct Cached<T: Data> {
    id: RddId,
    ctx: Context,
    parent: Arc<dyn Dataset<Item = T>>,
}

impl<T: Data> Node for Cached<T> {
    fn id(&self) -> RddId {
        self.id
    }

    fn name(&self) -> String {
        format!("cache#{}", self.id)
    }

    fn num_partitions(&self) -> usize {
        self.parent.num_partitions()
    }

    fn dependencies(&self) -> Vec<Dependency> {
        vec![Dependency::Narrow(Arc::clone(&self.parent) as Arc<dyn Node>)]
    }
}

impl<T: Data> Dataset for Cached<T> {
    type Item = T;

    fn compute<'a>(&'a self, partition: usize, tc: &'a TaskContext) -> Result<BoxIter<'a, T>> {
        let cache = tc.context().partition_cache();
        let data = match cache.get::<T>(self.id, partition) {
            Some(data) => data,
            None => {
                let data: Vec<T> = self.parent.compute(partition, tc)?.collect();
                let data = Arc::new(data);
                // A partition cut short by a failure must not be served later.
                if !tc.has_failed() {
                    cache.put(self.id, partition, Arc::clone(&data));
                }
                data
            }
        };
        Ok(Box::new((0..data.len()).map(move |i| data[i].clone())))
    }
}

impl<T: Data> Drop for Cached<T> {
    fn drop(&mut self) {
        // Nothing can read the partitions once the dataset is gone.
        self.ctx.partition_cache().evict_rdd(self.id);
    }
}

impl<T: Data> Rdd<T> {
    /// Marks the dataset to be kept in memory once computed, so later jobs
    /// read it instead of recomputing its lineage. Partitions evicted to stay
    /// within [`cache_capacity_bytes`](crate::ContextConfig::cache_capacity_bytes)
    /// are recomputed from lineage when needed again.
    pub fn cache(&self) -> Rdd<T> {
        let node = Cached {
            id: self.ctx.new_rdd_id(),
            ctx: self.ctx.clone(),
            parent: Arc::clone(&self.node),
        };
        Rdd::from_dataset(&self.ctx, node)
    }
}
