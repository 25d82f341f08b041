//! Validation of a workload's top level: times, counts, coordinator, faults and shares.

use std::ops::Range;
use std::path::Path;

use drover_core::Timestamp;
use toml::Spanned;

use super::raw::RawWorkload;
use super::{Arrivals, DEFAULT_START, Dispatch, Faults, Polling, Workload};
use crate::dist::Dist;
use crate::parse::{WorkloadError, line_column, parse_duration_ms, parse_instant};

const DURATION_HINT: &str = "write durations with a unit, like \"90s\", \"5m\" or \"1h30m\"";
/// Turns the raw layer into a [`Workload`]; every error points into `text`.
pub(super) struct Validator<'a> {
    pub(super) text: &'a str,
    pub(super) origin: &'a Path,
}

pub(super) type Result<T> = std::result::Result<T, WorkloadError>;

impl Validator<'_> {
    pub(super) fn err<T>(
        &self,
        span: &Range<usize>,
        message: impl Into<String>,
        hint: Option<&str>,
    ) -> Result<T> {
        Err(WorkloadError::at(
            self.origin,
            self.text,
            span.clone(),
            message,
            hint,
        ))
    }

    pub(super) fn workload(&self, raw: RawWorkload) -> Result<Workload> {
        let start = match &raw.start {
            Some(v) => self.instant(v, "start")?,
            None => DEFAULT_START,
        };
        let horizon_ms = raw
            .horizon
            .as_ref()
            .map(|v| self.duration(v, "horizon"))
            .transpose()?;
        if let (Some(0), Some(v)) = (horizon_ms, &raw.horizon) {
            return self.err(&v.span(), "horizon must be longer than 0s", None);
        }
        let jobs = match &raw.jobs {
            Some(j) if j.get_ref().0 <= 0 => {
                return self.err(&j.span(), "jobs must be at least 1", None);
            }
            Some(j) => Some(j.get_ref().0 as u64),
            None => None,
        };
        let seed = match &raw.seed {
            Some(s) if s.get_ref().0 < 0 => {
                return self.err(&s.span(), "seed must not be negative", None);
            }
            Some(s) => s.get_ref().0 as u64,
            None => 0,
        };

        let arrivals_span = raw.arrivals.span();
        let arrivals = self.arrivals(raw.arrivals.into_inner(), start)?;
        let is_trace = matches!(arrivals, Arrivals::Trace(_));
        if !is_trace && horizon_ms.is_none() && jobs.is_none() {
            return self.err(
                &arrivals_span,
                "synthetic arrivals need an end",
                Some("set `horizon = \"1d\"` (simulated time) or `jobs = 100000` at the top of the file"),
            );
        }

        let duration = match raw.duration {
            Some(d) => Some(self.dist(d, "duration", false)?.0),
            None => None,
        };
        if duration.is_none() {
            let needs = match &arrivals {
                Arrivals::Trace(t) => t
                    .rows
                    .iter()
                    .find(|r| r.duration_ms.is_none())
                    .map(|r| r.line),
                _ => Some(0),
            };
            if let Some(line) = needs {
                let what = if line > 0 {
                    format!(
                        "trace line {line} has no duration and the workload has no [duration] table"
                    )
                } else {
                    "the workload has no [duration] table".to_string()
                };
                return self.err(
                    &arrivals_span,
                    what,
                    Some(
                        "add [duration] with kind = \"exponential\" and mean = \"5m\", for example",
                    ),
                );
            }
        }
        let (boot, boot_failure_rate) = match raw.boot {
            Some(d) => self.dist(d, "boot", true)?,
            None => (Dist::Constant { ms: 90_000.0 }, 0.0),
        };
        let (removal, removal_failure_rate) = match raw.removal {
            Some(d) => self.dist(d, "removal", true)?,
            None => (Dist::Constant { ms: 10_000.0 }, 0.0),
        };

        let polling = match &raw.coordinator.polling {
            None => Polling::Long,
            Some(p) => match p.get_ref().as_str() {
                "long" => Polling::Long,
                "interval" => Polling::Interval,
                "push" => Polling::Push,
                other => {
                    return self.err(
                        &p.span(),
                        format!("polling = {other:?} is not a polling mode"),
                        Some("use \"long\", \"interval\" or \"push\""),
                    );
                }
            },
        };
        let job_timeout_ms = raw
            .coordinator
            .job_timeout
            .as_ref()
            .map(|v| self.duration(v, "job_timeout"))
            .transpose()?
            .unwrap_or(0);

        let f = &raw.faults;
        let faults = Faults {
            slow_boot_rate: self.probability(f.slow_boot_rate.as_ref(), "slow_boot_rate")?,
            slow_boot_factor: match &f.slow_boot_factor {
                Some(v) if !(*v.get_ref() >= 1.0 && v.get_ref().is_finite()) => {
                    return self.err(
                        &v.span(),
                        "slow_boot_factor must be a finite number ≥ 1",
                        None,
                    );
                }
                Some(v) => *v.get_ref(),
                None => 5.0,
            },
            machine_loss_per_hour: match &f.machine_loss_per_hour {
                Some(v) if !(*v.get_ref() >= 0.0 && v.get_ref().is_finite()) => {
                    return self.err(
                        &v.span(),
                        "machine_loss_per_hour must be a finite number ≥ 0",
                        None,
                    );
                }
                Some(v) => *v.get_ref(),
                None => 0.0,
            },
        };

        let (shares, shares_at) = match raw.shares {
            None => (Vec::new(), None),
            Some(s) => {
                let span = s.span();
                let (line, column) = line_column(self.text, span.start);
                let at = format!("{}:{line}:{column}", self.origin.display());
                let mut out = Vec::new();
                for (name, w) in s.into_inner() {
                    if !(*w.get_ref() >= 0.0 && w.get_ref().is_finite()) {
                        return self.err(
                            &w.span(),
                            format!("share of {name:?} must be a finite number ≥ 0"),
                            None,
                        );
                    }
                    out.push((name, *w.get_ref()));
                }
                if out.iter().all(|(_, w)| *w == 0.0) {
                    return self.err(&span, "[shares] gives every runner a weight of 0", None);
                }
                (out, Some(at))
            }
        };

        Ok(Workload {
            origin: self.origin.to_path_buf(),
            start,
            horizon_ms,
            jobs,
            seed,
            arrivals,
            duration,
            boot,
            boot_failure_rate,
            removal,
            removal_failure_rate,
            polling,
            dispatch: Dispatch::default(),
            job_timeout_ms,
            faults,
            shares,
            shares_at,
        })
    }

    pub(super) fn probability(&self, v: Option<&Spanned<f64>>, field: &str) -> Result<f64> {
        match v {
            None => Ok(0.0),
            Some(p) if (0.0..=1.0).contains(p.get_ref()) => Ok(*p.get_ref()),
            Some(p) => self.err(
                &p.span(),
                format!("{field} must be a probability between 0 and 1"),
                None,
            ),
        }
    }

    pub(super) fn duration(&self, v: &Spanned<toml::Value>, field: &str) -> Result<u64> {
        match v.get_ref() {
            toml::Value::String(s) => match parse_duration_ms(s) {
                Ok(ms) => Ok(ms),
                Err(e) => self.err(
                    &v.span(),
                    format!("{field} = {s:?} is not a duration: {e}"),
                    Some(DURATION_HINT),
                ),
            },
            other => self.err(
                &v.span(),
                format!(
                    "{field} must be a duration string, not {}",
                    other.type_str()
                ),
                Some(DURATION_HINT),
            ),
        }
    }

    pub(super) fn instant(&self, v: &Spanned<toml::Value>, field: &str) -> Result<Timestamp> {
        let text = match v.get_ref() {
            toml::Value::String(s) => s.clone(),
            toml::Value::Datetime(d) => d.to_string(),
            other => {
                return self.err(
                    &v.span(),
                    format!("{field} must be a date and time, not {}", other.type_str()),
                    None,
                );
            }
        };
        parse_instant(&text).or_else(|e| {
            self.err(
                &v.span(),
                format!("{field} = {text:?} is not a time: {e}"),
                Some("write RFC 3339, like \"2026-01-05T00:00:00Z\""),
            )
        })
    }
}
