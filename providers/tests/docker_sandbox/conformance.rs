//! The conformance suite for the `docker` provider on the real engine.

use drover_docker::testing::BUSYBOX_IMAGE;
use drover_docker::{EngineConfig, PullPolicy};
use drover_providers::conformance::{self, Setup};
use drover_providers::{DockerProvider, DockerProviderConfig, MachineProvider};
use futures_util::FutureExt;

use crate::support::*;

fn config(runner: &str, image: &str) -> DockerProviderConfig {
    DockerProviderConfig {
        engine: EngineConfig::local(),
        runner: runner.to_string(),
        image: image.to_string(),
        pull_policy: vec![PullPolicy::Never],
        credentials: vec![],
        registry_mirrors: vec![],
    }
}

fn factory(
    config: DockerProviderConfig,
) -> impl Fn() -> futures_util::future::BoxFuture<'static, Box<dyn MachineProvider>> {
    move || {
        let config = config.clone();
        async move {
            let provider = DockerProvider::connect(config).await.expect("connect");
            Box::new(provider) as Box<dyn MachineProvider>
        }
        .boxed()
    }
}

#[tokio::test]
async fn the_docker_provider_conforms() {
    let Some(docker) = engine().await else { return };
    let (runner, other) = (unique_runner(), unique_runner());
    // A sandbox whose default image is missing (pull policy `never`) fails after its volume and
    // network exist: half-created.
    let broken = factory(config(&runner, "drover-test/not-there:0"));
    let setup = Setup {
        prefix: format!("runner-{runner}-vm-"),
        other_prefix: format!("runner-{other}-vm-"),
        provider: Box::new(factory(config(&runner, BUSYBOX_IMAGE))),
        other: Box::new(factory(config(&other, BUSYBOX_IMAGE))),
        half_create: Box::new(move |name| {
            let make = broken();
            async move {
                let result = make.await.create(&name).await;
                assert!(result.is_err(), "the creation fails midway");
            }
            .boxed()
        }),
    };
    conformance::run(&setup).await;
    assert_nothing_left(&docker, &runner).await;
    assert_nothing_left(&docker, &other).await;
}
