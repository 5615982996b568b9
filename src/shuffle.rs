//! Shuffles: the edge where a stage ends.
//!
//! A map task splits its partition by a partitioner and hands one block per
//! reduce partition to a [`ShuffleStore`]; reduce tasks fetch their block from
//! every map task. Blocks are typed data behind `Any` in memory today; the
//! store is a trait so that a spilling implementation (serialising blocks to
//! local disk) can replace the in-memory one without touching operators.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use crate::context::{Context, TaskContext};
use crate::error::Result;
use crate::rdd::Node;

/// Identifies a shuffle within its [`Context`].
pub type ShuffleId = usize;

/// One map task's output for one reduce partition: a `Vec<(K, V)>` behind
/// `Any`, downcast by the reader that knows the types.
pub type Block = Arc<dyn Any + Send + Sync>;

/// Where shuffle map outputs live between the map and the reduce stage.
///
/// Implementations must be safe to call from many worker threads at once.
/// A map output is all-or-nothing: `put_map_output` publishes every block of
/// one map task at once, so a reader never sees half a map output.
pub trait ShuffleStore: Send + Sync {
    /// Stores the blocks of one finished map task (one per reduce partition),
    /// replacing any earlier output of the same task (a retried or
    /// recomputed task writes the same data again).
    fn put_map_output(&self, shuffle: ShuffleId, map_partition: usize, blocks: Vec<Block>);

    /// The block of `map_partition` for `reduce_partition`, if present.
    fn block(
        &self,
        shuffle: ShuffleId,
        map_partition: usize,
        reduce_partition: usize,
    ) -> Option<Block>;

    /// Whether the output of `map_partition` is present.
    fn has_map_output(&self, shuffle: ShuffleId, map_partition: usize) -> bool;

    /// Forgets one map output, as if its executor had been lost. The next job
    /// that needs it recomputes it from lineage.
    fn remove_map_output(&self, shuffle: ShuffleId, map_partition: usize);

    /// Forgets every output of a shuffle (called when the shuffle's dataset is
    /// dropped).
    fn remove_shuffle(&self, shuffle: ShuffleId);
}

/// The blocks of each finished map task, by (shuffle, map partition).
type MapOutputs = HashMap<(ShuffleId, usize), Arc<[Block]>>;

/// The default [`ShuffleStore`]: blocks stay in memory.
#[derive(Default)]
pub struct InMemoryShuffleStore {
    // A std mutex: every critical section is a map lookup or insert and never
    // waits on anything else.
    outputs: Mutex<MapOutputs>,
}

impl fmt::Debug for InMemoryShuffleStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outputs = self.lock().len();
        f.debug_struct("InMemoryShuffleStore")
            .field("map_outputs", &outputs)
            .finish()
    }
}

impl InMemoryShuffleStore {
    fn lock(&self) -> std::sync::MutexGuard<'_, MapOutputs> {
        // A panic while holding the lock cannot leave the map half-updated
        // (each section is a single insert/remove), so poisoning is ignored.
        self.outputs.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl ShuffleStore for InMemoryShuffleStore {
    fn put_map_output(&self, shuffle: ShuffleId, map_partition: usize, blocks: Vec<Block>) {
        self.lock().insert((shuffle, map_partition), blocks.into());
    }

    fn block(
        &self,
        shuffle: ShuffleId,
        map_partition: usize,
        reduce_partition: usize,
    ) -> Option<Block> {
        let blocks = self.lock().get(&(shuffle, map_partition)).cloned()?;
        blocks.get(reduce_partition).cloned()
    }

    fn has_map_output(&self, shuffle: ShuffleId, map_partition: usize) -> bool {
        self.lock().contains_key(&(shuffle, map_partition))
    }

    fn remove_map_output(&self, shuffle: ShuffleId, map_partition: usize) {
        self.lock().remove(&(shuffle, map_partition));
    }

    fn remove_shuffle(&self, shuffle: ShuffleId) {
        self.lock().retain(|(s, _), _| *s != shuffle);
    }
}

/// The type-erased side of a shuffle dependency that the scheduler drives.
pub trait ShuffleDep: Send + Sync {
    /// The shuffle's id.
    fn shuffle_id(&self) -> ShuffleId;

    /// The dataset whose partitions the map tasks compute.
    fn parent(&self) -> Arc<dyn Node>;

    /// Number of reduce partitions (the partitioner's).
    fn num_reduce_partitions(&self) -> usize;

    /// Runs on the driver before any map task, e.g. to sample keys for a
    /// range partitioner. May run jobs of its own.
    fn prepare(&self, _ctx: &Context) -> Result<()> {
        Ok(())
    }

    /// Computes one parent partition, splits it and stores the blocks.
    fn run_map_task(&self, map_partition: usize, tc: &TaskContext) -> Result<()>;
}

/// Fetches a typed block, turning a missing one into
/// [`Error::ShuffleFetch`](crate::Error::ShuffleFetch) so that the scheduler
/// recomputes the map side.
pub(crate) fn fetch<T: Send + Sync + 'static>(
    store: &dyn ShuffleStore,
    shuffle: ShuffleId,
    map_partition: usize,
    reduce_partition: usize,
) -> Result<Arc<Vec<T>>> {
    let block = store
        .block(shuffle, map_partition, reduce_partition)
        .ok_or(crate::Error::ShuffleFetch {
            shuffle,
            map_partition,
        })?;
    block.downcast::<Vec<T>>().map_err(|_| {
        crate::Error::Internal(format!(
            "shuffle {shuffle}: block of map partition {map_partition} has an unexpected type"
        ))
    })
}
