//! Sweeps: run a scenario over the cartesian product of knob values, in parallel, and find the cheapest
//! configuration that meets a wait SLO.
//!
//! Every point runs the same replications (the same seeds), so every point sees the same jobs
//! (common random numbers): differences between points come from the config, not from luck. The
//! recommendation holds at the pessimistic end: the p95 wait's upper 95 % bound meets the SLO.

use std::fmt::Write as _;
use std::str::FromStr;

use drover_core::{Config, Executor};
use rayon::prelude::*;
use serde::Serialize;
use serde::ser::SerializeMap;

use crate::SimError;
use crate::engine::{RunOptions, Scenario, run};
use crate::replicate::{DEFAULT_REPLICATIONS, Estimate, Summary, seed_of};
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
    fn pool_only(self) -> bool {
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
    fn slots_only(self) -> bool {
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
    fn apply(self, config: &mut Config, v: f64) {
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

/// Options that shape a sweep's verdict.
#[derive(Clone, Debug)]
pub struct SweepOptions {
    /// The SLO: the p95 wait a configuration must not exceed, in seconds, at the upper bound of its
    /// 95 % interval.
    pub slo_p95_wait_seconds: Option<f64>,
    pub cost_per_machine_hour: Option<f64>,
    /// Replications of every point (the same seeds for all points).
    pub replications: u32,
    /// Set (by a Ctrl-C handler) to stop: the report then holds the points that finished.
    pub stop: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

impl Default for SweepOptions {
    fn default() -> SweepOptions {
        SweepOptions {
            slo_p95_wait_seconds: None,
            cost_per_machine_hour: None,
            replications: DEFAULT_REPLICATIONS,
            stop: None,
        }
    }
}

/// One configuration of a sweep and how it did over the replications.
#[derive(Clone, Debug)]
pub struct SweepPoint {
    pub params: Params,
    pub summary: Summary,
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

/// The verdict for an SLO. Points are named by their `id`, counted from 1 as in the table.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Recommendation {
    pub id: usize,
    /// `id - 1`: the position in [`SweepReport::points`].
    #[serde(skip)]
    pub index: usize,
    pub params: Params,
    /// False: no point meets the SLO at its upper bound and this is the closest (the lowest upper
    /// bound of the p95 wait).
    pub meets_slo: bool,
    pub p95_wait_seconds: Estimate,
    /// Cost, or machine-hours without a price.
    pub cost: Estimate,
    /// Other points meeting the SLO whose cost does not differ from this one's: the interval of the
    /// difference, paired replication by replication, holds 0.
    pub indistinguishable: Vec<usize>,
    /// Cheaper points whose mean p95 wait meets the SLO but whose upper bound does not.
    pub uncertain: Vec<usize>,
}

/// All points, the Pareto front and the recommendation.
#[derive(Clone, Debug)]
pub struct SweepReport {
    pub knobs: Vec<Knob>,
    pub points: Vec<SweepPoint>,
    /// Indices of the points no other point beats on both mean cost and mean p95 wait, cheapest
    /// first.
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

/// Runs every replication of every point in parallel (rayon's pool: all cores). Replication `i`
/// of every point runs with the same seed. `on_run` is called as each run finishes.
pub fn run_sweep(
    base: &Scenario,
    specs: &[SweepSpec],
    options: &SweepOptions,
    on_run: &(dyn Fn() + Sync),
) -> Result<SweepReport, SimError> {
    let grid = expand(specs)?;
    let has_pool = base
        .config
        .runners
        .iter()
        .any(|r| matches!(r.executor, Executor::Pool(_)));
    if let Some(s) = specs.iter().find(|s| s.knob.pool_only() && !has_pool) {
        return Err(SweepError::NoPool {
            knob: s.knob.name(),
        }
        .into());
    }
    let slot_runners: Vec<&str> = base
        .config
        .runners
        .iter()
        .filter(|r| r.slot_policy().is_some())
        .map(|r| r.name.as_str())
        .collect();
    if let Some(s) = specs
        .iter()
        .find(|s| s.knob.slots_only() && slot_runners.is_empty())
    {
        return Err(SweepError::NoSlots {
            knob: s.knob.name(),
        }
        .into());
    }
    let mut notes = Vec::new();
    // Sweeping `limit` asks what more machines would do: `concurrent` follows unless swept too.
    let lift_concurrent = specs.iter().any(|s| s.knob == Knob::Limit)
        && !specs.iter().any(|s| s.knob == Knob::Concurrent);
    if lift_concurrent {
        let lifted = grid.iter().any(|params| {
            let mut config = base.config.clone();
            apply_all(&mut config, params, true);
            config.concurrent > base.config.concurrent
        });
        if lifted {
            notes.push(format!(
                "concurrent (= {}) is raised to the sum of the runners' limits where the swept limit \
                 exceeds it; sweep concurrent too to keep it",
                base.config.concurrent
            ));
        }
    }
    if let Some(s) = specs.iter().find(|s| s.knob == Knob::Concurrent) {
        let limits: u32 = base.config.runners.iter().map(|r| r.limit).sum();
        if s.values.iter().any(|v| (*v as u32) < limits) {
            notes.push(format!(
                "some concurrent values are below the runners' limits ({limits} in all): they cap running jobs"
            ));
        }
    }
    let with_periods: Vec<&str> = base
        .config
        .runners
        .iter()
        .filter(|r| matches!(&r.executor, Executor::Pool(p) if !p.periods.is_empty()))
        .map(|r| r.name.as_str())
        .collect();
    if !with_periods.is_empty() {
        notes.push(format!(
            "swept Idle* values apply outside [[runners.machine.autoscaling]] periods of {}",
            with_periods.join(", ")
        ));
    }
    let policy_knobs = [
        Knob::PolicyIdleCount,
        Knob::PolicyIdleTime,
        Knob::ScaleFactor,
    ];
    if specs.iter().any(|s| policy_knobs.contains(&s.knob)) {
        notes.push(format!(
            "swept idle_count, idle_time and scale_factor apply to every [[runners.autoscaler.policy]] of {}; preemptive_mode stays as configured",
            slot_runners.join(", ")
        ));
    }
    let reps = options.replications.max(1);
    let seed = base.seed();
    let runs: Vec<(usize, u32)> = (0..grid.len())
        .flat_map(|p| (0..reps).map(move |i| (p, i)))
        .collect();
    let run_options = RunOptions {
        series_points: 0,
        stop: options.stop.clone(),
    };
    let results: Vec<Result<Report, SimError>> = runs
        .par_iter()
        .map(|&(p, i)| {
            if run_options.stopped() {
                return Err(SimError::Interrupted);
            }
            let mut scenario = base.clone().with_seed(seed_of(seed, i));
            apply_all(&mut scenario.config, &grid[p], lift_concurrent);
            let result = run(&scenario, &run_options);
            on_run();
            Ok(result?.report.with_price(options.cost_per_machine_hour))
        })
        .collect();
    // Errors other than an interruption are the same for every run: report the first.
    let mut results = results;
    if let Some(i) = results
        .iter()
        .position(|r| matches!(r, Err(e) if !matches!(e, SimError::Interrupted)))
        && let Err(e) = results.swap_remove(i)
    {
        return Err(e);
    }
    let mut events = 0;
    let mut interrupted = 0;
    let mut points = Vec::new();
    for (params, runs) in grid.into_iter().zip(results.chunks(reps as usize)) {
        // Only points with every replication finished: a partial point would be compared unfairly.
        let reports: Vec<Report> = runs
            .iter()
            .filter_map(|r| r.as_ref().ok().cloned())
            .collect();
        events += reports.iter().map(|r| r.perf.events).sum::<u64>();
        if reports.len() < runs.len() {
            interrupted += 1;
            continue;
        }
        points.push(SweepPoint {
            params,
            summary: Summary::of(seed, &reports),
        });
    }
    if points.is_empty() && interrupted > 0 {
        return Err(SimError::Interrupted);
    }
    if interrupted > 0 {
        notes.push(format!(
            "interrupted: {} of {} configurations finished; ids count the finished ones",
            points.len(),
            points.len() + interrupted
        ));
    }
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
        perf: Perf::counted(events),
    })
}

/// Sets a point's knobs; with `lift_concurrent`, raises `concurrent` to the sum of the limits
/// (when none is unlimited) so that it does not cap them.
fn apply_all(config: &mut Config, params: &Params, lift_concurrent: bool) {
    for (knob, v) in &params.0 {
        knob.apply(config, *v);
    }
    if lift_concurrent && config.runners.iter().all(|r| r.limit > 0) {
        let sum = config.runners.iter().map(|r| r.limit).sum::<u32>();
        config.concurrent = config.concurrent.max(sum);
    }
}

/// Points not dominated on (mean cost, mean p95 wait), cheapest first.
pub fn pareto_front(points: &[SweepPoint]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..points.len())
        .filter(|&i| points[i].summary.unstable.is_none())
        .collect();
    let key = |i: usize| {
        (
            points[i].summary.cost_or_hours().mean,
            points[i].summary.wait_seconds.p95.mean,
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
        let p95 = key(i).1;
        if p95 < best {
            best = p95;
            front.push(i);
        }
    }
    front
}

/// The cheapest point (by mean cost) whose p95 wait meets the SLO at the upper bound of its 95 %
/// interval; else the one with the lowest upper bound (cheaper on ties).
pub fn recommend(points: &[SweepPoint], slo_p95_wait_seconds: f64) -> Option<Recommendation> {
    let cost = |i: usize| points[i].summary.cost_or_hours();
    let p95 = |i: usize| points[i].summary.wait_seconds.p95;
    let cmp = |a: (f64, f64, usize), b: (f64, f64, usize)| {
        a.partial_cmp(&b).unwrap_or(std::cmp::Ordering::Equal)
    };
    let stable = |i: &usize| points[*i].summary.unstable.is_none();
    let meets = |i: &usize| stable(i) && p95(*i).high <= slo_p95_wait_seconds;
    let all = (0..points.len()).filter(stable);
    let best = all.clone().filter(meets).min_by(|&a, &b| {
        cmp(
            (cost(a).mean, p95(a).high, a),
            (cost(b).mean, p95(b).high, b),
        )
    });
    let (pick, meets_slo) = match best {
        Some(i) => (i, true),
        None => (
            all.clone().min_by(|&a, &b| {
                cmp(
                    (p95(a).high, cost(a).mean, a),
                    (p95(b).high, cost(b).mean, b),
                )
            })?,
            false,
        ),
    };
    let mut indistinguishable = Vec::new();
    let mut uncertain = Vec::new();
    if meets_slo {
        let base = &points[pick].summary.samples.cost;
        let mut same: Vec<usize> = all
            .clone()
            .filter(|&j| j != pick && meets(&j))
            .filter(|&j| {
                let diff: Vec<f64> = points[j]
                    .summary
                    .samples
                    .cost
                    .iter()
                    .zip(base)
                    .map(|(x, y)| x - y)
                    .collect();
                Estimate::of(&diff).low <= 0.0
            })
            .collect();
        same.sort_by(|&a, &b| cmp((cost(a).mean, 0.0, a), (cost(b).mean, 0.0, b)));
        indistinguishable = same.into_iter().take(5).map(|j| j + 1).collect();
        uncertain = all
            .filter(|&j| {
                cost(j).mean < cost(pick).mean
                    && p95(j).mean <= slo_p95_wait_seconds
                    && p95(j).high > slo_p95_wait_seconds
            })
            .map(|j| j + 1)
            .collect();
    }
    Some(Recommendation {
        id: pick + 1,
        index: pick,
        params: points[pick].params.clone(),
        meets_slo,
        p95_wait_seconds: p95(pick),
        cost: cost(pick),
        indistinguishable,
        uncertain,
    })
}

/// `#3, #4 and #7`.
fn ids(ids: &[usize]) -> String {
    let names: Vec<String> = ids.iter().map(|i| format!("#{i}")).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

impl SweepReport {
    /// The JSON document: every point (its id, params and summary), the Pareto front and the
    /// recommendation, naming points by id (counted from 1, as in the table).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.to_value()).unwrap_or_default()
    }

    /// [`SweepReport::to_json`] as a value, to nest in another document.
    pub fn to_value(&self) -> serde_json::Value {
        #[derive(Serialize)]
        struct Point<'a> {
            id: usize,
            params: &'a Params,
            #[serde(flatten)]
            summary: &'a Summary,
        }
        #[derive(Serialize)]
        struct Doc<'a> {
            slo_p95_wait_seconds: Option<f64>,
            cost_per_machine_hour: Option<f64>,
            replications: u32,
            points: Vec<Point<'a>>,
            pareto: Vec<usize>,
            recommended: &'a Option<Recommendation>,
            notes: &'a [String],
            perf: &'a Perf,
        }
        let doc = Doc {
            slo_p95_wait_seconds: self.options.slo_p95_wait_seconds,
            cost_per_machine_hour: self.options.cost_per_machine_hour,
            replications: self.options.replications.max(1),
            points: self
                .points
                .iter()
                .enumerate()
                .map(|(i, p)| Point {
                    id: i + 1,
                    params: &p.params,
                    summary: &p.summary,
                })
                .collect(),
            pareto: self.pareto.iter().map(|i| i + 1).collect(),
            recommended: &self.recommended,
            notes: &self.notes,
            perf: &self.perf,
        };
        serde_json::to_value(&doc).unwrap_or_default()
    }

    /// A table of the points (means ± the half-width of their 95 % intervals), the Pareto front
    /// and the verdict.
    pub fn table(&self) -> String {
        self.table_of(false)
    }

    /// [`SweepReport::table`] listing only the points the verdict names and the Pareto front.
    pub fn short_table(&self) -> String {
        self.table_of(true)
    }

    fn table_of(&self, short: bool) -> String {
        let mut out = String::new();
        let named = |i: usize| {
            self.pareto.contains(&i)
                || self.recommended.as_ref().is_some_and(|r| {
                    r.index == i
                        || r.indistinguishable.contains(&(i + 1))
                        || r.uncertain.contains(&(i + 1))
                })
        };
        let priced = self.options.cost_per_machine_hour.is_some();
        let widths: Vec<usize> = self.knobs.iter().map(|k| k.name().len().max(6)).collect();
        let _ = write!(out, "  {:>4}", "#");
        for (k, w) in self.knobs.iter().zip(&widths) {
            let _ = write!(out, "  {:>w$}", k.name());
        }
        let _ = write!(
            out,
            "  {:>14}  {:>8}  {:>7}  {:>6}  {:>13}",
            "p95 wait", "mean", "waited", "failed", "machine-h",
        );
        let _ = writeln!(out, "{}", if priced { "          cost" } else { "" });
        let mut hidden = 0;
        let mut unstable = Vec::new();
        for (i, p) in self.points.iter().enumerate() {
            if short && !named(i) && p.summary.unstable.is_none() {
                hidden += 1;
                continue;
            }
            let mark = match &self.recommended {
                _ if p.summary.unstable.is_some() => '!',
                Some(r) if r.index == i => '>',
                _ if self.pareto.contains(&i) => '*',
                _ => ' ',
            };
            let _ = write!(out, "{mark} {:>4}", i + 1);
            for ((k, v), w) in p.params.0.iter().zip(&widths) {
                let _ = write!(out, "  {:>w$}", k.show(*v));
            }
            let s = &p.summary;
            if let Some(u) = &s.unstable {
                unstable.push(format!("#{}: {}", i + 1, u.verdict()));
                if u.stopped {
                    let _ = writeln!(out, "  {:>14}", "unstable");
                    continue;
                }
            }
            let p95 = s.wait_seconds.p95;
            let hours = s.machine_hours;
            let cost = s
                .cost
                .map(|c| format!("  {:>12}", format!("{:.2} ±{:.2}", c.mean, c.half_width())))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:>14}  {:>8}  {:>7}  {:>6}  {:>13}{}",
                format!("{} ±{}", human_secs(p95.mean), human_secs(p95.half_width())),
                human_secs(s.wait_seconds.mean.mean),
                percent(s.p_wait.mean),
                format!("{:.0}", s.jobs_failed.mean),
                format!("{:.1} ±{:.1}", hours.mean, hours.half_width()),
                cost
            );
        }
        for line in &unstable {
            let _ = writeln!(out, "  ! {line}");
        }
        if hidden > 0 {
            let _ = writeln!(
                out,
                "  ({hidden} more configurations, none better on both cost and p95 wait: --format json lists them all)"
            );
        }
        let _ = writeln!(out);
        let reps = self.options.replications.max(1);
        let _ = writeln!(
            out,
            "  {reps} replications per configuration, the same seeds for all; ± is the 95% confidence interval"
        );
        let front: Vec<usize> = self.pareto.iter().map(|i| i + 1).collect();
        if !front.is_empty() {
            let _ = writeln!(
                out,
                "  * Pareto front (mean cost vs mean p95 wait): {}",
                ids(&front)
            );
        }
        let what = if priced { "cost" } else { "machine-hours" };
        match (&self.recommended, self.options.slo_p95_wait_seconds) {
            (Some(r), Some(slo)) if r.meets_slo => {
                let _ = writeln!(
                    out,
                    "  > recommended: #{} {} — p95 wait at most {} (upper bound; mean {}) ≤ SLO {}, {what} {:.2} ±{:.2}",
                    r.id,
                    r.params.describe(),
                    human_secs(r.p95_wait_seconds.high),
                    human_secs(r.p95_wait_seconds.mean),
                    human_secs(slo),
                    r.cost.mean,
                    r.cost.half_width()
                );
                if !r.indistinguishable.is_empty() {
                    let n = r.indistinguishable.len();
                    let _ = writeln!(
                        out,
                        "    {} {} statistically indistinguishable from #{} in {what} (the paired difference's interval holds 0): {}",
                        ids(&r.indistinguishable),
                        if n == 1 {
                            "meets the SLO too and is"
                        } else {
                            "meet the SLO too and are"
                        },
                        r.id,
                        if n == 1 {
                            "either will do"
                        } else {
                            "any of them will do"
                        }
                    );
                }
                if !r.uncertain.is_empty() {
                    let n = r.uncertain.len();
                    let _ = writeln!(
                        out,
                        "    {} {} cheaper and {} the SLO on average, but not at the 95% upper bound",
                        ids(&r.uncertain),
                        if n == 1 { "is" } else { "are" },
                        if n == 1 { "meets" } else { "meet" }
                    );
                }
            }
            (Some(r), Some(slo)) => {
                let _ = writeln!(
                    out,
                    "  no configuration meets p95 wait ≤ {} at its 95% upper bound; closest is #{} {} with p95 wait at most {} (mean {}; {what} {:.2})",
                    human_secs(slo),
                    r.id,
                    r.params.describe(),
                    human_secs(r.p95_wait_seconds.high),
                    human_secs(r.p95_wait_seconds.mean),
                    r.cost.mean
                );
            }
            (None, Some(_)) => {
                let _ = writeln!(
                    out,
                    "  no configuration keeps up with the traffic: raise limit (and concurrent)"
                );
            }
            _ => {
                let _ = writeln!(out, "  give --slo-p95-wait (e.g. 2m) for a recommendation");
            }
        }
        for note in &self.notes {
            let _ = writeln!(out, "  note: {note}");
        }
        out
    }

    /// How fast the sweep went: the one line that varies between runs.
    pub fn perf_line(&self) -> String {
        let p = &self.perf;
        format!(
            "  perf: {} runs, {} events in {:.2} s ({:.2} M events/s), peak RSS {:.1} MiB\n",
            self.points.len() * self.options.replications.max(1) as usize,
            crate::report::group(p.events),
            p.wall_seconds,
            p.events_per_second / 1e6,
            p.peak_rss_bytes as f64 / (1024.0 * 1024.0)
        )
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

    /// A point from its replications' (cost, p95 wait).
    fn point(runs: &[(f64, f64)]) -> SweepPoint {
        let reports: Vec<Report> = runs
            .iter()
            .map(|&(cost, p95)| {
                let mut r = Report {
                    cost: Some(cost),
                    ..Report::default()
                };
                r.wait_seconds.p95 = p95;
                r
            })
            .collect();
        SweepPoint {
            params: Params(vec![(Knob::IdleCount, runs[0].0)]),
            summary: Summary::of(0, &reports),
        }
    }

    #[test]
    fn pareto_and_recommendation() {
        let flat = |cost: f64, p95: f64| point(&[(cost, p95); 3]);
        let pts = vec![
            flat(10.0, 300.0),
            flat(20.0, 60.0),
            flat(15.0, 400.0),
            flat(30.0, 5.0),
            flat(20.0, 90.0),
        ];
        assert_eq!(pareto_front(&pts), vec![0, 1, 3]);
        let r = recommend(&pts, 120.0).unwrap();
        assert_eq!((r.index, r.id, r.meets_slo), (1, 2, true));
        // #5 costs exactly as much in every replication: indistinguishable.
        assert_eq!(r.indistinguishable, vec![5]);
        let r = recommend(&pts, 1.0).unwrap();
        assert_eq!(
            (r.index, r.meets_slo, r.p95_wait_seconds.high),
            (3, false, 5.0)
        );
    }

    #[test]
    fn the_slo_must_hold_at_the_upper_bound() {
        // #1 meets a 60 s SLO on average (mean 55 s) but its interval reaches past it; #2 costs
        // more and holds it at the upper bound; #3 costs more still, by a margin the replications
        // resolve.
        let pts = vec![
            point(&[(10.0, 40.0), (10.0, 70.0), (10.0, 55.0)]),
            point(&[(12.0, 30.0), (12.5, 35.0), (12.2, 32.0)]),
            point(&[(14.0, 20.0), (14.5, 21.0), (14.2, 22.0)]),
        ];
        let r = recommend(&pts, 60.0).unwrap();
        assert_eq!((r.id, r.meets_slo), (2, true));
        assert_eq!(r.uncertain, vec![1]);
        assert!(r.indistinguishable.is_empty(), "{r:?}");
        assert!(r.p95_wait_seconds.high <= 60.0 && r.p95_wait_seconds.mean > 30.0);
    }
}
