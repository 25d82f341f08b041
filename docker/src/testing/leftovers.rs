//! Test runners that clean up after themselves, and "nothing left behind" checks: what the engine
//! tests and the providers' sandbox tests share.

use std::sync::atomic::{AtomicU64, Ordering};

use bollard::Docker;
use bollard::query_parameters::{ListContainersOptions, ListNetworksOptions, ListVolumesOptions};

use crate::engine::EngineConfig;
use crate::labels;

/// A runner token no other test (or test process) uses: every object a test creates carries it.
/// Dropping it removes whatever is left with its label, so a failed test leaves the engine clean.
pub struct TestRunner(String);

/// A fresh [`TestRunner`]; `tag` tells the test suites that made it apart.
pub fn unique_runner(tag: char) -> TestRunner {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    TestRunner(format!(
        "{tag}{}x{}",
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
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async {
                if let Ok(docker) = EngineConfig::local().connect().await {
                    let filter = labels::filter(&[(labels::RUNNER, Some(&runner))]);
                    let _ = crate::remove_labelled(&docker, filter).await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// Every container, network and volume on the engine labelled with `label=value`.
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
        found.push(format!("volume {}", v.name));
    }
    found
}

/// Fails the test if anything labelled with `runner` is still on the engine.
pub async fn assert_nothing_left(docker: &Docker, runner: &str) {
    let left = objects_labelled(docker, labels::RUNNER, runner).await;
    assert!(
        left.is_empty(),
        "objects left behind for runner {runner}: {left:?}"
    );
}
