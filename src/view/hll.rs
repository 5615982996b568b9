//! HyperLogLog approximate distinct counting.
//!
//! A view may keep one sketch per key, and most keys see only a handful of
//! values, so the sketch starts *sparse* (a sorted list of the non-zero
//! registers, 4 bytes each) and switches to the dense 16 KiB register array
//! only once the sparse list would pass a quarter of that size.
//!
//! Both representations describe the same 16384 logical registers, and
//! everything observable (equality, the estimate, merge results) is defined
//! on those registers alone. Merging is a register-wise max, which is exactly
//! associative, commutative and idempotent, so sketches merged in any order
//! or grouping are equal, not merely close.

use std::fmt;
use std::hash::{BuildHasher, Hasher};

use foldhash::fast::FixedState;
use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::monoid::{Algebra, Monoid};

/// Precision: 2^14 registers give a standard error of 1.04 / 128 ≈ 0.8 %.
const P: u32 = 14;
/// Number of logical registers.
pub const REGISTERS: usize = 1 << P;
/// Largest possible rank: the 50 hash bits left after the index are all zero.
const MAX_RANK: u8 = (64 - P + 1) as u8;
/// Sparse entries (4 bytes each) allowed before densifying: dense size / 4.
const SPARSE_MAX: usize = REGISTERS / 16;
/// Fixed seed ("laminahl"): sketches built by different processes must agree
/// on every hash or merging them would double count.
const SEED: u64 = 0x6c61_6d69_6e61_686c;
/// One domain tag per input kind, so `insert_i64(x)` and `insert_f64(y)`
/// never collide merely because `y.to_bits() == x as u64`.
const TAG_INT: u8 = 1;
const TAG_FLOAT: u8 = 2;
const TAG_STR: u8 = 3;
/// 2^63: floats in `[-2^63, 2^63)` with no fraction are exactly an `i64`.
const TWO_63: f64 = 9_223_372_036_854_775_808.0;

/// A sparse entry packs `index << 8 | rank`, so ordering entries orders them
/// by index and, for one index, by rank (which makes merging a plain max).
fn pack(index: u32, rank: u8) -> u32 {
    (index << 8) | u32::from(rank)
}
fn index_of(entry: u32) -> usize {
    (entry >> 8) as usize
}
fn rank_of(entry: u32) -> u8 {
    (entry & 0xff) as u8
}

/// Bijective bit mixer applied to every hash. foldhash is tuned for hash
/// tables, which need less avalanche than HyperLogLog (whose accuracy assumes
/// every bit is uniform); a bijection can only improve a hash, never lose
/// distinct inputs.
fn finalize(mut x: u64) -> u64 {
    x ^= x >> 30;
    x = x.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x ^= x >> 27;
    x = x.wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[derive(Clone)]
enum Repr {
    /// Non-zero registers only, strictly increasing by index, ranks ≥ 1.
    Sparse(Vec<u32>),
    /// All registers, each ≤ `MAX_RANK`.
    Dense(Box<[u8]>),
}

/// Approximate distinct count with precision 14 (≈ 0.8 % standard error),
/// cheap for small keys (sparse) and bounded (16 KiB) for large ones.
/// Merging is exact: a [`Monoid`] whose laws hold with `==`.
#[derive(Clone)]
pub struct Hll {
    // Invariant kept by every constructor and mutator: sparse exactly when at
    // most `SPARSE_MAX` registers are non-zero. Nothing relies on it for
    // correctness (equality is logical); it only keeps memory predictable.
    repr: Repr,
}

impl Hll {
    /// An empty sketch; allocates nothing until the first insert.
    pub fn new() -> Self {
        Hll {
            repr: Repr::Sparse(Vec::new()),
        }
    }

    /// Adds an already hashed value. The hash is re-mixed first, so even a
    /// weak hash (or a raw id) spreads over the registers.
    #[inline]
    pub fn insert_hash(&mut self, hash: u64) {
        let h = finalize(hash);
        let index = (h >> (64 - P)) as u32;
        // Rank = position of the first 1 bit among the remaining 64 - P bits.
        let rest = h << P;
        let rank = (rest.leading_zeros().min(64 - P) + 1) as u8;
        self.raise(index, rank);
    }

    /// Adds a string value.
    #[inline]
    pub fn insert_str(&mut self, s: &str) {
        let mut h = FixedState::with_seed(SEED).build_hasher();
        h.write_u8(TAG_STR);
        h.write(s.as_bytes());
        self.insert_hash(h.finish());
    }

    /// Adds an integer value.
    #[inline]
    pub fn insert_i64(&mut self, v: i64) {
        let mut h = FixedState::with_seed(SEED).build_hasher();
        h.write_u8(TAG_INT);
        h.write_u64(v as u64);
        self.insert_hash(h.finish());
    }

    /// Adds a number, counting numerically equal values once (see
    /// [`insert_f64`](Self::insert_f64)).
    #[inline]
    pub fn insert_num(&mut self, v: super::num::Num) {
        match v {
            super::num::Num::Int(i) => self.insert_i64(i),
            super::num::Num::Float(f) => self.insert_f64(f),
        }
    }

    /// Adds a float value, counting values that are numerically equal once:
    /// `-0.0` and `0.0` are one value, all NaNs are one value, and integral
    /// floats hash like the equal `i64` (so `1.0` and `1` are one value).
    #[inline]
    pub fn insert_f64(&mut self, v: f64) {
        if v.fract() == 0.0 && (-TWO_63..TWO_63).contains(&v) {
            // Exact conversion; also folds -0.0 into 0.
            return self.insert_i64(v as i64);
        }
        let bits = if v.is_nan() {
            f64::NAN.to_bits()
        } else {
            v.to_bits()
        };
        let mut h = FixedState::with_seed(SEED).build_hasher();
        h.write_u8(TAG_FLOAT);
        h.write_u64(bits);
        self.insert_hash(h.finish());
    }

    /// Estimated number of distinct values inserted (into this sketch or any
    /// merged into it). Exact or off by one for a few values; about 0.8 %
    /// standard error at large cardinalities.
    ///
    /// Uses Ertl's improved estimator ("New cardinality estimation algorithms
    /// for HyperLogLog sketches", 2017) rather than the original raw
    /// estimator with a switch to linear counting at 2.5 m: the original is
    /// biased just above the switch (measured here: about +1.5 % bias and
    /// 2.6 % error at 40k distinct), while this one is nearly unbiased over
    /// the whole range with no thresholds or empirical tables. At small
    /// cardinalities its `sigma` term plays the role of linear counting and
    /// gives the same, exact-for-few-values results.
    pub fn estimate(&self) -> u64 {
        let hist = self.histogram();
        let m = REGISTERS as f64;
        let q = usize::from(MAX_RANK) - 1;
        // Only the register histogram is used, so the estimate cannot depend
        // on representation or iteration order.
        let mut z = m * tau(1.0 - f64::from(hist[q + 1]) / m);
        for &count in hist[1..=q].iter().rev() {
            z = 0.5 * (z + f64::from(count));
        }
        z += m * sigma(f64::from(hist[0]) / m);
        // z is +inf for an empty sketch, giving exactly 0.
        let estimate = m * m / (2.0 * std::f64::consts::LN_2) / z;
        estimate.round() as u64
    }

    /// True when nothing was inserted; cheaper than `estimate() == 0`.
    pub fn is_empty(&self) -> bool {
        matches!(&self.repr, Repr::Sparse(e) if e.is_empty())
    }

    /// Whether the compact representation is in use (for memory diagnostics;
    /// it has no influence on any result).
    pub fn is_sparse(&self) -> bool {
        matches!(self.repr, Repr::Sparse(_))
    }

    /// Heap bytes held, so stores with many keys can account for memory.
    pub fn heap_bytes(&self) -> usize {
        match &self.repr {
            Repr::Sparse(e) => e.capacity() * size_of::<u32>(),
            Repr::Dense(r) => r.len(),
        }
    }

    /// Counts registers per value; the estimate is a function of this alone.
    fn histogram(&self) -> [u32; MAX_RANK as usize + 1] {
        let mut hist = [0u32; MAX_RANK as usize + 1];
        match &self.repr {
            Repr::Sparse(entries) => {
                hist[0] = (REGISTERS - entries.len()) as u32;
                for &e in entries {
                    hist[usize::from(rank_of(e))] += 1;
                }
            }
            Repr::Dense(regs) => {
                for &r in regs.iter() {
                    hist[usize::from(r)] += 1;
                }
            }
        }
        hist
    }

    /// Sets register `index` to `max(current, rank)`.
    fn raise(&mut self, index: u32, rank: u8) {
        let entries = match &mut self.repr {
            Repr::Dense(regs) => {
                let r = &mut regs[index as usize];
                *r = (*r).max(rank);
                return;
            }
            Repr::Sparse(entries) => entries,
        };
        match entries.binary_search_by_key(&index, |&e| e >> 8) {
            Ok(pos) => entries[pos] = entries[pos].max(pack(index, rank)),
            Err(pos) => {
                entries.insert(pos, pack(index, rank));
                if entries.len() > SPARSE_MAX {
                    self.repr = Repr::Dense(to_dense(entries));
                }
            }
        }
    }

    /// Register-wise max with `other`.
    fn merge_from(&mut self, other: &Hll) {
        match (&mut self.repr, &other.repr) {
            (Repr::Dense(a), Repr::Dense(b)) => {
                for (x, &y) in a.iter_mut().zip(b.iter()) {
                    *x = (*x).max(y);
                }
            }
            (Repr::Dense(a), Repr::Sparse(b)) => apply_sparse(a, b),
            (Repr::Sparse(a), Repr::Dense(b)) => {
                let mut regs = b.clone();
                apply_sparse(&mut regs, a);
                self.repr = Repr::Dense(regs);
            }
            (Repr::Sparse(a), Repr::Sparse(b)) => {
                let merged = merge_sparse(a, b);
                self.repr = if merged.len() > SPARSE_MAX {
                    Repr::Dense(to_dense(&merged))
                } else {
                    Repr::Sparse(merged)
                };
            }
        }
    }
}

/// Ertl's `sigma(x) = x + sum_{k>=1} x^(2^k) 2^(k-1)`, the correction for
/// empty registers (`x` = fraction of zero registers). Converges because the
/// terms vanish quickly for `x < 1`; `x == 1` means an empty sketch.
fn sigma(mut x: f64) -> f64 {
    if x == 1.0 {
        return f64::INFINITY;
    }
    let (mut weight, mut z) = (1.0, x);
    loop {
        x *= x;
        let previous = z;
        z += x * weight;
        weight += weight;
        if z == previous {
            return z;
        }
    }
}

/// Ertl's `tau(x)`, the correction for saturated registers (`x` = fraction
/// of registers below the maximum rank); negligible unless the sketch is
/// astronomically full, but it keeps the estimator unbiased there too.
fn tau(mut x: f64) -> f64 {
    if x == 0.0 || x == 1.0 {
        return 0.0;
    }
    let (mut weight, mut z) = (1.0, 1.0 - x);
    loop {
        x = x.sqrt();
        let previous = z;
        weight *= 0.5;
        z -= (1.0 - x) * (1.0 - x) * weight;
        if z == previous {
            return z / 3.0;
        }
    }
}

fn to_dense(entries: &[u32]) -> Box<[u8]> {
    let mut regs = vec![0u8; REGISTERS].into_boxed_slice();
    apply_sparse(&mut regs, entries);
    regs
}

fn apply_sparse(regs: &mut [u8], entries: &[u32]) {
    for &e in entries {
        let r = &mut regs[index_of(e)];
        *r = (*r).max(rank_of(e));
    }
}

/// Union of two sorted entry lists; equal indexes keep the larger rank.
fn merge_sparse(a: &[u32], b: &[u32]) -> Vec<u32> {
    let mut out = Vec::with_capacity(a.len() + b.len());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (x, y) = (a[i], b[j]);
        match (x >> 8).cmp(&(y >> 8)) {
            std::cmp::Ordering::Less => {
                out.push(x);
                i += 1;
            }
            std::cmp::Ordering::Greater => {
                out.push(y);
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                out.push(x.max(y));
                i += 1;
                j += 1;
            }
        }
    }
    out.extend_from_slice(&a[i..]);
    out.extend_from_slice(&b[j..]);
    out
}

impl Default for Hll {
    fn default() -> Self {
        Hll::new()
    }
}

/// Logical equality: same registers, whatever the representations.
impl PartialEq for Hll {
    fn eq(&self, other: &Self) -> bool {
        match (&self.repr, &other.repr) {
            (Repr::Sparse(a), Repr::Sparse(b)) => a == b,
            (Repr::Dense(a), Repr::Dense(b)) => a == b,
            (Repr::Sparse(s), Repr::Dense(d)) | (Repr::Dense(d), Repr::Sparse(s)) => {
                s.iter().all(|&e| d[index_of(e)] == rank_of(e))
                    && d.iter().filter(|&&r| r != 0).count() == s.len()
            }
        }
    }
}
impl Eq for Hll {}

/// Summarized: 16384 registers would drown any assertion message.
impl fmt::Debug for Hll {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hist = self.histogram();
        f.debug_struct("Hll")
            .field("sparse", &self.is_sparse())
            .field("nonzero_registers", &(REGISTERS as u32 - hist[0]))
            .field("estimate", &self.estimate())
            .finish()
    }
}

impl Monoid for Hll {
    fn zero() -> Self {
        Hll::new()
    }
    fn combine(&mut self, other: &Self) {
        self.merge_from(other);
    }
    fn combine_owned(&mut self, other: Self) {
        // Reuse the other sketch's 16 KiB register array instead of cloning it.
        match (&self.repr, other.repr) {
            (Repr::Sparse(mine), Repr::Dense(mut regs)) => {
                apply_sparse(&mut regs, mine);
                self.repr = Repr::Dense(regs);
            }
            (_, repr) => self.merge_from(&Hll { repr }),
        }
    }
    fn algebra() -> Algebra {
        // Idempotent max has no inverse: a value cannot be "un-seen".
        Algebra::Monoid
    }
}

// Wire format: `{"Sparse": [packed entries]}` or `{"Dense": bytes}`. Sparse
// stays sparse (4 bytes per non-zero register); dense uses `serialize_bytes`,
// which binary formats store as raw bytes.
struct RawBytes<'a>(&'a [u8]);

impl Serialize for RawBytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

impl Serialize for Hll {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match &self.repr {
            Repr::Sparse(entries) => s.serialize_newtype_variant("Hll", 0, "Sparse", entries),
            Repr::Dense(regs) => s.serialize_newtype_variant("Hll", 1, "Dense", &RawBytes(regs)),
        }
    }
}

#[derive(Deserialize)]
#[serde(rename = "Hll")]
enum Wire {
    Sparse(Vec<u32>),
    Dense(DenseBytes),
}

/// Register bytes read from either a byte string or a sequence (JSON), capped
/// at `REGISTERS + 1` elements so hostile input cannot force a huge allocation.
struct DenseBytes(Vec<u8>);

impl<'de> Deserialize<'de> for DenseBytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct BytesVisitor;
        impl<'de> Visitor<'de> for BytesVisitor {
            type Value = DenseBytes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{REGISTERS} register bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<DenseBytes, E> {
                Ok(DenseBytes(v.to_vec()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<DenseBytes, A::Error> {
                let mut out = Vec::with_capacity(REGISTERS);
                while let Some(b) = seq.next_element::<u8>()? {
                    if out.len() == REGISTERS {
                        return Err(de::Error::invalid_length(REGISTERS + 1, &self));
                    }
                    out.push(b);
                }
                Ok(DenseBytes(out))
            }
        }
        d.deserialize_bytes(BytesVisitor)
    }
}

impl TryFrom<Wire> for Hll {
    type Error = String;

    fn try_from(wire: Wire) -> Result<Self, String> {
        match wire {
            Wire::Sparse(entries) => {
                for (i, &e) in entries.iter().enumerate() {
                    if index_of(e) >= REGISTERS {
                        return Err(format!(
                            "sparse entry {i}: register index {} out of range",
                            index_of(e)
                        ));
                    }
                    if rank_of(e) == 0 || rank_of(e) > MAX_RANK {
                        return Err(format!(
                            "sparse entry {i}: rank {} out of range",
                            rank_of(e)
                        ));
                    }
                    if i > 0 && index_of(entries[i - 1]) >= index_of(e) {
                        return Err(format!("sparse entry {i}: indexes not strictly increasing"));
                    }
                }
                // Re-establish the canonical representation.
                let repr = if entries.len() > SPARSE_MAX {
                    Repr::Dense(to_dense(&entries))
                } else {
                    Repr::Sparse(entries)
                };
                Ok(Hll { repr })
            }
            Wire::Dense(DenseBytes(regs)) => {
                if regs.len() != REGISTERS {
                    return Err(format!(
                        "dense sketch has {} registers, expected {REGISTERS}",
                        regs.len()
                    ));
                }
                if let Some(pos) = regs.iter().position(|&r| r > MAX_RANK) {
                    return Err(format!("register {pos}: rank {} out of range", regs[pos]));
                }
                let nonzero = regs.iter().filter(|&&r| r != 0).count();
                let repr = if nonzero <= SPARSE_MAX {
                    let entries = (0u32..)
                        .zip(&regs)
                        .filter(|&(_, &r)| r != 0)
                        .map(|(i, &r)| pack(i, r))
                        .collect();
                    Repr::Sparse(entries)
                } else {
                    Repr::Dense(regs.into_boxed_slice())
                };
                Ok(Hll { repr })
            }
        }
    }
}

impl<'de> Deserialize<'de> for Hll {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Hll::try_from(Wire::deserialize(d)?).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::super::monoid::{check_monoid_laws, check_serde_roundtrip, json_roundtrip};
    use super::*;
    use proptest::prelude::*;

    fn of_range(range: std::ops::Range<i64>) -> Hll {
        let mut h = Hll::new();
        range.for_each(|v| h.insert_i64(v));
        h
    }

    fn relative_error(h: &Hll, truth: u64) -> f64 {
        (h.estimate() as f64 - truth as f64).abs() / truth as f64
    }

    /// Same logical registers, forced into the dense representation.
    fn densified(h: &Hll) -> Hll {
        let mut regs = vec![0u8; REGISTERS].into_boxed_slice();
        match &h.repr {
            Repr::Sparse(e) => apply_sparse(&mut regs, e),
            Repr::Dense(r) => regs.copy_from_slice(r),
        }
        Hll {
            repr: Repr::Dense(regs),
        }
    }

    /// Mostly small sparse sketches, sometimes ones straddling the
    /// densify threshold, built from raw hashes (cheap to generate).
    fn sketch() -> impl Strategy<Value = Hll> {
        prop_oneof![
            4 => prop::collection::vec(any::<u64>(), 0..40),
            1 => prop::collection::vec(any::<u64>(), 900..1300),
        ]
        .prop_map(|hashes| {
            let mut h = Hll::new();
            hashes.into_iter().for_each(|x| h.insert_hash(x));
            h
        })
    }

    #[test]
    fn small_cardinalities_are_exact() {
        for n in [0, 1, 2, 3, 10, 50] {
            assert_eq!(of_range(0..n).estimate(), n as u64, "n = {n}");
        }
        let mut strings = Hll::new();
        for s in ["a", "b", "c", "a", "b", ""] {
            strings.insert_str(s);
        }
        assert_eq!(strings.estimate(), 4);
    }

    #[test]
    fn large_cardinalities_are_within_three_percent() {
        // Includes 30k-60k, where the classic estimator's switch from linear
        // counting is biased.
        for n in [
            1_000, 10_000, 30_000, 40_000, 50_000, 60_000, 100_000, 1_000_000,
        ] {
            let h = of_range(0..n);
            let err = relative_error(&h, n as u64);
            assert!(
                err < 0.03,
                "n = {n}: estimate {} ({:.2} %)",
                h.estimate(),
                err * 100.0
            );
        }
        let mut strings = Hll::new();
        (0..100_000).for_each(|i| strings.insert_str(&format!("user-{i}")));
        assert!(relative_error(&strings, 100_000) < 0.03, "{strings:?}");
    }

    #[test]
    fn duplicates_do_not_count() {
        let mut h = of_range(0..5_000);
        let before = h.clone();
        (0..5_000).for_each(|v| h.insert_i64(v));
        assert_eq!(h, before);
    }

    #[test]
    fn float_normalization() {
        let one = |f: fn(&mut Hll)| {
            let mut h = Hll::new();
            f(&mut h);
            h
        };
        assert_eq!(one(|h| h.insert_f64(-0.0)), one(|h| h.insert_f64(0.0)));
        assert_eq!(
            one(|h| h.insert_f64(f64::NAN)),
            one(|h| h.insert_f64(-f64::NAN))
        );
        assert_eq!(one(|h| h.insert_f64(3.0)), one(|h| h.insert_i64(3)));
        assert_eq!(
            one(|h| h.insert_f64(-TWO_63)),
            one(|h| h.insert_i64(i64::MIN))
        );
        assert_ne!(
            one(|h| h.insert_f64(0.5)),
            one(|h| h.insert_i64(0.5f64.to_bits() as i64))
        );
        let mut h = Hll::new();
        for v in [
            0.5,
            1.5,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            2.0,
            2.0,
        ] {
            h.insert_f64(v);
        }
        assert_eq!(h.estimate(), 6);
    }

    #[test]
    fn merging_disjoint_halves_equals_inserting_all() {
        for n in [100, 3_000, 100_000] {
            let all = of_range(0..n);
            let mut left = of_range(0..n / 2);
            left.combine(&of_range(n / 2..n));
            assert_eq!(left, all, "n = {n}");
            assert_eq!(left.estimate(), all.estimate());
            let mut owned = of_range(n / 2..n);
            owned.combine_owned(of_range(0..n / 2));
            assert_eq!(owned, all);
        }
    }

    #[test]
    fn sparse_to_dense_transition_is_continuous() {
        let mut h = Hll::new();
        let mut previous = 0;
        let mut switched_at = None;
        for v in 0..3_000 {
            let was_sparse = h.is_sparse();
            h.insert_i64(v);
            let e = h.estimate();
            assert!(e.abs_diff(previous) <= 2, "jump {previous} -> {e} at {v}");
            assert!(
                relative_error(&h, v as u64 + 1) < 0.02,
                "{h:?} after {}",
                v + 1
            );
            if was_sparse && !h.is_sparse() {
                switched_at = Some(v);
                assert!(h.heap_bytes() == REGISTERS);
            }
            previous = e;
        }
        let at = switched_at.expect("never densified");
        assert!((1_000..1_200).contains(&at), "densified after {at} values");
    }

    #[test]
    fn equality_and_estimate_ignore_representation() {
        for n in [0, 1, 7, 500, 1_024] {
            let sparse = of_range(0..n);
            assert!(sparse.is_sparse());
            let dense = densified(&sparse);
            assert_eq!(sparse, dense);
            assert_eq!(dense, sparse);
            assert_eq!(sparse.estimate(), dense.estimate());
            let mut raised = sparse.clone();
            raised.raise(0, MAX_RANK);
            assert_ne!(dense, raised);
            assert_ne!(raised, dense);
            // Serializing the dense copy restores the canonical sparse form.
            let back = json_roundtrip(&dense).unwrap();
            assert!(back.is_sparse() && back == sparse);
            let mut mixed = dense.clone();
            mixed.combine(&of_range(n..n + 10));
            assert_eq!(mixed, of_range(0..n + 10));
        }
    }

    #[test]
    fn serialized_forms_are_compact() {
        let small = serde_json::to_string(&of_range(0..3)).unwrap();
        assert!(
            small.starts_with("{\"Sparse\":[") && small.len() < 60,
            "{small}"
        );
        let big = of_range(0..50_000);
        let json = serde_json::to_string(&big).unwrap();
        assert!(json.starts_with("{\"Dense\":["));
        assert_eq!(serde_json::from_str::<Hll>(&json).unwrap(), big);
    }

    #[test]
    fn garbage_is_rejected() {
        let dense_with = |value: u8, len: usize| {
            let regs: Vec<String> = (0..len)
                .map(|i| if i == 0 { value } else { 0 }.to_string())
                .collect();
            format!("{{\"Dense\":[{}]}}", regs.join(","))
        };
        let bad = [
            "null".to_string(),
            "[]".to_string(),
            "\"nonsense\"".to_string(),
            "{\"Foo\":[]}".to_string(),
            "{\"Sparse\":\"x\"}".to_string(),
            "{\"Sparse\":[-1]}".to_string(),
            format!("{{\"Sparse\":[{}]}}", pack(REGISTERS as u32, 1)),
            format!("{{\"Sparse\":[{}]}}", u32::MAX),
            format!("{{\"Sparse\":[{}]}}", pack(5, 0)),
            format!("{{\"Sparse\":[{}]}}", pack(5, MAX_RANK + 1)),
            format!("{{\"Sparse\":[{},{}]}}", pack(5, 1), pack(5, 2)),
            format!("{{\"Sparse\":[{},{}]}}", pack(6, 1), pack(5, 1)),
            "{\"Dense\":[1,2,3]}".to_string(),
            "{\"Dense\":\"short\"}".to_string(),
            "{\"Dense\":[256]}".to_string(),
            dense_with(MAX_RANK + 1, REGISTERS),
            dense_with(1, REGISTERS - 1),
            dense_with(1, REGISTERS + 1),
        ];
        for json in &bad {
            assert!(
                serde_json::from_str::<Hll>(json).is_err(),
                "accepted {json:.80}"
            );
        }
        let ok = dense_with(MAX_RANK, REGISTERS);
        assert_eq!(serde_json::from_str::<Hll>(&ok).unwrap().estimate(), 1);
    }

    proptest! {
        #[test]
        fn hll_is_a_monoid(a in sketch(), b in sketch(), c in sketch()) {
            check_monoid_laws(&a, &b, &c).map_err(TestCaseError::fail)?;
            check_serde_roundtrip(&a, json_roundtrip).map_err(TestCaseError::fail)?;
            // Idempotent, and indifferent to the representation of either side.
            let mut aa = a.clone();
            aa.combine(&a);
            prop_assert_eq!(&aa, &a);
            let mut mixed = densified(&a);
            mixed.combine(&b);
            let mut plain = a.clone();
            plain.combine(&b);
            prop_assert_eq!(&mixed, &plain);
            prop_assert_eq!(mixed.estimate(), plain.estimate());
        }

        #[test]
        fn arbitrary_sparse_input_never_panics(entries in prop::collection::vec(any::<u32>(), 0..20)) {
            let json = serde_json::to_string(&entries).unwrap();
            if let Ok(h) = serde_json::from_str::<Hll>(&format!("{{\"Sparse\":{json}}}")) {
                prop_assert_eq!(json_roundtrip(&h).unwrap(), h);
            }
        }

        #[test]
        fn arbitrary_text_never_panics(text in "\\PC{0,40}") {
            let _ = serde_json::from_str::<Hll>(&text);
        }
    }
}
