//! How partial aggregates look in REST answers.

use lamina::view::{AggValue, Num};
use serde_json::{Value, json};

fn num(n: Num) -> Value {
    match n {
        Num::Int(i) => json!(i),
        // JSON has no NaN or infinity: those become null.
        Num::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
    }
}

/// The user-facing value of a partial aggregate: a number for count, sum,
/// mean, min, max and distinct (the estimate), a list for top-k, `null` when
/// there is nothing to show (the min of no values).
pub fn value(v: &AggValue) -> Value {
    match v {
        AggValue::Count(c) => json!(c),
        // Exact at any size: a sum beyond the i64 range (which JSON
        // readers often cannot hold either) is its exact decimal string.
        AggValue::Sum(s) => match s.exact() {
            Some(i) => i64::try_from(i).map_or_else(|_| json!(i.to_string()), |v| json!(v)),
            None => num(s.value()),
        },
        AggValue::Min(m) => m.value().map_or(Value::Null, num),
        AggValue::Max(m) => m.value().map_or(Value::Null, num),
        AggValue::Mean(m) => m.value().map_or(Value::Null, |f| num(Num::Float(f))),
        AggValue::Distinct(h) => json!(h.estimate()),
        AggValue::TopK(t) => Value::Array(t.items().iter().map(|&n| num(n)).collect()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lamina::view::AggregateKind;

    #[test]
    fn values_render_as_plain_json() {
        assert_eq!(value(&AggValue::Count(3)), json!(3));
        let mut s = AggregateKind::Sum.zero();
        s.update_num(Num::Int(2));
        assert_eq!(value(&s), json!(2));
        s.update_num(Num::Float(0.5));
        assert_eq!(value(&s), json!(2.5));
        // Regression: a sum past i64::MAX wrapped to a negative number.
        let mut big = AggregateKind::Sum.zero();
        big.update_num(Num::Int(i64::MAX));
        big.update_num(Num::Int(1));
        assert_eq!(value(&big), json!("9223372036854775808"));
        assert_eq!(big.display(), "9223372036854775808");
        let mut back = big.clone();
        back.update_num(Num::Int(-1));
        assert_eq!(value(&back), json!(i64::MAX));
        assert_eq!(value(&AggregateKind::Min.zero()), Value::Null);
        let mut m = AggregateKind::Max.zero();
        m.update_num(Num::Float(f64::NAN));
        assert_eq!(value(&m), Value::Null, "NaN is not JSON");
        let mut t = AggregateKind::TopK { k: 2 }.zero();
        for n in [1, 5, 3] {
            t.update_num(Num::Int(n));
        }
        assert_eq!(value(&t), json!([5, 3]));
    }
}
