//! Helpers: unique names, job specs, running a job to its end, and "nothing left behind" checks.

use std::time::Duration;

use bollard::Docker;
use drover_core::Outcome;
use drover_docker::testing::BUSYBOX_IMAGE;
use drover_docker::{
    BuildSpec, EngineConfig, Executor, ExecutorOptions, GitSpec, ImageSpec, JobHandle,
    MachineEndpoint, PullPolicy, Shell, StepName, StepSpec, TraceChunk, When, labels,
};
use tokio::sync::mpsc;

pub use drover_docker::testing::engine_for_tests as engine;

pub use drover_docker::testing::leftovers::{TestRunner, assert_nothing_left};

/// A fresh runner token for an engine test.
pub fn unique_runner() -> TestRunner {
    drover_docker::testing::leftovers::unique_runner('t')
}

pub fn step(name: StepName, script: &[&str], timeout: Duration) -> StepSpec {
    let (when, allow_failure) = match name {
        StepName::Script => (When::OnSuccess, false),
        StepName::AfterScript => (When::Always, true),
    };
    StepSpec {
        name,
        script: script.iter().map(|s| s.to_string()).collect(),
        timeout,
        when,
        allow_failure,
    }
}

/// A busybox job running `script` (no after_script), images never pulled.
pub fn spec(runner: &str, job_id: u64, script: &[&str]) -> BuildSpec {
    let mut image = ImageSpec::new(BUSYBOX_IMAGE);
    image.pull_policy = vec![PullPolicy::Never];
    BuildSpec {
        job_id,
        runner: runner.to_string(),
        image,
        credentials: vec![],
        registry_mirrors: vec![],
        variables: vec![],
        steps: vec![step(StepName::Script, script, Duration::from_secs(60))],
        services: vec![],
        git: GitSpec::none(),
        timeout: Duration::from_secs(60),
        builds_dir: "/builds".to_string(),
        project_dir: "/builds/group/project".to_string(),
        shell: Shell::Sh,
        volumes: vec![],
        privileged: false,
        container_options: Default::default(),
        helper_image: None,
        warnings: vec![],
        caches: vec![],
        kept_volumes: vec![],
        artifacts: vec![],
        dependencies: vec![],
        transport: Default::default(),
    }
}

pub fn with_after_script(mut spec: BuildSpec, script: &[&str]) -> BuildSpec {
    spec.steps
        .push(step(StepName::AfterScript, script, Duration::from_secs(60)));
    spec
}

/// A machine on the local engine, as a machine provider would hand it over: its builds volume
/// (labelled with the machine and the runner) kept across its jobs, a network per job.
pub async fn machine_on_local_engine(
    docker: &Docker,
    runner: &str,
    machine: &str,
) -> MachineEndpoint {
    let volume = format!("{machine}-builds");
    let options = bollard::models::VolumeCreateOptions {
        name: Some(volume.clone()),
        labels: Some(std::collections::HashMap::from([
            (labels::MACHINE.to_string(), machine.to_string()),
            (labels::RUNNER.to_string(), runner.to_string()),
        ])),
        ..Default::default()
    };
    docker.create_volume(options).await.unwrap();
    MachineEndpoint {
        machine: Some(machine.to_string()),
        engine: EngineConfig::local(),
        network: None,
        builds_volume: Some(volume),
    }
}

/// Removes everything of a machine made by [`machine_on_local_engine`].
pub async fn remove_machine(docker: &Docker, machine: &str) {
    let filter = labels::filter(&[(labels::MACHINE, Some(machine))]);
    drover_docker::remove_labelled(docker, filter)
        .await
        .unwrap();
}

pub fn local() -> MachineEndpoint {
    MachineEndpoint::engine_only(EngineConfig::local())
}

thread_local! {
    /// One executor per test (each runs on a thread of its own), as the daemon keeps one: what
    /// it prestarts on a machine (a warm container, its standby exec) the test's jobs find.
    static EXECUTOR: Executor = Executor::new(ExecutorOptions {
        stop_timeout: Duration::from_secs(5),
        ..Default::default()
    });
}

pub fn executor() -> Executor {
    EXECUTOR.with(Executor::clone)
}

/// Output collected from a job's sink.
pub struct Collected {
    pub chunks: Vec<TraceChunk>,
}

impl Collected {
    pub fn text(&self) -> String {
        let bytes: Vec<u8> = self.chunks.iter().flat_map(|c| c.data.to_vec()).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }
}

/// Starts a job and runs it to its end.
pub async fn run_job(endpoint: MachineEndpoint, spec: BuildSpec) -> (Outcome, String) {
    let (tx, rx) = mpsc::channel(64);
    let handle = executor().start(endpoint, spec, tx);
    let (outcome, collected) = finish(handle, rx).await;
    (outcome, collected.text())
}

/// Waits for the job's outcome while draining its output.
pub async fn finish(handle: JobHandle, rx: mpsc::Receiver<TraceChunk>) -> (Outcome, Collected) {
    let collector = tokio::spawn(drain(rx));
    let outcome = tokio::time::timeout(Duration::from_secs(120), handle.wait())
        .await
        .expect("the job did not end within 120 s");
    let chunks = collector.await.expect("collector");
    (outcome, Collected { chunks })
}

async fn drain(mut rx: mpsc::Receiver<TraceChunk>) -> Vec<TraceChunk> {
    let mut chunks = Vec::new();
    while let Some(chunk) = rx.recv().await {
        chunks.push(chunk);
    }
    chunks
}

/// Reads chunks until their text contains `needle`; returns what was read.
pub async fn read_until(rx: &mut mpsc::Receiver<TraceChunk>, needle: &str) -> Vec<TraceChunk> {
    let mut chunks = Vec::new();
    let mut text = Vec::new();
    let wait = async {
        while let Some(chunk) = rx.recv().await {
            text.extend_from_slice(&chunk.data);
            chunks.push(chunk);
            if String::from_utf8_lossy(&text).contains(needle) {
                return;
            }
        }
        panic!("the output ended before {needle:?} appeared");
    };
    tokio::time::timeout(Duration::from_secs(60), wait)
        .await
        .unwrap_or_else(|_| panic!("{needle:?} did not appear within 60 s"));
    chunks
}

/// How often `needle` occurs in `text`.
pub fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}
