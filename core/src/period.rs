//! `[[runners.machine.autoscaling]]` periods: GitLab's 7-field cron syntax evaluated in a real time zone.
//!
//! GitLab (gorhill/cronexpr) writes `sec min hour dom month dow year`; 5- and 6-field forms get a `0`
//! seconds field (and a `*` year for 5 fields) prepended, as cronexpr does. `L`, `W` and `#` in the
//! day fields are evaluated here, as cronexpr defines them (see `DaySpecials`). A period is active during
//! every second its expression matches in its time zone (DST included). Unlike GitLab, the last second
//! of a period's last minute is inside the period (GitLab's ±1 s fire-time check misses it).

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Timelike, Weekday};
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
    days: DaySpecials,
}

/// The `L`, `W` and `#` items of the day fields, which the `cron` crate refuses; drover evaluates
/// them as gorhill/cronexpr (GitLab's parser) defines them. (`croner` knows them, but not the year
/// field of GitLab's 7-field syntax.) The plain items of a field still go to the `cron` crate;
/// `dom_plain`/`dow_plain` say whether there were any.
#[derive(Clone, Debug, Default)]
struct DaySpecials {
    dom_plain: bool,
    dow_plain: bool,
    dom: Vec<DaySpecial>,
    dow: Vec<DaySpecial>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum DaySpecial {
    /// `L` in day of month: the last day of the month.
    LastDay,
    /// `LW`: the last weekday (Monday to Friday) of the month.
    LastWeekday,
    /// `15W`: the weekday nearest the 15th, without leaving the month.
    NearestWeekday(u32),
    /// `5L` in day of week: the last Friday of the month (0 or 7 = Sunday).
    LastOf(u32),
    /// `1#2`: the second Monday of the month.
    Nth(u32, u32),
}

impl DaySpecial {
    fn matches(self, date: NaiveDate) -> bool {
        let last = last_day_of_month(date);
        let weekday = date.weekday().num_days_from_sunday();
        match self {
            DaySpecial::LastDay => date.day() == last.day(),
            DaySpecial::LastWeekday => {
                let back = match last.weekday() {
                    Weekday::Sat => 1,
                    Weekday::Sun => 2,
                    _ => 0,
                };
                date.day() == last.day() - back
            }
            DaySpecial::NearestWeekday(n) => {
                if n > last.day() {
                    return false;
                }
                let Some(target) = date.with_day(n) else {
                    return false;
                };
                let nearest = match target.weekday() {
                    Weekday::Sat if n == 1 => n + 2,
                    Weekday::Sat => n - 1,
                    Weekday::Sun if n == last.day() => n - 2,
                    Weekday::Sun => n + 1,
                    _ => n,
                };
                date.day() == nearest
            }
            DaySpecial::LastOf(d) => weekday == d && date.day() + 7 > last.day(),
            DaySpecial::Nth(d, k) => weekday == d && (date.day() - 1) / 7 + 1 == k,
        }
    }
}

fn last_day_of_month(date: NaiveDate) -> NaiveDate {
    let (y, m) = if date.month() == 12 {
        (date.year() + 1, 1)
    } else {
        (date.year(), date.month() + 1)
    };
    NaiveDate::from_ymd_opt(y, m, 1)
        .and_then(|first| first.pred_opt())
        .unwrap_or(date)
}

/// Splits a day-of-month field into its plain items (for the `cron` crate) and `L`, `LW`, `nW`.
fn split_dom(field: &str) -> Result<(Option<String>, Vec<DaySpecial>), String> {
    let mut plain = Vec::new();
    let mut special = Vec::new();
    for item in field.split(',') {
        let upper = item.to_ascii_uppercase();
        if upper == "L" {
            special.push(DaySpecial::LastDay);
        } else if upper == "LW" {
            special.push(DaySpecial::LastWeekday);
        } else if let Some(n) = upper.strip_suffix('W') {
            match n.parse::<u32>() {
                Ok(n @ 1..=31) => special.push(DaySpecial::NearestWeekday(n)),
                _ => return Err(format!("`{item}`: W follows a day of month 1-31")),
            }
        } else if item.contains(['L', 'l', 'W', 'w', '#']) {
            return Err(format!(
                "`{item}`: day of month takes L, LW or nW (n = 1-31)"
            ));
        } else {
            plain.push(item);
        }
    }
    Ok(((!plain.is_empty()).then(|| plain.join(",")), special))
}

/// Splits a day-of-week field into its plain items and `nL`, `n#k` (n = 0-7 or a name).
fn split_dow(field: &str) -> Result<(Option<String>, Vec<DaySpecial>), String> {
    let day = |s: &str| -> Option<u32> {
        const NAMES: [&str; 7] = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];
        match s.parse::<u32>() {
            Ok(n) if n <= 7 => Some(n % 7),
            Ok(_) => None,
            Err(_) => NAMES
                .iter()
                .position(|n| n.eq_ignore_ascii_case(s))
                .map(|i| i as u32),
        }
    };
    let mut plain = Vec::new();
    let mut special = Vec::new();
    for item in field.split(',') {
        if let Some((d, k)) = item.split_once('#') {
            match (day(d), k.parse::<u32>()) {
                (Some(d), Ok(k @ 1..=5)) => special.push(DaySpecial::Nth(d, k)),
                _ => {
                    return Err(format!(
                        "`{item}`: # takes a day of week and an occurrence 1-5, as 1#2"
                    ));
                }
            }
        } else if let Some(d) = item.strip_suffix(['L', 'l']) {
            match day(d) {
                Some(d) => special.push(DaySpecial::LastOf(d)),
                None => {
                    return Err(format!(
                        "`{item}`: L in day of week follows a day, as 5L (the last Friday)"
                    ));
                }
            }
        } else if item.contains(['L', 'W', '#']) && day(item).is_none() {
            return Err(format!("`{item}`: day of week takes nL or n#k"));
        } else {
            plain.push(item);
        }
    }
    Ok(((!plain.is_empty()).then(|| plain.join(",")), special))
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
            // Month names (JUL) may hold an L; seconds, minutes, hours and years have no names.
            if f.contains(['L', 'W', '#']) && matches!(i, 0..=2 | 6) {
                return Err(err(format!(
                    "`{f}`: L, W and # belong in day of month and day of week only"
                )));
            }
        }
        let (dom_rest, dom_special) = split_dom(&seven[3]).map_err(err)?;
        let (dow_rest, dow_special) = split_dow(&seven[5]).map_err(err)?;
        let days = DaySpecials {
            dom_plain: dom_rest.is_some() || dom_special.is_empty(),
            dow_plain: dow_rest.is_some() || dow_special.is_empty(),
            dom: dom_special,
            dow: dow_special,
        };
        // The `cron` crate evaluates the plain part of each day field; L, W and # are ours.
        seven[3] = dom_rest.unwrap_or_else(|| "*".to_string());
        seven[5] = translate_dow(&dow_rest.unwrap_or_else(|| "*".to_string())).map_err(err)?;
        let schedule =
            cron::Schedule::from_str(&seven.join(" ")).map_err(|e| err(e.to_string()))?;
        let granularity = if schedule.seconds().count() < 60 {
            Granularity::Second
        } else if schedule.minutes().count() < 60 {
            Granularity::Minute
        } else {
            Granularity::QuarterHour
        };
        let dom_restricted = !days.dom.is_empty() || schedule.days_of_month().count() < 31;
        let dow_restricted = !days.dow.is_empty() || schedule.days_of_week().count() < 7;
        Ok(CronExpr {
            source: source.to_string(),
            fields,
            schedule,
            granularity,
            dom_or_dow: dom_restricted && dow_restricted,
            days,
        })
    }

    /// Whether it uses `L`, `W` or `#`, which drover evaluates itself (see [`DaySpecials`]).
    pub fn uses_day_specials(&self) -> bool {
        !self.days.dom.is_empty() || !self.days.dow.is_empty()
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
        let d = &self.days;
        let date = t.date_naive();
        let dom = (d.dom_plain && s.days_of_month().includes(t.day()))
            || d.dom.iter().any(|x| x.matches(date));
        let dow = (d.dow_plain && s.days_of_week().includes(t.weekday().number_from_sunday()))
            || d.dow.iter().any(|x| x.matches(date));
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
    fn last_nearest_and_nth_days_as_cronexpr() {
        let utc = chrono_tz::UTC;
        let on = |expr: &str, d: u32| {
            let p = [period(&[expr], "UTC", 1)];
            // March 2026: the 1st is a Sunday, the 31st a Tuesday.
            active_period(&p, at(utc, 2026, 3, d, 12, 0, 0)).is_some()
        };
        let days = |expr: &str| -> Vec<u32> { (1..=31).filter(|&d| on(expr, d)).collect() };
        assert_eq!(days("* * * L * * *"), [31]);
        assert_eq!(days("* * * 1,L * * *"), [1, 31]);
        assert_eq!(days("* * * LW * * *"), [31]);
        assert_eq!(days("* * * 15W * * *"), [16], "the 15th is a Sunday");
        assert_eq!(days("* * * 1W * * *"), [2], "never into February");
        assert_eq!(days("* * * 14W * * *"), [13], "a Saturday goes to Friday");
        assert_eq!(days("* * * * * 5L *"), [27], "the last Friday");
        assert_eq!(days("* * * * * 0L *"), [29], "the last Sunday");
        assert_eq!(days("* * * * * 7L *"), [29], "7 is Sunday too");
        assert_eq!(days("* * * * * 1#2 *"), [9], "the second Monday");
        assert_eq!(days("* * * * * mon#1,fri#5 *"), [2]);
        assert_eq!(days("* * * * * 2#5 *"), [31]);
        assert_eq!(days("* * * * * 7 *"), [1, 8, 15, 22, 29], "7 = Sunday");
        // Both day fields restricted: either matches (cronexpr's rule).
        assert_eq!(days("* * * L * 1#1 *"), [2, 31]);
        // February 2026 ends on a Saturday: LW is Friday the 27th.
        let feb = [period(&["* * * LW * * *"], "UTC", 1)];
        assert!(active_period(&feb, at(utc, 2026, 2, 27, 0, 0, 0)).is_some());
        assert!(active_period(&feb, at(utc, 2026, 2, 28, 0, 0, 0)).is_none());
        assert!(
            CronExpr::parse("* * * L * * *")
                .unwrap()
                .uses_day_specials()
        );
        assert!(
            !CronExpr::parse("* * * * jul * *")
                .unwrap()
                .uses_day_specials()
        );
        // Boundaries: the period of the last Friday starts at local midnight.
        let p = [period(&["* * * * * 5L *"], "Europe/Berlin", 1)];
        assert_eq!(
            next_change(&p, at(utc, 2026, 3, 20, 0, 0, 0)),
            Some(at(utc, 2026, 3, 26, 23, 0, 0))
        );
    }

    #[test]
    fn rejects_bad_expressions_and_zones() {
        for bad in [
            "L * * * * * *",
            "* * * 32W * * *",
            "* * * * * 1#6 *",
            "* * * * * L *",
            "* * * 5#1 * * *",
        ] {
            assert!(
                matches!(CronExpr::parse(bad), Err(PeriodError::Cron { .. })),
                "{bad}"
            );
        }
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
