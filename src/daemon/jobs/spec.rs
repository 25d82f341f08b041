//! A job's [`BuildSpec`]: from its payload, its runner's settings, the machine it landed on and
//! what only the daemon knows at run time.

use std::sync::Arc;

use drover_docker::{BuildSpec, Transport};
use drover_gitlab::JobCredentials;
use drover_gitlab::api::JobResponse;

use super::RunnerContext;
use crate::config::ExecutorKind;
use crate::daemon::artifacts::GitlabTransport;
use crate::daemon::build_spec::{
    Unsupported, build_spec, home_registry_credentials, with_concurrency, with_home_credentials,
    with_tls_ca,
};
use crate::daemon::cache;
use crate::daemon::concurrency::Slot;

/// The spec of a job that asks for nothing of its own: the runner's default image, no sources
/// to fetch, no cache. What a machine's first warm build container is made from, before any job
/// arrives; a job it fits (see `drover_docker`'s warm containers) claims it. `None` when the
/// runner's settings make no such job (no default image).
pub fn default_job_spec(runner: &RunnerContext, machine: &str) -> Option<BuildSpec> {
    let job = JobResponse {
        variables: vec![drover_gitlab::api::Variable {
            key: "GIT_STRATEGY".to_string(),
            value: "none".to_string(),
            public: true,
            ..Default::default()
        }],
        steps: vec![drover_gitlab::api::Step {
            name: drover_gitlab::api::step_name::SCRIPT.to_string(),
            script: vec!["true".to_string()],
            ..Default::default()
        }],
        ..Default::default()
    };
    let slot = runner.slots.acquire(0);
    job_spec(runner, &job, Some(machine), &slot, &runner.short_token).ok()
}

/// The job's spec, completed in the order its parts become known:
/// 1. `build_spec`: the payload and the runner's settings (may refuse the job);
/// 2. `cache::plan`: the caches, which depend on the machine the job landed on (may refuse it);
/// 3. `label`: the label its containers carry, the one it started under (kept in its record, so
///    that a job started before an upgrade changed the runner's label is still found);
/// 4. what only the daemon knows at run time, each put before the job's variables so that the
///    job's own win: the concurrency ids of `slot`, `CI_SERVER_TLS_CA_FILE`, then the registry
///    credentials of drover's user (ranked among the job's);
/// 5. the transport its artifacts go through to GitLab.
pub(super) fn job_spec(
    runner: &RunnerContext,
    job: &JobResponse,
    machine: Option<&str>,
    slot: &Slot,
    label: &str,
) -> Result<BuildSpec, Unsupported> {
    let mut spec = build_spec(
        job,
        &runner.settings,
        &runner.short_token,
        &runner.registry_mirrors,
    )?;
    cache::plan(&mut spec, job, &runner.settings, &runner.system_id, machine)?;
    if !label.is_empty() {
        spec.runner = label.to_string();
    }
    // docker+machine: one job per machine, so GitLab Runner counts per-project slots on a
    // machine, always 0.
    let project_id = match runner.settings.executor {
        ExecutorKind::DockerMachine => 0,
        ExecutorKind::Docker | ExecutorKind::DockerAutoscaler => slot.project_id(),
    };
    with_concurrency(&mut spec, slot.id(), project_id);
    if let Some(path) = &runner.tls_ca_file {
        match std::fs::read_to_string(path) {
            Ok(ca) => with_tls_ca(&mut spec, ca),
            Err(err) => spec.warnings.push(format!(
                "CI_SERVER_TLS_CA_FILE is not set: reading tls-ca-file {}: {err}",
                path.display()
            )),
        }
    }
    match home_registry_credentials() {
        Ok(home) => with_home_credentials(&mut spec, &home),
        Err(err) => spec
            .warnings
            .push(format!("ignoring registry credentials: {err}")),
    }
    spec.transport = Transport::new(Arc::new(GitlabTransport {
        client: runner.client.clone(),
        job: JobCredentials::from(job),
    }));
    Ok(spec)
}

/// The labels a job's containers may carry when its record does not say (written by a drover
/// that did not keep it): the runner's, then the token's short form that labelled jobs before
/// machine names followed the runner's URL and name.
pub(super) fn label_candidates(runner: &RunnerContext) -> Vec<String> {
    let token = runner.settings.token.as_ref().map_or("", |t| t.expose());
    let url = runner.settings.url.as_deref().unwrap_or("");
    let mut labels = vec![runner.short_token.clone()];
    for earlier in drover_core::config::earlier_keys(url, &runner.name, token) {
        if !labels.contains(&earlier) {
            labels.push(earlier);
        }
    }
    labels
}
