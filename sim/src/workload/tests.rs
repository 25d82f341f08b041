//! Parsing and validation of workload files, and where their errors point.

use super::*;
use crate::parse::line_column;

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
