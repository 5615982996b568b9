//! One stream's records of one micro-batch, packed into one byte buffer so
//! that collecting them allocates nothing per record.

use crate::envelope::{Envelope, SourceMeta};

/// Records in arrival (sequence) order.
#[derive(Debug, Default)]
pub struct RecordBuffer {
    bytes: Vec<u8>,
    /// End offset of each record in `bytes`.
    ends: Vec<usize>,
    seqs: Vec<u64>,
    /// When each record was received (µs since the Unix epoch).
    receive_us: Vec<i64>,
    first_receive_us: Option<i64>,
    last_receive_us: Option<i64>,
    /// The source metadata of enveloped records; shorter than the records
    /// when the last ones came without an envelope (nulls).
    meta: SourceMeta,
}

impl RecordBuffer {
    /// Empties the buffer, keeping its capacity.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.seqs.clear();
        self.receive_us.clear();
        self.first_receive_us = None;
        self.last_receive_us = None;
        self.meta.clear();
    }

    /// Appends the value of an enveloped record, and keeps its metadata.
    pub fn push_enveloped(&mut self, seq: u64, receive_us: i64, envelope: &Envelope<'_>) {
        while self.meta.len() < self.len() {
            self.meta.push_none();
        }
        self.meta.push(envelope);
        self.push(seq, receive_us, envelope.value);
    }

    /// The source metadata of the records (see [`SourceMeta::columns`]).
    pub fn meta(&self) -> &SourceMeta {
        &self.meta
    }

    /// Appends one record.
    pub fn push(&mut self, seq: u64, receive_us: i64, payload: &[u8]) {
        self.bytes.extend_from_slice(payload);
        self.ends.push(self.bytes.len());
        self.seqs.push(seq);
        self.receive_us.push(receive_us);
        self.first_receive_us = Some(
            self.first_receive_us
                .map_or(receive_us, |f| f.min(receive_us)),
        );
        self.last_receive_us = Some(
            self.last_receive_us
                .map_or(receive_us, |l| l.max(receive_us)),
        );
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether there are no records.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Total payload bytes.
    pub fn bytes(&self) -> usize {
        self.bytes.len()
    }

    /// The records, in order.
    pub fn records(&self) -> impl Iterator<Item = &[u8]> + '_ {
        let mut start = 0;
        self.ends.iter().map(move |&end| {
            let r = &self.bytes[start..end];
            start = end;
            r
        })
    }

    /// Records `start..end`, in order.
    pub fn range(&self, start: usize, end: usize) -> impl Iterator<Item = &[u8]> + '_ {
        let mut from = if start == 0 { 0 } else { self.ends[start - 1] };
        self.ends[start..end].iter().map(move |&to| {
            let r = &self.bytes[from..to];
            from = to;
            r
        })
    }

    /// The sequence number of record `index`.
    pub fn seq(&self, index: usize) -> u64 {
        self.seqs[index]
    }

    /// When record `index` was received (µs since the Unix epoch).
    pub fn receive_us(&self, index: usize) -> i64 {
        self.receive_us[index]
    }

    /// Earliest and latest receive time.
    pub fn receive_span_us(&self) -> (Option<i64>, Option<i64>) {
        (self.first_receive_us, self.last_receive_us)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_in_order() {
        let mut b = RecordBuffer::default();
        b.push(5, 100, b"ab");
        b.push(6, 90, b"");
        b.push(7, 120, b"cde");
        let got: Vec<&[u8]> = b.records().collect();
        assert_eq!(got, vec![&b"ab"[..], b"", b"cde"]);
        assert_eq!((b.len(), b.bytes(), b.seq(2)), (3, 5, 7));
        assert_eq!(b.receive_us(1), 90);
        assert_eq!(b.range(1, 3).collect::<Vec<_>>(), vec![&b""[..], b"cde"]);
        assert_eq!(b.range(0, 1).collect::<Vec<_>>(), vec![&b"ab"[..]]);
        assert_eq!(b.range(2, 2).count(), 0);
        assert_eq!(b.receive_span_us(), (Some(90), Some(120)));
        b.clear();
        assert!(b.is_empty());
        assert_eq!(b.receive_span_us(), (None, None));
    }
}
