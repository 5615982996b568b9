//! `union`: the partitions of several datasets side by side.

use std::sync::Arc;

use crate::context::TaskContext;
use crate::error::{Error, Result};
use crate::rdd::{BoxIter, Data, Dataset, Dependency, Node, Rdd, RddId};

struct Union<T: Data> {
    id: RddId,
    parents: Vec<Arc<dyn Dataset<Item = T>>>,
}

impl<T: Data> Union<T> {
    /// The parent and its partition behind child partition `partition`.
    fn locate(&self, mut partition: usize) -> Option<(&Arc<dyn Dataset<Item = T>>, usize)> {
        for parent in &self.parents {
            let n = parent.num_partitions();
            if partition < n {
                return Some((parent, partition));
            }
            partition -= n;
        }
        None
    }
}

impl<T: Data> Node for Union<T> {
    fn id(&self) -> RddId {
        self.id
    }

    fn name(&self) -> String {
        format!("union#{}", self.id)
    }

    fn num_partitions(&self) -> usize {
        self.parents.iter().map(|p| p.num_partitions()).sum()
    }

    fn dependencies(&self) -> Vec<Dependency> {
        self.parents
            .iter()
            .map(|p| Dependency::Narrow(Arc::clone(p) as Arc<dyn Node>))
            .collect()
    }
}

impl<T: Data> Dataset for Union<T> {
    type Item = T;

    fn compute<'a>(&'a self, partition: usize, tc: &'a TaskContext) -> Result<BoxIter<'a, T>> {
        let (parent, p) = self
            .locate(partition)
            .ok_or_else(|| Error::Internal(format!("{}: no partition {partition}", self.name())))?;
        parent.compute(p, tc)
    }
}

impl<T: Data> Rdd<T> {
    /// The elements of `self` followed by those of `other`, without moving
    /// data: the result has the partitions of both.
    pub fn union(&self, other: &Rdd<T>) -> Rdd<T> {
        let node = Union {
            id: self.ctx.new_rdd_id(),
            parents: vec![Arc::clone(&self.node), Arc::clone(&other.node)],
        };
        Rdd::from_dataset(&self.ctx, node)
    }
}
