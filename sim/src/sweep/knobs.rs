//! What a sweep varies: the knobs (GitLab's key names), `--sweep KEY=RANGE` parsed into their
//! values, and the grid of points those values make.

use std::str::FromStr;

use drover_core::{Config, Executor};
use serde::Serialize;
use serde::ser::SerializeMap;

use super::MAX_POINTS;
use crate::report::human_secs;
use crate::workload::parse_seconds_or_duration_ms;

/// A config knob a sweep can vary, by GitLab's key name.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Knob {
    IdleCount,
    Limit,
    IdleTime,
    MaxBuilds,
    IdleScaleFactor,
    MaxGrowthRate,
    Concurrent,
    /// `docker-autoscaler` keys, set on every `[[runners.autoscaler.policy]]`: `idle_count` (in
    /// job slots), `idle_time`, `scale_factor`.
    PolicyIdleCount,
    PolicyIdleTime,
    ScaleFactor,
    /// `[runners.autoscaler]` keys.
    MaxUseCount,
    CapacityPerInstance,
    MaxInstances,
}

impl Knob {
    pub const ALL: [Knob; 13] = [
        Knob::IdleCount,
        Knob::Limit,
        Knob::IdleTime,
        Knob::MaxBuilds,
        Knob::IdleScaleFactor,
        Knob::MaxGrowthRate,
        Knob::Concurrent,
        Knob::PolicyIdleCount,
        Knob::PolicyIdleTime,
        Knob::ScaleFactor,
        Knob::MaxUseCount,
        Knob::CapacityPerInstance,
        Knob::MaxInstances,
    ];

    /// The key as config.toml spells it.
    pub fn name(self) -> &'static str {
        match self {
            Knob::IdleCount => "IdleCount",
            Knob::Limit => "limit",
            Knob::IdleTime => "IdleTime",
            Knob::MaxBuilds => "MaxBuilds",
            Knob::IdleScaleFactor => "IdleScaleFactor",
            Knob::MaxGrowthRate => "MaxGrowthRate",
            Knob::Concurrent => "concurrent",
            Knob::PolicyIdleCount => "idle_count",
            Knob::PolicyIdleTime => "idle_time",
            Knob::ScaleFactor => "scale_factor",
            Knob::MaxUseCount => "max_use_count",
            Knob::CapacityPerInstance => "capacity_per_instance",
            Knob::MaxInstances => "max_instances",
        }
    }

    /// Whether it is a key of `[runners.machine]` (docker+machine runners only).
    pub(super) fn pool_only(self) -> bool {
        matches!(
            self,
            Knob::IdleCount
                | Knob::IdleTime
                | Knob::MaxBuilds
                | Knob::IdleScaleFactor
                | Knob::MaxGrowthRate
        )
    }

    /// Whether it is a key of `[runners.autoscaler]` (docker-autoscaler runners only).
    pub(super) fn slots_only(self) -> bool {
        !self.pool_only() && !matches!(self, Knob::Limit | Knob::Concurrent)
    }

    /// A fraction, not a whole number.
    fn is_factor(self) -> bool {
        matches!(self, Knob::IdleScaleFactor | Knob::ScaleFactor)
    }

    /// A duration, shown and written in seconds.
    fn is_duration(self) -> bool {
        matches!(self, Knob::IdleTime | Knob::PolicyIdleTime)
    }

    /// Shows a value in the knob's unit (IdleTime in seconds, as config.toml writes it).
    pub fn show(self, v: f64) -> String {
        if self.is_factor() {
            format!("{v}")
        } else if self.is_duration() {
            human_secs(v)
        } else {
            format!("{}", v as u64)
        }
    }

    /// Sets the knob: `concurrent` on the config, `limit` on every runner, the rest on the runners
    /// of their executor.
    pub(super) fn apply(self, config: &mut Config, v: f64) {
        if self == Knob::Concurrent {
            config.concurrent = (v as u32).max(1);
            return;
        }
        for r in &mut config.runners {
            match (self, &mut r.executor) {
                (Knob::Concurrent, _) => {}
                (Knob::Limit, _) => r.limit = v as u32,
                (_, Executor::Direct) => {}
                (Knob::IdleCount, Executor::Pool(p)) => p.base.idle_count = v as u32,
                (Knob::IdleTime, Executor::Pool(p)) => p.base.idle_time_ms = (v * 1000.0) as u64,
                (Knob::MaxBuilds, Executor::Pool(p)) => p.max_builds = v as u32,
                (Knob::IdleScaleFactor, Executor::Pool(p)) => p.base.idle_scale_factor = v,
                (Knob::MaxGrowthRate, Executor::Pool(p)) => p.max_growth_rate = v as u32,
                (Knob::MaxUseCount, Executor::Slots(sp)) => sp.pool.max_builds = v as u32,
                (Knob::CapacityPerInstance, Executor::Slots(sp)) => sp.slots = (v as u32).max(1),
                (Knob::MaxInstances, Executor::Slots(sp)) => sp.max_machines = v as u32,
                (
                    Knob::PolicyIdleCount | Knob::PolicyIdleTime | Knob::ScaleFactor,
                    Executor::Slots(sp),
                ) => {
                    let p = &mut sp.pool;
                    let values = std::iter::once(&mut p.base)
                        .chain(p.periods.iter_mut().map(|period| &mut period.values));
                    for values in values {
                        match self {
                            Knob::PolicyIdleCount => values.idle_count = v as u32,
                            Knob::PolicyIdleTime => values.idle_time_ms = (v * 1000.0) as u64,
                            _ => values.idle_scale_factor = v,
                        }
                    }
                }
                (_, Executor::Pool(_) | Executor::Slots(_)) => {}
            }
        }
    }
}

/// Why a sweep could not be set up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SweepError {
    #[error("--sweep {spec:?}: {reason}\n  hint: {hint}")]
    Spec {
        spec: String,
        reason: String,
        hint: String,
    },
    #[error("--sweep {0} is given twice; give each knob once (lists like 1,2,4 combine values)")]
    Duplicate(&'static str),
    #[error("the sweep has {points} points, more than {max}; narrow the ranges or use larger steps", max = MAX_POINTS)]
    TooLarge { points: usize },
    #[error("{knob} applies to docker+machine runners, and the simulated config has none")]
    NoPool { knob: &'static str },
    #[error("{knob} applies to docker-autoscaler runners, and the simulated config has none")]
    NoSlots { knob: &'static str },
}

/// `KEY=RANGE`: the values one knob takes.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepSpec {
    pub knob: Knob,
    pub values: Vec<f64>,
}

const RANGE_HINT: &str = "write KEY=A..=B, KEY=A..=B:STEP or KEY=V1,V2,V3 (IdleTime and idle_time take durations: 0..=30m:5m)";

impl FromStr for SweepSpec {
    type Err = SweepError;

    fn from_str(spec: &str) -> Result<SweepSpec, SweepError> {
        let fail = |reason: String| SweepError::Spec {
            spec: spec.to_string(),
            reason,
            hint: RANGE_HINT.into(),
        };
        let (key, range) = spec
            .split_once('=')
            .ok_or_else(|| fail("expected KEY=RANGE".into()))?;
        let knob = Knob::ALL
            .into_iter()
            .find(|k| k.name().eq_ignore_ascii_case(key.trim()))
            .ok_or_else(|| SweepError::Spec {
                spec: spec.to_string(),
                reason: format!("unknown key {:?}", key.trim()),
                hint: format!("sweepable keys: {}", Knob::ALL.map(Knob::name).join(", ")),
            })?;
        let values = parse_values(knob, range.trim()).map_err(fail)?;
        if values.is_empty() {
            return Err(fail("the range is empty".into()));
        }
        Ok(SweepSpec { knob, values })
    }
}

fn parse_values(knob: Knob, range: &str) -> Result<Vec<f64>, String> {
    let value = |s: &str| parse_value(knob, s.trim());
    if let Some((from, rest)) = range.split_once("..") {
        let (inclusive, rest) = match rest.strip_prefix('=') {
            Some(r) => (true, r),
            None => (false, rest),
        };
        let (to, step) = match rest.split_once(':') {
            Some((to, step)) => (to, Some(step)),
            None => (rest, None),
        };
        let (a, b) = (value(from)?, value(to)?);
        let step = match step {
            Some(s) => value(s)?,
            None if knob.is_factor() => {
                return Err(format!(
                    "a range of {} needs a step, like 0..=1:0.25",
                    knob.name()
                ));
            }
            None if knob.is_duration() => {
                return Err(format!(
                    "a range of {} needs a step, like 0..=30m:5m",
                    knob.name()
                ));
            }
            None => 1.0,
        };
        if step <= 0.0 {
            return Err("the step must be positive".into());
        }
        if b < a {
            return Err(format!("the range ends ({b}) before it starts ({a})"));
        }
        let n = ((b - a) / step + 1e-9).floor() as usize;
        if n >= MAX_POINTS {
            return Err(format!("more than {MAX_POINTS} values"));
        }
        // Each value from the start (not by accumulation), rounded to the step's precision.
        let mut out: Vec<f64> = (0..=n).map(|i| round9(a + i as f64 * step)).collect();
        if !inclusive {
            out.retain(|v| *v < b);
        }
        return Ok(out);
    }
    range.split(',').map(value).collect()
}

fn parse_value(knob: Knob, s: &str) -> Result<f64, String> {
    match knob {
        k if k.is_factor() => match s.parse::<f64>() {
            Ok(v) if v >= 0.0 && v.is_finite() => Ok(v),
            _ => Err(format!("{s:?} is not a number ≥ 0")),
        },
        // GitLab writes IdleTime in seconds; a unit is welcome.
        k if k.is_duration() => parse_seconds_or_duration_ms(s)
            .map(|ms| ms as f64 / 1000.0)
            .map_err(|e| format!("{s:?}: {e}")),
        _ => match s.parse::<u32>() {
            Ok(v) => Ok(f64::from(v)),
            Err(_) => Err(format!("{s:?} is not a whole number ≥ 0")),
        },
    }
}

fn round9(x: f64) -> f64 {
    (x * 1e9).round() / 1e9
}

/// The knob values of a point, in the order the sweeps were given.
#[derive(Clone, Debug, PartialEq)]
pub struct Params(pub Vec<(Knob, f64)>);

impl Params {
    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(|(k, v)| format!("{}={}", k.name(), k.show(*v)))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

impl Serialize for Params {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            match k {
                Knob::IdleScaleFactor => map.serialize_entry(k.name(), v)?,
                _ => map.serialize_entry(k.name(), &(*v as u64))?,
            }
        }
        map.end()
    }
}

/// Expands the specs into configurations (the first spec varies slowest).
pub fn expand(specs: &[SweepSpec]) -> Result<Vec<Params>, SweepError> {
    for (i, s) in specs.iter().enumerate() {
        if specs[..i].iter().any(|t| t.knob == s.knob) {
            return Err(SweepError::Duplicate(s.knob.name()));
        }
    }
    let total = specs.iter().try_fold(1usize, |acc, s| {
        acc.checked_mul(s.values.len()).filter(|n| *n <= MAX_POINTS)
    });
    let Some(total) = total else {
        let points = specs
            .iter()
            .fold(1usize, |acc, s| acc.saturating_mul(s.values.len()));
        return Err(SweepError::TooLarge { points });
    };
    let mut out = Vec::with_capacity(total);
    for mut i in 0..total {
        let mut params = vec![(Knob::IdleCount, 0.0); specs.len()];
        for (slot, s) in params.iter_mut().zip(specs).rev() {
            *slot = (s.knob, s.values[i % s.values.len()]);
            i /= s.values.len();
        }
        out.push(Params(params));
    }
    Ok(out)
}
