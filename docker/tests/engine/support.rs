//! Helpers: unique names, job specs, running a job to its end, and "nothing left behind" checks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{ListContainersOptions, ListNetworksOptions, ListVolumesOptions};
use drover_core::Outcome;
use drover_docker::testing::BUSYBOX_IMAGE;
use drover_docker::{
    BuildSpec, EngineConfig, Executor, ExecutorOptions, GitSpec, ImageSpec, JobHandle,
    MachineEndpoint, PullPolicy, Shell, StepName, StepSpec, TraceChunk, When, labels,
};
use tokio::sync::mpsc;

pub use drover_docker::testing::engine_for_tests as engine;

/// A runner token no other test (or test process) uses: every object a test creates carries it.
/// Dropping it removes whatever is left with its label, so a failed test leaves the engine clean.
pub struct TestRunner(String);

pub fn unique_runner() -> TestRunner {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    TestRunner(format!(
        "t{}x{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

impl std::ops::Deref for TestRunner {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for TestRunner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl Drop for TestRunner {
    fn drop(&mut self) {
        let runner = self.0.clone();
        // Drop cannot await, and the test's runtime may be gone: clean up on a runtime of its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(remove_everything_of(&runner));
        });
        let _ = cleanup.join();
    }
}

async fn remove_everything_of(runner: &str) {
    let Ok(docker) = EngineConfig::local().connect().await else {
        return;
    };
    let filter = std::collections::HashMap::from([(
        "label".to_string(),
        vec![format!("{}={runner}", drover_docker::labels::RUNNER)],
    )]);
    let options = ListContainersOptions {
        all: true,
        filters: Some(filter.clone()),
        ..Default::default()
    };
    for c in docker
        .list_containers(Some(options))
        .await
        .unwrap_or_default()
    {
        let options = bollard::query_parameters::RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        let _ = docker
            .remove_container(&c.id.unwrap_or_default(), Some(options))
            .await;
    }
    let options = ListNetworksOptions {
        filters: Some(filter.clone()),
    };
    for n in docker
        .list_networks(Some(options))
        .await
        .unwrap_or_default()
    {
        let _ = docker.remove_network(&n.id.unwrap_or_default()).await;
    }
    let options = ListVolumesOptions {
        filters: Some(filter),
    };
    let volumes = docker
        .list_volumes(Some(options))
        .await
        .map(|v| v.volumes.unwrap_or_default());
    for v in volumes.unwrap_or_default() {
        let _ = docker
            .remove_volume(
                &v.name,
                None::<bollard::query_parameters::RemoveVolumeOptions>,
            )
            .await;
    }
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
        earlier_runner_labels: vec![],
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

pub fn executor() -> Executor {
    Executor::new(ExecutorOptions {
        stop_timeout: Duration::from_secs(5),
        ..Default::default()
    })
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

/// Every container, network and volume on the engine labelled with `label=value`.
pub async fn objects_labelled(docker: &Docker, label: &str, value: &str) -> Vec<String> {
    let filter =
        std::collections::HashMap::from([("label".to_string(), vec![format!("{label}={value}")])]);
    let mut found = Vec::new();
    let options = ListContainersOptions {
        all: true,
        filters: Some(filter.clone()),
        ..Default::default()
    };
    for c in docker.list_containers(Some(options)).await.unwrap() {
        found.push(format!("container {:?}", c.names.unwrap_or_default()));
    }
    let options = ListNetworksOptions {
        filters: Some(filter.clone()),
    };
    for n in docker.list_networks(Some(options)).await.unwrap() {
        found.push(format!("network {:?}", n.name.unwrap_or_default()));
    }
    let options = ListVolumesOptions {
        filters: Some(filter),
    };
    for v in docker
        .list_volumes(Some(options))
        .await
        .unwrap()
        .volumes
        .unwrap_or_default()
    {
        found.push(format!("volume {}", v.name));
    }
    found
}

pub async fn assert_nothing_left(docker: &Docker, runner: &str) {
    let left = objects_labelled(docker, drover_docker::labels::RUNNER, runner).await;
    assert!(
        left.is_empty(),
        "objects left behind for runner {runner}: {left:?}"
    );
}

/// How often `needle` occurs in `text`.
pub fn count(text: &str, needle: &str) -> usize {
    text.matches(needle).count()
}
