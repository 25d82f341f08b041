//! One-line descriptions of a workload and its parts, for the top of a report.

use super::{Arrivals, Batch, Polling, Workload};
use crate::dist::Dist;

impl Arrivals {
    /// `poisson 10/min`, `diurnal (peak 30/min, weekends ×0.3, Europe/Berlin)`, `trace of 1,234 jobs`.
    pub fn summary(&self) -> String {
        let batch = |b: &Batch| match (b.min, b.max) {
            (1, 1) => String::new(),
            (a, b) if a == b => format!(" × {a} jobs"),
            (a, b) => format!(" × {a}–{b} jobs"),
        };
        match self {
            Arrivals::Poisson {
                rate_per_min,
                batch: b,
            } => format!("poisson {rate_per_min}/min{}", batch(b)),
            Arrivals::Diurnal {
                hourly_per_min,
                weekend_factor,
                timezone,
                batch: b,
            } => {
                let peak = hourly_per_min.iter().copied().fold(0.0, f64::max);
                format!(
                    "diurnal up to {peak}/min{}, weekends ×{weekend_factor}, {timezone}",
                    batch(b)
                )
            }
            Arrivals::Trace(t) => {
                format!("trace of {} jobs from {}", t.rows.len(), t.source.display())
            }
        }
    }
}

impl Dist {
    /// `exponential mean 5m00s`, `constant 1m30s`, ...
    pub fn summary(&self) -> String {
        let h = |ms: f64| crate::units::human_secs(ms / 1000.0);
        match self {
            Dist::Constant { ms } => format!("constant {}", h(*ms)),
            Dist::Exponential { mean_ms } => format!("exponential mean {}", h(*mean_ms)),
            Dist::LogNormal { mu, .. } => format!(
                "lognormal median {} mean {}",
                h(libm::exp(*mu)),
                h(self.mean_ms())
            ),
            Dist::Uniform { min_ms, max_ms } => format!("uniform {}–{}", h(*min_ms), h(*max_ms)),
            Dist::Empirical { values_ms, .. } => {
                format!(
                    "empirical, {} values, mean {}",
                    values_ms.len(),
                    h(self.mean_ms())
                )
            }
        }
    }
}

impl Workload {
    /// One paragraph describing the workload, for the top of a report.
    pub fn summary(&self) -> String {
        let mut parts = vec![self.arrivals.summary()];
        match (self.horizon_ms, self.jobs) {
            (Some(h), Some(j)) => parts.push(format!(
                "for {} or {} jobs",
                crate::units::human_secs(h as f64 / 1000.0),
                crate::units::group(j)
            )),
            (Some(h), None) => parts.push(format!(
                "for {}",
                crate::units::human_secs(h as f64 / 1000.0)
            )),
            (None, Some(j)) => parts.push(format!("{} jobs", crate::units::group(j))),
            (None, None) => {}
        }
        if let Some(d) = &self.duration {
            parts.push(format!("jobs {}", d.summary()));
        }
        let mut boot = format!("boot {}", self.boot.summary());
        if self.boot_failure_rate > 0.0 {
            boot += &format!(" ({}% fail)", self.boot_failure_rate * 100.0);
        }
        parts.push(boot);
        parts.push(match self.polling {
            Polling::Long => "long polling".to_string(),
            Polling::Interval => "interval polling".to_string(),
            Polling::Push => "jobs pushed to waiting requests".to_string(),
        });
        let f = &self.faults;
        if f.slow_boot_rate > 0.0 {
            parts.push(format!(
                "{}% of boots ×{} slower",
                f.slow_boot_rate * 100.0,
                f.slow_boot_factor
            ));
        }
        if f.machine_loss_per_hour > 0.0 {
            parts.push(format!(
                "machines die at {}/h of job",
                f.machine_loss_per_hour
            ));
        }
        parts.join(", ")
    }
}
