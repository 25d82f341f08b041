//! Warm build containers: a job for the machine's warm image runs its steps by exec in the
//! pre-started container, with GitLab's step semantics; any other job takes a container per step;
//! a crash mid-step re-attaches without running the step again.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bollard::Docker;
use bollard::models::{NetworkCreateRequest, VolumeCreateOptions};
use bollard::query_parameters::InspectContainerOptions;
use drover_core::{FailureReason, Outcome};
use drover_docker::testing::GIT_IMAGE;
use drover_docker::{BuildSpec, EngineConfig, MachineEndpoint, StepName, labels};
use tokio::sync::mpsc;

use crate::support::*;

/// A machine as the `docker` provider makes one: a builds volume and a network of its own.
async fn sandbox(docker: &Docker, runner: &str, machine: &str) -> MachineEndpoint {
    let labels = HashMap::from([
        (labels::MACHINE.to_string(), machine.to_string()),
        (labels::RUNNER.to_string(), runner.to_string()),
    ]);
    let volume = format!("{machine}-builds");
    let options = VolumeCreateOptions {
        name: Some(volume.clone()),
        labels: Some(labels.clone()),
        ..Default::default()
    };
    docker.create_volume(options).await.unwrap();
    let request = NetworkCreateRequest {
        name: machine.to_string(),
        driver: Some("bridge".to_string()),
        labels: Some(labels),
        ..Default::default()
    };
    docker.create_network(request).await.unwrap();
    MachineEndpoint {
        machine: Some(machine.to_string()),
        engine: EngineConfig::local(),
        network: Some(machine.to_string()),
        builds_volume: Some(volume),
    }
}

/// A test's bed: the engine, a fresh runner, and a machine of it made as the `docker` provider
/// makes one, with its endpoint (`None` only where a missing engine may skip the test, see
/// `engine`).
async fn bed() -> Option<(Docker, TestRunner, String, MachineEndpoint)> {
    let docker = engine().await?;
    let runner = unique_runner();
    let machine = format!("{}-m", &*runner);
    let endpoint = sandbox(&docker, &runner, &machine).await;
    Some((docker, runner, machine, endpoint))
}

/// The id of the machine's unclaimed warm container, if there is one.
async fn warm_id(docker: &Docker, machine: &str) -> Option<String> {
    let name = format!("{machine}-warm");
    let found = docker
        .inspect_container(&name, None::<InspectContainerOptions>)
        .await
        .ok()?;
    (found.state?.running == Some(true)).then_some(found.id?)
}

/// Waits (with a deadline) until the machine has a running warm container other than `old`.
async fn next_warm(docker: &Docker, machine: &str, old: &str) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(id) = warm_id(docker, machine).await
            && id != old
        {
            return id;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no new warm container within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Pre-starts the machine's warm container for jobs like `spec`; its id.
async fn prestarted(docker: &Docker, endpoint: &MachineEndpoint, spec: &BuildSpec) -> String {
    assert!(executor().prestart(endpoint, spec).await.unwrap());
    warm_id(docker, endpoint.machine.as_deref().unwrap())
        .await
        .expect("a running warm container")
}

async fn remove_sandbox(docker: &Docker, runner: &str, machine: &str) {
    remove_machine(docker, machine).await;
    assert_nothing_left(docker, runner).await;
}

#[tokio::test]
async fn a_job_for_the_warm_image_runs_in_the_warm_container_which_is_then_replaced() {
    let Some((docker, runner, machine, endpoint)) = bed().await else {
        return;
    };
    let spec = with_after_script(
        spec(
            &runner,
            501,
            &["echo host-$(hostname)", "export ONLY_IN_SCRIPT=1"],
        ),
        &["echo after-host-$(hostname) leaked-${ONLY_IN_SCRIPT:-no}"],
    );
    let warm = prestarted(&docker, &endpoint, &spec).await;
    let pending = docker
        .inspect_container(
            &format!("{machine}-warm-pending"),
            None::<InspectContainerOptions>,
        )
        .await;
    assert!(pending.is_err(), "a ready warm container has its own name");

    let (outcome, out) = run_job(endpoint.clone(), spec).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    // A container's host name is the start of its id.
    assert!(out.contains(&format!("host-{}", &warm[..12])), "{out}");
    assert!(
        out.contains(&format!("after-host-{}", &warm[..12])),
        "{out}"
    );
    assert!(
        out.contains("leaked-no"),
        "each step is its own script: {out}"
    );

    // Discarded after its job, never reused: a new one waits for the next job.
    let gone = docker
        .inspect_container(&warm, None::<InspectContainerOptions>)
        .await;
    assert!(gone.is_err(), "the job's warm container is removed");
    let next = next_warm(&docker, &machine, &warm).await;
    let (outcome, out) = run_job(endpoint, spec_on(&runner, 502)).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(out.contains(&format!("host-{}", &next[..12])), "{out}");
    remove_sandbox(&docker, &runner, &machine).await;
}

#[tokio::test]
async fn a_machines_last_job_runs_warm_and_leaves_no_warm_container_behind() {
    let Some((docker, runner, machine, endpoint)) = bed().await else {
        return;
    };
    let spec = spec(&runner, 503, &["echo host-$(hostname)"]);
    let warm = prestarted(&docker, &endpoint, &spec).await;
    let (tx, rx) = mpsc::channel(64);
    let handle = executor().start_last_on_machine(endpoint, spec, tx);
    let (outcome, collected) = finish(handle, rx).await;
    let out = collected.text();
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(out.contains(&format!("host-{}", &warm[..12])), "{out}");
    // The job's container went with it, and none was started for a next job (a job started
    // with `start` awaits its successor's before it ends).
    let options = bollard::query_parameters::ListContainersOptions {
        all: true,
        filters: Some(labels::filter(&[(labels::MACHINE, Some(&machine))])),
        ..Default::default()
    };
    let left = docker.list_containers(Some(options)).await.unwrap();
    let names: Vec<_> = left.iter().map(|c| c.names.clone()).collect();
    assert!(left.is_empty(), "{names:?}");
    remove_sandbox(&docker, &runner, &machine).await;
}

#[tokio::test]
async fn a_projects_jobs_run_warm_with_its_cache_volume_and_another_projects_do_not() {
    let Some((docker, runner, machine, endpoint)) = bed().await else {
        return;
    };
    let project = |job, cache: &str, script: &[&str]| with_cache(spec(&runner, job, script), cache);
    let mine = format!("{machine}-runner-aaaa-cache-1");
    let theirs = format!("{machine}-runner-bbbb-cache-1");
    let first = project(
        561,
        &mine,
        &["echo host-$(hostname)", "echo kept > /cache/f"],
    );
    let warm = prestarted(&docker, &endpoint, &first).await;
    let (outcome, out) = run_job(endpoint.clone(), first).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(out.contains(&format!("host-{}", &warm[..12])), "{out}");

    // The warm container it started for the next job mounts the project's cache.
    let next = next_warm(&docker, &machine, &warm).await;
    let second = project(562, &mine, &["echo host-$(hostname)", "cat /cache/f"]);
    let (outcome, out) = run_job(endpoint.clone(), second).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(out.contains(&format!("host-{}", &next[..12])), "{out}");
    assert!(out.contains("\nkept"), "{out}");

    // Another project's job does not claim a container holding a cache not its own.
    let mines = next_warm(&docker, &machine, &next).await;
    let other = project(
        563,
        &theirs,
        &[
            "echo host-$(hostname)",
            "cat /cache/f 2>/dev/null || echo no-cache-file",
        ],
    );
    let (outcome, out) = run_job(endpoint.clone(), other).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(!out.contains(&format!("host-{}", &mines[..12])), "{out}");
    assert!(out.contains("\nno-cache-file"), "{out}");
    // The kept volumes carry the machine's label: its removal takes them.
    remove_sandbox(&docker, &runner, &machine).await;
}

/// What `"/cache"` in `volumes` becomes for a project's jobs on a machine (see the daemon's cache
/// module): a named volume kept across them.
fn with_cache(mut spec: BuildSpec, cache: &str) -> BuildSpec {
    spec.volumes = vec![format!("{cache}:/cache")];
    spec.kept_volumes = vec![cache.to_string()];
    spec
}

/// Runs a machine's last job, as the daemon starts it once `MaxBuilds` is reached.
async fn run_last_job(endpoint: MachineEndpoint, spec: BuildSpec) -> (Outcome, String) {
    let (tx, rx) = mpsc::channel(64);
    let handle = executor().start_last_on_machine(endpoint, spec, tx);
    let (outcome, collected) = finish(handle, rx).await;
    (outcome, collected.text())
}

#[tokio::test]
async fn a_last_jobs_container_with_fresh_caches_runs_a_new_projects_job_warm() {
    let Some((docker, runner, machine, endpoint)) = bed().await else {
        return;
    };
    // A `MaxBuilds 1` machine's warm container, made (as the daemon makes it) for a job with
    // the runner's defaults, before any project's job arrived.
    let defaults = with_cache(
        spec(&runner, 581, &["true"]),
        &format!("{machine}-runner-0000-cache-1"),
    );
    assert!(
        executor()
            .prestart_for_last_job(&endpoint, &defaults)
            .await
            .unwrap()
    );
    let warm = warm_id(&docker, &machine).await.expect("a warm container");
    let job = with_cache(
        spec(
            &runner,
            582,
            &[
                "echo host-$(hostname)",
                "echo entries-$(ls -A /cache | wc -l)",
                "echo written > /cache/f && cat /cache/f",
            ],
        ),
        &format!("{machine}-runner-aaaa-cache-1"),
    );
    let (outcome, out) = run_last_job(endpoint.clone(), job).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    // In the warm container, with an empty cache it can write to, as a new volume would be.
    assert!(out.contains(&format!("host-{}", &warm[..12])), "{out}");
    assert!(out.contains("\nentries-0"), "{out}");
    assert!(out.contains("\nwritten"), "{out}");
    // Its fresh cache carries the machine's label: the machine's removal takes it.
    remove_sandbox(&docker, &runner, &machine).await;
}

#[tokio::test]
async fn a_job_whose_cache_exists_or_that_is_not_the_machines_last_takes_no_fresh_caches() {
    let Some((docker, runner, machine, endpoint)) = bed().await else {
        return;
    };
    let defaults = with_cache(
        spec(&runner, 591, &["true"]),
        &format!("{machine}-runner-0000-cache-1"),
    );
    let mine = format!("{machine}-runner-aaaa-cache-1");
    let job = |id, script: &[&str]| {
        with_cache(
            spec(
                &runner,
                id,
                &[&["echo host-$(hostname)"][..], script].concat(),
            ),
            &mine,
        )
    };
    let fresh = |endpoint: MachineEndpoint, defaults: BuildSpec| async move {
        assert!(
            executor()
                .prestart_for_last_job(&endpoint, &defaults)
                .await
                .unwrap()
        );
    };

    // Not the machine's last job: a later job of its project would not find what it cached.
    fresh(endpoint.clone(), defaults.clone()).await;
    let warm = warm_id(&docker, &machine).await.expect("a warm container");
    let (outcome, out) = run_job(endpoint.clone(), job(592, &["echo kept > /cache/f"])).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(!out.contains(&format!("host-{}", &warm[..12])), "{out}");

    // The last job, but its project's cache is on the machine already: it gets that cache.
    fresh(endpoint.clone(), defaults.clone()).await;
    let warm = warm_id(&docker, &machine).await.expect("a warm container");
    let (outcome, out) = run_last_job(endpoint.clone(), job(593, &["cat /cache/f"])).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(!out.contains(&format!("host-{}", &warm[..12])), "{out}");
    assert!(out.contains("\nkept"), "{out}");
    remove_sandbox(&docker, &runner, &machine).await;
}

fn spec_on(runner: &str, job_id: u64) -> BuildSpec {
    spec(runner, job_id, &["echo host-$(hostname)"])
}

#[tokio::test]
async fn exec_steps_keep_exit_codes_and_after_script_and_leave_no_process_behind() {
    let Some((docker, runner, machine, endpoint)) = bed().await else {
        return;
    };
    let spec = with_after_script(
        spec(
            &runner,
            511,
            &[
                "sleep 1000 &",
                "echo host-$(hostname)",
                "exit 3",
                "echo not-reached",
            ],
        ),
        &[
            "if ps | grep -v grep | grep -q 'sleep 1000'; then echo bg-alive; else echo bg-gone; fi",
            "echo status=$CI_JOB_STATUS",
        ],
    );
    let warm = prestarted(&docker, &endpoint, &spec).await;
    let (outcome, out) = run_job(endpoint, spec).await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            reason: FailureReason::ScriptFailure,
            exit_code: Some(3)
        },
        "{out}"
    );
    assert!(out.contains(&format!("host-{}", &warm[..12])), "{out}");
    assert!(!out.contains("not-reached"), "{out}");
    assert!(
        out.contains("bg-gone"),
        "a step's processes end with it: {out}"
    );
    assert!(out.contains("status=failed"), "{out}");
    assert!(out.contains("Job failed: exit code 3"), "{out}");
    remove_sandbox(&docker, &runner, &machine).await;
}

#[tokio::test]
async fn an_exec_step_past_its_timeout_is_killed_and_after_script_still_runs() {
    let Some((docker, runner, machine, endpoint)) = bed().await else {
        return;
    };
    let mut spec = with_after_script(
        spec(&runner, 521, &["echo host-$(hostname)", "sleep 300"]),
        &["echo after-timeout-$((5))"],
    );
    spec.steps[0].timeout = Duration::from_secs(2);
    let warm = prestarted(&docker, &endpoint, &spec).await;
    let started = std::time::Instant::now();
    let (outcome, out) = run_job(endpoint, spec).await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            reason: FailureReason::JobExecutionTimeout,
            exit_code: None
        },
        "{out}"
    );
    assert!(started.elapsed() < Duration::from_secs(60), "{out}");
    assert!(out.contains(&format!("host-{}", &warm[..12])), "{out}");
    assert!(out.contains("after-timeout-5"), "{out}");
    assert!(out.contains("longer than 2 seconds"), "{out}");
    remove_sandbox(&docker, &runner, &machine).await;
}

#[tokio::test]
async fn cancel_stops_an_exec_step_and_runs_after_script() {
    let Some((docker, runner, machine, endpoint)) = bed().await else {
        return;
    };
    let spec = with_after_script(
        spec(
            &runner,
            531,
            &[
                "trap 'echo got-term; exit 143' TERM",
                "echo host-$(hostname) running-$((1))",
                "while :; do sleep 1; done",
                "echo not-2-reached",
            ],
        ),
        &["echo after-cancel-$((3)) status=$CI_JOB_STATUS"],
    );
    let warm = prestarted(&docker, &endpoint, &spec).await;
    let (tx, mut rx) = mpsc::channel(64);
    let handle = executor().start_last_on_machine(endpoint, spec, tx);
    let before = Collected {
        chunks: read_until(&mut rx, "running-1").await,
    }
    .text();
    assert!(
        before.contains(&format!("host-{}", &warm[..12])),
        "{before}"
    );
    handle.control().cancel();
    let (outcome, rest) = finish(handle, rx).await;
    let out = rest.text();
    assert_eq!(outcome, Outcome::Canceled, "{out}");
    assert!(out.contains("got-term"), "the script gets SIGTERM: {out}");
    assert!(!out.contains("not-2-reached"), "{out}");
    assert!(out.contains("after-cancel-3 status=canceled"), "{out}");
    remove_sandbox(&docker, &runner, &machine).await;
}

#[tokio::test]
async fn a_job_with_another_image_runs_by_exec_in_a_build_container_of_its_own() {
    let Some((docker, runner, machine, endpoint)) = bed().await else {
        return;
    };
    let warm = prestarted(&docker, &endpoint, &spec_on(&runner, 540)).await;
    let mut other = with_after_script(
        spec(&runner, 541, &["echo host-$(hostname)", "git --version"]),
        &["echo after-host-$(hostname)"],
    );
    other.image.name = GIT_IMAGE.to_string();
    let (outcome, out) = run_job(endpoint.clone(), other).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(out.contains("git version"), "{out}");
    // Not in the warm container, which is for another image, but both steps in one container.
    assert_ne!(host_of(&out, "host-"), warm[..12], "{out}");
    assert_eq!(
        host_of(&out, "host-"),
        host_of(&out, "after-host-"),
        "{out}"
    );

    // Without a build container of its own (warm containers off), a container per step.
    let cold = drover_docker::Executor::new(drover_docker::ExecutorOptions {
        warm: false,
        ..Default::default()
    });
    let mut again = with_after_script(
        spec(&runner, 542, &["echo host-$(hostname)"]),
        &["echo after-host-$(hostname)"],
    );
    again.image.name = GIT_IMAGE.to_string();
    let (tx, rx) = mpsc::channel(64);
    let (outcome, collected) = finish(cold.start(endpoint, again, tx), rx).await;
    let out = collected.text();
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert_ne!(
        host_of(&out, "host-"),
        host_of(&out, "after-host-"),
        "{out}"
    );
    remove_sandbox(&docker, &runner, &machine).await;
}

/// The rest of the job's first output line that starts with `prefix`.
fn host_of(out: &str, prefix: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .map(str::to_string)
        .unwrap_or_else(|| panic!("no {prefix} line: {out}"))
}

/// A command that blocks the job until the test creates `/sync/go`.
const WAIT_FOR_GO: &str = "while [ ! -f /sync/go ]; do sleep 0.05; done";

fn go(sync: &Path) {
    std::fs::write(sync.join("go"), b"").unwrap();
}

#[tokio::test]
async fn a_crash_mid_exec_step_re_attaches_without_running_the_step_again() {
    let Some((docker, runner, machine, endpoint)) = bed().await else {
        return;
    };
    let sync = tempfile::tempdir().unwrap();
    let mut spec = with_after_script(
        spec(
            &runner,
            551,
            &[
                "echo run >> /sync/runs",
                "echo host-$(hostname) mark-$((1))",
                WAIT_FOR_GO,
                "echo mark-$((2))",
                "echo mark-$((3))",
            ],
        ),
        &["echo after-$((4))"],
    );
    spec.volumes = vec![format!("{}:/sync", sync.path().display())];
    let warm = prestarted(&docker, &endpoint, &spec).await;

    let (tx, mut rx) = mpsc::channel(64);
    let handle = executor().start(endpoint.clone(), spec.clone(), tx);
    let before = read_until(&mut rx, "mark-1").await;
    // What a kill -9 of drover does to its side.
    handle.abandon().await;
    let cursor = before.last().unwrap().cursor;
    assert!(
        executor()
            .has_step_containers(&endpoint, &runner, 551)
            .await
            .unwrap(),
        "a started exec step counts as a started step"
    );
    let listed = executor()
        .list_jobs(&EngineConfig::local(), &runner)
        .await
        .unwrap();
    assert!(
        listed.contains(&551),
        "reconciliation finds the job: {listed:?}"
    );

    let (tx, rx) = mpsc::channel(64);
    let handle = executor().resume(endpoint, spec, Some(cursor), tx);
    go(sync.path());
    let (outcome, after) = finish(handle, rx).await;
    let before = Collected { chunks: before }.text();
    let after = after.text();
    let all = format!("{before}{after}");
    assert_eq!(outcome, Outcome::Success, "{all}");
    assert!(
        before.contains(&format!("host-{}", &warm[..12])),
        "{before}"
    );
    for mark in ["mark-1", "mark-2", "mark-3", "after-4"] {
        assert_eq!(count(&all, mark), 1, "{mark} exactly once in: {all}");
    }
    assert!(all.find("mark-2") < all.find("mark-3") && all.find("mark-3") < all.find("after-4"));
    assert!(after.contains("re-attached"), "{after}");
    let runs = std::fs::read_to_string(sync.path().join("runs")).unwrap();
    assert_eq!(runs, "run\n", "the step ran once");
    remove_sandbox(&docker, &runner, &machine).await;
}

#[tokio::test]
async fn a_crash_while_an_exec_step_ends_reports_its_exit_code_on_re_attachment() {
    let Some((docker, runner, machine, endpoint)) = bed().await else {
        return;
    };
    let sync = tempfile::tempdir().unwrap();
    let mut spec = spec(
        &runner,
        561,
        &[
            "echo mark-$((1))",
            WAIT_FOR_GO,
            "echo mark-$((2))",
            "exit 7",
        ],
    );
    spec.steps[0].name = StepName::Script;
    spec.volumes = vec![format!("{}:/sync", sync.path().display())];
    prestarted(&docker, &endpoint, &spec).await;

    let (tx, mut rx) = mpsc::channel(64);
    let handle = executor().start(endpoint.clone(), spec.clone(), tx);
    let before = read_until(&mut rx, "mark-1").await;
    handle.abandon().await;
    // The step ends while drover is down.
    go(sync.path());
    let cursor = before.last().unwrap().cursor;
    let (tx, rx) = mpsc::channel(64);
    let handle = executor().resume(endpoint, spec, Some(cursor), tx);
    let (outcome, after) = finish(handle, rx).await;
    let after = after.text();
    assert_eq!(
        outcome,
        Outcome::Failed {
            reason: FailureReason::ScriptFailure,
            exit_code: Some(7)
        },
        "{after}"
    );
    assert_eq!(count(&after, "mark-1"), 0, "{after}");
    assert_eq!(count(&after, "mark-2"), 1, "{after}");
    remove_sandbox(&docker, &runner, &machine).await;
}

#[tokio::test]
async fn a_warm_steps_script_and_its_variables_are_not_in_any_process_arguments() {
    let Some((docker, runner, machine, endpoint)) = bed().await else {
        return;
    };
    let mut spec = spec(
        &runner,
        521,
        &[
            "for f in /proc/[0-9]*/cmdline; do tr '\\000' ' ' < $f 2>/dev/null; echo; done > /tmp/cmds",
            // The bracket keeps the pattern from matching itself. The step runs under the
            // wrapper's exec, or the standby exec that sourced the wrapper.
            "echo secret-hits=$(grep -c 'warm-secr[e]t-42' /tmp/cmds) wrappers=$(grep -c -e 'drover-claime[d]' -e 'run/standb[y]' /tmp/cmds)",
            "echo length=${#WARM_SECRET}",
        ],
    );
    spec.variables = vec![drover_docker::Variable::new(
        "WARM_SECRET",
        "warm-secret-42",
    )];
    prestarted(&docker, &endpoint, &spec).await;
    let (outcome, out) = run_job(endpoint, spec).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(
        out.contains("length=14"),
        "the variable reaches the step: {out}"
    );
    // The step's own wrapper is among the processes seen, without the script in its arguments.
    assert!(out.contains("secret-hits=0 wrappers="), "{out}");
    assert!(!out.contains("wrappers=0"), "{out}");
    remove_sandbox(&docker, &runner, &machine).await;
}

#[tokio::test]
async fn a_warm_steps_variables_are_not_in_its_exec_as_the_engine_shows_it() {
    let Some((docker, runner, machine, endpoint)) = bed().await else {
        return;
    };
    let sync = tempfile::tempdir().unwrap();
    let mut spec = spec(
        &runner,
        522,
        &[
            "touch /sync/started",
            WAIT_FOR_GO,
            "echo length=${#WARM_SECRET}",
        ],
    );
    spec.volumes = vec![format!("{}:/sync", sync.path().display())];
    spec.variables = vec![drover_docker::Variable::new(
        "WARM_SECRET",
        "warm-secret-43",
    )];
    let warm = prestarted(&docker, &endpoint, &spec).await;
    let watch = async {
        // Once the step runs, the engine shows every exec it runs under.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while !sync.path().join("started").exists() {
            assert!(tokio::time::Instant::now() < deadline, "the step never ran");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let mut wrappers = 0;
        for (_, args) in execs(&docker, &warm).await {
            assert!(!args.contains("warm-secret-43"), "{args}");
            // The wrapper's exec, or the standby exec the step's request went to.
            wrappers += usize::from(
                args.contains("drover-claimed") || args.contains("/.drover/run/standby"),
            );
        }
        assert!(wrappers > 0, "the step's exec is not among the container's");
        go(sync.path());
    };
    let ((outcome, out), ()) = tokio::join!(run_job(endpoint, spec), watch);
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(out.contains("length=14"), "{out}");
    remove_sandbox(&docker, &runner, &machine).await;
}

/// The execs of the container `id` as the engine shows them: running, and their arguments.
async fn execs(docker: &Docker, id: &str) -> Vec<(bool, String)> {
    let found = docker
        .inspect_container(id, None::<InspectContainerOptions>)
        .await
        .unwrap();
    let mut execs = Vec::new();
    for exec in found.exec_ids.unwrap_or_default() {
        let Ok(exec) = docker.inspect_exec(&exec).await else {
            continue;
        };
        let args = exec
            .process_config
            .and_then(|p| p.arguments)
            .unwrap_or_default()
            .join(" ");
        execs.push((exec.running == Some(true), args));
    }
    execs
}

/// The processes of the step shell's parent (`$PPID`) that name the standby exec's program.
const IN_STANDBY: &str = "$(tr '\\000' ' ' < /proc/$PPID/cmdline | grep -c 'run/standb[y]')";

#[tokio::test]
async fn a_warm_jobs_steps_run_in_standby_execs_the_first_in_the_one_started_with_its_container() {
    let Some((docker, runner, machine, endpoint)) = bed().await else {
        return;
    };
    let spec = with_after_script(
        spec(
            &runner,
            531,
            &[&format!("echo script-in-standby={IN_STANDBY}")],
        ),
        &[&format!("echo after-in-standby={IN_STANDBY}")],
    );
    prestarted(&docker, &endpoint, &spec).await;
    let (outcome, out) = run_job(endpoint, spec).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    // The first step's request went to the container's standby, after_script's to the one
    // started while the script ran.
    assert!(out.contains("script-in-standby=1"), "{out}");
    assert!(out.contains("after-in-standby=1"), "{out}");
    remove_sandbox(&docker, &runner, &machine).await;
}

#[tokio::test]
async fn a_jobs_user_runs_its_steps_in_standby_execs_started_as_that_user() {
    let Some((docker, runner, machine, endpoint)) = bed().await else {
        return;
    };
    let mut spec = with_after_script(
        spec(
            &runner,
            533,
            &[&format!("echo script-uid=$(id -u) in-standby={IN_STANDBY}")],
        ),
        &[&format!("echo after-uid=$(id -u) in-standby={IN_STANDBY}")],
    );
    // With a user, the sources step runs first (as the container's user, in the container's
    // standby); the user's steps in standbys started as the user.
    spec.container_options.user = Some("65534".into());
    prestarted(&docker, &endpoint, &spec).await;
    let (outcome, out) = run_job(endpoint, spec).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(out.contains("script-uid=65534 in-standby=1"), "{out}");
    assert!(out.contains("after-uid=65534 in-standby=1"), "{out}");
    remove_sandbox(&docker, &runner, &machine).await;
}

#[tokio::test]
async fn a_step_that_kills_the_next_steps_standby_leaves_that_step_to_an_exec() {
    let Some((docker, runner, machine, endpoint)) = bed().await else {
        return;
    };
    // The script waits for after_script's standby (a second exec running the standby's program,
    // a process whose parent is outside the container: the script's own is the first; its
    // wrapper's subshells share that program's command line), then kills every process it can.
    let spec = with_after_script(
        spec(
            &runner,
            532,
            &[
                "echo waiting-for-the-next-standby",
                r#"until [ "$(for p in /proc/[0-9]*; do grep -qs 'run/standb[y]' $p/cmdline && [ "$(cut -d' ' -f4 $p/stat 2>/dev/null)" = 0 ] && echo $p; done | wc -l)" -ge 2 ]; do sleep 0.05; done"#,
                "kill -9 -1",
            ],
        ),
        &[&format!("echo after-ran-in-standby={IN_STANDBY}")],
    );
    prestarted(&docker, &endpoint, &spec).await;
    let (outcome, out) = run_job(endpoint, spec).await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            reason: FailureReason::ScriptFailure,
            exit_code: Some(137)
        },
        "{out}"
    );
    // The request sent to the dead standby ran nothing: after_script ran once, by exec.
    assert_eq!(out.matches("after-ran-in-standby=").count(), 2, "{out}");
    assert!(out.contains("after-ran-in-standby=0"), "{out}");
    remove_sandbox(&docker, &runner, &machine).await;
}

/// Whether a standby exec still runs in the container `id`.
async fn standby_runs(docker: &Docker, id: &str) -> bool {
    execs(docker, id)
        .await
        .iter()
        .any(|(running, args)| *running && args.contains("/.drover/run/standby"))
}

#[tokio::test]
async fn a_standby_exec_whose_drover_went_away_runs_nothing_and_exits() {
    let Some((docker, runner, machine, endpoint)) = bed().await else {
        return;
    };
    let spec = spec(&runner, 541, &["echo ran-once"]);
    // Prestarted by an executor that then goes away, as a drover that stopped or crashed: its
    // standby never gets a request.
    let gone = drover_docker::Executor::new(drover_docker::ExecutorOptions::default());
    assert!(gone.prestart(&endpoint, &spec).await.unwrap());
    let warm = warm_id(&docker, &machine).await.expect("a warm container");
    assert!(standby_runs(&docker, &warm).await, "a standby waits");
    drop(gone);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while standby_runs(&docker, &warm).await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the standby still runs 60 s after its drover went away"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing of a step ran there: a job claims the container and runs its first step (a step
    // on record would be taken for another wrapper's).
    let (outcome, out) = run_job(endpoint, spec).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert_eq!(
        out.matches("ran-once").count(),
        2,
        "echoed and printed: {out}"
    );
    remove_sandbox(&docker, &runner, &machine).await;
}
