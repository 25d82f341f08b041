//! The raw layer: `config.toml` as written, with GitLab Runner's key names and no validation beyond
//! types. Values checked later keep their span (`Spanned`) so that errors can point at them.
//!
//! Each struct denies unknown fields: the schema walk has already removed every key drover accepts
//! without reading, so an unknown field here means the schema and this layer disagree.

use std::fmt;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Unexpected, Visitor};
use toml::Spanned;
use toml::value::Datetime;

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

/// A whole number, 0 or more, that fits in 32 bits.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Count(pub u32);

/// A whole number, 0 or more, that fits in 64 bits.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct Count64(pub u64);

struct CountVisitor(u64);

impl Visitor<'_> for CountVisitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a whole number from 0 to {}", self.0)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        match u64::try_from(v) {
            Ok(v) => self.visit_u64(v),
            Err(_) => Err(E::invalid_value(Unexpected::Signed(v), &self)),
        }
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        if v <= self.0 {
            Ok(v)
        } else {
            Err(E::invalid_value(Unexpected::Unsigned(v), &self))
        }
    }

    /// GitLab Runner refuses a float here, so drover does too (one file for both); a whole
    /// number written as a float (`1e3`, `4.0`) is spelled out.
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        if v.fract() == 0.0 && v >= 0.0 && v <= self.0 as f64 {
            Err(E::custom(format!(
                "a float ({v:?}): write the whole number {} (GitLab Runner reads no float here)",
                v as u64
            )))
        } else {
            Err(E::invalid_value(Unexpected::Float(v), &self))
        }
    }
}

impl<'de> Deserialize<'de> for Count {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Count, D::Error> {
        let v = d.deserialize_any(CountVisitor(u64::from(u32::MAX)))?;
        Ok(Count(u32::try_from(v).unwrap_or(u32::MAX)))
    }
}

impl<'de> Deserialize<'de> for Count64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Count64, D::Error> {
        d.deserialize_any(CountVisitor(i64::MAX as u64))
            .map(Count64)
    }
}

/// A float that must be written as one: GitLab Runner refuses `IdleScaleFactor = 1`.
#[derive(Copy, Clone, Debug, PartialEq)]
pub struct StrictFloat(pub f64);

impl<'de> Deserialize<'de> for StrictFloat {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<StrictFloat, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = f64;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a float with a decimal point, e.g. 1.0")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
                Ok(v)
            }
        }
        d.deserialize_any(V).map(StrictFloat)
    }
}

/// A string or a list of strings (GitLab Runner's `StringOrArray`), each kept with its span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OneOrMany {
    One(String),
    Many(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for OneOrMany {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<OneOrMany, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = OneOrMany;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or a list of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<OneOrMany, E> {
                Ok(OneOrMany::One(v.to_string()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<OneOrMany, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<String>>()? {
                    items.push(item);
                }
                Ok(OneOrMany::Many(items))
            }
        }
        d.deserialize_any(V)
    }
}
