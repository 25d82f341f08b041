//! The raw layer: `config.toml` as written, with GitLab Runner's key names and no validation beyond
//! types. Values checked later keep their span (`Spanned`) so that errors can point at them.
//!
//! Each struct denies unknown fields: the schema walk has already removed every key drover accepts
//! without reading, so an unknown field here means the schema and this layer disagree.

use std::fmt;

use serde::Deserialize;
use toml::Spanned;
use toml::value::Datetime;

pub use super::values::{Count, Count64, OneOrMany, StrictFloat};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a config.toml document")]
pub struct RawConfig {
    pub concurrent: Option<Spanned<Count>>,
    pub check_interval: Option<Count>,
    pub shutdown_timeout: Option<Count>,
    pub log_level: Option<Spanned<String>>,
    pub log_format: Option<Spanned<String>>,
    pub listen_address: Option<Spanned<String>>,
    #[serde(default)]
    pub runners: Vec<Spanned<RawRunner>>,
    pub machine: Option<RawGlobalMachine>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [machine] table")]
pub struct RawGlobalMachine {
    pub shutdown_drain: Option<RawShutdownDrain>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [machine.shutdown_drain] table")]
pub struct RawShutdownDrain {
    #[serde(default)]
    pub enabled: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[runners]] table")]
pub struct RawRunner {
    pub name: Option<Spanned<String>>,
    pub url: Option<Spanned<String>>,
    pub token: Option<String>,
    /// Written by `drover register` as GitLab Runner does; checked for their type, not used.
    #[serde(rename = "id")]
    pub _id: Option<Count64>,
    #[serde(rename = "token_obtained_at")]
    pub _token_obtained_at: Option<Datetime>,
    #[serde(rename = "token_expires_at")]
    pub _token_expires_at: Option<Datetime>,
    #[serde(rename = "tls-ca-file")]
    pub tls_ca_file: Option<String>,
    pub executor: Option<Spanned<String>>,
    pub limit: Option<Count>,
    pub output_limit: Option<Count>,
    pub request_concurrency: Option<Count>,
    #[serde(default)]
    pub environment: Vec<Spanned<String>>,
    pub builds_dir: Option<String>,
    pub pre_build_script: Option<String>,
    pub post_build_script: Option<String>,
    pub cache_dir: Option<Spanned<String>>,
    pub docker: Option<RawDocker>,
    pub cache: Option<Spanned<RawCache>>,
    pub machine: Option<Spanned<RawMachine>>,
    pub autoscaler: Option<Spanned<super::autoscaler::raw::RawAutoscaler>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [runners.machine] table")]
#[allow(non_snake_case)] // GitLab's key names, verbatim
pub struct RawMachine {
    pub IdleCount: Option<Count>,
    pub IdleCountMin: Option<Count>,
    pub IdleScaleFactor: Option<Spanned<StrictFloat>>,
    pub IdleTime: Option<Count>,
    pub MaxBuilds: Option<Count>,
    pub MaxGrowthRate: Option<Count>,
    pub MaxRemovalAttempts: Option<Count>,
    pub MachineDriver: Option<Spanned<String>>,
    pub MachineName: Option<Spanned<String>>,
    #[serde(default)]
    pub MachineOptions: Vec<Spanned<String>>,
    #[serde(default)]
    pub MachineOptionsWithName: Vec<Spanned<String>>,
    pub Provider: Option<Spanned<String>>,
    pub DockerHost: Option<Spanned<String>>,
    pub DockerMachinePath: Option<Spanned<String>>,
    #[serde(default, rename = "autoscaling")]
    pub autoscaling: Vec<Spanned<RawPeriod>>,
}

#[derive(Debug, Deserialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a [[runners.machine.autoscaling]] table"
)]
#[allow(non_snake_case)] // GitLab's key names, verbatim
pub struct RawPeriod {
    #[serde(default)]
    pub Periods: Vec<Spanned<String>>,
    pub Timezone: Option<Spanned<String>>,
    pub IdleCount: Option<Count>,
    pub IdleCountMin: Option<Count>,
    pub IdleScaleFactor: Option<Spanned<StrictFloat>>,
    pub IdleTime: Option<Count>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [runners.docker] table")]
pub struct RawDocker {
    pub image: Option<String>,
    pub pull_policy: Option<Spanned<OneOrMany>>,
    pub allowed_pull_policies: Option<Spanned<OneOrMany>>,
    #[serde(default)]
    pub allowed_images: Vec<String>,
    #[serde(default)]
    pub allowed_services: Vec<String>,
    #[serde(default)]
    pub privileged: bool,
    #[serde(default)]
    pub volumes: Vec<String>,
    pub host: Option<String>,
    pub tls_cert_path: Option<String>,
    pub shm_size: Option<Count64>,
    pub helper_image: Option<String>,
    #[serde(default)]
    pub extra_hosts: Vec<String>,
    #[serde(default)]
    pub dns: Vec<String>,
    #[serde(default)]
    pub dns_search: Vec<String>,
    pub memory: Option<Spanned<String>>,
    pub cpus: Option<Spanned<String>>,
    #[serde(default)]
    pub cap_add: Vec<String>,
    #[serde(default)]
    pub cap_drop: Vec<String>,
    #[serde(default)]
    pub devices: Vec<String>,
    pub user: Option<String>,
    #[serde(default)]
    pub services: Vec<RawService>,
    #[serde(default)]
    pub disable_cache: bool,
    pub cache_dir: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [runners.cache] table")]
#[allow(non_snake_case)] // GitLab's key names, verbatim
pub struct RawCache {
    pub Type: Option<Spanned<String>>,
    pub Path: Option<String>,
    #[serde(default)]
    pub Shared: bool,
    pub MaxUploadedArchiveSize: Option<Count64>,
    pub s3: Option<Spanned<RawCacheS3>>,
}

/// `[runners.cache.s3]`. Not `Debug`: it holds the secret key.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [runners.cache.s3] table")]
#[allow(non_snake_case)] // GitLab's key names, verbatim
pub struct RawCacheS3 {
    pub ServerAddress: Option<Spanned<String>>,
    pub AccessKey: Option<String>,
    pub SecretKey: Option<String>,
    pub SessionToken: Option<String>,
    pub BucketName: Option<Spanned<String>>,
    pub BucketLocation: Option<String>,
    #[serde(default)]
    pub Insecure: bool,
    pub AuthenticationType: Option<Spanned<String>>,
    pub PathStyle: Option<bool>,
}

impl fmt::Debug for RawCacheS3 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawCacheS3")
            .field("ServerAddress", &self.ServerAddress)
            .field("BucketName", &self.BucketName)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [[runners.docker.services]] table")]
pub struct RawService {
    pub name: String,
    pub alias: Option<String>,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub entrypoint: Vec<String>,
    #[serde(default)]
    pub environment: Vec<Spanned<String>>,
}
