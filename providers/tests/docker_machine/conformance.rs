//! The conformance suite for the docker-machine provider, through the fake docker-machine. Both
//! managers share the fake's storage, as two drover hosts of one runner may share a cloud account.

use std::sync::Arc;

use drover_providers::conformance::{self, Setup};
use drover_providers::{DockerMachineProvider, FakeDockerMachine, MachineProvider};
use futures_util::FutureExt;

#[tokio::test]
async fn the_docker_machine_provider_conforms() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let fake = Arc::new(FakeDockerMachine::install(dir.path()).expect("the fake installs"));
    let state = Arc::new(dir.path().join("state"));
    let factory = |fake: Arc<FakeDockerMachine>, state: Arc<std::path::PathBuf>| {
        move || {
            let provider = DockerMachineProvider::new(fake.config("fakecloud", &[]))
                .expect("the provider sets up")
                .with_state_dir(&state)
                .expect("the state directory");
            async move { Box::new(provider) as Box<dyn MachineProvider> }.boxed()
        }
    };
    let half_fake = fake.clone();
    let half_state = state.clone();
    let setup = Setup {
        prefix: "runner-abc123xyz-vm-".to_string(),
        // The same runner token, another `MachineName`.
        other_prefix: "runner-abc123xyz-other-".to_string(),
        provider: Box::new(factory(fake.clone(), state.clone())),
        other: Box::new(factory(
            fake.clone(),
            Arc::new(dir.path().join("other-state")),
        )),
        half_create: Box::new(move |name| {
            let fake = half_fake.clone();
            let make = factory(fake.clone(), half_state.clone());
            async move {
                fake.fail_creations("Error creating machine: Error in driver: InternalError");
                let result = make().await.create(&name).await;
                fake.heal_creations();
                assert!(result.is_err(), "the creation fails midway");
                assert_eq!(fake.state(&name).as_deref(), Some("Error"));
            }
            .boxed()
        }),
    };
    conformance::run(&setup).await;
    assert!(fake.machines().is_empty(), "{:?}", fake.machines());
}
