//! The payloads of GitLab's runner API, with GitLab's field names.
//!
//! Decoding follows GitLab Runner: `null` is the zero value of the field's type and unknown keys
//! are ignored. Use [`decode`] (not `serde_json::from_slice` directly) so nulls anywhere in the
//! document, including inside arrays (`"cache":[null]` from old servers), are handled; a job
//! payload from GitLab goes through [`decode_job`], which also names the job and the field when
//! the payload cannot be used.
//! Encoding omits what GitLab Runner omits (empty strings, a zero `exit_code`, ...).

mod job;
mod job_decode;
mod update;

pub use job::*;
pub use job_decode::{JobDecodeError, PayloadError, UndecodableJob, decode_job};
pub use update::*;

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::mask::Secret;

/// Decodes a JSON payload leniently: every `null` becomes the zero value of its field (missing
/// keys already do, through `#[serde(default)]`), `null` array elements are dropped, and unknown
/// keys are ignored.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    let mut value: serde_json::Value = serde_json::from_slice(bytes)?;
    strip_nulls(&mut value);
    serde_json::from_value(value)
}

fn strip_nulls(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        serde_json::Value::Array(items) => {
            items.retain(|v| !v.is_null());
            items.iter_mut().for_each(strip_nulls);
        }
        _ => {}
    }
}

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

pub(crate) fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// What the runner can do. GitLab expects every key, as a bool. Only claim what is implemented:
/// the server changes behaviour on some of them (`two_phase_job_commit`, `cancel_gracefully`,
/// `multi_build_steps`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FeaturesInfo {
    pub variables: bool,
    pub image: bool,
    pub services: bool,
    pub artifacts: bool,
    pub cache: bool,
    pub fallback_cache_keys: bool,
    pub shared: bool,
    pub upload_multiple_artifacts: bool,
    pub upload_raw_artifacts: bool,
    pub session: bool,
    pub terminal: bool,
    pub refspecs: bool,
    pub masking: bool,
    pub proxy: bool,
    pub raw_variables: bool,
    pub artifacts_exclude: bool,
    pub multi_build_steps: bool,
    pub trace_reset: bool,
    pub trace_checksum: bool,
    pub trace_size: bool,
    pub vault_secrets: bool,
    pub cancelable: bool,
    pub return_exit_code: bool,
    pub service_variables: bool,
    pub service_multiple_aliases: bool,
    pub image_executor_opts: bool,
    pub service_executor_opts: bool,
    pub cancel_gracefully: bool,
    pub native_steps_integration: bool,
    pub two_phase_job_commit: bool,
    pub job_inputs: bool,
}

impl FeaturesInfo {
    /// The protocol features this crate implements on the wire, whatever the executor:
    /// - `two_phase_job_commit`: [`crate::Client::accept_job`] acknowledges each job;
    /// - `trace_reset`: a `412` on the final update rewinds the trace to 0 and resends it;
    /// - `trace_checksum`, `trace_size`: every update carries `output{checksum, bytesize}`;
    /// - `cancelable`: `Job-Status: canceled/failed` and `403` abort the job
    ///   ([`crate::trace::RemoteState::Aborted`]).
    ///
    /// `cancel_gracefully` is left to the daemon: the uploader reports `canceling`
    /// ([`crate::trace::RemoteState::CancelRequested`]), but claiming it is only honest when the
    /// executor then stops the script and still runs `after_script`.
    pub fn client_protocol() -> Self {
        FeaturesInfo {
            two_phase_job_commit: true,
            trace_reset: true,
            trace_checksum: true,
            trace_size: true,
            cancelable: true,
            ..Default::default()
        }
    }
}

/// `info.config`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunnerInfoConfig {
    pub gpus: String,
}

/// The `info` block sent with register, verify, job requests and job updates.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunnerInfo {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub revision: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub platform: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub architecture: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub executor: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub shell: String,
    /// Always sent, even when every feature is false.
    pub features: FeaturesInfo,
    /// Always sent.
    pub config: RunnerInfoConfig,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// `POST /runners`: register with a (legacy) registration token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RegisterRunnerRequest {
    #[serde(skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub maintenance_note: String,
    /// Comma-separated tags.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub tag_list: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_untagged: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locked: Option<bool>,
    /// `not_protected` or `ref_protected`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub access_level: String,
    /// Seconds; 0 is omitted.
    #[serde(skip_serializing_if = "is_zero")]
    pub maximum_timeout: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
    pub info: RunnerInfo,
    /// The registration token.
    pub token: Secret,
}

/// The `201` answer to `POST /runners`, and the `200` answer to `POST /runners/verify`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct RunnerTokenResponse {
    pub id: u64,
    pub token: Secret,
    /// ISO-8601, or empty when the token does not expire.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub token_expires_at: String,
}

/// `POST /runners/verify`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VerifyRunnerRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub info: Option<RunnerInfo>,
    pub token: Secret,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub system_id: String,
}

/// `DELETE /runners` (`system_id` empty) and `DELETE /runners/managers`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UnregisterRequest {
    pub token: Secret,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub system_id: String,
}

/// `POST /runners/reset_authentication_token`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResetTokenRequest {
    pub token: Secret,
}

/// The `201` answer to a token reset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResetTokenResponse {
    pub token: Secret,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub token_expires_at: String,
}

/// `session` of a job request (only with a session server).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct SessionInfo {
    pub url: String,
    pub certificate: String,
    pub authorization: Secret,
}

/// `POST /jobs/request`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobRequest {
    pub info: RunnerInfo,
    pub token: Secret,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub system_id: String,
    /// The last `X-GitLab-Last-Update` this runner received; empty on the first request.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub last_update: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub session: Option<SessionInfo>,
}
