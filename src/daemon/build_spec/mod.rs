//! GitLab's job payload plus the runner's `[runners.docker]` settings → the executor's [`BuildSpec`].
//! [`build_spec`] reads top-down, one submodule per concern: [`variables`], [`images`] (image and
//! services), [`steps`], [`credentials`]; git sources and artifacts come from the daemon's
//! `sources` and `artifacts`. The `with_*` functions add what is known only when the job runs;
//! `jobs::job_spec` applies them in order.

mod credentials;
mod images;
mod steps;
mod variables;

use drover_docker::{BuildSpec, ContainerOptions, Shell};
use drover_gitlab::api::JobResponse;

use super::sources;
use crate::config::{self, RunnerSettings};

pub use credentials::{home_registry_credentials, runner_credentials, with_home_credentials};
pub use images::runner_pull_policies;
pub use variables::{with_concurrency, with_tls_ca};

/// Why a job cannot run here; it is reported as failed with the given reason and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Unsupported {
    pub reason: drover_core::FailureReason,
    pub message: String,
}

fn unsupported(message: impl Into<String>) -> Unsupported {
    Unsupported {
        reason: drover_core::FailureReason::RunnerSystemFailure,
        message: message.into(),
    }
}

/// Maps a job onto the executor's terms. `runner_short` names the runner's objects on the engine.
pub fn build_spec(
    job: &JobResponse,
    runner: &RunnerSettings,
    runner_short: &str,
    registry_mirrors: &[String],
) -> Result<BuildSpec, Unsupported> {
    check_supported(job)?;
    let timeout = job.timeout();
    let builds_dir = runner
        .builds_dir
        .clone()
        .unwrap_or_else(|| "/builds".to_string());
    let mut warnings = Vec::new();
    let lookup = sources::Lookup::new(job, &runner.environment);
    let strategy = sources::strategy(job, &lookup, &mut warnings);
    warnings.extend(sources::unsupported(job, &lookup));
    let git = sources::git_spec(job, &lookup, strategy).map_err(|message| Unsupported {
        // GitLab Runner fails the sources stage on these: the job's own setting.
        reason: drover_core::FailureReason::ScriptFailure,
        message,
    })?;
    let project_dir = sources::project_dir(&builds_dir, job, strategy);
    let dirs = variables::Dirs {
        builds: &builds_dir,
        project: &project_dir,
    };
    let mut variables = variables::job_variables(job, runner, runner_short, dirs, timeout);
    // Adds CI_JOB_IMAGE, which services see too.
    let image = images::job_image(job, runner, &mut variables)?;
    let steps = steps::steps(job, runner, timeout)?;
    let services = images::services(job, runner, &variables)?;
    let credentials = credentials::registry_credentials(job, &variables, &mut warnings);
    let (artifacts, artifact_warnings) = super::artifacts::specs(job);
    warnings.extend(artifact_warnings);
    Ok(BuildSpec {
        job_id: job.id,
        runner: runner_short.to_string(),
        image,
        credentials,
        registry_mirrors: registry_mirrors.to_vec(),
        variables,
        steps,
        services,
        git,
        timeout,
        builds_dir,
        project_dir,
        shell: Shell::Sh,
        volumes: runner.docker.volumes.clone(),
        privileged: runner.docker.privileged,
        container_options: container_options(&runner.docker),
        helper_image: runner.docker.helper_image.clone(),
        warnings,
        artifacts,
        dependencies: super::artifacts::dependencies(job),
        // Set by the job's task, which holds the GitLab client.
        transport: Default::default(),
        // Filled by `cache::plan`, which needs the machine the job runs on.
        caches: Vec::new(),
        kept_volumes: Vec::new(),
    })
}

/// What drover refuses before looking at anything else.
fn check_supported(job: &JobResponse) -> Result<(), Unsupported> {
    if !job.run.is_empty() {
        return Err(unsupported(
            "this job uses `run:` (step-runner steps), which drover does not support",
        ));
    }
    if let Some(kind) = job.image.executor_opts.other.keys().next() {
        return Err(unsupported(format!(
            "unsupported image executor_opts key {kind:?}"
        )));
    }
    Ok(())
}

/// The `[runners.docker]` keys that shape the job's containers.
fn container_options(docker: &config::DockerSettings) -> ContainerOptions {
    ContainerOptions {
        user: docker.user.clone(),
        cap_add: docker.cap_add.clone(),
        cap_drop: docker.cap_drop.clone(),
        devices: docker.devices.clone(),
        memory: docker.memory,
        // Positive and finite (the config checks it); the cast saturates.
        nano_cpus: docker.cpus.map(|cpus| (cpus * 1e9).round() as u64),
        shm_size: docker.shm_size,
        dns: docker.dns.clone(),
        dns_search: docker.dns_search.clone(),
        extra_hosts: docker.extra_hosts.clone(),
    }
}

#[cfg(test)]
mod tests;
