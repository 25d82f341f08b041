//! Replications: one scenario run over N independent seeds, and every figure of its report as a mean
//! with a 95 % confidence interval (Student's t over the replications).
//!
//! Replication `i` of base seed `s` always runs with [`seed_of`]`(s, i)`, whatever the config: a
//! sweep's points see the same days of traffic (common random numbers), so differences between
//! them come from the config, and the same base seed gives the same summary, byte for byte.

use std::fmt::Write as _;

use rayon::prelude::*;
use serde::Serialize;

use crate::SimError;
use crate::engine::{RunOptions, RunResult, Scenario, run};
use crate::overload::Unstable;
use crate::report::{Perf, Report, group, human_secs, percent};
use crate::stats::round3;

/// Replications when none are asked for: tight enough intervals for a stable recommendation on the
/// bundled workloads, and a day-long workload × a 21-point plan still runs in a few seconds.
pub const DEFAULT_REPLICATIONS: u32 = 30;

/// Replications above this are refused: the interval narrows with √N, so more buys little.
pub const MAX_REPLICATIONS: u32 = 1_000;

/// The seed of replication `i` (from 0): the base seed itself for the first, so one replication is
/// the single run of that seed; SplitMix64 of the base and `i` for the others.
pub fn seed_of(base: u64, i: u32) -> u64 {
    if i == 0 {
        return base;
    }
    let mut z = base.wrapping_add(u64::from(i).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A mean with its 95 % confidence interval, rounded to 3 decimals.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Estimate {
    pub mean: f64,
    pub low: f64,
    pub high: f64,
}

impl Estimate {
    /// The mean of `xs` and Student's t interval around it (a point, for fewer than 2 values).
    pub fn of(xs: &[f64]) -> Estimate {
        let n = xs.len();
        if n == 0 {
            return Estimate::default();
        }
        let mean = xs.iter().sum::<f64>() / n as f64;
        if n < 2 {
            let m = round3(mean);
            return Estimate {
                mean: m,
                low: m,
                high: m,
            };
        }
        let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1) as f64;
        let half = t975(n - 1) * (var / n as f64).sqrt();
        Estimate {
            mean: round3(mean),
            low: round3(mean - half),
            high: round3(mean + half),
        }
    }

    /// Half the interval's width.
    pub fn half_width(&self) -> f64 {
        round3((self.high - self.low) / 2.0)
    }

    /// Whether the interval holds `x`.
    pub fn contains(&self, x: f64) -> bool {
        self.low <= x && x <= self.high
    }
}

/// The 97.5 % quantile of Student's t with `df` degrees of freedom (a table to 30, then the
/// Cornish–Fisher expansion, within 0.001): what [`Estimate`]'s intervals are made with.
pub fn t975(df: usize) -> f64 {
    const TABLE: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042,
    ];
    if let Some(t) = df.checked_sub(1).and_then(|i| TABLE.get(i)) {
        return *t;
    }
    let z = 1.959_964;
    let d = df as f64;
    z + (z * z * z + z) / (4.0 * d)
        + (5.0 * z.powi(5) + 16.0 * z.powi(3) + 3.0 * z) / (96.0 * d * d)
}

/// Wait percentiles over replications: each replication's percentile, then their mean and interval.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WaitEstimates {
    pub mean: Estimate,
    pub p50: Estimate,
    pub p90: Estimate,
    pub p95: Estimate,
    pub p99: Estimate,
    pub max: Estimate,
}

/// [`crate::report::WaitByCause`] over replications.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CauseEstimates {
    pub machine_creating: Estimate,
    pub limit_or_concurrent: Estimate,
    pub next_request: Estimate,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MachineEstimates {
    pub creating: Estimate,
    pub idle: Estimate,
    pub busy: Estimate,
    pub removing: Estimate,
    pub total: Estimate,
}

/// Per-replication values kept for paired comparisons between the points of a sweep.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Samples {
    /// Cost, or machine-hours without a price.
    pub cost: Vec<f64>,
    pub p95_wait: Vec<f64>,
}

/// Every figure of [`Report`] over the replications. Field order is the JSON order.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Summary {
    pub base_seed: u64,
    pub replications: u32,
    pub simulated_seconds: Estimate,
    /// Whether every replication ended with every job finished or failed.
    pub drained: bool,
    pub jobs: Estimate,
    pub jobs_failed: Estimate,
    pub jobs_pending: Estimate,
    pub wait_seconds: WaitEstimates,
    pub wait_by_cause: CauseEstimates,
    pub p_wait: Estimate,
    pub mean_queued: Estimate,
    pub machine_seconds: MachineEstimates,
    pub machine_hours: Estimate,
    pub mean_machines: Estimate,
    pub utilization: Estimate,
    pub machines_created: Estimate,
    pub machines_removed: Estimate,
    pub creation_failures: Estimate,
    pub machines_lost: Estimate,
    pub peak_machines: Estimate,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<Estimate>,
    /// The first replication that could not keep up with its traffic, if any: the figures above
    /// then cover only what was simulated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unstable: Option<Unstable>,
    #[serde(skip)]
    pub samples: Samples,
}

impl Summary {
    /// Summarises the reports of replications `0..n` of `base_seed`, in that order.
    pub fn of(base_seed: u64, reports: &[Report]) -> Summary {
        let e =
            |f: &dyn Fn(&Report) -> f64| Estimate::of(&reports.iter().map(f).collect::<Vec<_>>());
        let n = |f: &dyn Fn(&Report) -> u64| e(&|r| f(r) as f64);
        let priced = reports.first().is_some_and(|r| r.cost.is_some());
        Summary {
            base_seed,
            replications: reports.len() as u32,
            simulated_seconds: e(&|r| r.simulated_seconds),
            drained: reports.iter().all(|r| r.drained),
            jobs: n(&|r| r.jobs),
            jobs_failed: n(&|r| r.jobs_failed),
            jobs_pending: n(&|r| r.jobs_pending),
            wait_seconds: WaitEstimates {
                mean: e(&|r| r.wait_seconds.mean),
                p50: e(&|r| r.wait_seconds.p50),
                p90: e(&|r| r.wait_seconds.p90),
                p95: e(&|r| r.wait_seconds.p95),
                p99: e(&|r| r.wait_seconds.p99),
                max: e(&|r| r.wait_seconds.max),
            },
            wait_by_cause: CauseEstimates {
                machine_creating: e(&|r| r.wait_by_cause.machine_creating),
                limit_or_concurrent: e(&|r| r.wait_by_cause.limit_or_concurrent),
                next_request: e(&|r| r.wait_by_cause.next_request),
            },
            p_wait: e(&|r| r.p_wait),
            mean_queued: e(&|r| r.mean_queued),
            machine_seconds: MachineEstimates {
                creating: e(&|r| r.machine_seconds.creating),
                idle: e(&|r| r.machine_seconds.idle),
                busy: e(&|r| r.machine_seconds.busy),
                removing: e(&|r| r.machine_seconds.removing),
                total: e(&|r| r.machine_seconds.total),
            },
            machine_hours: e(&|r| r.machine_hours()),
            mean_machines: e(&|r| r.mean_machines),
            utilization: e(&|r| r.utilization),
            machines_created: n(&|r| r.machines_created),
            machines_removed: n(&|r| r.machines_removed),
            creation_failures: n(&|r| r.creation_failures),
            machines_lost: n(&|r| r.machines_lost),
            peak_machines: n(&|r| r.peak_machines),
            cost: priced.then(|| e(&|r| r.cost.unwrap_or(0.0))),
            unstable: reports.iter().find_map(|r| r.unstable.clone()),
            samples: Samples {
                cost: reports.iter().map(Report::cost_or_hours).collect(),
                p95_wait: reports.iter().map(|r| r.wait_seconds.p95).collect(),
            },
        }
    }

    /// What a sweep minimises: the mean cost, or machine-hours without a price.
    pub fn cost_or_hours(&self) -> Estimate {
        self.cost.unwrap_or(self.machine_hours)
    }

    /// A readable summary: each figure's mean, and ± the half-width of its 95 % interval.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let w = &self.wait_seconds;
        let m = &self.machine_seconds;
        if let Some(u) = &self.unstable {
            let why = if u.stopped && u.evidence == "rates" {
                "the queue would grow without bound, so nothing was simulated"
            } else if u.stopped {
                "the queue grows without bound, so the run was stopped and the figures below cover \
                 only what was simulated"
            } else {
                "the queue grows until arrivals stop"
            };
            let _ = writeln!(
                out,
                "{}\n  {why}: raise limit (and concurrent), or shorten the jobs\n",
                u.verdict()
            );
            if u.stopped && u.evidence == "rates" {
                // Nothing was simulated: there are no figures to show.
                return out;
            }
        }
        let _ = writeln!(
            out,
            "{} replication{} of {} each (95% confidence intervals as ±): {} jobs completed, {} failed{}",
            self.replications,
            if self.replications == 1 { "" } else { "s" },
            human_secs(self.simulated_seconds.mean),
            pm_count(self.jobs),
            pm_count(self.jobs_failed),
            if self.drained {
                String::new()
            } else {
                format!(
                    ", {} still pending (not drained)",
                    pm_count(self.jobs_pending)
                )
            },
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  job wait     mean      p50      p90      p95      p99      max   waited"
        );
        let waits = [w.mean, w.p50, w.p90, w.p95, w.p99, w.max];
        let _ = write!(out, "           ");
        for x in waits {
            let _ = write!(out, " {:>8}", human_secs(x.mean));
        }
        let _ = writeln!(out, " {:>8}", percent(self.p_wait.mean));
        let _ = write!(out, "           ");
        for x in waits {
            let _ = write!(out, " {:>8}", format!("±{}", human_secs(x.half_width())));
        }
        let _ = writeln!(
            out,
            " {:>8}",
            format!("±{}", percent(self.p_wait.half_width()))
        );
        let c = &self.wait_by_cause;
        let _ = writeln!(
            out,
            "  mean wait by cause: {} ±{} for a machine being created, {} ±{} at limit or concurrent, \
             {} ±{} for the next job request",
            human_secs(c.machine_creating.mean),
            human_secs(c.machine_creating.half_width()),
            human_secs(c.limit_or_concurrent.mean),
            human_secs(c.limit_or_concurrent.half_width()),
            human_secs(c.next_request.mean),
            human_secs(c.next_request.half_width()),
        );
        let _ = writeln!(out);
        let span = self.simulated_seconds.mean.max(f64::MIN_POSITIVE);
        let states = [m.creating, m.idle, m.busy, m.removing, m.total];
        let _ = writeln!(
            out,
            "  machines        creating      idle      busy  removing     total      peak"
        );
        let row = |out: &mut String, label: &str, f: &dyn Fn(Estimate) -> String| {
            let _ = write!(out, "  {label:<14}");
            for x in states {
                let _ = write!(out, " {:>9}", f(x));
            }
        };
        row(&mut out, "mean", &|x| format!("{:.1}", x.mean / span));
        let _ = writeln!(out, " {:>9.1}", self.peak_machines.mean);
        row(&mut out, "", &|x| format!("±{:.1}", x.half_width() / span));
        let _ = writeln!(
            out,
            " {:>9}",
            format!("±{:.1}", self.peak_machines.half_width())
        );
        row(&mut out, "machine-hours", &|x| {
            format!("{:.1}", x.mean / 3600.0)
        });
        let _ = writeln!(out);
        row(&mut out, "", &|x| {
            format!("±{:.1}", x.half_width() / 3600.0)
        });
        let _ = writeln!(out);
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  machines created {}, removed {} (failed creations are removed too), creation failures {}, lost {}",
            pm_count(self.machines_created),
            pm_count(self.machines_removed),
            pm_count(self.creation_failures),
            pm_count(self.machines_lost),
        );
        let _ = writeln!(
            out,
            "  utilisation {} ±{}; mean queue {:.2} ±{:.2} jobs",
            percent(self.utilization.mean),
            percent(self.utilization.half_width()),
            self.mean_queued.mean,
            self.mean_queued.half_width(),
        );
        if let Some(cost) = self.cost {
            let _ = writeln!(
                out,
                "  cost {:.2} ±{:.2} for {:.1} ±{:.1} machine-hours",
                cost.mean,
                cost.half_width(),
                self.machine_hours.mean,
                self.machine_hours.half_width()
            );
        }
        out
    }
}

/// `2,880 ±31` (or just `0` when every replication agrees).
fn pm_count(x: Estimate) -> String {
    let mean = group(x.mean.round() as u64);
    if x.half_width() < 0.5 {
        mean
    } else {
        format!("{mean} ±{}", group(x.half_width().round() as u64))
    }
}

/// The replications of one scenario.
#[derive(Clone, Debug)]
pub struct Replicated {
    pub summary: Summary,
    /// The first replication (the base seed's own run), with its series when asked for.
    pub first: RunResult,
    /// Whether the run was interrupted: the summary covers the replications that finished.
    pub interrupted: bool,
    pub perf: Perf,
}

/// Runs `n` replications of `scenario` in parallel. `options` apply to the first (series for plots);
/// `on_run` is called as each replication finishes.
pub fn replicate(
    scenario: &Scenario,
    n: u32,
    options: &RunOptions,
    price: Option<f64>,
    on_run: &(dyn Fn() + Sync),
) -> Result<Replicated, SimError> {
    let base = scenario.seed();
    let results: Vec<Result<RunResult, SimError>> = (0..n.max(1))
        .into_par_iter()
        .map(|i| {
            if options.stopped() {
                return Err(SimError::Interrupted);
            }
            let s = scenario.clone().with_seed(seed_of(base, i));
            let result = if i == 0 {
                run(&s, options)
            } else {
                let plain = RunOptions {
                    series_points: 0,
                    stop: options.stop.clone(),
                };
                run(&s, &plain)
            };
            on_run();
            result
        })
        .collect();
    // Interrupted: what finished, in replication order (the first must be among them).
    let interrupted = results
        .iter()
        .any(|r| matches!(r, Err(SimError::Interrupted)));
    let mut results = results
        .into_iter()
        .filter(|r| !matches!(r, Err(SimError::Interrupted)))
        .collect::<Result<Vec<_>, _>>()?;
    if results.is_empty() || (interrupted && results[0].report.seed != base) {
        return Err(SimError::Interrupted);
    }
    for r in &mut results {
        r.report = std::mem::take(&mut r.report).with_price(price);
    }
    let reports: Vec<Report> = results.iter().map(|r| r.report.clone()).collect();
    let events = reports.iter().map(|r| r.perf.events).sum();
    let summary = Summary::of(base, &reports);
    let first = results.swap_remove(0);
    Ok(Replicated {
        summary,
        first,
        interrupted,
        perf: Perf::counted(events),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimates_use_students_t() {
        // Mean 2, sample sd 1, n = 3: half-width 4.303 / √3.
        let e = Estimate::of(&[1.0, 2.0, 3.0]);
        assert_eq!((e.mean, e.low, e.high), (2.0, -0.484, 4.484));
        assert_eq!(Estimate::of(&[5.0]).high, 5.0);
        assert_eq!(Estimate::of(&[7.0; 10]).half_width(), 0.0);
        // The expansion meets the table at 30 and tends to the normal quantile.
        assert!((t975(31) - 2.040).abs() < 0.001, "{}", t975(31));
        assert!((t975(120) - 1.980).abs() < 0.001, "{}", t975(120));
    }

    #[test]
    fn seeds_are_the_base_then_distinct() {
        assert_eq!(seed_of(7, 0), 7);
        let seeds: std::collections::BTreeSet<u64> = (0..1000).map(|i| seed_of(7, i)).collect();
        assert_eq!(seeds.len(), 1000);
        assert_ne!(seed_of(7, 1), seed_of(8, 1));
    }
}
