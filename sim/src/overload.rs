//! The overload guard: a configuration whose queue grows without bound is stopped with a verdict
//! instead of being simulated until memory runs out, and a sweep marks it and goes on.
//!
//! Two tests, both deterministic: before the run, the workload's mean arrival rate against the
//! most jobs per hour the runners' `limit` (and `max_instances` × `capacity_per_instance`) and
//! `concurrent` can run (ρ ≥ 1: flagged, and not run at all when the queue would outgrow
//! [`MAX_WAITING`]); during the run, more than
//! [`MAX_WAITING`] jobs waiting at once, with the rates measured so far.

use serde::Serialize;

use drover_core::Config;

use crate::stats::round3;
use crate::units::{group, human_secs};
use crate::workload::Workload;

/// Jobs waiting at once beyond which a run is stopped: about 5 MiB of queue per run.
pub const MAX_WAITING: u64 = 50_000;

/// Why a configuration cannot keep up with its traffic.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Unstable {
    /// Jobs per hour arriving (at the runner that cannot keep up, or in all).
    pub arrivals_per_hour: f64,
    /// Jobs per hour it can run at most (from the workload's rates), or ran (measured).
    pub capacity_per_hour: f64,
    /// What caps it: `limit 20 of runner-1`, `concurrent 20`, or the fleet as simulated.
    pub limited_by: String,
    /// `rates` (known before the run) or `queue` (more than [`MAX_WAITING`] jobs waiting).
    pub evidence: &'static str,
    /// Simulated seconds when the run was stopped (0 for `rates`).
    pub at_seconds: f64,
    /// Whether the run was stopped (or never started) for it; if not, arrivals stopped first and
    /// the figures cover the whole run.
    pub stopped: bool,
}

impl Unstable {
    /// `unstable: arrivals 6,000/h > capacity 160/h (limit 20 of runner-1)`; `overloaded: …` when
    /// the run was not stopped.
    pub fn verdict(&self) -> String {
        let what = if self.stopped {
            "unstable"
        } else {
            "overloaded"
        };
        let how = match self.evidence {
            "queue" => format!(
                "; more than {} jobs waiting after {}",
                group(MAX_WAITING),
                human_secs(self.at_seconds)
            ),
            _ => String::new(),
        };
        format!(
            "{what}: arrivals {}/h > capacity {}/h ({}{how})",
            group(self.arrivals_per_hour.round() as u64),
            group(self.capacity_per_hour.round() as u64),
            self.limited_by
        )
    }
}

/// ρ ≥ 1 from the workload's mean rates, per runner and under `concurrent`, and whether the queue
/// would outgrow [`MAX_WAITING`] before arrivals stop (then the run is not even started; a shorter
/// overload, such as one busy day, is simulated to its end and flagged). None when stable or when
/// the rates are not known in advance (traces, recorded jobs).
pub(crate) fn by_rates(
    w: &Workload,
    config: &Config,
    fractions: &[f64],
) -> Option<(Unstable, bool)> {
    let u = overloaded(w, config, fractions)?;
    let excess_per_ms = (u.arrivals_per_hour - u.capacity_per_hour) / 3_600_000.0;
    let arrivals_ms = [
        w.horizon_ms.map(|h| h as f64),
        w.jobs
            .map(|n| n as f64 / (u.arrivals_per_hour / 3_600_000.0).max(f64::MIN_POSITIVE)),
    ]
    .into_iter()
    .flatten()
    .fold(f64::INFINITY, f64::min);
    let stop = excess_per_ms * arrivals_ms > MAX_WAITING as f64;
    Some((Unstable { stopped: stop, ..u }, stop))
}

fn overloaded(w: &Workload, config: &Config, fractions: &[f64]) -> Option<Unstable> {
    let per_hour = w.mean_rate_per_min()? * 60.0;
    let mean_ms = w.duration.as_ref()?.mean_ms();
    if mean_ms <= 0.0 {
        return None;
    }
    let jobs_per_slot_hour = 3_600_000.0 / mean_ms;
    let unstable = |arrivals: f64, slots: u32, limited_by: String| {
        let capacity = f64::from(slots) * jobs_per_slot_hour;
        (arrivals >= capacity && arrivals > 0.0).then(|| Unstable {
            arrivals_per_hour: round3(arrivals),
            capacity_per_hour: round3(capacity),
            limited_by,
            evidence: "rates",
            at_seconds: 0.0,
            stopped: false,
        })
    };
    for (r, fraction) in config.runners.iter().zip(fractions) {
        if r.limit > 0
            && let Some(u) = unstable(
                per_hour * fraction,
                r.limit,
                format!("limit {} of {}", r.limit, r.name),
            )
        {
            return Some(u);
        }
        // With slots, `max_instances` machines run at most `capacity_per_instance` jobs each.
        if let Some(sp) = r.slot_policy()
            && sp.max_machines > 0
            && let Some(u) = unstable(
                per_hour * fraction,
                sp.max_machines.saturating_mul(sp.slots.max(1)),
                format!(
                    "max_instances {} × capacity_per_instance {} of {}",
                    sp.max_machines, sp.slots, r.name
                ),
            )
        {
            return Some(u);
        }
    }
    let total: f64 = fractions.iter().sum();
    unstable(
        per_hour * total,
        config.concurrent,
        format!("concurrent {}", config.concurrent),
    )
}
