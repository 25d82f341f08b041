//! `[[runners.machine.autoscaling]]` periods: GitLab's 7-field cron syntax evaluated in a real time zone.
//!
//! GitLab (gorhill/cronexpr) writes `sec min hour dom month dow year`; 5- and 6-field forms get a `0`
//! seconds field (and a `*` year for 5 fields) prepended, as cronexpr does. A period is active during
//! every second its expression matches in its time zone (DST included). Unlike GitLab, the last second
//! of a period's last minute is inside the period (GitLab's ±1 s fire-time check misses it).

use chrono::{DateTime, Datelike, TimeZone, Timelike};
use chrono_tz::Tz;
use cron::TimeUnitSpec;
use serde::{Deserialize, Serialize};
use std::str::FromStr;

use crate::time::Timestamp;

/// Why a period expression or time zone was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    #[error("invalid cron expression {expr:?}: {reason}")]
    Cron { expr: String, reason: String },
    #[error("unknown time zone {0:?}")]
    TimeZone(String),
}

/// One cron expression in GitLab's syntax, parsed.
#[derive(Clone, Debug)]
pub struct CronExpr {
    source: String,
    fields: usize,
    schedule: cron::Schedule,
    granularity: Granularity,
    dom_or_dow: bool,
}

/// The coarsest step at which an expression's match status can change.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Granularity {
    Second,
    Minute,
    /// Seconds and minutes are unrestricted: the status is constant within a local hour, and local hours
    /// start on UTC quarter hours in every zone in use.
    QuarterHour,
}

impl Granularity {
    fn step_secs(self) -> u64 {
        match self {
            Granularity::Second => 1,
            Granularity::Minute => 60,
            Granularity::QuarterHour => 900,
        }
    }
}

impl CronExpr {
    pub fn parse(source: &str) -> Result<CronExpr, PeriodError> {
        let err = |reason: String| PeriodError::Cron {
            expr: source.to_string(),
            reason,
        };
        let trimmed = source.trim();
        let expanded = match trimmed {
            "@yearly" | "@annually" => "0 0 0 1 1 * *".to_string(),
            "@monthly" => "0 0 0 1 * * *".to_string(),
            "@weekly" => "0 0 0 * * 0 *".to_string(),
            "@daily" | "@midnight" => "0 0 0 * * * *".to_string(),
            "@hourly" => "0 0 * * * * *".to_string(),
            other if other.starts_with('@') => return Err(err(format!("unknown macro {other}"))),
            other => other.to_string(),
        };
        let parts: Vec<&str> = expanded.split_whitespace().collect();
        let fields = parts.len();
        let mut seven: Vec<String> = match fields {
            5 => std::iter::once("0")
                .chain(parts.iter().copied())
                .chain(std::iter::once("*"))
                .map(String::from)
                .collect(),
            6 => std::iter::once("0")
                .chain(parts.iter().copied())
                .map(String::from)
                .collect(),
            7 => parts.iter().map(|s| s.to_string()).collect(),
            n => {
                return Err(err(format!(
                    "expected 7 fields (sec min hour dom month dow year), found {n}"
                )));
            }
        };
        for (i, f) in seven.iter().enumerate() {
            if f.contains(['L', 'W', '#']) && i >= 3 {
                return Err(err(format!("`{f}`: L, W and # are not supported")));
            }
        }
        seven[5] = translate_dow(&seven[5]).map_err(err)?;
        let schedule =
            cron::Schedule::from_str(&seven.join(" ")).map_err(|e| err(e.to_string()))?;
        let granularity = if schedule.seconds().count() < 60 {
            Granularity::Second
        } else if schedule.minutes().count() < 60 {
            Granularity::Minute
        } else {
            Granularity::QuarterHour
        };
        let dom_or_dow =
            schedule.days_of_month().count() < 31 && schedule.days_of_week().count() < 7;
        Ok(CronExpr {
            source: source.to_string(),
            fields,
            schedule,
            granularity,
            dom_or_dow,
        })
    }

    pub fn source(&self) -> &str {
        &self.source
    }

    /// How many fields the operator wrote (5, 6 or 7).
    pub fn field_count(&self) -> usize {
        self.fields
    }

    fn matches(&self, t: &DateTime<Tz>) -> bool {
        let s = &self.schedule;
        let dom = s.days_of_month().includes(t.day());
        let dow = s.days_of_week().includes(t.weekday().number_from_sunday());
        let day = if self.dom_or_dow {
            dom || dow
        } else {
            dom && dow
        };
        day && s.seconds().includes(t.second())
            && s.minutes().includes(t.minute())
            && s.hours().includes(t.hour())
            && s.months().includes(t.month())
            && u32::try_from(t.year()).is_ok_and(|y| s.years().includes(y))
    }
}

/// cronexpr numbers weekdays 0–6 from Sunday (7 is Sunday too); the `cron` crate 1–7 from Sunday.
fn translate_dow(field: &str) -> Result<String, String> {
    let num = |s: &str| -> Result<Option<u32>, String> {
        match s.parse::<u32>() {
            Ok(n) if n <= 7 => Ok(Some(n % 7 + 1)),
            Ok(n) => Err(format!("day of week {n} is out of range 0-7")),
            Err(_) => Ok(None),
        }
    };
    let mut out = Vec::new();
    for part in field.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, Some(s)),
            None => (part, None),
        };
        let with_step = |r: String| match step {
            Some(s) => format!("{r}/{s}"),
            None => r,
        };
        match range.split_once('-') {
            Some((a, b)) => match (num(a)?, b.parse::<u32>()) {
                // `5-7` (Friday to Sunday): Sunday wraps to the start of the crate's week.
                (Some(a1), Ok(7)) if a1 > 1 => {
                    out.push(with_step(format!("{a1}-7")));
                    out.push("1".to_string());
                }
                (Some(a1), _) => match num(b)? {
                    Some(b1) => out.push(with_step(format!("{a1}-{b1}"))),
                    None => return Err(format!("bad day-of-week range {range}")),
                },
                (None, _) => out.push(with_step(range.to_string())),
            },
            None => match num(range)? {
                Some(n) => out.push(with_step(n.to_string())),
                None => out.push(with_step(range.to_string())),
            },
        }
    }
    Ok(out.join(","))
}

/// The values a period overrides. An active period replaces all four wholesale: a field it does not
/// set is 0, not inherited (GitLab's rule).
#[derive(Copy, Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PolicyValues {
    pub idle_count: u32,
    pub idle_count_min: u32,
    pub idle_scale_factor: f64,
    /// Milliseconds an idle machine must have been unused before it may go as surplus.
    pub idle_time_ms: u64,
}

impl PolicyValues {
    /// GitLab's idle target: `IdleCount`, or with a scale factor
    /// `min(IdleCount, max(minIdle, floor(in_use * factor)))` where `minIdle = max(IdleCountMin, 1)`.
    pub fn idle_target(&self, in_use: u32) -> u32 {
        if self.idle_scale_factor > 0.0 {
            let min_idle = self.idle_count_min.max(1);
            let scaled = (f64::from(in_use) * self.idle_scale_factor).floor();
            let scaled = if scaled >= f64::from(u32::MAX) {
                u32::MAX
            } else {
                scaled as u32
            };
            self.idle_count.min(min_idle.max(scaled))
        } else {
            self.idle_count
        }
    }
}

/// One `[[runners.machine.autoscaling]]` block.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(try_from = "PeriodSpec", into = "PeriodSpec")]
pub struct Period {
    exprs: Vec<CronExpr>,
    timezone: Tz,
    pub values: PolicyValues,
}

/// The serialized form of a [`Period`]: its source text, re-parsed on load.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeriodSpec {
    pub periods: Vec<String>,
    pub timezone: String,
    pub values: PolicyValues,
}

impl TryFrom<PeriodSpec> for Period {
    type Error = PeriodError;
    fn try_from(spec: PeriodSpec) -> Result<Period, PeriodError> {
        Period::new(&spec.periods, &spec.timezone, spec.values)
    }
}

impl From<Period> for PeriodSpec {
    fn from(p: Period) -> PeriodSpec {
        PeriodSpec {
            periods: p.exprs.iter().map(|e| e.source.clone()).collect(),
            timezone: p.timezone.name().to_string(),
            values: p.values,
        }
    }
}

impl PartialEq for Period {
    fn eq(&self, other: &Period) -> bool {
        self.timezone == other.timezone
            && self.values == other.values
            && self.exprs.len() == other.exprs.len()
            && self
                .exprs
                .iter()
                .zip(&other.exprs)
                .all(|(a, b)| a.source == b.source)
    }
}

impl Period {
    /// `timezone` is an IANA name or `UTC`; the driver resolves GitLab's `Local` before this.
    pub fn new<S: AsRef<str>>(
        periods: &[S],
        timezone: &str,
        values: PolicyValues,
    ) -> Result<Period, PeriodError> {
        let exprs = periods
            .iter()
            .map(|p| CronExpr::parse(p.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(Period {
            exprs,
            timezone: parse_timezone(timezone)?,
            values,
        })
    }

    pub fn exprs(&self) -> &[CronExpr] {
        &self.exprs
    }

    pub fn timezone(&self) -> Tz {
        self.timezone
    }

    fn contains(&self, secs: i64) -> bool {
        match self.timezone.timestamp_opt(secs, 0).single() {
            Some(local) => self.exprs.iter().any(|e| e.matches(&local)),
            None => false,
        }
    }

    fn granularity(&self) -> Granularity {
        self.exprs
            .iter()
            .map(|e| e.granularity)
            .min()
            .unwrap_or(Granularity::QuarterHour)
    }
}

/// Parses an IANA time-zone name (`UTC` included).
pub fn parse_timezone(name: &str) -> Result<Tz, PeriodError> {
    name.parse::<Tz>()
        .map_err(|_| PeriodError::TimeZone(name.to_string()))
}

/// The index of the period in force at `t`: the last one that matches.
pub fn active_period(periods: &[Period], t: Timestamp) -> Option<usize> {
    let secs = (t.0 / 1000) as i64;
    periods.iter().rposition(|p| p.contains(secs))
}

/// Upper bound on the steps of one boundary search; past it the caller simply re-checks later.
const MAX_SEARCH_STEPS: u64 = 20_000;

/// The first instant after `t` at which [`active_period`] differs from its value at `t`, or a
/// re-check instant if none is found within the search horizon. `None` when there are no periods.
pub fn next_change(periods: &[Period], t: Timestamp) -> Option<Timestamp> {
    let step = periods.iter().map(Period::granularity).min()?.step_secs();
    let current = active_period(periods, t);
    let start = t.0 / 1000;
    let mut s = (start / step + 1) * step;
    for _ in 0..MAX_SEARCH_STEPS {
        if active_period(periods, Timestamp::from_secs(s)) != current {
            // Refine to the exact second when stepping coarsely across a change.
            let mut lo = s.saturating_sub(step).max(start);
            while lo + 1 < s {
                let mid = lo + (s - lo) / 2;
                if active_period(periods, Timestamp::from_secs(mid)) != current {
                    s = mid;
                } else {
                    lo = mid;
                }
            }
            return Some(Timestamp::from_secs(s));
        }
        s += step;
    }
    Some(Timestamp::from_secs(s))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn at(tz: Tz, y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> Timestamp {
        let naive = NaiveDate::from_ymd_opt(y, mo, d)
            .unwrap()
            .and_hms_opt(h, mi, s)
            .unwrap();
        let t = tz.from_local_datetime(&naive).single().unwrap();
        Timestamp(t.timestamp_millis() as u64)
    }

    fn period(exprs: &[&str], tz: &str, idle: u32) -> Period {
        Period::new(
            exprs,
            tz,
            PolicyValues {
                idle_count: idle,
                ..Default::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn weekday_office_hours_in_berlin() {
        let p = [period(&["* * 9-17 * * mon-fri *"], "Europe/Berlin", 10)];
        let berlin = chrono_tz::Europe::Berlin;
        // Monday 2026-01-05
        assert_eq!(active_period(&p, at(berlin, 2026, 1, 5, 9, 0, 0)), Some(0));
        assert_eq!(
            active_period(&p, at(berlin, 2026, 1, 5, 17, 59, 59)),
            Some(0)
        );
        assert_eq!(active_period(&p, at(berlin, 2026, 1, 5, 18, 0, 0)), None);
        assert_eq!(active_period(&p, at(berlin, 2026, 1, 5, 8, 59, 59)), None);
        // Saturday
        assert_eq!(active_period(&p, at(berlin, 2026, 1, 10, 12, 0, 0)), None);
    }

    #[test]
    fn numeric_weekdays_count_from_sunday_zero() {
        let p = [period(&["* * * * * 1-5 *"], "UTC", 1)];
        let utc = chrono_tz::UTC;
        assert_eq!(
            active_period(&p, at(utc, 2026, 1, 5, 12, 0, 0)),
            Some(0),
            "Monday"
        );
        assert_eq!(
            active_period(&p, at(utc, 2026, 1, 9, 12, 0, 0)),
            Some(0),
            "Friday"
        );
        assert_eq!(
            active_period(&p, at(utc, 2026, 1, 10, 12, 0, 0)),
            None,
            "Saturday"
        );
        assert_eq!(
            active_period(&p, at(utc, 2026, 1, 4, 12, 0, 0)),
            None,
            "Sunday"
        );
        let sun = [
            period(&["* * * * * 0 *"], "UTC", 1),
            period(&["* * * * * 5-7 *"], "UTC", 2),
        ];
        assert_eq!(
            active_period(&sun[..1], at(utc, 2026, 1, 4, 12, 0, 0)),
            Some(0)
        );
        assert_eq!(
            active_period(&sun[1..], at(utc, 2026, 1, 4, 12, 0, 0)),
            Some(0),
            "7 = Sunday"
        );
        assert_eq!(
            active_period(&sun[1..], at(utc, 2026, 1, 8, 12, 0, 0)),
            None,
            "Thursday"
        );
    }

    #[test]
    fn last_matching_block_wins() {
        let p = [
            period(&["* * * * * * *"], "UTC", 1),
            period(&["* * 9-17 * * * *"], "UTC", 7),
        ];
        let utc = chrono_tz::UTC;
        assert_eq!(active_period(&p, at(utc, 2026, 3, 3, 10, 0, 0)), Some(1));
        assert_eq!(active_period(&p, at(utc, 2026, 3, 3, 20, 0, 0)), Some(0));
    }

    #[test]
    fn boundaries_follow_dst() {
        // Berlin switches to summer time on 2026-03-29: 09:00 local is 07:00 UTC afterwards, 08:00 before.
        let p = [period(&["* * 9-17 * * * *"], "Europe/Berlin", 3)];
        let utc = chrono_tz::UTC;
        let before = next_change(&p, at(utc, 2026, 3, 28, 0, 0, 0)).unwrap();
        assert_eq!(before, at(utc, 2026, 3, 28, 8, 0, 0));
        let after = next_change(&p, at(utc, 2026, 3, 30, 0, 0, 0)).unwrap();
        assert_eq!(after, at(utc, 2026, 3, 30, 7, 0, 0));
        let end = next_change(&p, after).unwrap();
        assert_eq!(end, at(utc, 2026, 3, 30, 16, 0, 0));
    }

    #[test]
    fn half_hour_zones_find_exact_boundaries() {
        let p = [period(&["* * 9-17 * * * *"], "Asia/Kolkata", 3)];
        let utc = chrono_tz::UTC;
        // 09:00 IST = 03:30 UTC
        assert_eq!(
            next_change(&p, at(utc, 2026, 5, 1, 0, 0, 0)),
            Some(at(utc, 2026, 5, 1, 3, 30, 0))
        );
    }

    #[test]
    fn second_granularity_boundaries() {
        let p = [period(&["0-29 * * * * * *"], "UTC", 3)];
        let utc = chrono_tz::UTC;
        assert_eq!(
            next_change(&p, at(utc, 2026, 5, 1, 0, 0, 10)),
            Some(at(utc, 2026, 5, 1, 0, 0, 30))
        );
    }

    #[test]
    fn rejects_bad_expressions_and_zones() {
        assert!(matches!(
            CronExpr::parse("* * 25 * * * *"),
            Err(PeriodError::Cron { .. })
        ));
        assert!(matches!(
            CronExpr::parse("* *"),
            Err(PeriodError::Cron { .. })
        ));
        assert!(matches!(
            CronExpr::parse("* * * * * 9 *"),
            Err(PeriodError::Cron { .. })
        ));
        assert!(matches!(
            parse_timezone("Mars/Olympus"),
            Err(PeriodError::TimeZone(_))
        ));
        assert_eq!(
            CronExpr::parse("* 9-17 * * mon-fri").unwrap().field_count(),
            5
        );
    }

    #[test]
    fn idle_target_formula() {
        let v = |count, min, f| PolicyValues {
            idle_count: count,
            idle_count_min: min,
            idle_scale_factor: f,
            idle_time_ms: 0,
        };
        assert_eq!(v(4, 0, 0.0).idle_target(100), 4);
        // factor 0.5, min 1, cap 10
        assert_eq!(v(10, 1, 0.5).idle_target(0), 1);
        assert_eq!(v(10, 1, 0.5).idle_target(7), 3);
        assert_eq!(v(10, 1, 0.5).idle_target(40), 10);
        // IdleCountMin is forced to at least 1 with a factor
        assert_eq!(v(10, 0, 0.5).idle_target(1), 1);
        assert_eq!(v(10, 4, 0.5).idle_target(2), 4);
        // IdleCount 0 caps everything
        assert_eq!(v(0, 3, 0.5).idle_target(50), 0);
    }
}
