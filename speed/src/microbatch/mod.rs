//! The micro-batch clock (Spark's discretized streams).
//!
//! Every `batch_interval` the loop takes the records that became durable in
//! the write-ahead log since the last micro-batch, turns each stream's
//! records into one Arrow record batch, runs that stream's views over it,
//! and commits the deltas, the dead letters, the new log position and the
//! batch id in one transaction. Because the log *is* the queue, a restart
//! resumes from the last committed position and replays exactly what was
//! not committed: nothing acknowledged is lost, nothing is counted twice.
//!
//! A micro-batch belongs to the epoch of its scheduled time. When the clock
//! enters a new epoch, every earlier epoch is sealed: no micro-batch can
//! join it any more, and the sealer (see [`seal`]) may write it to the
//! master dataset. The first sequence number of each epoch is committed as
//! a position ([`Position::EpochStart`]), so the sealer knows each epoch's records
//! also after a restart.
//!
//! Each micro-batch runs in four steps: **read** the durable records from the
//! log (split by stream; control records become positions and dead
//! letters), **parse** each stream's records into Arrow record batches
//! (blocks of the batch, parsed in parallel on the engine when the batch is
//! large), run the **program** (see [`crate::program`]: every view is a
//! served DStream, one engine job per view), and **commit** its output.
//!
//! The loop runs on its own thread: parsing and aggregation are CPU work on
//! the engine's pool and never run on the async runtime.

pub mod buffer;
mod received_at;
pub mod seal;
pub mod stats;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arrow::record_batch::RecordBatch;
use lamina::streaming::Time;
use lamina::view::ViewSpec;
use lamina::{Context, Error};

use crate::commit::{
    CommitSink, DeadRecord, LogRecord, MicroBatchCommit, Position, PositionKind, RecordLog,
};
use crate::control::{self, Kind};
use crate::envelope::Envelope;
use crate::event_time::{EventTime, LatePolicy};
use crate::format::{DeadLetter, Format, Parsed, Parser};
use crate::program::Program;
use buffer::RecordBuffer;
use received_at::with_received_at;
pub use received_at::{RECEIVED_AT_COLUMN, with_received_at_constant};
pub use stats::{BatchStats, Phases, StatsLog, StreamHistograms};

/// One configured stream: its name, format and config views (see
/// [`Program::from_streams`]).
#[derive(Debug, Clone)]
pub struct StreamDef {
    /// Its id in the write-ahead log (its index in the list).
    pub name: String,
    /// How its records parse.
    pub format: Format,
    /// The views over it.
    pub views: Vec<ViewSpec>,
}

/// Fewest records per block of a micro-batch: smaller batches are parsed
/// on the micro-batch thread and folded in one block.
///
/// Blocks run in parallel, but every block holds a partial for each key it
/// saw, so the per-key work (rendering, committing, applying) is paid once
/// per block. Measured with `lamina bench stream` (100k-word Zipf text,
/// ~94k distinct words per micro-batch, 2 cores shared with receivers, the
/// log writer and the load generator): cutting 200k-line batches into two
/// blocks made them slower (program 111 ms vs 100 ms, commit 27 ms vs 14 ms)
/// because the cores were busy anyway. Blocks pay off on big batches —
/// catching up a backlog after a restart, before receivers start — where
/// the words, not the keys, are the work.
pub const MIN_BLOCK_RECORDS: usize = 128 * 1024;

/// Parse blocks for `records` records with `threads` workers and blocks of
/// at least `min_block` records.
fn blocks_for(records: usize, threads: usize, min_block: usize) -> usize {
    (records / min_block.max(1)).clamp(1, threads.max(1))
}

/// One stream's records of a micro-batch, parsed: the record batch of each
/// block, and the dead letters with their index in the micro-batch.
type ParsedStream = (Vec<RecordBatch>, Vec<(usize, DeadLetter)>, Vec<Vec<usize>>);

/// A stream's parsers, one per block (each reused from batch to batch).
type Parsers = Arc<Vec<Mutex<Parser>>>;

/// Timing of the loop.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Micro-batch interval.
    pub interval: Duration,
    /// Epoch length, a multiple of the interval.
    pub epoch: Duration,
    /// Most records taken into one micro-batch; the rest wait for the next.
    pub max_records: u64,
    /// Most record bytes taken into one micro-batch (at least one record is
    /// always taken); the rest wait for the next.
    pub max_bytes: u64,
}

impl Clock {
    /// The epoch of a point in time (µs since the Unix epoch).
    pub fn epoch_of(&self, at_us: i64) -> u64 {
        (at_us.max(0) as u128 / self.epoch.as_micros().max(1)) as u64
    }
}

/// Why the loop cannot go on.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// The write-ahead log has fewer records than the state says were
    /// committed: the log directory was lost or replaced.
    #[error(
        "the write-ahead log ends at {log_end} but the state store committed records up to {committed}: the log directory was lost or belongs to other state; refusing to start"
    )]
    LogBehindState {
        /// One past the last durable record in the log.
        log_end: u64,
        /// The committed position.
        committed: u64,
    },
    /// Reading the log or committing failed.
    #[error("micro-batch {batch}: {message}")]
    Batch {
        /// The micro-batch.
        batch: u64,
        /// What failed.
        message: String,
    },
}

fn now_us() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as i64)
}

/// The state of the loop between micro-batches.
pub struct MicroBatcher {
    /// The streams' names, in log order.
    streams: Vec<String>,
    parsers: Vec<Parsers>,
    /// Shared with parse tasks while they run.
    buffers: Vec<Arc<RecordBuffer>>,
    program: Arc<Program>,
    ctx: Context,
    /// See [`MIN_BLOCK_RECORDS`].
    min_block_records: usize,
    /// The time of the last batch the program ran (ms).
    last_time: Option<i64>,
    /// Each stream's committed total of late records.
    late_totals: Vec<u64>,
    log: Arc<dyn RecordLog>,
    sink: Arc<dyn CommitSink>,
    stats: Arc<StatsLog>,
    clock: Clock,
    next_seq: u64,
    next_batch: u64,
    /// Most records the next micro-batch takes: `max_records`, lowered
    /// while micro-batches take longer than [`batch_time_target`] (see
    /// [`next_cap`]).
    cap: u64,
    /// The epoch whose start is already recorded (the last epoch that got
    /// records).
    started_epoch: Option<u64>,
    /// Records of each stream ever committed (see [`Position::Records`]).
    record_totals: Vec<u64>,
    /// Told what each micro-batch committed (see [`crate::backlog`]).
    backlog: Option<Arc<crate::backlog::Backlog>>,
    /// No micro-batch gets an epoch below this. It only grows: it keeps
    /// epochs monotonic when the wall clock steps back or after a restart,
    /// and raising it ends the current epoch early (a batch run requested
    /// now should include what was ingested until now).
    epoch_floor: Arc<AtomicU64>,
}

impl std::fmt::Debug for MicroBatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MicroBatcher")
            .field("next_seq", &self.next_seq)
            .field("next_batch", &self.next_batch)
            .finish_non_exhaustive()
    }
}

impl MicroBatcher {
    /// Resumes from the sink's committed position; every micro-batch runs
    /// `program` over the streams it was built with.
    ///
    /// # Errors
    ///
    /// [`LoopError::LogBehindState`] when the log lost committed records;
    /// [`LoopError::Batch`] when the sink cannot be read.
    pub fn resume(
        program: Arc<Program>,
        log: Arc<dyn RecordLog>,
        sink: Arc<dyn CommitSink>,
        stats: Arc<StatsLog>,
        clock: Clock,
    ) -> Result<Self, LoopError> {
        let fail = |message: String| LoopError::Batch { batch: 0, message };
        let next_seq = sink.position(&Position::Wal).map_err(fail)?.unwrap_or(0);
        let next_batch = sink.last_batch_id().map_err(fail)?.map_or(1, |b| b + 1);
        // The last epoch that received records may still be open; none
        // before it may receive any more.
        let last_started = sink
            .positions_of(&PositionKind::EpochStart)
            .map_err(fail)?
            .iter()
            .filter_map(|(p, _)| match p {
                Position::EpochStart(epoch) => Some(*epoch),
                _ => None,
            })
            .max();
        let has_started = last_started.is_some();
        let last_started = last_started.unwrap_or(0);
        if log.durable_end() < next_seq {
            return Err(LoopError::LogBehindState {
                log_end: log.durable_end(),
                committed: next_seq,
            });
        }
        let formats = program.formats();
        let buffers = formats.iter().map(|_| Arc::default()).collect();
        let mut record_totals = Vec::with_capacity(formats.len());
        for (name, _) in &formats {
            let total = sink
                .position(&Position::Records {
                    stream: name.clone(),
                })
                .map_err(fail)?
                .unwrap_or(0);
            stats.set_total(name, total);
            record_totals.push(total);
        }
        // Late totals and watermarks, as committed: a replay finds late
        // what was late before.
        let mut late_totals = Vec::with_capacity(formats.len());
        for (i, (name, _)) in formats.iter().enumerate() {
            let late = sink
                .position(&Position::Late {
                    stream: name.clone(),
                })
                .map_err(fail)?
                .unwrap_or(0);
            late_totals.push(late);
            if let Some(et) = program.event_time(i)
                && let Some(w) = sink
                    .position(&Position::Watermark {
                        stream: name.clone(),
                    })
                    .map_err(fail)?
            {
                et.set_watermark(w as i64);
            }
        }
        let ctx = program.streaming_context().context().clone();
        let threads = ctx.default_parallelism();
        let parsers = formats
            .iter()
            .map(|(_, format)| {
                Arc::new((0..threads).map(|_| Mutex::new(format.parser())).collect())
            })
            .collect();
        let streams = formats.into_iter().map(|(name, _)| name).collect();
        Ok(MicroBatcher {
            streams,
            parsers,
            buffers,
            program,
            ctx,
            min_block_records: MIN_BLOCK_RECORDS,
            last_time: None,
            late_totals,
            log,
            sink,
            stats,
            clock,
            next_seq,
            next_batch,
            // The last epoch with records may still be open (a restart
            // within it): its start is recorded already and must not move,
            // or the records before the crash would fall out of it.
            started_epoch: has_started.then_some(last_started),
            record_totals,
            backlog: None,
            cap: clock.max_records,
            epoch_floor: Arc::new(AtomicU64::new(last_started)),
        })
    }

    /// Reports every committed micro-batch to `backlog`, which releases
    /// waiting sources as the backlog shrinks.
    pub fn set_backlog(&mut self, backlog: Arc<crate::backlog::Backlog>) {
        self.backlog = Some(backlog);
    }

    /// Cuts micro-batches into blocks of at least `records` records (default
    /// [`MIN_BLOCK_RECORDS`]), parsed and folded in parallel. Tests use small
    /// blocks to run the parallel path.
    pub fn set_min_block_records(&mut self, records: usize) {
        self.min_block_records = records.max(1);
    }

    /// The next sequence number to process.
    pub fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// The floor under the epochs of micro-batches (see the field's docs).
    /// Raise it with `fetch_max`, never lower it: e.g. to `sealed + 1` at
    /// start, or to `current + 1` to close the current epoch now.
    pub fn epoch_floor(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.epoch_floor)
    }

    /// Whether every durable record has been processed.
    pub fn caught_up(&self) -> bool {
        self.next_seq >= self.log.durable_end()
    }

    /// Runs one micro-batch scheduled at `scheduled_us`: takes the durable
    /// records not processed yet (at most `max_records`), aggregates and
    /// commits them. Returns the batch's epoch.
    ///
    /// # Errors
    ///
    /// [`LoopError::Batch`] when the log cannot be read or the commit fails;
    /// nothing is committed then and the same records are retried next time.
    pub fn run_once(&mut self, scheduled_us: i64) -> Result<u64, LoopError> {
        let start_us = now_us();
        let batch = self.next_batch;
        let epoch = self
            .clock
            .epoch_of(scheduled_us)
            .max(self.epoch_floor.load(Ordering::Acquire));
        self.epoch_floor.fetch_max(epoch, Ordering::AcqRel);
        let fail = |message: String| LoopError::Batch { batch, message };
        for b in &mut self.buffers {
            match Arc::get_mut(b) {
                Some(b) => b.clear(),
                // A parse task of a failed batch still holds it.
                None => *b = Arc::default(),
            }
        }
        let mut end = self
            .log
            .durable_end()
            .min(self.next_seq.saturating_add(self.cap));
        let mut commit = MicroBatchCommit {
            batch_id: batch,
            epoch,
            positions: vec![(Position::Wal, end)],
            deltas: Vec::new(),
            dead_letters: Vec::new(),
            state: Vec::new(),
        };
        // Records refused before parsing (e.g. too long), per stream: they
        // are dead letters, and records of the stream like any other.
        let mut rejected = vec![0u64; self.streams.len()];
        // Payload bytes of records appended by this process (the backlog's
        // byte count).
        let mut new_bytes = 0u64;
        // Per (stream, partition, source): one past the highest offset of
        // the enveloped records taken.
        let mut offsets: BTreeMap<(u32, i32, String), i64> = BTreeMap::new();
        if end > self.next_seq {
            let mut buffers: Vec<&mut RecordBuffer> = self
                .buffers
                .iter_mut()
                .map(|b| Arc::get_mut(b).expect("cleared above: not shared"))
                .collect();
            let streams = &self.streams;
            let commit = &mut commit;
            let max_bytes = self.clock.max_bytes;
            let mut taken_bytes = 0u64;
            let rejected = &mut rejected;
            let new_from = self.backlog.as_ref().map_or(0, |b| b.start_seq());
            let new_bytes = &mut new_bytes;
            // The first record left for the next micro-batch, once the
            // byte budget is spent.
            let mut cut: Option<u64> = None;
            // Seqs of records `lamina wal salvage` marked as lost.
            let mut lost: Option<(u64, u64, u64)> = None;
            // The next offset of each source partition read from.
            let offsets = &mut offsets;
            self.log
                .read(self.next_seq..end, &mut |r: LogRecord<'_>| {
                    if cut.is_some() {
                        return;
                    }
                    if taken_bytes > 0 && taken_bytes + r.payload.len() as u64 > max_bytes {
                        cut = Some(r.seq);
                        return;
                    }
                    taken_bytes += r.payload.len() as u64;
                    if r.seq >= new_from {
                        *new_bytes += r.payload.len() as u64;
                    }
                    match control::kind(r.stream) {
                        // A record of a stream that is no longer configured is
                        // skipped: nothing reads it any more.
                        Kind::Data(stream) => {
                            if let Some(b) = buffers.get_mut(stream as usize) {
                                b.push(r.seq, r.receive_us, r.payload);
                            }
                        }
                        // The first record of a keyed append is its key.
                        Kind::Keyed(stream) if r.seq == r.entry_first_seq => {
                            if let Some(name) = streams.get(stream as usize) {
                                let key = String::from_utf8_lossy(r.payload);
                                commit.positions.push((
                                    Position::Idempotency {
                                        stream: name.clone(),
                                        key: key.into_owned(),
                                    },
                                    r.receive_us.max(0) as u64,
                                ));
                            }
                        }
                        Kind::Keyed(stream) => {
                            if let Some(b) = buffers.get_mut(stream as usize) {
                                b.push(r.seq, r.receive_us, r.payload);
                            }
                        }
                        Kind::Rejected(stream) => {
                            if let Some(name) = streams.get(stream as usize) {
                                rejected[stream as usize] += 1;
                                let (reason, record) = control::split_rejected(r.payload);
                                commit.dead_letters.push(DeadRecord {
                                    stream: name.clone(),
                                    seq: r.seq,
                                    reason,
                                    record: record.to_vec(),
                                });
                            }
                        }
                        Kind::Lost => {
                            let (first, _, n) = lost.get_or_insert((r.seq, r.seq, 0));
                            lost = Some((*first, r.seq, *n + 1));
                        }
                        Kind::Enveloped(stream) => {
                            let (Some(b), Some(name)) = (
                                buffers.get_mut(stream as usize),
                                streams.get(stream as usize),
                            ) else {
                                return;
                            };
                            match Envelope::decode(r.payload) {
                                Ok(e) => {
                                    if let Some(p) = &e.position {
                                        let next = offsets
                                            .entry((stream, p.partition, p.source.to_owned()))
                                            .or_insert(0);
                                        *next = (*next).max(p.offset.saturating_add(1).max(0));
                                    }
                                    match e.rejected {
                                        None => b.push_enveloped(r.seq, r.receive_us, &e),
                                        Some(reason) => {
                                            rejected[stream as usize] += 1;
                                            commit.dead_letters.push(DeadRecord {
                                                stream: name.clone(),
                                                seq: r.seq,
                                                reason: reason.to_owned(),
                                                record: e.value.to_vec(),
                                            });
                                        }
                                    }
                                }
                                // Kept as a dead letter, like a record that
                                // does not parse.
                                Err(reason) => {
                                    rejected[stream as usize] += 1;
                                    let mut record = r.payload.to_vec();
                                    record.truncate(crate::format::MAX_DEAD_LETTER_BYTES);
                                    commit.dead_letters.push(DeadRecord {
                                        stream: name.clone(),
                                        seq: r.seq,
                                        reason,
                                        record,
                                    });
                                }
                            }
                        }
                        Kind::Unknown => {}
                    }
                })
                .map_err(fail)?;
            if let Some((first, last, n)) = lost {
                tracing::warn!(
                    batch,
                    "skipped {n} records lost to write-ahead log damage (seqs {first}..={last}, \
                     replaced by `lamina wal salvage`)"
                );
            }
            if let Some(seq) = cut {
                end = seq;
                commit.positions[0].1 = end;
            }
        }
        for ((stream, partition, source), next) in offsets {
            commit.positions.push((
                Position::SourceOffset {
                    stream: self.streams[stream as usize].clone(),
                    partition,
                    source,
                },
                next as u64,
            ));
        }
        if end > self.next_seq && self.started_epoch != Some(epoch) {
            commit
                .positions
                .push((Position::EpochStart(epoch), self.next_seq));
        }
        let ms_since = |t: std::time::Instant| t.elapsed().as_secs_f64() * 1e3;
        let mut phases = Phases {
            read_ms: (now_us() - start_us).max(0) as f64 / 1e3,
            ..Phases::default()
        };
        let parse_start = std::time::Instant::now();
        // Parse, then feed each stream's blocks to the program.
        let mut per_stream = Vec::with_capacity(self.streams.len());
        let mut fed = false;
        // Watermarks the batch moves, set once it committed.
        let mut watermarks: Vec<(EventTime, i64)> = Vec::new();
        // Committed with the batch; kept once it committed.
        let mut late_totals = self.late_totals.clone();
        for (i, &refused) in rejected.iter().enumerate() {
            let buffer = Arc::clone(&self.buffers[i]);
            if buffer.is_empty() {
                per_stream.push((refused as usize, refused as usize));
                continue;
            }
            let (blocks, dead, rows) = self.parse(i).map_err(|e| fail(e.to_string()))?;
            let mut dead_count = dead.len() + refused as usize;
            for (index, d) in dead {
                commit.dead_letters.push(DeadRecord {
                    stream: self.streams[i].clone(),
                    seq: buffer.seq(index),
                    reason: d.reason,
                    record: d.record,
                });
            }
            if let Some(et) = self.program.event_time(i) {
                let (late, moved) = self.late_records(i, &et, &blocks, &rows, &mut commit)?;
                if et.policy == LatePolicy::Aside {
                    dead_count += late as usize;
                }
                if late > 0 {
                    late_totals[i] += late;
                    commit.positions.push((
                        Position::Late {
                            stream: self.streams[i].clone(),
                        },
                        late_totals[i],
                    ));
                }
                if let Some(next) = moved {
                    // Stored as the bits of the i64 (µs; before 1970 too).
                    commit.positions.push((
                        Position::Watermark {
                            stream: self.streams[i].clone(),
                        },
                        next as u64,
                    ));
                    watermarks.push((et, next));
                }
            }
            per_stream.push((buffer.len() + refused as usize, dead_count));
            self.program.feed(i, blocks);
            fed = true;
        }
        phases.parse_ms = ms_since(parse_start);
        let program_start = std::time::Instant::now();
        // A program of served views only has nothing to do without records;
        // one with other outputs (windows, prints) runs every tick.
        // Stateful operators move to the batch's state only once the
        // commit holding their changes succeeded: a failed commit runs the
        // same records again from the old state.
        let mut pending = None;
        if fed || self.program.streaming_context().acts_on_empty_batches() {
            let time = self.batch_time(scheduled_us);
            let (outcome, p) = self
                .program
                .run_batch_pending(Time::from_millis(time))
                .map_err(|e| fail(e.to_string()))?;
            self.last_time = Some(time);
            pending = Some(p);
            commit.deltas = outcome
                .served
                .into_iter()
                .filter(|d| !d.pairs.is_empty())
                .map(|d| (d.view, d.pairs))
                .collect();
            commit.state = outcome.state;
        }
        // The streams' record totals commit with the batch, so that they
        // survive restarts exactly like the dead-letter totals.
        let mut totals = self.record_totals.clone();
        for ((total, (records, _)), name) in totals.iter_mut().zip(&per_stream).zip(&self.streams) {
            if *records > 0 {
                *total += *records as u64;
                commit.positions.push((
                    Position::Records {
                        stream: name.clone(),
                    },
                    *total,
                ));
            }
        }
        phases.program_ms = ms_since(program_start);
        let commit_start = std::time::Instant::now();
        // A batch without records commits too when it changed state (keys
        // timing out).
        let state_changed = !commit.state.is_empty();
        if end > self.next_seq || state_changed {
            self.sink.commit(commit).map_err(fail)?;
            self.late_totals = late_totals;
            if let Some(p) = pending.take() {
                p.commit();
            }
            for (et, w) in watermarks {
                et.set_watermark(w);
            }
        }
        if end > self.next_seq {
            self.started_epoch = Some(epoch);
            self.record_totals = totals;
            if let Some(b) = &self.backlog {
                b.note_processed(end, new_bytes);
            }
        }
        phases.commit_ms = ms_since(commit_start);
        let end_us = now_us();
        self.cap = next_cap(
            self.cap,
            end - self.next_seq,
            Duration::from_micros((end_us - start_us).max(0) as u64),
            batch_time_target(&self.clock),
            self.clock.max_records,
        );
        for ((name, buffer), (records, dead)) in
            self.streams.iter().zip(&self.buffers).zip(per_stream)
        {
            let (first, last) = buffer.receive_span_us();
            self.stats.push(
                name,
                BatchStats {
                    id: batch,
                    epoch,
                    records: records as u64,
                    dead_letters: dead as u64,
                    bytes: buffer.bytes() as u64,
                    first_receive_us: first,
                    last_receive_us: last,
                    processing_start_us: start_us,
                    processing_end_us: end_us,
                    processing_ms: (end_us - start_us) as f64 / 1e3,
                    scheduling_delay_ms: (start_us - scheduled_us).max(0) as f64 / 1e3,
                    phases,
                },
            );
        }
        self.next_seq = end;
        self.next_batch += 1;
        Ok(epoch)
    }
}

impl MicroBatcher {
    /// The program's time for a batch scheduled at `scheduled_us`: a
    /// multiple of the batch interval (windows slide and stateful streams
    /// run at multiples of it), after the last batch's — so batches run
    /// back to back (catching up a backlog) get successive times.
    fn batch_time(&self, scheduled_us: i64) -> i64 {
        let interval = self.clock.interval.as_millis().max(1) as i64;
        let aligned = scheduled_us.div_euclid(1000).div_euclid(interval) * interval;
        match self.last_time {
            Some(last) if aligned <= last => last + interval,
            _ => aligned,
        }
    }

    /// Parses stream `i`'s records of this micro-batch: the record batches
    /// of its blocks, and its dead letters with their index in the batch.
    /// A large batch is cut into blocks parsed in parallel, one engine task
    /// each; a small one is parsed here in one block.
    fn parse(&mut self, i: usize) -> Result<ParsedStream, Error> {
        let buffer = Arc::clone(&self.buffers[i]);
        let parsers = Arc::clone(&self.parsers[i]);
        let n = buffer.len();
        let k = blocks_for(n, parsers.len(), self.min_block_records);
        let times = Arc::clone(&buffer);
        let parsed: Vec<(usize, Parsed)> = if k == 1 {
            let mut parser = parsers[0].lock().unwrap_or_else(|p| p.into_inner());
            vec![(0, parser.parse(buffer.records()))]
        } else {
            self.ctx
                .parallelize((0..k).collect::<Vec<usize>>(), k)
                .map(move |j| {
                    let (start, end) = (j * n / k, (j + 1) * n / k);
                    let mut parser = parsers[j].lock().unwrap_or_else(|p| p.into_inner());
                    (start, parser.parse(buffer.range(start, end)))
                })
                .collect()?
        };
        let mut blocks = Vec::with_capacity(parsed.len());
        let mut dead = Vec::new();
        let mut rows = Vec::with_capacity(parsed.len());
        let source_columns = self.program.has_source_columns(i);
        for (start, p) in parsed {
            rows.push(p.accepted.iter().map(|i| start + i).collect());
            let batch = if source_columns {
                crate::envelope::with_source_columns(
                    &p.batch,
                    times.meta(),
                    p.accepted.iter().map(|i| start + i),
                )?
            } else {
                p.batch
            };
            blocks.push(with_received_at(&batch, &p.accepted, |i| {
                times.receive_us(start + i)
            })?);
            dead.extend(p.dead_letters.into_iter().map(|d| (start + d.index, d)));
        }
        Ok((blocks, dead, rows))
    }

    /// Finds the late records of stream `i`'s blocks (see
    /// [`crate::event_time`]), keeps them as dead letters under the `aside`
    /// policy, and returns how many there were and the watermark after the
    /// batch, if it moved.
    fn late_records(
        &self,
        i: usize,
        et: &EventTime,
        blocks: &[RecordBatch],
        rows: &[Vec<usize>],
        commit: &mut MicroBatchCommit,
    ) -> Result<(u64, Option<i64>), LoopError> {
        let buffer = &self.buffers[i];
        let scan = et.scan(blocks).map_err(|e| LoopError::Batch {
            batch: self.next_batch,
            message: format!("stream `{}`: {e}", self.streams[i]),
        })?;
        let late_total = scan.late.iter().map(|l| l.len() as u64).sum();
        if et.policy == LatePolicy::Aside {
            for ((block, rows), late) in blocks.iter().zip(rows).zip(&scan.late) {
                let col = lamina::columnar::TimestampColumn::of(block, &et.column).ok();
                for &row in late {
                    let index = rows[row];
                    let at = col.as_ref().and_then(|c| c.micros(row)).unwrap_or(0);
                    let mut record = buffer
                        .range(index, index + 1)
                        .next()
                        .unwrap_or_default()
                        .to_vec();
                    record.truncate(crate::format::MAX_DEAD_LETTER_BYTES);
                    commit.dead_letters.push(DeadRecord {
                        stream: self.streams[i].clone(),
                        seq: buffer.seq(index),
                        reason: format!(
                            "late: event time {} (`{}`) is more than {} s behind the largest event time before it; left out of windowed views, counted in every other view and in the master dataset",
                            rfc3339_us(at),
                            et.column,
                            et.lateness_us / 1_000_000
                        ),
                        record,
                    });
                }
            }
        }
        Ok((late_total, scan.watermark))
    }
}

fn rfc3339_us(us: i64) -> String {
    let mut s = String::new();
    lamina::view::key::write_rfc3339(us, &mut s);
    s
}

/// How long one micro-batch should take at most: four intervals, and at
/// least a second. Batches of ordinary views stay far below it; a costly
/// view (e.g. a key per pair of words, a hundred keys a record) would
/// otherwise take a backlog of a million records in one batch of tens of
/// seconds, during which nothing becomes visible and shutdown waits.
pub fn batch_time_target(clock: &Clock) -> Duration {
    (clock.interval * 4).max(Duration::from_secs(1))
}

/// Fewest records a micro-batch is cut down to.
const MIN_CAP: u64 = 100;

/// The record cap of the next micro-batch, from the last one: a batch that
/// took `elapsed` over `target` for `taken` records lowers the cap to what
/// fits the target at that pace; a batch well under the target (half)
/// doubles it, up to `max`. A batch that took no records changes nothing.
pub fn next_cap(cap: u64, taken: u64, elapsed: Duration, target: Duration, max: u64) -> u64 {
    if taken == 0 {
        return cap;
    }
    let next = if elapsed > target {
        let fits = taken as f64 * target.as_secs_f64() / elapsed.as_secs_f64().max(1e-6);
        fits as u64
    } else if elapsed < target / 2 && taken >= cap / 2 {
        cap.saturating_mul(2)
    } else {
        cap
    };
    next.clamp(MIN_CAP.min(max), max)
}

/// Runs micro-batches until `stop` is set, then runs one last micro-batch
/// (so that everything acknowledged before the stop is committed) and
/// returns. `on_batch` is called after every micro-batch with its epoch
/// and the log position committed through (every record below it is in a
/// committed micro-batch); the caller seals the epochs before it.
///
/// Ticks are scheduled at fixed times (`start + k * interval`); when a
/// micro-batch overruns, the next starts at once and the delay shows as
/// scheduling delay. A failed micro-batch is retried at the next tick with
/// the same records; the error is reported through `on_error`.
pub fn run_loop(
    mut batcher: MicroBatcher,
    stop: &AtomicBool,
    mut on_batch: impl FnMut(u64, u64),
    mut on_error: impl FnMut(&LoopError),
) {
    let interval = batcher.clock.interval.as_micros().max(1) as i64;
    let mut scheduled = now_us();
    loop {
        let stopping = stop.load(Ordering::Acquire);
        match batcher.run_once(scheduled) {
            Ok(epoch) => on_batch(epoch, batcher.next_seq()),
            Err(e) => on_error(&e),
        }
        if stopping {
            return;
        }
        scheduled += interval;
        let wait = scheduled - now_us();
        if wait > 0 {
            std::thread::sleep(Duration::from_micros(wait as u64));
        } else if -wait > 10 * interval {
            // Far behind (a long stall): do not try to catch up tick by tick.
            scheduled = now_us();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slow_batch_lowers_the_cap_and_fast_ones_raise_it_back() {
        let target = Duration::from_secs(1);
        let ms = Duration::from_millis;
        // 500k records in 20 s: the next batch takes what fits a second.
        assert_eq!(
            next_cap(1_000_000, 500_000, ms(20_000), target, 1_000_000),
            25_000
        );
        // At the target or a little under: unchanged.
        assert_eq!(next_cap(25_000, 25_000, ms(900), target, 1_000_000), 25_000);
        // Well under, with a full batch: doubled, up to the maximum.
        assert_eq!(next_cap(25_000, 25_000, ms(100), target, 1_000_000), 50_000);
        assert_eq!(
            next_cap(800_000, 800_000, ms(100), target, 1_000_000),
            1_000_000
        );
        // A small batch (little input) says nothing about the pace.
        assert_eq!(next_cap(25_000, 10, ms(1), target, 1_000_000), 25_000);
        assert_eq!(next_cap(25_000, 0, ms(5_000), target, 1_000_000), 25_000);
        // Never below the floor.
        assert_eq!(
            next_cap(1_000, 1_000, ms(3_600_000), target, 1_000_000),
            MIN_CAP
        );
        let clock = Clock {
            interval: ms(50),
            epoch: ms(1000),
            max_records: 10,
            max_bytes: 10,
        };
        assert_eq!(batch_time_target(&clock), target);
    }
}
