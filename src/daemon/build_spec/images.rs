//! The job's image and services: names expanded against the job's variables, checked against
//! `allowed_images` / `allowed_services`, pulled with the policies the runner allows.

use drover_docker::{ImageSpec, PullPolicy, ServiceSpec, Variable};
use drover_gitlab::api::JobResponse;
use globset::GlobBuilder;

use super::variables::ServiceEnv;
use super::{Unsupported, unsupported};
use crate::config::{self, RunnerSettings};
use crate::daemon::expand::expand;

/// The runner's `[runners.docker] pull_policy`, in order.
pub fn runner_pull_policies(runner: &RunnerSettings) -> Vec<PullPolicy> {
    runner.docker.pull_policy.clone()
}

/// The job's image, or the runner's when the job names none. Names are expanded against the job's
/// variables before anything checks them, as GitLab Runner does (`image: $CI_REGISTRY/app:$TAG`).
/// A job that names its image also gets `CI_JOB_IMAGE`, before its own variables (which may set
/// it: GitLab Runner's precedence).
pub(super) fn job_image(
    job: &JobResponse,
    runner: &RunnerSettings,
    variables: &mut Vec<Variable>,
) -> Result<ImageSpec, Unsupported> {
    let name = if job.image.name.is_empty() {
        runner.docker.image.clone().ok_or_else(|| Unsupported {
            reason: drover_core::FailureReason::RunnerConfigurationError,
            message: "the job names no image and the runner has no [runners.docker] image".into(),
        })?
    } else {
        let name = expand(&job.image.name, variables);
        let default_image: Vec<&str> = runner.docker.image.iter().map(String::as_str).collect();
        check_allowed(
            &name,
            "allowed_images",
            &runner.docker.allowed_images,
            &default_image,
        )?;
        let at = variables.len() - job.variables.len();
        variables.insert(at, Variable::new("CI_JOB_IMAGE", name.clone()));
        name
    };
    Ok(ImageSpec {
        name,
        entrypoint: (!job.image.entrypoint.is_empty()).then(|| job.image.entrypoint.clone()),
        pull_policy: pull_policies(&job.image.pull_policy, runner)?,
    })
}

/// The runner's `[[runners.docker.services]]`, then the job's own services.
pub(super) fn services(
    job: &JobResponse,
    runner: &RunnerSettings,
    variables: &[Variable],
) -> Result<Vec<ServiceSpec>, Unsupported> {
    let env = ServiceEnv::new(job, variables);
    let mut services: Vec<ServiceSpec> = runner
        .docker
        .services
        .iter()
        .map(|s| ServiceSpec {
            image: ImageSpec {
                name: s.name.clone(),
                entrypoint: (!s.entrypoint.is_empty()).then(|| s.entrypoint.clone()),
                pull_policy: runner_pull_policies(runner),
            },
            aliases: s.aliases.clone(),
            command: (!s.command.is_empty()).then(|| s.command.clone()),
            variables: env.with(s.environment.clone()),
        })
        .collect();
    let runner_services: Vec<&str> = runner
        .docker
        .services
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    for (i, s) in job.services.iter().enumerate() {
        if s.name.trim().is_empty() {
            return Err(unsupported(format!(
                "service {} of the job (`services[{i}]`, alias {:?}) names no image",
                i + 1,
                s.alias
            )));
        }
        let name = expand(&s.name, variables);
        check_allowed(
            &name,
            "allowed_services",
            &runner.docker.allowed_services,
            &runner_services,
        )?;
        let own = s
            .variables
            .iter()
            .map(|v| (v.key.clone(), v.value.clone()))
            .collect();
        services.push(ServiceSpec {
            image: ImageSpec {
                name,
                entrypoint: (!s.entrypoint.is_empty()).then(|| s.entrypoint.clone()),
                pull_policy: pull_policies(&s.pull_policy, runner)?,
            },
            aliases: s
                .aliases()
                .into_iter()
                .map(|alias| expand(alias, variables))
                .collect(),
            command: (!s.command.is_empty()).then(|| s.command.clone()),
            variables: env.with(own),
        });
    }
    Ok(services)
}

/// The job's pull policies when allowed, else the runner's; GitLab's default is `always`.
fn pull_policies(job: &[String], runner: &RunnerSettings) -> Result<Vec<PullPolicy>, Unsupported> {
    let runner_default = runner_pull_policies(runner);
    if job.is_empty() {
        return Ok(runner_default);
    }
    let mut out = Vec::new();
    for p in job {
        let Some(parsed) = config::PullPolicy::parse(p) else {
            return Err(Unsupported {
                reason: drover_core::FailureReason::RunnerConfigurationError,
                message: format!(
                    "unknown pull policy {p:?} (drover knows always, if-not-present, never)"
                ),
            });
        };
        let allowed = if runner.docker.allowed_pull_policies.is_empty() {
            &runner.docker.pull_policy
        } else {
            &runner.docker.allowed_pull_policies
        };
        if !allowed.is_empty() && !allowed.contains(&parsed) {
            return Err(Unsupported {
                reason: drover_core::FailureReason::RunnerConfigurationError,
                message: format!(
                    "pull policy {p:?} is not allowed by this runner (allowed: {})",
                    allowed
                        .iter()
                        .map(|a| a.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        out.push(parsed);
    }
    Ok(out)
}

/// GitLab Runner's `allowed_images` / `allowed_services` (`option`): when the list is not empty, a
/// job's `image` must match one of its patterns, or be one of the runner's own images (`internal`).
/// Patterns are globs as GitLab Runner's (doublestar): `*` and `?` stay within a `/`-separated part,
/// `**` spans parts, `[…]` and `{a,b}` as usual. An invalid pattern matches nothing.
fn check_allowed(
    image: &str,
    option: &str,
    allowed: &[String],
    internal: &[&str],
) -> Result<(), Unsupported> {
    if allowed.is_empty() || internal.contains(&image) {
        return Ok(());
    }
    let matches = |pattern: &String| {
        GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .is_ok_and(|glob| glob.compile_matcher().is_match(image))
    };
    if allowed.iter().any(matches) {
        return Ok(());
    }
    let list: Vec<String> = allowed.iter().map(|p| format!("{p:?}")).collect();
    Err(Unsupported {
        reason: drover_core::FailureReason::RunnerConfigurationError,
        message: format!(
            "the image {image:?} is not allowed by this runner: [runners.docker] {option} = [{}]",
            list.join(", ")
        ),
    })
}
