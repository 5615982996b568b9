//! `parallelize`: a dataset over an in-memory vector.

use std::sync::Arc;

use crate::context::TaskContext;
use crate::error::Result;
use crate::rdd::{BoxIter, Data, Dataset, Node, RddId};

/// An in-memory collection split into contiguous slices.
pub(crate) struct ParallelCollection<T> {
    id: RddId,
    data: Arc<Vec<T>>,
    partitions: usize,
}

impl<T> ParallelCollection<T> {
    pub(crate) fn new(id: RddId, data: Vec<T>, partitions: usize) -> Self {
        ParallelCollection {
            id,
            data: Arc::new(data),
            partitions,
        }
    }

    /// Slice `i` of `n` over `len` elements: sizes differ by at most one.
    fn bounds(&self, partition: usize) -> (usize, usize) {
        let len = self.data.len();
        let start = partition * len / self.partitions;
        let end = (partition + 1) * len / self.partitions;
        (start, end)
    }
}

impl<T: Data> Node for ParallelCollection<T> {
    fn id(&self) -> RddId {
        self.id
    }

    fn name(&self) -> String {
        format!("parallelize#{}", self.id)
    }

    fn num_partitions(&self) -> usize {
        self.partitions
    }
}

impl<T: Data> Dataset for ParallelCollection<T> {
    type Item = T;

    fn compute<'a>(&'a self, partition: usize, _: &'a TaskContext) -> Result<BoxIter<'a, T>> {
        let (start, end) = self.bounds(partition);
        Ok(Box::new(self.data[start..end].iter().cloned()))
    }
}
