//! The random-point `kill -9` measurement of issue #13, run by `tools/kill9-trials.sh` (ignored in
//! the suite: it is a measurement, not a test). Each trial starts drover on the real engine against
//! the fake GitLab (MaxBuilds 1, IdleCount 2), queues 6 jobs that print numbered lines, kills
//! drover -9 at a random moment, restarts it and counts: jobs lost (acknowledged, not finished in
//! time), jobs GitLab assigned that drover never acknowledged (it died first), double
//! accepted final updates, `runner_system_failure` outcomes, jobs whose trace repeats a line of
//! the script's output, and objects left on the engine after a drained shutdown (leaked
//! machines). The kill points come from a seeded generator (`DROVER_KILL9_SEED`), so a run can
//! be repeated; timing on a busy host still moves what each point hits.

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

use super::harness::*;

/// Jobs per trial.
const JOBS: usize = 6;
/// Lines each job prints, one every 0.2 s.
const LINES: u32 = 20;
/// The latest kill point after the jobs are queued.
const LATEST_KILL: Duration = Duration::from_secs(12);
/// How long a restarted drover has to finish every job before the rest count as lost.
const FINISH_WITHIN: Duration = Duration::from_secs(240);

#[derive(Debug, Default)]
struct Tally {
    trials: u32,
    jobs: u32,
    lost: u32,
    /// Assigned by GitLab, never acknowledged: drover died between GitLab's answer and
    /// journaling it. GitLab's two-phase commit queues such a job again after a timeout; the
    /// fake does not model that.
    unacknowledged: u32,
    double_final: u32,
    system_failures: u32,
    duplicated_output: u32,
    leaked_trials: u32,
    leaked_objects: usize,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: run it with tools/kill9-trials.sh"]
async fn kill_9_at_random_points() {
    let trials: u32 = std::env::var("DROVER_KILL9_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    let seed: u64 = std::env::var("DROVER_KILL9_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("kill -9 trials: {trials}, seed {seed} (DROVER_KILL9_SEED={seed} repeats them)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut tally = Tally::default();
    for n in 0..trials {
        let kill_after =
            Duration::from_millis(rng.random_range(0..=LATEST_KILL.as_millis() as u64));
        trial(n, kill_after, &mut tally).await;
    }
    println!(
        "kill-9 trials: {} (seed {seed}), jobs: {}\n\
         lost jobs (acknowledged, never finished): {}\n\
         jobs assigned and never acknowledged (GitLab queues them again): {}\n\
         double final updates: {}\n\
         runner_system_failure outcomes: {}\n\
         jobs with duplicated script output: {}\n\
         trials that leaked objects: {} ({} objects)",
        tally.trials,
        tally.jobs,
        tally.lost,
        tally.unacknowledged,
        tally.double_final,
        tally.system_failures,
        tally.duplicated_output,
        tally.leaked_trials,
        tally.leaked_objects,
    );
}

async fn trial(n: u32, kill_after: Duration, tally: &mut Tally) {
    let settings = Settings {
        concurrent: 4,
        limit: 4,
        idle_count: 2,
        max_builds: 1,
        ..Settings::pool()
    };
    let mut env = Env::new(&format!("kill9_{n}"), settings)
        .await
        .expect("a Docker engine");
    env.start().await;
    let script = format!("for i in $(seq 1 {LINES}); do echo \"line $i\"; sleep 0.2; done");
    let ids: Vec<u64> = (0..JOBS)
        .map(|j| env.enqueue(job(&format!("trial-{n}-job-{j}"), &[&script])))
        .collect();
    // The random kill point is what is measured, not a wait for a condition.
    tokio::time::sleep(kill_after).await;
    env.crash().await;
    env.start().await;

    // Until every job finished, or those left were never acknowledged and drover has held no
    // job for a while (nothing will finish them here).
    let deadline = Instant::now() + FINISH_WITHIN;
    let mut quiet_since: Option<Instant> = None;
    while Instant::now() < deadline {
        let left: Vec<_> = ids
            .iter()
            .map(|id| env.job(*id))
            .filter(|v| !v.status.is_finished())
            .collect();
        let idle = env
            .status()
            .is_some_and(|s| s["jobs"] == serde_json::json!([]));
        if left.is_empty() {
            break;
        }
        if idle && left.iter().all(|v| v.assigned && !v.accepted) {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(15) {
                break;
            }
        } else {
            quiet_since = None;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut notes = Vec::new();
    for id in &ids {
        let view = env.job(*id);
        tally.jobs += 1;
        if !view.status.is_finished() && view.assigned && !view.accepted {
            tally.unacknowledged += 1;
            notes.push(format!("job {id} assigned, never acknowledged"));
            continue;
        }
        if !view.status.is_finished() {
            tally.lost += 1;
            notes.push(format!("job {id} lost ({:?})", view.status));
            continue;
        }
        if view.final_updates_accepted > 1 {
            tally.double_final += 1;
            notes.push(format!(
                "job {id}: {} final updates accepted",
                view.final_updates_accepted
            ));
        }
        if view.failure_reason.as_deref() == Some("runner_system_failure") {
            tally.system_failures += 1;
            notes.push(format!("job {id}: runner_system_failure:\n{}", tail(&view)));
        }
        let repeated = (1..=LINES).any(|i| lines(&view, &format!("line {i}")) > 1);
        if repeated {
            tally.duplicated_output += 1;
            notes.push(format!(
                "job {id}: script output repeated:\n{}",
                text(&view)
            ));
        }
    }
    if env.running() {
        env.quit().await;
    }
    let left = env.objects().await;
    if !left.is_empty() {
        tally.leaked_trials += 1;
        tally.leaked_objects += left.containers.len() + left.networks.len() + left.volumes.len();
        notes.push(format!("left on the engine: {left:?}"));
        remove_objects(&env.docker, &env.short).await;
    }
    tally.trials += 1;
    eprintln!(
        "trial {n}: killed after {:.1} s: {}",
        kill_after.as_secs_f64(),
        if notes.is_empty() {
            "clean".to_string()
        } else {
            notes.join("\n")
        }
    );
    if !notes.is_empty() {
        eprintln!("----- drover's log of trial {n} -----\n{}", env.log());
    }
}

/// The last lines of a job's trace.
fn tail(view: &drover_gitlab::fake::JobView) -> String {
    let text = text(view);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}
