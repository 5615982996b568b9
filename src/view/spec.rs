//! Views from configuration: a key extractor and a built-in aggregate, run
//! columnar over Arrow record batches.

use arrow::record_batch::RecordBatch;
use serde::{Deserialize, Serialize};

use crate::columnar::{KeyColumn, NumericColumn, TextColumn, column};
use crate::context::TaskContext;
use crate::error::{Error, Result};
use crate::partitioner::{FastMap, fast_map};
use crate::rdd::{BoxIter, NarrowOp, Rdd};
use crate::view::key::{BoundKey, write_rfc3339};
use crate::view::{AggValue, AggregateKind, KeySpec, Num, Partial, View};

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

    /// An empty accumulator for [`accumulate`](Self::accumulate).
    pub fn accumulator(&self) -> Accumulator {
        Accumulator {
            text: fast_map(0),
            ints: fast_map(0),
            buckets: fast_map(0),
            zero: self.aggregate.zero(),
        }
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
        let Accumulator {
            text,
            ints,
            buckets,
            zero,
        } = acc;
        match &key {
            BoundKey::Column(KeyColumn::Number(col)) if col.is_integer() => {
                for row in 0..batch.num_rows() {
                    match col.get(row) {
                        Some(Num::Int(k)) => {
                            input.update(ints.entry(k).or_insert_with(|| zero.clone()), row)
                        }
                        // A UInt64 beyond i64::MAX: rare, keyed as text.
                        Some(Num::Float(f)) => input.update(
                            text.entry_ref(f.to_string().as_str())
                                .or_insert_with(|| zero.clone()),
                            row,
                        ),
                        None => {}
                    }
                }
            }
            BoundKey::Bucket {
                column,
                width_micros,
            } => {
                for row in 0..batch.num_rows() {
                    if let Some(t) = column.micros(row) {
                        let start = t - t.rem_euclid(*width_micros);
                        input.update(buckets.entry(start).or_insert_with(|| zero.clone()), row);
                    }
                }
            }
            _ => {
                let mut scratch = String::new();
                for row in 0..batch.num_rows() {
                    key.for_each_key(row, &mut scratch, |k| {
                        input.update(text.entry_ref(k).or_insert_with(|| zero.clone()), row);
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
        let mut acc = self.accumulator();
        for batch in batches {
            self.accumulate(batch, &mut acc)?;
        }
        Ok(acc.finish())
    }
}

/// A partition's partial aggregates while they are being folded; see
/// [`ViewSpec::accumulate`].
#[derive(Debug)]
pub struct Accumulator {
    text: FastMap<String, AggValue>,
    ints: FastMap<i64, AggValue>,
    /// Time buckets by start, in microseconds since the epoch.
    buckets: FastMap<i64, AggValue>,
    zero: AggValue,
}

impl Accumulator {
    /// The partials keyed by their text form. Typed keys are rendered here,
    /// once per distinct key; a typed key whose text equals a text key (a
    /// column that was text in one batch and numbers in another) is merged
    /// into it.
    pub fn finish(self) -> FastMap<String, AggValue> {
        let Accumulator {
            mut text,
            ints,
            buckets,
            ..
        } = self;
        let typed =
            ints.into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .chain(buckets.into_iter().map(|(start, v)| {
                    let mut key = String::with_capacity(20);
                    write_rfc3339(start, &mut key);
                    (key, v)
                }));
        for (k, v) in typed {
            match text.get_mut(&k) {
                Some(acc) => acc.merge(v),
                None => {
                    text.insert(k, v);
                }
            }
        }
        text
    }
}

impl BoundInput<'_> {
    /// Adds record `row`'s value to one key's state.
    #[inline]
    fn update(&self, slot: &mut AggValue, row: usize) {
        match self {
            BoundInput::Rows => slot.update_count(1),
            // A null value still creates the key (like SQL's GROUP BY),
            // adding nothing to it.
            BoundInput::Number(col) => {
                if let Some(v) = col.get(row) {
                    slot.update_num(v);
                }
            }
            BoundInput::Text(col) => {
                if let Some(v) = col.get(row) {
                    slot.update_str(v);
                }
            }
        }
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
        let mut acc = self.0.accumulator();
        for batch in input {
            if let Err(e) = self.0.accumulate(&batch, &mut acc) {
                tc.fail(e);
                return Box::new(std::iter::empty());
            }
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
        input.narrow(SpecPartials(self.clone()))
    }
}
