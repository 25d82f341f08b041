//! CSV traces: one recorded job per line.
//!
//! ```text
//! # comments and blank lines are skipped; the header is optional
//! arrival,duration,runner
//! 0s,5m,linux                   # offset from the workload's start ...
//! 2026-01-05T08:00:00Z,310,linux  # ... or an RFC 3339 time; bare numbers are seconds
//! ```
//! Without a header the columns are `arrival[,duration[,runner]]`. Rows need not be sorted.

use std::ops::Range;
use std::path::{Path, PathBuf};

use drover_core::Timestamp;

use crate::parse::{WorkloadError, parse_instant, parse_seconds_or_duration_ms};

/// Recorded jobs: absolute arrival times, optional durations and runner names.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    pub rows: Vec<TraceRow>,
    /// Runner names referenced by rows, interned.
    pub runners: Vec<String>,
    pub source: PathBuf,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TraceRow {
    pub at: Timestamp,
    pub duration_ms: Option<u64>,
    /// Index into [`Trace::runners`].
    pub runner: Option<u16>,
    /// Line in the source, for errors found later (0 when not from a file).
    pub line: u32,
}

#[derive(Copy, Clone, PartialEq, Eq, Debug)]
enum Column {
    Arrival,
    Duration,
    Runner,
}

/// Parses a trace whose offsets count from `start`.
pub fn parse_csv(text: &str, path: &Path, start: Timestamp) -> Result<Trace, WorkloadError> {
    let err = |span: Range<usize>, message: String, hint: Option<&str>| {
        WorkloadError::at(path, text, span, message, hint)
    };
    let mut columns = vec![Column::Arrival, Column::Duration, Column::Runner];
    let mut trace = Trace {
        source: path.to_path_buf(),
        ..Trace::default()
    };
    let mut first = true;
    let mut line_start = 0;
    for (i, raw_line) in text.split_inclusive('\n').enumerate() {
        let line_no = i + 1;
        let at = line_start;
        line_start += raw_line.len();
        let content = raw_line.split(['#', '\r', '\n']).next().unwrap_or("");
        if content.trim().is_empty() {
            continue;
        }
        // The byte range of a field in `text`.
        let span = |(offset, value): (usize, &str)| at + offset..at + offset + value.len();
        let fields = split_fields(content);
        if std::mem::take(&mut first) && is_header(&fields) {
            columns.clear();
            for &(offset, name) in &fields {
                let c = match name.to_ascii_lowercase().as_str() {
                    "arrival" => Column::Arrival,
                    "duration" => Column::Duration,
                    "runner" => Column::Runner,
                    other => {
                        return Err(err(
                            span((offset, name)),
                            format!("unknown trace column {other:?}"),
                            Some("columns are arrival, duration (optional) and runner (optional)"),
                        ));
                    }
                };
                if columns.contains(&c) {
                    return Err(err(
                        span((offset, name)),
                        format!("column {name:?} appears twice"),
                        None,
                    ));
                }
                columns.push(c);
            }
            if !columns.contains(&Column::Arrival) {
                return Err(err(
                    span((0, content.trim_end())),
                    "the header has no `arrival` column".into(),
                    None,
                ));
            }
            continue;
        }
        if fields.len() > columns.len() {
            return Err(err(
                span(fields[columns.len()]),
                format!(
                    "{} fields, but the trace has {} columns",
                    fields.len(),
                    columns.len()
                ),
                None,
            ));
        }
        let mut row = TraceRow {
            at: start,
            duration_ms: None,
            runner: None,
            line: line_no as u32,
        };
        let mut has_arrival = false;
        for (&(offset, value), kind) in fields.iter().zip(&columns) {
            let here = || span((offset, value));
            match kind {
                Column::Arrival => {
                    row.at = arrival(value, start).map_err(|e| {
                        err(here(), format!("arrival {value:?}: {e}"), Some("write an offset like \"90s\" or \"1h5m\" (bare numbers are seconds), or an RFC 3339 time"))
                    })?;
                    has_arrival = true;
                }
                Column::Duration if value.is_empty() => {}
                Column::Duration => {
                    row.duration_ms = Some(parse_seconds_or_duration_ms(value).map_err(|e| {
                        err(
                            here(),
                            format!("duration {value:?}: {e}"),
                            Some("write \"5m\", \"90s\" or a number of seconds"),
                        )
                    })?);
                }
                Column::Runner if value.is_empty() => {}
                Column::Runner => {
                    let idx = match trace.runners.iter().position(|r| r == value) {
                        Some(i) => i,
                        None => {
                            trace.runners.push(value.to_string());
                            trace.runners.len() - 1
                        }
                    };
                    row.runner = Some(
                        u16::try_from(idx)
                            .map_err(|_| err(here(), "too many runner names".into(), None))?,
                    );
                }
            }
        }
        if !has_arrival {
            return Err(err(
                span((0, content.trim_end())),
                "row has no arrival".into(),
                None,
            ));
        }
        trace.rows.push(row);
    }
    // Stable: rows with equal times keep their file order.
    trace.rows.sort_by_key(|r| r.at);
    Ok(trace)
}

/// Fields, trimmed, with the byte offset in `line` where each starts.
fn split_fields(line: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut offset = 0;
    for field in line.split(',') {
        let value = field.trim();
        let lead = field.len() - field.trim_start().len();
        out.push((offset + lead, value));
        offset += field.len() + 1;
    }
    out
}

fn is_header(fields: &[(usize, &str)]) -> bool {
    fields.first().is_some_and(|(_, f)| {
        f.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && arrival(f, Timestamp::ZERO).is_err()
    })
}

fn arrival(value: &str, start: Timestamp) -> Result<Timestamp, String> {
    // `YYYY-` starts an absolute time.
    if value.len() > 4
        && value.as_bytes()[4] == b'-'
        && value.as_bytes()[..4].iter().all(u8::is_ascii_digit)
    {
        let t = parse_instant(value)?;
        if t < start {
            return Err(format!("is before the workload's start {start}"));
        }
        return Ok(t);
    }
    parse_seconds_or_duration_ms(value).map(|ms| Timestamp(start.0.saturating_add(ms)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const START: Timestamp = Timestamp(1_000_000);

    #[test]
    fn rows_with_and_without_header() {
        let t = parse_csv(
            "# recorded\narrival,runner,duration\n5m,a,90\n0s,b,2m\n\n",
            Path::new("t.csv"),
            START,
        )
        .unwrap();
        assert_eq!(t.runners, vec!["a".to_string(), "b".to_string()]);
        assert_eq!(
            t.rows,
            vec![
                TraceRow {
                    at: START,
                    duration_ms: Some(120_000),
                    runner: Some(1),
                    line: 4
                },
                TraceRow {
                    at: Timestamp(START.0 + 300_000),
                    duration_ms: Some(90_000),
                    runner: Some(0),
                    line: 3
                },
            ]
        );
        let t = parse_csv("1970-01-01T00:20:00Z,1.5\n12\n", Path::new("t.csv"), START).unwrap();
        assert_eq!(
            t.rows[0],
            TraceRow {
                at: Timestamp(START.0 + 12_000),
                duration_ms: None,
                runner: None,
                line: 2
            }
        );
        assert_eq!(t.rows[1].at, Timestamp(1_200_000));
        assert_eq!(t.rows[1].duration_ms, Some(1_500));
    }

    #[test]
    fn errors_have_line_and_column() {
        let e = parse_csv(
            "arrival,duration\n0s,5m\n10s, 5 parsecs\n",
            Path::new("t.csv"),
            START,
        )
        .unwrap_err();
        let WorkloadError::Invalid(e) = e else {
            panic!()
        };
        assert_eq!(e.line_column(), (3, 6));
        assert_eq!(&e.text[e.span.clone()], "5 parsecs");
        assert!(e.message.contains("5 parsecs"), "{}", e.message);
        let e = parse_csv("arrival,flavour\n", Path::new("t.csv"), START).unwrap_err();
        assert_eq!(
            e.to_string(),
            "t.csv:1:9: unknown trace column \"flavour\"\n  \
             hint: columns are arrival, duration (optional) and runner (optional)"
        );
        let WorkloadError::Invalid(e) = e else {
            panic!()
        };
        assert_eq!(&e.text[e.span.clone()], "flavour");
        let e = parse_csv("1969-12-31T00:00:00Z\n", Path::new("t.csv"), START).unwrap_err();
        assert!(e.to_string().starts_with("t.csv:1:1: "), "{e}");
        // Tabs, CRLF and multi-byte characters before the value.
        let e = parse_csv(
            "arrival,runner\r\n0s,é\r\n\té,x\r\n",
            Path::new("t.csv"),
            START,
        )
        .unwrap_err();
        let WorkloadError::Invalid(e) = e else {
            panic!()
        };
        assert_eq!(e.line_column(), (3, 2));
        assert_eq!(&e.text[e.span.clone()], "é");
    }
}
