//! What one micro-batch hands to the state store, and the traits through
//! which the speed layer reads its input and writes its output.
//!
//! The speed layer does not own the state store (the serving layer does,
//! to merge it with batch views); it writes through [`CommitSink`], and
//! reads durable records through [`RecordLog`] (the write-ahead log).

use std::fmt;
use std::ops::Range;

use lamina::view::AggValue;

/// A record that did not parse, kept where the user can see it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadRecord {
    /// The stream it was sent to.
    pub stream: String,
    /// Its sequence number in the write-ahead log.
    pub seq: u64,
    /// Why it was rejected (names the field and what was expected).
    pub reason: String,
    /// The record, cut to at most 4 KiB.
    pub record: Vec<u8>,
}

/// One micro-batch's output, committed atomically: nothing of it, or all of
/// it, survives a crash.
#[derive(Debug, Default, Clone)]
pub struct MicroBatchCommit {
    /// The micro-batch id; strictly increasing.
    pub batch_id: u64,
    /// The epoch the micro-batch belongs to.
    pub epoch: u64,
    /// Source positions reached (e.g. `(Position::Wal, next seq)`), epoch
    /// boundaries (`(Position::EpochStart(epoch), first seq)`), record
    /// totals and idempotency keys: where to resume after a restart, and
    /// what to seal (see [`Position`]).
    pub positions: Vec<(Position, u64)>,
    /// Per view, the merged partial aggregate of each key in this
    /// micro-batch.
    pub deltas: Vec<(String, Vec<(String, AggValue)>)>,
    /// Records that did not parse.
    pub dead_letters: Vec<DeadRecord>,
    /// The changes of the program's stateful operators (keys set or
    /// removed, per operator), committed in the same transaction so that
    /// the state after a restart is that of the last committed batch.
    pub state: Vec<lamina::streaming::StateDelta>,
}

/// Where micro-batches commit: the state store.
pub trait CommitSink: Send + Sync {
    /// Commits one micro-batch atomically.
    ///
    /// # Errors
    ///
    /// A message naming what failed; nothing of the commit is applied.
    fn commit(&self, commit: MicroBatchCommit) -> Result<(), String>;

    /// The last committed value of a position (see
    /// [`MicroBatchCommit::positions`]).
    ///
    /// # Errors
    ///
    /// A message naming what failed.
    fn position(&self, position: &Position) -> Result<Option<u64>, String>;

    /// The id of the last committed micro-batch.
    ///
    /// # Errors
    ///
    /// A message naming what failed.
    fn last_batch_id(&self) -> Result<Option<u64>, String>;

    /// Every committed position of a family, in the order of their
    /// [keys](Position::key) (epoch starts: by epoch).
    ///
    /// # Errors
    ///
    /// A message naming what failed.
    fn positions_of(&self, family: &PositionKind) -> Result<Vec<(Position, u64)>, String>;

    /// Makes every commit so far durable (before the log records they came
    /// from may be deleted).
    ///
    /// # Errors
    ///
    /// A message naming what failed.
    fn flush(&self) -> Result<(), String>;
}

impl fmt::Debug for dyn CommitSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CommitSink")
    }
}

/// One record read from the log.
#[derive(Debug, Clone, Copy)]
pub struct LogRecord<'a> {
    /// Its sequence number.
    pub seq: u64,
    /// The sequence number of the first record of the append it was part of.
    pub entry_first_seq: u64,
    /// The stream id (with control bits, see [`crate::control`]).
    pub stream: u32,
    /// When the receiver got it (µs since the Unix epoch).
    pub receive_us: i64,
    /// The bytes.
    pub payload: &'a [u8],
}

/// Receives each record read from the log.
pub type RecordVisitor<'a> = dyn FnMut(LogRecord<'_>) + 'a;

/// Durable records in sequence order: the write-ahead log.
pub trait RecordLog: Send + Sync {
    /// One past the highest durable sequence number.
    fn durable_end(&self) -> u64;

    /// Calls `f` for every record with seq in `range`, in order.
    ///
    /// # Errors
    ///
    /// A message naming what failed (records deleted, damaged, not durable).
    fn read(&self, range: Range<u64>, f: &mut RecordVisitor<'_>) -> Result<(), String>;

    /// Deletes what is only needed for records before `seq` (they are in the
    /// master dataset now).
    ///
    /// # Errors
    ///
    /// A message naming what failed.
    fn truncate_before(&self, seq: u64) -> Result<(), String>;
}

impl RecordLog for crate::wal::Wal {
    fn durable_end(&self) -> u64 {
        self.durable_seq()
    }

    fn read(&self, range: Range<u64>, f: &mut RecordVisitor<'_>) -> Result<(), String> {
        self.read_entries(
            range,
            |seq, entry_first_seq, stream, receive_us, payload| {
                f(LogRecord {
                    seq,
                    entry_first_seq,
                    stream,
                    receive_us,
                    payload,
                })
            },
        )
        .map_err(|e| e.to_string())
    }

    fn truncate_before(&self, seq: u64) -> Result<(), String> {
        crate::wal::Wal::truncate_before(self, seq)
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// A source position committed with a micro-batch: a name and a `u64`,
/// kept in the state store (the serving layer's sled `meta` tree, under
/// `pos/` + [`key`](Position::key)).
///
/// Stream names never contain `/` (config validation allows
/// `[A-Za-z0-9_.-]`), which keeps every key unambiguous.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Position {
    /// The write-ahead log: one past the last record committed. Written by
    /// every micro-batch; read by the micro-batch loop to resume after a
    /// restart, by the sealer (the end of the last epoch) and by a batch
    /// run waiting for acknowledged records to be committed.
    Wal,
    /// The first sequence number of an epoch. Written by the first
    /// micro-batch of the epoch that takes records; read by the sealer (an
    /// epoch's records end where the next epoch starts) and by the loop on
    /// resume (no earlier epoch may receive records any more).
    EpochStart(u64),
    /// A stream's total of committed records: every record taken from it
    /// into a micro-batch, parsed or not (dead letters included), ever.
    /// Written by each micro-batch that took records of the stream; read by
    /// the loop on resume (the stream's stats).
    Records {
        /// The stream.
        stream: String,
    },
    /// An HTTP ingest request's idempotency key; the value is the
    /// request's receive time (µs since the Unix epoch), for expiry.
    /// Written by the micro-batch that takes the keyed append; read by the
    /// ingest endpoint to answer a retried request as a duplicate.
    Idempotency {
        /// The stream the request was sent to.
        stream: String,
        /// The key (the ingest endpoint refuses keys containing `/`, but
        /// [`Position::parse`] accepts them).
        key: String,
    },
    /// A stream's event-time watermark (µs since the Unix epoch): the
    /// largest event time seen minus the allowed lateness. Written by each
    /// micro-batch that moved it; read on resume, so that what is late
    /// after a restart is what was late before it.
    Watermark {
        /// The stream.
        stream: String,
    },
    /// A stream's total of late records (event time before the watermark),
    /// ever. Written by each micro-batch that had some.
    Late {
        /// The stream.
        stream: String,
    },
    /// The next offset to read of a source partition (a Kafka topic's
    /// partition): one past the highest offset of the records taken so
    /// far. Written by each micro-batch that took enveloped records with a
    /// position ([`crate::envelope`]); read by the receiver when it starts,
    /// so that it resumes exactly after what is committed — the log was
    /// replayed before receivers start, so nothing durable lies beyond it.
    SourceOffset {
        /// The stream.
        stream: String,
        /// The partition.
        partition: i32,
        /// The source (the topic).
        source: String,
    },
}

const WAL: &str = "wal";
const EPOCH_START_PREFIX: &str = "epoch_start/";
const RECORDS_PREFIX: &str = "records/";
const IDEMPOTENCY_PREFIX: &str = "idem/";
const WATERMARK_PREFIX: &str = "watermark/";
const LATE_PREFIX: &str = "late/";
const OFFSET_PREFIX: &str = "offset/";

impl Position {
    /// The name the position is stored under: `wal`,
    /// `epoch_start/{epoch:020}`, `records/{stream}`, `idem/{stream}/{key}`,
    /// `watermark/{stream}`, `late/{stream}`,
    /// `offset/{stream}/{partition}/{source}`.
    /// This is the on-disk layout of existing state directories: never
    /// change it.
    pub fn key(&self) -> String {
        match self {
            Position::Wal => WAL.to_owned(),
            Position::EpochStart(epoch) => format!("{EPOCH_START_PREFIX}{epoch:020}"),
            Position::Records { stream } => format!("{RECORDS_PREFIX}{stream}"),
            Position::Idempotency { stream, key } => {
                format!("{IDEMPOTENCY_PREFIX}{stream}/{key}")
            }
            Position::Watermark { stream } => format!("{WATERMARK_PREFIX}{stream}"),
            Position::Late { stream } => format!("{LATE_PREFIX}{stream}"),
            Position::SourceOffset {
                stream,
                partition,
                source,
            } => format!("{OFFSET_PREFIX}{stream}/{partition}/{source}"),
        }
    }

    /// The position stored under `name` (the inverse of [`key`](Self::key));
    /// `None` for a name no position has. An idempotency key's stream ends
    /// at the first `/` after `idem/`.
    pub fn parse(name: &str) -> Option<Position> {
        if name == WAL {
            return Some(Position::Wal);
        }
        if let Some(digits) = name.strip_prefix(EPOCH_START_PREFIX) {
            // Exactly the 20 digits `key` writes, so that parsing is the
            // inverse of `key` (no sign, no other widths).
            if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            return digits.parse().ok().map(Position::EpochStart);
        }
        if let Some(stream) = name.strip_prefix(RECORDS_PREFIX) {
            return Some(Position::Records {
                stream: stream.to_owned(),
            });
        }
        if let Some(stream) = name.strip_prefix(WATERMARK_PREFIX) {
            return Some(Position::Watermark {
                stream: stream.to_owned(),
            });
        }
        if let Some(stream) = name.strip_prefix(LATE_PREFIX) {
            return Some(Position::Late {
                stream: stream.to_owned(),
            });
        }
        if let Some(rest) = name.strip_prefix(OFFSET_PREFIX) {
            let (stream, rest) = rest.split_once('/')?;
            let (partition, source) = rest.split_once('/')?;
            return Some(Position::SourceOffset {
                stream: stream.to_owned(),
                partition: partition.parse().ok()?,
                source: source.to_owned(),
            });
        }
        if let Some(rest) = name.strip_prefix(IDEMPOTENCY_PREFIX) {
            let (stream, key) = rest.split_once('/')?;
            return Some(Position::Idempotency {
                stream: stream.to_owned(),
                key: key.to_owned(),
            });
        }
        None
    }

    /// Whether the position belongs to `family`.
    pub fn is_of(&self, family: &PositionKind) -> bool {
        match (self, family) {
            (Position::EpochStart(_), PositionKind::EpochStart)
            | (Position::Records { .. }, PositionKind::Records) => true,
            (Position::Idempotency { stream, .. }, PositionKind::Idempotency { stream: s })
            | (Position::SourceOffset { stream, .. }, PositionKind::SourceOffsets { stream: s }) => {
                stream == s
            }
            _ => false,
        }
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// A family of positions, to list them all at once (see
/// [`CommitSink::positions_of`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PositionKind {
    /// Every [`Position::EpochStart`].
    EpochStart,
    /// Every [`Position::Records`].
    Records,
    /// Every [`Position::Idempotency`] of one stream.
    Idempotency {
        /// The stream.
        stream: String,
    },
    /// Every [`Position::SourceOffset`] of one stream.
    SourceOffsets {
        /// The stream.
        stream: String,
    },
}

impl PositionKind {
    /// What the [keys](Position::key) of the family, and no others, start
    /// with (for a store that scans by prefix; filter with
    /// [`Position::parse`] and [`Position::is_of`]).
    pub fn key_prefix(&self) -> String {
        match self {
            PositionKind::EpochStart => EPOCH_START_PREFIX.to_owned(),
            PositionKind::Records => RECORDS_PREFIX.to_owned(),
            PositionKind::Idempotency { stream } => format!("{IDEMPOTENCY_PREFIX}{stream}/"),
            PositionKind::SourceOffsets { stream } => format!("{OFFSET_PREFIX}{stream}/"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idem(stream: &str, key: &str) -> Position {
        Position::Idempotency {
            stream: stream.into(),
            key: key.into(),
        }
    }

    #[test]
    fn keys_are_the_on_disk_names() {
        assert_eq!(Position::Wal.key(), "wal");
        assert_eq!(
            Position::EpochStart(42).key(),
            "epoch_start/00000000000000000042"
        );
        assert_eq!(
            Position::EpochStart(u64::MAX).key(),
            "epoch_start/18446744073709551615"
        );
        assert_eq!(
            Position::Records {
                stream: "lines".into()
            }
            .key(),
            "records/lines"
        );
        assert_eq!(idem("lines", "req-42").key(), "idem/lines/req-42");
    }

    #[test]
    fn parse_is_the_inverse_of_key() {
        let all = [
            Position::Wal,
            Position::EpochStart(0),
            Position::EpochStart(7),
            Position::EpochStart(u64::MAX),
            Position::Records {
                stream: "lines".into(),
            },
            Position::Records {
                stream: "a/b".into(),
            },
            Position::Records { stream: "".into() },
            idem("lines", "req-42"),
            idem("lines", "a/b/c"),
            idem("lines", "/"),
            idem("lines", ""),
            idem("s", "clé-ü"),
            Position::Watermark {
                stream: "events".into(),
            },
            Position::SourceOffset {
                stream: "events".into(),
                partition: 3,
                source: "clicks.v2".into(),
            },
            Position::SourceOffset {
                stream: "events".into(),
                partition: -1,
                source: "".into(),
            },
            Position::Late {
                stream: "events".into(),
            },
        ];
        for p in all {
            assert_eq!(Position::parse(&p.key()), Some(p.clone()), "{p:?}");
        }
    }

    #[test]
    fn names_of_no_position_do_not_parse() {
        for name in [
            "",
            "wal/",
            "wall",
            "epoch_start/",
            "epoch_start/42",
            "epoch_start/+0000000000000000042",
            "epoch_start/99999999999999999999",
            "epoch_start/0000000000000000004x",
            "idem/lines",
            "other/x",
        ] {
            assert_eq!(Position::parse(name), None, "{name:?}");
        }
    }

    #[test]
    fn families_cover_their_keys() {
        let a = idem("a", "k/1");
        let ab = idem("a.b", "k");
        let fam = PositionKind::Idempotency { stream: "a".into() };
        assert!(a.key().starts_with(&fam.key_prefix()) && a.is_of(&fam));
        assert!(!ab.key().starts_with(&fam.key_prefix()) && !ab.is_of(&fam));
        let e = Position::EpochStart(3);
        assert!(e.key().starts_with(&PositionKind::EpochStart.key_prefix()));
        assert!(e.is_of(&PositionKind::EpochStart) && !e.is_of(&PositionKind::Records));
        let r = Position::Records { stream: "s".into() };
        assert!(r.key().starts_with(&PositionKind::Records.key_prefix()));
        assert!(r.is_of(&PositionKind::Records));
        assert!(!Position::Wal.is_of(&PositionKind::EpochStart));
    }
}
