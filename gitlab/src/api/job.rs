//! The job payload: the `201` body of `POST /jobs/request`.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use super::is_false;
use super::job_decode::{object, objects, optional_object, strings};
use crate::mask::Secret;

/// GitLab's default job timeout, for a job whose `runner_info.timeout` is zero or negative.
pub use drover_core::DEFAULT_JOB_TIMEOUT;

/// A job assigned to this runner.
#[derive(Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobResponse {
    pub id: u64,
    /// The job token: the credential for updates, trace and artifacts. Masked in the trace.
    pub token: Secret,
    pub allow_git_fetch: bool,
    #[serde(deserialize_with = "object")]
    pub job_info: JobInfo,
    #[serde(deserialize_with = "object")]
    pub git_info: GitInfo,
    #[serde(deserialize_with = "object")]
    pub runner_info: JobRunnerInfo,
    #[serde(deserialize_with = "objects")]
    pub variables: Vec<Variable>,
    #[serde(deserialize_with = "objects")]
    pub steps: Vec<Step>,
    /// Step-runner steps (the `run:` keyword) as a JSON string; empty when `steps` is used.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub run: String,
    #[serde(deserialize_with = "objects")]
    pub hooks: Vec<Hook>,
    #[serde(deserialize_with = "object")]
    pub image: Image,
    #[serde(deserialize_with = "objects")]
    pub services: Vec<Service>,
    #[serde(deserialize_with = "objects")]
    pub artifacts: Vec<Artifact>,
    #[serde(deserialize_with = "objects")]
    pub cache: Vec<Cache>,
    #[serde(deserialize_with = "objects")]
    pub credentials: Vec<Credentials>,
    #[serde(deserialize_with = "objects")]
    pub dependencies: Vec<Dependency>,
    #[serde(deserialize_with = "object")]
    pub features: JobFeatures,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inputs: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_options: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub suspend_options: Option<serde_json::Value>,
}

impl JobResponse {
    /// The job's timeout: `runner_info.timeout`, or [`DEFAULT_JOB_TIMEOUT`] when it is not positive.
    pub fn timeout(&self) -> Duration {
        u64::try_from(self.runner_info.timeout)
            .ok()
            .filter(|s| *s > 0)
            .map_or(DEFAULT_JOB_TIMEOUT, Duration::from_secs)
    }

    /// Values the trace must never show: masked variables and the job token.
    pub fn masked_values(&self) -> Vec<String> {
        let mut values: Vec<String> = self
            .variables
            .iter()
            .filter(|v| v.masked && !v.value.is_empty())
            .map(|v| v.value.clone())
            .collect();
        if !self.token.is_empty() {
            values.push(self.token.expose().to_owned());
        }
        values.sort();
        values.dedup();
        values
    }

    /// The value of the first variable named `key`.
    pub fn variable(&self, key: &str) -> Option<&str> {
        self.variables
            .iter()
            .find(|v| v.key == key)
            .map(|v| v.value.as_str())
    }
}

// Hand-written so that `{:?}` of a job never prints its token, masked values or the token-bearing
// repository URL.
impl std::fmt::Debug for JobResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobResponse")
            .field("id", &self.id)
            .field("token", &self.token)
            .field("name", &self.job_info.name)
            .field("project", &self.job_info.project_full_path)
            .field("sha", &self.git_info.sha)
            .field("image", &self.image.name)
            .field(
                "steps",
                &self
                    .steps
                    .iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// Accepts a string or a number and keeps it as a string (GitLab has sent both for some ids).
fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        S(String),
        I(i64),
        U(u64),
        F(f64),
    }
    Ok(match Either::deserialize(d)? {
        Either::S(s) => s,
        Either::I(n) => n.to_string(),
        Either::U(n) => n.to_string(),
        Either::F(n) => n.to_string(),
    })
}

/// `job_info`: for logs and metrics.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobInfo {
    pub id: u64,
    pub name: String,
    pub stage: String,
    pub project_id: u64,
    pub project_name: String,
    pub project_full_path: String,
    pub namespace_id: u64,
    pub root_namespace_id: u64,
    pub organization_id: u64,
    #[serde(deserialize_with = "string_or_number")]
    pub instance_id: String,
    pub instance_uuid: String,
    pub user_id: u64,
    pub scoped_user_id: Option<u64>,
    pub time_in_queue_seconds: f64,
    #[serde(deserialize_with = "string_or_number")]
    pub project_jobs_running_on_instance_runners_count: String,
    pub queue_size: u64,
    pub queue_depth: u64,
}

/// `git_info`: what to fetch and check out.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GitInfo {
    /// Carries the job token as HTTP basic credentials.
    pub repo_url: String,
    #[serde(rename = "ref")]
    pub git_ref: String,
    pub sha: String,
    pub before_sha: String,
    /// `branch` or `tag`.
    pub ref_type: String,
    #[serde(deserialize_with = "strings")]
    pub refspecs: Vec<String>,
    /// 0 means a full clone.
    pub depth: u32,
    /// `sha1` or `sha256`.
    pub repo_object_format: String,
    /// `None`: use the `CI_COMMIT_REF_PROTECTED` variable.
    pub protected: Option<bool>,
}

impl std::fmt::Debug for GitInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GitInfo")
            .field("ref", &self.git_ref)
            .field("sha", &self.sha)
            .field("ref_type", &self.ref_type)
            .field("depth", &self.depth)
            .finish_non_exhaustive()
    }
}

/// `runner_info` of a job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobRunnerInfo {
    /// Seconds; not positive means 7200.
    pub timeout: i64,
    pub runner_session_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
}

/// A job variable.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Variable {
    pub key: String,
    pub value: String,
    pub public: bool,
    /// Redacted in the trace.
    pub masked: bool,
    /// The value goes to a temporary file; the variable holds its path.
    #[serde(skip_serializing_if = "is_false")]
    pub file: bool,
    /// No `$` expansion.
    #[serde(skip_serializing_if = "is_false")]
    pub raw: bool,
}

impl std::fmt::Debug for Variable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let value: &dyn std::fmt::Debug = if self.masked || !self.public {
            &crate::mask::MASKED
        } else {
            &self.value
        };
        f.debug_struct("Variable")
            .field("key", &self.key)
            .field("value", value)
            .field("masked", &self.masked)
            .field("file", &self.file)
            .finish_non_exhaustive()
    }
}

/// When a step runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepWhen {
    #[default]
    OnSuccess,
    OnFailure,
    Always,
    /// A value this version does not know.
    #[serde(other)]
    Unknown,
}

/// A script step: `script`, `after_script`, `release` or `run`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Step {
    pub name: String,
    #[serde(deserialize_with = "strings")]
    pub script: Vec<String>,
    /// Seconds.
    pub timeout: i64,
    pub when: StepWhen,
    pub allow_failure: bool,
}

/// Step names GitLab sends.
pub mod step_name {
    pub const SCRIPT: &str = "script";
    pub const AFTER_SCRIPT: &str = "after_script";
    pub const RELEASE: &str = "release";
    pub const RUN: &str = "run";
}

/// A hook around the source fetch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Hook {
    /// `pre_get_sources_script` or `post_get_sources_script`.
    pub name: String,
    #[serde(deserialize_with = "strings")]
    pub script: Vec<String>,
}

/// A port exposed by an image or service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Port {
    pub number: u16,
    pub protocol: String,
    pub name: String,
}

/// `executor_opts.docker`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct DockerExecutorOptions {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub platform: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub user: String,
}

/// `executor_opts` of an image or service. Keys this version does not know are kept in `other`:
/// GitLab Runner fails such a job (`runner_system_failure`), and the executor should too.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ExecutorOptions {
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_object"
    )]
    pub docker: Option<DockerExecutorOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kubernetes: Option<serde_json::Value>,
    #[serde(flatten)]
    pub other: serde_json::Map<String, serde_json::Value>,
}

/// The job's image.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Image {
    pub name: String,
    #[serde(deserialize_with = "strings")]
    pub entrypoint: Vec<String>,
    #[serde(deserialize_with = "objects")]
    pub ports: Vec<Port>,
    #[serde(deserialize_with = "object")]
    pub executor_opts: ExecutorOptions,
    #[serde(deserialize_with = "strings")]
    pub pull_policy: Vec<String>,
}

/// A service's variable.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ServiceVariable {
    pub key: String,
    pub value: String,
}

/// A sidecar container.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Service {
    pub name: String,
    #[serde(deserialize_with = "strings")]
    pub entrypoint: Vec<String>,
    #[serde(deserialize_with = "objects")]
    pub ports: Vec<Port>,
    #[serde(deserialize_with = "object")]
    pub executor_opts: ExecutorOptions,
    #[serde(deserialize_with = "strings")]
    pub pull_policy: Vec<String>,
    /// One or more aliases, separated by commas or spaces.
    pub alias: String,
    #[serde(deserialize_with = "strings")]
    pub command: Vec<String>,
    #[serde(deserialize_with = "objects")]
    pub variables: Vec<ServiceVariable>,
}

impl Service {
    /// The aliases, split on commas and whitespace.
    pub fn aliases(&self) -> Vec<&str> {
        self.alias
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|a| !a.is_empty())
            .collect()
    }
}

/// An artifacts upload.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Artifact {
    pub name: String,
    pub untracked: bool,
    #[serde(deserialize_with = "strings")]
    pub paths: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[serde(deserialize_with = "strings")]
    pub exclude: Vec<String>,
    pub when: String,
    pub expire_in: String,
    pub artifact_type: String,
    pub artifact_format: String,
}

/// A cache entry (runner-side storage).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Cache {
    pub key: String,
    pub untracked: bool,
    #[serde(deserialize_with = "strings")]
    pub paths: Vec<String>,
    pub policy: String,
    pub when: String,
    #[serde(deserialize_with = "strings")]
    pub fallback_keys: Vec<String>,
}

/// Registry credentials.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Credentials {
    #[serde(rename = "type")]
    pub kind: String,
    pub url: String,
    pub username: String,
    pub password: Secret,
}

/// `dependencies[].artifacts_file`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ArtifactsFile {
    pub filename: String,
    pub size: u64,
}

/// A job whose artifacts this job downloads.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Dependency {
    pub id: u64,
    pub name: String,
    /// The running job's token, not the dependency's.
    pub token: Secret,
    #[serde(
        skip_serializing_if = "Option::is_none",
        deserialize_with = "optional_object"
    )]
    pub artifacts_file: Option<ArtifactsFile>,
}

/// `features` of a job.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobFeatures {
    pub trace_sections: bool,
    /// The failure reasons this GitLab understands; others are mapped before sending.
    #[serde(deserialize_with = "strings")]
    pub failure_reasons: Vec<String>,
    /// Extra token prefixes to mask in the trace.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[serde(deserialize_with = "strings")]
    pub token_mask_prefixes: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tracing: Option<serde_json::Value>,
}
