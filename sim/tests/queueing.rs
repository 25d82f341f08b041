//! The simulator against queueing theory: a fixed warm fleet is an M/M/c queue.
//!
//! `IdleCount = limit = c`, machines never removed (`MaxBuilds` 0, a day of `IdleTime`), instant
//! boots, Poisson arrivals, exponential job durations and jobs pushed to waiting requests
//! (`polling = "push"`, not GitLab's long polling, which adds a `check_interval`): a job waits if and only if
//! all c machines are busy when it arrives, and the queue is first come first served. Erlang C then
//! gives the probability of waiting and the mean wait exactly.

use std::path::Path;
use std::sync::Arc;

use drover_core::{Config, RunnerConfig};
use drover_sim::{RunOptions, Scenario, Workload, run};

const C: u32 = 10;
const MEAN_SERVICE_S: f64 = 300.0;
/// Offered load a = λ/μ = 8 Erlang on 10 machines: utilisation 0.8.
const LOAD: f64 = 8.0;
const JOBS: u64 = 100_000;
const SEEDS: u64 = 8;

/// Erlang's C formula: the probability that an arrival waits, for `c` servers and offered load `a`.
fn erlang_c(c: u32, a: f64) -> f64 {
    let rho = a / f64::from(c);
    let mut term = 1.0; // a^k / k!
    let mut sum = 0.0;
    for k in 0..c {
        sum += term;
        term *= a / f64::from(k + 1);
    }
    let top = term / (1.0 - rho);
    top / (sum + top)
}

fn mmc(seed: u64) -> drover_sim::Report {
    let rate_per_min = LOAD / MEAN_SERVICE_S * 60.0;
    let text = format!(
        "jobs = {JOBS}\nseed = {seed}\n[arrivals]\nkind = \"poisson\"\nrate_per_min = {rate_per_min}\n\
         [duration]\nkind = \"exponential\"\nmean = \"{MEAN_SERVICE_S}s\"\n\
         [boot]\nkind = \"constant\"\nvalue = \"0s\"\n[removal]\nkind = \"constant\"\nvalue = \"0s\"\n\
         [coordinator]\npolling = \"push\"\n"
    );
    let workload = Workload::parse(&text, Path::new("mmc.toml")).unwrap();
    let mut runner = RunnerConfig::pool("mmc", C, C);
    let p = runner.policy_mut().unwrap();
    p.max_builds = 0;
    p.base.idle_time_ms = 86_400_000;
    let scenario =
        Scenario::new(Config::new(C).with_runner(runner), Arc::new(workload), None).unwrap();
    run(&scenario, &RunOptions::default()).unwrap().report
}

fn mean_and_standard_error(xs: &[f64]) -> (f64, f64) {
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0);
    (mean, (var / n).sqrt())
}

#[test]
fn a_warm_fixed_fleet_is_erlang_c() {
    let reports: Vec<_> = (1..=SEEDS).map(mmc).collect();
    for r in &reports {
        assert!(r.drained && r.jobs == JOBS && r.jobs_failed == 0, "{r:?}");
        assert_eq!(
            (r.machines_created, r.machines_removed),
            (u64::from(C), 0),
            "the fleet must stay fixed"
        );
    }

    let p_theory = erlang_c(C, LOAD);
    let mu = 1.0 / MEAN_SERVICE_S;
    let wait_theory = p_theory / (f64::from(C) * mu - LOAD * mu);
    assert!(
        (p_theory - 0.4092).abs() < 1e-3,
        "Erlang C(10, 8) is 0.409, got {p_theory}"
    );

    // Tolerance from the sample: each seed is an independent run of JOBS jobs, so the spread of the
    // per-seed estimates gives their standard error without assuming independence between the
    // (strongly autocorrelated) waits inside a run. At ρ = 0.8 a wait has sd ≈ 121 s and the waits of
    // successive jobs stay correlated over a few hundred jobs, so one run of 100,000 jobs estimates
    // the mean wait to about ±4.6 s and P(wait) to about ±0.013; over 8 seeds the standard errors are
    // ≈ 1.6 s (2.7% of 61 s) and ≈ 0.005. We require each estimate within 4 standard errors of
    // Erlang C (a false alarm below 1 in 10,000 for a correct simulator; the seeds are fixed, so the
    // verdict is deterministic), and the standard errors themselves below 4% of the theory, so that
    // the check keeps the power to catch a biased simulator.
    let p_wait: Vec<f64> = reports.iter().map(|r| r.p_wait).collect();
    let waits: Vec<f64> = reports.iter().map(|r| r.wait_seconds.mean).collect();
    let (p_mean, p_se) = mean_and_standard_error(&p_wait);
    let (w_mean, w_se) = mean_and_standard_error(&waits);
    eprintln!(
        "P(wait) {p_mean:.4} ± {p_se:.4} (theory {p_theory:.4}); mean wait {w_mean:.2} s ± {w_se:.2} (theory {wait_theory:.2} s)"
    );
    assert!(
        p_se < 0.04 * p_theory && w_se < 0.04 * wait_theory,
        "too few samples: se {p_se}, {w_se}"
    );
    assert!(
        (p_mean - p_theory).abs() <= 4.0 * p_se,
        "P(wait) {p_mean:.4} ± {p_se:.4}, Erlang C says {p_theory:.4}"
    );
    assert!(
        (w_mean - wait_theory).abs() <= 4.0 * w_se,
        "mean wait {w_mean:.2} s ± {w_se:.2}, Erlang C says {wait_theory:.2} s"
    );

    // Little's law per state: busy machines on average = arrival rate × mean service time = a,
    // idle = c − a, and nothing creates or removes. The time averages are machine-seconds / time.
    let busy: Vec<f64> = reports
        .iter()
        .map(|r| r.machine_seconds.busy / r.simulated_seconds)
        .collect();
    let idle: Vec<f64> = reports
        .iter()
        .map(|r| r.machine_seconds.idle / r.simulated_seconds)
        .collect();
    let (b_mean, b_se) = mean_and_standard_error(&busy);
    let (i_mean, _) = mean_and_standard_error(&idle);
    assert!(
        (b_mean - LOAD).abs() <= 4.0 * b_se.max(0.01),
        "mean busy {b_mean:.3} ± {b_se:.3}, expected {LOAD}"
    );
    assert!(
        (b_mean + i_mean - f64::from(C)).abs() < 1e-3,
        "busy {b_mean} + idle {i_mean} must be the fleet"
    );
    for r in &reports {
        assert_eq!(
            (r.machine_seconds.creating, r.machine_seconds.removing),
            (0.0, 0.0)
        );
        // And for the queue: mean number waiting = throughput × mean wait (exact on a sample path,
        // up to the ms rounding of the reported figures).
        let l_q = r.jobs as f64 / r.simulated_seconds * r.wait_seconds.mean;
        assert!(
            (r.mean_queued - l_q).abs() < 2e-3 + 1e-3 * l_q,
            "L_q {} vs λW {l_q}",
            r.mean_queued
        );
    }
}

#[test]
fn replications_give_intervals_that_hold_erlang_c() {
    let rate_per_min = LOAD / MEAN_SERVICE_S * 60.0;
    let text = format!(
        "jobs = 20000\nseed = 3\n[arrivals]\nkind = \"poisson\"\nrate_per_min = {rate_per_min}\n\
         [duration]\nkind = \"exponential\"\nmean = \"{MEAN_SERVICE_S}s\"\n\
         [boot]\nkind = \"constant\"\nvalue = \"0s\"\n[removal]\nkind = \"constant\"\nvalue = \"0s\"\n\
         [coordinator]\npolling = \"push\"\n"
    );
    let workload = Workload::parse(&text, Path::new("mmc.toml")).unwrap();
    let mut runner = RunnerConfig::pool("mmc", C, C);
    let p = runner.policy_mut().unwrap();
    p.base.idle_time_ms = 86_400_000;
    let scenario =
        Scenario::new(Config::new(C).with_runner(runner), Arc::new(workload), None).unwrap();
    let r = drover_sim::replicate::replicate(&scenario, 20, &RunOptions::default(), None, &|| {})
        .unwrap();
    let s = &r.summary;
    let p_theory = erlang_c(C, LOAD);
    let wait_theory = p_theory / (f64::from(C) / MEAN_SERVICE_S - LOAD / MEAN_SERVICE_S);
    assert!(s.p_wait.contains(p_theory), "{:?} vs {p_theory}", s.p_wait);
    assert!(
        s.wait_seconds.mean.contains(wait_theory),
        "{:?} vs {wait_theory}",
        s.wait_seconds.mean
    );
    // 20 runs of 20,000 jobs: the interval is a few percent of the mean, not a shrug.
    assert!(
        s.wait_seconds.mean.half_width() < 0.1 * wait_theory,
        "{:?}",
        s.wait_seconds.mean
    );
    assert_eq!(s.replications, 20);
    assert_eq!(
        r.first.report.seed, 3,
        "the first replication is the base seed's own run"
    );
}
