//! `kafka`: reads a topic's partitions from Kafka brokers, exactly once.
//!
//! One task per partition fetches from the partition's next offset and
//! appends each fetched batch to the write-ahead log as one append of
//! [enveloped](crate::envelope) records: each record carries its topic,
//! partition, offset, timestamp, key and headers. Nothing is acknowledged
//! to Kafka (no consumer group): the offsets live with the data. The
//! micro-batch that takes the records commits each partition's next offset
//! ([`Position::SourceOffset`](crate::commit::Position::SourceOffset)) in
//! the same transaction as the views' deltas; the server replays the log
//! before receivers start, so on start the committed offsets are exactly
//! one past the last record in the log, and the receiver resumes there —
//! after `kill -9` no record is lost or taken twice.
//!
//! Why through the log and not a "direct" stream that reads Kafka at batch
//! time: the master dataset (Parquet, what batch recomputes read) is
//! sealed from the log, and Kafka's retention may delete records before
//! the nightly batch runs. One local append per fetch (one fsync for all
//! partitions' appends in flight, by group commit) is the price.
//!
//! Partitions without a committed offset start at `start`: the earliest
//! offset the broker still has (the default), the latest, or the first
//! record at or after a time. Partitions that appear later (the topic grew)
//! are picked up within `metadata_refresh_secs` and read from their
//! earliest offset, so nothing produced to them is missed.
//!
//! A broker that is down, a topic that does not exist yet, a leader that
//! moved: the receiver retries with backoff (100 ms doubling to 10 s), says
//! so in its status (`/v1/streams`, `lamina status`) and counts errors,
//! never crashes. Offsets the broker deleted (retention) before they were
//! read are skipped with a warning naming them.
//!
//! Backpressure: a fetch is appended before the next is sent, and appends
//! wait while the backlog of unprocessed records is over its budget
//! (`[speed] max_backlog_*`), so a slow micro-batch slows the fetching —
//! the analogue of Spark's rate estimator, bounded by memory rather than
//! estimated. `max_rate_per_partition` caps the rate besides.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{BuildHasher, RandomState};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rskafka::client::partition::{OffsetAt, UnknownTopicHandling};
use rskafka::client::{Client, ClientBuilder};
use rskafka::record::RecordAndOffset;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::tcp_connect::{Backoff, is_host_port};
use super::{LogLimit, Receiver, ReceiverError, Result, StreamIngest, now_us, stopped};
use crate::envelope::{Envelope, SourcePosition};

const KIND: &str = "kafka";
/// At most one warning per this period per receiver.
const LOG_PERIOD: Duration = Duration::from_secs(5);
/// How long one Kafka request may be retried inside the client before the
/// receiver sees the error (and reports it).
const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(10);

/// Where partitions without a committed offset start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The earliest offset the broker still has.
    Earliest,
    /// The end of the partition: only records produced from now on.
    Latest,
    /// The first record with a timestamp at or after this time (ms since
    /// the Unix epoch).
    At(i64),
}

impl Start {
    /// Parses `earliest`, `latest` or an RFC 3339 time.
    ///
    /// # Errors
    ///
    /// A message naming what is accepted.
    pub fn parse(text: &str) -> std::result::Result<Start, String> {
        match text {
            "earliest" => Ok(Start::Earliest),
            "latest" => Ok(Start::Latest),
            _ => chrono::DateTime::parse_from_rfc3339(text)
                .map(|t| Start::At(t.timestamp_millis()))
                .map_err(|_| {
                    format!(
                        "{text:?} is not \"earliest\", \"latest\" or an RFC 3339 time (like 2026-12-01T00:00:00Z)"
                    )
                }),
        }
    }
}

/// A consumer of one topic; see the module docs.
#[derive(Debug, Clone)]
pub struct KafkaReceiver {
    brokers: Vec<String>,
    topic: String,
    /// The partitions to read; all (and new ones) when `None`.
    partitions: Option<BTreeSet<i32>>,
    start: Start,
    max_rate_per_partition: Option<u64>,
    fetch_max_bytes: i32,
    fetch_max_wait_ms: i32,
    metadata_refresh: Duration,
}

/// How a partition's reader stopped.
#[derive(Debug)]
enum PartitionEnd {
    /// Shutdown.
    Stopped,
    /// A Kafka error: retried after a backoff.
    Kafka(String),
    /// The log refused an append: the receiver stops.
    Wal(crate::wal::WalError),
}

/// What the partition readers share with the receiver's loop.
#[derive(Debug, Default)]
struct Progress {
    /// Next offset to read, per partition (committed ones at the start).
    next: BTreeMap<i32, i64>,
    /// Records the broker has beyond `next`, per partition.
    lag: BTreeMap<i32, u64>,
}

impl KafkaReceiver {
    /// A receiver from checked settings (see [`KafkaConfig`]).
    fn from_config(c: &KafkaConfig) -> Result<KafkaReceiver> {
        let start = Start::parse(&c.start).map_err(|reason| ReceiverError::Config {
            receiver: KIND,
            reason,
        })?;
        Ok(KafkaReceiver {
            brokers: c.brokers.split(',').map(|b| b.trim().to_owned()).collect(),
            topic: c.topic.clone(),
            partitions: c.partitions.as_ref().map(|p| p.iter().copied().collect()),
            start,
            max_rate_per_partition: c.max_rate_per_partition,
            fetch_max_bytes: c.fetch_max_bytes as i32,
            fetch_max_wait_ms: c.fetch_max_wait_ms as i32,
            metadata_refresh: Duration::from_secs(c.metadata_refresh_secs),
        })
    }

    async fn connect(&self) -> std::result::Result<Client, String> {
        ClientBuilder::new(self.brokers.clone())
            .client_id("lamina")
            .backoff_config(rskafka::BackoffConfig {
                init_backoff: RETRY_MIN,
                max_backoff: Duration::from_secs(2),
                base: 2.0,
                deadline: Some(REQUEST_DEADLINE),
            })
            .build()
            .await
            .map_err(|e| format!("cannot reach brokers {}: {e}", self.brokers.join(",")))
    }

    async fn serve(self, ingest: StreamIngest, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        let name = self.describe();
        let counters = ingest.counters_handle();
        let committed =
            ingest
                .committed_offsets(&self.topic)
                .map_err(|message| ReceiverError::Positions {
                    receiver: name.clone(),
                    message,
                })?;
        let progress = Arc::new(Mutex::new(Progress {
            next: committed,
            lag: BTreeMap::new(),
        }));
        let warnings = LogLimit::new(LOG_PERIOD);
        let seed = RandomState::new().hash_one(&name);
        let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX, seed);
        let mut readers: JoinSet<(i32, PartitionEnd)> = JoinSet::new();
        let mut running: BTreeSet<i32> = BTreeSet::new();
        let mut task_partition: std::collections::HashMap<tokio::task::Id, i32> =
            Default::default();
        let mut client: Option<Arc<Client>> = None;
        let this = Arc::new(self);
        loop {
            // Connect, and find the partitions.
            let failure = match &client {
                None => {
                    counters.set_status(format!("connecting to {}", this.brokers.join(",")));
                    let connect = this.connect();
                    tokio::select! {
                        biased;
                        () = stopped(&mut shutdown) => break,
                        c = connect => match c {
                            Ok(c) => {
                                client = Some(Arc::new(c));
                                None
                            }
                            Err(e) => Some(e),
                        }
                    }
                }
                Some(_) => None,
            };
            let failure = match (&client, failure) {
                (Some(c), None) => match this.partitions_to_read(c).await {
                    Ok(partitions) => {
                        for p in partitions.difference(&running.clone()) {
                            running.insert(*p);
                            let from = lock(&progress).next.get(p).copied();
                            let task = readers.spawn(read_partition(
                                Arc::clone(&this),
                                Arc::clone(c),
                                *p,
                                from,
                                ingest.clone(),
                                shutdown.clone(),
                                Arc::clone(&progress),
                            ));
                            task_partition.insert(task.id(), *p);
                        }
                        if running.is_empty() {
                            Some(format!(
                                "none of the configured partitions {:?} of topic `{}` exists",
                                this.partitions, this.topic
                            ))
                        } else {
                            // Configured partitions the topic does not have
                            // (yet): said, and looked for at every refresh.
                            let missing: Vec<i32> = this
                                .partitions
                                .iter()
                                .flatten()
                                .filter(|p| !partitions.contains(p))
                                .copied()
                                .collect();
                            let missing = if missing.is_empty() {
                                String::new()
                            } else {
                                format!("; configured partitions not in the topic: {missing:?}")
                            };
                            counters.set_status(format!(
                                "reading {} partition(s) of `{}`{missing}",
                                running.len(),
                                this.topic
                            ));
                            backoff.reset();
                            None
                        }
                    }
                    Err(e) => {
                        // The connection may be what failed: connect anew.
                        client = None;
                        Some(e)
                    }
                },
                (_, f) => f,
            };
            let wait = match failure {
                Some(f) => {
                    counters.note_error();
                    let delay = backoff.next_delay();
                    counters.set_status(format!("retrying in {:.1} s: {f}", delay.as_secs_f64()));
                    if let Some(suppressed) = warnings.check() {
                        tracing::warn!(receiver = %name, stream = ingest.name(), suppressed, retry_in_ms = delay.as_millis() as u64, "{f}");
                    }
                    delay
                }
                None => this.metadata_refresh,
            };
            // Wait for the next metadata refresh, a retry, or a reader that
            // ended.
            let deadline = tokio::time::sleep(wait);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    biased;
                    () = stopped(&mut shutdown) => break,
                    joined = readers.join_next_with_id(), if !readers.is_empty() => {
                        let Some(joined) = joined else { continue };
                        let (p, end) = match joined {
                            Ok((_, x)) => x,
                            Err(e) => {
                                // A bug (a panic): say so, and read the
                                // partition again from where it was.
                                tracing::error!(receiver = %name, "a partition reader failed: {e}");
                                counters.note_error();
                                if let Some(p) = task_partition.remove(&e.id()) {
                                    running.remove(&p);
                                }
                                continue;
                            }
                        };
                        running.remove(&p);
                        match end {
                            PartitionEnd::Stopped => {}
                            PartitionEnd::Wal(source) => {
                                counters.set_status(format!("stopped: write-ahead log append failed: {source}"));
                                return Err(ReceiverError::Wal { receiver: name, source });
                            }
                            PartitionEnd::Kafka(e) => {
                                counters.note_error();
                                let delay = backoff.next_delay();
                                counters.set_status(format!("retrying partition {p} in {:.1} s: {e}", delay.as_secs_f64()));
                                if let Some(suppressed) = warnings.check() {
                                    tracing::warn!(receiver = %name, stream = ingest.name(), partition = p, suppressed, "{e}");
                                }
                                // Reconnect at the retry: leaders may have
                                // moved.
                                client = None;
                                deadline.as_mut().reset(tokio::time::Instant::now() + delay);
                            }
                        }
                    }
                    () = &mut deadline => break,
                }
            }
            if *shutdown.borrow() {
                break;
            }
        }
        // Shutdown: every reader finishes its append in flight and stops.
        while readers.join_next().await.is_some() {}
        counters.set_status("stopped");
        Ok(())
    }

    /// The partitions of the topic this receiver reads, as the brokers
    /// know them now.
    async fn partitions_to_read(
        &self,
        client: &Client,
    ) -> std::result::Result<BTreeSet<i32>, String> {
        let topics = tokio::time::timeout(REQUEST_DEADLINE, client.list_topics())
            .await
            .map_err(|_| format!("listing topics took over {} s", REQUEST_DEADLINE.as_secs()))?
            .map_err(|e| format!("cannot list topics: {e}"))?;
        let Some(topic) = topics.into_iter().find(|t| t.name == self.topic) else {
            return Err(format!(
                "topic `{}` does not exist (create it; brokers may not create topics on read)",
                self.topic
            ));
        };
        Ok(match &self.partitions {
            Some(wanted) => topic.partitions.intersection(wanted).copied().collect(),
            None => topic.partitions,
        })
    }
}

fn lock(progress: &Mutex<Progress>) -> std::sync::MutexGuard<'_, Progress> {
    progress.lock().unwrap_or_else(|p| p.into_inner())
}

/// Reads partition `p` from `from` (or the receiver's start) until
/// shutdown or an error.
async fn read_partition(
    receiver: Arc<KafkaReceiver>,
    client: Arc<Client>,
    p: i32,
    from: Option<i64>,
    ingest: StreamIngest,
    mut shutdown: watch::Receiver<bool>,
    progress: Arc<Mutex<Progress>>,
) -> (i32, PartitionEnd) {
    let topic = receiver.topic.as_str();
    let kafka = |what: &str, e: rskafka::client::error::Error| {
        PartitionEnd::Kafka(format!("partition {p}: {what}: {e}"))
    };
    let run = async {
        let pc = client
            .partition_client(topic, p, UnknownTopicHandling::Retry)
            .await
            .map_err(|e| kafka("cannot reach its leader", e))?;
        let mut offset = match from {
            Some(o) => o,
            None => {
                let at = match receiver.start {
                    Start::Earliest => OffsetAt::Earliest,
                    Start::Latest => OffsetAt::Latest,
                    Start::At(ms) => OffsetAt::Timestamp(
                        chrono::DateTime::from_timestamp_millis(ms).unwrap_or_default(),
                    ),
                };
                let o = pc
                    .get_offset(at)
                    .await
                    .map_err(|e| kafka("cannot look up the start offset", e))?;
                tracing::info!(topic, partition = p, offset = o, start = ?receiver.start, "no committed offset: starting");
                o
            }
        };
        let mut paced = Pacer::new(receiver.max_rate_per_partition);
        let max_record = ingest.max_record_bytes();
        loop {
            let fetch = pc.fetch_records(
                offset,
                1..receiver.fetch_max_bytes,
                receiver.fetch_max_wait_ms,
            );
            // A fetch of an idle partition waits up to fetch_max_wait_ms:
            // shutdown does not wait for it. (An append is never cut short.)
            let fetched = tokio::select! {
                biased;
                () = stopped(&mut shutdown) => return Ok(()),
                r = fetch => r,
            };
            let (records, high_watermark) = match fetched {
                Ok(r) => r,
                Err(rskafka::client::error::Error::ServerError {
                    protocol_error: rskafka::client::error::ProtocolError::OffsetOutOfRange,
                    ..
                }) => {
                    let earliest = pc
                        .get_offset(OffsetAt::Earliest)
                        .await
                        .map_err(|e| kafka("cannot look up the earliest offset", e))?;
                    if earliest > offset {
                        tracing::warn!(
                            topic,
                            partition = p,
                            "offsets {offset}..{earliest} were deleted by the broker (retention) before they were read: skipped"
                        );
                        offset = earliest;
                        continue;
                    }
                    let latest = pc
                        .get_offset(OffsetAt::Latest)
                        .await
                        .map_err(|e| kafka("cannot look up the latest offset", e))?;
                    return Err(PartitionEnd::Kafka(format!(
                        "partition {p}: offset {offset} is out of range ({earliest}..{latest}): was the topic deleted and created again? Drop the stream's state or set another topic"
                    )));
                }
                Err(e) => return Err(kafka("fetch failed", e)),
            };
            let mut records: Vec<RecordAndOffset> =
                records.into_iter().filter(|r| r.offset >= offset).collect();
            records.sort_by_key(|r| r.offset);
            let next = records.last().map_or(offset, |r| r.offset + 1);
            {
                let mut pr = lock(&progress);
                pr.lag
                    .insert(p, high_watermark.saturating_sub(next).max(0) as u64);
                ingest.counters().set_lag(pr.lag.values().sum());
            }
            if records.is_empty() {
                if *shutdown.borrow() {
                    return Ok(());
                }
                continue;
            }
            let reasons: Vec<Option<String>> = records
                .iter()
                .map(|r| {
                    let len = r.record.value.as_ref().map_or(0, Vec::len);
                    (len > max_record).then(|| {
                        format!("record of {len} bytes exceeds max_record_bytes ({max_record})")
                    })
                })
                .collect();
            let envelopes: Vec<Envelope<'_>> = records
                .iter()
                .zip(&reasons)
                .map(|(r, reason)| {
                    let value = r.record.value.as_deref().unwrap_or_default();
                    Envelope {
                        position: Some(SourcePosition {
                            source: topic,
                            partition: p,
                            offset: r.offset,
                        }),
                        timestamp_ms: Some(r.record.timestamp.timestamp_millis()),
                        key: r.record.key.as_deref(),
                        headers: r
                            .record
                            .headers
                            .iter()
                            .map(|(k, v)| (k.as_str(), v.as_slice()))
                            .collect(),
                        rejected: reason.as_deref(),
                        value: match reason {
                            Some(_) => {
                                &value[..value.len().min(crate::control::REJECTED_PREFIX_BYTES)]
                            }
                            None => value,
                        },
                    }
                })
                .collect();
            // Durable when this returns; a shutdown meanwhile waits for it
            // (bounded: one fsync, or the backlog draining).
            ingest
                .append_enveloped(&envelopes, now_us())
                .await
                .map_err(PartitionEnd::Wal)?;
            offset = next;
            lock(&progress).next.insert(p, next);
            if *shutdown.borrow() {
                return Ok(());
            }
            let pause = paced.after(records.len() as u64);
            if !pause.is_zero() {
                tokio::select! {
                    biased;
                    () = stopped(&mut shutdown) => return Ok(()),
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    };
    let end = match run.await {
        Ok(()) => PartitionEnd::Stopped,
        Err(e) => e,
    };
    (p, end)
}

/// Caps records per second (`max_rate_per_partition`).
#[derive(Debug)]
struct Pacer {
    rate: Option<u64>,
    since: Instant,
    records: u64,
}

impl Pacer {
    fn new(rate: Option<u64>) -> Pacer {
        Pacer {
            rate,
            since: Instant::now(),
            records: 0,
        }
    }

    /// How long to wait after `n` more records so that the rate since the
    /// start of the current second-long window stays under the cap.
    fn after(&mut self, n: u64) -> Duration {
        let Some(rate) = self.rate.filter(|&r| r > 0) else {
            return Duration::ZERO;
        };
        self.records += n;
        let due = Duration::from_secs_f64(self.records as f64 / rate as f64);
        let elapsed = self.since.elapsed();
        if elapsed >= Duration::from_secs(1) && due <= elapsed {
            // A new window: the past does not earn credit.
            self.since = Instant::now();
            self.records = 0;
        }
        due.saturating_sub(elapsed)
    }
}

impl Receiver for KafkaReceiver {
    fn describe(&self) -> String {
        format!("{KIND} {}@{}", self.topic, self.brokers.join(","))
    }

    fn run(
        self: Box<Self>,
        ingest: StreamIngest,
        shutdown: watch::Receiver<bool>,
    ) -> Pin<Box<dyn Future<Output = Result<(), ReceiverError>> + Send>> {
        Box::pin(self.serve(ingest, shutdown))
    }
}

/// `type = "kafka"` in `[[stream.receiver]]`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct KafkaConfig {
    /// Bootstrap brokers, `HOST:PORT[,HOST:PORT...]`. Required.
    pub brokers: String,
    /// The topic. Required; it must exist (it is not created).
    pub topic: String,
    /// The partitions to read. Default: all, and partitions added later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<Vec<i32>>,
    /// Where partitions without a committed offset start: `earliest`
    /// (default), `latest`, or an RFC 3339 time (the first record at or
    /// after it).
    #[serde(default = "default_start")]
    pub start: String,
    /// Most records per second read from one partition. Default: no cap
    /// (the backlog budget still applies); 1..=100000000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rate_per_partition: Option<u64>,
    /// Most bytes one fetch returns per partition. Default 4194304 (4 MiB);
    /// 1024..=67108864.
    #[serde(default = "default_fetch_max_bytes")]
    pub fetch_max_bytes: u32,
    /// Longest a fetch waits at the broker for records, in milliseconds.
    /// Default 500; 1..=30000.
    #[serde(default = "default_fetch_max_wait_ms")]
    pub fetch_max_wait_ms: u32,
    /// How often the topic's partitions are looked up again (new
    /// partitions are read from then on), in seconds. Default 30; 1..=3600.
    #[serde(default = "default_metadata_refresh_secs")]
    pub metadata_refresh_secs: u64,
}

fn default_start() -> String {
    "earliest".into()
}

fn default_fetch_max_bytes() -> u32 {
    4 << 20
}

fn default_fetch_max_wait_ms() -> u32 {
    500
}

fn default_metadata_refresh_secs() -> u64 {
    30
}

/// Kafka's rule for topic names.
fn is_topic_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl super::config::BuildReceiver for KafkaConfig {
    fn validate(&self) -> Vec<super::config::Problem> {
        use super::config::Problem;
        let mut problems = Vec::new();
        let bad: Vec<&str> = self
            .brokers
            .split(',')
            .map(str::trim)
            .filter(|b| !is_host_port(b))
            .collect();
        if !bad.is_empty() {
            problems.push(Problem::new(
                "brokers",
                format!(
                    "{:?} is not a comma-separated list of HOST:PORT addresses (like kafka-1:9092,kafka-2:9092); not an address: {}",
                    self.brokers,
                    bad.iter()
                        .map(|b| format!("{b:?}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        if !is_topic_name(&self.topic) {
            problems.push(Problem::new(
                "topic",
                format!(
                    "{:?} is not a Kafka topic name (1 to 249 of a-z A-Z 0-9 . _ -)",
                    self.topic
                ),
            ));
        }
        if let Some(ps) = &self.partitions {
            if ps.is_empty() {
                problems.push(Problem::new(
                    "partitions",
                    "is empty (leave it out to read every partition)",
                ));
            }
            if let Some(p) = ps.iter().find(|&&p| p < 0) {
                problems.push(Problem::new(
                    "partitions",
                    format!("{p} is not a partition number (0 or more)"),
                ));
            }
        }
        if let Err(e) = Start::parse(&self.start) {
            problems.push(Problem::new("start", e));
        }
        if let Some(rate) = self.max_rate_per_partition {
            problems.extend(Problem::range(
                "max_rate_per_partition",
                rate,
                1..=100_000_000,
            ));
        }
        problems.extend(Problem::range(
            "fetch_max_bytes",
            self.fetch_max_bytes,
            1024..=64 << 20,
        ));
        problems.extend(Problem::range(
            "fetch_max_wait_ms",
            self.fetch_max_wait_ms,
            1..=30_000,
        ));
        problems.extend(Problem::range(
            "metadata_refresh_secs",
            self.metadata_refresh_secs,
            1..=3600,
        ));
        problems
    }

    fn build(&self) -> super::config::Building<'_> {
        Box::pin(async move {
            Ok(Box::new(KafkaReceiver::from_config(self)?) as Box<dyn super::Receiver>)
        })
    }

    fn has_source_columns(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::super::config::BuildReceiver;
    use super::*;

    fn config() -> KafkaConfig {
        KafkaConfig {
            brokers: "127.0.0.1:9092, kafka-2:9092".into(),
            topic: "events.v1".into(),
            partitions: None,
            start: default_start(),
            max_rate_per_partition: None,
            fetch_max_bytes: default_fetch_max_bytes(),
            fetch_max_wait_ms: default_fetch_max_wait_ms(),
            metadata_refresh_secs: default_metadata_refresh_secs(),
        }
    }

    #[test]
    fn starts_parse() {
        assert_eq!(Start::parse("earliest"), Ok(Start::Earliest));
        assert_eq!(Start::parse("latest"), Ok(Start::Latest));
        assert_eq!(
            Start::parse("2026-12-01T00:00:01.5+01:00"),
            Ok(Start::At(1_796_079_601_500))
        );
        assert!(Start::parse("yesterday").unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn settings_are_checked_with_the_key_that_is_wrong() {
        assert!(config().validate().is_empty());
        let bad = KafkaConfig {
            brokers: "kafka-1:9092,nope".into(),
            topic: "a/b".into(),
            partitions: Some(vec![0, -1]),
            start: "soon".into(),
            max_rate_per_partition: Some(0),
            fetch_max_bytes: 10,
            fetch_max_wait_ms: 0,
            metadata_refresh_secs: 0,
        };
        let keys: Vec<String> = bad.validate().into_iter().map(|p| p.key).collect();
        assert_eq!(
            keys,
            [
                "brokers",
                "topic",
                "partitions",
                "start",
                "max_rate_per_partition",
                "fetch_max_bytes",
                "fetch_max_wait_ms",
                "metadata_refresh_secs"
            ]
        );
        let problems = bad.validate();
        assert!(problems[0].message.contains("\"nope\""), "{problems:?}");
    }

    #[test]
    fn the_pacer_caps_the_rate() {
        let mut p = Pacer::new(Some(1000));
        // 500 records at 1000/s are due after 0.5 s.
        let wait = p.after(500);
        assert!(wait > Duration::from_millis(400) && wait <= Duration::from_millis(500));
        assert_eq!(Pacer::new(None).after(1_000_000), Duration::ZERO);
    }
}
