//! The raw serde layer of a workload file: `deny_unknown_fields`, every value with its span.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

/// The key and the allowed keys of serde's "unknown field `horizn`, expected one of `start`, ..."
/// (or "expected `a` or `b`").
pub(super) fn unknown_key(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, expected) = rest.split_once('`')?;
    let allowed = expected.split('`').skip(1).step_by(2).map(str::to_string);
    Some((key.to_string(), allowed.collect()))
}

/// A whole number, written as an integer or as a float with nothing after the point (`1e9`,
/// `100.0`): both mean the same count to a reader.
#[derive(Clone, Copy, Debug)]
pub(super) struct Whole(pub(super) i64);

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Whole, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Whole;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a whole number, like 100000 or 1e6")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Whole, E> {
                Ok(Whole(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Whole, E> {
                i64::try_from(v)
                    .map(Whole)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<Whole, E> {
                // Below 2^63, and integral: exactly representable as an i64.
                if v.fract() == 0.0 && v.abs() < 9.223_372_036_854_775e18 {
                    Ok(Whole(v as i64))
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Float(v), &self))
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWorkload {
    pub(super) start: Option<Spanned<toml::Value>>,
    pub(super) horizon: Option<Spanned<toml::Value>>,
    pub(super) jobs: Option<Spanned<Whole>>,
    pub(super) seed: Option<Spanned<Whole>>,
    pub(super) arrivals: Spanned<RawArrivals>,
    pub(super) duration: Option<Spanned<RawDist>>,
    pub(super) boot: Option<Spanned<RawDist>>,
    pub(super) removal: Option<Spanned<RawDist>>,
    #[serde(default)]
    pub(super) coordinator: RawCoordinator,
    #[serde(default)]
    pub(super) faults: RawFaults,
    pub(super) shares: Option<Spanned<BTreeMap<String, Spanned<f64>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawArrivals {
    pub(super) kind: Spanned<String>,
    pub(super) rate_per_min: Option<Spanned<f64>>,
    pub(super) hourly: Option<Spanned<Vec<f64>>>,
    pub(super) weekend_factor: Option<Spanned<f64>>,
    pub(super) timezone: Option<Spanned<String>>,
    pub(super) file: Option<Spanned<String>>,
    pub(super) batch: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDist {
    pub(super) kind: Spanned<String>,
    pub(super) value: Option<Spanned<toml::Value>>,
    pub(super) mean: Option<Spanned<toml::Value>>,
    pub(super) median: Option<Spanned<toml::Value>>,
    pub(super) p95: Option<Spanned<toml::Value>>,
    pub(super) stddev: Option<Spanned<toml::Value>>,
    pub(super) min: Option<Spanned<toml::Value>>,
    pub(super) max: Option<Spanned<toml::Value>>,
    pub(super) values: Option<Spanned<Vec<Spanned<toml::Value>>>>,
    pub(super) weights: Option<Spanned<Vec<f64>>>,
    pub(super) failure_rate: Option<Spanned<f64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCoordinator {
    pub(super) polling: Option<Spanned<String>>,
    pub(super) job_timeout: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFaults {
    pub(super) slow_boot_rate: Option<Spanned<f64>>,
    pub(super) slow_boot_factor: Option<Spanned<f64>>,
    pub(super) machine_loss_per_hour: Option<Spanned<f64>>,
}
