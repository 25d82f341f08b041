//! Fake instances and connections for the SSH tests.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bollard::Docker;
use drover_docker::ssh::PrivateKey;
use drover_docker::ssh::keys;
use drover_docker::ssh::{DockerTunnel, HostKeyPolicy, SshConnection, SshTarget, docker_over_ssh};
use drover_docker::testing::sshd::{self, INSTANCE_SSH_PORT, INSTANCE_USER};

/// The local engine with the test images, or `None` (outside CI) when there is none.
pub async fn engine() -> Option<Docker> {
    let docker = drover_docker::testing::engine_for_tests().await?;
    if let Err(e) = sshd::ensure_sshd_image(&docker).await {
        panic!("{e}");
    }
    Some(docker)
}

/// A fresh manager key, as the daemon makes one in its state directory.
pub fn manager_key(dir: &Path) -> Arc<PrivateKey> {
    Arc::new(keys::manager_key(dir).expect("manager key"))
}

/// `127.0.2.<n>:2222`: each test its own address (127.0.1.0/24 belongs to the moto subnet).
pub fn address(n: u8) -> String {
    format!("127.0.2.{n}:{INSTANCE_SSH_PORT}")
}

/// A fake instance `name` on `address` that accepts `key`; removed again when dropped.
pub struct FakeInstance {
    pub docker: Docker,
    pub name: String,
    pub address: String,
}

impl FakeInstance {
    pub async fn start(docker: &Docker, name: &str, address: &str, key: &PrivateKey) -> Self {
        sshd::remove_instance(docker, name)
            .await
            .expect("clean slate");
        sshd::start_instance(
            docker,
            name,
            &[(sshd::INSTANCE_LABEL, name)],
            address,
            &keys::authorized_key(key),
        )
        .await
        .expect("start the fake instance");
        FakeInstance {
            docker: docker.clone(),
            name: name.to_string(),
            address: address.to_string(),
        }
    }
}

impl Drop for FakeInstance {
    fn drop(&mut self) {
        // Best effort, on a runtime of its own: the test's runtime may be shutting down.
        let (docker, name) = (self.docker.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                let _ = rt.block_on(sshd::remove_instance(&docker, &name));
            }
        })
        .join();
    }
}

/// A connection as the docker-autoscaler executor makes one: dial-stdio, first host key trusted.
pub fn connection(address: &str, key: Arc<PrivateKey>) -> Arc<SshConnection> {
    Arc::new(SshConnection::new(SshTarget {
        address: address.to_string(),
        username: INSTANCE_USER.to_string(),
        key,
        tunnel: DockerTunnel::DialStdio,
        host_key: HostKeyPolicy::TrustFirstUse,
        keepalive: Some(Duration::from_secs(30)),
        timeout: Duration::from_secs(20),
    }))
}

pub fn remote_docker(connection: &Arc<SshConnection>) -> Docker {
    docker_over_ssh(connection.clone(), 120).expect("bollard over ssh")
}
