//! The server's DStream program: every configured stream is an input
//! stream fed from the write-ahead log, and every view — declared in the
//! config or written in Rust — is a served DStream over those inputs.
//!
//! The micro-batch loop ([`crate::microbatch`]) reads each batch's records
//! from the log, parses them into Arrow record batches (blocks of the
//! batch, parsed in parallel on the engine), [`feed`](Program::feed)s them
//! to the inputs, and runs the program's batch: each served view is one
//! job on the engine. A config view is the program
//! `stream(s).transform(spec.partials).serve_partials_as(name, aggregate)`, so there
//! is one speed-layer path for both.
//!
//! ```
//! use lamina::Context;
//! use lamina_speed::format::Format;
//! use lamina_speed::program::Program;
//! use std::time::Duration;
//!
//! let program = Program::new(
//!     &Context::builder().threads(2).build()?,
//!     Duration::from_millis(200),
//!     &[("lines".to_string(), Format::Text)],
//! )?;
//! program
//!     .text_stream("lines")?
//!     .flat_map(|l: String| l.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
//!     .map(|w| (w, 1i64))
//!     .serve("word_counts")?;
//! assert_eq!(program.served_views()[0].name(), "word_counts");
//! assert!(program.stream("nope").is_err());
//! # Ok::<(), lamina::Error>(())
//! ```

use std::sync::Arc;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use lamina::columnar::TextColumn;
use lamina::streaming::input::InputBatch;
use lamina::streaming::windowed_view::{WindowSpec, WindowedView};
use lamina::streaming::{
    BatchOutcome, DStream, FedInput, InputStream, PendingBatch, ServedState, ServedView,
    StreamingContext, Time,
};

use crate::event_time::{EventTime, NO_WATERMARK};
use lamina::view::ViewSpec;
use lamina::{Context, Error, Result};

use crate::format::text::LINE_COLUMN;
use crate::format::{Format, FormatKind};
use crate::microbatch::StreamDef;

/// One configured stream as an input of the program.
#[derive(Debug)]
struct Input {
    name: String,
    format: Format,
    fed: Arc<FedInput<RecordBatch>>,
    stream: DStream<RecordBatch>,
}

/// The program the speed layer runs every micro-batch.
#[derive(Debug)]
pub struct Program {
    ssc: StreamingContext,
    inputs: Vec<Input>,
    windowed: std::sync::Mutex<Vec<WindowedView>>,
    /// Each input's event time, if it declares one.
    event_times: std::sync::Mutex<Vec<Option<EventTime>>>,
    /// Whether each input's batches have the source columns
    /// ([`crate::envelope::SOURCE_COLUMNS`]).
    source_columns: Vec<std::sync::atomic::AtomicBool>,
}

impl Program {
    /// A program over the given streams (in write-ahead-log order) with no
    /// view yet.
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] for a batch interval under 10 ms.
    pub fn new(ctx: &Context, interval: Duration, streams: &[(String, Format)]) -> Result<Self> {
        let ssc = StreamingContext::new(ctx.clone(), interval)?;
        // Every batch's outcome is committed: windows keep their contents
        // in the commit too.
        ssc.set_durable(true);
        let inputs = streams
            .iter()
            .map(|(name, format)| {
                let fed = Arc::new(FedInput::new(name.clone()));
                let stream =
                    ssc.input_stream(Arc::clone(&fed) as Arc<dyn InputStream<RecordBatch>>);
                Input {
                    name: name.clone(),
                    format: format.clone(),
                    fed,
                    stream,
                }
            })
            .collect();
        Ok(Program {
            ssc,
            inputs,
            windowed: std::sync::Mutex::new(Vec::new()),
            event_times: std::sync::Mutex::new(vec![None; streams.len()]),
            source_columns: streams.iter().map(|_| Default::default()).collect(),
        })
    }

    /// A program over `streams` serving their config views.
    ///
    /// # Errors
    ///
    /// As [`new`](Self::new) and [`add_view`](Self::add_view).
    pub fn from_streams(ctx: &Context, interval: Duration, streams: &[StreamDef]) -> Result<Self> {
        let formats: Vec<(String, Format)> = streams
            .iter()
            .map(|s| (s.name.clone(), s.format.clone()))
            .collect();
        let program = Program::new(ctx, interval, &formats)?;
        for s in streams {
            for view in &s.views {
                program.add_view(&s.name, view)?;
            }
        }
        Ok(program)
    }

    /// The streams' names and formats, in write-ahead-log order.
    pub fn formats(&self) -> Vec<(String, Format)> {
        self.inputs
            .iter()
            .map(|i| (i.name.clone(), i.format.clone()))
            .collect()
    }

    /// The streaming context (for output operations beyond serving).
    pub fn streaming_context(&self) -> &StreamingContext {
        &self.ssc
    }

    fn input(&self, name: &str) -> Result<&Input> {
        self.inputs.iter().find(|i| i.name == name).ok_or_else(|| {
            let known: Vec<&str> = self.inputs.iter().map(|i| i.name.as_str()).collect();
            Error::plan(format!(
                "no stream `{name}` is configured (configured: {})",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ))
        })
    }

    /// The records of stream `name`, parsed: every batch's RDD holds Arrow
    /// record batches with the stream's schema (one per block).
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] naming the configured streams when there is none of
    /// that name.
    pub fn stream(&self, name: &str) -> Result<DStream<RecordBatch>> {
        Ok(self.input(name)?.stream.clone())
    }

    /// The lines of the text stream `name`, one `String` per record.
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] when there is no such stream or it is not of format
    /// `text`.
    pub fn text_stream(&self, name: &str) -> Result<DStream<String>> {
        let input = self.input(name)?;
        if input.format.kind() != FormatKind::Text {
            return Err(Error::plan(format!(
                "stream `{name}` has format {}; text_stream needs format text (use stream() for its record batches)",
                input.format.kind().name()
            )));
        }
        Ok(input.stream.flat_map(|batch: RecordBatch| lines_of(&batch)))
    }

    /// Serves a config view: `spec` over stream `stream`.
    ///
    /// # Errors
    ///
    /// An unknown stream, an invalid spec, or a view name served already.
    pub fn add_view(&self, stream: &str, spec: &ViewSpec) -> Result<ServedView> {
        spec.validate()?;
        let spec = spec.clone();
        let name = spec.name.clone();
        let aggregate = spec.aggregate.clone();
        // Each micro-batch's maps start as large as the last one's.
        let hint = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        self.stream(stream)?
            .transform(move |rdd, _| Ok(spec.partials_sized(rdd, &hint)))
            .serve_partials_as(name, aggregate)
    }

    /// Serves a windowed config view: `spec` over stream `stream`, its
    /// records bucketed by `time_column` (see
    /// [`windowed_view`](lamina::streaming::windowed_view)).
    ///
    /// # Errors
    ///
    /// An unknown stream, an invalid spec, or a view name served already.
    pub fn add_windowed_view(
        &self,
        stream: &str,
        spec: &ViewSpec,
        window: WindowSpec,
        time_column: &str,
    ) -> Result<WindowedView> {
        spec.validate()?;
        let bucketed = spec.windowed(time_column, window.slide.as_secs());
        let hint = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        // Late records (event time before the watermark) are left out or
        // folded into the oldest open bucket, by the stream's policy.
        let event_time = self
            .index_of(stream)
            .and_then(|i| self.event_time(i))
            .filter(|et| et.column == time_column);
        let view =
            self.stream(stream)?
                .transform(move |rdd, _| {
                    // One partition per block, in log order (see `feed`).
                    let input = match &event_time {
                        Some(et) => {
                            let starts: Vec<i64> = (0..rdd.num_partitions())
                                .map(|p| et.block_start(p))
                                .collect();
                            let et = et.clone();
                            rdd.map_partitions_with_index(move |p, it| {
                                let start = starts.get(p).copied().unwrap_or(NO_WATERMARK);
                                let et = et.clone();
                                Box::new(it.map(move |b: RecordBatch| {
                                    et.for_windows(&b, start).unwrap_or(b)
                                }))
                            })
                        }
                        None => rdd.clone(),
                    };
                    Ok(bucketed.partials_sized(&input, &hint))
                })
                .serve_windowed_as(&spec.name, spec.aggregate.clone(), window)?;
        self.windowed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(view.clone());
        Ok(view)
    }

    /// Declares stream `stream`'s event time (before adding its windowed
    /// views).
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] for an unknown stream.
    pub fn set_event_time(&self, stream: &str, event_time: EventTime) -> Result<()> {
        let i = self
            .index_of(stream)
            .ok_or_else(|| Error::plan(format!("no stream `{stream}` is configured")))?;
        self.event_times.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(event_time);
        Ok(())
    }

    /// Gives stream `stream`'s batches the source columns
    /// ([`crate::envelope::SOURCE_COLUMNS`]: topic, partition, offset,
    /// timestamp, key, headers; null for records that came without them),
    /// for streams fed by a receiver that has them (Kafka, Flume). Before
    /// the first batch: the columns are part of the stream's schema.
    ///
    /// # Errors
    ///
    /// [`Error::Plan`] for an unknown stream.
    pub fn set_source_columns(&self, stream: &str) -> Result<()> {
        let i = self
            .index_of(stream)
            .ok_or_else(|| Error::plan(format!("no stream `{stream}` is configured")))?;
        self.source_columns[i].store(true, std::sync::atomic::Ordering::Release);
        Ok(())
    }

    /// Whether stream `index`'s batches have the source columns.
    pub fn has_source_columns(&self, index: usize) -> bool {
        self.source_columns
            .get(index)
            .is_some_and(|b| b.load(std::sync::atomic::Ordering::Acquire))
    }

    /// Stream `index`'s event time (write-ahead-log order), if declared.
    pub fn event_time(&self, index: usize) -> Option<EventTime> {
        self.event_times
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(index)
            .cloned()
            .flatten()
    }

    fn index_of(&self, stream: &str) -> Option<usize> {
        self.inputs.iter().position(|i| i.name == stream)
    }

    /// The windowed views, in declaration order.
    pub fn windowed_views(&self) -> Vec<WindowedView> {
        self.windowed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Every served view, in declaration order.
    pub fn served_views(&self) -> Vec<ServedView> {
        self.ssc.served_views()
    }

    /// The names of the streams a served view reads.
    pub fn streams_of(&self, view: &ServedView) -> Vec<String> {
        view.input_ids()
            .iter()
            .filter_map(|id| self.ssc.input_name(*id))
            .collect()
    }

    /// Hands stream `index` (write-ahead-log order) its parsed blocks for
    /// the next batch.
    pub fn feed(&self, index: usize, blocks: Vec<RecordBatch>) {
        if let Some(input) = self.inputs.get(index) {
            let records = blocks.iter().map(|b| b.num_rows() as u64).sum();
            let mut batch = InputBatch::from_blocks(
                self.ssc.context(),
                blocks.into_iter().map(|b| vec![b]).collect(),
            );
            batch.records = records;
            input.fed.feed(batch);
        }
    }

    /// Runs the batch at `time` with what was fed.
    ///
    /// # Errors
    ///
    /// The first output operation that failed.
    pub fn run_batch(&self, time: Time) -> Result<BatchOutcome> {
        self.ssc.run_batch(time)
    }

    /// Runs the batch at `time` with what was fed; stateful operators keep
    /// their old state until the [`PendingBatch`] is committed, which the
    /// caller does once the outcome is durable.
    ///
    /// # Errors
    ///
    /// The first output operation that failed.
    pub fn run_batch_pending(&self, time: Time) -> Result<(BatchOutcome, PendingBatch)> {
        self.ssc.run_batch_pending(time)
    }

    /// The program's stateful operators' state served as views.
    pub fn served_states(&self) -> Vec<ServedState> {
        self.ssc.served_states()
    }

    /// The names of the streams a served state reads.
    pub fn streams_of_state(&self, view: &ServedState) -> Vec<String> {
        view.input_ids()
            .iter()
            .filter_map(|id| self.ssc.input_name(*id))
            .collect()
    }
}

/// The `line` column of a text batch (as parsed, or as read back from the
/// master dataset, whatever its string encoding).
fn lines_of(batch: &RecordBatch) -> Vec<String> {
    let Ok(col) = TextColumn::of(batch, LINE_COLUMN) else {
        return Vec::new();
    };
    (0..batch.num_rows())
        .filter_map(|i| col.get(i).map(str::to_owned))
        .collect()
}
