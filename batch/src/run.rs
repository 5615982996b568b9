//! Computing one generation of every view from a snapshot of the master
//! dataset.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use arrow::record_batch::RecordBatch;
use lamina::master::MasterStore;
use lamina::streaming::dstream::InputId;
use lamina::streaming::output::merge_per_key;
use lamina::streaming::{InputRdds, ServedView, Time};
use lamina::view::{AggValue, KeySpec, Partials, ViewSpec};
use lamina::{Context, Error, Rdd, Result};

use crate::history::{Histories, Listed};
use crate::progress::RunProgress;
use tokio::sync::watch;

/// A view and the stream it reads.
#[derive(Debug, Clone)]
pub struct ViewInput {
    /// The stream whose records the view aggregates.
    pub stream: String,
    /// The view.
    pub spec: ViewSpec,
}

/// A view written as a DStream program (see `lamina_speed::program`): the
/// batch layer runs the same program over the master dataset, each input
/// stream's RDD being the stream's sealed files.
#[derive(Debug, Clone)]
pub struct ProgramView {
    /// The served view.
    pub view: ServedView,
    /// Each input stream of the view: its id in the program, its name.
    pub streams: Vec<(InputId, String)>,
}

/// A view as the batch layer runs it.
#[derive(Debug, Clone)]
pub enum BatchView {
    /// A view from the config: its definition reads only the columns it
    /// needs.
    Config(ViewInput),
    /// A view written in Rust: its program over every column.
    Program(ProgramView),
}

impl From<ViewInput> for BatchView {
    fn from(v: ViewInput) -> Self {
        BatchView::Config(v)
    }
}

impl BatchView {
    /// The view's name.
    pub fn name(&self) -> &str {
        match self {
            BatchView::Config(v) => &v.spec.name,
            BatchView::Program(p) => p.view.name(),
        }
    }

    /// The streams it reads.
    pub fn streams(&self) -> Vec<&str> {
        match self {
            BatchView::Config(v) => vec![v.stream.as_str()],
            BatchView::Program(p) => p.streams.iter().map(|(_, s)| s.as_str()).collect(),
        }
    }
}

/// What a run read.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct GenerationStats {
    /// Parquet files read.
    pub files: u64,
    /// Records in them.
    pub rows: u64,
    /// Their size.
    pub bytes: u64,
    /// Each view's computation, in run order.
    #[serde(default)]
    pub views: Vec<ViewTiming>,
}

/// How long one view of a run took: from reading its files' footers until
/// its last partial aggregates were handed to the sink (so it includes the
/// sink's work: the serving layer merges them into the new generation
/// there; the final commit of the generation comes after every view and is
/// not in it).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ViewTiming {
    /// The view.
    pub view: String,
    /// Milliseconds.
    pub ms: u64,
}

/// One view's rows of a generation, as the engine's partitions produced
/// them: a consumer can free each partition once it has taken it.
#[derive(Debug, Clone)]
pub struct ViewRows {
    /// The view.
    pub view: String,
    /// `(key, value)` for every key, one vector per partition.
    pub partitions: Vec<Vec<(String, AggValue)>>,
}

/// The batch views over all sealed epochs `<= epoch`.
#[derive(Debug, Clone)]
pub struct Generation {
    /// The watermark: every epoch `<=` it is in the generation.
    pub epoch: u64,
    /// The rows of every view that had input.
    pub views: Vec<ViewRows>,
    /// What was read.
    pub stats: GenerationStats,
}

impl Generation {
    /// Number of keys over all views.
    pub fn keys(&self) -> u64 {
        self.views
            .iter()
            .flat_map(|v| &v.partitions)
            .map(|p| p.len() as u64)
            .sum()
    }

    /// `(view, key, value)` for every key of every view, freeing each
    /// partition once it is consumed.
    pub fn into_rows(self) -> impl Iterator<Item = (String, String, AggValue)> {
        self.views.into_iter().flat_map(|v| {
            let view = v.view;
            v.partitions
                .into_iter()
                .flatten()
                .map(move |(k, val)| (view.clone(), k, val))
        })
    }
}

/// The columns a view reads: its key columns and its aggregate's column.
fn columns(spec: &ViewSpec) -> Vec<String> {
    fn key_columns(key: &KeySpec, out: &mut Vec<String>) {
        match key {
            KeySpec::Column(c) | KeySpec::Words(c) | KeySpec::TimeBucket { column: c, .. } => {
                out.push(c.clone())
            }
            KeySpec::Tuple(parts) => parts.iter().for_each(|p| key_columns(p, out)),
        }
    }
    let mut out = Vec::new();
    key_columns(&spec.key, &mut out);
    out.extend(spec.column.clone());
    out.sort();
    out.dedup();
    out
}

/// The columns a view can read as dictionaries: its key column when the
/// key is one column that nothing else reads (the fold keeps a state per
/// dictionary entry then; see `lamina::view::fold`).
fn dictionary_columns(spec: &ViewSpec) -> Vec<String> {
    match &spec.key {
        KeySpec::Column(c) if spec.column.as_ref() != Some(c) => vec![c.clone()],
        _ => Vec::new(),
    }
}

/// Where [`stream_generation`] hands a generation's rows: `(view, the
/// partial aggregates of one partition)`, called on the engine's workers as
/// partitions complete, in completion order. A key may come in several
/// partitions (and twice in one): its partials are monoid states, and the
/// consumer combines them. The sink runs on the worker that computed the
/// partition, so the consumer's merge is spread over the CPU pool and
/// holds the worker back while it runs (backpressure). [`Partials`] come
/// split by key hash, each key with its hash, so a consumer sharded the
/// same way merges part by part without hashing a key again.
pub type RowSink = Arc<dyn Fn(&str, Partials) + Send + Sync>;

/// What a streamed generation read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationSummary {
    /// The watermark: every epoch `<=` it is in the generation.
    pub epoch: u64,
    /// What was read.
    pub stats: GenerationStats,
}

impl GenerationStats {
    fn add(&mut self, files: &[lamina::master::EpochFile]) {
        self.files += files.len() as u64;
        self.rows += files.iter().map(|f| f.rows).sum::<u64>();
        self.bytes += files.iter().map(|f| f.bytes).sum::<u64>();
    }
}

/// Computes generation `E`, where `E` is the last sealed epoch in the
/// manifest, and collects it; `Ok(None)` when no epoch is sealed yet. See
/// [`stream_generation`], which hands rows over as they are computed.
///
/// # Errors
///
/// As [`stream_generation`].
pub async fn compute_generation(
    ctx: &Context,
    master: &MasterStore,
    views: &[BatchView],
    cancel: watch::Receiver<bool>,
) -> Result<Option<Generation>> {
    type Collected = BTreeMap<String, BTreeMap<String, AggValue>>;
    let collected: Arc<Mutex<Collected>> = Arc::default();
    let into = Arc::clone(&collected);
    let sink: RowSink = Arc::new(move |view, rows: Partials| {
        let mut all = into.lock().unwrap_or_else(|p| p.into_inner());
        let merged = all.entry(view.to_owned()).or_default();
        for (key, value) in rows.into_rows() {
            match merged.entry(key) {
                std::collections::btree_map::Entry::Occupied(mut e) => {
                    // Partials of one view share its aggregate kind.
                    let _ = e.get_mut().combine_owned(value);
                }
                std::collections::btree_map::Entry::Vacant(e) => {
                    e.insert(value);
                }
            }
        }
    });
    let Some(summary) = stream_generation(ctx, master, views, cancel, |_| sink).await? else {
        return Ok(None);
    };
    let collected = std::mem::take(&mut *collected.lock().unwrap_or_else(|p| p.into_inner()));
    Ok(Some(Generation {
        epoch: summary.epoch,
        views: collected
            .into_iter()
            .map(|(view, rows)| ViewRows {
                view,
                partitions: vec![rows.into_iter().collect()],
            })
            .collect(),
        stats: summary.stats,
    }))
}

/// Computes generation `E`, where `E` is the last sealed epoch in the
/// manifest, handing each view's partial aggregates to a sink partition by
/// partition as the engine completes them: the map side of the view runs
/// on the engine (one task per row group, folding it into one partial per
/// key), and the final merge is the consumer's — the serving layer merges
/// straight into the new generation's columns, so no shuffle holds every
/// key's partials in memory at once. `start(E)` is called once `E` is known and
/// before any row, and returns the sink. `Ok(None)` (and no call of
/// `start`) when no epoch is sealed yet.
///
/// Reads only the files the manifest lists for epochs `<= E` and only the
/// columns each view needs; every view runs on the engine's CPU pool.
///
/// # Errors
///
/// The first view's error: an unreadable file (named), a missing column, a
/// cancelled job. Rows handed over before the error stay handed over: the
/// consumer discards them.
///
/// # Cancellation
///
/// When `cancel` turns true the run stops: the running job is dropped, which
/// skips its remaining tasks (see [`lamina::JobFuture`]).
pub async fn stream_generation(
    ctx: &Context,
    master: &MasterStore,
    views: &[BatchView],
    cancel: watch::Receiver<bool>,
    start: impl FnOnce(u64) -> RowSink,
) -> Result<Option<GenerationSummary>> {
    let progress = RunProgress::new();
    stream_generation_with(
        ctx,
        master,
        &Histories::new(),
        views,
        &progress,
        cancel,
        start,
    )
    .await
}

/// [`stream_generation`] reading each stream's history first (files of
/// other tools, listed again by every run; see [`crate::history`]).
///
/// # Errors
///
/// As [`stream_generation`]; also a history that cannot be listed, and a
/// history file whose columns do not match its stream's (named).
///
/// `progress` counts what the run has read of what it will read.
pub async fn stream_generation_with(
    ctx: &Context,
    master: &MasterStore,
    histories: &Histories,
    views: &[BatchView],
    progress: &RunProgress,
    cancel: watch::Receiver<bool>,
    start: impl FnOnce(u64) -> RowSink,
) -> Result<Option<GenerationSummary>> {
    let manifest = master.manifest().await?;
    let Some(epoch) = manifest.sealed_through else {
        return Ok(None);
    };
    // One listing per stream and run, before any row is handed over.
    let mut listed: BTreeMap<&str, Listed> = BTreeMap::new();
    for view in views {
        for stream in view.streams() {
            if let Some(history) = histories.get(stream)
                && !listed.contains_key(stream)
            {
                listed.insert(stream, Listed::list(history).await?);
            }
        }
    }
    // What each view will read: its streams' sealed files and histories.
    let plans: Vec<(u64, u64)> = views
        .iter()
        .map(|view| {
            view.streams()
                .into_iter()
                .fold((0, 0), |(rows, bytes), stream| {
                    let files = manifest.snapshot(stream, epoch);
                    let (r, b) = files.fold((0, 0), |(r, b), f| (r + f.rows, b + f.bytes));
                    let history = listed.get(stream).map_or(0, |l| l.bytes);
                    (rows + r, bytes + b + history)
                })
        })
        .collect();
    progress.set_views(views.len() as u64);
    for &(rows, bytes) in &plans {
        progress.plan(rows, bytes);
    }
    let sink = start(epoch);
    let mut stats = GenerationStats::default();
    let mut counted: BTreeMap<&str, ()> = BTreeMap::new();
    let mut history_counted: BTreeMap<String, ()> = BTreeMap::new();
    // The stream's epochs and its history as one dataset (`None`: neither
    // has a file).
    let mut input_of = async |stream: &'_ str,
                              files: &[lamina::master::EpochFile],
                              columns: Option<&[String]>,
                              dictionaries: &[String],
                              stats: &mut GenerationStats|
           -> Result<Option<Rdd<RecordBatch>>> {
        let own = if files.is_empty() {
            None
        } else {
            Some(
                master
                    .scan_with(ctx, files, columns, dictionaries, progress.scan())
                    .await?,
            )
        };
        let old = match listed.get(stream) {
            Some(l) if !l.files.is_empty() => {
                let (rdd, rows) = l.scan(ctx, columns, progress.scan()).await?;
                progress.grow_view(rows, 0);
                if history_counted.insert(stream.to_owned(), ()).is_none() {
                    stats.files += l.files.len() as u64;
                    stats.rows += rows;
                    stats.bytes += l.bytes;
                }
                Some(rdd)
            }
            _ => None,
        };
        Ok(match (old, own) {
            (Some(old), Some(own)) => Some(old.union(&own)),
            (old, own) => old.or(own),
        })
    };
    let cancelled = || Error::Execution("batch run cancelled".into());
    for (view, &(rows, bytes)) in views.iter().zip(&plans) {
        if *cancel.borrow() {
            return Err(cancelled());
        }
        let name = view.name().to_owned();
        progress.start_view(&name, rows, bytes);
        let started = std::time::Instant::now();
        let to = Arc::clone(&sink);
        let job = match view {
            BatchView::Config(view) => {
                let files: Vec<_> = manifest.snapshot(&view.stream, epoch).cloned().collect();
                if counted.insert(view.stream.as_str(), ()).is_none() {
                    stats.add(&files);
                }
                let wanted = columns(&view.spec);
                let dictionaries = dictionary_columns(&view.spec);
                let Some(input) = input_of(
                    &view.stream,
                    &files,
                    Some(&wanted),
                    &dictionaries,
                    &mut stats,
                )
                .await?
                else {
                    progress.finish_view();
                    continue;
                };
                let spec = view.spec.clone();
                // The most keys a task of this view has had so far.
                let hint = Arc::new(std::sync::atomic::AtomicUsize::new(0));
                input.run_each_async(
                    move |_, batches| spec.partials_of_sized(batches, &hint),
                    move |_, partials| to(&name, partials),
                )
            }
            BatchView::Program(program) => {
                let mut inputs = InputRdds::new();
                let mut any = false;
                for (id, stream) in &program.streams {
                    let files: Vec<_> = manifest.snapshot(stream, epoch).cloned().collect();
                    if counted.insert(stream.as_str(), ()).is_none() {
                        stats.add(&files);
                    }
                    let rdd = match input_of(stream, &files, None, &[], &mut stats).await? {
                        Some(rdd) => {
                            any = true;
                            rdd
                        }
                        None => ctx.parallelize(Vec::new(), 1),
                    };
                    inputs.insert(*id, rdd);
                }
                if !any {
                    progress.finish_view();
                    continue;
                }
                // A program's pairs need not be combined per partition yet:
                // each task merges its partition's pairs per key, so what
                // reaches the sink is one partial per key and partition.
                program
                    .view
                    .pairs_over(ctx, Time::now(), inputs)?
                    .run_each_async(
                        |_, it| Ok(Partials::from_rows(merge_per_key(it))),
                        move |_, rows| to(&name, rows),
                    )
            }
        };
        let mut watch = cancel.clone();
        tokio::select! {
            result = job => result?,
            // Dropping the job future cancels its remaining tasks.
            _ = watch.wait_for(|c| *c) => return Err(cancelled()),
        };
        progress.finish_view();
        stats.views.push(ViewTiming {
            view: view.name().to_owned(),
            ms: started.elapsed().as_millis() as u64,
        });
    }
    Ok(Some(GenerationSummary { epoch, stats }))
}
