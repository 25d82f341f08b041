//! Sim-to-real: `drover simulate --journal` predicts what the real daemon did.
//!
//! The real daemon (Docker sandboxes on the real engine, the fake GitLab long-polling) runs a
//! generated trace: Poisson arrivals, `sleep` scripts. Its waits are measured on the fake GitLab's
//! clock, from each job's enqueue to its start (the runner's acknowledgement, GitLab's
//! `started_at`), never from drover's own view. Then the simulator, fed the daemon's journal with the
//! same config, predicts the mean and p95 wait and the machine-seconds; each must be within
//! [`TOLERANCE`] of the measurement (a wait also passes within [`WAIT_FLOOR_SECONDS`], or
//! [`WAIT_SDS`] standard deviations of the simulated days).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use drover_core::{Command, Event, MachineId, Timestamp};
use drover_gitlab::fake::JobStatus;

use super::harness::*;

/// The trace: jobs, mean gap between arrivals (Poisson) and script lengths (`sleep`, whole seconds).
const JOBS: usize = 60;
const MEAN_GAP_SECONDS: f64 = 1.5;
const SLEEP_SECONDS: std::ops::RangeInclusive<u64> = 1..=4;
/// Relative error allowed for each predicted figure.
const TOLERANCE: f64 = 0.15;
/// Absolute error allowed for a predicted wait whatever its size: on an idle machine the mean wait
/// is about a second, and a quarter of a second of dispatch jitter (a round trip, a container
/// start) is then more than 15 % of it, though no planning question turns on it.
const WAIT_FLOOR_SECONDS: f64 = 0.5;
/// A wait also passes within this many standard deviations of the simulated days: the measured
/// day is one draw of its machines' boot and removal times and its requests' round trips, the
/// prediction the mean of replications that draw them again from the recorded ones (each job
/// keeps its recorded arrival and duration), and with 60 jobs a p95 moves by most of a second
/// from one such day to the next.
const WAIT_SDS: f64 = 2.0;

/// splitmix64: a seeded, dependency-free source for the trace.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in (0, 1].
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) + 1) as f64 / (1u64 << 53) as f64
    }
}

/// (arrival offset, script seconds) for every job.
fn trace(seed: u64) -> Vec<(Duration, u64)> {
    let mut rng = Rng(seed);
    let span = SLEEP_SECONDS.end() - SLEEP_SECONDS.start() + 1;
    let mut at = 0.0;
    (0..JOBS)
        .map(|_| {
            at += -rng.unit().ln() * MEAN_GAP_SECONDS;
            let sleep = SLEEP_SECONDS.start() + rng.next() % span;
            (Duration::from_secs_f64(at), sleep)
        })
        .collect()
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Machine-seconds in the journal from the daemon's start to the last job's end: each machine from
/// its `CreateMachine` to its `MachineRemoved` (or failed creation), clipped to that window.
fn machine_seconds(journal: &Path) -> f64 {
    let journal = drover_journal::read(journal).expect("the daemon's journal reads");
    let start = journal.header.created_at;
    let mut born: BTreeMap<MachineId, Timestamp> = BTreeMap::new();
    let mut lives: Vec<(Timestamp, Option<Timestamp>)> = Vec::new();
    let mut last_job_end = start;
    drover_journal::replay(&journal, |r| {
        match r.event {
            Event::MachineRemoved { machine } | Event::MachineCreationFailed { machine, .. } => {
                if let Some(at) = born.remove(machine) {
                    lives.push((at, Some(r.now)));
                }
            }
            Event::JobFinished { .. } => last_job_end = last_job_end.max(r.now),
            _ => {}
        }
        for command in &r.step.commands {
            if let Command::CreateMachine { machine, .. } = command {
                born.entry(*machine).or_insert(r.now);
            }
        }
    })
    .expect("the journal replays");
    lives.extend(born.into_values().map(|at| (at, None)));
    lives
        .iter()
        .map(|(from, to)| {
            let to = to.unwrap_or(last_job_end).min(last_job_end);
            to.0.saturating_sub(from.0) as f64 / 1000.0
        })
        .sum()
}

fn within(what: &str, predicted: f64, measured: f64, floor: f64) -> bool {
    let error = (predicted - measured) / measured;
    println!(
        "sim-to-real {what:>16}: measured {measured:8.2}  predicted {predicted:8.2}  error {:+6.1} %",
        error * 100.0
    );
    error.abs() <= TOLERANCE || (predicted - measured).abs() <= floor
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulator_predicts_the_daemons_waits_and_machine_time_from_its_journal() {
    let settings = Settings {
        concurrent: 3,
        limit: 3,
        idle_count: 1,
        max_builds: 1,
        check_interval: 3,
        ..Settings::pool()
    };
    let Some(mut env) = Env::new("sim_to_real", settings).await else {
        return;
    };
    env.start().await;
    env.sandboxes_become(1).await;

    // The arrivals are the workload itself (a Poisson process in real time), not synchronisation.
    let origin = tokio::time::Instant::now();
    let mut ids = Vec::new();
    for (i, (at, sleep)) in trace(0x5eed_2026).into_iter().enumerate() {
        tokio::time::sleep_until(origin + at).await;
        let script = format!("sleep {sleep}");
        ids.push(env.enqueue(job(&format!("job-{i}"), &[script.as_str()])));
    }
    let done = env
        .fake
        .wait_until(Duration::from_secs(120), |f| {
            ids.iter()
                .all(|id| f.job(*id).is_some_and(|j| j.status.is_finished()))
        })
        .await;
    assert!(done, "every job finishes");

    let mut waits: Vec<f64> = ids
        .iter()
        .map(|id| {
            let job = env.job(*id);
            assert_eq!(job.status, JobStatus::Success, "job {id}: {}", text(&job));
            let started = job.started_at.expect("a finished job started");
            started.duration_since(job.enqueued_at).as_secs_f64()
        })
        .collect();
    waits.sort_by(f64::total_cmp);
    let measured_mean = waits.iter().sum::<f64>() / waits.len() as f64;
    let measured_p95 = percentile(&waits, 95.0);

    env.quit().await;
    let journal = env.state_dir().join("journal");
    let measured_machine_seconds = machine_seconds(&journal);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["simulate", "--journal"])
        .arg(&journal)
        .args(["--format", "json", "--no-plan"])
        .env_remove("CONFIG_FILE")
        .output()
        .expect("drover simulate runs");
    assert!(
        out.status.success(),
        "drover simulate failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    let figure = |pointer: &str| {
        report
            .pointer(pointer)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or_else(|| panic!("no {pointer} in {report}"))
    };
    assert_eq!(figure("/jobs/mean"), JOBS as f64, "{report}");
    // The standard deviation of a figure across the simulated days, from its 95 % interval
    // (Student's t, as the report makes it).
    let replications = figure("/replications");
    let t = drover_sim::replicate::t975(replications as usize - 1);
    let day_sd = |at: &str| {
        let half = (figure(&format!("{at}/high")) - figure(&format!("{at}/low"))) / 2.0;
        half / t * replications.sqrt()
    };
    let wait_floor = |at: &str| {
        let sd = day_sd(at);
        println!("sim-to-real {at}: one simulated day's standard deviation {sd:.2} s");
        WAIT_FLOOR_SECONDS.max(WAIT_SDS * sd)
    };
    let checks = [
        within(
            "mean wait (s)",
            figure("/wait_seconds/mean/mean"),
            measured_mean,
            wait_floor("/wait_seconds/mean"),
        ),
        within(
            "p95 wait (s)",
            figure("/wait_seconds/p95/mean"),
            measured_p95,
            wait_floor("/wait_seconds/p95"),
        ),
        within(
            "machine-seconds",
            figure("/machine_seconds/total/mean"),
            measured_machine_seconds,
            0.0,
        ),
    ];
    env.finish().await;
    assert!(
        checks.iter().all(|ok| *ok),
        "a prediction is more than {} % off (a wait more than {WAIT_FLOOR_SECONDS} s and \
         {WAIT_SDS} simulated days' standard deviations, too; figures above)",
        TOLERANCE * 100.0
    );
}
