//! Concrete partial-aggregate states, one per built-in aggregate (Count is a
//! plain `i64`, Distinct is [`super::hll::Hll`]). Each is a [`Monoid`] on its
//! own, so the law tests and any future generic code work on them directly;
//! `AggValue` only dispatches.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use super::monoid::{Algebra, Group, Monoid};
use super::num::Num;

/// Sum of a numeric column, exact for integers and order-independent when
/// integers and floats mix.
///
/// The integer and float contributions are kept apart and only added when
/// the value is read. Folding integers into an `f64` as soon as the first
/// float shows up (the obvious `SumInt`/`SumFloat` promotion) would make the
/// result depend on *when* the float arrived: integers seen before would be
/// summed exactly, those after would be rounded. Here the integer part is an
/// exact `i128` whatever the order — a sum of `i64` values leaves the `i64`
/// range long before it could leave the `i128` one (that takes 2^64 maximal
/// values), so a sum past `i64::MAX` is exact, never wrapped to a negative
/// number; only the float part rounds, and only among floats.
///
/// `floats` counts float contributions (it is a group, unlike a "has floats"
/// flag), so retracting every float row from a window turns the sum back
/// into an exact integer, and `x - x` is exactly the zero.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Sum {
    int: i128,
    float: f64,
    floats: i64,
}

impl Sum {
    /// Adds one value from the column.
    #[inline]
    pub fn add(&mut self, v: Num) {
        match v {
            Num::Int(i) => self.int = self.int.wrapping_add(i128::from(i)),
            Num::Float(f) => {
                self.float += f;
                self.floats = self.floats.wrapping_add(1);
            }
        }
    }

    /// Whether any float is (still) part of the sum: decides how it is shown.
    pub fn is_float(&self) -> bool {
        self.floats != 0
    }

    /// Adds an exact integer (a partial sum of integers).
    #[inline]
    pub fn add_int(&mut self, i: i128) {
        self.int = self.int.wrapping_add(i);
    }

    /// The exact sum while only integers contributed (it may be outside
    /// the `i64` range); `None` once a float is part of it.
    pub fn exact(&self) -> Option<i128> {
        (!self.is_float()).then_some(self.int)
    }

    /// The sum as a [`Num`]: an exact `Int` while only integers contributed
    /// and the sum fits an `i64`, otherwise `Float(int + float)` — rounded,
    /// so where exactness matters beyond `i64` use [`exact`](Self::exact).
    /// Once all floats are retracted, any rounding residue they left in the
    /// float part is dropped with them.
    pub fn value(&self) -> Num {
        match self.exact().map(i64::try_from) {
            Some(Ok(i)) => Num::Int(i),
            _ => Num::Float(self.int as f64 + self.float),
        }
    }
}

/// The exact sum as text (any size), or the float sum.
impl std::fmt::Display for Sum {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.exact() {
            Some(i) => write!(f, "{i}"),
            None => write!(f, "{}", self.value()),
        }
    }
}

/// A group exactly in the integer part and up to rounding in the float part
/// (see the `f64` impl in `monoid`).
impl Monoid for Sum {
    fn zero() -> Self {
        Sum::default()
    }
    fn combine(&mut self, other: &Self) {
        self.int = self.int.wrapping_add(other.int);
        self.float += other.float;
        self.floats = self.floats.wrapping_add(other.floats);
    }
    fn algebra() -> Algebra {
        Algebra::Group
    }
}

impl Group for Sum {
    fn subtract(&mut self, other: &Self) {
        self.int = self.int.wrapping_sub(other.int);
        self.float -= other.float;
        self.floats = self.floats.wrapping_sub(other.floats);
    }
}

/// Arithmetic mean, kept as (sum, count) because averages of averages are
/// wrong while sums and counts merge exactly. The sum is an `f64`, so it is
/// a group up to rounding, and integers beyond 2^53 lose precision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Mean {
    sum: f64,
    count: i64,
}

impl Mean {
    /// Adds one value from the column.
    #[inline]
    pub fn add(&mut self, v: Num) {
        self.sum += v.to_f64();
        self.count = self.count.wrapping_add(1);
    }

    /// The mean, or `None` when no rows are counted (also for the negative
    /// counts that only occur in intermediate window differences).
    pub fn value(&self) -> Option<f64> {
        (self.count > 0).then(|| self.sum / self.count as f64)
    }

    /// Rows contributing to the mean.
    pub fn count(&self) -> i64 {
        self.count
    }
}

impl Monoid for Mean {
    fn zero() -> Self {
        Mean::default()
    }
    fn combine(&mut self, other: &Self) {
        self.sum += other.sum;
        self.count = self.count.wrapping_add(other.count);
    }
    fn algebra() -> Algebra {
        Algebra::Group
    }
}

impl Group for Mean {
    fn subtract(&mut self, other: &Self) {
        self.sum -= other.sum;
        self.count = self.count.wrapping_sub(other.count);
    }
}

/// Keeps whichever of `current` and `candidate` `keep` prefers under the
/// strict order, so ties between e.g. `1` and `1.0` resolve the same way
/// regardless of arrival order.
fn pick(current: Option<Num>, candidate: Num, keep: Ordering) -> Option<Num> {
    match current {
        Some(c) if c.cmp_strict(&candidate) != keep.reverse() => Some(c),
        _ => Some(candidate),
    }
}

/// Smallest value seen, `None` before the first. A semilattice (idempotent
/// monoid): there is no way to retract a minimum, hence no `Group`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Min(Option<Num>);

impl Min {
    /// Adds one value from the column.
    #[inline]
    pub fn add(&mut self, v: Num) {
        self.0 = pick(self.0, v, Ordering::Less);
    }
    /// The minimum, if any value was seen.
    pub fn value(&self) -> Option<Num> {
        self.0
    }
}

impl Monoid for Min {
    fn zero() -> Self {
        Min(None)
    }
    fn combine(&mut self, other: &Self) {
        if let Some(v) = other.0 {
            self.add(v);
        }
    }
}

/// Largest value seen, `None` before the first; NaN counts as the largest
/// (see [`Num`]). Like [`Min`], a monoid but not a group.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Max(Option<Num>);

impl Max {
    /// Adds one value from the column.
    #[inline]
    pub fn add(&mut self, v: Num) {
        self.0 = pick(self.0, v, Ordering::Greater);
    }
    /// The maximum, if any value was seen.
    pub fn value(&self) -> Option<Num> {
        self.0
    }
}

impl Monoid for Max {
    fn zero() -> Self {
        Max(None)
    }
    fn combine(&mut self, other: &Self) {
        if let Some(v) = other.0 {
            self.add(v);
        }
    }
}

/// The `k` largest values seen, with multiplicity, sorted descending.
///
/// Exact: a state is "the top k of the multiset seen", and the top k of a
/// union only needs the top k of each part, so merging is associative and
/// commutative with `==`. Ties between equal numbers of different
/// representations are ordered by `Num::cmp_strict`, so even the stored
/// representation is merge-order independent.
///
/// Merging states with different `k` keeps the *smaller* k: a state built
/// with k = 3 has discarded its 4th largest value, so a merged result can
/// only be exact for the first 3, and truncating to the minimum is also what
/// keeps mixed-k merges associative (keeping the larger k is not: the result
/// would depend on which values were dropped early). Within one view k is
/// constant, so this only matters if a view's k is reconfigured. The
/// identity therefore has an unbounded k (`usize::MAX`) and no items.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "TopKWire")]
pub struct TopK {
    k: usize,
    items: Vec<Num>,
}

impl TopK {
    /// An empty state keeping the `k` largest values.
    pub fn new(k: usize) -> Self {
        TopK {
            k,
            items: Vec::new(),
        }
    }

    /// How many values this state keeps.
    pub fn k(&self) -> usize {
        self.k
    }

    /// The kept values, largest first.
    pub fn items(&self) -> &[Num] {
        &self.items
    }

    /// Adds one value from the column.
    #[inline]
    pub fn add(&mut self, v: Num) {
        // First position whose value is strictly smaller than `v`.
        let pos = self.items.partition_point(|x| x.cmp_strict(&v).is_ge());
        if pos < self.k {
            self.items.insert(pos, v);
            self.items.truncate(self.k);
        }
    }
}

impl Monoid for TopK {
    fn zero() -> Self {
        TopK::new(usize::MAX)
    }
    fn combine(&mut self, other: &Self) {
        let k = self.k.min(other.k);
        let mut merged = Vec::with_capacity(k.min(self.items.len() + other.items.len()));
        let (mut a, mut b) = (self.items.iter().peekable(), other.items.iter().peekable());
        while merged.len() < k {
            let next = match (a.peek(), b.peek()) {
                (Some(x), Some(y)) if x.cmp_strict(y).is_ge() => a.next(),
                (Some(_), Some(_)) => b.next(),
                (Some(_), None) => a.next(),
                (None, _) => b.next(),
            };
            match next {
                Some(&v) => merged.push(v),
                None => break,
            }
        }
        self.k = k;
        self.items = merged;
    }
}

/// Unvalidated wire form; `TryFrom` restores the invariants a hand-edited or
/// corrupted snapshot could break.
#[derive(Deserialize)]
struct TopKWire {
    k: usize,
    items: Vec<Num>,
}

impl TryFrom<TopKWire> for TopK {
    type Error = String;
    fn try_from(w: TopKWire) -> Result<Self, String> {
        if w.items.len() > w.k {
            return Err(format!(
                "top-k state holds {} items but k = {}",
                w.items.len(),
                w.k
            ));
        }
        if w.items.windows(2).any(|p| p[0].cmp_strict(&p[1]).is_lt()) {
            return Err("top-k items are not sorted in descending order".to_string());
        }
        Ok(TopK {
            k: w.k,
            items: w.items,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::monoid::{
        check_group_laws, check_monoid_laws, check_serde_roundtrip, json_roundtrip,
    };
    use super::*;
    use proptest::prelude::*;

    /// Values whose sums are exact in f64 and which survive JSON: small ints
    /// for Mean, any ints elsewhere, dyadic floats with ties to the ints.
    fn exact_num(int_range: std::ops::Range<i64>) -> impl Strategy<Value = Num> {
        prop_oneof![
            int_range.prop_map(Num::Int),
            (-5i64..5).prop_map(Num::Int),
            (-40i64..40).prop_map(|v| Num::Float(v as f64 / 8.0)),
            (-1_000_000i64..1_000_000).prop_map(|v| Num::Float(v as f64 / 8.0)),
            Just(Num::Float(-0.0)),
        ]
    }

    fn rows() -> impl Strategy<Value = Vec<Num>> {
        prop::collection::vec(exact_num(i64::MIN..i64::MAX), 0..12)
    }

    fn build<M: Monoid>(mut state: M, rows: &[Num], add: fn(&mut M, Num)) -> M {
        rows.iter().for_each(|&v| add(&mut state, v));
        state
    }

    fn laws<M: Monoid>(a: &M, b: &M, c: &M) -> Result<(), TestCaseError> {
        check_monoid_laws(a, b, c).map_err(TestCaseError::fail)?;
        check_serde_roundtrip(a, json_roundtrip).map_err(TestCaseError::fail)
    }

    proptest! {
        #[test]
        fn sum_is_a_group(a in rows(), b in rows(), c in rows()) {
            let [a, b, c] = [a, b, c].map(|r| build(Sum::zero(), &r, Sum::add));
            laws(&a, &b, &c)?;
            check_group_laws(&a, &b).map_err(TestCaseError::fail)?;
        }

        #[test]
        fn mean_is_a_group(a in prop::collection::vec(exact_num(-(1 << 30)..1 << 30), 0..12),
                           b in prop::collection::vec(exact_num(-(1 << 30)..1 << 30), 0..12),
                           c in prop::collection::vec(exact_num(-(1 << 30)..1 << 30), 0..12)) {
            let [a, b, c] = [a, b, c].map(|r| build(Mean::zero(), &r, Mean::add));
            laws(&a, &b, &c)?;
            check_group_laws(&a, &b).map_err(TestCaseError::fail)?;
        }

        #[test]
        fn min_and_max_are_monoids(a in rows(), b in rows(), c in rows()) {
            let [x, y, z] = [&a, &b, &c].map(|r| build(Min::zero(), r, Min::add));
            laws(&x, &y, &z)?;
            prop_assert_eq!(x.value(), a.iter().copied().min());
            let [x, y, z] = [&a, &b, &c].map(|r| build(Max::zero(), r, Max::add));
            laws(&x, &y, &z)?;
            prop_assert_eq!(x.value(), a.iter().copied().max());
            // Ties resolve canonically: the serialized form is order-independent too.
            let mut xy = x;
            xy.combine(&y);
            let mut yx = y;
            yx.combine(&x);
            prop_assert_eq!(serde_json::to_string(&xy).unwrap(), serde_json::to_string(&yx).unwrap());
        }

        #[test]
        fn top_k_is_a_monoid(k in 0usize..6, a in rows(), b in rows(), c in rows()) {
            let [x, y, z] = [&a, &b, &c].map(|r| build(TopK::new(k), r, TopK::add));
            laws(&x, &y, &z)?;
            let mut expected = a.clone();
            expected.sort_by(|p, q| q.cmp_strict(p));
            expected.truncate(k);
            prop_assert_eq!(x.items(), &expected[..]);
            let mut xy = x.clone();
            xy.combine(&y);
            let mut yx = y.clone();
            yx.combine(&x);
            prop_assert_eq!(serde_json::to_string(&xy).unwrap(), serde_json::to_string(&yx).unwrap());
        }

        #[test]
        fn top_k_with_mixed_k_stays_associative(ks in prop::array::uniform3(0usize..6),
                                               a in rows(), b in rows(), c in rows()) {
            let x = build(TopK::new(ks[0]), &a, TopK::add);
            let y = build(TopK::new(ks[1]), &b, TopK::add);
            let z = build(TopK::new(ks[2]), &c, TopK::add);
            laws(&x, &y, &z)?;
        }
    }

    #[test]
    fn sum_promotion_is_order_independent() {
        let values = [
            Num::Int(i64::MAX),
            Num::Float(0.5),
            Num::Int(1),
            Num::Int(-1),
        ];
        let forward = build(Sum::zero(), &values, Sum::add);
        let mut reversed = values;
        reversed.reverse();
        assert_eq!(forward, build(Sum::zero(), &reversed, Sum::add));
        assert_eq!(forward.value(), Num::Float(i64::MAX as f64 + 0.5));
        // Retracting the only float makes the sum an exact integer again.
        let mut back = forward;
        back.subtract(&build(Sum::zero(), &[Num::Float(0.5)], Sum::add));
        assert_eq!(back.value(), Num::Int(i64::MAX));
        assert!(!back.is_float());
        assert_eq!(Sum::zero().value(), Num::Int(0));
    }

    #[test]
    fn mean_and_extrema_values() {
        let rows = [Num::Int(1), Num::Float(2.5), Num::Int(6)];
        assert_eq!(
            build(Mean::zero(), &rows, Mean::add).value(),
            Some(9.5 / 3.0)
        );
        assert_eq!(Mean::zero().value(), None);
        assert_eq!(
            build(Max::zero(), &rows, Max::add).value(),
            Some(Num::Int(6))
        );
        let with_nan = [Num::Float(f64::NAN), Num::Int(3)];
        assert!(
            build(Max::zero(), &with_nan, Max::add)
                .value()
                .unwrap()
                .to_f64()
                .is_nan()
        );
        assert_eq!(
            build(Min::zero(), &with_nan, Min::add).value(),
            Some(Num::Int(3))
        );
    }

    #[test]
    fn top_k_keeps_duplicates_and_rejects_bad_snapshots() {
        let t = build(TopK::new(3), &[1, 5, 5, 2, 5, 4].map(Num::Int), TopK::add);
        assert_eq!(t.items(), &[5, 5, 5].map(Num::Int));
        assert!(
            build(TopK::new(0), &[Num::Int(1)], TopK::add)
                .items()
                .is_empty()
        );
        for bad in [
            r#"{"k":1,"items":[1,2]}"#,
            r#"{"k":3,"items":[1,2]}"#,
            r#"{"k":-1,"items":[]}"#,
            "[]",
            r#"{"k":3,"items":[2,2.0]}"#,
        ] {
            assert!(serde_json::from_str::<TopK>(bad).is_err(), "{bad}");
        }
        let ok: TopK = serde_json::from_str(r#"{"k":3,"items":[2.0,2,1]}"#).unwrap();
        assert_eq!(ok.items().len(), 3);
    }
}
