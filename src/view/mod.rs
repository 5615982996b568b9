//! Views: defined once, run by both layers.
//!
//! A view turns record batches into `(key, partial aggregate)` pairs whose
//! partials merge exactly in any order and grouping (commutative monoids).
//! The batch layer runs it over Parquet row groups, the speed layer over each
//! micro-batch; because partials merge exactly, the serving layer can add a
//! batch view and real-time deltas without gap or double count.
//!
//! - [`monoid`]: the [`Monoid`] and [`Group`] traits and their law checks.
//! - [`aggregate`]: the built-in aggregates (count, sum, min, max, mean,
//!   approximate distinct, top-k) as [`AggValue`] partial states.
//! - [`num`] and [`state`]: the numbers aggregates read and the per-kind
//!   partial states (sum, mean, min, max, top-k).
//! - [`hll`]: the HyperLogLog sketch behind approximate distinct counts.
//! - [`key`]: key extractors ([`KeySpec`]): a column, the words of a text
//!   column, an event-time bucket, a tuple of these.
//! - [`spec`]: [`ViewSpec`], a view from configuration: a key extractor and
//!   an aggregate, run columnar over Arrow batches.
//! - [`partials`]: [`Partials`], a task's partial aggregates in columnar
//!   form split by key hash, as the batch layer hands them over.
//! - [`custom`]: [`CustomView`], any RDD pipeline that ends in
//!   `(key, monoid)`.

pub mod aggregate;
pub mod custom;
pub mod fold;
pub mod hll;
pub mod key;
pub mod monoid;
pub mod num;
pub mod partials;
pub mod spec;
pub mod state;
mod text_table;

use arrow::record_batch::RecordBatch;

pub use aggregate::{AggValue, AggregateKind, Num};
pub use custom::CustomView;
pub use hll::Hll;
pub use key::KeySpec;
pub use monoid::{Algebra, Group, Monoid};
pub use partials::Partials;
pub use spec::ViewSpec;

use crate::rdd::Rdd;

/// A partial aggregate that merges exactly: associative and commutative.
///
/// Every [`Monoid`] is one. [`AggValue`] is one too, though not a monoid on
/// its own: its identity depends on the aggregate kind.
pub trait Partial:
    Clone + std::fmt::Debug + Send + Sync + serde::Serialize + serde::de::DeserializeOwned + 'static
{
    /// Merges `other` into `self`.
    fn merge(&mut self, other: Self);
}

impl<M: Monoid> Partial for M {
    fn merge(&mut self, other: Self) {
        self.combine_owned(other);
    }
}

impl Partial for AggValue {
    /// # Panics
    ///
    /// When the two values are of different aggregate kinds, which cannot
    /// happen for partials of one view. The panic fails the task with a
    /// message naming both kinds.
    fn merge(&mut self, other: Self) {
        if let Err(e) = self.combine(&other) {
            panic!("cannot merge partial aggregates: {e}");
        }
    }
}

/// A view: a name and a pipeline from record batches to `(key, partial)`
/// pairs. Keys may repeat in the output; [`run_view`] merges them.
pub trait View: Send + Sync + 'static {
    /// The partial aggregate per key.
    type Value: Partial;

    /// The view's name, unique within a server.
    fn name(&self) -> &str;

    /// The pipeline: partial aggregates of `input`, keyed.
    fn partials(&self, input: &Rdd<RecordBatch>) -> Rdd<(String, Self::Value)>;
}

/// The view's result over `input`: one merged partial per key, over as many
/// partitions as `input` has. Lazy, like any transformation.
pub fn run_view<V: View>(view: &V, input: &Rdd<RecordBatch>) -> Rdd<(String, V::Value)> {
    // Pipelines combine within a partition already; a second map-side
    // combine would hash every key again for nothing.
    view.partials(input).combine_by_key(
        |v| v,
        |mut a: V::Value, b| {
            a.merge(b);
            a
        },
        |mut a: V::Value, b| {
            a.merge(b);
            a
        },
        input.num_partitions(),
        false,
    )
}
