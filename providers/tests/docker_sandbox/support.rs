//! Helpers: unique runner tokens that clean up after themselves, "nothing left behind" checks and
//! running a job on a sandbox.

use std::time::Duration;

use drover_core::Outcome;
use drover_docker::testing::BUSYBOX_IMAGE;
use drover_docker::{
    BuildSpec, Executor, ExecutorOptions, GitSpec, ImageSpec, MachineEndpoint, PullPolicy, Shell,
    StepName, StepSpec, When,
};
use tokio::sync::mpsc;

pub use drover_docker::testing::engine_for_tests as engine;

pub use drover_docker::testing::leftovers::{TestRunner, assert_nothing_left, objects_labelled};

/// A fresh runner token for a provider test.
pub fn unique_runner() -> TestRunner {
    drover_docker::testing::leftovers::unique_runner('p')
}

/// A busybox job running `script`, images never pulled.
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
