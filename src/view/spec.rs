//! Views from configuration: a key extractor and a built-in aggregate, run
//! columnar over Arrow record batches.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::columnar::{NumericColumn, TextColumn, column};
use crate::context::TaskContext;
use crate::error::{Error, Result};
use crate::partitioner::FastMap;
use crate::rdd::{BoxIter, NarrowOp, Rdd};
use crate::view::fold::{Accumulator, FoldInput};
use crate::view::{AggValue, AggregateKind, KeySpec, Partials, View};

/// A view defined by data: what the `[[view]]` tables of the config become.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewSpec {
    /// Unique name; the REST path segment.
    pub name: String,
    /// How keys are extracted from a record.
    pub key: KeySpec,
    /// What is computed per key.
    pub aggregate: AggregateKind,
    /// The column the aggregate reads; required by every aggregate but
    /// `count`, which counts records.
    pub column: Option<String>,
}

impl ViewSpec {
    /// Checks the definition without data.
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] naming the view and the problem: an empty name, a bad
    /// key, a missing aggregate column, `top_k` with k = 0.
    pub fn validate(&self) -> Result<()> {
        let fail = |msg: String| Err(Error::plan(format!("view `{}`: {msg}", self.name)));
        if self.name.is_empty() {
            return Err(Error::plan("view: name is empty"));
        }
        if let Err(e) = self.key.validate() {
            return fail(e.to_string());
        }
        match (&self.aggregate, &self.column) {
            (AggregateKind::TopK { k: 0 }, _) => fail("top_k needs k >= 1".into()),
            (kind, None) if kind.needs_column() => {
                fail(format!("aggregate {kind:?} needs a `column`"))
            }
            (AggregateKind::Count, Some(c)) => fail(format!(
                "count counts records and takes no column (got `{c}`)"
            )),
            _ => Ok(()),
        }
    }

    fn bind_input<'a>(&self, batch: &'a RecordBatch) -> Result<FoldInput<'a>> {
        let Some(name) = &self.column else {
            return Ok(FoldInput::Rows);
        };
        if self.aggregate == AggregateKind::Distinct && TextColumn::of(batch, name).is_ok() {
            return Ok(FoldInput::Text(TextColumn::of(batch, name)?));
        }
        column(batch, name)?;
        NumericColumn::of(batch, name)
            .map(FoldInput::Number)
            .map_err(|e| Error::plan(format!("view `{}`: {e}", self.name)))
    }

    /// An empty accumulator for [`accumulate`](Self::accumulate).
    pub fn accumulator(&self) -> Accumulator {
        Accumulator::new(&self.aggregate)
    }

    /// Folds one batch into `acc`: for every record, every key it yields is
    /// updated with the record's value.
    ///
    /// Keys stay typed while the partition is folded — integer keys and
    /// time buckets in maps keyed by `i64`, text looked up by `&str` and
    /// copied only when new — and become text once, in
    /// [`Accumulator::finish`].
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] naming the view and column when a column is missing or
    /// of the wrong type; `acc` is unchanged then.
    pub fn accumulate(&self, batch: &RecordBatch, acc: &mut Accumulator) -> Result<()> {
        let key = self
            .key
            .bind(batch)
            .map_err(|e| Error::plan(format!("view `{}`: {e}", self.name)))?;
        let input = self.bind_input(batch)?;
        acc.fold(&key, &input, batch.num_rows());
        Ok(())
    }

    /// The view's partial aggregates over `batches` (a partition's) in
    /// columnar form, split by key hash: what a batch run hands to the
    /// serving layer.
    ///
    /// # Errors
    ///
    /// As [`accumulate`](Self::accumulate).
    pub fn partials_of(&self, batches: impl IntoIterator<Item = RecordBatch>) -> Result<Partials> {
        self.partials_of_sized(batches, &AtomicUsize::new(0))
    }

    /// [`partials_of`](Self::partials_of) starting with room for as many
    /// keys as `hint` says, and storing this partition's number of keys in
    /// it: the tasks of one view over similar row groups then do not grow
    /// their tables from empty (each doubling moves every key).
    ///
    /// # Errors
    ///
    /// As [`accumulate`](Self::accumulate).
    pub fn partials_of_sized(
        &self,
        batches: impl IntoIterator<Item = RecordBatch>,
        hint: &AtomicUsize,
    ) -> Result<Partials> {
        let mut acc = self.accumulator();
        acc.reserve(hint.load(Ordering::Relaxed));
        for batch in batches {
            self.accumulate(&batch, &mut acc)?;
        }
        hint.fetch_max(acc.len(), Ordering::Relaxed);
        Ok(acc.finish_partials())
    }

    /// The merged result of the view over `batches`, computed in the calling
    /// thread. The speed layer uses this for a micro-batch small enough not
    /// to need the pool.
    ///
    /// # Errors
    ///
    /// As [`accumulate`](Self::accumulate).
    pub fn aggregate_batches<'b>(
        &self,
        batches: impl IntoIterator<Item = &'b RecordBatch>,
    ) -> Result<FastMap<String, AggValue>> {
        let mut acc = self.accumulator();
        for batch in batches {
            self.accumulate(batch, &mut acc)?;
        }
        Ok(acc.finish().into_iter().collect())
    }
}

impl ViewSpec {
    /// The spec of a windowed view over this one: the same aggregate, keyed
    /// by `tuple = [time_bucket(time_column, slide), key...]`, so that each
    /// key's partials are per bucket (see
    /// [`windowed_view`](crate::streaming::windowed_view)).
    pub fn windowed(&self, time_column: &str, slide_secs: u64) -> ViewSpec {
        let bucket = KeySpec::TimeBucket {
            column: time_column.to_owned(),
            width_secs: slide_secs,
        };
        let key = match &self.key {
            KeySpec::Tuple(parts) => KeySpec::Tuple(
                std::iter::once(bucket)
                    .chain(parts.iter().cloned())
                    .collect(),
            ),
            single => KeySpec::Tuple(vec![bucket, single.clone()]),
        };
        ViewSpec {
            key,
            ..self.clone()
        }
    }

    /// [`View::partials`] with a size hint shared between runs: each task's
    /// map starts with room for as many keys as the last task that stored
    /// into the hint had (the speed layer runs a view every micro-batch over
    /// similar data; growing a map of 100k keys from empty rehashes them
    /// several times).
    pub fn partials_sized(
        &self,
        input: &Rdd<RecordBatch>,
        hint: &Arc<AtomicUsize>,
    ) -> Rdd<(String, AggValue)> {
        input.narrow(SpecPartials(self.clone(), Some(Arc::clone(hint))))
    }
}

/// The map side of a [`ViewSpec`]: one task folds all batches of its
/// partition into one map, then emits its entries. With a size hint, the
/// map starts with room for as many keys as the hint says (and the hint
/// learns how many keys the partition had).
struct SpecPartials(ViewSpec, Option<Arc<AtomicUsize>>);

impl NarrowOp<RecordBatch, (String, AggValue)> for SpecPartials {
    fn name(&self) -> &'static str {
        "view_partials"
    }

    fn apply<'a>(
        &'a self,
        tc: &'a TaskContext,
        input: BoxIter<'a, RecordBatch>,
    ) -> BoxIter<'a, (String, AggValue)> {
        let mut acc = self.0.accumulator();
        if let Some(hint) = &self.1 {
            acc.reserve(hint.load(Ordering::Relaxed));
        }
        for batch in input {
            if let Err(e) = self.0.accumulate(&batch, &mut acc) {
                tc.fail(e);
                return Box::new(std::iter::empty());
            }
        }
        if let Some(hint) = &self.1 {
            hint.store(acc.len(), Ordering::Relaxed);
        }
        Box::new(acc.finish().into_iter())
    }
}

impl View for ViewSpec {
    type Value = AggValue;

    fn name(&self) -> &str {
        &self.name
    }

    fn partials(&self, input: &Rdd<RecordBatch>) -> Rdd<(String, AggValue)> {
        input.narrow(SpecPartials(self.clone(), None))
    }
}
