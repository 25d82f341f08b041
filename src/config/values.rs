//! The value types of the raw layer that need more than serde's: counts with their range in the
//! message, floats that must be written as floats, one-or-many strings.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Unexpected, Visitor};
use toml::Spanned;

/// A whole number, 0 or more, that fits in 32 bits.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Count(pub u32);

/// A whole number, 0 or more, that fits in 64 bits.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Count64(pub u64);

struct CountVisitor(u64);

impl Visitor<'_> for CountVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a whole number from 0 to {}", self.0)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::invalid_value(Unexpected::Signed(v), &self)),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        if v <= self.0 {
            Ok(v)
        } else {
            Err(E::invalid_value(Unexpected::Unsigned(v), &self))
        }
    }

    /// GitLab Runner refuses a float here, so drover does too (one file for both); a whole
    /// number written as a float (`1e3`, `4.0`) is spelled out.
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        if v.fract() == 0.0 && v >= 0.0 && v <= self.0 as f64 {
            Err(E::custom(format!(
                "a float ({v:?}): write the whole number {} (GitLab Runner reads no float here)",
                v as u64
            )))
        } else {
            Err(E::invalid_value(Unexpected::Float(v), &self))
        }
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Count, D::Error> {
        let v = d.deserialize_any(CountVisitor(u64::from(u32::MAX)))?;
        Ok(Count(u32::try_from(v).unwrap_or(u32::MAX)))
    }
}

impl<'de> Deserialize<'de> for Count64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Count64, D::Error> {
        d.deserialize_any(CountVisitor(i64::MAX as u64))
            .map(Count64)
    }
}

/// A float that must be written as one: GitLab Runner refuses `IdleScaleFactor = 1`.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct StrictFloat(pub f64);

impl<'de> Deserialize<'de> for StrictFloat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StrictFloat, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = f64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a float with a decimal point, e.g. 1.0")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
                Ok(v)
            }
        }
        d.deserialize_any(V).map(StrictFloat)
    }
}

/// A string or a list of strings (GitLab Runner's `StringOrArray`), each kept with its span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OneOrMany {
    One(String),
    Many(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<OneOrMany, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<String>>()? {
                    items.push(item);
                }
                Ok(OneOrMany::Many(items))
            }
        }
        d.deserialize_any(V)
    }
}
