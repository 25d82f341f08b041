//! `AwsProvider` end to end: moto as AWS, each instance a real SSH server with Docker behind it.
//! The shared conformance suite, and what drover does better than GitLab's plugin: restarts adopt
//! instances, a vanished instance is named, `MaxSize` is kept, `instance_ready_command` is
//! retried until a timeout, `delete_instances_on_shutdown` deletes.

use std::sync::Arc;
use std::time::Duration;

use drover_docker::ssh::{DockerTunnel, HostKeyPolicy, SshConnection, SshTarget, keys};
use drover_docker::testing::sshd::INSTANCE_SSH_PORT;
use drover_providers::conformance::{self, Setup};
use drover_providers::{MachineProvider, ProviderErrorKind};
use futures_util::FutureExt;

use crate::bed::{Cloud, live_instances, ping, provider};

#[tokio::test]
async fn the_aws_provider_passes_the_conformance_suite() {
    let Some(mut cloud) = Cloud::start().await else {
        return;
    };
    let ours = tempfile::tempdir().unwrap();
    let theirs = tempfile::tempdir().unwrap();
    let _bed = cloud
        .group("conformance", 5, "127.0.1.0/24", ours.path())
        .await;
    // Another manager has a group of its own, as GitLab's docs require.
    let _other_bed = cloud
        .group("conformance-other", 2, "127.0.3.0/24", theirs.path())
        .await;
    let config = cloud.config("conformance", ours.path());
    let other = cloud.config("conformance-other", theirs.path());
    // A creation on this backend fails midway when the instance never passes its readiness
    // check: it is bound, not ready.
    let failing = drover_providers::aws::AwsProviderConfig {
        instance_ready_command: Some("exit 1".into()),
        // Room for the new instance's SSH server to come up, so the command itself is what fails.
        ready_timeout: Duration::from_secs(20),
        ..config.clone()
    };
    let factory = |config: drover_providers::aws::AwsProviderConfig| {
        Box::new(move || {
            let config = config.clone();
            async move { Box::new(provider(&config).await) as Box<dyn MachineProvider> }.boxed()
        }) as conformance::Factory
    };
    let setup = Setup {
        prefix: "runner-aaaa-".into(),
        other_prefix: "runner-bbbb-".into(),
        provider: factory(config),
        other: factory(other),
        half_create: Box::new(move |name| {
            let failing = failing.clone();
            async move {
                let p = provider(&failing).await;
                let err = p.create(&name).await.expect_err("the ready check fails");
                assert!(err.message.contains("instance_ready_command"), "{err}");
            }
            .boxed()
        }),
    };
    conformance::run(&setup).await;
    cloud.clean_up().await;
}

#[tokio::test]
async fn a_restarted_provider_adopts_its_instances_instead_of_deleting_them() {
    let Some(mut cloud) = Cloud::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bed = cloud.group("restart", 3, "127.0.1.0/24", dir.path()).await;
    let config = cloud.config("restart", dir.path());

    let first = provider(&config).await;
    first.create("runner-x-1").await.expect("create");
    let host = ping(&first, "runner-x-1").await;
    let before = live_instances(&bed);
    assert_eq!(before.len(), 1);
    // drover stops (without delete_instances_on_shutdown) and starts again.
    first.shutdown().await;
    drop(first);

    let again = provider(&config).await;
    assert_eq!(again.list("runner-x-").await.unwrap(), ["runner-x-1"]);
    assert_eq!(ping(&again, "runner-x-1").await, host, "the same instance");
    // Creating the name again adopts the instance; nothing new is launched.
    again.create("runner-x-1").await.expect("adopt");
    assert_eq!(live_instances(&bed), before, "no instance deleted or added");
    assert_eq!(bed.reconciler.group.info().unwrap().desired, 1);
    again.remove("runner-x-1").await.expect("remove");
    assert!(live_instances(&bed).is_empty());
    assert_eq!(
        bed.reconciler.group.info().unwrap().desired,
        0,
        "decremented"
    );
    cloud.clean_up().await;
}

#[tokio::test]
async fn an_instance_terminated_behind_drovers_back_is_not_found_by_its_id() {
    let Some(mut cloud) = Cloud::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bed = cloud.group("vanish", 3, "127.0.1.0/24", dir.path()).await;
    let p = provider(&cloud.config("vanish", dir.path())).await;
    p.create("runner-v-1").await.expect("create");
    let [instance] = live_instances(&bed).try_into().expect("one instance");
    // A spot reclaim, or an operator in the console.
    bed.reconciler
        .group
        .terminate(&instance)
        .expect("terminate");
    let err = p.endpoint("runner-v-1").await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::NotFound, "{err}");
    assert!(err.message.contains(&instance), "names the instance: {err}");
    assert!(err.message.contains("gone"), "{err}");
    // The core then removes the name: fine although the instance is gone.
    p.remove("runner-v-1")
        .await
        .expect("remove a vanished machine");
    assert!(p.list("runner-v-").await.unwrap().is_empty());
    cloud.clean_up().await;
}

#[tokio::test]
async fn creations_stop_at_the_groups_max_size() {
    let Some(mut cloud) = Cloud::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bed = cloud.group("cap", 1, "127.0.1.0/24", dir.path()).await;
    let p = provider(&cloud.config("cap", dir.path())).await;
    assert_eq!(p.max_size(), 1);
    p.create("runner-c-1").await.expect("the first fits");
    // moto would launch past MaxSize; drover does not ask.
    let err = p.create("runner-c-2").await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Quota, "{err}");
    assert!(err.message.contains("MaxSize (1)"), "{err}");
    assert_eq!(bed.reconciler.group.info().unwrap().desired, 1);
    assert_eq!(live_instances(&bed).len(), 1);
    assert_eq!(
        p.list("runner-c-").await.unwrap(),
        ["runner-c-1"],
        "no pending name is left"
    );
    // Room again after a removal.
    p.remove("runner-c-1").await.unwrap();
    p.create("runner-c-2").await.expect("fits now");
    p.remove("runner-c-2").await.unwrap();
    cloud.clean_up().await;
}

#[tokio::test]
async fn instance_ready_command_is_retried_and_times_out_with_a_clear_error() {
    let Some(mut cloud) = Cloud::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bed = cloud.group("ready", 3, "127.0.1.0/24", dir.path()).await;
    let base = cloud.config("ready", dir.path());

    // Passes on its third run, as a slow cloud-init would.
    let counting = "n=$(cat /tmp/ready-runs 2>/dev/null || echo 0); n=$((n+1)); \
                    echo $n > /tmp/ready-runs; test $n -ge 3";
    let p = provider(&drover_providers::aws::AwsProviderConfig {
        instance_ready_command: Some(counting.into()),
        ..base.clone()
    })
    .await;
    p.create("runner-r-1")
        .await
        .expect("ready on the third run");
    let [instance] = live_instances(&bed).try_into().expect("one instance");
    let runs = run_on(&bed, &instance, dir.path(), "cat /tmp/ready-runs").await;
    assert_eq!(runs.trim(), "3", "ran until it passed, then no more");

    // Never passes: the creation fails after the timeout, saying what was last wrong. (The
    // timeout leaves room for a new instance's first SSH handshake, slow on a busy host: its
    // dropbear makes its host keys then.)
    let p = provider(&drover_providers::aws::AwsProviderConfig {
        instance_ready_command: Some("echo cloud-init still running >&2; exit 3".into()),
        ready_timeout: Duration::from_secs(40),
        ..base
    })
    .await;
    let err = p.create("runner-r-2").await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Retryable, "{err}");
    for part in [
        "not ready within 40s",
        "instance_ready_command",
        "exit status 3",
        "cloud-init still running",
    ] {
        assert!(err.message.contains(part), "{part:?} in: {err}");
    }
    // Half-created: listed for the core to remove, not handed out.
    assert_eq!(
        p.list("runner-r-").await.unwrap(),
        ["runner-r-1", "runner-r-2"]
    );
    assert_eq!(
        p.endpoint("runner-r-2").await.unwrap_err().kind,
        ProviderErrorKind::NotFound
    );
    p.remove("runner-r-2").await.unwrap();
    p.remove("runner-r-1").await.unwrap();
    assert!(live_instances(&bed).is_empty());
    cloud.clean_up().await;
}

#[tokio::test]
async fn delete_instances_on_shutdown_terminates_this_managers_instances() {
    let Some(mut cloud) = Cloud::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bed = cloud.group("shutdown", 3, "127.0.1.0/24", dir.path()).await;
    let p = provider(&drover_providers::aws::AwsProviderConfig {
        delete_instances_on_shutdown: true,
        ..cloud.config("shutdown", dir.path())
    })
    .await;
    p.create("runner-s-1").await.expect("create");
    p.create("runner-s-2").await.expect("create");
    assert_eq!(live_instances(&bed).len(), 2);
    p.shutdown().await;
    assert!(live_instances(&bed).is_empty(), "terminated");
    assert_eq!(bed.reconciler.group.info().unwrap().desired, 0);
    assert!(p.list("runner-s-").await.unwrap().is_empty());
    cloud.clean_up().await;
}

#[tokio::test]
async fn removing_a_pending_name_gives_back_the_capacity_it_raised() {
    let Some(mut cloud) = Cloud::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let bed = cloud.group("pending", 3, "127.0.1.0/24", dir.path()).await;
    let p = provider(&cloud.config("pending", dir.path())).await;
    p.create("runner-p-1").await.expect("create");
    let kept = live_instances(&bed);
    assert_eq!(kept.len(), 1);
    // A creation cut short after raising the capacity: the name is pending, an instance shows
    // that no name is bound to.
    let records = std::fs::read_dir(dir.path().join("aws-instances"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|d| d.join("runner-p-1.json").exists())
        .expect("the group's records");
    std::fs::write(
        records.join("runner-p-2.json"),
        r#"{"version":1,"state":"pending"}"#,
    )
    .unwrap();
    bed.reconciler.group.set_desired(2).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while live_instances(&bed).len() < 2 {
        assert!(std::time::Instant::now() < deadline, "no instance showed");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    p.remove("runner-p-2")
        .await
        .expect("remove the pending name");
    assert_eq!(
        live_instances(&bed),
        kept,
        "only the bound instance is left"
    );
    assert_eq!(bed.reconciler.group.info().unwrap().desired, 1);
    // A pending name whose instance has not shown: the raised capacity is lowered, never below
    // the bound instances.
    std::fs::write(
        records.join("runner-p-3.json"),
        r#"{"version":1,"state":"pending"}"#,
    )
    .unwrap();
    p.remove("runner-p-3")
        .await
        .expect("remove the pending name");
    assert_eq!(bed.reconciler.group.info().unwrap().desired, 1, "not below");
    assert_eq!(live_instances(&bed), kept);
    assert_eq!(p.list("runner-p-").await.unwrap(), ["runner-p-1"]);
    cloud.clean_up().await;
}

/// Runs `command` on the instance over SSH with the manager key, as an operator would.
async fn run_on(
    bed: &crate::bed::Bed,
    instance: &str,
    state_dir: &std::path::Path,
    command: &str,
) -> String {
    let ip = bed
        .reconciler
        .group
        .instances()
        .unwrap()
        .into_iter()
        .find(|i| i.id == instance)
        .and_then(|i| i.private_ip)
        .expect("the instance's address");
    let connection = SshConnection::new(SshTarget {
        address: format!("{ip}:{INSTANCE_SSH_PORT}"),
        username: "ec2-user".into(),
        key: Arc::new(keys::manager_key(state_dir).unwrap()),
        tunnel: DockerTunnel::DialStdio,
        host_key: HostKeyPolicy::TrustFirstUse,
        keepalive: None,
        timeout: Duration::from_secs(10),
    });
    let out = connection.exec(command).await.expect("exec over SSH");
    connection.close().await;
    assert!(out.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
