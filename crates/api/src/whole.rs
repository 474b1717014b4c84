//! Integers in request bodies, read as JSON Schema reads `integer`: any number with no
//! fraction, so `5.0` is 5.
//!
//! The OpenAPI document says `integer` for these fields, and JSON Schema counts `5.0` as one;
//! a client (or a fuzzer) that writes whole numbers as floats is within the document, so the
//! server takes them rather than the document claiming less than JSON Schema can say. A
//! fraction, a negative number or one past the field's type is still refused.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};

/// A whole number that fits in a `u64`.
struct Whole(u64);

impl<'de> de::Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Whole, D::Error> {
        d.deserialize_any(WholeVisitor)
    }
}

struct WholeVisitor;

/// 2^64, the first float past `u64::MAX`.
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;

impl Visitor<'_> for WholeVisitor {
    type Value = Whole;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a whole number, not negative")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Whole, E> {
        Ok(Whole(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Whole, E> {
        u64::try_from(v)
            .map(Whole)
            .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Whole, E> {
        if v.fract() == 0.0 && (0.0..TWO_POW_64).contains(&v) {
            // Whole and in range, so the conversion is exact.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Ok(Whole(v as u64))
        } else {
            Err(E::invalid_value(de::Unexpected::Float(v), &self))
        }
    }
}

fn narrow<T: TryFrom<u64>, E: de::Error>(v: u64) -> Result<T, E> {
    T::try_from(v).map_err(|_| {
        E::invalid_value(
            de::Unexpected::Unsigned(v),
            &format!("at most {}", std::any::type_name::<T>()).as_str(),
        )
    })
}

/// `#[serde(deserialize_with = "whole::u32")]`.
pub fn u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let Whole(v) = de::Deserialize::deserialize(d)?;
    narrow(v)
}

/// `#[serde(default, deserialize_with = "whole::option_u32")]`.
pub fn option_u32<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    let v: Option<Whole> = de::Deserialize::deserialize(d)?;
    v.map(|Whole(v)| narrow(v)).transpose()
}

/// `#[serde(default, deserialize_with = "whole::option_u64")]`.
pub fn option_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v: Option<Whole> = de::Deserialize::deserialize(d)?;
    Ok(v.map(|Whole(v)| v))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    struct Body {
        #[serde(deserialize_with = "super::u32")]
        n: u32,
        #[serde(default, deserialize_with = "super::option_u64")]
        m: Option<u64>,
    }

    fn read(json: &str) -> Result<Body, String> {
        serde_json::from_str(json).map_err(|e| e.to_string())
    }

    #[test]
    fn a_whole_float_is_an_integer() {
        let b = read(r#"{"n": 5.0, "m": 1e3}"#).unwrap();
        assert_eq!((b.n, b.m), (5, Some(1000)));
        let b = read(r#"{"n": 7}"#).unwrap();
        assert_eq!((b.n, b.m), (7, None));
        assert_eq!(read(r#"{"n": 1, "m": null}"#).unwrap().m, None);
        assert_eq!(
            read(r#"{"n": 1, "m": 18446744073709551615}"#).unwrap().m,
            Some(u64::MAX)
        );
    }

    #[test]
    fn a_fraction_a_negative_or_an_overflow_is_refused() {
        for bad in [
            r#"{"n": 5.5}"#,
            r#"{"n": -1}"#,
            r#"{"n": -1.0}"#,
            r#"{"n": 4294967296}"#,
            r#"{"n": 4294967296.0}"#,
            r#"{"n": 1, "m": 1.8446744073709552e19}"#,
            r#"{"n": "5"}"#,
        ] {
            assert!(read(bad).is_err(), "{bad} was taken");
        }
    }
}
