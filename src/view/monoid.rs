//! The algebra behind partial aggregation.
//!
//! Views are computed as partial aggregates per partition (batch layer) or
//! per micro-batch (speed layer) and merged later, in whatever order and
//! grouping the scheduler happens to produce. That is only correct when the
//! merge is associative and commutative and has an identity, i.e. when the
//! partial-aggregate type is a commutative monoid. Windows additionally want
//! to *retract* old data instead of recomputing, which needs inverses: a group.
//!
//! The traits here only state the promises; the `check_*` helpers let tests
//! (ours and those of other modules) verify them on concrete values.

use std::fmt::Debug;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Which laws a partial-aggregate type satisfies, so the engine can decide at
/// plan time whether a window may retract (Group) or must recompute (Monoid).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Algebra {
    /// Associative merge only: no usable identity, so empty partitions need special casing.
    Semigroup,
    /// Associative, commutative merge with an identity: safe for any merge tree.
    Monoid,
    /// A monoid with inverses: sliding windows may subtract expired data.
    Group,
}

/// A commutative monoid: partial aggregates that merge exactly in any order
/// and grouping, so the result never depends on partitioning or scheduling.
pub trait Monoid:
    Clone + Debug + PartialEq + Send + Sync + Serialize + DeserializeOwned + 'static
{
    /// The identity: `combine(x, zero) == x`. Empty partitions produce it.
    fn zero() -> Self;
    /// Merge `other` into `self`. Must be associative and commutative.
    fn combine(&mut self, other: &Self);
    /// Merge taking ownership (override when it saves clones).
    fn combine_owned(&mut self, other: Self) {
        self.combine(&other)
    }
    /// The laws this type promises; default Monoid.
    fn algebra() -> Algebra {
        Algebra::Monoid
    }
}

/// A monoid with inverses: `subtract(x, x) == zero`. Lets windows retract
/// expired data in O(1) instead of re-aggregating what is still inside.
pub trait Group: Monoid {
    /// Remove the contribution of `other` from `self`.
    fn subtract(&mut self, other: &Self);
}

// Counts and integer sums use wrapping arithmetic on purpose: `Z / 2^64` is a
// genuine group, so associativity, commutativity and `x - x == 0` hold
// *exactly*, even on overflow. Checked or saturating arithmetic would break
// associativity at the boundary, and a window that overflows and later
// retracts would end up wrong instead of back in range.
impl Monoid for i64 {
    fn zero() -> Self {
        0
    }
    fn combine(&mut self, other: &Self) {
        *self = self.wrapping_add(*other);
    }
    fn algebra() -> Algebra {
        Algebra::Group
    }
}

impl Group for i64 {
    fn subtract(&mut self, other: &Self) {
        *self = self.wrapping_sub(*other);
    }
}

/// Floating-point sum. Declared a [`Algebra::Group`] because retraction is
/// what windows need, but the laws hold only up to rounding: `(a + b) + c`
/// may differ from `a + (b + c)` in the last bits, and `(a + b) - b` may not
/// give back `a`. Non-finite values (NaN, infinities) are absorbing and cannot
/// be retracted at all. Exact law tests must use values whose sums are exact
/// (e.g. integers below 2^53 or dyadic fractions).
impl Monoid for f64 {
    fn zero() -> Self {
        0.0
    }
    fn combine(&mut self, other: &Self) {
        *self += *other;
    }
    fn algebra() -> Algebra {
        Algebra::Group
    }
}

impl Group for f64 {
    fn subtract(&mut self, other: &Self) {
        *self -= *other;
    }
}

fn combined<M: Monoid>(a: &M, b: &M) -> M {
    let mut out = a.clone();
    out.combine(b);
    out
}

/// Checks identity (both sides), associativity, commutativity and that
/// `combine_owned` agrees with `combine` on the given values. Returns a
/// description of the first violated law so property tests report *which*
/// law broke, not just that something did.
pub fn check_monoid_laws<M: Monoid>(a: &M, b: &M, c: &M) -> Result<(), String> {
    let zero = M::zero();
    for (name, x) in [("a", a), ("b", b), ("c", c)] {
        let right = combined(x, &zero);
        if &right != x {
            return Err(format!(
                "right identity fails for {name}: {x:?} + 0 = {right:?}"
            ));
        }
        let left = combined(&zero, x);
        if &left != x {
            return Err(format!(
                "left identity fails for {name}: 0 + {x:?} = {left:?}"
            ));
        }
    }
    let ab_c = combined(&combined(a, b), c);
    let a_bc = combined(a, &combined(b, c));
    if ab_c != a_bc {
        return Err(format!(
            "associativity fails: (a+b)+c = {ab_c:?}, a+(b+c) = {a_bc:?}"
        ));
    }
    let ab = combined(a, b);
    let ba = combined(b, a);
    if ab != ba {
        return Err(format!("commutativity fails: a+b = {ab:?}, b+a = {ba:?}"));
    }
    let mut owned = a.clone();
    owned.combine_owned(b.clone());
    if owned != ab {
        return Err(format!(
            "combine_owned disagrees: {owned:?} vs combine {ab:?}"
        ));
    }
    Ok(())
}

/// Checks the inverse laws a window relies on when it retracts data:
/// `a - a == zero` and `(a + b) - b == a`.
pub fn check_group_laws<G: Group>(a: &G, b: &G) -> Result<(), String> {
    let mut aa = a.clone();
    aa.subtract(a);
    if aa != G::zero() {
        return Err(format!("a - a != zero: {a:?} - itself = {aa:?}"));
    }
    let mut back = combined(a, b);
    back.subtract(b);
    if &back != a {
        return Err(format!(
            "(a + b) - b != a: a = {a:?}, b = {b:?}, got {back:?}"
        ));
    }
    Ok(())
}

/// Checks that a value survives a serialization round trip unchanged, since
/// partial aggregates are shipped between workers and persisted in snapshots.
/// The codec is a parameter so this stays independent of any format crate:
/// pass e.g. `|v| serde_json::to_string(v).and_then(|s| serde_json::from_str(&s))`.
pub fn check_serde_roundtrip<M, E, F>(value: &M, roundtrip: F) -> Result<(), String>
where
    M: Monoid,
    E: std::fmt::Display,
    F: FnOnce(&M) -> Result<M, E>,
{
    match roundtrip(value) {
        Ok(back) if &back == value => Ok(()),
        Ok(back) => Err(format!("round trip changed {value:?} into {back:?}")),
        Err(e) => Err(format!("round trip of {value:?} failed: {e}")),
    }
}

/// JSON round trip used by the tests of every aggregate module.
#[cfg(test)]
pub(crate) fn json_roundtrip<T>(value: &T) -> Result<T, serde_json::Error>
where
    T: Serialize + DeserializeOwned,
{
    serde_json::to_string(value).and_then(|s| serde_json::from_str(&s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Integer-valued floats below 2^40: sums of three stay exact, so the
    /// "up to rounding" laws can be checked with `==`.
    fn exact_f64() -> impl Strategy<Value = f64> {
        (-(1i64 << 40)..(1i64 << 40)).prop_map(|v| v as f64)
    }

    proptest! {
        #[test]
        fn i64_is_a_group(a: i64, b: i64, c: i64) {
            check_monoid_laws(&a, &b, &c).map_err(TestCaseError::fail)?;
            check_group_laws(&a, &b).map_err(TestCaseError::fail)?;
            check_serde_roundtrip(&a, json_roundtrip).map_err(TestCaseError::fail)?;
        }

        #[test]
        fn f64_is_a_group_on_exact_values(a in exact_f64(), b in exact_f64(), c in exact_f64()) {
            check_monoid_laws(&a, &b, &c).map_err(TestCaseError::fail)?;
            check_group_laws(&a, &b).map_err(TestCaseError::fail)?;
            check_serde_roundtrip(&a, json_roundtrip).map_err(TestCaseError::fail)?;
        }
    }

    #[test]
    fn declared_algebras() {
        assert_eq!(i64::algebra(), Algebra::Group);
        assert_eq!(f64::algebra(), Algebra::Group);
    }

    #[test]
    fn wrapping_overflow_still_retracts_exactly() {
        let mut x = i64::MAX;
        x.combine(&1);
        assert_eq!(x, i64::MIN);
        x.subtract(&1);
        assert_eq!(x, i64::MAX);
    }

    #[test]
    fn float_rounding_is_why_f64_laws_are_approximate() {
        // Documents the caveat rather than a bug: the law checker notices it.
        let (a, b, c) = (0.1, 0.2, 0.3);
        assert!(check_monoid_laws(&a, &b, &c).is_err());
    }

    #[test]
    fn checkers_report_violations() {
        /// Deliberately broken "monoid": subtraction is neither associative nor commutative.
        #[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
        struct Minus(i64);
        impl Monoid for Minus {
            fn zero() -> Self {
                Minus(0)
            }
            fn combine(&mut self, other: &Self) {
                self.0 -= other.0;
            }
        }
        let err = check_monoid_laws(&Minus(1), &Minus(2), &Minus(3)).unwrap_err();
        assert!(err.contains("identity"), "{err}");
        let bad = check_serde_roundtrip(&Minus(1), |_| Ok::<_, String>(Minus(2)));
        assert!(bad.unwrap_err().contains("changed"));
    }
}
