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
        out.contains(
            "Starting service drover-test/busybox:1 as drover-test-busybox, drover-test__busybox, web"
        ),
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
        ..Default::default()
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
async fn services_get_their_variables_and_too_long_ones_are_named() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let mut spec = spec(&runner, 24, &["unset BIG", FETCH]);
    let mut service = web_service(&["web"]);
    service.command = Some(vec![
        "sh".into(),
        "-c".into(),
        "mkdir -p /www && env > /www/index.html && exec httpd -f -p 80 -h /www".into(),
    ]);
    // The daemon composes a service's environment (public job variables only: a unit test of
    // build_spec); the executor passes it and names what Linux would refuse.
    service.variables.push(Variable::new("PUBLIC_V", "pub-1"));
    service
        .variables
        .push(Variable::new("BIG", "b".repeat(200_000)));
    spec.services = vec![service];
    spec.variables = vec![Variable::new("SECRET_V", "hidden-2")];
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

#[tokio::test]
async fn aliases_add_to_the_defaults_and_a_taken_alias_is_not_given_twice() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let mut spec = spec(
        &runner,
        24,
        &[
            "for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O- http://web/ && break; sleep 0.2; done",
            "for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O- http://drover-test-busybox/ && break; sleep 0.2; done",
            "for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O- http://other/ && break; sleep 0.2; done",
        ],
    );
    let mut second = web_service(&["web", "other"]);
    second.variables = vec![Variable::new("GREETING", "the-second-service")];
    spec.services = vec![web_service(&["web"]), second];
    let (outcome, out) = run_job(local(), spec).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(
        out.contains("the alias web of service drover-test/busybox:1 is already taken"),
        "{out}"
    );
    assert!(
        out.contains("Starting service drover-test/busybox:1 as other ..."),
        "the defaults too are the first service's: {out}"
    );
    assert_eq!(
        count(&out, "hello from the-web-service"),
        2,
        "`web` and the default alias reach the first service only: {out}"
    );
    assert_eq!(count(&out, "hello from the-second-service"), 1, "{out}");
    assert_nothing_left(&docker, &runner).await;
}

/// A web service whose httpd listens on port 80 only after `delay`.
fn slow_web_service(delay: &str, wait_port: &str) -> ServiceSpec {
    let mut service = web_service(&["web"]);
    let serve = format!(
        "mkdir -p /www && echo \"hello from $GREETING\" > /www/index.html \
         && sleep {delay} && exec httpd -f -p 80 -h /www"
    );
    service.command = Some(vec!["sh".into(), "-c".into(), serve]);
    service
        .variables
        .push(Variable::new("HEALTHCHECK_TCP_PORT", wait_port));
    service
}

#[tokio::test]
async fn the_job_starts_only_once_a_services_tcp_port_is_open() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    // A single fetch, no retries: it succeeds only if the executor waited for port 80.
    let mut spec = spec(&runner, 25, &["wget -q -O- http://web/"]);
    spec.services = vec![slow_web_service("1", "80")];
    let (outcome, out) = run_job(local(), spec).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(out.contains("hello from the-web-service"), "{out}");
    assert!(!out.contains("WARNING"), "{out}");
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn a_service_port_that_never_opens_is_a_warning_after_the_wait() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let mut spec = spec(&runner, 26, &["echo job-ran-$((3))"]);
    spec.services = vec![slow_web_service("0", "81")];
    let executor = Executor::new(ExecutorOptions {
        stop_timeout: Duration::from_secs(5),
        service_wait: Duration::from_secs(2),
        ..Default::default()
    });
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    let (outcome, collected) = finish(executor.start(local(), spec, tx), rx).await;
    let out = collected.text();
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(
        out.contains("Service drover-test/busybox:1 probably didn't start properly: port 81 not open after 2 s"),
        "{out}"
    );
    assert!(out.contains("job-ran-3"), "{out}");
    assert_nothing_left(&docker, &runner).await;
}
