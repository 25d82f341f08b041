//! The docker provider: sandboxes by name, idempotent, serialised per name, listed by label.

use bollard::models::{NetworkCreateRequest, VolumeCreateOptions};
use bollard::query_parameters::{InspectContainerOptions, ListContainersOptions};
use drover_core::{CreationFailure, Outcome};
use drover_docker::testing::BUSYBOX_IMAGE;
use drover_docker::{EngineConfig, PullPolicy, labels};
use drover_providers::{DockerProvider, DockerProviderConfig, MachineProvider, ProviderErrorKind};

use crate::support::*;

pub async fn provider(runner: &str) -> DockerProvider {
    DockerProvider::connect(DockerProviderConfig {
        engine: EngineConfig::local(),
        runner: runner.to_string(),
        image: BUSYBOX_IMAGE.to_string(),
        pull_policy: vec![PullPolicy::Never],
        credentials: vec![],
        registry_mirrors: vec![],
    })
    .await
    .expect("connect the provider")
}

#[tokio::test]
async fn create_list_remove_are_idempotent() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let p = provider(&runner).await;
    let prefix = format!("runner-{runner}-");
    let name = format!("{prefix}auto-1");

    let first = p.create(&name).await.unwrap();
    let again = p.create(&name).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(first.machine.as_deref(), Some(name.as_str()));
    assert_eq!(p.endpoint(&name).await.unwrap(), first);
    assert_eq!(p.list(&prefix).await.unwrap(), vec![name.clone()]);
    assert!(p.list("runner-someone-else-").await.unwrap().is_empty());

    let objects = objects_labelled(&docker, labels::MACHINE, &name).await;
    assert_eq!(objects.len(), 3, "anchor, network, volume: {objects:?}");
    let anchor = docker
        .inspect_container(&name, None::<InspectContainerOptions>)
        .await
        .unwrap();
    assert_eq!(
        anchor.state.unwrap().running,
        Some(false),
        "the anchor never runs"
    );

    p.remove(&name).await.unwrap();
    p.remove(&name).await.unwrap();
    assert!(p.list(&prefix).await.unwrap().is_empty());
    let err = p.endpoint(&name).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::NotFound);
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn remove_during_create_waits_and_then_removes() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let p = provider(&runner).await;
    let name = format!("runner-{runner}-auto-2");
    // `join!` polls the create first: it takes the name's lock before the remove asks for it.
    let (created, removed) = tokio::join!(p.create(&name), p.remove(&name));
    created.unwrap();
    removed.unwrap();
    assert!(
        p.list(&name).await.unwrap().is_empty(),
        "the remove came after the create"
    );
    assert_nothing_left(&docker, &runner).await;

    // And the other way round: the machine exists at the end.
    let (removed, created) = tokio::join!(p.remove(&name), p.create(&name));
    removed.unwrap();
    created.unwrap();
    assert_eq!(p.list(&name).await.unwrap(), vec![name.clone()]);
    p.remove(&name).await.unwrap();
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn a_half_created_machine_is_listed_finished_and_removed() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let p = provider(&runner).await;
    let name = format!("runner-{runner}-auto-3");
    // What a crash after the first step of a creation leaves: the volume alone.
    let volume = VolumeCreateOptions {
        name: Some(format!("{name}-builds")),
        labels: Some(std::collections::HashMap::from([
            (labels::MACHINE.to_string(), name.clone()),
            (labels::RUNNER.to_string(), runner.to_string()),
        ])),
        ..Default::default()
    };
    docker.create_volume(volume).await.unwrap();
    assert_eq!(p.list(&name).await.unwrap(), vec![name.clone()]);
    assert_eq!(
        p.endpoint(&name).await.unwrap_err().kind,
        ProviderErrorKind::NotFound
    );

    p.create(&name).await.unwrap();
    assert!(p.endpoint(&name).await.is_ok());
    p.remove(&name).await.unwrap();
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn a_foreign_object_with_the_machines_name_is_never_adopted() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let p = provider(&runner).await;
    let name = format!("runner-{runner}-auto-4");
    let foreign = NetworkCreateRequest {
        name: name.clone(),
        ..Default::default()
    };
    docker.create_network(foreign).await.unwrap();
    let err = p.create(&name).await.unwrap_err();
    docker.remove_network(&name).await.unwrap();
    assert_eq!(err.creation_failure(), CreationFailure::Fatal, "{err}");
    assert!(err.to_string().contains("drover did not create"), "{err}");
    p.remove(&name).await.unwrap();
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn a_missing_image_under_pull_policy_never_is_fatal() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let p = DockerProvider::connect(DockerProviderConfig {
        engine: EngineConfig::local(),
        runner: runner.to_string(),
        image: "drover-test/not-there:0".to_string(),
        pull_policy: vec![PullPolicy::Never],
        credentials: vec![],
        registry_mirrors: vec![],
    })
    .await
    .unwrap();
    let name = format!("runner-{runner}-auto-5");
    let err = p.create(&name).await.unwrap_err();
    assert_eq!(err.creation_failure(), CreationFailure::Fatal, "{err}");
    assert!(err.to_string().contains("drover-test/not-there:0"), "{err}");
    p.remove(&name).await.unwrap();
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn jobs_on_a_machine_use_its_sandbox_and_leave_it_intact() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let p = provider(&runner).await;
    let name = format!("runner-{runner}-auto-6");
    let endpoint = p.create(&name).await.unwrap();
    let spec = spec(
        &runner,
        50,
        &["echo built > /builds/marker", "echo on-machine-$((1))"],
    );
    let (outcome, out) = run_job(endpoint.clone(), spec).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(out.contains(&format!("on machine {name}")), "{out}");

    // The job's containers are gone, the sandbox (with the job's files) is still there.
    let filter = std::collections::HashMap::from([(
        "label".to_string(),
        vec![
            format!("{}={runner}", labels::RUNNER),
            labels::JOB.to_string(),
        ],
    )]);
    let options = ListContainersOptions {
        all: true,
        filters: Some(filter),
        ..Default::default()
    };
    assert!(
        docker
            .list_containers(Some(options))
            .await
            .unwrap()
            .is_empty()
    );
    // Volume, network, anchor, and the warm build container started for the next job.
    assert_eq!(
        objects_labelled(&docker, labels::MACHINE, &name)
            .await
            .len(),
        4
    );
    let (outcome, out) = run_job(endpoint, spec_reading_marker(&runner)).await;
    assert_eq!(
        outcome,
        Outcome::Success,
        "the builds volume persists across jobs: {out}"
    );

    p.remove(&name).await.unwrap();
    assert_nothing_left(&docker, &runner).await;
}

fn spec_reading_marker(runner: &str) -> drover_docker::BuildSpec {
    spec(runner, 51, &["test \"$(cat /builds/marker)\" = built"])
}
