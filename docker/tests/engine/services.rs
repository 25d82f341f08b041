//! Services: sidecars on the job's network, reached by alias.

use std::time::Duration;

use drover_core::Outcome;
use drover_docker::testing::{BUSYBOX_IMAGE, HEALTHCHECK_IMAGE};
use drover_docker::{Executor, ExecutorOptions, ImageSpec, PullPolicy, ServiceSpec, Variable};

use crate::support::*;

fn web_service(aliases: &[&str]) -> ServiceSpec {
    let mut image = ImageSpec::new(BUSYBOX_IMAGE);
    image.pull_policy = vec![PullPolicy::Never];
    let serve = "mkdir -p /www && echo \"hello from $GREETING\" > /www/index.html \
                 && exec httpd -f -p 80 -h /www";
    ServiceSpec {
        image,
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
        command: Some(vec!["sh".into(), "-c".into(), serve.into()]),
        variables: vec![Variable::new("GREETING", "the-web-service")],
    }
}

/// The job fetches from the service; a few tries cover httpd's first instants after its start.
const FETCH: &str = "for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O- http://web/ && exit 0; \
                     sleep 0.2; done; exit 1";

#[tokio::test]
async fn a_job_reaches_its_service_by_alias() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let mut spec = spec(&runner, 20, &[FETCH]);
    spec.services = vec![web_service(&["web"])];
    let (outcome, out) = run_job(local(), spec).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(out.contains("hello from the-web-service"), "{out}");
    assert!(
        out.contains("Starting service drover-test/busybox:1 as web"),
        "{out}"
    );
    assert_nothing_left(&docker, &runner).await;
}

fn healthcheck_service(script: &str) -> ServiceSpec {
    let mut image = ImageSpec::new(HEALTHCHECK_IMAGE);
    image.pull_policy = vec![PullPolicy::Never];
    ServiceSpec {
        image,
        aliases: vec![],
        command: Some(vec!["sh".into(), "-c".into(), script.into()]),
        variables: vec![],
    }
}

#[tokio::test]
async fn the_job_starts_only_once_a_service_with_a_health_check_is_healthy() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    // httpd comes up a second late; only then does the health check pass. A single fetch (no
    // retries) succeeds only if the executor waited for health.
    let slow = "mkdir -p /www && echo healthy-web > /www/index.html && sleep 1 \
                && httpd -p 80 -h /www && touch /tmp/ready && exec sleep 3600";
    let mut spec = spec(
        &runner,
        22,
        &["wget -q -O- http://drover-test-busybox-healthcheck/"],
    );
    spec.services = vec![healthcheck_service(slow)];
    let (outcome, out) = run_job(local(), spec).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(out.contains("healthy-web"), "{out}");
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn a_service_that_never_turns_healthy_is_a_warning_after_the_wait() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let mut spec = spec(&runner, 23, &["echo job-ran-$((2))"]);
    spec.services = vec![healthcheck_service("exec sleep 3600")];
    let executor = Executor::new(ExecutorOptions {
        stop_timeout: Duration::from_secs(5),
        service_wait: Duration::from_secs(2),
    });
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let (outcome, collected) = finish(executor.start(local(), spec, tx), rx).await;
    let out = collected.text();
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(
        out.contains("is not healthy; the job goes on without waiting"),
        "{out}"
    );
    assert!(out.contains("job-ran-2"), "{out}");
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn a_service_that_dies_is_a_warning_with_its_output() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let mut spec = spec(&runner, 21, &["echo job-ran-$((1))"]);
    spec.services = vec![healthcheck_service("echo service-broke-$((9)); exit 3")];
    let (outcome, out) = run_job(local(), spec).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(
        out.contains("as drover-test-busybox-healthcheck, drover-test__busybox-healthcheck"),
        "default aliases: {out}"
    );
    assert!(out.contains("is not running (exit code 3)"), "{out}");
    assert!(out.contains("service-broke-9"), "{out}");
    assert!(out.contains("job-ran-1"), "{out}");
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn a_service_that_cannot_start_is_a_warning() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let mut spec = spec(&runner, 23, &["echo job-ran-$((1))"]);
    let mut broken = web_service(&["broken"]);
    broken.command = Some(vec!["/no/such/program".into()]);
    spec.services = vec![broken];
    let (outcome, out) = run_job(local(), spec).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(out.contains("could not start"), "{out}");
    assert!(out.contains("job-ran-1"), "{out}");
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn services_get_the_public_variables_and_too_long_ones_are_named() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let mut spec = spec(&runner, 24, &["unset BIG", FETCH]);
    let mut service = web_service(&["web"]);
    service.command = Some(vec![
        "sh".into(),
        "-c".into(),
        "mkdir -p /www && env > /www/index.html && exec httpd -f -p 80 -h /www".into(),
    ]);
    spec.services = vec![service];
    let mut secret = Variable::new("SECRET_V", "hidden-2");
    secret.public = false;
    spec.variables = vec![
        Variable::new("PUBLIC_V", "pub-1"),
        secret,
        Variable::new("BIG", "b".repeat(200_000)),
    ];
    let (outcome, out) = run_job(local(), spec).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(out.contains("\nPUBLIC_V=pub-1\n"), "{out}");
    assert!(out.contains("\nGREETING=the-web-service\n"), "{out}");
    assert!(!out.contains("SECRET_V"), "{out}");
    assert!(
        out.contains(
            "the variable BIG is not passed to service drover-test/busybox:1: 200004 bytes"
        ),
        "{out}"
    );
    assert_nothing_left(&docker, &runner).await;
}
