//! Entry framing: how one append (a batch of records) is laid out on disk.
//!
//! ```text
//! len             u32 LE   bytes after the crc field: HEADER_LEN + records
//! crc             u32 LE   CRC-32 (IEEE, crc32fast) of those `len` bytes
//! first_seq       u64 LE   seq of the first record; the others follow, gap-free
//! count           u32 LE   number of records
//! stream          u32 LE   stream id shared by every record of the append
//! receive_time_us i64 LE   receive time shared by every record of the append
//! count x { payload_len u32 LE, payload }
//! ```
//!
//! One CRC over the whole entry is what makes an append atomic: a torn or
//! damaged entry fails the check as a whole, so recovery keeps all of its
//! records or none. The framing (the declared length against the end of
//! the file, the seq in the header) is what tells an entry torn by a crash
//! from a damaged one (`segment::inspect`). The format is unchanged by
//! that: no marker or extra field was needed, so every existing log reads.
//!
//! The records are encoded (and their CRC computed) by the appender, in
//! parallel with other appenders; the writer thread only adds the header,
//! whose CRC it combines with the body's (`crc32fast::Hasher::combine` is
//! O(log n), no second pass over the data).

use super::error::{Result, WalError};

/// Bytes of `len` + `crc`.
pub(super) const FRAME_LEN: usize = 8;
/// Bytes of the entry header covered by the CRC.
pub(super) const HEADER_LEN: usize = 24;
/// Bytes before the first record.
pub(super) const PREFIX_LEN: usize = FRAME_LEN + HEADER_LEN;

/// The records of one append, encoded, with the CRC of exactly these bytes.
#[derive(Debug)]
pub(super) struct Body {
    pub(super) bytes: Vec<u8>,
    pub(super) count: u32,
    pub(super) crc: crc32fast::Hasher,
}

impl Body {
    /// Encodes `records`; fails if they do not fit the format's u32 fields.
    pub(super) fn encode<R: AsRef<[u8]>>(records: &[R]) -> Result<Body> {
        let too_large = |reason: String| WalError::TooLarge { reason };
        let count = u32::try_from(records.len())
            .map_err(|_| too_large(format!("{} records in one append", records.len())))?;
        let mut size = HEADER_LEN as u64;
        for r in records {
            let len = r.as_ref().len();
            if u32::try_from(len).is_err() {
                return Err(too_large(format!("record of {len} bytes")));
            }
            size += 4 + len as u64;
        }
        if u32::try_from(size).is_err() {
            return Err(too_large(format!("entry of {size} bytes")));
        }
        let mut bytes = Vec::with_capacity((size as usize) - HEADER_LEN);
        for r in records {
            let r = r.as_ref();
            bytes.extend_from_slice(&(r.len() as u32).to_le_bytes());
            bytes.extend_from_slice(r);
        }
        let mut crc = crc32fast::Hasher::new();
        crc.update(&bytes);
        Ok(Body { bytes, count, crc })
    }

    /// Bytes this body takes on disk once framed.
    pub(super) fn entry_len(&self) -> u64 {
        (PREFIX_LEN + self.bytes.len()) as u64
    }
}

/// The fields of an entry header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct EntryHeader {
    pub(super) first_seq: u64,
    pub(super) count: u32,
    pub(super) stream: u32,
    pub(super) receive_time_us: i64,
}

impl EntryHeader {
    /// One past the last seq of the entry.
    pub(super) fn end_seq(&self) -> u64 {
        self.first_seq + u64::from(self.count)
    }

    fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&self.first_seq.to_le_bytes());
        b[8..12].copy_from_slice(&self.count.to_le_bytes());
        b[12..16].copy_from_slice(&self.stream.to_le_bytes());
        b[16..24].copy_from_slice(&self.receive_time_us.to_le_bytes());
        b
    }

    fn from_bytes(b: &[u8; HEADER_LEN]) -> EntryHeader {
        EntryHeader {
            first_seq: u64::from_le_bytes(b[0..8].try_into().expect("8 bytes")),
            count: u32::from_le_bytes(b[8..12].try_into().expect("4 bytes")),
            stream: u32::from_le_bytes(b[12..16].try_into().expect("4 bytes")),
            receive_time_us: i64::from_le_bytes(b[16..24].try_into().expect("8 bytes")),
        }
    }
}

/// The bytes that go before `body` on disk.
pub(super) fn encode_prefix(header: EntryHeader, body: &Body) -> [u8; PREFIX_LEN] {
    let header_bytes = header.to_bytes();
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header_bytes);
    crc.combine(&body.crc);
    // `Body::encode` checked that HEADER_LEN + body fits in a u32.
    let len = (HEADER_LEN + body.bytes.len()) as u32;
    let mut p = [0u8; PREFIX_LEN];
    p[0..4].copy_from_slice(&len.to_le_bytes());
    p[4..8].copy_from_slice(&crc.finalize().to_le_bytes());
    p[FRAME_LEN..].copy_from_slice(&header_bytes);
    p
}

/// A decoded entry prefix; the body still has to be read and verified.
#[derive(Debug, Clone, Copy)]
pub(super) struct Prefix {
    pub(super) header: EntryHeader,
    len: u32,
    crc: u32,
    header_bytes: [u8; HEADER_LEN],
}

impl Prefix {
    /// Decodes a prefix; `Err` names why it cannot start an entry.
    pub(super) fn decode(p: &[u8; PREFIX_LEN]) -> Result<Prefix, String> {
        let len = u32::from_le_bytes(p[0..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(p[4..8].try_into().expect("4 bytes"));
        if (len as usize) < HEADER_LEN {
            return Err(format!("entry length {len} is shorter than its header"));
        }
        let header_bytes: [u8; HEADER_LEN] = p[FRAME_LEN..].try_into().expect("header bytes");
        Ok(Prefix {
            header: EntryHeader::from_bytes(&header_bytes),
            len,
            crc,
            header_bytes,
        })
    }

    /// Bytes of records that follow the prefix.
    pub(super) fn body_len(&self) -> usize {
        self.len as usize - HEADER_LEN
    }

    /// Bytes of the whole entry, prefix included.
    pub(super) fn entry_len(&self) -> u64 {
        FRAME_LEN as u64 + u64::from(self.len)
    }

    /// Checks the CRC and that the records fill `body` exactly.
    pub(super) fn verify(&self, body: &[u8]) -> Result<(), String> {
        let mut crc = crc32fast::Hasher::new();
        crc.update(&self.header_bytes);
        crc.update(body);
        let actual = crc.finalize();
        if actual != self.crc {
            return Err(format!(
                "CRC mismatch (stored {:#010x}, computed {actual:#010x})",
                self.crc
            ));
        }
        // A matching CRC over malformed records can only come from a bug in
        // the writer; still check, so `records` never reads out of bounds.
        let mut rest = body;
        for i in 0..self.header.count {
            let Some((len, after)) = rest.split_first_chunk::<4>() else {
                return Err(format!("record {i} of {} is cut short", self.header.count));
            };
            let len = u32::from_le_bytes(*len) as usize;
            if after.len() < len {
                return Err(format!("record {i} of {} is cut short", self.header.count));
            }
            rest = &after[len..];
        }
        if !rest.is_empty() {
            return Err(format!("{} bytes after the last record", rest.len()));
        }
        Ok(())
    }
}

/// The payloads of a verified body, in order.
pub(super) fn records(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = body;
    std::iter::from_fn(move || {
        let (len, after) = rest.split_first_chunk::<4>()?;
        let len = u32::from_le_bytes(*len) as usize;
        let (payload, after) = after.split_at(len);
        rest = after;
        Some(payload)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(first_seq: u64, records: &[&[u8]]) -> Vec<u8> {
        let body = Body::encode(records).unwrap();
        let header = EntryHeader {
            first_seq,
            count: body.count,
            stream: 7,
            receive_time_us: -5,
        };
        let mut e = encode_prefix(header, &body).to_vec();
        e.extend_from_slice(&body.bytes);
        e
    }

    fn decode(e: &[u8]) -> Result<(EntryHeader, Vec<Vec<u8>>), String> {
        let p = Prefix::decode(e[..PREFIX_LEN].try_into().unwrap())?;
        assert_eq!(p.entry_len(), e.len() as u64);
        let body = &e[PREFIX_LEN..];
        p.verify(body)?;
        Ok((p.header, records(body).map(<[u8]>::to_vec).collect()))
    }

    #[test]
    fn entry_round_trips_with_combined_crc() {
        let recs: [&[u8]; 4] = [b"alpha", b"", b"gamma gamma", &[0xff; 300]];
        let e = entry(42, &recs);
        let (h, got) = decode(&e).unwrap();
        assert_eq!(
            (h.first_seq, h.count, h.stream, h.receive_time_us),
            (42, 4, 7, -5)
        );
        assert_eq!(h.end_seq(), 46);
        assert_eq!(got, recs.iter().map(|r| r.to_vec()).collect::<Vec<_>>());
    }

    #[test]
    fn any_flipped_bit_is_detected() {
        let e = entry(3, &[b"one", b"two", b"three"]);
        for i in 0..e.len() {
            for bit in 0..8 {
                let mut bad = e.clone();
                bad[i] ^= 1 << bit;
                // A flipped length bit may also make the entry longer than
                // the buffer; `segment::classify_tail` tells that from a torn write.
                let p = Prefix::decode(bad[..PREFIX_LEN].try_into().unwrap());
                let ok = p.is_ok_and(|p| {
                    p.entry_len() == bad.len() as u64 && p.verify(&bad[PREFIX_LEN..]).is_ok()
                });
                assert!(!ok, "flip of bit {bit} in byte {i} went unnoticed");
            }
        }
    }

    #[test]
    fn length_shorter_than_header_is_rejected() {
        let mut p = [0u8; PREFIX_LEN];
        p[0..4].copy_from_slice(&3u32.to_le_bytes());
        assert!(Prefix::decode(&p).is_err());
    }
}
