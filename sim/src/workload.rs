//! Workload files: the traffic and the world a simulation runs against.
//!
//! A raw serde layer (`deny_unknown_fields`, with spans) is validated into [`Workload`]; every error
//! names the file, line and column of the offending value and says how to fix it.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono_tz::Tz;
use drover_core::Timestamp;
use serde::Deserialize;
use toml::Spanned;

pub use crate::dispatch::{Dispatch, Polling};
use crate::dist::Dist;
use crate::parse::line_column;
pub use crate::parse::{
    Invalid, WorkloadError, parse_duration_ms, parse_instant, parse_seconds_or_duration_ms,
};
use crate::trace;
pub use crate::trace::{Trace, TraceRow};

/// The default virtual epoch: a Monday, so weekday profiles and periods start the week.
pub const DEFAULT_START: Timestamp = Timestamp(1_767_571_200_000); // 2026-01-05T00:00:00Z

/// How long the simulation keeps going after arrivals stop, waiting for jobs to finish.
pub const DRAIN_LIMIT_MS: u64 = 7 * 24 * 3_600_000;

const DURATION_HINT: &str = "write durations with a unit, like \"90s\", \"5m\" or \"1h30m\"";

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

/// The key and the allowed keys of serde's "unknown field `horizn`, expected one of `start`, ..."
/// (or "expected `a` or `b`").
fn unknown_key(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix("unknown field `")?;
    let (key, expected) = rest.split_once('`')?;
    let allowed = expected.split('`').skip(1).step_by(2).map(str::to_string);
    Some((key.to_string(), allowed.collect()))
}

// ----- the raw layer ---------------------------------------------------------------------------

/// A whole number, written as an integer or as a float with nothing after the point (`1e9`,
/// `100.0`): both mean the same count to a reader.
#[derive(Clone, Copy, Debug)]
struct Whole(i64);

impl<'de> Deserialize<'de> for Whole {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Whole, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Whole;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a whole number, like 100000 or 1e6")
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Whole, E> {
                Ok(Whole(v))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Whole, E> {
                i64::try_from(v)
                    .map(Whole)
                    .map_err(|_| E::invalid_value(serde::de::Unexpected::Unsigned(v), &self))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<Whole, E> {
                // Below 2^63, and integral: exactly representable as an i64.
                if v.fract() == 0.0 && v.abs() < 9.223_372_036_854_775e18 {
                    Ok(Whole(v as i64))
                } else {
                    Err(E::invalid_value(serde::de::Unexpected::Float(v), &self))
                }
            }
        }
        d.deserialize_any(Visitor)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorkload {
    start: Option<Spanned<toml::Value>>,
    horizon: Option<Spanned<toml::Value>>,
    jobs: Option<Spanned<Whole>>,
    seed: Option<Spanned<Whole>>,
    arrivals: Spanned<RawArrivals>,
    duration: Option<Spanned<RawDist>>,
    boot: Option<Spanned<RawDist>>,
    removal: Option<Spanned<RawDist>>,
    #[serde(default)]
    coordinator: RawCoordinator,
    #[serde(default)]
    faults: RawFaults,
    shares: Option<Spanned<BTreeMap<String, Spanned<f64>>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawArrivals {
    kind: Spanned<String>,
    rate_per_min: Option<Spanned<f64>>,
    hourly: Option<Spanned<Vec<f64>>>,
    weekend_factor: Option<Spanned<f64>>,
    timezone: Option<Spanned<String>>,
    file: Option<Spanned<String>>,
    batch: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDist {
    kind: Spanned<String>,
    value: Option<Spanned<toml::Value>>,
    mean: Option<Spanned<toml::Value>>,
    median: Option<Spanned<toml::Value>>,
    p95: Option<Spanned<toml::Value>>,
    stddev: Option<Spanned<toml::Value>>,
    min: Option<Spanned<toml::Value>>,
    max: Option<Spanned<toml::Value>>,
    values: Option<Spanned<Vec<Spanned<toml::Value>>>>,
    weights: Option<Spanned<Vec<f64>>>,
    failure_rate: Option<Spanned<f64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawCoordinator {
    polling: Option<Spanned<String>>,
    job_timeout: Option<Spanned<toml::Value>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFaults {
    slow_boot_rate: Option<Spanned<f64>>,
    slow_boot_factor: Option<Spanned<f64>>,
    machine_loss_per_hour: Option<Spanned<f64>>,
}

// ----- validation ------------------------------------------------------------------------------

struct Validator<'a> {
    text: &'a str,
    origin: &'a Path,
}

type Result<T> = std::result::Result<T, WorkloadError>;

impl Validator<'_> {
    fn err<T>(
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

    fn workload(&self, raw: RawWorkload) -> Result<Workload> {
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
                other => {
                    return self.err(
                        &p.span(),
                        format!("polling = {other:?} is not a polling mode"),
                        Some("use \"long\" or \"interval\""),
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

    fn arrivals(&self, raw: RawArrivals, start: Timestamp) -> Result<Arrivals> {
        let kind = raw.kind.get_ref().as_str();
        let allowed: &[&str] = match kind {
            "poisson" => &["rate_per_min", "batch"],
            "diurnal" => &["hourly", "weekend_factor", "timezone", "batch"],
            "trace" => &["file"],
            other => {
                return self.err(
                    &raw.kind.span(),
                    format!("arrivals kind = {other:?} is not an arrival process"),
                    Some("use \"poisson\", \"diurnal\" or \"trace\""),
                );
            }
        };
        let present = [
            ("rate_per_min", raw.rate_per_min.as_ref().map(Spanned::span)),
            ("hourly", raw.hourly.as_ref().map(Spanned::span)),
            (
                "weekend_factor",
                raw.weekend_factor.as_ref().map(Spanned::span),
            ),
            ("timezone", raw.timezone.as_ref().map(Spanned::span)),
            ("file", raw.file.as_ref().map(Spanned::span)),
            ("batch", raw.batch.as_ref().map(Spanned::span)),
        ];
        for (field, span) in present {
            if let Some(span) = span
                && !allowed.contains(&field)
            {
                return self.err(
                    &span,
                    format!("`{field}` does not apply to arrivals kind = {kind:?}"),
                    Some(&format!("kind = {kind:?} takes {}", allowed.join(", "))),
                );
            }
        }
        let batch = match &raw.batch {
            None => Batch::ONE,
            Some(v) => self.batch(v)?,
        };
        match kind {
            "poisson" => {
                let Some(rate) = &raw.rate_per_min else {
                    return self.err(
                        &raw.kind.span(),
                        "poisson arrivals need `rate_per_min`",
                        Some("rate_per_min = 10.0"),
                    );
                };
                if !(*rate.get_ref() > 0.0 && rate.get_ref().is_finite()) {
                    return self.err(
                        &rate.span(),
                        "rate_per_min must be a finite number > 0",
                        None,
                    );
                }
                Ok(Arrivals::Poisson {
                    rate_per_min: *rate.get_ref(),
                    batch,
                })
            }
            "diurnal" => {
                let Some(hourly) = &raw.hourly else {
                    return self.err(
                        &raw.kind.span(),
                        "diurnal arrivals need `hourly`: 24 rates per minute, one for each hour of the day",
                        None,
                    );
                };
                let rates: [f64; 24] = match <[f64; 24]>::try_from(hourly.get_ref().as_slice()) {
                    Ok(r) => r,
                    Err(_) => {
                        return self.err(
                            &hourly.span(),
                            format!(
                                "hourly has {} rates; it needs 24 (hours 0 to 23)",
                                hourly.get_ref().len()
                            ),
                            None,
                        );
                    }
                };
                if rates.iter().any(|r| !(*r >= 0.0 && r.is_finite()))
                    || rates.iter().all(|r| *r == 0.0)
                {
                    return self.err(
                        &hourly.span(),
                        "hourly rates must be finite, ≥ 0 and not all 0",
                        None,
                    );
                }
                let weekend_factor = match &raw.weekend_factor {
                    Some(w) if !(*w.get_ref() >= 0.0 && w.get_ref().is_finite()) => {
                        return self.err(
                            &w.span(),
                            "weekend_factor must be a finite number ≥ 0",
                            None,
                        );
                    }
                    Some(w) => *w.get_ref(),
                    None => 1.0,
                };
                let timezone = match &raw.timezone {
                    None => Tz::UTC,
                    Some(t) => match t.get_ref().parse::<Tz>() {
                        Ok(tz) => tz,
                        Err(_) => {
                            return self.err(
                                &t.span(),
                                format!("unknown time zone {:?}", t.get_ref()),
                                Some("use an IANA name such as \"Europe/Berlin\" or \"UTC\""),
                            );
                        }
                    },
                };
                Ok(Arrivals::Diurnal {
                    hourly_per_min: rates,
                    weekend_factor,
                    timezone,
                    batch,
                })
            }
            _ => {
                let Some(file) = &raw.file else {
                    return self.err(
                        &raw.kind.span(),
                        "trace arrivals need `file`",
                        Some("file = \"trace.csv\""),
                    );
                };
                let base = self.origin.parent().unwrap_or(Path::new(""));
                let path = base.join(file.get_ref());
                let text = std::fs::read_to_string(&path).map_err(|e| {
                    WorkloadError::at(
                        self.origin,
                        self.text,
                        file.span(),
                        format!("cannot read trace file {}: {e}", path.display()),
                        Some("a relative path is resolved from the workload file's folder"),
                    )
                })?;
                let trace = trace::parse_csv(&text, &path, start)?;
                if trace.rows.is_empty() {
                    return self.err(
                        &file.span(),
                        format!("trace file {} has no rows", path.display()),
                        None,
                    );
                }
                Ok(Arrivals::Trace(Arc::new(trace)))
            }
        }
    }

    fn batch(&self, v: &Spanned<toml::Value>) -> Result<Batch> {
        let bad = || {
            self.err(
                &v.span(),
                "batch must be a number of jobs per arrival (≥ 1) or a range [min, max]",
                Some("batch = 4, or batch = [2, 8] for 2 to 8 jobs per arrival"),
            )
        };
        let int = |x: &toml::Value| {
            x.as_integer()
                .filter(|n| (1..=i64::from(u16::MAX)).contains(n))
                .map(|n| n as u32)
        };
        match v.get_ref() {
            toml::Value::Integer(_) => match int(v.get_ref()) {
                Some(n) => Ok(Batch { min: n, max: n }),
                None => bad(),
            },
            toml::Value::Array(a) if a.len() == 2 => match (int(&a[0]), int(&a[1])) {
                (Some(min), Some(max)) if min <= max => Ok(Batch { min, max }),
                _ => bad(),
            },
            _ => bad(),
        }
    }

    /// A distribution table; the failure rate is allowed only where `with_failures`.
    fn dist(&self, raw: Spanned<RawDist>, table: &str, with_failures: bool) -> Result<(Dist, f64)> {
        let span = raw.span();
        let raw = raw.into_inner();
        let kind = raw.kind.get_ref().as_str();
        let allowed: &[&str] = match kind {
            "constant" => &["value"],
            "exponential" => &["mean"],
            "lognormal" => &["median", "p95", "mean", "stddev"],
            "uniform" => &["min", "max"],
            "empirical" => &["values", "weights"],
            other => {
                return self.err(
                    &raw.kind.span(),
                    format!("[{table}] kind = {other:?} is not a distribution"),
                    Some("use \"constant\", \"exponential\", \"lognormal\", \"uniform\" or \"empirical\""),
                );
            }
        };
        let takes = format!("kind = {kind:?} takes {}", allowed.join(", "));
        let present = [
            ("value", raw.value.as_ref().map(Spanned::span)),
            ("mean", raw.mean.as_ref().map(Spanned::span)),
            ("median", raw.median.as_ref().map(Spanned::span)),
            ("p95", raw.p95.as_ref().map(Spanned::span)),
            ("stddev", raw.stddev.as_ref().map(Spanned::span)),
            ("min", raw.min.as_ref().map(Spanned::span)),
            ("max", raw.max.as_ref().map(Spanned::span)),
            ("values", raw.values.as_ref().map(Spanned::span)),
            ("weights", raw.weights.as_ref().map(Spanned::span)),
        ];
        for (field, s) in present {
            if let Some(s) = s
                && !allowed.contains(&field)
            {
                return self.err(
                    &s,
                    format!("`{field}` does not apply to [{table}] kind = {kind:?}"),
                    Some(&takes),
                );
            }
        }
        let failure_rate = match &raw.failure_rate {
            Some(f) if !with_failures => {
                return self.err(
                    &f.span(),
                    format!("[{table}] has no failure_rate"),
                    Some("failure_rate applies to [boot] and [removal]"),
                );
            }
            f => self.probability(f.as_ref(), "failure_rate")?,
        };
        let need = |v: &Option<Spanned<toml::Value>>, field: &str| -> Result<f64> {
            match v {
                Some(v) => Ok(self.duration(v, field)? as f64),
                None => self.err(
                    &span,
                    format!("[{table}] kind = {kind:?} needs `{field}`"),
                    Some(&takes),
                ),
            }
        };
        let positive = |v: &Option<Spanned<toml::Value>>, field: &str| -> Result<f64> {
            let x = need(v, field)?;
            if x <= 0.0 {
                let s = v.as_ref().map_or(span.clone(), Spanned::span);
                return self.err(&s, format!("`{field}` must be longer than 0s"), None);
            }
            Ok(x)
        };
        let dist = match kind {
            "constant" => Dist::Constant {
                ms: need(&raw.value, "value")?,
            },
            "exponential" => Dist::Exponential {
                mean_ms: positive(&raw.mean, "mean")?,
            },
            "lognormal" => match (&raw.median, &raw.p95, &raw.mean, &raw.stddev) {
                (Some(_), Some(_), None, None) => {
                    let (median, p95) =
                        (positive(&raw.median, "median")?, positive(&raw.p95, "p95")?);
                    if p95 < median {
                        let s = raw.p95.as_ref().map_or(span.clone(), Spanned::span);
                        return self.err(&s, "p95 must not be shorter than median", None);
                    }
                    Dist::lognormal_median_p95(median, p95)
                }
                (None, None, Some(_), Some(_)) => Dist::lognormal_mean_stddev(
                    positive(&raw.mean, "mean")?,
                    positive(&raw.stddev, "stddev")?,
                ),
                _ => {
                    return self.err(
                        &span,
                        format!("[{table}] kind = \"lognormal\" needs either median and p95, or mean and stddev"),
                        Some("median = \"3m\" and p95 = \"20m\", for example"),
                    );
                }
            },
            "uniform" => {
                let (min, max) = (need(&raw.min, "min")?, need(&raw.max, "max")?);
                if max < min {
                    let s = raw.max.as_ref().map_or(span.clone(), Spanned::span);
                    return self.err(&s, "max must not be shorter than min", None);
                }
                Dist::Uniform {
                    min_ms: min,
                    max_ms: max,
                }
            }
            _ => {
                let Some(values) = &raw.values else {
                    return self.err(
                        &span,
                        format!("[{table}] kind = \"empirical\" needs `values`"),
                        Some("values = [\"1m\", \"3m\", \"10m\"]"),
                    );
                };
                if values.get_ref().is_empty() {
                    return self.err(&values.span(), "values must not be empty", None);
                }
                let ms: Vec<f64> = values
                    .get_ref()
                    .iter()
                    .map(|v| self.duration(v, "values").map(|d| d as f64))
                    .collect::<Result<_>>()?;
                if let Some(w) = &raw.weights {
                    let w_ok = w.get_ref().iter().all(|x| *x >= 0.0 && x.is_finite())
                        && w.get_ref().iter().any(|x| *x > 0.0);
                    if w.get_ref().len() != ms.len() || !w_ok {
                        return self.err(
                            &w.span(),
                            format!(
                                "weights must be {} finite numbers ≥ 0, not all 0 (one per value)",
                                ms.len()
                            ),
                            None,
                        );
                    }
                }
                Dist::empirical(ms, raw.weights.as_ref().map(|w| w.get_ref().as_slice()))
            }
        };
        Ok((dist, failure_rate))
    }

    fn probability(&self, v: Option<&Spanned<f64>>, field: &str) -> Result<f64> {
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

    fn duration(&self, v: &Spanned<toml::Value>, field: &str) -> Result<u64> {
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

    fn instant(&self, v: &Spanned<toml::Value>, field: &str) -> Result<Timestamp> {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Workload> {
        Workload::parse(text, Path::new("w.toml"))
    }

    fn invalid(text: &str) -> (usize, usize, String) {
        match parse(text) {
            Err(WorkloadError::Invalid(e)) => {
                let (line, column) = e.line_column();
                let key = e
                    .unknown_key
                    .map(|(k, allowed)| format!("{k} not in {allowed:?}"));
                let (hint, key) = (e.hint.unwrap_or_default(), key.unwrap_or_default());
                (line, column, format!("{} | {hint} | {key}", e.message))
            }
            other => panic!("expected an error, got {other:?}"),
        }
    }

    const GOOD: &str = r#"
start = "2026-01-05T00:00:00Z"
horizon = "1d"
seed = 4
[arrivals]
kind = "poisson"
rate_per_min = 10.0
[duration]
kind = "lognormal"
median = "3m"
p95 = "20m"
[boot]
kind = "uniform"
min = "60s"
max = "2m"
failure_rate = 0.05
"#;

    #[test]
    fn counts_may_be_written_as_integral_floats() {
        let w = parse(
            "jobs = 1e9\nseed = 7.0\n[arrivals]\nkind = \"poisson\"\nrate_per_min = 1.0\n\
             [duration]\nkind = \"constant\"\nvalue = \"1m\"\n",
        )
        .unwrap();
        assert_eq!((w.jobs, w.seed), (Some(1_000_000_000), 7));
        assert!(
            w.summary().contains("1,000,000,000 jobs"),
            "{}",
            w.summary()
        );
        let e = parse("jobs = 1.5\n[arrivals]\nkind = \"poisson\"\nrate_per_min = 1.0\n")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("expected a whole number, like 100000 or 1e6"),
            "{e}"
        );
    }

    #[test]
    fn a_full_workload() {
        let w = parse(GOOD).unwrap();
        assert_eq!(w.start, DEFAULT_START);
        assert_eq!(w.horizon_ms, Some(86_400_000));
        assert_eq!(w.seed, 4);
        assert!(
            matches!(w.arrivals, Arrivals::Poisson { rate_per_min, batch: Batch::ONE } if rate_per_min == 10.0)
        );
        assert_eq!(
            w.boot,
            Dist::Uniform {
                min_ms: 60_000.0,
                max_ms: 120_000.0
            }
        );
        assert_eq!(w.boot_failure_rate, 0.05);
        assert_eq!(w.removal, Dist::Constant { ms: 10_000.0 });
        assert_eq!(w.polling, Polling::Long);
        // median 3m, p95 20m: sigma = ln(20/3)/z95 = 1.1534, mean = 180 s × exp(sigma²/2) ≈ 350.05 s.
        assert!((w.duration.unwrap().mean_ms() - 350_053.0).abs() < 100.0);
    }

    #[test]
    fn errors_point_at_the_value() {
        let bad = GOOD.replace("median = \"3m\"", "median = \"3 minutes please\"");
        let (line, col, msg) = invalid(&bad);
        assert_eq!((line, col), (10, 10));
        assert!(
            msg.contains("median = \"3 minutes please\" is not a duration"),
            "{msg}"
        );
        assert!(msg.contains("90s"), "{msg}");

        let (line, col, msg) = invalid(&GOOD.replace("\"lognormal\"", "\"lognormel\""));
        assert_eq!((line, col), (9, 8));
        assert!(
            msg.contains("is not a distribution") && msg.contains("exponential"),
            "{msg}"
        );

        let (line, _, msg) =
            invalid(&GOOD.replace("rate_per_min = 10.0", "rate_per_min = 10.0\nhourly = [1.0]"));
        assert_eq!(line, 8);
        assert!(msg.contains("`hourly` does not apply"), "{msg}");

        let (line, _, msg) = invalid(&GOOD.replace("seed = 4", "sead = 4"));
        assert_eq!(line, 4);
        assert!(
            msg.contains("unknown field `sead`")
                && msg.contains("sead not in [\"start\", \"horizon\", \"jobs\", \"seed\""),
            "{msg}"
        );

        let (_, _, msg) = invalid(&GOOD.replace("min = \"60s\"", "min = 60"));
        assert!(
            msg.contains("must be a duration string, not integer"),
            "{msg}"
        );

        let (_, _, msg) = invalid(&GOOD.replace("horizon = \"1d\"\n", ""));
        assert!(msg.contains("need an end"), "{msg}");

        let (line, _, msg) = invalid(&GOOD.replace("p95 = \"20m\"", "p95 = \"1m\""));
        assert_eq!(line, 11);
        assert!(msg.contains("p95 must not be shorter than median"), "{msg}");
    }

    #[test]
    fn syntax_errors_have_a_location() {
        let (line, col, _) = invalid("horizon = \"1d\"\n[arrivals\nkind = 1\n");
        assert_eq!(line, 2);
        assert!(col >= 1);
    }

    #[test]
    fn diurnal_and_batches() {
        let text = r#"
jobs = 1000
[arrivals]
kind = "diurnal"
hourly = [1,1,1,1,1,1,2,4,8,8,8,8,8,8,8,8,8,4,2,1,1,1,1,1]
weekend_factor = 0.25
timezone = "Europe/Berlin"
batch = [2, 6]
[duration]
kind = "constant"
value = "5m"
"#;
        let w = parse(text).unwrap();
        let Arrivals::Diurnal {
            weekend_factor,
            timezone,
            batch,
            ..
        } = &w.arrivals
        else {
            panic!()
        };
        assert_eq!(
            (*weekend_factor, *timezone, *batch),
            (0.25, Tz::Europe__Berlin, Batch { min: 2, max: 6 })
        );
        let (_, _, msg) = invalid(&text.replace("[2, 6]", "[6, 2]"));
        assert!(msg.contains("batch must be"), "{msg}");
        let (_, _, msg) = invalid(&text.replace("Europe/Berlin", "Mars/Olympus"));
        assert!(msg.contains("unknown time zone"), "{msg}");
    }

    #[test]
    fn durations_with_units_or_bare_seconds() {
        assert_eq!(parse_seconds_or_duration_ms("90"), Ok(90_000));
        assert_eq!(parse_seconds_or_duration_ms(" 1.5 "), Ok(1_500));
        assert_eq!(parse_seconds_or_duration_ms("1h30m"), Ok(5_400_000));
        assert!(parse_seconds_or_duration_ms("-1").is_err());
        assert!(parse_seconds_or_duration_ms("NaN").is_err());
        assert!(parse_seconds_or_duration_ms("5 parsecs").is_err());
        // Workload files are stricter: a duration there is a string with a unit.
        assert!(parse_duration_ms("90").is_err());
    }

    #[test]
    fn line_columns_count_characters() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("é\nx", 3), (2, 1));
        // Inside a character: its start.
        assert_eq!(line_column("aé", 2), (1, 2));
        assert_eq!(line_column("ab\r\ncd", 5), (2, 2));
    }

    #[test]
    fn an_error_shows_as_one_line_with_its_hint() {
        let e = parse("jobs = 10\r\n[arrivals]\r\nkind = \"poisson\"\r\n\trate_per_min = -1.0\r\n")
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "w.toml:4:17: rate_per_min must be a finite number > 0"
        );
        let WorkloadError::Invalid(e) = e else {
            panic!()
        };
        assert_eq!(&e.text[e.span.clone()], "-1.0");
        let e = parse("jobs = 10\n[arrivals]\nkind = \"poisson\"\nrate = 1.0\n").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("w.toml:4:1: unknown field `rate`, expected one of ")
                && e.to_string().ends_with(
                    "\n  hint: the workload format is described in fixtures/workloads/README.md"
                ),
            "{e}"
        );
    }
}
