//! The offline cloud of the provider tests: moto, a group in it, and a reconciler that makes each
//! in-service instance a real SSH server (dropbear, the host's Docker behind it) on exactly its
//! private address. Tests that start instances run one at a time: two motos hand out the same
//! addresses.

use std::sync::Arc;
use std::time::Duration;

use drover_docker::ssh::keys;
use drover_docker::testing::aws::{Background, Moto, Reconciler, TestGroup, remove_groups};
use drover_docker::testing::sshd::{self, INSTANCE_SSH_PORT};
use drover_providers::aws::{AwsProvider, AwsProviderConfig, AwsTarget, ConnectorConfig};
use drover_providers::{MachineProvider, NameLocks};
use tokio::sync::{Mutex, MutexGuard};

static ONE_AT_A_TIME: Mutex<()> = Mutex::const_new(());

/// The prefix of every group these tests make.
pub const GROUPS: &str = "drover-prov-";

/// One group with live instances.
pub struct Bed {
    pub reconciler: Arc<Reconciler>,
    _background: Background,
}

/// moto and what runs on it; the groups' containers are removed when dropped.
pub struct Cloud {
    pub moto: Moto,
    pub beds: Vec<Arc<Reconciler>>,
    _serial: MutexGuard<'static, ()>,
}

impl Cloud {
    /// moto, or `None` outside CI when moto or Docker is missing (CI fails instead).
    pub async fn start() -> Option<Cloud> {
        let serial = ONE_AT_A_TIME.lock().await;
        let docker = drover_docker::testing::engine_for_tests().await?;
        if let Err(e) = sshd::ensure_sshd_image(&docker).await {
            panic!("{e}");
        }
        remove_groups(&docker, GROUPS)
            .await
            .expect("remove leftover fake instances");
        let moto = Moto::start().await?;
        Some(Cloud {
            moto,
            beds: Vec::new(),
            _serial: serial,
        })
    }

    /// A group `drover-prov-<name>` in `subnet`, whose instances accept the manager key of `state_dir`.
    pub async fn group(
        &mut self,
        name: &str,
        max_size: u32,
        subnet: &str,
        state_dir: &std::path::Path,
    ) -> Bed {
        let docker = drover_docker::testing::engine_for_tests()
            .await
            .expect("a Docker engine");
        let name = format!("{GROUPS}{name}");
        let group = TestGroup::setup_in(&self.moto, &name, max_size, subnet).expect("the group");
        let key = keys::manager_key(state_dir).expect("the manager key");
        let reconciler = Arc::new(Reconciler {
            docker,
            group,
            authorized_key: keys::authorized_key(&key),
        });
        reconciler.remove_all().await.expect("a clean slate");
        self.beds.push(reconciler.clone());
        Bed {
            _background: reconciler.run_in_background(),
            reconciler,
        }
    }

    /// A provider's settings for `drover-prov-<group>`, state in `state_dir`, dialling the fake
    /// instances' port.
    pub fn config(&self, group: &str, state_dir: &std::path::Path) -> AwsProviderConfig {
        AwsProviderConfig {
            target: AwsTarget {
                group: format!("{GROUPS}{group}"),
                region: Some("us-east-1".into()),
                endpoint_url: Some(self.moto.endpoint.clone()),
                static_keys: Some(("testing".into(), "testing".into())),
                ..Default::default()
            },
            connector: ConnectorConfig {
                protocol_port: Some(INSTANCE_SSH_PORT),
                timeout: Some(Duration::from_secs(10)),
                ..Default::default()
            },
            ready_timeout: Duration::from_secs(60),
            state_dir: state_dir.to_path_buf(),
            ..Default::default()
        }
    }

    /// Removes every fake instance of the groups (the end of a test).
    pub async fn clean_up(&self) {
        for bed in &self.beds {
            bed.remove_all().await.expect("remove the fake instances");
        }
    }
}

/// A test that fails leaves no instance container behind either.
impl Drop for Cloud {
    fn drop(&mut self) {
        if self.beds.is_empty() {
            return;
        }
        // Dropped inside the test's runtime, possibly while panicking: clean up on a thread and
        // an engine connection of its own.
        let _ = std::thread::spawn(|| {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(async {
                    if let Ok(docker) = drover_docker::EngineConfig::local().connect().await {
                        let _ = remove_groups(&docker, GROUPS).await;
                    }
                });
            }
        })
        .join();
    }
}

pub async fn provider(config: &AwsProviderConfig) -> AwsProvider {
    AwsProvider::new(config.clone(), NameLocks::new())
        .await
        .unwrap_or_else(|e| panic!("the provider: {e}"))
}

/// The instance ids of the group that are not terminated.
pub fn live_instances(bed: &Bed) -> Vec<String> {
    bed.reconciler
        .group
        .instances()
        .expect("instances")
        .into_iter()
        .filter(|i| {
            i.state.as_deref() != Some("terminated") && !i.lifecycle.starts_with("Terminat")
        })
        .map(|i| i.id)
        .collect()
}

/// Docker answers through the endpoint's engine (the `ssh://` address of the instance).
pub async fn ping(provider: &dyn MachineProvider, name: &str) -> String {
    let endpoint = provider
        .endpoint(name)
        .await
        .unwrap_or_else(|e| panic!("endpoint of {name}: {e}"));
    let host = endpoint.engine.host.clone().expect("an ssh:// engine");
    assert!(host.starts_with("ssh://ec2-user@127."), "{host}");
    let docker = endpoint
        .engine
        .connect()
        .await
        .unwrap_or_else(|e| panic!("Docker over SSH for {name}: {e}"));
    docker.ping().await.expect("ping over SSH");
    host
}
