//! The validated `[runners.autoscaler]` of a `docker-autoscaler` runner: what the AWS provider,
//! the SSH connector and the core's slot policy read. Defaults are GitLab Runner's. A leaf: the
//! runner's other settings ([`crate::config::settings::RunnerSettings`]) hold these, not the
//! other way round.

use std::fmt;
use std::time::Duration;

use drover_gitlab::Secret;

/// `[runners.autoscaler]`.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoscalerSettings {
    /// `plugin` as written (`aws:latest`, `fleeting-plugin-aws`, ...); it always selects
    /// drover's own AWS provider.
    pub plugin: String,
    /// Jobs one instance runs at once (default 1).
    pub capacity_per_instance: u32,
    /// Jobs before an instance is retired; 0 = unlimited.
    pub max_use_count: u32,
    /// Instances in every state (pending, running, deleting); 0 = unlimited.
    pub max_instances: u32,
    /// Run on each new instance before its first job; failure removes the instance.
    pub instance_ready_command: Option<String>,
    pub delete_instances_on_shutdown: bool,
    /// GitLab Runner's `reservation_throttling` (default true).
    pub reservation_throttling: bool,
    pub intervals: Intervals,
    pub scale_throttle: ScaleThrottle,
    /// The Auto Scaling group and where its credentials come from.
    pub aws: AwsGroup,
    pub connector: ConnectorSettings,
    /// `[[…policy]]` in file order; the last one matching wins. Never empty: without any,
    /// GitLab Runner's default policy (always, no idle slots).
    pub policies: Vec<AutoscalerPolicy>,
}

/// The interval keys, with GitLab Runner's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Intervals {
    /// `instance_acquire_timeout`, default 15 min.
    pub instance_acquire_timeout: Duration,
    /// `update_interval`, default 1 min.
    pub update_interval: Duration,
    /// `update_interval_when_expecting`, default 2 s.
    pub update_interval_when_expecting: Duration,
    /// `deletion_retry_interval`, default 1 min.
    pub deletion_retry_interval: Duration,
    /// `shutdown_deletion_interval`, default 10 s.
    pub shutdown_deletion_interval: Duration,
    /// `shutdown_deletion_retries`, default 3.
    pub shutdown_deletion_retries: u32,
    /// `failure_threshold`: consecutive health failures before removal, default 3.
    pub failure_threshold: u32,
}

impl Default for Intervals {
    fn default() -> Intervals {
        Intervals {
            instance_acquire_timeout: Duration::from_secs(15 * 60),
            update_interval: Duration::from_secs(60),
            update_interval_when_expecting: Duration::from_secs(2),
            deletion_retry_interval: Duration::from_secs(60),
            shutdown_deletion_interval: Duration::from_secs(10),
            shutdown_deletion_retries: 3,
            failure_threshold: 3,
        }
    }
}

/// `[…scale_throttle]`: a token bucket for instance creation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScaleThrottle {
    /// Instances per second; `None` = no limit (`limit = -1`). `limit = 0` means 100.
    pub per_second: Option<u32>,
    /// Bucket size: `burst`, else `max_instances`, else the limit.
    pub burst: u32,
}

/// `[…plugin_config]` of the AWS plugin.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsGroup {
    /// The Auto Scaling group's name (`name`).
    pub group: String,
    pub profile: Option<String>,
    pub config_file: Option<String>,
    pub credentials_file: Option<String>,
}

/// `[…connector_config]`: how drover reaches an instance's Docker engine over SSH.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectorSettings {
    /// `username`; `None`: the instance's default user (`ec2-user` on Amazon Linux).
    pub username: Option<String>,
    /// `password`: unused by the SSH key connector, kept masked.
    pub password: Option<Secret>,
    /// `protocol_port`, default 22.
    pub port: u16,
    /// `key_path`: a static private key instead of drover's generated one.
    pub key_path: Option<String>,
    /// `use_static_credentials`: the key is already on the instance; no Instance Connect push.
    pub use_static_credentials: bool,
    /// `keepalive`; `None`: GitLab Runner's default (the SSH library's).
    pub keepalive: Option<Duration>,
    /// `timeout` of a dial; `None`: the default.
    pub timeout: Option<Duration>,
    /// `use_external_addr`: dial the public address instead of the private one.
    pub use_external_addr: bool,
    /// `arch`, when given (`amd64`, `arm64`).
    pub arch: Option<String>,
}

impl fmt::Debug for ConnectorSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectorSettings")
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("port", &self.port)
            .field("key_path", &self.key_path)
            .field("use_static_credentials", &self.use_static_credentials)
            .field("keepalive", &self.keepalive)
            .field("timeout", &self.timeout)
            .field("use_external_addr", &self.use_external_addr)
            .field("arch", &self.arch)
            .finish()
    }
}

/// One `[[…policy]]`: the idle target in **job slots** while its periods match.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoscalerPolicy {
    /// 5-field cron expressions (minute hour day-of-month month day-of-week); default `* * * * *`.
    pub periods: Vec<String>,
    /// IANA zone name (`Local` resolved).
    pub timezone: String,
    /// Idle job slots to keep.
    pub idle_count: u32,
    /// How long a surplus idle instance is kept.
    pub idle_time: Duration,
    /// Idle slots per slot in use, on top of `idle_count`.
    pub scale_factor: f64,
    /// Cap on the idle slots `scale_factor` adds; 0 = none.
    pub scale_factor_limit: u32,
    /// Default `idle_count > 0`: only ask for jobs when a slot is free.
    pub preemptive_mode: bool,
}
