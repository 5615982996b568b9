//! A task's partial aggregates in columnar form, split by key hash: what
//! the batch layer hands to the serving layer.
//!
//! A `Vec<(String, AggValue)>` per task costs an allocation per key, and
//! its consumer hashes every key again to find it. Here a task's keys sit
//! in one byte buffer per part, each with the hash it was folded under
//! ([`key_hash`]), and the keys are already split into [`PARTS`] parts by
//! [`part_of`] that hash. The serving layer's store shards keys the same
//! way, so a part merges into exactly one shard, without hashing and under
//! one lock, and two engine workers can merge different parts at once.
//!
//! A key may appear in several parts of several tasks (even twice in one
//! [`Partials`]): partials are monoid states and consumers combine them.

use std::hash::BuildHasher;

use crate::partitioner::FixedHasher;
use crate::view::AggValue;

/// Parts per [`Partials`]: the serving layer's shards per view.
pub const PARTS: usize = 64;

/// The hash of a key's bytes: what the fold's tables and the serving
/// layer's shards use, so it is computed once per key and task. Only ever
/// in memory: never stored, so it may change between versions.
///
/// Keys of up to 8 bytes (most words) are one multiply of the key as a
/// word ([`short_word`]) with its length; longer keys go through foldhash.
#[inline]
pub fn key_hash(key: &[u8]) -> u64 {
    hash_and_word(key).0
}

/// [`key_hash`] of `key` and, when the key has at most [`SHORT`] bytes, its
/// [`short_word`] (else 0): a table that keeps short keys as words needs
/// both, and computing the word once saves reading the key twice.
#[inline]
pub(crate) fn hash_and_word(key: &[u8]) -> (u64, u64) {
    if key.len() <= SHORT {
        let word = short_word(key);
        (short_hash(word, key.len()), word)
    } else {
        (
            FixedHasher::with_seed(0x5eed_1a31_4a7e_0001).hash_one(key),
            0,
        )
    }
}

/// Keys of at most this many bytes fit in a [`short_word`].
pub(crate) const SHORT: usize = 8;

/// A key of at most [`SHORT`] bytes as a little-endian word, zero-padded:
/// two overlapping loads instead of a variable-length copy.
#[inline]
pub(crate) fn short_word(key: &[u8]) -> u64 {
    let n = key.len();
    debug_assert!(n <= SHORT);
    if n >= 4 {
        let first = u32::from_le_bytes([key[0], key[1], key[2], key[3]]);
        let last = u32::from_le_bytes([key[n - 4], key[n - 3], key[n - 2], key[n - 1]]);
        // The overlapping bytes are the same in both: or-ing them is exact.
        u64::from(first) | (u64::from(last) << ((n - 4) * 8))
    } else if n > 0 {
        u64::from(key[0])
            | (u64::from(key[n / 2]) << (n / 2 * 8))
            | (u64::from(key[n - 1]) << ((n - 1) * 8))
    } else {
        0
    }
}

/// [`key_hash`] of a key of `len` (at most [`SHORT`]) bytes given as its
/// [`short_word`]: the two halves multiplied, each xor-ed with a constant
/// (the length in the second), and the 128-bit product's halves folded.
#[inline]
pub(crate) fn short_hash(word: u64, len: usize) -> u64 {
    const K0: u64 = 0x243f_6a88_85a3_08d3;
    const K1: u64 = 0x1319_8a2e_0370_7344;
    let lo = (word & 0xffff_ffff) ^ K0;
    let hi = (word >> 32) ^ ((len as u64) << 32) ^ K1;
    let product = u128::from(lo) * u128::from(hi);
    (product as u64) ^ ((product >> 64) as u64)
}

/// The part (and store shard) of a key's hash. Mixed first: hash tables
/// take their buckets from the low bits and their control bytes from the
/// high ones, so neither may be constant within a part.
#[inline]
pub fn part_of(hash: u64) -> usize {
    (hash.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize % PARTS
}

/// The values of one part, as typed as the aggregate allows.
#[derive(Debug, Clone, PartialEq)]
pub enum PartValues {
    /// `count`: plain counts.
    Count(Vec<i64>),
    /// Any aggregate.
    Any(Vec<AggValue>),
}

impl PartValues {
    fn len(&self) -> usize {
        match self {
            PartValues::Count(v) => v.len(),
            PartValues::Any(v) => v.len(),
        }
    }
}

/// The keys and values of one part.
#[derive(Debug, Clone, PartialEq)]
pub struct Part {
    hashes: Vec<u64>,
    /// Key `i` is `keys[ends[i - 1]..ends[i]]` (from 0 for the first).
    ends: Vec<usize>,
    keys: String,
    values: PartValues,
}

impl Part {
    fn new(count: bool) -> Self {
        Part {
            hashes: Vec::new(),
            ends: Vec::new(),
            keys: String::new(),
            values: if count {
                PartValues::Count(Vec::new())
            } else {
                PartValues::Any(Vec::new())
            },
        }
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.hashes.len()
    }

    /// Whether it has no entry.
    pub fn is_empty(&self) -> bool {
        self.hashes.is_empty()
    }

    /// `(hash, key)` of every entry, in order.
    pub fn keys(&self) -> impl ExactSizeIterator<Item = (u64, &str)> + '_ {
        self.hashes.iter().enumerate().map(|(i, &h)| {
            let from = if i == 0 { 0 } else { self.ends[i - 1] };
            (h, &self.keys[from..self.ends[i]])
        })
    }

    /// The values, taken out (the keys stay).
    pub fn take_values(&mut self) -> PartValues {
        let empty = match self.values {
            PartValues::Count(_) => PartValues::Count(Vec::new()),
            PartValues::Any(_) => PartValues::Any(Vec::new()),
        };
        std::mem::replace(&mut self.values, empty)
    }

    fn push_key(&mut self, hash: u64, key: &str) {
        self.hashes.push(hash);
        self.keys.push_str(key);
        self.ends.push(self.keys.len());
    }

    fn push(&mut self, hash: u64, key: &str, value: AggValue) {
        match (&mut self.values, value) {
            (PartValues::Count(v), AggValue::Count(n)) => v.push(n),
            (PartValues::Count(v), other) => {
                // A count part meets another kind: it holds every kind from
                // now on (the consumer reports the mismatch).
                let mut any: Vec<AggValue> = v.drain(..).map(AggValue::Count).collect();
                any.push(other);
                self.values = PartValues::Any(any);
            }
            (PartValues::Any(v), value) => v.push(value),
        }
        self.push_key(hash, key);
    }
}

/// A task's partial aggregates, split into [`PARTS`] parts by key hash;
/// see the module docs.
#[derive(Debug, Clone, PartialEq)]
pub struct Partials {
    parts: Vec<Part>,
}

impl Partials {
    /// No entry.
    pub fn new() -> Self {
        Partials { parts: Vec::new() }
    }

    /// Builds the partials of keys whose values are counts (`count`) or
    /// any kind (`!count`); [`PartialsBuilder::push`] adds entries.
    pub fn builder(count: bool) -> PartialsBuilder {
        PartialsBuilder {
            parts: (0..PARTS).map(|_| Part::new(count)).collect(),
        }
    }

    /// From `(key, value)` pairs, hashing each key.
    pub fn from_rows(rows: impl IntoIterator<Item = (String, AggValue)>) -> Self {
        let mut rows = rows.into_iter().peekable();
        let count = matches!(rows.peek(), Some((_, AggValue::Count(_))));
        let mut b = Partials::builder(count);
        for (key, value) in rows {
            b.push(key_hash(key.as_bytes()), &key, value);
        }
        b.finish()
    }

    /// Number of entries over all parts.
    pub fn len(&self) -> usize {
        self.parts.iter().map(Part::len).sum()
    }

    /// Whether there is no entry.
    pub fn is_empty(&self) -> bool {
        self.parts.iter().all(Part::is_empty)
    }

    /// The parts, taken over: `(part index, part)` of every part with
    /// entries.
    pub fn into_parts(self) -> impl Iterator<Item = (usize, Part)> {
        self.parts
            .into_iter()
            .enumerate()
            .filter(|(_, p)| !p.is_empty())
    }

    /// Every `(key, value)`, part after part.
    pub fn into_rows(self) -> impl Iterator<Item = (String, AggValue)> {
        self.parts.into_iter().flat_map(|mut p| {
            let values: Vec<AggValue> = match p.take_values() {
                PartValues::Count(v) => v.into_iter().map(AggValue::Count).collect(),
                PartValues::Any(v) => v,
            };
            let keys: Vec<String> = p.keys().map(|(_, k)| k.to_owned()).collect();
            keys.into_iter().zip(values)
        })
    }
}

impl Default for Partials {
    fn default() -> Self {
        Partials::new()
    }
}

/// Builds a [`Partials`]; see [`Partials::builder`].
#[derive(Debug)]
pub struct PartialsBuilder {
    parts: Vec<Part>,
}

impl PartialsBuilder {
    /// Adds an entry; `hash` must be [`key_hash`] of `key`.
    #[inline]
    pub fn push(&mut self, hash: u64, key: &str, value: AggValue) {
        debug_assert_eq!(hash, key_hash(key.as_bytes()));
        self.parts[part_of(hash)].push(hash, key, value);
    }

    /// Room for about `keys` entries in all. Each part gets an eighth more
    /// than its share: parts fill unevenly (by about the square root of
    /// their share), and a part that outgrows its room is copied whole.
    pub fn reserve(&mut self, keys: usize, key_bytes: usize) {
        let per = keys / PARTS + keys / PARTS / 8 + 16;
        let bytes = key_bytes / PARTS + key_bytes / PARTS / 8 + 128;
        for p in &mut self.parts {
            p.hashes.reserve(per);
            p.ends.reserve(per);
            p.keys.reserve(bytes);
            match &mut p.values {
                PartValues::Count(v) => v.reserve(per),
                PartValues::Any(v) => v.reserve(per),
            }
        }
    }

    /// The partials.
    pub fn finish(self) -> Partials {
        debug_assert!(self.parts.iter().all(|p| p.values.len() == p.len()));
        Partials { parts: self.parts }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Short keys as words are exact (the table compares keys by them),
    /// and their hashes differ and spread over the parts and a table's
    /// low bits: every key of up to three lowercase letters (18,279), and
    /// keys that differ only in their length or trailing zero bytes.
    #[test]
    fn short_keys_hash_apart_and_spread() {
        let mut keys: Vec<Vec<u8>> = vec![Vec::new()];
        let mut level: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 1..=3 {
            level = level
                .iter()
                .flat_map(|prefix| {
                    (b'a'..=b'z').map(move |c| {
                        let mut k = prefix.clone();
                        k.push(c);
                        k
                    })
                })
                .collect();
            keys.extend(level.iter().cloned());
        }
        for n in 0..=SHORT {
            keys.push(vec![0; n]);
            keys.push(vec![b'a'; n]);
        }
        keys.sort();
        keys.dedup();
        for k in &keys {
            let mut padded = [0u8; 8];
            padded[..k.len()].copy_from_slice(k);
            assert_eq!(short_word(k), u64::from_le_bytes(padded), "{k:?}");
        }
        let hashes: std::collections::HashSet<u64> = keys.iter().map(|k| key_hash(k)).collect();
        assert_eq!(hashes.len(), keys.len(), "a short-key hash collision");
        let mut parts = [0usize; PARTS];
        let mut low = vec![0usize; 1 << 12];
        for h in &hashes {
            parts[part_of(*h)] += 1;
            low[*h as usize & ((1 << 12) - 1)] += 1;
        }
        let mean = keys.len() / PARTS;
        for (p, n) in parts.iter().enumerate() {
            assert!(
                n * 5 > mean * 4 && n * 5 < mean * 6,
                "part {p}: {n} keys, mean {mean}"
            );
        }
        // ~4.5 keys per bucket of the low 12 bits: none far above.
        assert!(low.iter().all(|&n| n <= 20), "{:?}", low.iter().max());
    }

    #[test]
    fn rows_round_trip_split_by_hash() {
        let rows: Vec<(String, AggValue)> = (0..5000)
            .map(|i| (format!("key-{i}"), AggValue::Count(i)))
            .chain([(String::new(), AggValue::Count(-1))])
            .collect();
        let p = Partials::from_rows(rows.clone());
        assert_eq!(p.len(), rows.len());
        for (i, mut part) in p.clone().into_parts() {
            for (h, k) in part.keys() {
                assert_eq!(h, key_hash(k.as_bytes()));
                assert_eq!(part_of(h), i);
            }
            assert!(matches!(part.take_values(), PartValues::Count(_)));
        }
        let used = p.clone().into_parts().count();
        assert!(used > PARTS / 2, "keys spread over only {used} parts");
        let got: BTreeMap<String, AggValue> = p.into_rows().collect();
        let want: BTreeMap<String, AggValue> = rows.into_iter().collect();
        assert_eq!(got, want);
    }

    #[test]
    fn a_count_part_meeting_another_kind_keeps_both() {
        let mut b = Partials::builder(true);
        let h = key_hash(b"a");
        b.push(h, "a", AggValue::Count(2));
        b.push(h, "a", AggValue::Mean(Default::default()));
        b.push(h, "a", AggValue::Count(3));
        let rows: Vec<(String, AggValue)> = b.finish().into_rows().collect();
        assert_eq!(
            rows,
            [
                ("a".to_owned(), AggValue::Count(2)),
                ("a".to_owned(), AggValue::Mean(Default::default())),
                ("a".to_owned(), AggValue::Count(3)),
            ]
        );
    }
}
