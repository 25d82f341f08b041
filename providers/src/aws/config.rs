//! What an [`super::AwsProvider`] is told: the group and AWS access from
//! `[runners.autoscaler.plugin_config]`, how to reach instances from
//! `[runners.autoscaler.connector_config]`, and the autoscaler's own keys it acts on.

use std::path::PathBuf;
use std::time::Duration;

use super::AwsTarget;

/// GitLab's connector user on Linux instances.
pub const DEFAULT_USERNAME: &str = "ec2-user";
/// How long an instance may take from the capacity raise until it is ready for jobs (in service,
/// SSH up, `instance_ready_command` passed): GitLab's `instance_acquire_timeout` default.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(15 * 60);
/// The SSH dial timeout when `connector_config.timeout` is unset.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// `[runners.autoscaler.connector_config]`: how drover reaches an instance.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConnectorConfig {
    /// The SSH user; `None`: `ec2-user`.
    pub username: Option<String>,
    /// An operator's private key. With `use_static_credentials` it must already be on the
    /// instances; without, its public half is pushed through EC2 Instance Connect. `None`: the
    /// manager's own ed25519 key in the state directory, pushed before each dial.
    pub key_path: Option<PathBuf>,
    /// Push no key: the instances already accept `key_path`'s key.
    pub use_static_credentials: bool,
    /// Dial the public address instead of the private one (when the instance has one).
    pub use_external_addr: bool,
    /// `ssh` (the default); `winrm` is refused: drover reaches instances over SSH only.
    pub protocol: Option<String>,
    /// The SSH port; `None`: 22.
    pub protocol_port: Option<u16>,
    /// Bound on one SSH dial; `None`: 30 s.
    pub timeout: Option<Duration>,
    /// SSH keepalive interval; `None`: drover's default (30 s).
    pub keepalive: Option<Duration>,
}

/// One AWS provider: one Auto Scaling group, dedicated to this manager and runner.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsProviderConfig {
    /// The group (`plugin_config.name`) and AWS access (`profile`, `config_file`,
    /// `credentials_file`; region and credentials otherwise from the usual chain).
    pub target: AwsTarget,
    pub connector: ConnectorConfig,
    /// Run over SSH once an instance is in service, retried until it succeeds or
    /// `ready_timeout` passes.
    pub instance_ready_command: Option<String>,
    /// See [`DEFAULT_READY_TIMEOUT`].
    pub ready_timeout: Duration,
    /// Terminate this manager's instances at [`crate::MachineProvider::shutdown`]; otherwise they
    /// stay, bound to their names in `state_dir`, and the next start adopts them.
    pub delete_instances_on_shutdown: bool,
    /// Where the provider keeps its name ↔ instance bindings and the manager's SSH key: the
    /// daemon's state directory (or a directory of its own inside it).
    pub state_dir: PathBuf,
}

impl Default for AwsProviderConfig {
    fn default() -> AwsProviderConfig {
        AwsProviderConfig {
            target: AwsTarget::default(),
            connector: ConnectorConfig::default(),
            instance_ready_command: None,
            ready_timeout: DEFAULT_READY_TIMEOUT,
            delete_instances_on_shutdown: false,
            state_dir: PathBuf::new(),
        }
    }
}

impl ConnectorConfig {
    pub(super) fn username(&self) -> &str {
        self.username.as_deref().unwrap_or(DEFAULT_USERNAME)
    }

    pub(super) fn port(&self) -> u16 {
        self.protocol_port.unwrap_or(22)
    }

    pub(super) fn dial_timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT)
    }

    /// Refuses settings drover cannot honour, naming the key to fix.
    pub(super) fn check(&self) -> Result<(), String> {
        match self.protocol.as_deref() {
            None | Some("ssh") => {}
            Some(other) => {
                return Err(format!(
                    "connector_config.protocol = {other:?}: drover reaches instances over SSH \
                     only; set protocol = \"ssh\""
                ));
            }
        }
        if self.use_static_credentials && self.key_path.is_none() {
            return Err(
                "connector_config.use_static_credentials needs connector_config.key_path, the \
                 private key the instances already accept"
                    .into(),
            );
        }
        Ok(())
    }
}
