//! The engine: determinism, the core's invariants under faults, drain, an independent accounting of
//! machine time, the coordinator models, routing, recorded traffic and sweeps.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use drover_core::{
    Command, Config, Core, Event, JobId, MachineId, RunnerConfig, RunnerId, Step, Timestamp,
};
use drover_sim::sweep::{SweepOptions, run_sweep};
use drover_sim::{Observer, Recorder, RunOptions, Scenario, SimError, Workload, run, run_observed};

fn workload(text: &str) -> Arc<Workload> {
    Arc::new(Workload::parse(text, Path::new("test.toml")).unwrap())
}

/// A day of autoscaling with every fault switched on.
const FAULTY: &str = r#"
horizon = "1d"
seed = 11
[arrivals]
kind = "diurnal"
hourly = [1,1,1,1,1,1,2,6,12,12,12,10,8,12,12,12,10,6,3,2,1,1,1,1]
batch = [1, 4]
[duration]
kind = "lognormal"
median = "4m"
p95 = "25m"
[boot]
kind = "uniform"
min = "45s"
max = "3m"
failure_rate = 0.08
[removal]
kind = "exponential"
mean = "20s"
failure_rate = 0.1
[faults]
slow_boot_rate = 0.05
slow_boot_factor = 6.0
machine_loss_per_hour = 0.2
"#;

fn autoscaled() -> Config {
    let mut r = RunnerConfig::pool("linux", 4, 40);
    let p = r.policy_mut().unwrap();
    p.max_builds = 5;
    p.max_growth_rate = 6;
    p.base.idle_time_ms = 600_000;
    p.base.idle_scale_factor = 0.3;
    p.base.idle_count_min = 2;
    Config::new(30).with_runner(r)
}

fn faulty() -> Scenario {
    Scenario::new(autoscaled(), workload(FAULTY), None).unwrap()
}

#[test]
fn same_seed_same_json_different_seed_different_json() {
    let a = run(&faulty(), &RunOptions::default()).unwrap().report;
    let b = run(&faulty(), &RunOptions::default()).unwrap().report;
    let c = run(&faulty().with_seed(12), &RunOptions::default())
        .unwrap()
        .report;
    assert_eq!(a.to_json_without_perf(), b.to_json_without_perf());
    assert_ne!(a.to_json_without_perf(), c.to_json_without_perf());
    assert!(a.to_json().contains("\"perf\"") && !a.to_json_without_perf().contains("\"perf\""));
    // The fields the issue names are all there.
    let v: serde_json::Value = serde_json::from_str(&a.to_json()).unwrap();
    for key in [
        "jobs",
        "wait_seconds",
        "p_wait",
        "machine_seconds",
        "machines_created",
        "machines_removed",
    ] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    for key in ["creation_failures", "peak_machines", "perf"] {
        assert!(v.get(key).is_some(), "missing {key}");
    }
    for key in ["mean", "p50", "p90", "p95", "p99", "max"] {
        assert!(
            v["wait_seconds"].get(key).is_some(),
            "missing wait_seconds.{key}"
        );
    }
    for key in ["creating", "idle", "busy", "removing", "total"] {
        assert!(
            v["machine_seconds"].get(key).is_some(),
            "missing machine_seconds.{key}"
        );
    }
    for key in [
        "events",
        "wall_seconds",
        "events_per_second",
        "peak_rss_bytes",
    ] {
        assert!(v["perf"].get(key).is_some(), "missing perf.{key}");
    }
    assert!(v.get("cost").is_none(), "no price, no cost");
    let priced = a.clone().with_price(Some(0.5));
    assert_eq!(
        priced.cost,
        Some(((a.machine_hours() * 0.5) * 1000.0).round() / 1000.0)
    );
}

/// Checks the core's invariants every few steps and tracks each machine's state from the commands
/// and events alone, independently of the core's counters and of the engine's integration.
#[derive(Default)]
struct Checker {
    steps: u64,
    machines: BTreeMap<MachineId, (State, Timestamp)>,
    job_machine: BTreeMap<JobId, MachineId>,
    /// Machine-milliseconds per state: creating, idle, busy, removing.
    ms: [u64; 4],
    last_anomalies: u64,
    last_totals: (u32, u32, u32),
    runs_per_runner: BTreeMap<RunnerId, u64>,
    /// Jobs handed to the core (each arrival is, once a runner asks for it).
    received: BTreeSet<JobId>,
    /// Jobs that ended: reported finished to the core, or failed by it before they ran.
    succeeded: BTreeSet<JobId>,
    failed: BTreeSet<JobId>,
}

#[derive(Copy, Clone, PartialEq, Debug)]
enum State {
    Creating = 0,
    Idle = 1,
    Busy = 2,
    Removing = 3,
}

impl Checker {
    fn set(&mut self, m: MachineId, to: Option<State>, now: Timestamp) {
        if let Some((from, since)) = self.machines.remove(&m) {
            self.ms[from as usize] += now.0 - since.0;
        }
        if let Some(to) = to {
            self.machines.insert(m, (to, now));
        }
    }

    fn close(&mut self, end: Timestamp) {
        let open: Vec<MachineId> = self.machines.keys().copied().collect();
        for m in open {
            let state = self.machines[&m].0;
            self.set(m, Some(state), end);
        }
    }
}

impl Observer for Checker {
    fn on_step(&mut self, now: Timestamp, event: &Event, step: &Step, core: &Core) {
        self.steps += 1;
        // Every 97th step (a prime, so no periodic pattern of the run hides between checks).
        if self.steps.is_multiple_of(97)
            && let Err(v) = core.check_invariants()
        {
            panic!("after step {} at {now} ({}): {v}", self.steps, event.kind());
        }
        match event {
            Event::JobReceived { job, .. } => {
                assert!(self.received.insert(*job), "{job:?} received twice");
            }
            Event::JobFinished { job, outcome } => {
                let ended = match outcome {
                    drover_core::Outcome::Success => &mut self.succeeded,
                    _ => &mut self.failed,
                };
                ended.insert(*job);
            }
            _ => {}
        }
        for c in &step.commands {
            if let Command::FailJob { job, .. } = c {
                self.failed.insert(*job);
            }
        }
        match event {
            Event::MachineCreated { machine }
                if self
                    .machines
                    .get(machine)
                    .is_some_and(|s| s.0 == State::Creating) =>
            {
                self.set(*machine, Some(State::Idle), now)
            }
            Event::JobFinished { job, .. } => {
                if let Some(m) = self.job_machine.remove(job)
                    && self.machines.get(&m).is_some_and(|s| s.0 == State::Busy)
                {
                    self.set(m, Some(State::Idle), now);
                }
            }
            Event::MachineRemoved { machine } => self.set(*machine, None, now),
            _ => {}
        }
        for c in &step.commands {
            match c {
                Command::CreateMachine { machine, .. } => {
                    self.set(*machine, Some(State::Creating), now)
                }
                Command::RemoveMachine { machine, .. }
                    if self
                        .machines
                        .get(machine)
                        .is_some_and(|s| s.0 != State::Removing) =>
                {
                    self.set(*machine, Some(State::Removing), now);
                }
                Command::RunJob {
                    job,
                    runner,
                    machine,
                } => {
                    *self.runs_per_runner.entry(*runner).or_default() += 1;
                    if let Some(m) = machine {
                        self.job_machine.insert(*job, *m);
                        self.set(*m, Some(State::Busy), now);
                    }
                }
                _ => {}
            }
        }
        self.last_anomalies = core.state().anomalies().total();
        let t = core.state().totals();
        self.last_totals = (t.running, t.queued, t.in_flight);
    }
}

#[test]
fn invariants_hold_and_machine_time_adds_up_under_faults() {
    let scenario = faulty();
    let mut checker = Checker::default();
    let report = run_observed(&scenario, &RunOptions::default(), &mut checker)
        .unwrap()
        .report;
    assert!(
        checker.steps > 10_000,
        "a real workout: {} steps",
        checker.steps
    );
    assert_eq!(
        checker.last_anomalies, 0,
        "the simulated world never confuses the core"
    );
    // Every fault happened.
    assert!(
        report.creation_failures > 0 && report.machines_lost > 0 && report.jobs_failed > 0,
        "{report:?}"
    );
    assert!(report.machines_removed > 0 && report.jobs > 1_000);

    // Machine time per state, integrated from the core's counters, equals the sum of every
    // machine's own sojourns read off the command/event stream (Little's law on the sample path).
    let end =
        Timestamp(scenario.workload.start.0 + (report.simulated_seconds * 1000.0).round() as u64);
    checker.close(end);
    let secs = |ms: u64| ms as f64 / 1000.0;
    let m = &report.machine_seconds;
    assert_eq!(
        [m.creating, m.idle, m.busy, m.removing],
        [
            secs(checker.ms[0]),
            secs(checker.ms[1]),
            secs(checker.ms[2]),
            secs(checker.ms[3])
        ]
    );
    assert!(m.creating > 0.0 && m.idle > 0.0 && m.busy > 0.0 && m.removing > 0.0);
}

#[test]
fn every_job_ends_after_arrivals_stop() {
    let mut checker = Checker::default();
    let report = run_observed(&faulty(), &RunOptions::default(), &mut checker)
        .unwrap()
        .report;
    assert!(report.drained);
    assert_eq!(report.jobs_pending, 0);
    // Nothing running or queued at the end (a long poll may still be open).
    assert_eq!((checker.last_totals.0, checker.last_totals.1), (0, 0));
    // Every arrival is accounted for: counted from the event stream alone, each job handed to the
    // core ended exactly once, and the report's totals are those jobs.
    assert!(checker.received.len() > 1_000);
    assert!(checker.succeeded.is_disjoint(&checker.failed));
    let ended: BTreeSet<JobId> = checker.succeeded.union(&checker.failed).copied().collect();
    assert_eq!(ended, checker.received, "jobs received but never ended");
    assert_eq!(
        (report.jobs, report.jobs_failed),
        (checker.succeeded.len() as u64, checker.failed.len() as u64)
    );
    // Ids are given in arrival order from 1: none is missing, so no arrival skipped the core.
    assert_eq!(
        checker.received.last().map(|j| j.0),
        Some(checker.received.len() as u64)
    );
}

#[test]
fn interval_polling_waits_half_a_check_interval() {
    // Few jobs (0.5 a minute, 1 minute long), ten idle machines: a job waits only for the runner's
    // next poll, which comes every check_interval (3 s) after an empty answer. Poisson arrivals see a
    // uniform residual: mean 1.5 s (sd 0.87 s; 2,000 jobs give a standard error of 0.02 s), p95 2.85 s.
    let text = "jobs = 2000\nseed = 3\n[arrivals]\nkind = \"poisson\"\nrate_per_min = 0.5\n\
                [duration]\nkind = \"constant\"\nvalue = \"1m\"\n[coordinator]\npolling = \"interval\"\n";
    let config = Config::new(20).with_runner(RunnerConfig::pool("linux", 10, 20));
    let report = run(
        &Scenario::new(config.clone(), workload(text), None).unwrap(),
        &RunOptions::default(),
    )
    .unwrap()
    .report;
    assert!(
        (report.wait_seconds.mean - 1.5).abs() < 0.1,
        "{:?}",
        report.wait_seconds
    );
    assert!(
        (report.wait_seconds.p95 - 2.85).abs() < 0.15,
        "{:?}",
        report.wait_seconds
    );
    assert!(report.wait_seconds.max <= 3.0);

    // Long polling on the same traffic, as Workhorse does it: a job ends the held request with a
    // bare 204 (not with the job), and the core asks again at once (`request_pause`); Rails hands
    // out the job at once (no round trip here), so no job waits at all.
    let long = text.replace("\"interval\"", "\"long\"");
    let report = run(
        &Scenario::new(config.clone(), workload(&long), None).unwrap(),
        &RunOptions::default(),
    )
    .unwrap()
    .report;
    assert_eq!(report.wait_seconds.max, 0.0, "{:?}", report.wait_seconds);

    // With a 200 ms round trip a job waits the bare 204's and the next request's: 0.2-0.4 s.
    let mut slow = Workload::parse(&long, Path::new("test.toml")).unwrap();
    slow.dispatch.round_trip = drover_sim::dist::Dist::Constant { ms: 200.0 };
    let report = run(
        &Scenario::new(config, Arc::new(slow), None).unwrap(),
        &RunOptions::default(),
    )
    .unwrap()
    .report;
    assert!(
        report.wait_seconds.max <= 0.4 && report.wait_seconds.mean >= 0.2,
        "{:?}",
        report.wait_seconds
    );
}

#[test]
fn shares_route_jobs_and_runner_picks_one() {
    let text = "jobs = 4000\n[arrivals]\nkind = \"poisson\"\nrate_per_min = 5.0\n\
                [duration]\nkind = \"constant\"\nvalue = \"2m\"\n[shares]\nlinux = 3\nwindows = 1\n";
    let config = Config::new(50)
        .with_runner(RunnerConfig::pool("linux", 2, 30))
        .with_runner(RunnerConfig::pool("windows", 1, 20));
    let mut checker = Checker::default();
    let scenario = Scenario::new(config.clone(), workload(text), None).unwrap();
    let report = run_observed(&scenario, &RunOptions::default(), &mut checker)
        .unwrap()
        .report;
    assert_eq!(report.jobs, 4000);
    let linux = checker.runs_per_runner[&RunnerId(0)] as f64;
    // Binomial(4000, 0.75): sd 27 jobs.
    assert!((linux - 3000.0).abs() < 150.0, "{linux}");

    // --runner windows: only the windows share arrives (the jobs count counts those).
    let only = Scenario::new(config.clone(), workload(text), Some("windows")).unwrap();
    let mut checker = Checker::default();
    let report = run_observed(&only, &RunOptions::default(), &mut checker)
        .unwrap()
        .report;
    assert_eq!(report.jobs, 4000);
    assert_eq!(
        checker.runs_per_runner.keys().collect::<Vec<_>>(),
        vec![&RunnerId(0)]
    );
    assert_eq!(only.config.runners.len(), 1);

    // Without shares, two runners cannot share the traffic.
    let plain = text.split("[shares]").next().unwrap();
    let err = Scenario::new(config.clone(), workload(plain), None).unwrap_err();
    assert!(matches!(err, SimError::NeedRouting { .. }), "{err}");
    assert!(err.to_string().contains("--runner"), "{err}");
    let linux_only = text.replace("windows = 1", "windows = 0");
    let err = Scenario::new(config.clone(), workload(&linux_only), Some("windows")).unwrap_err();
    assert!(matches!(err, SimError::NoTraffic { .. }), "{err}");
    let err = Scenario::new(config, workload(text), Some("macos")).unwrap_err();
    assert!(
        err.to_string()
            .contains("\"macos\" is not in the config; it has \"linux\", \"windows\""),
        "{err}"
    );
}

/// Feeds a [`Recorder`] as a journal replay would.
struct Recording(Recorder);

impl Observer for Recording {
    fn on_step(&mut self, now: Timestamp, event: &Event, step: &Step, _: &Core) {
        self.0.observe(now, event, step);
    }
}

#[test]
fn recorded_traffic_replays_the_same_jobs() {
    let text = "horizon = \"6h\"\nseed = 5\n[arrivals]\nkind = \"poisson\"\nrate_per_min = 3.0\n\
                [duration]\nkind = \"exponential\"\nmean = \"6m\"\n[boot]\nkind = \"uniform\"\nmin = \"1m\"\nmax = \"2m\"\n";
    let config = autoscaled();
    let scenario = Scenario::new(config.clone(), workload(text), None).unwrap();
    let mut rec = Recording(Recorder::new(&config));
    let original = run_observed(&scenario, &RunOptions::default(), &mut rec)
        .unwrap()
        .report;
    let recorded = rec.0.into_workload("recorded".into()).unwrap();
    let replayed_scenario = Scenario::new(config, Arc::new(recorded), None).unwrap();
    let replayed = run(&replayed_scenario, &RunOptions::default())
        .unwrap()
        .report;
    assert_eq!(replayed.jobs, original.jobs);
    // The same jobs with the same durations: the same busy machine time, to the millisecond.
    assert_eq!(replayed.machine_seconds.busy, original.machine_seconds.busy);
}

#[test]
fn a_sweep_finds_the_cheapest_configuration_meeting_the_slo() {
    let text = "jobs = 3000\nseed = 2\n[arrivals]\nkind = \"poisson\"\nrate_per_min = 3.0\n\
                [duration]\nkind = \"exponential\"\nmean = \"5m\"\n[boot]\nkind = \"constant\"\nvalue = \"2m\"\n";
    let mut runner = RunnerConfig::pool("linux", 0, 40);
    runner.policy_mut().unwrap().base.idle_time_ms = 300_000;
    let scenario =
        Scenario::new(Config::new(40).with_runner(runner), workload(text), None).unwrap();
    let specs = vec![
        "IdleCount=0..=12:3".parse().unwrap(),
        "limit=20,40".parse().unwrap(),
    ];
    let options = SweepOptions {
        slo_p95_wait_seconds: Some(60.0),
        cost_per_machine_hour: Some(0.1),
        replications: 4,
        stop: None,
    };
    let done = std::sync::atomic::AtomicUsize::new(0);
    let report = run_sweep(&scenario, &specs, &options, &|| {
        done.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    })
    .unwrap();
    assert_eq!(report.points.len(), 10);
    assert_eq!(done.into_inner(), 40, "4 replications of 10 points");

    // 15 busy machines on average. Pure on-demand (IdleCount 0) often waits for a 2-minute boot;
    // warm pools wait less and cost more.
    let p95 = |i: usize| report.points[i].summary.wait_seconds.p95.mean;
    let hours = |i: usize| report.points[i].summary.machine_hours.mean;
    assert!(
        p95(0) > 60.0 && p95(8) < p95(0) && hours(8) > hours(0),
        "{}",
        report.table()
    );
    let rec = report.recommended.clone().unwrap();
    assert!(rec.meets_slo);
    let best = &report.points[rec.index].summary;
    assert!(best.wait_seconds.p95.high <= 60.0);
    // Nothing cheaper meets the SLO at its upper bound.
    for p in &report.points {
        if p.summary.wait_seconds.p95.high <= 60.0 {
            assert!(p.summary.cost.unwrap().mean >= best.cost.unwrap().mean);
        }
    }
    assert!(report.pareto.contains(&rec.index));
    // Common random numbers: replication i of every point sees the same jobs, so counts that depend
    // on the traffic alone agree exactly while differing between replications.
    let jobs = report.points[0].summary.samples.p95_wait.len();
    assert_eq!(jobs, 4);
    let busy = |i: usize| report.points[i].summary.machine_seconds.busy;
    assert!(busy(0).half_width() > 0.0, "{:?}", busy(0));
    assert!((1..10).all(|i| busy(i) == busy(0)), "{}", report.table());
    // Points are in grid order and the JSON lists them with their params.
    let v: serde_json::Value = serde_json::from_str(&report.to_json()).unwrap();
    assert_eq!(
        v["points"][3]["params"],
        serde_json::json!({"IdleCount": 3, "limit": 40})
    );
    assert_eq!(v["recommended"]["id"], serde_json::json!(rec.index + 1));
    assert!(v["pareto"].as_array().is_some_and(|a| !a.is_empty()));

    // Without a warm pool nobody meets a 1-second SLO: the closest is named.
    let strict = SweepOptions {
        slo_p95_wait_seconds: Some(1.0),
        ..options
    };
    let report = run_sweep(&scenario, &specs[1..], &strict, &|| {}).unwrap();
    let rec = report.recommended.clone().unwrap();
    assert!(!rec.meets_slo, "{}", report.table());
    let lowest = report
        .points
        .iter()
        .map(|p| p.summary.wait_seconds.p95.high)
        .fold(f64::INFINITY, f64::min);
    assert_eq!(rec.p95_wait_seconds.high, lowest);
    assert!(
        report.table().contains("no configuration meets"),
        "{}",
        report.table()
    );
}

#[test]
fn series_for_plots_stay_bounded() {
    let result = run(
        &faulty(),
        &RunOptions {
            series_points: 100,
            ..RunOptions::default()
        },
    )
    .unwrap();
    assert!(
        (50..=200).contains(&result.series.len()),
        "{}",
        result.series.len()
    );
    // Time-averaged levels agree with the run's totals.
    let width = result.series[1].t - result.series[0].t;
    let busy: f64 = result.series.iter().map(|p| p.busy * width).sum();
    let total = result.report.machine_seconds.busy;
    assert!((busy - total).abs() / total < 0.02, "{busy} vs {total}");
    let svg = drover_sim::plot::time_series("test", &result.series, &result.report).unwrap();
    assert!(svg.starts_with("<svg") && svg.contains("queued jobs") && svg.contains("p95 wait"));
}

#[test]
fn an_interrupted_sweep_keeps_the_points_that_finished() {
    let text = "jobs = 2000\nseed = 4\n[arrivals]\nkind = \"poisson\"\nrate_per_min = 3.0\n\
                [duration]\nkind = \"exponential\"\nmean = \"5m\"\n";
    let scenario = Scenario::new(
        Config::new(40).with_runner(RunnerConfig::pool("linux", 2, 40)),
        workload(text),
        None,
    )
    .unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let options = SweepOptions {
        slo_p95_wait_seconds: Some(60.0),
        replications: 1,
        stop: Some(stop.clone()),
        ..SweepOptions::default()
    };
    let specs = vec!["IdleCount=0..=40".parse().unwrap()];
    // "Ctrl-C" as the first run finishes: that run's point is kept, the runs not started are not.
    let report = run_sweep(&scenario, &specs, &options, &|| {
        stop.store(true, std::sync::atomic::Ordering::Relaxed)
    })
    .unwrap();
    assert!(
        (1..41).contains(&report.points.len()),
        "{}",
        report.points.len()
    );
    assert!(
        report.notes.iter().any(|n| n.starts_with("interrupted: ")),
        "{:?}",
        report.notes
    );
    assert!(report.points.iter().all(|p| p.summary.replications == 1));
}

#[test]
fn the_wait_split_by_cause_adds_up_to_the_mean_wait() {
    // Pure on demand (IdleCount 0) with a 2-minute boot and room to grow: jobs wait for creations.
    let text = "jobs = 3000\nseed = 5\n[arrivals]\nkind = \"poisson\"\nrate_per_min = 2.0\n\
                [duration]\nkind = \"exponential\"\nmean = \"5m\"\n[boot]\nkind = \"constant\"\nvalue = \"2m\"\n";
    let on_demand = Scenario::new(
        Config::new(100).with_runner(RunnerConfig::pool("linux", 0, 100)),
        workload(text),
        None,
    )
    .unwrap();
    let r = run(&on_demand, &RunOptions::default()).unwrap().report;
    let c = &r.wait_by_cause;
    let sum = c.machine_creating + c.limit_or_concurrent + c.next_request;
    assert!(
        r.drained && (sum - r.wait_seconds.mean).abs() < 0.01,
        "{c:?} vs {:?}",
        r.wait_seconds
    );
    assert!(c.machine_creating > 0.9 * r.wait_seconds.mean, "{c:?}");
    // The same traffic on 3 machines that never go away: waits come from the limit.
    let mut runner = RunnerConfig::pool("linux", 3, 3);
    runner.policy_mut().unwrap().base.idle_time_ms = 86_400_000;
    let capped = Scenario::new(Config::new(100).with_runner(runner), workload(text), None).unwrap();
    let r = run(&capped, &RunOptions::default()).unwrap().report;
    let c = &r.wait_by_cause;
    let sum = c.machine_creating + c.limit_or_concurrent + c.next_request;
    assert!(
        (sum - r.wait_seconds.mean).abs() < 0.01,
        "{c:?} vs {:?}",
        r.wait_seconds
    );
    assert!(c.limit_or_concurrent > 0.9 * r.wait_seconds.mean, "{c:?}");
}
