//! Non-negative integers as JSON Schema counts them: `5203` and `5203.0` are the
//! same integer there (and so in the OpenAPI description), so the API takes both.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;

/// Just past the largest `u64`, as a float.
const U64_END: f64 = 18_446_744_073_709_551_616.0;

/// A non-negative integer, written with or without a zero fraction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Whole(u64);

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct WholeVisitor;

        impl Visitor<'_> for WholeVisitor {
            type Value = Whole;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer")
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
                if v.fract() == 0.0 && (0.0..U64_END).contains(&v) {
                    // Exact: a whole float below 2^64 converts without rounding.
                    Ok(Whole(v as u64))
                } else {
                    Err(E::invalid_value(de::Unexpected::Float(v), &self))
                }
            }
        }

        d.deserialize_any(WholeVisitor)
    }
}

/// Deserializes a non-negative integer (`serde(deserialize_with)`).
pub fn whole_number<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    Whole::deserialize(d).map(|Whole(v)| v)
}

/// Deserializes an optional non-negative integer; `null` is none
/// (`serde(default, deserialize_with)`).
pub fn optional_whole_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Option::<Whole>::deserialize(d).map(|v| v.map(|Whole(v)| v))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(json: &str) -> Result<u64, serde_json::Error> {
        whole_number(&mut serde_json::Deserializer::from_str(json))
    }

    #[test]
    fn integers_are_taken_with_or_without_a_zero_fraction() {
        assert_eq!(read("5203").ok(), Some(5203));
        assert_eq!(read("5203.0").ok(), Some(5203));
        assert_eq!(read("1e3").ok(), Some(1000));
        assert_eq!(read("18446744073709551615").ok(), Some(u64::MAX));
        for bad in ["-1", "1.5", "-0.5", "1e20", "\"1\"", "true", "null"] {
            assert!(read(bad).is_err(), "{bad}");
        }
    }
}
