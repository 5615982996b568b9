//! Views written in Rust: any pipeline that ends in `(key, monoid)`.

use std::fmt;
use std::marker::PhantomData;

use arrow::record_batch::RecordBatch;

use crate::rdd::Rdd;
use crate::view::{Partial, View};

/// A view whose pipeline is a Rust closure over the input dataset.
///
/// ```
/// use arrow::array::{Int64Array, StringArray};
/// use arrow::record_batch::RecordBatch;
/// use lamina::view::{CustomView, run_view};
/// use std::sync::Arc;
///
/// // Total bytes per user, from columns `user` and `bytes`.
/// let view = CustomView::new("bytes_per_user", |batches: &lamina::Rdd<RecordBatch>| {
///     batches.flat_map(|b: RecordBatch| {
///         let users = b.column_by_name("user").unwrap().as_any().downcast_ref::<StringArray>().unwrap().clone();
///         let bytes = b.column_by_name("bytes").unwrap().as_any().downcast_ref::<Int64Array>().unwrap().clone();
///         (0..b.num_rows()).map(move |i| (users.value(i).to_owned(), bytes.value(i))).collect::<Vec<_>>()
///     })
/// });
/// let batch = RecordBatch::try_from_iter([
///     ("user", Arc::new(StringArray::from(vec!["ann", "bob", "ann"])) as _),
///     ("bytes", Arc::new(Int64Array::from(vec![10, 5, 7])) as _),
/// ])?;
/// let ctx = lamina::Context::builder().threads(2).build()?;
/// let mut out = run_view(&view, &ctx.from_batches(vec![batch], 2)).collect()?;
/// out.sort();
/// assert_eq!(out, vec![("ann".to_string(), 17), ("bob".to_string(), 5)]);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct CustomView<V, F> {
    name: String,
    pipeline: F,
    _value: PhantomData<fn() -> V>,
}

impl<V, F> fmt::Debug for CustomView<V, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CustomView")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<V, F> CustomView<V, F>
where
    V: Partial,
    F: Fn(&Rdd<RecordBatch>) -> Rdd<(String, V)> + Send + Sync + 'static,
{
    /// A view named `name` computed by `pipeline`.
    pub fn new(name: impl Into<String>, pipeline: F) -> Self {
        CustomView {
            name: name.into(),
            pipeline,
            _value: PhantomData,
        }
    }
}

impl<V, F> View for CustomView<V, F>
where
    V: Partial,
    F: Fn(&Rdd<RecordBatch>) -> Rdd<(String, V)> + Send + Sync + 'static,
{
    type Value = V;

    fn name(&self) -> &str {
        &self.name
    }

    fn partials(&self, input: &Rdd<RecordBatch>) -> Rdd<(String, V)> {
        (self.pipeline)(input)
    }
}
