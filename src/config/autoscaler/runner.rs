//! A `docker-autoscaler` runner as loaded: its core runner, its GitLab identity and its settings.

use drover_gitlab::Secret;

use super::settings::AutoscalerSettings;
use crate::config::settings::{DockerSettings, RunnerSettings};

/// A `[[runners]]` entry with `executor = "docker-autoscaler"`: `drover run` runs it on its Auto
/// Scaling group ([`crate::config::Loaded::runnable`]; a build without the `aws` feature refuses
/// it), `drover simulate` schedules `core`.
#[derive(Clone, Debug, PartialEq)]
pub struct AutoscalerRunner {
    pub name: String,
    /// The runner as the core schedules it: a slot runner ([`super::core_runner`]).
    pub core: drover_core::RunnerConfig,
    pub url: Option<String>,
    pub token: Option<Secret>,
    /// `limit`: jobs at once, 0 = unlimited.
    pub limit: u32,
    pub request_concurrency: u32,
    pub docker: DockerSettings,
    pub autoscaler: AutoscalerSettings,
    /// What the daemon runs the runner's jobs with (`executor` `DockerAutoscaler`, `autoscaler`
    /// set): the keys every executor shares, as for the other runners.
    pub settings: RunnerSettings,
}
