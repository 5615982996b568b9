//! Views from configuration: a key extractor and a built-in aggregate, run
//! columnar over Arrow record batches.

use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::columnar::{NumericColumn, TextColumn, column};
use crate::context::TaskContext;
use crate::error::{Error, Result};
use crate::partitioner::{FastMap, fast_map};
use crate::rdd::{BoxIter, NarrowOp, Rdd};
use crate::view::{AggValue, AggregateKind, KeySpec, Num, View};

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

/// The aggregate's input column, bound to one batch.
enum BoundInput<'a> {
    /// `count`: no column.
    Rows,
    Number(NumericColumn<'a>),
    /// `distinct` over a text column.
    Text(TextColumn<'a>),
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

    fn bind_input<'a>(&self, batch: &'a RecordBatch) -> Result<BoundInput<'a>> {
        let Some(name) = &self.column else {
            return Ok(BoundInput::Rows);
        };
        if self.aggregate == AggregateKind::Distinct && TextColumn::of(batch, name).is_ok() {
            return Ok(BoundInput::Text(TextColumn::of(batch, name)?));
        }
        column(batch, name)?;
        NumericColumn::of(batch, name)
            .map(BoundInput::Number)
            .map_err(|e| Error::plan(format!("view `{}`: {e}", self.name)))
    }

    /// Folds one batch into `acc`: for every record, every key it yields is
    /// updated with the record's value. Keys are looked up by `&str` and
    /// copied only when new.
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] naming the view and column when a column is missing or
    /// of the wrong type; `acc` is unchanged then.
    pub fn accumulate(
        &self,
        batch: &RecordBatch,
        acc: &mut FastMap<String, AggValue>,
    ) -> Result<()> {
        let key = self
            .key
            .bind(batch)
            .map_err(|e| Error::plan(format!("view `{}`: {e}", self.name)))?;
        let input = self.bind_input(batch)?;
        let zero = self.aggregate.zero();
        let mut scratch = String::new();
        for row in 0..batch.num_rows() {
            match &input {
                BoundInput::Rows => key.for_each_key(row, &mut scratch, &mut |k| {
                    slot(acc, k, &zero).update_count(1);
                }),
                BoundInput::Number(col) => {
                    let value = col.get(row);
                    key.for_each_key(row, &mut scratch, &mut |k| {
                        update_num(slot(acc, k, &zero), value);
                    });
                }
                BoundInput::Text(col) => {
                    let value = col.get(row);
                    key.for_each_key(row, &mut scratch, &mut |k| {
                        let s = slot(acc, k, &zero);
                        if let Some(v) = value {
                            s.update_str(v);
                        }
                    });
                }
            }
        }
        Ok(())
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
        let mut acc = fast_map(0);
        for batch in batches {
            self.accumulate(batch, &mut acc)?;
        }
        Ok(acc)
    }
}

/// The state of `key` in `acc`, created from `zero` on first sight.
#[inline]
fn slot<'m>(
    acc: &'m mut FastMap<String, AggValue>,
    key: &str,
    zero: &AggValue,
) -> &'m mut AggValue {
    acc.entry_ref(key).or_insert_with(|| zero.clone())
}

#[inline]
fn update_num(slot: &mut AggValue, value: Option<Num>) {
    // A null value still creates the key (like SQL's GROUP BY), adding
    // nothing to it.
    if let Some(v) = value {
        slot.update_num(v);
    }
}

/// The map side of a [`ViewSpec`]: one task folds all batches of its
/// partition into one map, then emits its entries.
struct SpecPartials(ViewSpec);

impl NarrowOp<RecordBatch, (String, AggValue)> for SpecPartials {
    fn name(&self) -> &'static str {
        "view_partials"
    }

    fn apply<'a>(
        &'a self,
        tc: &'a TaskContext,
        input: BoxIter<'a, RecordBatch>,
    ) -> BoxIter<'a, (String, AggValue)> {
        let mut acc = fast_map(0);
        for batch in input {
            if let Err(e) = self.0.accumulate(&batch, &mut acc) {
                tc.fail(e);
                return Box::new(std::iter::empty());
            }
        }
        Box::new(acc.into_iter())
    }
}

impl View for ViewSpec {
    type Value = AggValue;

    fn name(&self) -> &str {
        &self.name
    }

    fn partials(&self, input: &Rdd<RecordBatch>) -> Rdd<(String, AggValue)> {
        input.narrow(SpecPartials(self.clone()))
    }
}
