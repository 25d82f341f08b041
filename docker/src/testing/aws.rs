//! The offline AWS of the tests: moto (`pip install 'moto[server]'`) on a loopback port, an Auto
//! Scaling group set up as drover's README asks operators to, and a [`Reconciler`] that makes
//! each InService instance a real SSH server ([`super::sshd`]) on exactly its private address.
//!
//! The AWS calls of the test bed are Python (boto3 ships with moto, `aws_testbed.py`): the test
//! bed must not depend on the AWS code it tests, and boto3 is AWS's own reference client. The
//! Docker side is Rust, on the same bollard code as the rest of the test support.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use bollard::Docker;
use bollard::query_parameters::ListContainersOptions;
use serde::Deserialize;

use super::sshd::{self, INSTANCE_LABEL, INSTANCE_SSH_PORT};

const TESTBED: &str = include_str!("aws_testbed.py");
/// Label with the group a fake instance belongs to, so groups of different tests stay apart.
pub const GROUP_LABEL: &str = "drover-test.group";

#[derive(Debug, thiserror::Error)]
#[error("AWS test bed: {0}")]
pub struct TestbedError(String);

/// A moto server on a free loopback port; stopped when dropped.
pub struct Moto {
    child: Child,
    pub endpoint: String,
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Moto {
    /// Starts moto. Without `moto_server` on PATH: in CI (`CI` set) it panics; elsewhere it says
    /// so and returns `None`, so the test can return early.
    pub async fn start() -> Option<Moto> {
        let Some(program) = find("moto_server") else {
            let why = "moto_server is not installed (pip install 'moto[server]')";
            if std::env::var_os("CI").is_some() {
                panic!("the AWS tests need moto and CI is set: {why}");
            }
            eprintln!("SKIPPED: {why}; CI would fail here");
            return None;
        };
        // A port the kernel just handed out and nobody holds.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .unwrap_or_else(|e| panic!("no free loopback port: {e}"));
        let child = Command::new(program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting moto_server: {e}"));
        let moto = Moto {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        let address = format!("127.0.0.1:{port}");
        while tokio::net::TcpStream::connect(&address).await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "moto_server did not listen on {address} within 60 s"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        Some(moto)
    }
}

fn find(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
}

/// One instance of the group, as the test bed's boto3 sees it.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
pub struct Instance {
    pub id: String,
    /// The group's view: `InService`, `Pending`, `Terminating`, ...
    pub lifecycle: String,
    pub private_ip: Option<String>,
    /// EC2's view: `running`, `terminated`, ...
    pub state: Option<String>,
}

/// The group's settings, to check the set-up.
#[derive(Debug, Deserialize)]
pub struct GroupInfo {
    pub desired: u32,
    pub min: u32,
    pub max: u32,
    pub protected: bool,
    pub suspended: Vec<String>,
}

/// An Auto Scaling group in moto.
#[derive(Clone, Debug)]
pub struct TestGroup {
    pub endpoint: String,
    pub name: String,
}

impl TestGroup {
    /// Creates the group (idempotent): VPC 127.0.0.0/16, subnet 127.0.1.0/24, a launch
    /// template, min 0, `max_size`, new instances protected, AZRebalance suspended.
    pub fn setup(moto: &Moto, name: &str, max_size: u32) -> Result<TestGroup, TestbedError> {
        let group = TestGroup {
            endpoint: moto.endpoint.clone(),
            name: name.to_string(),
        };
        group.call(&["setup", name, &max_size.to_string()])?;
        Ok(group)
    }

    /// [`TestGroup::setup`] in another subnet of 127.0.0.0/16 (e.g. `127.0.3.0/24`), so two
    /// groups of one moto never hand out the same address.
    pub fn setup_in(
        moto: &Moto,
        name: &str,
        max_size: u32,
        subnet: &str,
    ) -> Result<TestGroup, TestbedError> {
        let group = TestGroup {
            endpoint: moto.endpoint.clone(),
            name: name.to_string(),
        };
        group.call(&["setup", name, &max_size.to_string(), subnet])?;
        Ok(group)
    }

    pub fn set_desired(&self, n: u32) -> Result<(), TestbedError> {
        self.call(&["set-desired", &self.name, &n.to_string()])
            .map(drop)
    }

    /// Terminates an instance and lowers the desired capacity, as drover's scale-in does.
    pub fn terminate(&self, id: &str) -> Result<(), TestbedError> {
        self.call(&["terminate", id]).map(drop)
    }

    pub fn instances(&self) -> Result<Vec<Instance>, TestbedError> {
        let out = self.call(&["instances", &self.name])?;
        serde_json::from_str(&out).map_err(|e| TestbedError(format!("{e}: {out}")))
    }

    pub fn info(&self) -> Result<GroupInfo, TestbedError> {
        let out = self.call(&["group", &self.name])?;
        serde_json::from_str(&out).map_err(|e| TestbedError(format!("{e}: {out}")))
    }

    fn call(&self, args: &[&str]) -> Result<String, TestbedError> {
        let out = Command::new("python3")
            .arg("-c")
            .arg(TESTBED)
            .arg(&self.endpoint)
            .args(args)
            .output()
            .map_err(|e| TestbedError(format!("running python3: {e}")))?;
        if !out.status.success() {
            return Err(TestbedError(format!(
                "{} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// Removes the fake instances of every group whose name starts with `prefix` (leftovers of an
/// earlier run that died before its clean-up would hold the addresses a new run needs).
pub async fn remove_groups(docker: &Docker, prefix: &str) -> Result<(), TestbedError> {
    let filters = HashMap::from([("label".to_string(), vec![GROUP_LABEL.to_string()])]);
    let options = ListContainersOptions {
        all: true,
        filters: Some(filters),
        ..Default::default()
    };
    let list = docker
        .list_containers(Some(options))
        .await
        .map_err(|e| TestbedError(e.to_string()))?;
    for c in list {
        let ours = c
            .labels
            .as_ref()
            .and_then(|l| l.get(GROUP_LABEL))
            .is_some_and(|g| g.starts_with(prefix));
        if let (true, Some(id)) = (ours, c.id) {
            sshd::remove_instance(docker, &id)
                .await
                .map_err(|e| TestbedError(e.to_string()))?;
        }
    }
    Ok(())
}

/// A reconciler running in the background; stopped when dropped.
pub struct Background(tokio::task::JoinHandle<()>);

impl Drop for Background {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Makes the group's instances real: an SSH container per InService instance on
/// `<private ip>:INSTANCE_SSH_PORT`, none for the others.
pub struct Reconciler {
    pub docker: Docker,
    pub group: TestGroup,
    /// The `authorized_keys` line every instance accepts (the one the image's user has).
    pub authorized_key: String,
}

impl Reconciler {
    /// The container name of an instance.
    pub fn container(&self, id: &str) -> String {
        format!("drover-test-{}-{id}", self.group.name)
    }

    /// One pass: start what is missing, remove what is gone. Returns the live instances with
    /// their SSH addresses.
    pub async fn reconcile(&self) -> Result<BTreeMap<String, String>, TestbedError> {
        let mut live = BTreeMap::new();
        for i in self.group.instances()? {
            if i.lifecycle != "InService" {
                continue;
            }
            let Some(ip) = &i.private_ip else {
                continue;
            };
            let address = format!("{ip}:{INSTANCE_SSH_PORT}");
            let labels = [
                (INSTANCE_LABEL, i.id.as_str()),
                (GROUP_LABEL, self.group.name.as_str()),
            ];
            sshd::start_instance(
                &self.docker,
                &self.container(&i.id),
                &labels,
                &address,
                &self.authorized_key,
            )
            .await
            .map_err(|e| TestbedError(e.to_string()))?;
            live.insert(i.id, address);
        }
        for (container, instance) in self.containers().await? {
            if !live.contains_key(&instance) {
                sshd::remove_instance(&self.docker, &container)
                    .await
                    .map_err(|e| TestbedError(e.to_string()))?;
            }
        }
        Ok(live)
    }

    /// This group's fake instance containers: name → instance id.
    pub async fn containers(&self) -> Result<BTreeMap<String, String>, TestbedError> {
        let filters = HashMap::from([(
            "label".to_string(),
            vec![format!("{GROUP_LABEL}={}", self.group.name)],
        )]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filters),
            ..Default::default()
        };
        let list = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| TestbedError(e.to_string()))?;
        let mut out = BTreeMap::new();
        for c in list {
            let name = c
                .names
                .and_then(|n| n.first().cloned())
                .map(|n| n.trim_start_matches('/').to_string());
            let instance = c.labels.and_then(|l| l.get(INSTANCE_LABEL).cloned());
            if let (Some(name), Some(instance)) = (name, instance) {
                out.insert(name, instance);
            }
        }
        Ok(out)
    }

    /// Reconciles over and over until the handle is dropped: the group's instances boot (get
    /// their SSH server) as soon as the group has them, and lose it once terminated, while the
    /// code under test runs. A failed pass is reported and the next one tries again.
    pub fn run_in_background(self: &Arc<Self>) -> Background {
        let me = self.clone();
        Background(tokio::spawn(async move {
            loop {
                if let Err(e) = me.reconcile().await {
                    eprintln!("reconciler of {}: {e}", me.group.name);
                }
                // The fake cloud's own pace, not a test's synchronisation.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }))
    }

    /// Removes every container of this group (test clean-up).
    pub async fn remove_all(&self) -> Result<(), TestbedError> {
        let names: BTreeSet<String> = self.containers().await?.into_keys().collect();
        for name in names {
            sshd::remove_instance(&self.docker, &name)
                .await
                .map_err(|e| TestbedError(e.to_string()))?;
        }
        Ok(())
    }
}
