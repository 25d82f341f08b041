//! Sweeps: run a scenario over the cartesian product of knob values, in parallel, and find the cheapest
//! configuration that meets a wait SLO.
//!
//! Every point runs the same replications (the same seeds), so every point sees the same jobs
//! (common random numbers): differences between points come from the config, not from luck. The
//! recommendation holds at the pessimistic end: the p95 wait's upper 95 % bound meets the SLO.
//!
//! ```text
//! mod.rs     running the points, the Pareto front, the recommendation
//! knobs.rs   the knobs, `--sweep KEY=RANGE`, the grid of points
//! render.rs  the report as text and JSON
//! ```

mod knobs;
mod render;

use drover_core::{Config, Executor};
use rayon::prelude::*;
use serde::Serialize;

use crate::SimError;
use crate::engine::{RunOptions, Scenario, run};
use crate::replicate::{DEFAULT_REPLICATIONS, Estimate, Summary, seed_of};
use crate::report::{Perf, Report};

pub use knobs::{Knob, Params, SweepError, SweepSpec, expand};

/// Sweeps larger than this are refused: they would run for hours and are almost always a typo.
pub const MAX_POINTS: usize = 10_000;

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
