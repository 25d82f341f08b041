//! Workload files: the traffic and the world a simulation runs against.
//!
//! A raw serde layer (`deny_unknown_fields`, with spans) is validated into [`Workload`]; every error
//! names the file, line and column of the offending value and says how to fix it. The types live
//! here; `raw` is the serde layer, `validate*` turn it into a [`Workload`], `summary` describes one.

mod raw;
mod summary;
#[cfg(test)]
mod tests;
mod validate;
mod validate_arrivals;
mod validate_dist;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono_tz::Tz;
use drover_core::Timestamp;

pub use crate::dispatch::{Dispatch, Polling};
use crate::dist::Dist;
pub use crate::parse::{
    Invalid, WorkloadError, parse_duration_ms, parse_instant, parse_seconds_or_duration_ms,
};
pub use crate::trace::{Trace, TraceRow};
use raw::{RawWorkload, unknown_key};
use validate::{Result, Validator};

/// The default virtual epoch: a Monday, so weekday profiles and periods start the week.
pub const DEFAULT_START: Timestamp = Timestamp(1_767_571_200_000); // 2026-01-05T00:00:00Z

/// How long the simulation keeps going after arrivals stop, waiting for jobs to finish.
pub const DRAIN_LIMIT_MS: u64 = 7 * 24 * 3_600_000;

/// A validated workload.
#[derive(Clone, Debug)]
pub struct Workload {
    /// The file it came from (for messages), or a description.
    pub origin: PathBuf,
    /// The virtual epoch: time zones and autoscaling periods see this wall-clock time.
    pub start: Timestamp,
    /// Arrivals stop this long after `start` (then the run drains).
    pub horizon_ms: Option<u64>,
    /// Arrivals stop after this many jobs (then the run drains).
    pub jobs: Option<u64>,
    pub seed: u64,
    pub arrivals: Arrivals,
    /// Job run times; `None` only when every trace row carries its own duration.
    pub duration: Option<Dist>,
    pub boot: Dist,
    /// Probability that a machine creation fails (after its boot time).
    pub boot_failure_rate: f64,
    pub removal: Dist,
    /// Probability that one removal attempt fails (the core retries with backoff).
    pub removal_failure_rate: f64,
    pub polling: Polling,
    /// How long GitLab takes to answer job requests (`crate::dispatch`).
    pub dispatch: Dispatch,
    /// The timeout each job carries (`0` = GitLab's default of 2 h); a job still waiting for a machine
    /// after it is failed by the core.
    pub job_timeout_ms: u64,
    pub faults: Faults,
    /// Weights routing synthetic jobs to runners by name, sorted by name.
    pub shares: Vec<(String, f64)>,
    /// Where `[shares]` is (`file:line:column`), for errors found once the config is known.
    pub shares_at: Option<String>,
}

/// When jobs arrive.
#[derive(Clone, Debug)]
pub enum Arrivals {
    /// A homogeneous Poisson process.
    Poisson { rate_per_min: f64, batch: Batch },
    /// A Poisson process whose rate follows the local hour of day, scaled down on weekends.
    Diurnal {
        hourly_per_min: [f64; 24],
        weekend_factor: f64,
        timezone: Tz,
        batch: Batch,
    },
    /// Recorded arrivals (a CSV trace or a journal), sorted by time.
    Trace(Arc<Trace>),
}

/// Jobs per arrival: a pipeline often creates several at once. Uniform in `min..=max`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub min: u32,
    pub max: u32,
}

impl Batch {
    pub const ONE: Batch = Batch { min: 1, max: 1 };

    pub fn mean(&self) -> f64 {
        (f64::from(self.min) + f64::from(self.max)) / 2.0
    }
}

/// Optional faults of the simulated world.
#[derive(Copy, Clone, Debug, Default, PartialEq)]
pub struct Faults {
    /// Fraction of creations that take `slow_boot_factor` times their sampled boot time.
    pub slow_boot_rate: f64,
    pub slow_boot_factor: f64,
    /// Rate at which a machine running a job dies (per hour of job time); the job fails.
    pub machine_loss_per_hour: f64,
}

impl Workload {
    /// Reads and validates a workload file; a trace file is resolved relative to it.
    pub fn load(path: &Path) -> Result<Workload> {
        let text = std::fs::read_to_string(path).map_err(|source| WorkloadError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Workload::parse(&text, path)
    }

    /// Parses a workload; `origin` names it in errors and anchors relative trace paths.
    pub fn parse(text: &str, origin: &Path) -> Result<Workload> {
        let raw: RawWorkload = toml::from_str(text).map_err(|e| {
            let message = e.message().trim_end();
            let unknown_key = unknown_key(message);
            let hint = if unknown_key.is_some() {
                Some("the workload format is described in fixtures/workloads/README.md")
            } else if message.contains("missing field") {
                Some("add the field to that table")
            } else {
                None
            };
            let span = e.span().unwrap_or(0..0);
            WorkloadError::Invalid(Box::new(Invalid {
                unknown_key,
                ..Invalid::new(origin, text, span, message, hint)
            }))
        })?;
        Validator { text, origin }.workload(raw)
    }

    /// Jobs per minute averaged over a week (for summaries).
    pub fn mean_rate_per_min(&self) -> Option<f64> {
        match &self.arrivals {
            Arrivals::Poisson {
                rate_per_min,
                batch,
            } => Some(rate_per_min * batch.mean()),
            Arrivals::Diurnal {
                hourly_per_min,
                weekend_factor,
                batch,
                ..
            } => {
                let day: f64 = hourly_per_min.iter().sum::<f64>() / 24.0;
                Some(day * (5.0 + 2.0 * weekend_factor) / 7.0 * batch.mean())
            }
            Arrivals::Trace(_) => None,
        }
    }
}
