//! `drover simulate` end to end: the bundled workloads on the seed config, JSON determinism, sweeps
//! and their exit code, plots, recorded journals, and errors that point at the line.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use drover_core::{Config, Core, Event, Step, Timestamp};
use drover_sim::{Observer, RunOptions, Scenario, Workload, run_observed};

const SEED_CONFIG: &str = "fixtures/config/good/seed-digitalocean.toml";
const STEADY: &str = "fixtures/workloads/steady-day.toml";
const SLO_NOT_MET: i32 = 6;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn drover(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(args)
        .current_dir(root())
        .env_remove("CONFIG_FILE")
        .env("TZ", "UTC")
        .output()
        .expect("run the drover binary")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "drover failed: {}", stderr(o));
    serde_json::from_str(&stdout(o)).expect("JSON on stdout")
}

fn without_perf(mut v: serde_json::Value) -> serde_json::Value {
    v.as_object_mut().expect("an object").remove("perf");
    v
}

fn temp_dir(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("drover-it-simulate-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn the_readme_command_prints_a_readable_table() {
    let out = drover(&["simulate", "--config", SEED_CONFIG, "--workload", STEADY]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for expected in [
        "workload: poisson 2/min",
        "IdleCount 5",
        "limit 20",
        "jobs completed",
        "job wait",
        "p95",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    assert!(
        text.contains("machine-hours") && text.contains("utilisation"),
        "{text}"
    );
}

#[test]
fn json_is_identical_for_a_seed_and_differs_between_seeds() {
    let args = [
        "simulate",
        "-c",
        SEED_CONFIG,
        "--workload",
        STEADY,
        "--format",
        "json",
    ];
    let a = json(&drover(&args));
    let b = json(&drover(&args));
    assert_eq!(without_perf(a.clone()), without_perf(b));
    assert!(
        a["perf"]["events"].as_u64().is_some_and(|n| n > 1_000),
        "{}",
        a["perf"]
    );
    assert!(a["jobs"].as_u64().is_some_and(|n| n > 2_000));
    let c = json(&drover(&[&args[..], &["--seed", "2"]].concat()));
    assert_ne!(without_perf(a.clone()), without_perf(c));

    let priced = json(&drover(
        &[&args[..], &["--cost-per-machine-hour", "0.10"]].concat(),
    ));
    let hours = a["machine_seconds"]["total"].as_f64().unwrap() / 3600.0;
    let cost = priced["cost"].as_f64().unwrap();
    assert!((cost - hours * 0.10).abs() < 0.001, "{cost} vs {hours} h");
}

#[test]
fn every_bundled_workload_runs() {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("fixtures/workloads"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 3, "{files:?}");
    for file in files {
        let path = file
            .strip_prefix(root())
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let v = json(&drover(&[
            "simulate",
            "-c",
            SEED_CONFIG,
            "--workload",
            &path,
            "--format",
            "json",
        ]));
        assert!(v["jobs"].as_u64().is_some_and(|n| n > 500), "{path}: {v}");
        assert_eq!(v["drained"], serde_json::json!(true), "{path}");
    }
}

#[test]
fn a_sweep_names_the_cheapest_configuration_or_exits_6() {
    let dir = temp_dir("sweep");
    let svg = dir.join("sweep.svg");
    let args = [
        "simulate",
        "-c",
        SEED_CONFIG,
        "--workload",
        STEADY,
        "--sweep",
        "IdleCount=0..=8:4",
        "--sweep",
        "IdleTime=0,20m",
        "--cost-per-machine-hour",
        "0.05",
        "--plot",
        svg.to_str().unwrap(),
    ];
    let out = drover(&[&args[..], &["--slo-p95-wait", "3m"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains("IdleCount") && text.contains("IdleTime") && text.contains("Pareto front"),
        "{text}"
    );
    assert!(text.contains("> recommended: #"), "{text}");
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(
        picture.starts_with("<svg")
            && picture.contains("Pareto front")
            && picture.contains("recommended")
    );

    // Nothing waits under a millisecond at the 95th percentile here: exit 6, and the closest named.
    let out = drover(&[&args[..], &["--slo-p95-wait", "1ms", "--format", "json"]].concat());
    assert_eq!(out.status.code(), Some(SLO_NOT_MET), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(v["points"].as_array().map(Vec::len), Some(6));
    assert_eq!(
        v["points"][5]["params"],
        serde_json::json!({"IdleCount": 8, "IdleTime": 1200})
    );
    assert_eq!(v["recommended"]["meets_slo"], serde_json::json!(false));
    assert!(v["pareto"].as_array().is_some_and(|p| !p.is_empty()));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn plot_and_out_write_files() {
    let dir = temp_dir("plot");
    let (svg, out_file) = (dir.join("run.svg"), dir.join("run.json"));
    let out = drover(&[
        "simulate",
        "-c",
        SEED_CONFIG,
        "--workload",
        "fixtures/workloads/bursty-day.toml",
        "--plot",
        svg.to_str().unwrap(),
        "--format",
        "json",
        "--out",
        out_file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    assert_eq!(v["jobs"].as_u64(), Some(1873), "every row of the trace");
    let picture = std::fs::read_to_string(&svg).unwrap();
    assert!(
        picture.contains("queued jobs") && picture.contains("busy") && picture.contains("p95 wait")
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_workloads_and_arguments_say_where_and_what_to_do() {
    let dir = temp_dir("bad");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "jobs = 100\n[arrivals]\nkind = \"poisson\"\nrate_per_min = 2.0\n[duration]\nkind = \"exponential\"\nmean = \"5 minuts\"\n").unwrap();
    let out = drover(&[
        "simulate",
        "-c",
        SEED_CONFIG,
        "--workload",
        bad.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    let at = format!("--> {}:7:8", bad.display());
    assert!(
        err.contains("error: mean = \"5 minuts\" is not a duration"),
        "{err}"
    );
    assert!(err.contains(&at), "{err}");
    assert!(
        err.contains("7 | mean = \"5 minuts\"") && err.contains("^^^^^^^^"),
        "{err}"
    );
    assert!(err.contains("hint: write durations with a unit"), "{err}");

    // A mistake in a trace names the trace's own line, even after a tab and with CRLF line ends.
    let trace = dir.join("bad.csv");
    std::fs::write(&trace, "arrival,duration\r\n0s,5m\r\n10s,\t5 parsecs\r\n").unwrap();
    let workload = dir.join("trace.toml");
    std::fs::write(
        &workload,
        "[arrivals]\nkind = \"trace\"\nfile = \"bad.csv\"\n",
    )
    .unwrap();
    let out = drover(&[
        "simulate",
        "-c",
        SEED_CONFIG,
        "--workload",
        workload.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("--> {}:3:6\n", trace.display())),
        "{err}"
    );
    assert!(
        err.contains("3 | 10s,\t5 parsecs\n  |     \t^^^^^^^^^\n"),
        "{err}"
    );
    assert!(
        err.contains("= hint: write \"5m\", \"90s\" or a number of seconds"),
        "{err}"
    );

    let out = drover(&[
        "simulate",
        "-c",
        SEED_CONFIG,
        "--workload",
        STEADY,
        "--sweep",
        "IdleCnt=1..=3",
    ]);
    assert_eq!(out.status.code(), Some(2), "clap refuses bad values");
    assert!(
        stderr(&out).contains("unknown key \"IdleCnt\""),
        "{}",
        stderr(&out)
    );

    let out = drover(&[
        "simulate",
        "-c",
        SEED_CONFIG,
        "--workload",
        STEADY,
        "--runner",
        "nope",
    ]);
    assert!(
        stderr(&out).contains("runner \"nope\" is not in the config; it has \"runner-1\""),
        "{}",
        stderr(&out)
    );

    let out = drover(&[
        "simulate",
        "-c",
        "fixtures/config/bad/concurrent-zero.toml",
        "--workload",
        STEADY,
    ]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "config errors exit 2: {}",
        stderr(&out)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// Keeps every event the core was handed.
struct Tape(Vec<(Timestamp, Event)>);

impl Observer for Tape {
    fn on_step(&mut self, now: Timestamp, event: &Event, _: &Step, _: &Core) {
        self.0.push((now, event.clone()));
    }
}

/// Writes a real journal: a simulated run's events, with sequence numbers and digests.
fn record_journal(path: &Path, config: &Config, start: Timestamp, tape: &[(Timestamp, Event)]) {
    let header = drover_journal::Header {
        created_at: start,
        drover_version: "test".into(),
        config: config.clone(),
    };
    let mut writer = drover_journal::Writer::create(path, &header, false).unwrap();
    let mut core = Core::new(config.clone(), start);
    for (now, event) in tape {
        writer
            .append_event(core.state().seq(), *now, event, core.digest())
            .unwrap();
        let _ = core.handle(*now, event.clone());
    }
}

#[test]
fn a_journal_replays_its_jobs_under_another_config() {
    let dir = temp_dir("journal");
    let journal = dir.join("day.journal");
    let text = "horizon = \"4h\"\nseed = 9\n[arrivals]\nkind = \"poisson\"\nrate_per_min = 1.5\n\
                [duration]\nkind = \"exponential\"\nmean = \"6m\"\n";
    let workload = Workload::parse(text, Path::new("day.toml")).unwrap();
    let config = Config::new(10).with_runner(drover_core::RunnerConfig::pool("runner-1", 1, 10));
    let scenario = Scenario::new(config.clone(), std::sync::Arc::new(workload), None).unwrap();
    let mut tape = Tape(Vec::new());
    let original = run_observed(&scenario, &RunOptions::default(), &mut tape)
        .unwrap()
        .report;
    record_journal(&journal, &scenario.config, scenario.workload.start, &tape.0);

    // Under the config it was recorded with: the same jobs, the same busy time.
    let v = json(&drover(&[
        "simulate",
        "--journal",
        journal.to_str().unwrap(),
        "--format",
        "json",
    ]));
    assert_eq!(v["jobs"].as_u64(), Some(original.jobs));
    assert_eq!(
        v["machine_seconds"]["busy"].as_f64(),
        Some(original.machine_seconds.busy)
    );
    // "What would the seed config have done with that day?"
    let v = json(&drover(&[
        "simulate",
        "-c",
        SEED_CONFIG,
        "--journal",
        journal.to_str().unwrap(),
        "--format",
        "json",
    ]));
    assert_eq!(v["jobs"].as_u64(), Some(original.jobs));
    assert!(v["machines_created"].as_u64() != Some(original.machines_created));

    std::fs::write(dir.join("junk"), b"not a journal").unwrap();
    let out = drover(&["simulate", "--journal", dir.join("junk").to_str().unwrap()]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "journal errors exit 3: {}",
        stderr(&out)
    );
    std::fs::remove_dir_all(dir).unwrap();
}
