//! `[runners.docker]` settings of the job's containers: user, limits, hosts, DNS, `/dev/shm`.

use drover_core::Outcome;
use drover_docker::testing::BUSYBOX_IMAGE;
use drover_docker::{ContainerOptions, ImageSpec, PullPolicy, ServiceSpec};

use crate::support::*;

/// The memory limit of the container the command runs in, cgroup v2 or v1.
const MEMORY_LIMIT: &str = "$(cat /sys/fs/cgroup/memory.max 2>/dev/null \
                            || cat /sys/fs/cgroup/memory/memory.limit_in_bytes)";

fn options() -> ContainerOptions {
    ContainerOptions {
        user: Some("65534".into()),
        memory: Some(64 << 20),
        shm_size: Some(8 << 20),
        dns_search: vec!["drover.test".into()],
        extra_hosts: vec!["drover-test-host:10.9.8.7".into()],
        ..Default::default()
    }
}

#[tokio::test]
async fn the_steps_run_as_the_user_with_the_runners_limits_and_hosts() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let script = [
        "echo \"uid=$(id -u)\"",
        "grep drover-test-host /etc/hosts",
        "grep '^search' /etc/resolv.conf",
        &format!("echo \"memory={MEMORY_LIMIT}\""),
        "df -k /dev/shm | tail -n 1",
        // Without sources, the project directory is still made, writable for the user.
        "touch written-by-the-user && pwd",
    ];
    let mut spec = with_after_script(spec(&runner, 60, &script), &["echo \"after-uid=$(id -u)\""]);
    spec.container_options = options();
    let (outcome, out) = run_job(local(), spec).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(out.contains("uid=65534\n"), "{out}");
    assert!(out.contains("after-uid=65534\n"), "{out}");
    assert!(out.contains("10.9.8.7\tdrover-test-host"), "{out}");
    assert!(out.contains("search drover.test"), "{out}");
    assert!(out.contains("memory=67108864\n"), "64m: {out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("shm ") && l.contains(" 8192 ")),
        "/dev/shm of 8m: {out}"
    );
    assert!(out.contains("/builds/group/project\n"), "{out}");
    assert_nothing_left(&docker, &runner).await;
}

#[tokio::test]
async fn services_get_the_hosts_but_neither_the_user_nor_the_limits() {
    let Some(docker) = engine().await else { return };
    let runner = unique_runner();
    let mut image = ImageSpec::new(BUSYBOX_IMAGE);
    image.pull_policy = vec![PullPolicy::Never];
    let serve = format!(
        "mkdir -p /www && {{ echo \"svc-uid=$(id -u)\"; echo \"svc-memory={MEMORY_LIMIT}\"; \
         grep drover-test-host /etc/hosts; }} > /www/index.html && exec httpd -f -p 80 -h /www"
    );
    let service = ServiceSpec {
        image,
        aliases: vec!["web".into()],
        command: Some(vec!["sh".into(), "-c".into(), serve]),
        variables: vec![],
    };
    let fetch = "for i in 1 2 3 4 5 6 7 8 9 10; do wget -q -O- http://web/ && exit 0; \
                 sleep 0.2; done; exit 1";
    let mut spec = spec(&runner, 61, &[fetch]);
    spec.services = vec![service];
    spec.container_options = options();
    let (outcome, out) = run_job(local(), spec).await;
    assert_eq!(outcome, Outcome::Success, "{out}");
    assert!(out.contains("svc-uid=0\n"), "{out}");
    assert!(out.contains("svc-memory="), "{out}");
    assert!(!out.contains("svc-memory=67108864"), "{out}");
    assert!(out.contains("10.9.8.7\tdrover-test-host"), "{out}");
    assert_nothing_left(&docker, &runner).await;
}
