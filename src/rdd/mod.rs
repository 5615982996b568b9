//! Resilient distributed datasets: the dataset trait, its dependencies and the
//! typed [`Rdd`] handle that user code composes.
//!
//! A dataset is a list of partitions plus a way to compute one of them from
//! its parents; nothing is computed until an action runs a job. Each
//! transformation lives in its own file and returns a new [`Rdd`]; the
//! scheduler (`crate::scheduler`) walks [`Dependency`] edges to cut the
//! lineage graph into stages at shuffles.

mod actions;
mod cached;
mod coalesce;
mod narrow;
mod pair;
mod parallelize;
mod sample;
mod shuffled;
mod source;
mod union;

use std::fmt;
use std::sync::Arc;

pub use narrow::{Filter, FlatMap, Map, MapPartitions, NarrowOp, OneToOne};
pub use pair::CoGroup;
pub use source::PartitionSource;

pub(crate) use parallelize::ParallelCollection;
pub(crate) use source::SourceRdd;

use crate::context::{Context, TaskContext};
use crate::error::Result;
use crate::shuffle::ShuffleDep;

/// Bounds every element of a dataset must meet: cloneable (cached partitions
/// and shuffle blocks hand out copies) and shareable across worker threads.
pub trait Data: Clone + Send + Sync + 'static {}
impl<T: Clone + Send + Sync + 'static> Data for T {}

/// Bounds of a key in a pair dataset: [`Data`] that can be hashed.
pub trait Key: Data + Eq + std::hash::Hash {}
impl<T: Data + Eq + std::hash::Hash> Key for T {}

/// A partition's elements, computed lazily.
pub type BoxIter<'a, T> = Box<dyn Iterator<Item = T> + 'a>;

/// Identifies a dataset within its [`Context`].
pub type RddId = usize;

/// The untyped part of a dataset: what the scheduler needs to plan a job.
///
/// Implemented by every node of the lineage graph; [`Dataset`] adds the typed
/// `compute`.
pub trait Node: Send + Sync + 'static {
    /// Unique id within the context that created the dataset.
    fn id(&self) -> RddId;
    /// Short human-readable name used in errors and lineage dumps, like
    /// `map#3`.
    fn name(&self) -> String;
    /// Number of partitions; fixed for the lifetime of the dataset.
    fn num_partitions(&self) -> usize;
    /// The parents of this dataset. Sources have none.
    fn dependencies(&self) -> Vec<Dependency> {
        Vec::new()
    }
}

/// A dataset whose partitions produce elements of type `Item`.
///
/// The required core is small, like DataFusion's `ExecutionPlan`: the
/// partition count, the dependencies (both from [`Node`]) and `compute`.
///
/// # Errors
///
/// `compute` returns an error when the partition cannot be started (for
/// example a file cannot be opened). An error found half-way through the
/// iteration is reported with [`TaskContext::fail`], which ends the task
/// with that error once the iterator is drained.
///
/// # Cancellation
///
/// A running `compute` is never interrupted; a cancelled job simply starts no
/// further tasks.
pub trait Dataset: Node {
    /// The element type.
    type Item: Data;

    /// Computes one partition. Called on a worker thread of the context's CPU
    /// pool, possibly several times for the same partition (task retries and
    /// recomputation of lost data): it must be deterministic.
    fn compute<'a>(
        &'a self,
        partition: usize,
        tc: &'a TaskContext,
    ) -> Result<BoxIter<'a, Self::Item>>;
}

/// How a dataset depends on a parent.
///
/// The distinction decides where stages are cut: narrow dependencies are
/// pipelined inside one task, a shuffle ends a stage.
#[derive(Clone)]
pub enum Dependency {
    /// Each partition reads a bounded set of parent partitions, known without
    /// looking at the data (map, filter, union, coalesce). Computed in the
    /// same task as the child, with no data movement.
    Narrow(Arc<dyn Node>),
    /// Each partition may read every parent partition: the parent is written
    /// out by a map stage, split by a partitioner, and read back per reduce
    /// partition. Invariant: every map output of the shuffle exists before a
    /// task of the child starts (the scheduler guarantees it).
    Shuffle(Arc<dyn ShuffleDep>),
}

impl fmt::Debug for Dependency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dependency::Narrow(node) => write!(f, "Narrow({})", node.name()),
            Dependency::Shuffle(dep) => write!(f, "Shuffle({})", dep.shuffle_id()),
        }
    }
}

/// A typed handle on a dataset: what user code holds and transforms.
///
/// Cloning is cheap (two `Arc`s). Transformations are lazy and return a new
/// `Rdd`; actions (`collect`, `count`, ...) run a job on the context's CPU
/// pool and block the calling thread; the `*_async` variants return a future
/// instead and never block a reactor thread.
pub struct Rdd<T: Data> {
    ctx: Context,
    node: Arc<dyn Dataset<Item = T>>,
}

impl<T: Data> Clone for Rdd<T> {
    fn clone(&self) -> Self {
        Rdd {
            ctx: self.ctx.clone(),
            node: Arc::clone(&self.node),
        }
    }
}

impl<T: Data> fmt::Debug for Rdd<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rdd")
            .field("name", &self.node.name())
            .field("partitions", &self.node.num_partitions())
            .finish()
    }
}

impl<T: Data> Rdd<T> {
    /// Wraps a dataset implementation in a handle.
    pub fn from_dataset(ctx: &Context, dataset: impl Dataset<Item = T>) -> Self {
        Rdd {
            ctx: ctx.clone(),
            node: Arc::new(dataset),
        }
    }

    /// The context this dataset belongs to.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    /// The underlying dataset.
    pub fn dataset(&self) -> &Arc<dyn Dataset<Item = T>> {
        &self.node
    }

    /// Unique id of the dataset within its context.
    pub fn id(&self) -> RddId {
        self.node.id()
    }

    /// Number of partitions.
    pub fn num_partitions(&self) -> usize {
        self.node.num_partitions()
    }

    /// A readable dump of the lineage graph, one dataset per line, parents
    /// indented below their child, shuffles marked. Like Spark's
    /// `toDebugString`.
    pub fn lineage(&self) -> String {
        fn walk(node: &dyn Node, depth: usize, out: &mut String) {
            out.push_str(&format!(
                "{:indent$}{} [{} partitions]\n",
                "",
                node.name(),
                node.num_partitions(),
                indent = depth * 2
            ));
            for dep in node.dependencies() {
                match dep {
                    Dependency::Narrow(parent) => walk(parent.as_ref(), depth + 1, out),
                    Dependency::Shuffle(s) => {
                        out.push_str(&format!(
                            "{:indent$}+- shuffle {}\n",
                            "",
                            s.shuffle_id(),
                            indent = (depth + 1) * 2
                        ));
                        walk(s.parent().as_ref(), depth + 2, out)
                    }
                }
            }
        }
        let mut out = String::new();
        walk(self.node.as_ref(), 0, &mut out);
        out
    }
}
