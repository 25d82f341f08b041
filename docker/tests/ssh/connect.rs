//! One SSH connection per instance: Docker's API over it, reuse, redial, host keys, auth.

use bollard::container::LogOutput;
use bollard::models::ContainerCreateBody;
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, LogsOptions,
    RemoveContainerOptions, StartContainerOptions, WaitContainerOptions,
};
use drover_docker::ssh::SshError;
use drover_docker::testing::BUSYBOX_IMAGE;
use drover_docker::testing::sshd;
use futures_util::StreamExt;

use crate::support::{FakeInstance, address, connection, engine, manager_key, remote_docker};

#[tokio::test]
async fn bollard_over_ssh_lists_containers_and_runs_one_to_completion() {
    let Some(local) = engine().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = manager_key(dir.path());
    let instance = FakeInstance::start(&local, "drover-test-ssh-run", &address(10), &key).await;
    let conn = connection(&instance.address, key);
    let docker = remote_docker(&conn);

    docker.ping().await.expect("ping over ssh");
    // The engine behind the instance sees the instance's own container.
    let listed = docker
        .list_containers(Some(ListContainersOptions::default()))
        .await
        .expect("list over ssh");
    assert!(
        listed.iter().any(|c| c
            .names
            .iter()
            .flatten()
            .any(|n| n == "/drover-test-ssh-run")),
        "{listed:?}"
    );

    let name = "drover-test-ssh-job";
    let _ = docker
        .remove_container(
            name,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await;
    let body = ContainerCreateBody {
        image: Some(BUSYBOX_IMAGE.to_string()),
        cmd: Some(vec![
            "sh".into(),
            "-c".into(),
            "echo hello over ssh; echo oops >&2; exit 3".into(),
        ]),
        ..Default::default()
    };
    let options = CreateContainerOptions {
        name: Some(name.to_string()),
        ..Default::default()
    };
    docker
        .create_container(Some(options), body)
        .await
        .expect("create over ssh");
    docker
        .start_container(name, None::<StartContainerOptions>)
        .await
        .expect("start over ssh");
    // A non-zero exit is an error item of the wait stream; the code is read from inspect.
    let _ = docker
        .wait_container(name, None::<WaitContainerOptions>)
        .collect::<Vec<_>>()
        .await;
    let state = docker
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
        .expect("inspect over ssh")
        .state
        .expect("state");
    assert_eq!(state.exit_code, Some(3));
    let mut logs = docker.logs(
        name,
        Some(LogsOptions {
            stdout: true,
            stderr: true,
            ..Default::default()
        }),
    );
    let (mut out, mut err) = (String::new(), String::new());
    while let Some(item) = logs.next().await {
        match item.expect("logs over ssh") {
            LogOutput::StdOut { message } => out.push_str(&String::from_utf8_lossy(&message)),
            LogOutput::StdErr { message } => err.push_str(&String::from_utf8_lossy(&message)),
            _ => {}
        }
    }
    assert_eq!((out.as_str(), err.as_str()), ("hello over ssh\n", "oops\n"));
    docker
        .remove_container(name, None::<RemoveContainerOptions>)
        .await
        .expect("remove over ssh");
    // Every request above went over one SSH session.
    assert_eq!(conn.dials(), 1);
}

#[tokio::test]
async fn a_dropped_connection_is_dialled_again_with_the_same_host_key() {
    let Some(local) = engine().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = manager_key(dir.path());
    let instance =
        FakeInstance::start(&local, "drover-test-ssh-reconnect", &address(11), &key).await;
    let conn = connection(&instance.address, key);
    let docker = remote_docker(&conn);
    docker.ping().await.expect("first ping");
    let pinned = conn.host_key().expect("host key pinned on first use");

    // The instance's SSH server restarts: the session drops under the connection.
    sshd::restart_instance(&local, &instance.name, &instance.address)
        .await
        .expect("restart");
    docker.ping().await.expect("ping after the restart");
    assert_eq!(conn.dials(), 2, "one redial");
    assert_eq!(conn.host_key(), Some(pinned));
    docker.version().await.expect("and it stays up");
    assert_eq!(conn.dials(), 2);
}

#[tokio::test]
async fn a_changed_host_key_is_refused() {
    let Some(local) = engine().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = manager_key(dir.path());
    let name = "drover-test-ssh-hostkey";
    let instance = FakeInstance::start(&local, name, &address(12), &key).await;
    let conn = connection(&instance.address, key.clone());
    remote_docker(&conn).ping().await.expect("first ping");

    // Another machine answers on the same address: a new container makes new host keys.
    let _other = FakeInstance::start(&local, name, &address(12), &key).await;
    conn.close().await;
    let err = conn.docker_stream().await.err().expect("refused");
    assert!(matches!(err, SshError::HostKeyChanged { .. }), "{err}");
}

#[tokio::test]
async fn a_key_the_instance_does_not_know_is_refused() {
    let Some(local) = engine().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let key = manager_key(dir.path());
    let instance = FakeInstance::start(&local, "drover-test-ssh-auth", &address(13), &key).await;
    let stranger = tempfile::tempdir().unwrap();
    let conn = connection(&instance.address, manager_key(stranger.path()));
    let err = conn.docker_stream().await.err().expect("refused");
    assert!(matches!(err, SshError::AuthRefused { .. }), "{err}");
    assert!(err.to_string().contains("ec2-user"), "{err}");
}
