//! Helpers: unique runner tokens that clean up after themselves, "nothing left behind" checks and
//! running a job on a sandbox.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bollard::Docker;
use bollard::query_parameters::{ListContainersOptions, ListNetworksOptions, ListVolumesOptions};
use drover_core::Outcome;
use drover_docker::testing::BUSYBOX_IMAGE;
use drover_docker::{
    BuildSpec, EngineConfig, Executor, ExecutorOptions, GitSpec, ImageSpec, MachineEndpoint,
    PullPolicy, Shell, StepName, StepSpec, When, labels,
};
use tokio::sync::mpsc;

pub use drover_docker::testing::engine_for_tests as engine;

/// A runner token no other test (or test process) uses: every object a test creates carries it.
/// Dropping it removes whatever is left with its label, so a failed test leaves the engine clean.
pub struct TestRunner(String);

pub fn unique_runner() -> TestRunner {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    TestRunner(format!(
        "p{}x{}",
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
            runtime.block_on(async {
                if let Ok(docker) = EngineConfig::local().connect().await {
                    let filter = labels::filter(&[(labels::RUNNER, Some(&runner))]);
                    let _ = drover_docker::remove_labelled(&docker, filter).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// The containers, networks and volumes that carry `label=value`.
pub async fn objects_labelled(docker: &Docker, label: &str, value: &str) -> Vec<String> {
    let filter = labels::filter(&[(label, Some(value))]);
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
    let volumes = docker.list_volumes(Some(options)).await.unwrap();
    for v in volumes.volumes.unwrap_or_default() {
        found.push(format!("volume {:?}", v.name));
    }
    found
}

pub async fn assert_nothing_left(docker: &Docker, runner: &str) {
    let left = objects_labelled(docker, labels::RUNNER, runner).await;
    assert!(
        left.is_empty(),
        "objects left behind for runner {runner}: {left:?}"
    );
}

/// A busybox job running `script`, images never pulled.
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
        steps: vec![StepSpec {
            name: StepName::Script,
            script: script.iter().map(|s| s.to_string()).collect(),
            timeout: Duration::from_secs(60),
            when: When::OnSuccess,
            allow_failure: false,
        }],
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

/// Runs a job on `endpoint` to its end: its outcome and output.
pub async fn run_job(endpoint: MachineEndpoint, spec: BuildSpec) -> (Outcome, String) {
    let (tx, mut rx) = mpsc::channel(64);
    let executor = Executor::new(ExecutorOptions {
        stop_timeout: Duration::from_secs(5),
        ..Default::default()
    });
    let handle = executor.start(endpoint, spec, tx);
    let collector = tokio::spawn(async move {
        let mut bytes = Vec::new();
        while let Some(chunk) = rx.recv().await {
            bytes.extend_from_slice(&chunk.data);
        }
        String::from_utf8_lossy(&bytes).into_owned()
    });
    let outcome = tokio::time::timeout(Duration::from_secs(120), handle.wait())
        .await
        .expect("the job ends within 2 minutes");
    (outcome, collector.await.unwrap())
}
