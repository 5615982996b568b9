//! `coalesce`: fewer partitions without a shuffle.

use std::sync::Arc;

use crate::context::TaskContext;
use crate::error::Result;
use crate::rdd::{BoxIter, Data, Dataset, Dependency, Node, Rdd, RddId};

struct Coalesce<T: Data> {
    id: RddId,
    parent: Arc<dyn Dataset<Item = T>>,
    partitions: usize,
}

impl<T: Data> Coalesce<T> {
    /// Parent partitions `start..end` make up child partition `partition`:
    /// contiguous runs whose sizes differ by at most one.
    fn parent_range(&self, partition: usize) -> std::ops::Range<usize> {
        let n = self.parent.num_partitions();
        (partition * n / self.partitions)..((partition + 1) * n / self.partitions)
    }
}

impl<T: Data> Node for Coalesce<T> {
    fn id(&self) -> RddId {
        self.id
    }

    fn name(&self) -> String {
        format!("coalesce#{}", self.id)
    }

    fn num_partitions(&self) -> usize {
        self.partitions
    }

    fn dependencies(&self) -> Vec<Dependency> {
        vec![Dependency::Narrow(Arc::clone(&self.parent) as Arc<dyn Node>)]
    }
}

impl<T: Data> Dataset for Coalesce<T> {
    type Item = T;

    fn compute<'a>(&'a self, partition: usize, tc: &'a TaskContext) -> Result<BoxIter<'a, T>> {
        // Parents are opened one after the other as the iterator advances; an
        // error opening a later one fails the task.
        let parent = &self.parent;
        Ok(Box::new(self.parent_range(partition).flat_map(
            move |p| match parent.compute(p, tc) {
                Ok(iter) => iter,
                Err(e) => {
                    tc.fail(e);
                    Box::new(std::iter::empty())
                }
            },
        )))
    }
}

impl<T: Data> Rdd<T> {
    /// Merges neighbouring partitions into `partitions` partitions (at least
    /// one) without moving data between tasks. Asking for more partitions than
    /// there are keeps the current ones; use
    /// [`repartition`](Rdd::repartition) to grow.
    pub fn coalesce(&self, partitions: usize) -> Rdd<T> {
        let partitions = partitions.clamp(1, self.num_partitions().max(1));
        let node = Coalesce {
            id: self.ctx.new_rdd_id(),
            parent: Arc::clone(&self.node),
            partitions,
        };
        Rdd::from_dataset(&self.ctx, node)
    }
}
