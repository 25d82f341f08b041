//! Pulls from a real registry (Debian's `docker-registry` on loopback): a Docker Hub mirror, the
//! fallback when the mirror is down, and registry credentials (htpasswd) that are used and never
//! shown.

use bollard::Docker;
use bollard::query_parameters::{RemoveImageOptions, TagImageOptions};
use drover_core::{FailureReason, Outcome};
use drover_docker::auth::{SOURCE_DOCKER_AUTH_CONFIG, parse_docker_config};
use drover_docker::testing::BUSYBOX_IMAGE;
use drover_docker::testing::registry::{Basic, TestRegistry};
use drover_docker::{Pull, PullPolicy, RegistryCredential, ensure_image_untraced};

use crate::support::*;

/// An image name this test alone uses; removed from the engine when dropped.
struct TestImage {
    docker: Docker,
    name: String,
}

impl TestImage {
    fn new(docker: &Docker, name: String) -> TestImage {
        TestImage {
            docker: docker.clone(),
            name,
        }
    }
}

impl Drop for TestImage {
    fn drop(&mut self) {
        let name = self.name.clone();
        let docker = self.docker.clone();
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            let options = RemoveImageOptions {
                noprune: true,
                ..Default::default()
            };
            let _ = runtime.block_on(docker.remove_image(&name, Some(options), None));
        });
        let _ = cleanup.join();
    }
}

fn basic() -> Basic {
    Basic {
        username: "drover-ci".to_string(),
        password: "Reg-s3cret-Pw".to_string(),
    }
}

/// `DOCKER_AUTH_CONFIG` as an operator writes it, for `registry`.
fn docker_auth_config(registry: &str, auth: &Basic) -> Vec<RegistryCredential> {
    let json = format!(
        r#"{{"auths": {{"{registry}": {{"username": "{}", "password": "{}"}}}}}}"#,
        auth.username, auth.password
    );
    parse_docker_config(&json, SOURCE_DOCKER_AUTH_CONFIG).unwrap()
}

async fn is_present(docker: &Docker, image: &str) -> bool {
    docker.inspect_image(image).await.is_ok()
}

#[tokio::test]
async fn an_image_only_in_the_mirror_runs_and_keeps_its_docker_hub_name() {
    let Some(docker) = engine().await else { return };
    let Some(registry) = TestRegistry::start(None).await else {
        return;
    };
    let runner = unique_runner();
    // A Docker Hub name nobody publishes: only the mirror has it.
    let image = TestImage::new(&docker, format!("drover-mirror-only-{runner}:1"));
    registry
        .push(
            &docker,
            BUSYBOX_IMAGE,
            &format!("library/drover-mirror-only-{runner}"),
            "1",
        )
        .await;
    assert!(!is_present(&docker, &image.name).await);

    let mut spec = spec(&runner, 1, &["echo from-the-mirror-$((6 * 7))"]);
    spec.image.name = image.name.clone();
    spec.image.pull_policy = vec![PullPolicy::Always];
    spec.registry_mirrors = vec![registry.url()];
    let (outcome, out) = run_job(local(), spec).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(
        out.contains(&format!(
            "Pulling docker image {} from mirror {} ...",
            image.name,
            registry.url()
        )),
        "{out}"
    );
    assert!(!out.contains("WARNING"), "{out}");
    assert!(out.contains("from-the-mirror-42"), "{out}");
    assert!(
        is_present(&docker, &image.name).await,
        "the pulled image carries the job's name"
    );
    let mirrored = format!("{}/library/drover-mirror-only-{runner}:1", registry.host());
    assert!(
        !is_present(&docker, &mirrored).await,
        "the mirror's name is dropped"
    );
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn with_the_mirror_down_the_pull_falls_back_as_configured() {
    let Some(docker) = engine().await else { return };
    let Some(mut registry) = TestRegistry::start(None).await else {
        return;
    };
    let mirror = registry.url();
    registry.stop();
    let runner = unique_runner();
    let image = TestImage::new(&docker, format!("drover-mirror-down-{runner}:1"));

    // `always` alone: the mirror is down and Docker Hub has no such image, so the job fails.
    let mut failing = spec(&runner, 2, &["true"]);
    failing.image.name = image.name.clone();
    failing.image.pull_policy = vec![PullPolicy::Always];
    failing.registry_mirrors = vec![mirror.clone()];
    let (outcome, out) = run_job(local(), failing).await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            reason: FailureReason::ImagePullFailure,
            exit_code: None
        },
        "{out}"
    );
    let mirror_down = format!(
        "the registry mirror {mirror} could not serve {}",
        image.name
    );
    assert!(out.contains(&mirror_down), "{out}");
    assert!(out.contains("pulling from Docker Hub instead"), "{out}");
    assert!(
        out.contains(&format!("Pulling docker image {} ...", image.name)),
        "{out}"
    );

    // `always, if-not-present` with the image on the engine: the local copy runs.
    let options = TagImageOptions {
        repo: Some(format!("drover-mirror-down-{runner}")),
        tag: Some("1".to_string()),
    };
    docker
        .tag_image(BUSYBOX_IMAGE, Some(options))
        .await
        .unwrap();
    let mut spec = spec(&runner, 3, &["echo local-copy-$((1 + 1))"]);
    spec.image.name = image.name.clone();
    spec.image.pull_policy = vec![PullPolicy::Always, PullPolicy::IfNotPresent];
    spec.registry_mirrors = vec![mirror.clone()];
    let (outcome, out) = run_job(local(), spec).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(out.contains(&mirror_down), "{out}");
    assert!(
        out.contains("trying pull policy \"if-not-present\""),
        "{out}"
    );
    assert!(
        out.contains(&format!("Using locally found image {}", image.name)),
        "{out}"
    );
    assert!(out.contains("local-copy-2"), "{out}");
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn registry_credentials_are_used_for_the_pull_and_never_shown() {
    let Some(docker) = engine().await else { return };
    let auth = basic();
    let Some(registry) = TestRegistry::start(Some(auth.clone())).await else {
        return;
    };
    let runner = unique_runner();
    let repository = format!("private/{runner}");
    let image = TestImage::new(&docker, format!("{}/{repository}:1", registry.host()));
    registry
        .push(&docker, BUSYBOX_IMAGE, &repository, "1")
        .await;
    assert!(!is_present(&docker, &image.name).await);

    // Without credentials the registry refuses.
    let mut anonymous = spec(&runner, 4, &["true"]);
    anonymous.image.name = image.name.clone();
    anonymous.image.pull_policy = vec![PullPolicy::Always];
    let (outcome, out) = run_job(local(), anonymous.clone()).await;
    assert_eq!(
        outcome,
        Outcome::Failed {
            reason: FailureReason::ImagePullFailure,
            exit_code: None
        },
        "{out}"
    );

    // Wrong ones too.
    let mut wrong = anonymous.clone();
    wrong.job_id = 5;
    let bad = Basic {
        password: "not-the-password".to_string(),
        ..auth.clone()
    };
    wrong.credentials = docker_auth_config(&registry.host(), &bad);
    let (outcome, out) = run_job(local(), wrong).await;
    assert!(
        matches!(
            outcome,
            Outcome::Failed {
                reason: FailureReason::ImagePullFailure,
                ..
            }
        ),
        "{outcome:?} {out}"
    );
    assert!(!out.contains("not-the-password"), "{out}");

    // DOCKER_AUTH_CONFIG's credentials win over the job payload's for the same registry.
    let mut spec = anonymous;
    spec.job_id = 6;
    spec.credentials = docker_auth_config(&registry.host(), &auth);
    spec.credentials.push(RegistryCredential {
        registry: registry.host(),
        username: "gitlab-ci-token".to_string(),
        password: "payload-token".to_string(),
        source: drover_docker::auth::SOURCE_JOB_PAYLOAD.to_string(),
    });
    spec.steps = vec![step(
        drover_docker::StepName::Script,
        &["echo private-$((3 * 3))"],
        std::time::Duration::from_secs(60),
    )];
    let (outcome, out) = run_job(local(), spec.clone()).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(
        out.contains("Authenticating with credentials from $DOCKER_AUTH_CONFIG"),
        "{out}"
    );
    assert!(out.contains("private-9"), "{out}");
    assert!(!out.contains(&auth.password), "{out}");
    assert!(is_present(&docker, &image.name).await);

    // The job payload's credentials alone (GitLab's registry login) do too.
    let untag = RemoveImageOptions {
        noprune: true,
        ..Default::default()
    };
    docker
        .remove_image(&image.name, Some(untag), None)
        .await
        .unwrap();
    let mut payload = spec.clone();
    payload.job_id = 8;
    payload.credentials = vec![RegistryCredential {
        registry: registry.host(),
        username: auth.username.clone(),
        password: auth.password.clone(),
        source: drover_docker::auth::SOURCE_JOB_PAYLOAD.to_string(),
    }];
    let (outcome, out) = run_job(local(), payload).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(
        out.contains("Authenticating with credentials from job payload (GitLab Registry)"),
        "{out}"
    );
    assert!(!out.contains(&auth.password), "{out}");
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn a_mirror_behind_credentials_serves_with_them() {
    let Some(docker) = engine().await else { return };
    let auth = basic();
    let Some(registry) = TestRegistry::start(Some(auth.clone())).await else {
        return;
    };
    let runner = unique_runner();
    let image = TestImage::new(&docker, format!("drover-private-mirror-{runner}:2"));
    registry
        .push(
            &docker,
            BUSYBOX_IMAGE,
            &format!("library/drover-private-mirror-{runner}"),
            "2",
        )
        .await;
    let mut spec = spec(&runner, 7, &["echo mirrored-$((2 + 3))"]);
    spec.image.name = image.name.clone();
    spec.image.pull_policy = vec![PullPolicy::Always];
    spec.registry_mirrors = vec![registry.url()];
    spec.credentials = docker_auth_config(&registry.url(), &auth);
    let (outcome, out) = run_job(local(), spec).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(out.contains("mirrored-5"), "{out}");
    assert!(!out.contains("WARNING"), "{out}");
    assert!(!out.contains(&auth.password), "{out}");
    assert_nothing_left(&docker, &runner).await;
}

/// What the `docker` machine provider does to warm a sandbox: the runner's private default image is
/// pulled before any job, with the runner's credentials.
#[tokio::test]
async fn a_private_image_is_pulled_ahead_of_jobs_with_the_runners_credentials() {
    let Some(docker) = engine().await else { return };
    let auth = basic();
    let Some(registry) = TestRegistry::start(Some(auth.clone())).await else {
        return;
    };
    let runner = unique_runner();
    let repository = format!("private/default-{runner}");
    let image = TestImage::new(&docker, format!("{}/{repository}:1", registry.host()));
    registry
        .push(&docker, BUSYBOX_IMAGE, &repository, "1")
        .await;
    let policies = [PullPolicy::IfNotPresent];
    let pull = |credentials| Pull {
        policies: &policies,
        credentials,
        mirrors: &[],
    };

    let err = ensure_image_untraced(&docker, &image.name, pull(&[]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains(&image.name), "{err}");
    assert!(!is_present(&docker, &image.name).await);

    let credentials = docker_auth_config(&registry.host(), &auth);
    ensure_image_untraced(&docker, &image.name, pull(&credentials))
        .await
        .unwrap();
    assert!(
        is_present(&docker, &image.name).await,
        "the image is on the engine before any job"
    );
    assert_nothing_left(&docker, &runner).await;
}
