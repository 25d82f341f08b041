//! Sweeps: run a scenario over the cartesian product of knob values, in parallel, and find the cheapest
//! configuration that meets a wait SLO.
//!
//! Every point runs with the same seed, so every point sees the same jobs (common random numbers):
//! differences between points come from the config, not from luck.

use std::fmt::Write as _;
use std::str::FromStr;
use std::time::Instant;

use drover_core::{Config, Executor};
use rayon::prelude::*;
use serde::Serialize;
use serde::ser::SerializeMap;

use crate::SimError;
use crate::engine::{RunOptions, Scenario, run};
use crate::report::{Perf, Report, human_secs, percent};
use crate::workload::parse_seconds_or_duration_ms;

/// Sweeps larger than this are refused: they would run for hours and are almost always a typo.
pub const MAX_POINTS: usize = 10_000;

/// A config knob a sweep can vary, by GitLab's key name.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Knob {
    IdleCount,
    Limit,
    IdleTime,
    MaxBuilds,
    IdleScaleFactor,
    MaxGrowthRate,
}

impl Knob {
    pub const ALL: [Knob; 6] = [
        Knob::IdleCount,
        Knob::Limit,
        Knob::IdleTime,
        Knob::MaxBuilds,
        Knob::IdleScaleFactor,
        Knob::MaxGrowthRate,
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
        }
    }

    /// Shows a value in the knob's unit (IdleTime in seconds, as config.toml writes it).
    pub fn show(self, v: f64) -> String {
        match self {
            Knob::IdleScaleFactor => format!("{v}"),
            Knob::IdleTime => human_secs(v),
            _ => format!("{}", v as u64),
        }
    }

    /// Sets the knob on every runner it applies to: `limit` on all, the rest on pool runners.
    fn apply(self, config: &mut Config, v: f64) {
        for r in &mut config.runners {
            match (self, &mut r.executor) {
                (Knob::Limit, _) => r.limit = v as u32,
                (_, Executor::Direct) => {}
                (Knob::IdleCount, Executor::Pool(p)) => p.base.idle_count = v as u32,
                (Knob::IdleTime, Executor::Pool(p)) => p.base.idle_time_ms = (v * 1000.0) as u64,
                (Knob::MaxBuilds, Executor::Pool(p)) => p.max_builds = v as u32,
                (Knob::IdleScaleFactor, Executor::Pool(p)) => p.base.idle_scale_factor = v,
                (Knob::MaxGrowthRate, Executor::Pool(p)) => p.max_growth_rate = v as u32,
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
}

/// `KEY=RANGE`: the values one knob takes.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepSpec {
    pub knob: Knob,
    pub values: Vec<f64>,
}

const RANGE_HINT: &str =
    "write KEY=A..=B, KEY=A..=B:STEP or KEY=V1,V2,V3 (IdleTime takes durations: 0..=30m:5m)";

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
            None if knob == Knob::IdleScaleFactor => {
                return Err("a range of IdleScaleFactor needs a step, like 0..=1:0.25".into());
            }
            None if knob == Knob::IdleTime => {
                return Err("a range of IdleTime needs a step, like 0..=30m:5m".into());
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
        Knob::IdleScaleFactor => match s.parse::<f64>() {
            Ok(v) if v >= 0.0 && v.is_finite() => Ok(v),
            _ => Err(format!("{s:?} is not a number ≥ 0")),
        },
        // GitLab writes IdleTime in seconds; a unit is welcome.
        Knob::IdleTime => parse_seconds_or_duration_ms(s)
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

/// Options that shape a sweep's verdict.
#[derive(Clone, Debug, Default)]
pub struct SweepOptions {
    /// The SLO: the p95 wait a configuration must not exceed, in seconds.
    pub slo_p95_wait_seconds: Option<f64>,
    pub cost_per_machine_hour: Option<f64>,
}

/// One configuration of a sweep and how it did.
#[derive(Clone, Debug)]
pub struct SweepPoint {
    pub params: Params,
    pub report: Report,
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

/// The verdict for an SLO.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recommendation {
    /// Index into the points.
    pub index: usize,
    pub params: Params,
    /// False: no point meets the SLO and this is the closest (the lowest p95 wait).
    pub meets_slo: bool,
    pub p95_wait_seconds: f64,
    /// Cost, or machine-hours without a price.
    pub cost: f64,
}

/// All points, the Pareto front and the recommendation.
#[derive(Clone, Debug)]
pub struct SweepReport {
    pub knobs: Vec<Knob>,
    pub points: Vec<SweepPoint>,
    /// Indices of the points no other point beats on both cost and p95 wait, cheapest first.
    pub pareto: Vec<usize>,
    pub recommended: Option<Recommendation>,
    pub options: SweepOptions,
    /// Things the operator should know about the sweep (a limit above `concurrent`, periods).
    pub notes: Vec<String>,
    pub perf: Perf,
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

/// Runs every point in parallel (rayon's pool: all cores). `on_point` is called as each finishes.
pub fn run_sweep(
    base: &Scenario,
    specs: &[SweepSpec],
    options: &SweepOptions,
    on_point: &(dyn Fn() + Sync),
) -> Result<SweepReport, SimError> {
    let wall = Instant::now();
    let grid = expand(specs)?;
    let has_pool = base
        .config
        .runners
        .iter()
        .any(|r| matches!(r.executor, Executor::Pool(_)));
    if let Some(s) = specs.iter().find(|s| s.knob != Knob::Limit && !has_pool) {
        return Err(SweepError::NoPool {
            knob: s.knob.name(),
        }
        .into());
    }
    let mut notes = Vec::new();
    if let Some(s) = specs.iter().find(|s| s.knob == Knob::Limit) {
        let concurrent = base.config.concurrent;
        if s.values.iter().any(|v| *v as u32 > concurrent || *v == 0.0) {
            notes.push(format!(
                "concurrent = {concurrent} caps running jobs below some of the limits swept"
            ));
        }
    }
    let with_periods: Vec<&str> = base
        .config
        .runners
        .iter()
        .filter(|r| r.policy().is_some_and(|p| !p.periods.is_empty()))
        .map(|r| r.name.as_str())
        .collect();
    if !with_periods.is_empty() {
        notes.push(format!(
            "swept Idle* values apply outside [[runners.machine.autoscaling]] periods of {}",
            with_periods.join(", ")
        ));
    }
    let results: Vec<Result<SweepPoint, SimError>> = grid
        .par_iter()
        .map(|params| {
            let mut scenario = base.clone();
            for (knob, v) in &params.0 {
                knob.apply(&mut scenario.config, *v);
            }
            let result = run(&scenario, &RunOptions::default());
            on_point();
            let report = result?.report.with_price(options.cost_per_machine_hour);
            Ok(SweepPoint {
                params: params.clone(),
                report,
            })
        })
        .collect();
    let points = results.into_iter().collect::<Result<Vec<_>, _>>()?;
    let events = points.iter().map(|p| p.report.perf.events).sum();
    let pareto = pareto_front(&points);
    let recommended = options
        .slo_p95_wait_seconds
        .and_then(|slo| recommend(&points, slo));
    Ok(SweepReport {
        knobs: specs.iter().map(|s| s.knob).collect(),
        points,
        pareto,
        recommended,
        options: options.clone(),
        notes,
        perf: Perf::measure(events, wall.elapsed()),
    })
}

/// Points not dominated on (cost, p95 wait), cheapest first.
pub fn pareto_front(points: &[SweepPoint]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    let key = |i: usize| {
        (
            points[i].report.cost_or_hours(),
            points[i].report.wait_seconds.p95,
        )
    };
    order.sort_by(|&a, &b| {
        key(a)
            .partial_cmp(&key(b))
            .unwrap_or(std::cmp::Ordering::Equal)
            .then(a.cmp(&b))
    });
    let mut front = Vec::new();
    let mut best = f64::INFINITY;
    for i in order {
        let p95 = points[i].report.wait_seconds.p95;
        if p95 < best {
            best = p95;
            front.push(i);
        }
    }
    front
}

/// The cheapest point meeting the SLO, or else the one with the lowest p95 wait (cheaper on ties).
pub fn recommend(points: &[SweepPoint], slo_p95_wait_seconds: f64) -> Option<Recommendation> {
    let by = |a: &(usize, f64, f64), b: &(usize, f64, f64)| {
        (a.1, a.2, a.0)
            .partial_cmp(&(b.1, b.2, b.0))
            .unwrap_or(std::cmp::Ordering::Equal)
    };
    let stats: Vec<(usize, f64, f64)> = points
        .iter()
        .enumerate()
        .map(|(i, p)| (i, p.report.cost_or_hours(), p.report.wait_seconds.p95))
        .collect();
    let meeting = stats
        .iter()
        .filter(|s| s.2 <= slo_p95_wait_seconds)
        .min_by(|a, b| by(a, b));
    let (pick, meets) = match meeting {
        Some(s) => (*s, true),
        None => (
            *stats
                .iter()
                .min_by(|a, b| by(&(a.0, a.2, a.1), &(b.0, b.2, b.1)))?,
            false,
        ),
    };
    Some(Recommendation {
        index: pick.0,
        params: points[pick.0].params.clone(),
        meets_slo: meets,
        p95_wait_seconds: pick.2,
        cost: pick.1,
    })
}

impl SweepReport {
    /// The JSON document: every point (params + its report), the Pareto front and the recommendation.
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Point<'a> {
            params: &'a Params,
            #[serde(flatten)]
            report: &'a Report,
        }
        #[derive(Serialize)]
        struct Doc<'a> {
            slo_p95_wait_seconds: Option<f64>,
            cost_per_machine_hour: Option<f64>,
            points: Vec<Point<'a>>,
            pareto: &'a [usize],
            recommended: &'a Option<Recommendation>,
            notes: &'a [String],
            perf: &'a Perf,
        }
        let doc = Doc {
            slo_p95_wait_seconds: self.options.slo_p95_wait_seconds,
            cost_per_machine_hour: self.options.cost_per_machine_hour,
            points: self
                .points
                .iter()
                .map(|p| Point {
                    params: &p.params,
                    report: &p.report,
                })
                .collect(),
            pareto: &self.pareto,
            recommended: &self.recommended,
            notes: &self.notes,
            perf: &self.perf,
        };
        serde_json::to_string_pretty(&doc).unwrap_or_default()
    }

    /// A table of the points, the Pareto front and the verdict.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let priced = self.options.cost_per_machine_hour.is_some();
        let widths: Vec<usize> = self.knobs.iter().map(|k| k.name().len().max(6)).collect();
        let _ = write!(out, "  {:>4}", "#");
        for (k, w) in self.knobs.iter().zip(&widths) {
            let _ = write!(out, "  {:>w$}", k.name());
        }
        let _ = writeln!(
            out,
            "  {:>8}  {:>8}  {:>7}  {:>6}  {:>10}  {:>10}",
            "p95 wait",
            "mean",
            "waited",
            "failed",
            "machine-h",
            if priced { "cost" } else { "" }
        );
        for (i, p) in self.points.iter().enumerate() {
            let mark = match &self.recommended {
                Some(r) if r.index == i => '>',
                _ if self.pareto.contains(&i) => '*',
                _ => ' ',
            };
            let _ = write!(out, "{mark} {:>4}", i + 1);
            for ((k, v), w) in p.params.0.iter().zip(&widths) {
                let _ = write!(out, "  {:>w$}", k.show(*v));
            }
            let r = &p.report;
            let cost = r.cost.map(|c| format!("{c:.2}")).unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:>8}  {:>8}  {:>7}  {:>6}  {:>10.1}  {:>10}",
                human_secs(r.wait_seconds.p95),
                human_secs(r.wait_seconds.mean),
                percent(r.p_wait),
                r.jobs_failed,
                r.machine_hours(),
                cost
            );
        }
        let _ = writeln!(out);
        let front: Vec<String> = self.pareto.iter().map(|i| format!("#{}", i + 1)).collect();
        let _ = writeln!(
            out,
            "  * Pareto front (cost vs p95 wait): {}",
            front.join(", ")
        );
        let what = if priced { "cost" } else { "machine-hours" };
        match (&self.recommended, self.options.slo_p95_wait_seconds) {
            (Some(r), Some(slo)) if r.meets_slo => {
                let _ = writeln!(
                    out,
                    "  > recommended: #{} {} — p95 wait {} ≤ SLO {}, {what} {:.2}",
                    r.index + 1,
                    r.params.describe(),
                    human_secs(r.p95_wait_seconds),
                    human_secs(slo),
                    r.cost
                );
            }
            (Some(r), Some(slo)) => {
                let _ = writeln!(
                    out,
                    "  no configuration meets p95 wait ≤ {}; closest is #{} {} with p95 wait {} ({what} {:.2})",
                    human_secs(slo),
                    r.index + 1,
                    r.params.describe(),
                    human_secs(r.p95_wait_seconds),
                    r.cost
                );
            }
            _ => {
                let _ = writeln!(out, "  give --slo-p95-wait (e.g. 2m) for a recommendation");
            }
        }
        for note in &self.notes {
            let _ = writeln!(out, "  note: {note}");
        }
        let p = &self.perf;
        let _ = writeln!(
            out,
            "  perf: {} runs, {} events in {:.2} s ({:.2} M events/s), peak RSS {:.1} MiB",
            self.points.len(),
            crate::report::group(p.events),
            p.wall_seconds,
            p.events_per_second / 1e6,
            p.peak_rss_bytes as f64 / (1024.0 * 1024.0)
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(s: &str) -> SweepSpec {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_steps_and_lists() {
        assert_eq!(spec("IdleCount=0..=3").values, vec![0.0, 1.0, 2.0, 3.0]);
        assert_eq!(
            spec("limit=0..=20:5").values,
            vec![0.0, 5.0, 10.0, 15.0, 20.0]
        );
        assert_eq!(spec("limit=10,20,40").values, vec![10.0, 20.0, 40.0]);
        assert_eq!(spec("limit=1..4").values, vec![1.0, 2.0, 3.0]);
        assert_eq!(spec("IdleScaleFactor=0..=1:0.1").values.len(), 11);
        assert_eq!(spec("IdleScaleFactor=0..=1:0.1").values[3], 0.3);
        assert_eq!(
            spec("IdleTime=0..=30m:10m").values,
            vec![0.0, 600.0, 1200.0, 1800.0]
        );
        assert_eq!(spec("IdleTime=300,1h").values, vec![300.0, 3600.0]);
        assert_eq!(spec("idlecount=2").knob, Knob::IdleCount);
    }

    #[test]
    fn bad_specs_say_why() {
        let e = "IdleCnt=1..=3"
            .parse::<SweepSpec>()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("unknown key \"IdleCnt\"") && e.contains("IdleCount, limit"),
            "{e}"
        );
        let e = "limit=5..=1".parse::<SweepSpec>().unwrap_err().to_string();
        assert!(e.contains("ends (1) before it starts (5)"), "{e}");
        let e = "limit=1.5".parse::<SweepSpec>().unwrap_err().to_string();
        assert!(e.contains("whole number"), "{e}");
        let e = "IdleScaleFactor=0..=1"
            .parse::<SweepSpec>()
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs a step"), "{e}");
    }

    #[test]
    fn cartesian_product_in_order() {
        let grid = expand(&[spec("IdleCount=0,1"), spec("limit=10,20,30")]).unwrap();
        let pairs: Vec<(f64, f64)> = grid.iter().map(|p| (p.0[0].1, p.0[1].1)).collect();
        assert_eq!(
            pairs,
            vec![
                (0.0, 10.0),
                (0.0, 20.0),
                (0.0, 30.0),
                (1.0, 10.0),
                (1.0, 20.0),
                (1.0, 30.0)
            ]
        );
        assert_eq!(
            expand(&[spec("limit=1"), spec("limit=2")]),
            Err(SweepError::Duplicate("limit"))
        );
        assert!(matches!(
            expand(&[spec("limit=0..=200"), spec("IdleCount=0..=200")]),
            Err(SweepError::TooLarge { points: 40_401 })
        ));
    }

    fn point(cost: f64, p95: f64) -> SweepPoint {
        let mut report = Report {
            seed: 0,
            simulated_seconds: 0.0,
            drained: true,
            jobs: 0,
            jobs_failed: 0,
            jobs_pending: 0,
            wait_seconds: Default::default(),
            p_wait: 0.0,
            mean_queued: 0.0,
            machine_seconds: Default::default(),
            mean_machines: 0.0,
            utilization: 0.0,
            machines_created: 0,
            machines_removed: 0,
            creation_failures: 0,
            machines_lost: 0,
            peak_machines: 0,
            cost: Some(cost),
            perf: Default::default(),
        };
        report.wait_seconds.p95 = p95;
        SweepPoint {
            params: Params(vec![(Knob::IdleCount, cost)]),
            report,
        }
    }

    #[test]
    fn pareto_and_recommendation() {
        let pts = vec![
            point(10.0, 300.0),
            point(20.0, 60.0),
            point(15.0, 400.0),
            point(30.0, 5.0),
            point(20.0, 90.0),
        ];
        assert_eq!(pareto_front(&pts), vec![0, 1, 3]);
        let r = recommend(&pts, 120.0).unwrap();
        assert_eq!((r.index, r.meets_slo), (1, true));
        let r = recommend(&pts, 1.0).unwrap();
        assert_eq!((r.index, r.meets_slo, r.p95_wait_seconds), (3, false, 5.0));
    }
}
