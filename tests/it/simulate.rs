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
    // Every figure with its interval, and an answer to "what should I set?".
    assert!(
        text.contains("30 replications") && text.contains('±'),
        "{text}"
    );
    assert!(
        text.contains("what meets p95 wait ≤ 1m00s") && text.contains("> recommended: #"),
        "{text}"
    );
}

/// The bundled example's answer must not hang on the seed: five base seeds, one recommendation,
/// and it meets the SLO at the upper end of its interval.
#[test]
fn the_bundled_example_recommends_the_same_for_five_seeds() {
    let mut answers = Vec::new();
    for seed in ["1", "2", "3", "4", "5"] {
        let v = json(&drover(&[
            "simulate",
            "--config",
            SEED_CONFIG,
            "--workload",
            STEADY,
            "--seed",
            seed,
            "--format",
            "json",
        ]));
        let rec = &v["plan"]["recommended"];
        assert_eq!(
            rec["meets_slo"],
            serde_json::json!(true),
            "seed {seed}: {rec}"
        );
        let high = rec["p95_wait_seconds"]["high"].as_f64().unwrap();
        assert!(high <= 60.0, "seed {seed}: {rec}");
        // The id names the point, counted from 1 as the table does.
        let id = rec["id"].as_u64().unwrap() as usize;
        assert_eq!(v["plan"]["points"][id - 1]["params"], rec["params"]);
        answers.push(rec["params"].clone());
    }
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
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
        "--replications",
        "8",
    ];
    let a = drover(&args);
    let b = drover(&args);
    // Byte for byte, once the wall-clock figures are gone.
    let strip = |o: &Output| {
        stdout(o)
            .lines()
            .filter(|l| !l.contains("wall_seconds") && !l.contains("events_per_second"))
            .filter(|l| !l.contains("peak_rss_bytes"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(&a), strip(&b));
    let a = json(&a);
    assert!(
        a["perf"]["events"].as_u64().is_some_and(|n| n > 1_000),
        "{}",
        a["perf"]
    );
    let jobs = &a["jobs"];
    assert!(jobs["mean"].as_f64().is_some_and(|n| n > 2_000.0), "{jobs}");
    assert!(
        jobs["low"].as_f64() < jobs["mean"].as_f64()
            && jobs["mean"].as_f64() < jobs["high"].as_f64(),
        "Poisson arrivals vary between replications: {jobs}"
    );
    assert_eq!(a["replications"], serde_json::json!(8));
    let c = json(&drover(&[&args[..], &["--seed", "2"]].concat()));
    assert_ne!(without_perf(a.clone()), without_perf(c));

    let priced = json(&drover(
        &[&args[..], &["--cost-per-machine-hour", "0.10", "--no-plan"]].concat(),
    ));
    assert!(priced.get("plan").is_none());
    let hours = a["machine_hours"]["mean"].as_f64().unwrap();
    let cost = priced["cost"]["mean"].as_f64().unwrap();
    assert!((cost - hours * 0.10).abs() < 0.002, "{cost} vs {hours} h");
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
            "--no-plan",
            "--replications",
            "4",
        ]));
        assert!(
            v["jobs"]["mean"].as_f64().is_some_and(|n| n > 500.0),
            "{path}: {v}"
        );
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
    assert_eq!(v["points"][5]["id"], serde_json::json!(6));
    assert_eq!(v["recommended"]["meets_slo"], serde_json::json!(false));
    let pareto = v["pareto"].as_array().unwrap();
    assert!(!pareto.is_empty());
    // Ids count from 1, as the table does.
    assert!(
        pareto
            .iter()
            .all(|id| (1..=6).contains(&id.as_u64().unwrap()))
    );
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
        "--no-plan",
        "--out",
        out_file.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out_file).unwrap()).unwrap();
    assert_eq!(
        v["jobs"]["mean"].as_f64(),
        Some(1873.0),
        "every row of the trace"
    );
    assert_eq!(
        v["jobs"]["high"].as_f64(),
        Some(1873.0),
        "the same trace every time"
    );
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
        dir.join("missing.toml").to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.matches("(os error 2)").count(),
        1,
        "the OS error once: {err}"
    );

    // Plots are SVG: another extension is refused before anything runs.
    let out = drover(&[
        "simulate",
        "-c",
        SEED_CONFIG,
        "--workload",
        STEADY,
        "--plot",
        "x.png",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("plots are drawn as SVG"),
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

    // `drover replay` measures the recorded waits as the simulator did.
    let replayed = json(&drover(&[
        "replay",
        journal.to_str().unwrap(),
        "--format",
        "json",
    ]));
    let waits = &replayed["wait_seconds"];
    assert!(
        (waits["mean"].as_f64().unwrap() - original.wait_seconds.mean).abs() < 0.002,
        "replay {waits} vs simulate {:?}",
        original.wait_seconds
    );
    assert!(
        original.wait_seconds.mean > 0.0,
        "{:?}",
        original.wait_seconds
    );
    let max = waits["max"].as_f64().unwrap();
    assert!(
        (max - original.wait_seconds.max).abs() <= 0.01 * max,
        "replay {waits} vs simulate {:?}",
        original.wait_seconds
    );

    // Under the config it was recorded with: the same jobs, the same busy time.
    let v = json(&drover(&[
        "simulate",
        "--journal",
        journal.to_str().unwrap(),
        "--format",
        "json",
        "--replications",
        "1",
        "--no-plan",
    ]));
    assert_eq!(v["jobs"]["mean"].as_f64(), Some(original.jobs as f64));
    assert_eq!(
        v["machine_seconds"]["busy"]["mean"].as_f64(),
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
        "--replications",
        "1",
        "--no-plan",
    ]));
    assert_eq!(v["jobs"]["mean"].as_f64(), Some(original.jobs as f64));
    assert!(v["machines_created"]["mean"].as_f64() != Some(original.machines_created as f64));

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

/// Peak resident memory of a finished run, from its JSON report.
fn peak_rss_mib(v: &serde_json::Value) -> f64 {
    v["perf"]["peak_rss_bytes"].as_f64().unwrap() / (1024.0 * 1024.0)
}

#[test]
fn an_overloaded_configuration_gets_a_verdict_fast_and_small() {
    let dir = temp_dir("overload");
    // 100 jobs a minute of 10 minutes each on at most 20 machines: 6,000/h against 120/h.
    let flood = dir.join("flood.toml");
    std::fs::write(
        &flood,
        "jobs = 100_000_000\n[arrivals]\nkind = \"poisson\"\nrate_per_min = 100.0\n\
         [duration]\nkind = \"constant\"\nvalue = \"10m\"\n",
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = drover(&[
        "simulate",
        "-c",
        SEED_CONFIG,
        "--workload",
        flood.to_str().unwrap(),
        "--format",
        "json",
    ]);
    let v = json(&out);
    assert!(
        started.elapsed().as_secs_f64() < 5.0,
        "{:?}",
        started.elapsed()
    );
    assert!(peak_rss_mib(&v) < 64.0, "{}", v["perf"]);
    let u = &v["unstable"];
    assert_eq!(u["arrivals_per_hour"], serde_json::json!(6000.0), "{u}");
    assert_eq!(u["capacity_per_hour"], serde_json::json!(120.0), "{u}");
    assert_eq!(u["stopped"], serde_json::json!(true));
    assert!(
        v.get("plan").is_none(),
        "nothing to plan from: {}",
        v["plan"]
    );

    // A fleet the rates cannot expose: every job needs a fresh machine (MaxBuilds 1) that takes
    // 10 minutes to boot, so 40 machines start about 220 jobs an hour against 1,200 arriving.
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        "concurrent = 40\n[[runners]]\nname = \"fresh\"\nexecutor = \"docker+machine\"\nlimit = 40\n\
         [runners.machine]\nIdleCount = 0\nMaxBuilds = 1\nMachineName = \"fresh-%s\"\n",
    )
    .unwrap();
    let slow = dir.join("slow.toml");
    std::fs::write(
        &slow,
        "jobs = 100_000\n[arrivals]\nkind = \"poisson\"\nrate_per_min = 20.0\n\
         [duration]\nkind = \"constant\"\nvalue = \"1m\"\n[boot]\nkind = \"constant\"\nvalue = \"10m\"\n",
    )
    .unwrap();
    let started = std::time::Instant::now();
    let base = [
        "simulate",
        "-c",
        config.to_str().unwrap(),
        "--workload",
        slow.to_str().unwrap(),
        "--replications",
        "4",
    ];
    let v = json(&drover(
        &[&base[..], &["--no-plan", "--format", "json"]].concat(),
    ));
    assert!(
        started.elapsed().as_secs_f64() < 5.0,
        "{:?}",
        started.elapsed()
    );
    assert!(peak_rss_mib(&v) < 64.0, "{}", v["perf"]);
    let u = &v["unstable"];
    assert_eq!(u["evidence"], serde_json::json!("queue"), "{u}");
    let (arrivals, capacity) = (
        u["arrivals_per_hour"].as_f64().unwrap(),
        u["capacity_per_hour"].as_f64().unwrap(),
    );
    assert!((1_100.0..1_300.0).contains(&arrivals), "{u}");
    assert!(capacity < 300.0, "{u}");

    // A sweep marks the point and goes on: 400 machines keep up.
    let args = [
        &base[..],
        &["--sweep", "limit=40,400", "--slo-p95-wait", "15m"],
    ]
    .concat();
    let out = drover(&[&args[..], &["--format", "json"]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(
        v["points"][0]["unstable"]["evidence"],
        serde_json::json!("queue")
    );
    assert!(v["points"][1]["unstable"].is_null(), "{}", v["points"][1]);
    assert_eq!(v["recommended"]["id"], serde_json::json!(2));
    let text = stdout(&drover(&args));
    assert!(
        text.contains("! #1: unstable: arrivals") && text.contains("> recommended: #2"),
        "{text}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

const AUTOSCALER_CONFIG: &str = "fixtures/config/good/autoscaler-plan.toml";

/// A docker-autoscaler config is planned like a docker+machine one: its runner described in
/// slots, the same report, and sweeps over its own keys. Four jobs per instance under
/// `max_instances` 10 carry a load one job per instance cannot, on fewer machine-hours, and idle
/// slots cut the wait for a new instance.
#[test]
fn a_docker_autoscaler_config_is_planned_and_swept() {
    let out = drover(&[
        "simulate",
        "-c",
        AUTOSCALER_CONFIG,
        "--workload",
        STEADY,
        "--no-plan",
        "--replications",
        "4",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    for expected in [
        "runner asg-linux: docker-autoscaler, capacity_per_instance 4, max_instances 10",
        "policy idle_count 4, idle_time 20m00s",
        "job wait",
        "machine-hours",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }

    let v = json(&drover(&[
        "simulate",
        "-c",
        AUTOSCALER_CONFIG,
        "--workload",
        STEADY,
        "--sweep",
        "capacity_per_instance=1,4",
        "--sweep",
        "idle_count=0,4",
        "--replications",
        "4",
        "--format",
        "json",
    ]));
    let points = v["points"].as_array().expect("points");
    assert_eq!(points.len(), 4, "{v}");
    let point = |capacity: u64, idle: u64| {
        points
            .iter()
            .find(|p| {
                p["params"]
                    == serde_json::json!({"capacity_per_instance": capacity, "idle_count": idle})
            })
            .unwrap_or_else(|| panic!("no point {capacity}/{idle} in {v}"))
    };
    let p95 = |p: &serde_json::Value| p["wait_seconds"]["p95"]["mean"].as_f64().unwrap();
    let hours = |p: &serde_json::Value| p["machine_hours"]["mean"].as_f64().unwrap();
    let (one, four, warm) = (point(1, 0), point(4, 0), point(4, 4));
    assert!(p95(one) > 10.0 * p95(four), "{one}\n{four}");
    assert!(hours(four) < hours(one), "{one}\n{four}");
    assert!(p95(warm) < p95(four), "{warm}\n{four}");
    // Never more than max_instances machines (the mean of the replications' peaks).
    assert!(
        points
            .iter()
            .all(|p| p["peak_machines"]["mean"].as_f64().unwrap() <= 10.0),
        "{v}"
    );

    // docker+machine keys do not apply to it, nor its keys to docker+machine.
    for (config, key, kind) in [
        (AUTOSCALER_CONFIG, "IdleCount=0,1", "docker+machine"),
        (
            SEED_CONFIG,
            "capacity_per_instance=1,2",
            "docker-autoscaler",
        ),
    ] {
        let out = drover(&[
            "simulate",
            "-c",
            config,
            "--workload",
            STEADY,
            "--sweep",
            key,
        ]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains(&format!("applies to {kind} runners")),
            "{}",
            stderr(&out)
        );
    }
}
