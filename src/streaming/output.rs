//! Output operations: what runs a job for every batch.
//!
//! - [`DStream::print`]: the first elements of each batch under a header
//!   with the batch time (Spark's `pprint`).
//! - [`DStream::foreach_rdd`]: any function of the batch's RDD.
//! - [`DStream::save_as_text_files`]: each batch as a directory of text
//!   files.
//! - [`DStream::serve`]: a stream of `(key, partial)` pairs becomes a view
//!   that the serving layer answers over REST, merged exactly with the batch
//!   layer's result of the same program.

use std::fmt;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use crate::context::Context;
use crate::error::{Error, Result};
use crate::partitioner::{FastMap, fast_map};
use crate::rdd::{Data, Rdd};
use crate::streaming::dstream::{BatchScope, DStream, InputId, InputRdds};
use crate::streaming::{Time, context::BatchOutcome};
use crate::view::state::Sum;
use crate::view::{AggValue, AggregateKind, Num, Partial};
use hashbrown::hash_map::Entry;

/// An output operation, run once per batch.
pub(crate) trait OutputOp: Send + Sync {
    fn run(&self, scope: &BatchScope, outcome: &mut BatchOutcome) -> Result<()>;
}

/// The function of a `foreach_rdd`.
type RddFn<T> = Box<dyn Fn(&Rdd<T>, Time) -> Result<()> + Send + Sync>;

struct ForEach<T: Data> {
    stream: DStream<T>,
    f: RddFn<T>,
}

impl<T: Data> OutputOp for ForEach<T> {
    fn run(&self, scope: &BatchScope, _: &mut BatchOutcome) -> Result<()> {
        // A windowed stream has an RDD once per slide.
        if !self.stream.has_rdd_at(scope.time()) {
            return Ok(());
        }
        (self.f)(&scope.rdd(&self.stream)?, scope.time())
    }
}

impl<T: Data> DStream<T> {
    /// Runs `f` with every batch's RDD and time, on the context's clock
    /// thread (jobs `f` starts run on the CPU pool). An error fails the
    /// batch.
    pub fn foreach_rdd(&self, f: impl Fn(&Rdd<T>, Time) -> Result<()> + Send + Sync + 'static) {
        self.ssc.add_output(Arc::new(ForEach {
            stream: self.clone(),
            f: Box::new(f),
        }));
    }

    /// Writes every batch as the directory `{prefix}-{time in ms}` (with
    /// `.{suffix}` when `suffix` is not empty, like Spark's
    /// `saveAsTextFiles`), one file `part-NNNNN` per partition holding one
    /// element per line, then an empty `_SUCCESS` file. Parts are written
    /// under a temporary name and renamed, so a reader that waits for
    /// `_SUCCESS` sees whole files; a batch run again rewrites its
    /// directory.
    pub fn save_as_text_files(&self, prefix: impl Into<PathBuf>, suffix: &str)
    where
        T: fmt::Display,
    {
        let prefix: PathBuf = prefix.into();
        let suffix = suffix.to_owned();
        self.foreach_rdd(move |rdd, time| {
            let mut name = prefix
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            name.push_str(&format!("-{}", time.millis()));
            if !suffix.is_empty() {
                name.push('.');
                name.push_str(&suffix);
            }
            let dir = prefix.with_file_name(name);
            std::fs::create_dir_all(&dir).map_err(|e| io_error(&dir, e))?;
            let out = dir.clone();
            rdd.run(move |tc, it| {
                let part = out.join(format!("part-{:05}", tc.partition()));
                let tmp = out.join(format!(".part-{:05}.tmp", tc.partition()));
                let file = std::fs::File::create(&tmp).map_err(|e| io_error(&tmp, e))?;
                let mut w = std::io::BufWriter::new(file);
                for x in it {
                    writeln!(w, "{x}").map_err(|e| io_error(&tmp, e))?;
                }
                w.flush().map_err(|e| io_error(&tmp, e))?;
                std::fs::rename(&tmp, &part).map_err(|e| io_error(&part, e))?;
                Ok(())
            })?;
            let success = dir.join("_SUCCESS");
            std::fs::write(&success, b"").map_err(|e| io_error(&success, e))
        });
    }
}

fn io_error(path: &std::path::Path, e: std::io::Error) -> Error {
    Error::execution(format!("{}: {e}", path.display()))
}

impl<T: Data + fmt::Debug> DStream<T> {
    /// Prints the first 10 elements of every batch to standard output under
    /// a header with the batch time, and `...` when there are more (Spark's
    /// `pprint`).
    pub fn print(&self) {
        self.print_n(10);
    }

    /// [`print`](Self::print) with the first `n` elements.
    pub fn print_n(&self, n: usize) {
        self.print_to(n, |text| {
            let mut out = std::io::stdout().lock();
            // A closed standard output (e.g. piped into `head`) is not an
            // error of the stream.
            let _ = out.write_all(text.as_bytes());
            let _ = out.flush();
        });
    }

    /// [`print_n`](Self::print_n), handing each batch's text to `sink`
    /// instead of standard output.
    pub fn print_to(&self, n: usize, sink: impl Fn(&str) + Send + Sync + 'static) {
        self.foreach_rdd(move |rdd, time| {
            let first = rdd.take(n + 1)?;
            sink(&format_batch(time, &first, n));
            Ok(())
        });
    }
}

/// The text `print` writes for one batch.
fn format_batch<T: fmt::Debug>(time: Time, first: &[T], n: usize) -> String {
    let rule = "-------------------------------------------";
    let mut text = format!("{rule}\nTime: {time}\n{rule}\n");
    for x in first.iter().take(n) {
        text.push_str(&format!("{x:?}\n"));
    }
    if first.len() > n {
        text.push_str("...\n");
    }
    text.push('\n');
    text
}

/// A value a served view can hold: it names its aggregate and becomes an
/// [`AggValue`]. Partials of a key are merged with the aggregate's monoid,
/// in the speed layer, the batch layer and the serving layer alike.
///
/// Values are merged per key in their own, small state ([`Acc`]
/// (ServedValue::Acc)) within each partition, and become an [`AggValue`]
/// once per key and partition: a word count does not build a 32-byte
/// partial per word.
pub trait ServedValue: Data {
    /// The state values of one key are merged into.
    type Acc: Send;
    /// The aggregate the REST API reports for the view.
    fn aggregate() -> AggregateKind;
    /// A state holding one value.
    fn start(self) -> Self::Acc;
    /// Adds a value to a state.
    fn add(acc: &mut Self::Acc, value: Self);
    /// The state as a partial of the aggregate.
    fn finish(acc: Self::Acc) -> AggValue;
}

/// Counts: partials add up (wrapping `i64` addition, exact in any order).
impl ServedValue for i64 {
    type Acc = i64;
    fn aggregate() -> AggregateKind {
        AggregateKind::Count
    }
    fn start(self) -> i64 {
        self
    }
    fn add(acc: &mut i64, value: i64) {
        *acc = acc.wrapping_add(value);
    }
    fn finish(acc: i64) -> AggValue {
        AggValue::Count(acc)
    }
}

/// Sums of floats.
impl ServedValue for f64 {
    type Acc = Sum;
    fn aggregate() -> AggregateKind {
        AggregateKind::Sum
    }
    fn start(self) -> Sum {
        let mut s = Sum::default();
        s.add(Num::Float(self));
        s
    }
    fn add(acc: &mut Sum, value: f64) {
        acc.add(Num::Float(value));
    }
    fn finish(acc: Sum) -> AggValue {
        AggValue::Sum(acc)
    }
}

/// A view served from a stream of `(key, partial)` pairs: its name, its
/// aggregate, and the program that computes the pairs from the input
/// streams.
#[derive(Clone)]
pub struct ServedView {
    name: String,
    aggregate: AggregateKind,
    pairs: DStream<(String, AggValue)>,
    /// The pairs hold one partial per key and partition already (a
    /// `ViewSpec`'s partials): nothing to merge within a partition.
    combined: bool,
}

impl fmt::Debug for ServedView {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServedView")
            .field("name", &self.name)
            .field("aggregate", &self.aggregate)
            .field("inputs", &self.pairs.input_ids())
            .finish()
    }
}

impl ServedView {
    /// The view's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its aggregate.
    pub fn aggregate(&self) -> &AggregateKind {
        &self.aggregate
    }

    /// The input streams its pairs are computed from.
    pub fn input_ids(&self) -> &[InputId] {
        self.pairs.input_ids()
    }

    /// The view's pairs over the given inputs — e.g. over the master
    /// dataset, which is how the batch layer runs the same program as the
    /// speed layer. Keys may repeat (partials of one key, to be merged);
    /// `time` is what a `transform` sees.
    ///
    /// # Errors
    ///
    /// An input of the view is missing from `inputs` or has another element
    /// type, or a transformation failed to build its RDD.
    pub fn pairs_over(
        &self,
        ctx: &Context,
        time: Time,
        inputs: InputRdds,
    ) -> Result<Rdd<(String, AggValue)>> {
        BatchScope::new(ctx, time, inputs).rdd(&self.pairs)
    }
}

/// One served view's partials of one batch, merged per key within each
/// partition of the batch: a key appears at most once per partition, and
/// the consumer merges the partials of a key (they are monoid states) —
/// the serving layer's store does that anyway when it applies a
/// micro-batch, so a second merge across partitions (a shuffle) would be
/// work done twice.
#[derive(Debug, Clone)]
pub struct ServedDelta {
    /// The view.
    pub view: String,
    /// `(key, partial)` for every key the batch touched, a key once per
    /// partition at most.
    pub pairs: Vec<(String, AggValue)>,
}

impl ServedDelta {
    /// The partials merged per key: each key once.
    pub fn merged(&self) -> Vec<(String, AggValue)> {
        merge_per_key(self.pairs.iter().cloned())
    }
}

struct Serve(ServedView);

impl OutputOp for Serve {
    fn run(&self, scope: &BatchScope, outcome: &mut BatchOutcome) -> Result<()> {
        let view = &self.0;
        let pairs = scope.rdd(&view.pairs)?;
        let expected = &view.aggregate;
        let combined = view.combined;
        // Each task merges its partition's pairs per key (unless they are
        // merged already); no shuffle: see `ServedDelta`.
        let parts = pairs.run(|_, it| {
            let part: Vec<(String, AggValue)> = if combined {
                it.collect()
            } else {
                merge_per_key(it)
            };
            if let Some((key, v)) = part.iter().find(|(_, v)| v.kind() != *expected) {
                return Err(Error::plan(format!(
                    "view `{}` serves {expected:?} but key {key:?} has a {:?} value",
                    view.name,
                    v.kind()
                )));
            }
            Ok(part)
        })?;
        outcome.served.push(ServedDelta {
            view: view.name.clone(),
            pairs: parts.concat(),
        });
        Ok(())
    }
}

/// The partials merged per key, each key once: what a task does with its
/// partition's pairs before they are served (speed layer) or published
/// (batch layer).
pub fn merge_per_key(pairs: impl Iterator<Item = (String, AggValue)>) -> Vec<(String, AggValue)> {
    let mut merged: FastMap<String, AggValue> = fast_map(0);
    for (key, value) in pairs {
        match merged.entry(key) {
            Entry::Occupied(mut e) => e.get_mut().merge(value),
            Entry::Vacant(e) => {
                e.insert(value);
            }
        }
    }
    merged.into_iter().collect()
}

impl<V: ServedValue> DStream<(String, V)> {
    /// Serves the stream as the view `name`: every batch's pairs are merged
    /// per key (keys may repeat; no `reduce_by_key` is needed before) and
    /// handed to the serving layer, which adds them to the batch layer's
    /// view of the same program. See [`serve_as`](DStream::serve_as) for
    /// other aggregates.
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] when a view of that name is served already.
    pub fn serve(&self, name: impl Into<String>) -> Result<ServedView> {
        // Merged per key within each partition in V's own state first,
        // then one partial per key and partition.
        self.map_partitions(|it| {
            let mut merged: FastMap<String, V::Acc> = fast_map(0);
            for (key, value) in it {
                match merged.entry(key) {
                    Entry::Occupied(mut e) => V::add(e.get_mut(), value),
                    Entry::Vacant(e) => {
                        e.insert(value.start());
                    }
                }
            }
            Box::new(merged.into_iter().map(|(k, acc)| (k, V::finish(acc))))
        })
        .serve_partials_as(name, V::aggregate())
    }
}

impl DStream<(String, AggValue)> {
    /// Serves the stream as the view `name` whose values are partials of
    /// `aggregate` (see [`serve`](DStream::serve)). A value of another
    /// aggregate fails the batch with an error naming the key.
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] when a view of that name is served already or the
    /// name is empty.
    pub fn serve_as(
        &self,
        name: impl Into<String>,
        aggregate: AggregateKind,
    ) -> Result<ServedView> {
        self.serve_view(name.into(), aggregate, false)
    }

    /// [`serve_as`](Self::serve_as) for pairs that hold one partial per key
    /// and partition already, such as a `ViewSpec`'s partials: serving
    /// skips merging within partitions. (Repeated keys are still merged
    /// right, by the consumer; only the delta is larger.)
    ///
    /// # Errors
    ///
    /// As [`serve_as`](Self::serve_as).
    pub fn serve_partials_as(
        &self,
        name: impl Into<String>,
        aggregate: AggregateKind,
    ) -> Result<ServedView> {
        self.serve_view(name.into(), aggregate, true)
    }

    fn serve_view(
        &self,
        name: String,
        aggregate: AggregateKind,
        combined: bool,
    ) -> Result<ServedView> {
        if self.windowed {
            // A served view's batch deltas add up to the view; a window's
            // results do not (they overlap), and its contents live in memory.
            return Err(Error::plan(format!(
                "view `{name}`: a windowed or stateful stream cannot be served yet (its results depend on earlier batches, which the server does not commit yet; serve the stream before the window or the state)"
            )));
        }
        let view = ServedView {
            name,
            aggregate,
            pairs: self.clone(),
            combined,
        };
        self.ssc
            .add_served(view.clone(), Arc::new(Serve(view.clone())))?;
        Ok(view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn print_shows_n_elements_and_dots_when_there_are_more() {
        let text = format_batch(Time::from_millis(2000), &[1, 2, 3], 2);
        assert_eq!(
            text,
            "-------------------------------------------\nTime: 2000 ms\n\
             -------------------------------------------\n1\n2\n...\n\n"
        );
        let text = format_batch::<i32>(Time::from_millis(5), &[], 10);
        assert!(text.ends_with("-\n\n"), "{text}");
    }
}
