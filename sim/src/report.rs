//! What a run found: the JSON document and the table an operator reads.
//!
//! Every number outside `perf` depends only on the inputs and the seed: floats are rounded to fixed
//! decimals, maps are ordered, and nothing reads the clock.

use std::fmt::Write as _;

use drover_core::Timestamp;
use drover_core::state::State;
use serde::Serialize;

use crate::overload::Unstable;
use crate::stats::{Stats, round3};
pub use crate::units::{group, human_secs, percent};

/// The result of one simulation run. Field order is the JSON order.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Report {
    pub seed: u64,
    /// From the workload's start to the end of the run (the horizon, or the last job's end if later).
    pub simulated_seconds: f64,
    /// Whether every job that arrived finished or was failed before the run ended.
    pub drained: bool,
    /// Jobs that completed successfully.
    pub jobs: u64,
    /// Jobs reported failed: never started (timeout, creation failures) or aborted (machine lost).
    pub jobs_failed: u64,
    /// Jobs that arrived but had not ended when the run stopped (0 when drained).
    pub jobs_pending: u64,
    /// From arrival in the coordinator's queue to the start on a machine, over started jobs.
    pub wait_seconds: WaitSeconds,
    /// The mean wait split by why jobs waited (the parts add up to the mean wait, up to the jobs
    /// still waiting when the run ended).
    pub wait_by_cause: WaitByCause,
    /// Fraction of started jobs that waited at all.
    pub p_wait: f64,
    /// Mean number of jobs waiting (time average).
    pub mean_queued: f64,
    pub machine_seconds: MachineSeconds,
    /// Mean machines in any state (time average).
    pub mean_machines: f64,
    /// Busy machine-seconds over all machine-seconds.
    pub utilization: f64,
    pub machines_created: u64,
    pub machines_removed: u64,
    pub creation_failures: u64,
    pub machines_lost: u64,
    pub peak_machines: u64,
    /// Machine-hours × the price, when a price is given.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
    /// Set when the configuration cannot keep up with the traffic: the run was stopped (or not
    /// started) and its figures cover only what was simulated.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unstable: Option<Unstable>,
    pub perf: Perf,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WaitSeconds {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

/// Seconds of the mean wait per cause, judged from the fleet while jobs waited.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WaitByCause {
    /// No machine free, machines being created.
    pub machine_creating: f64,
    /// No machine free and none may be added: `limit` or `concurrent` reached.
    pub limit_or_concurrent: f64,
    /// A machine free or allowed: waiting for the next job request.
    pub next_request: f64,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct MachineSeconds {
    pub creating: f64,
    pub idle: f64,
    pub busy: f64,
    pub removing: f64,
    pub total: f64,
}

/// How fast the run went on this machine: the only part of a report that varies between runs. The
/// simulator reads no clock: it counts events, and whoever times the run fills in the rest (0 until
/// then).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Perf {
    /// Events handled by the core.
    pub events: u64,
    pub wall_seconds: f64,
    pub events_per_second: f64,
    /// The process's peak resident set (VmHWM), 0 where unknown.
    pub peak_rss_bytes: u64,
}

impl Perf {
    /// `events` handled, not timed.
    pub fn counted(events: u64) -> Perf {
        Perf {
            events,
            ..Perf::default()
        }
    }
}

impl Report {
    pub(crate) fn build(
        seed: u64,
        stats: &Stats,
        state: &State,
        start: Timestamp,
        end: Timestamp,
        drained: bool,
        perf: Perf,
    ) -> Report {
        let span_ms = end.0.saturating_sub(start.0);
        let secs = |ms: u128| round3(ms as f64 / 1000.0);
        let ms = &stats.machine_ms;
        let total_ms: u128 = ms.iter().sum();
        let started = stats.waits.len();
        let q = |p: f64| {
            if started == 0 {
                0.0
            } else {
                round3(stats.waits.value_at_quantile(p) as f64 / 1000.0)
            }
        };
        let per_time = |x: u128| {
            if span_ms == 0 {
                0.0
            } else {
                round3(x as f64 / span_ms as f64)
            }
        };
        let s = state.stats();
        Report {
            seed,
            simulated_seconds: secs(u128::from(span_ms)),
            drained,
            jobs: stats.completed,
            jobs_failed: stats.failed,
            jobs_pending: stats.arrived - stats.completed - stats.failed,
            wait_seconds: WaitSeconds {
                mean: if started == 0 {
                    0.0
                } else {
                    round3(stats.wait_sum_ms as f64 / started as f64 / 1000.0)
                },
                p50: q(0.5),
                p90: q(0.9),
                p95: q(0.95),
                p99: q(0.99),
                max: round3(stats.wait_max_ms as f64 / 1000.0),
            },
            wait_by_cause: {
                let per_job = |ms: u128| {
                    if started == 0 {
                        0.0
                    } else {
                        round3(ms as f64 / started as f64 / 1000.0)
                    }
                };
                let c = &stats.waiting_by_cause_ms;
                WaitByCause {
                    limit_or_concurrent: per_job(c[0]),
                    machine_creating: per_job(c[1]),
                    next_request: per_job(c[2]),
                }
            },
            p_wait: if started == 0 {
                0.0
            } else {
                round_frac(stats.waited as f64 / started as f64)
            },
            mean_queued: per_time(stats.waiting_ms),
            machine_seconds: MachineSeconds {
                creating: secs(ms[0]),
                idle: secs(ms[1]),
                busy: secs(ms[2]),
                removing: secs(ms[3]),
                total: secs(total_ms),
            },
            mean_machines: per_time(total_ms),
            utilization: if total_ms == 0 {
                0.0
            } else {
                round_frac(ms[2] as f64 / total_ms as f64)
            },
            machines_created: s.machines_created,
            machines_removed: s.machines_removed,
            creation_failures: s.creation_failures,
            machines_lost: s.machines_lost,
            peak_machines: stats.peak_machines,
            cost: None,
            unstable: None,
            perf,
        }
    }

    /// Machine-hours of every state (creating and removing machines are billed too).
    pub fn machine_hours(&self) -> f64 {
        self.machine_seconds.total / 3600.0
    }

    /// Sets `cost` from a price per machine-hour.
    pub fn with_price(mut self, per_machine_hour: Option<f64>) -> Report {
        self.cost = per_machine_hour.map(|p| round3(self.machine_hours() * p));
        self
    }

    /// What a sweep minimises: the cost, or machine-hours without a price.
    pub fn cost_or_hours(&self) -> f64 {
        self.cost.unwrap_or_else(|| round3(self.machine_hours()))
    }

    /// The JSON document, pretty-printed.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The JSON document without `perf`: identical for the same inputs and seed on any machine.
    pub fn to_json_without_perf(&self) -> String {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            o.remove("perf");
        }
        serde_json::to_string_pretty(&v).unwrap_or_default()
    }

    /// A readable summary.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let w = &self.wait_seconds;
        let m = &self.machine_seconds;
        if let Some(u) = &self.unstable {
            let _ = writeln!(out, "{}", u.verdict());
        }
        let _ = writeln!(
            out,
            "simulated {}: {} jobs completed, {} failed{}",
            human_secs(self.simulated_seconds),
            group(self.jobs),
            group(self.jobs_failed),
            if self.drained {
                String::new()
            } else {
                format!(", {} still pending (not drained)", group(self.jobs_pending))
            },
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  job wait     mean      p50      p90      p95      p99      max   waited"
        );
        let _ = writeln!(
            out,
            "            {:>6}   {:>6}   {:>6}   {:>6}   {:>6}   {:>6}   {:>6}",
            human_secs(w.mean),
            human_secs(w.p50),
            human_secs(w.p90),
            human_secs(w.p95),
            human_secs(w.p99),
            human_secs(w.max),
            percent(self.p_wait),
        );
        let _ = writeln!(out);
        let span = self.simulated_seconds.max(f64::MIN_POSITIVE);
        let _ = writeln!(
            out,
            "  machines        creating     idle     busy  removing     total   peak"
        );
        let _ = writeln!(
            out,
            "  mean           {:>9.1} {:>8.1} {:>8.1} {:>9.1} {:>9.1} {:>6}",
            m.creating / span,
            m.idle / span,
            m.busy / span,
            m.removing / span,
            m.total / span,
            self.peak_machines
        );
        let _ = writeln!(
            out,
            "  machine-hours  {:>9.1} {:>8.1} {:>8.1} {:>9.1} {:>9.1}",
            m.creating / 3600.0,
            m.idle / 3600.0,
            m.busy / 3600.0,
            m.removing / 3600.0,
            m.total / 3600.0
        );
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "  machines created {}, removed {}, creation failures {}, lost {}; utilisation {}; mean queue {:.2} jobs",
            group(self.machines_created),
            group(self.machines_removed),
            group(self.creation_failures),
            group(self.machines_lost),
            percent(self.utilization),
            self.mean_queued,
        );
        if let Some(cost) = self.cost {
            let _ = writeln!(
                out,
                "  cost {cost:.2} for {:.1} machine-hours",
                self.machine_hours()
            );
        }
        let p = &self.perf;
        let _ = writeln!(
            out,
            "  perf: {} events in {:.3} s ({:.2} M events/s), peak RSS {:.1} MiB",
            group(p.events),
            p.wall_seconds,
            p.events_per_second / 1e6,
            p.peak_rss_bytes as f64 / (1024.0 * 1024.0)
        );
        out
    }
}

/// `IdleCount 5, IdleTime 10m00s, MaxBuilds 0, limit 20` for a pool runner; `docker (no machines)`;
/// `docker-autoscaler, capacity_per_instance 4, …` with its policy for a runner with slots.
pub fn describe_runner(runner: &drover_core::RunnerConfig) -> String {
    if let Some(sp) = runner.slot_policy() {
        return describe_slots(runner, sp);
    }
    match runner.policy() {
        None => format!("{}: docker executor, limit {}", runner.name, runner.limit),
        Some(p) => {
            let b = &p.base;
            let mut s = format!("{}: IdleCount {}", runner.name, b.idle_count);
            if b.idle_scale_factor > 0.0 {
                s += &format!(
                    ", IdleScaleFactor {}, IdleCountMin {}",
                    b.idle_scale_factor, b.idle_count_min
                );
            }
            s += &format!(
                ", IdleTime {}, MaxBuilds {}, MaxGrowthRate {}, limit {}",
                human_secs(b.idle_time_ms as f64 / 1000.0),
                p.max_builds,
                p.max_growth_rate,
                runner.limit
            );
            if !p.periods.is_empty() {
                s += &format!(", {} autoscaling periods", p.periods.len());
            }
            s
        }
    }
}

fn describe_slots(runner: &drover_core::RunnerConfig, sp: &drover_core::SlotPolicy) -> String {
    let mut s = format!(
        "{}: docker-autoscaler, capacity_per_instance {}, max_instances {}, max_use_count {}, limit {}",
        runner.name, sp.slots, sp.max_machines, sp.pool.max_builds, runner.limit
    );
    let policies = &sp.pool.periods;
    match policies.as_slice() {
        [p] => {
            let v = &p.values;
            s += &format!(
                "; policy idle_count {}, idle_time {}",
                v.idle_count,
                human_secs(v.idle_time_ms as f64 / 1000.0)
            );
            if v.idle_scale_factor > 0.0 {
                let extra = sp.extra(Some(0));
                s += &format!(
                    ", scale_factor {}, scale_factor_limit {}",
                    v.idle_scale_factor, extra.scale_factor_limit
                );
            }
            if !sp.extra(Some(0)).preemptive {
                s += ", preemptive_mode off";
            }
        }
        ps => s += &format!("; {} policies", ps.len()),
    }
    s
}

/// Fractions keep 4 decimals (0.01 %).
fn round_frac(x: f64) -> f64 {
    if x.is_finite() {
        (x * 10_000.0).round() / 10_000.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_formats() {
        assert_eq!(human_secs(0.0), "0s");
        assert_eq!(human_secs(4.25), "4.2s");
        assert_eq!(human_secs(59.6), "1m00s");
        assert_eq!(human_secs(185.0), "3m05s");
        assert_eq!(human_secs(7_800.0), "2h10m");
        assert_eq!(human_secs(273_600.0), "3d4h");
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(group(12), "12");
        assert_eq!(percent(0.1234), "12.3%");
    }
}
