//! Datasets read from outside: the [`PartitionSource`] trait that the batch
//! layer (Parquet files and row groups) and the speed layer (a micro-batch's
//! record batches) implement.

use crate::context::TaskContext;
use crate::error::Result;
use crate::rdd::{BoxIter, Data, Dataset, Node, RddId};

/// Something that can be read as a fixed number of independent partitions.
///
/// # Errors
///
/// `read` returns an error when a partition cannot be opened; an error in the
/// middle of a partition is reported with [`TaskContext::fail`] and ends the
/// iterator. Either way the task is retried and `read` called again, so it
/// must return the same data every time.
pub trait PartitionSource: Send + Sync + 'static {
    /// The element type, often an Arrow `RecordBatch`.
    type Item: Data;

    /// Number of partitions; fixed.
    fn num_partitions(&self) -> usize;

    /// Reads one partition.
    fn read<'a>(&'a self, partition: usize, tc: &'a TaskContext)
    -> Result<BoxIter<'a, Self::Item>>;

    /// A short description for lineage dumps and errors.
    fn describe(&self) -> String {
        "source".to_owned()
    }
}

/// The dataset over a [`PartitionSource`].
pub(crate) struct SourceRdd<S> {
    id: RddId,
    source: S,
}

impl<S> SourceRdd<S> {
    pub(crate) fn new(id: RddId, source: S) -> Self {
        SourceRdd { id, source }
    }
}

impl<S: PartitionSource> Node for SourceRdd<S> {
    fn id(&self) -> RddId {
        self.id
    }

    fn name(&self) -> String {
        format!("{}#{}", self.source.describe(), self.id)
    }

    fn num_partitions(&self) -> usize {
        self.source.num_partitions()
    }
}

impl<S: PartitionSource> Dataset for SourceRdd<S> {
    type Item = S::Item;

    fn compute<'a>(
        &'a self,
        partition: usize,
        tc: &'a TaskContext,
    ) -> Result<BoxIter<'a, S::Item>> {
        self.source.read(partition, tc)
    }
}
