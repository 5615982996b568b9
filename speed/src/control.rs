//! Control records: entries in the write-ahead log that are not data of a
//! stream but travel with it, in the same atomic append.
//!
//! A log record carries a `u32` stream id. Ids with the top bit set are
//! control records of the stream in the low bits:
//!
//! - [`REJECTED`]: a record a receiver could not accept (longer than
//!   `max_record_bytes`). Its payload is `reason`, a NUL byte, then the first
//!   bytes of the record. The micro-batch loop turns it into a dead letter,
//!   so bad input is kept aside where the user sees it, never dropped
//!   silently.
//! - [`KEYED`]: an append of an HTTP ingest request that carried an
//!   `Idempotency-Key`: the first record of the entry is the key, the others
//!   are the request's data records. One append is one log entry, durable
//!   as a whole, so the key is durable exactly when the records are. The
//!   micro-batch loop commits the key with the records' deltas; a retried
//!   request with the same key is then answered without appending again,
//!   also across a crash.
//! - [`LOST`]: written by `lamina wal salvage` in place of records of a
//!   damaged log entry that could not be recovered, one per lost seq, so
//!   seqs stay gap-free. The payload says where the damage was. The
//!   micro-batch loop skips them and logs how many (older versions skip
//!   them as an unknown kind).
//! - [`ENVELOPED`]: a data record of the stream wrapped in an
//!   [envelope](crate::envelope) with its source's metadata (a Kafka
//!   record's topic, partition, offset, timestamp, key and headers; a Flume
//!   event's headers). The micro-batch loop parses the value like any
//!   record, adds the metadata as the stream's source columns, and commits
//!   each partition's next offset with the batch. Older versions skip them
//!   as an unknown kind.

/// Set on the stream id of every control record.
pub const CONTROL: u32 = 1 << 31;
/// Control kind: a rejected record (see the module docs).
pub const REJECTED: u32 = CONTROL | (1 << 30);
/// Control kind: a keyed append (see the module docs).
pub const KEYED: u32 = CONTROL | (1 << 29);
/// Control kind: a record lost to log damage (see the module docs).
pub const LOST: u32 = CONTROL | (1 << 28);
/// Control kind: a record in an envelope (see the module docs).
pub const ENVELOPED: u32 = CONTROL | (1 << 27);
/// The bits that hold the stream index in a control record's id (below
/// every kind bit; stream indices are far smaller).
pub const STREAM_MASK: u32 = (1 << 27) - 1;

/// Most bytes of a rejected record kept in its dead letter.
pub const REJECTED_PREFIX_BYTES: usize = 4096;

/// The log record that stands for a rejected record of stream `stream`.
pub fn rejected(stream: u32, reason: &str, record: &[u8]) -> (u32, Vec<u8>) {
    let keep = &record[..record.len().min(REJECTED_PREFIX_BYTES)];
    let mut payload = Vec::with_capacity(reason.len() + 1 + keep.len());
    payload.extend_from_slice(reason.as_bytes());
    payload.push(0);
    payload.extend_from_slice(keep);
    (REJECTED | (stream & STREAM_MASK), payload)
}

/// What a log record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A data record of stream `n`.
    Data(u32),
    /// A rejected record of stream `n`.
    Rejected(u32),
    /// A record of a keyed append to stream `n`: the key when it is the
    /// first record of its entry, data otherwise.
    Keyed(u32),
    /// A record lost to log damage, replaced by `lamina wal salvage`.
    Lost,
    /// A record of stream `n` in an envelope.
    Enveloped(u32),
    /// A control kind this version does not know: skipped.
    Unknown,
}

/// Classifies a log record's stream id.
pub fn kind(id: u32) -> Kind {
    if id & CONTROL == 0 {
        Kind::Data(id)
    } else if id & REJECTED == REJECTED {
        Kind::Rejected(id & STREAM_MASK)
    } else if id & KEYED == KEYED {
        Kind::Keyed(id & STREAM_MASK)
    } else if id & LOST == LOST {
        Kind::Lost
    } else if id & ENVELOPED == ENVELOPED {
        Kind::Enveloped(id & STREAM_MASK)
    } else {
        Kind::Unknown
    }
}

/// Splits a rejected record's payload into its reason and record prefix.
pub fn split_rejected(payload: &[u8]) -> (String, &[u8]) {
    match payload.iter().position(|&b| b == 0) {
        Some(nul) => (
            String::from_utf8_lossy(&payload[..nul]).into_owned(),
            &payload[nul + 1..],
        ),
        None => (String::from_utf8_lossy(payload).into_owned(), &[]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip() {
        assert_eq!(kind(7), Kind::Data(7));
        let (id, payload) = rejected(3, "too long", &[b'x'; 10_000]);
        assert_eq!(kind(id), Kind::Rejected(3));
        let (reason, prefix) = split_rejected(&payload);
        assert_eq!(
            (reason.as_str(), prefix.len()),
            ("too long", REJECTED_PREFIX_BYTES)
        );
        assert_eq!(kind(KEYED | 5), Kind::Keyed(5));
        assert_eq!(kind(LOST), Kind::Lost);
        assert_eq!(kind(ENVELOPED | 4), Kind::Enveloped(4));
        assert_eq!(kind(ENVELOPED | STREAM_MASK), Kind::Enveloped(STREAM_MASK));
        assert_eq!(kind(CONTROL | 1), Kind::Unknown);
    }
}
