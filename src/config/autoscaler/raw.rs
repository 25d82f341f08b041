//! The raw layer of `[runners.autoscaler]`: GitLab Runner's key names, types only.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;

use super::super::values::Count;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [runners.autoscaler] table")]
pub struct RawAutoscaler {
    pub plugin: Option<Spanned<String>>,
    pub capacity_per_instance: Option<Spanned<Count>>,
    pub max_use_count: Option<Count>,
    pub max_instances: Option<Count>,
    pub instance_ready_command: Option<String>,
    #[serde(default)]
    pub delete_instances_on_shutdown: bool,
    pub reservation_throttling: Option<bool>,
    pub instance_acquire_timeout: Option<Spanned<RawDuration>>,
    pub update_interval: Option<Spanned<RawDuration>>,
    pub update_interval_when_expecting: Option<Spanned<RawDuration>>,
    pub deletion_retry_interval: Option<Spanned<RawDuration>>,
    pub shutdown_deletion_interval: Option<Spanned<RawDuration>>,
    pub shutdown_deletion_retries: Option<Count>,
    pub failure_threshold: Option<Count>,
    pub scale_throttle: Option<Spanned<RawScaleThrottle>>,
    pub state_storage: Option<Spanned<RawStateStorage>>,
    pub plugin_config: Option<Spanned<RawPluginConfig>>,
    pub connector_config: Option<RawConnector>,
    #[serde(default)]
    pub policy: Vec<Spanned<RawPolicy>>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a [runners.autoscaler.scale_throttle] table"
)]
pub struct RawScaleThrottle {
    pub limit: Option<Spanned<i64>>,
    pub burst: Option<Count>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a [runners.autoscaler.state_storage] table"
)]
/// Checked for its types only: drover always journals.
pub struct RawStateStorage {
    #[serde(rename = "enabled")]
    pub _enabled: Option<bool>,
    #[serde(rename = "dir")]
    pub _dir: Option<String>,
    #[serde(rename = "keep_instance_with_acquisitions")]
    pub _keep_instance_with_acquisitions: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a [runners.autoscaler.plugin_config] table"
)]
pub struct RawPluginConfig {
    pub name: Option<Spanned<String>>,
    pub profile: Option<String>,
    pub config_file: Option<String>,
    pub credentials_file: Option<String>,
}

/// `[runners.autoscaler.connector_config]`. Not `Debug`: it may hold a password.
#[derive(Default, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a [runners.autoscaler.connector_config] table"
)]
pub struct RawConnector {
    pub os: Option<Spanned<String>>,
    pub arch: Option<Spanned<String>>,
    pub protocol: Option<Spanned<String>>,
    pub protocol_port: Option<Spanned<Count>>,
    pub username: Option<String>,
    pub password: Option<String>,
    pub key_path: Option<Spanned<String>>,
    #[serde(default)]
    pub use_static_credentials: bool,
    pub keepalive: Option<Spanned<RawDuration>>,
    pub timeout: Option<Spanned<RawDuration>>,
    #[serde(default)]
    pub use_external_addr: bool,
}

impl fmt::Debug for RawConnector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawConnector")
            .field("protocol", &self.protocol)
            .field("username", &self.username)
            .field("key_path", &self.key_path)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a [[runners.autoscaler.policy]] table"
)]
pub struct RawPolicy {
    #[serde(default)]
    pub periods: Vec<Spanned<String>>,
    pub timezone: Option<Spanned<String>>,
    pub idle_count: Option<Count>,
    pub idle_time: Option<Spanned<RawDuration>>,
    pub scale_factor: Option<Spanned<f64>>,
    pub scale_factor_limit: Option<Count>,
    pub preemptive_mode: Option<bool>,
}

/// A Go `time.Duration` as GitLab Runner's TOML library reads it: a string such as `"1m30s"`, or
/// an integer number of nanoseconds. Parsed later, where errors can point at it.
#[derive(Clone, Debug, PartialEq)]
pub enum RawDuration {
    Text(String),
    Nanos(i64),
}

impl<'de> Deserialize<'de> for RawDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<RawDuration, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RawDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"1m\" or \"20m0s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDuration, E> {
                Ok(RawDuration::Text(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RawDuration, E> {
                Ok(RawDuration::Nanos(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RawDuration, E> {
                Ok(RawDuration::Nanos(i64::try_from(v).unwrap_or(i64::MAX)))
            }
        }
        d.deserialize_any(V)
    }
}
