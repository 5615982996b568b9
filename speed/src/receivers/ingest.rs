//! [`StreamIngest`]: the one path from every receiver (and HTTP ingest)
//! into the write-ahead log — appends that return once durable, inside the
//! backlog's budget, counted per receiver in [`IngestCounters`].

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Frame;
use crate::control;
use crate::wal::{Wal, WalError};

/// The handle through which receivers feed one stream. Cheap to clone: the
/// clones share the WAL and the counters.
#[derive(Debug, Clone)]
pub struct StreamIngest {
    wal: Wal,
    /// The stream's index: its id in the WAL.
    stream: u32,
    name: Arc<str>,
    max_record_bytes: usize,
    pub(super) counters: Arc<IngestCounters>,
    backlog: Option<Arc<crate::backlog::Backlog>>,
    /// Where committed positions are read (source offsets).
    positions: Option<Arc<dyn crate::commit::CommitSink>>,
}

impl StreamIngest {
    /// The handle of stream number `stream` (its index in the config),
    /// with counters at zero.
    ///
    /// # Panics
    ///
    /// If `stream` does not fit [`control::STREAM_MASK`]: its records would
    /// read back as control records.
    pub fn new(
        wal: Wal,
        stream: u32,
        name: impl Into<Arc<str>>,
        max_record_bytes: usize,
    ) -> StreamIngest {
        assert!(
            stream <= control::STREAM_MASK,
            "stream index {stream} does not fit a WAL stream id"
        );
        StreamIngest {
            wal,
            stream,
            name: name.into(),
            max_record_bytes,
            counters: Arc::default(),
            backlog: None,
            positions: None,
        }
    }

    /// Lets receivers read the stream's committed source offsets
    /// ([`committed_offsets`](Self::committed_offsets)).
    pub fn with_positions(mut self, positions: Arc<dyn crate::commit::CommitSink>) -> Self {
        self.positions = Some(positions);
        self
    }

    /// Every committed source offset of the stream: `(source, partition,
    /// next offset)`.
    fn committed(&self) -> std::result::Result<Vec<(String, i32, i64)>, String> {
        let Some(positions) = &self.positions else {
            return Ok(Vec::new());
        };
        let family = crate::commit::PositionKind::SourceOffsets {
            stream: self.name.to_string(),
        };
        Ok(positions
            .positions_of(&family)?
            .into_iter()
            .filter_map(|(p, next)| match p {
                crate::commit::Position::SourceOffset {
                    partition, source, ..
                } => Some((source, partition, next as i64)),
                _ => None,
            })
            .collect())
    }

    /// The next offset of each partition of `source` (a Kafka topic) as
    /// committed by the micro-batches: where a pull receiver resumes. The
    /// server replays the log before receivers start, so every durable
    /// record of the stream is committed by then. Empty without committed
    /// offsets (or without [`with_positions`](Self::with_positions)).
    ///
    /// # Errors
    ///
    /// A message naming what failed to read.
    pub fn committed_offsets(
        &self,
        source: &str,
    ) -> std::result::Result<std::collections::BTreeMap<i32, i64>, String> {
        Ok(self
            .committed()?
            .into_iter()
            .filter(|(s, _, _)| s == source)
            .map(|(_, partition, next)| (partition, next))
            .collect())
    }

    /// The committed next offset of every source of the stream whose name
    /// starts with `prefix` (partition 0), with the prefix taken off: where
    /// the files receiver resumes each file.
    ///
    /// # Errors
    ///
    /// A message naming what failed to read.
    pub fn committed_sources(
        &self,
        prefix: &str,
    ) -> std::result::Result<Vec<(String, i64)>, String> {
        Ok(self
            .committed()?
            .into_iter()
            .filter(|(_, partition, _)| *partition == 0)
            .filter_map(|(source, _, next)| {
                source
                    .strip_prefix(prefix)
                    .map(|name| (name.to_owned(), next))
            })
            .collect())
    }

    /// Appends records in [envelopes](crate::envelope) (their source's
    /// metadata with each) as one WAL append and returns once they are
    /// durable. The micro-batch that takes them commits each partition's
    /// next offset.
    ///
    /// # Errors
    ///
    /// As [`Wal::append`]; the records are then not acknowledged.
    pub async fn append_enveloped(
        &self,
        envelopes: &[crate::envelope::Envelope<'_>],
        receive_time_us: i64,
    ) -> Result<Range<u64>, WalError> {
        let mut bytes = Vec::with_capacity(envelopes.iter().map(|e| e.value.len() + 40).sum());
        let mut ends = Vec::with_capacity(envelopes.len());
        for e in envelopes {
            e.encode(&mut bytes);
            ends.push(bytes.len());
        }
        let mut records: Vec<&[u8]> = Vec::with_capacity(ends.len());
        let mut start = 0;
        for &end in &ends {
            records.push(&bytes[start..end]);
            start = end;
        }
        self.wait_for_room().await;
        let appended = self
            .wal
            .append(control::ENVELOPED | self.stream, &records, receive_time_us);
        match appended.await {
            Ok(seqs) => {
                self.appended(bytes.len() as u64);
                let c = &self.counters;
                c.records
                    .fetch_add(envelopes.len() as u64, Ordering::Relaxed);
                c.bytes.fetch_add(
                    envelopes.iter().map(|e| e.value.len() as u64).sum(),
                    Ordering::Relaxed,
                );
                Ok(seqs)
            }
            Err(e) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Makes appends wait while the backlog is over its budget (see
    /// [`crate::backlog`]): the receiver then stops reading, and TCP pushes
    /// back on the producer.
    pub fn with_backlog(mut self, backlog: Arc<crate::backlog::Backlog>) -> Self {
        self.backlog = Some(backlog);
        self
    }

    /// Whether an append now would not wait for the backlog (always, without
    /// a backlog budget): for receivers that answer "later" instead of
    /// waiting (Flume's `FAILED`).
    pub fn has_room(&self) -> bool {
        self.backlog.as_ref().is_none_or(|b| b.has_room())
    }

    /// Counts a request refused because the backlog was full
    /// (`lamina_backlog_waits_total`).
    pub fn note_refused(&self) {
        if let Some(b) = &self.backlog {
            b.note_refused();
        }
    }

    async fn wait_for_room(&self) {
        if let Some(b) = &self.backlog {
            b.wait_for_room().await;
        }
    }

    fn appended(&self, bytes: u64) {
        if let Some(b) = &self.backlog {
            b.note_appended(bytes);
        }
    }

    /// The stream's index (its id in the WAL).
    pub fn stream(&self) -> u32 {
        self.stream
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Longest record accepted, in bytes (the newline not counted).
    pub fn max_record_bytes(&self) -> usize {
        self.max_record_bytes
    }

    /// The counters of this stream, shared by all its receivers.
    pub fn counters(&self) -> &IngestCounters {
        &self.counters
    }

    /// The same counters, as a handle that outlives this `StreamIngest`
    /// (for `/metrics`).
    pub fn counters_handle(&self) -> Arc<IngestCounters> {
        Arc::clone(&self.counters)
    }

    /// Appends `lines` as one WAL append and returns once they are durable,
    /// with the seqs they got.
    ///
    /// # Errors
    ///
    /// As [`Wal::append`]; the lines are then not acknowledged.
    pub async fn append_lines(
        &self,
        lines: &[&[u8]],
        receive_time_us: i64,
    ) -> Result<Range<u64>, WalError> {
        self.wait_for_room().await;
        // `Wal::append` copies the lines before it returns its future.
        let appended = self.wal.append(self.stream, lines, receive_time_us);
        match appended.await {
            Ok(seqs) => {
                let bytes: usize = lines.iter().map(|l| l.len()).sum();
                self.appended(bytes as u64);
                let c = &self.counters;
                c.records.fetch_add(lines.len() as u64, Ordering::Relaxed);
                c.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
                Ok(seqs)
            }
            Err(e) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Appends `lines` as one keyed append (`key` first, see
    /// [`control::KEYED`]): the key is durable exactly when the lines are,
    /// and the micro-batch that takes them commits it (HTTP ingest's
    /// `Idempotency-Key`). Returns the seqs of the lines.
    ///
    /// # Errors
    ///
    /// As [`Wal::append`]; the lines are then not acknowledged.
    pub async fn append_keyed(
        &self,
        key: &[u8],
        lines: &[&[u8]],
        receive_time_us: i64,
    ) -> Result<Range<u64>, WalError> {
        let mut entry: Vec<&[u8]> = Vec::with_capacity(lines.len() + 1);
        entry.push(key);
        entry.extend_from_slice(lines);
        self.wait_for_room().await;
        let appended = self
            .wal
            .append(control::KEYED | self.stream, &entry, receive_time_us);
        match appended.await {
            Ok(seqs) => {
                let bytes: usize = lines.iter().map(|l| l.len()).sum();
                self.appended(bytes as u64);
                let c = &self.counters;
                c.records.fetch_add(lines.len() as u64, Ordering::Relaxed);
                c.bytes.fetch_add(bytes as u64, Ordering::Relaxed);
                Ok(seqs.start + 1..seqs.end)
            }
            Err(e) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Counts into `counters` instead of counters of its own (HTTP
    /// ingest's per stream, shared by its requests).
    pub fn with_counters(mut self, counters: Arc<IngestCounters>) -> Self {
        self.counters = counters;
        self
    }

    /// Appends a rejected record (`reason` and the first bytes of the
    /// record; see [`control::rejected`]) and returns once it is durable.
    ///
    /// # Errors
    ///
    /// As [`Wal::append`]. The rejection is then lost like any record whose
    /// append failed, and the receiver stops.
    pub async fn reject(
        &self,
        reason: &str,
        record_prefix: &[u8],
        receive_time_us: i64,
    ) -> Result<(), WalError> {
        let (id, payload) = control::rejected(self.stream, reason, record_prefix);
        self.wait_for_room().await;
        let len = payload.len() as u64;
        match self.wal.append(id, &[payload], receive_time_us).await {
            Ok(_) => {
                self.appended(len);
                self.counters.rejected.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(stream = %self.name, reason, "rejected a record");
                Ok(())
            }
            Err(e) => {
                self.counters.errors.fetch_add(1, Ordering::Relaxed);
                Err(e)
            }
        }
    }

    /// Appends one frame of a [`LineFramer`]: its lines, or the rejection of
    /// an oversized line.
    ///
    /// # Errors
    ///
    /// As [`Wal::append`].
    pub async fn append_frame(
        &self,
        frame: Frame<'_>,
        receive_time_us: i64,
    ) -> Result<(), WalError> {
        match frame {
            Frame::Lines(batch) => {
                // One Vec per batch (of up to MAX_BATCH_LINES slices), none
                // per line.
                let lines: Vec<&[u8]> = batch.iter().collect();
                self.append_lines(&lines, receive_time_us).await?;
            }
            Frame::Oversized { prefix, total_len } => {
                let reason = format!(
                    "record of {total_len} bytes exceeds max_record_bytes ({})",
                    self.max_record_bytes
                );
                self.reject(&reason, prefix, receive_time_us).await?;
            }
        }
        Ok(())
    }
}

/// Counters of one stream's receivers, for `/metrics`. Monotonic except
/// `connections_active`.
#[derive(Debug, Default)]
pub struct IngestCounters {
    pub(super) connections_accepted: AtomicU64,
    pub(super) connections_active: AtomicU64,
    pub(super) connections_refused: AtomicU64,
    pub(super) connections_idle_closed: AtomicU64,
    pub(super) connections_evicted: AtomicU64,
    pub(super) records: AtomicU64,
    pub(super) bytes: AtomicU64,
    pub(super) rejected: AtomicU64,
    pub(super) errors: AtomicU64,
    /// Records the source holds that are not read yet (pull receivers).
    pub(super) lag: AtomicU64,
    /// What a pull receiver is doing (`connecting`, `reading`, `retrying:
    /// <error>`); empty for push receivers.
    pub(super) status: std::sync::Mutex<String>,
    /// The stream and the receiver, for the log line of a state change.
    pub(super) label: std::sync::OnceLock<(String, String)>,
}

/// A copy of [`IngestCounters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IngestSnapshot {
    /// Connections accepted (listeners) or established (clients).
    pub connections_accepted: u64,
    /// Connections open now.
    pub connections_active: u64,
    /// Connections closed right away because `max_connections` were open
    /// and none of them was idle.
    pub connections_refused: u64,
    /// Connections closed because they sent nothing for the idle timeout.
    pub connections_idle_closed: u64,
    /// Idle connections closed to make room for a new one at
    /// `max_connections`.
    pub connections_evicted: u64,
    /// Records made durable.
    pub records: u64,
    /// Bytes of those records (newlines not counted).
    pub bytes: u64,
    /// Records rejected (made durable as dead letters).
    pub rejected: u64,
    /// Connection errors, failed connects and failed appends.
    pub errors: u64,
    /// Records the source holds beyond what was read (pull receivers; 0
    /// for push receivers, whose senders hold their backlog).
    pub lag: u64,
}

impl IngestCounters {
    /// Counts `records` records of `bytes` payload bytes made durable by a
    /// source that appends to the log itself (HTTP ingest).
    pub fn note_appended(&self, records: u64, bytes: u64) {
        self.records.fetch_add(records, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts a failed append of such a source.
    pub fn note_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// The current values. Each is read on its own, so they need not be
    /// from exactly the same instant.
    pub fn snapshot(&self) -> IngestSnapshot {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        IngestSnapshot {
            connections_accepted: get(&self.connections_accepted),
            connections_active: get(&self.connections_active),
            connections_refused: get(&self.connections_refused),
            connections_idle_closed: get(&self.connections_idle_closed),
            connections_evicted: get(&self.connections_evicted),
            records: get(&self.records),
            bytes: get(&self.bytes),
            rejected: get(&self.rejected),
            errors: get(&self.errors),
            lag: get(&self.lag),
        }
    }

    /// Sets the records the source holds beyond what was read.
    pub fn set_lag(&self, records: u64) {
        self.lag.store(records, Ordering::Relaxed);
    }

    /// Names the stream and the receiver these counters are of (once).
    pub fn set_label(&self, stream: &str, receiver: &str) {
        let _ = self.label.set((stream.to_owned(), receiver.to_owned()));
    }

    /// Sets what the receiver is doing, for `/v1/streams` and `lamina
    /// status` (one line). A new state (the status's first word:
    /// `connecting`, `reading`, `watching`, `retrying`, `stopped`…) is
    /// logged once, with the whole status.
    pub fn set_status(&self, status: impl Into<String>) {
        let status = status.into();
        let state =
            |s: &str| -> String { s.split([' ', ':']).next().unwrap_or_default().to_owned() };
        let mut current = self.status.lock().unwrap_or_else(|p| p.into_inner());
        if state(&current) != state(&status) {
            let (stream, receiver) = self
                .label
                .get()
                .map_or(("", ""), |(s, r)| (s.as_str(), r.as_str()));
            tracing::info!(stream, receiver, status = %status, "receiver state changed");
        }
        *current = status;
    }

    /// What the receiver is doing; empty when it does not say.
    pub fn status(&self) -> String {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(super) fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn idle_closed(&self) {
        self.connections_idle_closed.fetch_add(1, Ordering::Relaxed);
    }

    pub(super) fn evicted(&self) {
        self.connections_evicted.fetch_add(1, Ordering::Relaxed);
    }
}
