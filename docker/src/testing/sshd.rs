//! Fake cloud instances for the SSH tests: containers of `drover-test/sshd:1` (busybox, Debian's
//! `dropbear-bin` and the host's `docker` CLI, with the shared libraries `ldd` lists), each an
//! SSH server on one loopback address of the host network with the host's Docker socket mounted.
//! An instance's Docker engine is reached as on EC2: SSH, then `docker system dial-stdio`.
//!
//! Like the other test images it is built from host files (no registry) and deterministic.
//! [`start_instance`] is idempotent: the same name and address give the same running container.

use std::collections::HashMap;
use std::path::Path;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, RemoveContainerOptions,
    RestartContainerOptions, StartContainerOptions,
};
use tokio::sync::OnceCell;

use super::{Tarball, TestImageError, archive_of, fail, find_program, load, run, shared_libraries};

/// The SSH server image.
pub const SSHD_IMAGE: &str = "drover-test/sshd:1";
/// The user drover signs in as on an instance (uid 0 here, so it can use the Docker socket).
pub const INSTANCE_USER: &str = "ec2-user";
/// Label on every fake instance container, with the instance's id.
pub const INSTANCE_LABEL: &str = "drover-test.instance";
/// The SSH port of fake instances: not 22, so that a host sshd cannot be in the way.
pub const INSTANCE_SSH_PORT: u16 = 2222;

static IMAGE: OnceCell<Result<(), TestImageError>> = OnceCell::const_new();

/// Builds the image unless the engine has it.
pub async fn ensure_sshd_image(docker: &Docker) -> Result<(), TestImageError> {
    IMAGE
        .get_or_init(|| async {
            if docker.inspect_image(SSHD_IMAGE).await.is_ok() {
                return Ok(());
            }
            let archive = tokio::task::spawn_blocking(sshd_archive)
                .await
                .map_err(|e| fail(e.to_string()))??;
            load(docker, SSHD_IMAGE, archive).await
        })
        .await
        .clone()
}

/// What runs in the container: the authorized key from the environment, then dropbear in the
/// foreground on `$LISTEN`, host keys made on first use (`-R`) and kept in the container.
const START: &str = "#!/bin/sh\nset -e\n\
for home in /root /home/ec2-user; do\n\
  mkdir -p $home/.ssh && chmod 700 $home/.ssh\n\
  printf '%s\\n' \"$AUTHORIZED_KEY\" > $home/.ssh/authorized_keys\n\
  chmod 600 $home/.ssh/authorized_keys\n\
done\n\
mkdir -p /etc/dropbear\n\
exec /usr/sbin/dropbear -F -E -R -s -p \"$LISTEN\"\n";

fn sshd_archive() -> Result<Vec<u8>, TestImageError> {
    let mut fs = Tarball::default();
    fs.dir("tmp", 0o1777)?;
    fs.dir("root", 0o700)?;
    fs.dir("home/ec2-user", 0o755)?;
    fs.dir("var/run", 0o755)?;
    let busybox = find_program("busybox")?;
    fs.file(&busybox, "bin/busybox")?;
    for applet in run(&busybox, &["--list"])?.lines() {
        if !applet.is_empty() && applet != "busybox" {
            fs.link(&format!("bin/{applet}"), "busybox")?;
        }
    }
    let dropbear = Path::new("/usr/sbin/dropbear");
    if !dropbear.is_file() {
        return Err(fail(
            "dropbear is not installed on this host (apt-get install dropbear-bin)",
        ));
    }
    let docker = find_program("docker")?;
    fs.file(dropbear, "usr/sbin/dropbear")?;
    fs.file(&docker, "usr/bin/docker")?;
    for program in [dropbear, docker.as_path()] {
        let ldd = run(Path::new("ldd"), &[&program.display().to_string()])?;
        for library in shared_libraries(&ldd) {
            fs.file(Path::new(&library), library.trim_start_matches('/'))?;
        }
    }
    fs.data(
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\nec2-user:x:0:0:EC2 user:/home/ec2-user:/bin/sh\n",
        0o644,
    )?;
    fs.data("etc/group", b"root:x:0:\n", 0o644)?;
    fs.data("etc/shells", b"/bin/sh\n", 0o644)?;
    fs.data("start.sh", START.as_bytes(), 0o755)?;
    let layer = fs.finish()?;
    let config = serde_json::json!({
        "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
        "Entrypoint": ["/start.sh"],
    });
    archive_of(SSHD_IMAGE, layer, config)
}

/// Why a fake instance could not be started or removed.
#[derive(Debug, thiserror::Error)]
#[error("fake instance {name}: {reason}")]
pub struct InstanceError {
    pub name: String,
    pub reason: String,
}

/// Starts (or keeps) the container `name`: an SSH server on `address` (`ip:port`, host network)
/// that lets in `authorized_key`, with the host's Docker socket, carrying `labels`.
pub async fn start_instance(
    docker: &Docker,
    name: &str,
    labels: &[(&str, &str)],
    address: &str,
    authorized_key: &str,
) -> Result<(), InstanceError> {
    let err = |reason: String| InstanceError {
        name: name.to_string(),
        reason,
    };
    ensure_sshd_image(docker)
        .await
        .map_err(|e| err(e.to_string()))?;
    let env = vec![
        format!("LISTEN={address}"),
        format!("AUTHORIZED_KEY={authorized_key}"),
    ];
    match docker
        .inspect_container(name, None::<InspectContainerOptions>)
        .await
    {
        Ok(existing) => {
            let same = existing
                .config
                .as_ref()
                .and_then(|c| c.env.as_ref())
                .is_some_and(|e| env.iter().all(|v| e.contains(v)));
            if !same {
                remove_instance(docker, name).await?;
                return Box::pin(start_instance(
                    docker,
                    name,
                    labels,
                    address,
                    authorized_key,
                ))
                .await;
            }
            if existing.state.and_then(|s| s.running) == Some(true) {
                return wait_listening(address).await.map_err(err);
            }
        }
        Err(_) => {
            let body = ContainerCreateBody {
                image: Some(SSHD_IMAGE.to_string()),
                env: Some(env),
                labels: Some(
                    labels
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect::<HashMap<_, _>>(),
                ),
                host_config: Some(HostConfig {
                    network_mode: Some("host".into()),
                    binds: Some(vec!["/var/run/docker.sock:/var/run/docker.sock".into()]),
                    ..Default::default()
                }),
                ..Default::default()
            };
            let options = CreateContainerOptions {
                name: Some(name.to_string()),
                ..Default::default()
            };
            docker
                .create_container(Some(options), body)
                .await
                .map_err(|e| err(e.to_string()))?;
        }
    }
    docker
        .start_container(name, None::<StartContainerOptions>)
        .await
        .map_err(|e| err(e.to_string()))?;
    wait_listening(address).await.map_err(err)
}

/// Restarts the container, as an instance reboot would: its SSH sessions drop.
pub async fn restart_instance(
    docker: &Docker,
    name: &str,
    address: &str,
) -> Result<(), InstanceError> {
    let err = |reason: String| InstanceError {
        name: name.to_string(),
        reason,
    };
    docker
        .restart_container(
            name,
            Some(RestartContainerOptions {
                t: Some(0),
                ..Default::default()
            }),
        )
        .await
        .map_err(|e| err(e.to_string()))?;
    wait_listening(address).await.map_err(err)
}

/// Removes the container; gone already, or being removed, is fine.
pub async fn remove_instance(docker: &Docker, name: &str) -> Result<(), InstanceError> {
    let options = RemoveContainerOptions {
        force: true,
        ..Default::default()
    };
    match docker.remove_container(name, Some(options)).await {
        Ok(()) => Ok(()),
        // Gone already, or going (another pass of a reconciler removes it).
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404 | 409,
            ..
        }) => Ok(()),
        Err(e) => Err(InstanceError {
            name: name.to_string(),
            reason: e.to_string(),
        }),
    }
}

/// Waits until something accepts TCP connections on `address`: dropbear binds after start.
/// Polls the socket itself (no fixed sleep), bounded at 30 s.
async fn wait_listening(address: &str) -> Result<(), String> {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match tokio::net::TcpStream::connect(address).await {
            Ok(_) => return Ok(()),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(format!("nothing listens on {address} after 30 s: {e}"));
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}
