//! The byte format of the store's sled values: lists of `(key, value)`
//! pairs, written once per micro-batch (all views in one blob) or per chunk
//! of a generation or a compacted epoch.
//!
//! A list is a varint count followed by its pairs; a pair is a varint key
//! length, the key's UTF-8 bytes and a value. A count — the common case —
//! is the tag `0` and a zigzag varint; every other aggregate state is the
//! tag `1`, a varint length and its CBOR encoding. Decoding borrows keys
//! from the input, so loading millions of keys allocates nothing per key.

use lamina::view::AggValue;

use super::{Result, StoreError};

const TAG_COUNT: u8 = 0;
const TAG_CBOR: u8 = 1;
/// The first byte of a micro-batch blob: its format version.
const BATCH_BLOB_V1: u8 = 1;

fn corrupt(what: &str, detail: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        what: what.to_owned(),
        detail: detail.into(),
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends one pair to `out`.
pub(super) fn put_pair(out: &mut Vec<u8>, key: &str, value: &AggValue) -> Result<()> {
    put_varint(out, key.len() as u64);
    out.extend_from_slice(key.as_bytes());
    match value {
        AggValue::Count(c) => {
            out.push(TAG_COUNT);
            put_varint(out, ((*c << 1) ^ (*c >> 63)) as u64);
        }
        other => {
            out.push(TAG_CBOR);
            let mut cbor = Vec::with_capacity(32);
            ciborium::into_writer(other, &mut cbor)
                .map_err(|e| corrupt("a value", e.to_string()))?;
            put_varint(out, cbor.len() as u64);
            out.extend_from_slice(&cbor);
        }
    }
    Ok(())
}

/// A list of pairs being written: the count is prefixed when it is done.
#[derive(Debug, Default)]
pub(super) struct PairList {
    body: Vec<u8>,
    len: u64,
}

impl PairList {
    pub(super) fn push(&mut self, key: &str, value: &AggValue) -> Result<()> {
        put_pair(&mut self.body, key, value)?;
        self.len += 1;
        Ok(())
    }

    pub(super) fn len(&self) -> u64 {
        self.len
    }

    pub(super) fn bytes(&self) -> usize {
        self.body.len()
    }

    /// The encoded list; leaves `self` empty.
    pub(super) fn take(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.body.len() + 10);
        put_varint(&mut out, self.len);
        out.extend_from_slice(&self.body);
        self.body.clear();
        self.len = 0;
        out
    }
}

/// Reads what [`PairList`] and [`encode_batch`] wrote.
pub(super) struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(super) fn new(bytes: &'a [u8], what: &'static str) -> Self {
        Reader { bytes, at: 0, what }
    }

    fn fail(&self, detail: &str) -> StoreError {
        corrupt(self.what, format!("{detail} at byte {}", self.at))
    }

    fn byte(&mut self) -> Result<u8> {
        let b = *self
            .bytes
            .get(self.at)
            .ok_or_else(|| self.fail("truncated"))?;
        self.at += 1;
        Ok(b)
    }

    pub(super) fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(self.fail("varint too long"))
    }

    fn slice(&mut self, len: u64) -> Result<&'a [u8]> {
        let len = usize::try_from(len).map_err(|_| self.fail("length out of range"))?;
        let end = self
            .at
            .checked_add(len)
            .filter(|&e| e <= self.bytes.len())
            .ok_or_else(|| self.fail("truncated"))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    pub(super) fn str(&mut self) -> Result<&'a str> {
        let len = self.varint()?;
        let raw = self.slice(len)?;
        std::str::from_utf8(raw).map_err(|_| self.fail("a key is not UTF-8"))
    }

    pub(super) fn value(&mut self) -> Result<AggValue> {
        match self.byte()? {
            TAG_COUNT => {
                let z = self.varint()?;
                Ok(AggValue::Count(((z >> 1) as i64) ^ -((z & 1) as i64)))
            }
            TAG_CBOR => {
                let len = self.varint()?;
                let raw = self.slice(len)?;
                ciborium::from_reader(raw).map_err(|e| self.fail(&e.to_string()))
            }
            t => Err(self.fail(&format!("unknown value tag {t}"))),
        }
    }

    /// Reads a list of pairs, calling `f` for each.
    pub(super) fn pairs(
        &mut self,
        mut f: impl FnMut(&'a str, AggValue) -> Result<()>,
    ) -> Result<()> {
        let n = self.varint()?;
        for _ in 0..n {
            let key = self.str()?;
            let value = self.value()?;
            f(key, value)?;
        }
        Ok(())
    }

    pub(super) fn done(&self) -> Result<()> {
        if self.at == self.bytes.len() {
            Ok(())
        } else {
            Err(self.fail("trailing bytes"))
        }
    }
}

/// One micro-batch's deltas of every view as one blob.
pub(super) fn encode_batch(deltas: &[(String, Vec<(String, AggValue)>)]) -> Result<Vec<u8>> {
    let approx: usize = deltas
        .iter()
        .map(|(v, p)| v.len() + 8 + p.iter().map(|(k, _)| k.len() + 4).sum::<usize>())
        .sum();
    let mut out = Vec::with_capacity(approx + 16);
    out.push(BATCH_BLOB_V1);
    put_varint(&mut out, deltas.len() as u64);
    for (view, pairs) in deltas {
        put_varint(&mut out, view.len() as u64);
        out.extend_from_slice(view.as_bytes());
        put_varint(&mut out, pairs.len() as u64);
        for (key, value) in pairs {
            put_pair(&mut out, key, value)?;
        }
    }
    Ok(out)
}

/// Calls `f(view, key, value)` for every delta of a micro-batch blob.
pub(super) fn decode_batch(
    blob: &[u8],
    mut f: impl FnMut(&str, &str, AggValue) -> Result<()>,
) -> Result<()> {
    let mut r = Reader::new(blob, "a micro-batch's deltas");
    let version = r.byte()?;
    if version != BATCH_BLOB_V1 {
        return Err(r.fail(&format!("unknown format version {version}")));
    }
    let views = r.varint()?;
    for _ in 0..views {
        let view = r.str()?;
        r.pairs(|key, value| f(view, key, value))?;
    }
    r.done()
}

#[cfg(test)]
mod tests {
    use super::*;
    use lamina::view::AggregateKind;
    use lamina::view::Num;

    fn sample() -> Vec<(String, Vec<(String, AggValue)>)> {
        let mut sum = AggregateKind::Sum.zero();
        sum.update_num(Num::Float(2.5));
        sum.update_num(Num::Int(-7));
        vec![
            (
                "counts".into(),
                vec![
                    ("".into(), AggValue::Count(0)),
                    ("héllo".into(), AggValue::Count(-3)),
                    ("big".into(), AggValue::Count(i64::MAX)),
                    ("small".into(), AggValue::Count(i64::MIN)),
                ],
            ),
            ("sums".into(), vec![("a|b".into(), sum)]),
            ("empty".into(), vec![]),
        ]
    }

    #[test]
    fn batches_round_trip() {
        let deltas = sample();
        let blob = encode_batch(&deltas).unwrap();
        let mut got: Vec<(String, String, AggValue)> = Vec::new();
        decode_batch(&blob, |v, k, x| {
            got.push((v.into(), k.into(), x));
            Ok(())
        })
        .unwrap();
        let want: Vec<(String, String, AggValue)> = deltas
            .into_iter()
            .flat_map(|(v, p)| p.into_iter().map(move |(k, x)| (v.clone(), k, x)))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn pair_lists_round_trip() {
        let mut list = PairList::default();
        for (k, v) in &sample()[0].1 {
            list.push(k, v).unwrap();
        }
        assert_eq!(list.len(), 4);
        let bytes = list.take();
        assert_eq!(list.len(), 0);
        let mut r = Reader::new(&bytes, "test");
        let mut n = 0;
        r.pairs(|_, _| {
            n += 1;
            Ok(())
        })
        .unwrap();
        r.done().unwrap();
        assert_eq!(n, 4);
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let blob = encode_batch(&sample()).unwrap();
        for cut in 0..blob.len() {
            let _ = decode_batch(&blob[..cut], |_, _, _| Ok(()));
        }
        assert!(decode_batch(&blob[..blob.len() - 1], |_, _, _| Ok(())).is_err());
        let mut bad = blob.clone();
        bad[0] = 9;
        let err = decode_batch(&bad, |_, _, _| Ok(())).unwrap_err();
        assert!(err.to_string().contains("version 9"), "{err}");
        let mut more = blob;
        more.push(0);
        assert!(decode_batch(&more, |_, _, _| Ok(())).is_err());
    }
}
