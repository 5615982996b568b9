//! Numbers read from columns, with one total order across integers and floats.

use std::cmp::Ordering;
use std::fmt;

use serde::{Deserialize, Serialize};

/// 2^63: every float in `[-2^63, 2^63)` truncates to an exact `i64`.
const TWO_63: f64 = 9_223_372_036_854_775_808.0;

/// A number read from a column. Integers stay exact (no detour through `f64`,
/// which cannot represent every `i64`), so counts, ids and sums of integer
/// columns are never silently rounded.
///
/// # Order and equality
///
/// `Num` is totally ordered by *numeric value*, compared exactly, so `Ord`
/// is a genuine total order (transitive, which sorting and min/max rely on):
///
/// * `Int` vs `Int` compares as `i64`; `Float` vs `Float` as `f64`.
/// * `Int` vs `Float` compares the exact mathematical values, never by
///   converting the integer to `f64` (that would make `Float(2^53)` equal to
///   both `Int(2^53)` and `Int(2^53 + 1)` while those differ: not transitive).
/// * `-0.0 == 0.0 == Int(0)`, and `Int(1) == Float(1.0)`: equality means
///   "compares `Equal`", i.e. the same number.
/// * NaN (any sign or payload) equals NaN and is greater than everything,
///   including `+inf`, as in Spark SQL; `-inf` is below every other value.
///
/// Aggregates that keep values (min, max, top-k) break ties between equal
/// numbers with different representations deterministically (see
/// `cmp_strict`), so merge results do not depend on merge order even in
/// their serialized form.
///
/// Serialized untagged: `Int` as a JSON integer, `Float` as a JSON float
/// (`1.0`, which reads back as `Float`). JSON has no NaN or infinities, so
/// non-finite floats cannot be written as JSON.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Num {
    /// An exact integer.
    Int(i64),
    /// A floating-point value.
    Float(f64),
}

impl Num {
    /// The nearest `f64`, for consumers that only need magnitude (ranking,
    /// means). Integers beyond 2^53 round.
    pub fn to_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    /// Refines the numeric order into one where only identical values are
    /// `Equal`: among numerically equal values `Int` sorts below `Float`, and
    /// floats fall back to `f64::total_cmp` (`-0.0` < `0.0`, NaN payloads).
    /// Used to pick a canonical winner among ties so that min/max/top-k are
    /// exactly commutative, representation included.
    pub(super) fn cmp_strict(&self, other: &Num) -> Ordering {
        self.cmp(other).then_with(|| match (self, other) {
            (Num::Int(_), Num::Int(_)) => Ordering::Equal,
            (Num::Int(_), Num::Float(_)) => Ordering::Less,
            (Num::Float(_), Num::Int(_)) => Ordering::Greater,
            (Num::Float(a), Num::Float(b)) => a.total_cmp(b),
        })
    }
}

/// Numeric order of two floats, with all NaNs equal and above everything.
fn cmp_floats(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        // Neither is NaN, so these comparisons are total (and -0.0 == 0.0).
        (false, false) if a < b => Ordering::Less,
        (false, false) if a > b => Ordering::Greater,
        (false, false) => Ordering::Equal,
    }
}

/// Exact comparison of an integer with a float, without rounding either.
fn cmp_int_float(i: i64, f: f64) -> Ordering {
    if f.is_nan() || f >= TWO_63 {
        return Ordering::Less;
    }
    if f < -TWO_63 {
        return Ordering::Greater;
    }
    // Now f is in [-2^63, 2^63), so its integer part converts exactly and
    // the fractional part decides only when the integer parts agree.
    let whole = f.trunc();
    i.cmp(&(whole as i64))
        .then_with(|| cmp_floats(0.0, f - whole))
}

impl Ord for Num {
    fn cmp(&self, other: &Self) -> Ordering {
        match (*self, *other) {
            (Num::Int(a), Num::Int(b)) => a.cmp(&b),
            (Num::Float(a), Num::Float(b)) => cmp_floats(a, b),
            (Num::Int(a), Num::Float(b)) => cmp_int_float(a, b),
            (Num::Float(a), Num::Int(b)) => cmp_int_float(b, a).reverse(),
        }
    }
}

impl PartialOrd for Num {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

/// Numeric equality, consistent with `Ord` (see the type's documentation).
impl PartialEq for Num {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Num {}

impl From<i64> for Num {
    fn from(v: i64) -> Self {
        Num::Int(v)
    }
}

impl From<f64> for Num {
    fn from(v: f64) -> Self {
        Num::Float(v)
    }
}

/// Integers print bare, floats always with a fraction or exponent (`1.0`),
/// so the output says which kind of value it was.
impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Num::Int(i) => write!(f, "{i}"),
            Num::Float(x) => write!(f, "{x:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const P53: i64 = 1 << 53;

    fn specials() -> Vec<Num> {
        let ints = [
            0,
            1,
            -1,
            P53,
            P53 + 1,
            P53 - 1,
            i64::MAX,
            i64::MIN,
            i64::MIN + 1,
        ];
        let floats = [
            0.0,
            -0.0,
            1.0,
            0.5,
            -0.5,
            P53 as f64,
            (P53 + 2) as f64,
            TWO_63,
            -TWO_63,
            i64::MAX as f64,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::NAN,
            -f64::NAN,
            f64::MIN_POSITIVE,
            -1e300,
        ];
        ints.into_iter()
            .map(Num::Int)
            .chain(floats.into_iter().map(Num::Float))
            .collect()
    }

    fn num() -> impl Strategy<Value = Num> {
        prop_oneof![
            any::<i64>().prop_map(Num::Int),
            any::<f64>().prop_map(Num::Float),
            (-5i64..5).prop_map(Num::Int),
            (-40i64..40).prop_map(|v| Num::Float(v as f64 / 8.0)),
            prop::sample::select(specials()),
        ]
    }

    fn check_order(a: Num, b: Num, c: Num) -> Result<(), String> {
        let ab = a.cmp(&b);
        if ab != b.cmp(&a).reverse() {
            return Err(format!("not antisymmetric: {a:?} {b:?}"));
        }
        if ab.is_le() && b.cmp(&c).is_le() && !a.cmp(&c).is_le() {
            return Err(format!("not transitive: {a:?} <= {b:?} <= {c:?}"));
        }
        if (a == b) != ab.is_eq() || a.partial_cmp(&b) != Some(ab) {
            return Err(format!("Eq/PartialOrd disagree with Ord: {a:?} {b:?}"));
        }
        let strict = a.cmp_strict(&b);
        if strict != b.cmp_strict(&a).reverse() || (!ab.is_eq() && strict != ab) {
            return Err(format!("cmp_strict does not refine cmp: {a:?} {b:?}"));
        }
        if strict.is_le() && b.cmp_strict(&c).is_le() && !a.cmp_strict(&c).is_le() {
            return Err(format!("cmp_strict not transitive: {a:?} {b:?} {c:?}"));
        }
        Ok(())
    }

    #[test]
    fn order_laws_on_all_special_triples() {
        let s = specials();
        for &a in &s {
            for &b in &s {
                for &c in &s {
                    check_order(a, b, c).unwrap();
                }
            }
        }
    }

    #[test]
    fn mixed_comparisons_are_exact() {
        use Num::{Float, Int};
        assert!(Int(P53 + 1) > Float(P53 as f64));
        assert_eq!(Int(P53), Float(P53 as f64));
        assert!(Int(i64::MAX) < Float(TWO_63));
        assert_eq!(Int(i64::MIN), Float(-TWO_63));
        assert!(Int(0) > Float(-0.5) && Int(0) < Float(0.5) && Int(-1) < Float(-0.5));
        assert_eq!(Int(0), Float(-0.0));
        assert_eq!(Float(0.0), Float(-0.0));
        assert_eq!(Float(f64::NAN), Float(-f64::NAN));
        assert!(Float(f64::NAN) > Float(f64::INFINITY) && Float(f64::NAN) > Int(i64::MAX));
        assert!(Float(f64::NEG_INFINITY) < Int(i64::MIN));
        assert_eq!(Int(1).cmp_strict(&Float(1.0)), Ordering::Less);
        assert_eq!(Float(-0.0).cmp_strict(&Float(0.0)), Ordering::Less);
    }

    #[test]
    fn display_shows_the_kind() {
        assert_eq!(Num::Int(3).to_string(), "3");
        assert_eq!(Num::Float(3.0).to_string(), "3.0");
        assert_eq!(Num::Float(f64::NAN).to_string(), "NaN");
    }

    #[test]
    fn short_floats_round_trip_exactly_through_json() {
        for v in [0.1, -0.0, 2.5e-8, 1e300, 123.456, -7.0] {
            let back: Num =
                serde_json::from_str(&serde_json::to_string(&Num::Float(v)).unwrap()).unwrap();
            assert_eq!(Num::Float(v).cmp_strict(&back), Ordering::Equal, "{v}");
        }
    }

    proptest! {
        #[test]
        fn order_laws(a in num(), b in num(), c in num()) {
            check_order(a, b, c).map_err(TestCaseError::fail)?;
        }

        #[test]
        fn json_keeps_value_and_kind(a in num()) {
            // JSON cannot carry non-finite floats; everything else must keep
            // its kind, and its value up to a few ulps: serde_json's default
            // float parser (without the `float_roundtrip` feature) is only
            // best-effort on 17-digit mantissas. Short decimals are exact.
            prop_assume!(a.to_f64().is_finite());
            let back: Num = serde_json::from_str(&serde_json::to_string(&a).unwrap()).unwrap();
            match (a, back) {
                (Num::Int(x), Num::Int(y)) => prop_assert_eq!(x, y),
                (Num::Float(x), Num::Float(y)) => {
                    prop_assert!((x - y).abs() <= x.abs() * 1e-14 + 1e-310, "{:?} -> {:?}", x, y);
                }
                _ => prop_assert!(false, "kind changed: {:?} -> {:?}", a, back),
            }
        }
    }
}
