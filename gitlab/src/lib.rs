//! drover's side of GitLab's runner API (`/api/v4`).
//!
//! - [`api`]: the request and response payloads, decoded leniently (`null` is the zero value,
//!   unknown keys are ignored) with [`api::decode`].
//! - [`Client`]: one GitLab instance: register, verify, unregister, reset the token, request jobs
//!   (long polling), update jobs and patch traces, with GitLab Runner's HTTP-layer retries
//!   ([`retry`]), a timeout on every call and TLS verification (custom CA file supported).
//! - [`trace`]: the job log: [`trace::TraceBuffer`] masks secrets as they stream in (even when split
//!   across writes), enforces `output_limit` and keeps the CRC32 and size of what it stores;
//!   [`trace::TraceUploader`] sends it incrementally and performs the final update, resumable after
//!   a restart from a persisted acknowledged offset.
//! - [`artifacts`]: uploading a job's artifacts and downloading its dependencies' archives, with
//!   GitLab Runner's tries and trace lines.
//! - [`mask`]: how tokens are shown in logs and listings.
//! - `fake` (cargo feature `fake`): a strict, recording fake coordinator on loopback.
//!
//! All waiting goes through `tokio::time`, so tests run under `tokio::time::pause()` without real
//! sleeps; retry jitter comes from a seedable RNG ([`retry::RetryPolicy::seed`]).

pub mod api;
pub mod artifacts;
mod client;
mod error;
pub mod mask;
pub mod retry;
pub mod trace;

#[cfg(feature = "fake")]
pub mod fake;

pub use client::{
    Client, ClientConfig, JobCredentials, JobReply, PatchKind, PatchResult, RemoteJobStatus,
    RequestOutcome, Timeouts, UpdateKind, UpdateResult, normalize_url,
};
pub use error::Error;
pub use mask::Secret;

/// Who is talking to GitLab: the `info` block of every request and the `User-Agent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunnerIdentity {
    /// Always `drover` for drover itself.
    pub name: String,
    pub version: String,
    /// The source revision drover was built from (`unknown` when not known).
    pub revision: String,
    /// Operating system in Go's spelling, as GitLab expects (`linux`, `darwin`, `windows`).
    pub platform: String,
    /// CPU architecture in Go's spelling (`amd64`, `arm64`, ...).
    pub architecture: String,
}

impl RunnerIdentity {
    /// drover's identity on this host.
    pub fn drover(version: &str, revision: &str) -> Self {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "arm" => "arm",
            "powerpc64" => "ppc64le",
            other => other,
        };
        let platform = match std::env::consts::OS {
            "macos" => "darwin",
            other => other,
        };
        RunnerIdentity {
            name: "drover".into(),
            version: version.into(),
            revision: if revision.is_empty() {
                "unknown".into()
            } else {
                revision.into()
            },
            platform: platform.into(),
            architecture: architecture.into(),
        }
    }

    /// `drover <version> (<revision>; rust; <os>/<arch>)`.
    pub fn user_agent(&self) -> String {
        format!(
            "{} {} ({}; rust; {}/{})",
            self.name, self.version, self.revision, self.platform, self.architecture
        )
    }

    /// The `info` block for a request: this identity plus what the caller runs and supports.
    pub fn info(
        &self,
        executor: &str,
        shell: &str,
        features: api::FeaturesInfo,
    ) -> api::RunnerInfo {
        api::RunnerInfo {
            name: self.name.clone(),
            version: self.version.clone(),
            revision: self.revision.clone(),
            platform: self.platform.clone(),
            architecture: self.architecture.clone(),
            executor: executor.into(),
            shell: shell.into(),
            features,
            config: api::RunnerInfoConfig::default(),
            labels: Default::default(),
        }
    }
}
