//! A sweep's report for people and programs: the table of points, the Pareto front and the
//! verdict as text, and the same as JSON.

use std::fmt::Write as _;

use serde::Serialize;

use super::{Params, Recommendation, SweepReport};
use crate::replicate::Summary;
use crate::report::{Perf, human_secs, percent};

/// `#3, #4 and #7`.
fn ids(ids: &[usize]) -> String {
    let names: Vec<String> = ids.iter().map(|i| format!("#{i}")).collect();
    match names.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} and {last}", rest.join(", ")),
        _ => names.join(""),
    }
}

impl SweepReport {
    /// The JSON document: every point (its id, params and summary), the Pareto front and the
    /// recommendation, naming points by id (counted from 1, as in the table).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(&self.to_value()).unwrap_or_default()
    }

    /// [`SweepReport::to_json`] as a value, to nest in another document.
    pub fn to_value(&self) -> serde_json::Value {
        #[derive(Serialize)]
        struct Point<'a> {
            id: usize,
            params: &'a Params,
            #[serde(flatten)]
            summary: &'a Summary,
        }
        #[derive(Serialize)]
        struct Doc<'a> {
            slo_p95_wait_seconds: Option<f64>,
            cost_per_machine_hour: Option<f64>,
            replications: u32,
            points: Vec<Point<'a>>,
            pareto: Vec<usize>,
            recommended: &'a Option<Recommendation>,
            notes: &'a [String],
            perf: &'a Perf,
        }
        let doc = Doc {
            slo_p95_wait_seconds: self.options.slo_p95_wait_seconds,
            cost_per_machine_hour: self.options.cost_per_machine_hour,
            replications: self.options.replications.max(1),
            points: self
                .points
                .iter()
                .enumerate()
                .map(|(i, p)| Point {
                    id: i + 1,
                    params: &p.params,
                    summary: &p.summary,
                })
                .collect(),
            pareto: self.pareto.iter().map(|i| i + 1).collect(),
            recommended: &self.recommended,
            notes: &self.notes,
            perf: &self.perf,
        };
        serde_json::to_value(&doc).unwrap_or_default()
    }

    /// A table of the points (means ± the half-width of their 95 % intervals), the Pareto front
    /// and the verdict.
    pub fn table(&self) -> String {
        self.table_of(false)
    }

    /// [`SweepReport::table`] listing only the points the verdict names and the Pareto front.
    pub fn short_table(&self) -> String {
        self.table_of(true)
    }

    fn table_of(&self, short: bool) -> String {
        let mut out = String::new();
        let named = |i: usize| {
            self.pareto.contains(&i)
                || self.recommended.as_ref().is_some_and(|r| {
                    r.index == i
                        || r.indistinguishable.contains(&(i + 1))
                        || r.uncertain.contains(&(i + 1))
                })
        };
        let priced = self.options.cost_per_machine_hour.is_some();
        let widths: Vec<usize> = self.knobs.iter().map(|k| k.name().len().max(6)).collect();
        let _ = write!(out, "  {:>4}", "#");
        for (k, w) in self.knobs.iter().zip(&widths) {
            let _ = write!(out, "  {:>w$}", k.name());
        }
        let _ = write!(
            out,
            "  {:>14}  {:>8}  {:>7}  {:>6}  {:>13}",
            "p95 wait", "mean", "waited", "failed", "machine-h",
        );
        let _ = writeln!(out, "{}", if priced { "          cost" } else { "" });
        let mut hidden = 0;
        let mut unstable = Vec::new();
        for (i, p) in self.points.iter().enumerate() {
            if short && !named(i) && p.summary.unstable.is_none() {
                hidden += 1;
                continue;
            }
            let mark = match &self.recommended {
                _ if p.summary.unstable.is_some() => '!',
                Some(r) if r.index == i => '>',
                _ if self.pareto.contains(&i) => '*',
                _ => ' ',
            };
            let _ = write!(out, "{mark} {:>4}", i + 1);
            for ((k, v), w) in p.params.0.iter().zip(&widths) {
                let _ = write!(out, "  {:>w$}", k.show(*v));
            }
            let s = &p.summary;
            if let Some(u) = &s.unstable {
                unstable.push(format!("#{}: {}", i + 1, u.verdict()));
                if u.stopped {
                    let _ = writeln!(out, "  {:>14}", "unstable");
                    continue;
                }
            }
            let p95 = s.wait_seconds.p95;
            let hours = s.machine_hours;
            let cost = s
                .cost
                .map(|c| format!("  {:>12}", format!("{:.2} ±{:.2}", c.mean, c.half_width())))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {:>14}  {:>8}  {:>7}  {:>6}  {:>13}{}",
                format!("{} ±{}", human_secs(p95.mean), human_secs(p95.half_width())),
                human_secs(s.wait_seconds.mean.mean),
                percent(s.p_wait.mean),
                format!("{:.0}", s.jobs_failed.mean),
                format!("{:.1} ±{:.1}", hours.mean, hours.half_width()),
                cost
            );
        }
        for line in &unstable {
            let _ = writeln!(out, "  ! {line}");
        }
        if hidden > 0 {
            let _ = writeln!(
                out,
                "  ({hidden} more configurations, none better on both cost and p95 wait: --format json lists them all)"
            );
        }
        let _ = writeln!(out);
        let reps = self.options.replications.max(1);
        let _ = writeln!(
            out,
            "  {reps} replications per configuration, the same seeds for all; ± is the 95% confidence interval"
        );
        let front: Vec<usize> = self.pareto.iter().map(|i| i + 1).collect();
        if !front.is_empty() {
            let _ = writeln!(
                out,
                "  * Pareto front (mean cost vs mean p95 wait): {}",
                ids(&front)
            );
        }
        let what = if priced { "cost" } else { "machine-hours" };
        match (&self.recommended, self.options.slo_p95_wait_seconds) {
            (Some(r), Some(slo)) if r.meets_slo => {
                let _ = writeln!(
                    out,
                    "  > recommended: #{} {} — p95 wait at most {} (upper bound; mean {}) ≤ SLO {}, {what} {:.2} ±{:.2}",
                    r.id,
                    r.params.describe(),
                    human_secs(r.p95_wait_seconds.high),
                    human_secs(r.p95_wait_seconds.mean),
                    human_secs(slo),
                    r.cost.mean,
                    r.cost.half_width()
                );
                if !r.indistinguishable.is_empty() {
                    let n = r.indistinguishable.len();
                    let _ = writeln!(
                        out,
                        "    {} {} statistically indistinguishable from #{} in {what} (the paired difference's interval holds 0): {}",
                        ids(&r.indistinguishable),
                        if n == 1 {
                            "meets the SLO too and is"
                        } else {
                            "meet the SLO too and are"
                        },
                        r.id,
                        if n == 1 {
                            "either will do"
                        } else {
                            "any of them will do"
                        }
                    );
                }
                if !r.uncertain.is_empty() {
                    let n = r.uncertain.len();
                    let _ = writeln!(
                        out,
                        "    {} {} cheaper and {} the SLO on average, but not at the 95% upper bound",
                        ids(&r.uncertain),
                        if n == 1 { "is" } else { "are" },
                        if n == 1 { "meets" } else { "meet" }
                    );
                }
            }
            (Some(r), Some(slo)) => {
                let _ = writeln!(
                    out,
                    "  no configuration meets p95 wait ≤ {} at its 95% upper bound; closest is #{} {} with p95 wait at most {} (mean {}; {what} {:.2})",
                    human_secs(slo),
                    r.id,
                    r.params.describe(),
                    human_secs(r.p95_wait_seconds.high),
                    human_secs(r.p95_wait_seconds.mean),
                    r.cost.mean
                );
            }
            (None, Some(_)) => {
                let _ = writeln!(
                    out,
                    "  no configuration keeps up with the traffic: raise limit (and concurrent)"
                );
            }
            _ => {
                let _ = writeln!(out, "  give --slo-p95-wait (e.g. 2m) for a recommendation");
            }
        }
        for note in &self.notes {
            let _ = writeln!(out, "  note: {note}");
        }
        out
    }

    /// How fast the sweep went: the one line that varies between runs.
    pub fn perf_line(&self) -> String {
        let p = &self.perf;
        format!(
            "  perf: {} runs, {} events in {:.2} s ({:.2} M events/s), peak RSS {:.1} MiB\n",
            self.points.len() * self.options.replications.max(1) as usize,
            crate::report::group(p.events),
            p.wall_seconds,
            p.events_per_second / 1e6,
            p.peak_rss_bytes as f64 / (1024.0 * 1024.0)
        )
    }
}
