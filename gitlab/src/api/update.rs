//! Job updates: `PUT /jobs/:id`.

use serde::{Deserialize, Serialize};

use super::{RunnerInfo, is_zero};
use crate::mask::Secret;

/// The `state` of a job update.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Two-phase keep-alive before acceptance (drover never sends it; the fake accepts it).
    Pending,
    Running,
    Success,
    Failed,
}

/// Why a job failed: the core's reason, sent under GitLab's wire names.
pub use drover_core::FailureReason;

/// GitLab Runner's failure-reason mapper.
pub trait ServerReason {
    /// The reason to send to a GitLab that understands `supported` (the job's
    /// `features.failure_reasons`): sent unchanged when supported or always supported, else a
    /// documented fallback, else `unknown_failure` (which is also what `job_canceled` becomes).
    fn for_server(self, supported: &[String]) -> &'static str;
}

impl ServerReason for FailureReason {
    fn for_server(self, supported: &[String]) -> &'static str {
        use FailureReason::*;
        let always = matches!(
            self,
            ScriptFailure | RunnerSystemFailure | JobExecutionTimeout
        );
        if always || supported.iter().any(|s| s == self.as_str()) {
            return self.as_str();
        }
        match self {
            ImagePullFailure | RunnerExternalDependencyFailure => RunnerSystemFailure.as_str(),
            RunnerConfigurationError => ScriptFailure.as_str(),
            _ => UnknownFailure.as_str(),
        }
    }
}

/// `output` of a job update: what the runner has stored of the trace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobOutput {
    /// `crc32:%08x`.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub checksum: String,
    #[serde(skip_serializing_if = "is_zero")]
    pub bytesize: u64,
}

/// `PUT /jobs/:id`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateJobRequest {
    #[serde(default)]
    pub info: RunnerInfo,
    /// The job token (also sent as `JOB-TOKEN`).
    #[serde(default)]
    pub token: Secret,
    pub state: JobState,
    /// Already mapped for the server (see [`FailureReason::for_server`]).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub failure_reason: String,
    /// Deprecated copy of `output.checksum`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub checksum: String,
    /// Always sent; `{}` on the acceptance update.
    #[serde(default)]
    pub output: JobOutput,
    /// Omitted when 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime_environment_key: Option<String>,
}

impl UpdateJobRequest {
    /// The two-phase acceptance: `state=running` with an empty `output`.
    pub fn accept(info: RunnerInfo, token: Secret) -> Self {
        UpdateJobRequest {
            info,
            token,
            state: JobState::Running,
            failure_reason: String::new(),
            checksum: String::new(),
            output: JobOutput::default(),
            exit_code: None,
            runtime_environment_key: None,
        }
    }

    /// A keep-alive (`state=running`) carrying the trace's checksum and size.
    pub fn keep_alive(info: RunnerInfo, token: Secret, output: JobOutput) -> Self {
        UpdateJobRequest {
            output,
            ..Self::accept(info, token)
        }
    }

    /// A final update. `exit_code` 0 is dropped, as GitLab Runner does.
    pub fn finish(
        info: RunnerInfo,
        token: Secret,
        state: JobState,
        failure_reason: &str,
        exit_code: Option<i32>,
        output: JobOutput,
    ) -> Self {
        UpdateJobRequest {
            state,
            failure_reason: failure_reason.to_owned(),
            checksum: output.checksum.clone(),
            output,
            exit_code: exit_code.filter(|c| *c != 0),
            ..Self::accept(info, token)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failure_reason_mapper_follows_gitlab_runner() {
        let none: Vec<String> = vec![];
        assert_eq!(
            FailureReason::ScriptFailure.for_server(&none),
            "script_failure"
        );
        assert_eq!(
            FailureReason::JobExecutionTimeout.for_server(&none),
            "job_execution_timeout"
        );
        assert_eq!(
            FailureReason::ImagePullFailure.for_server(&none),
            "runner_system_failure"
        );
        assert_eq!(
            FailureReason::RunnerExternalDependencyFailure.for_server(&none),
            "runner_system_failure"
        );
        assert_eq!(
            FailureReason::RunnerConfigurationError.for_server(&none),
            "script_failure"
        );
        assert_eq!(
            FailureReason::RunnerInterrupted.for_server(&none),
            "unknown_failure"
        );
        assert_eq!(
            FailureReason::JobCanceled.for_server(&none),
            "unknown_failure"
        );
        let known = vec![
            "image_pull_failure".to_string(),
            "runner_interrupted".to_string(),
        ];
        assert_eq!(
            FailureReason::ImagePullFailure.for_server(&known),
            "image_pull_failure"
        );
        assert_eq!(
            FailureReason::RunnerInterrupted.for_server(&known),
            "runner_interrupted"
        );
    }

    #[test]
    fn zero_exit_code_is_omitted() {
        let out = JobOutput {
            checksum: "crc32:00000000".into(),
            bytesize: 3,
        };
        let ok = UpdateJobRequest::finish(
            RunnerInfo::default(),
            "t".into(),
            JobState::Failed,
            "script_failure",
            Some(0),
            out.clone(),
        );
        let json = serde_json::to_value(&ok).unwrap();
        assert!(json.get("exit_code").is_none(), "{json}");
        assert_eq!(json["checksum"], "crc32:00000000");
        let failed = UpdateJobRequest::finish(
            RunnerInfo::default(),
            "t".into(),
            JobState::Failed,
            "script_failure",
            Some(2),
            out,
        );
        assert_eq!(serde_json::to_value(&failed).unwrap()["exit_code"], 2);
    }
}
