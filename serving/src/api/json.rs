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

/// A stored operator state (CBOR, any serde type) as JSON: integers as
/// numbers (beyond 64 bits as strings of their digits), floats as numbers
/// (NaN and infinities as `null`), byte strings as arrays of numbers, maps
/// as objects (keys that are not text as their JSON text).
pub fn from_cbor(v: &ciborium::Value) -> Value {
    use ciborium::Value as C;
    match v {
        C::Integer(i) => {
            let i = i128::from(*i);
            i64::try_from(i)
                .map(|n| json!(n))
                .or_else(|_| u64::try_from(i).map(|n| json!(n)))
                .unwrap_or_else(|_| json!(i.to_string()))
        }
        C::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        C::Text(t) => json!(t),
        C::Bool(b) => json!(b),
        C::Null => Value::Null,
        C::Bytes(b) => json!(b),
        C::Array(items) => Value::Array(items.iter().map(from_cbor).collect()),
        C::Map(entries) => Value::Object(
            entries
                .iter()
                .map(|(k, v)| {
                    let key = match k {
                        C::Text(t) => t.clone(),
                        other => from_cbor(other).to_string(),
                    };
                    (key, from_cbor(v))
                })
                .collect(),
        ),
        C::Tag(_, inner) => from_cbor(inner),
        _ => Value::Null,
    }
}

/// The parts of a stored `[state, batch time ms]` entry.
pub fn stored_state(bytes: &[u8]) -> Option<(Value, Option<i64>)> {
    let v: ciborium::Value = ciborium::from_reader(bytes).ok()?;
    match v {
        ciborium::Value::Array(mut parts) if parts.len() == 2 => {
            let time = parts
                .pop()
                .and_then(|t| t.as_integer())
                .and_then(|i| i64::try_from(i128::from(i)).ok());
            Some((from_cbor(&parts[0]), time))
        }
        _ => None,
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

    #[test]
    fn stored_states_become_json() {
        #[derive(serde::Serialize)]
        struct Session {
            clicks: u32,
            pages: Vec<String>,
            score: f64,
        }
        let s = Session {
            clicks: 3,
            pages: vec!["/a".into()],
            score: f64::NAN,
        };
        let bytes = lamina::streaming::durable::encode(&(&s, 1000i64)).unwrap();
        let (value, time) = stored_state(&bytes).unwrap();
        assert_eq!(value, json!({"clicks": 3, "pages": ["/a"], "score": null}));
        assert_eq!(time, Some(1000));
        let big = lamina::streaming::durable::encode(&(u64::MAX, 5i64)).unwrap();
        assert_eq!(stored_state(&big).unwrap().0, json!(u64::MAX));
        let low = -(1i128 << 64);
        let neg = lamina::streaming::durable::encode(&(low, 5i64)).unwrap();
        assert_eq!(stored_state(&neg).unwrap().0, json!(low.to_string()));
        assert!(stored_state(b"\xff").is_none());
    }
}
