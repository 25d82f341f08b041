//! Registry credentials: the job's (`DOCKER_AUTH_CONFIG`, the payload's), the runner user's
//! `~/.docker/config.json`, and the runner's own for what it pulls outside a job.

use drover_docker::auth;
use drover_docker::{BuildSpec, RegistryCredential, Variable};
use drover_gitlab::api::JobResponse;

use crate::config::RunnerSettings;

/// The registry credentials of a job, before the runner user's `~/.docker/config.json` (which
/// [`with_home_credentials`] adds): `DOCKER_AUTH_CONFIG` (a job variable, else the runner's
/// `environment`), then the payload's `credentials`. A `DOCKER_AUTH_CONFIG` drover cannot read is
/// a warning in the trace, as GitLab Runner goes on without it.
pub(super) fn registry_credentials(
    job: &JobResponse,
    variables: &[Variable],
    warnings: &mut Vec<String>,
) -> Vec<RegistryCredential> {
    let mut credentials = Vec::new();
    if let Some(config) = variables
        .iter()
        .rev()
        .find(|v| v.key == "DOCKER_AUTH_CONFIG")
    {
        // Also as a file variable: the value is the config itself.
        match auth::parse_docker_config(&config.value, auth::SOURCE_DOCKER_AUTH_CONFIG) {
            Ok(found) => credentials.extend(found),
            Err(err) => warnings.push(format!("ignoring registry credentials: {err}")),
        }
    }
    credentials.extend(
        job.credentials
            .iter()
            .filter(|c| c.kind == "registry")
            .map(|c| RegistryCredential {
                registry: c.url.clone(),
                username: c.username.clone(),
                password: c.password.expose().to_string(),
                source: auth::SOURCE_JOB_PAYLOAD.to_string(),
            }),
    );
    credentials
}

/// Adds the credentials of the user drover runs as (`~/.docker/config.json`) where GitLab Runner
/// ranks them: after `DOCKER_AUTH_CONFIG`, before the job payload's.
pub fn with_home_credentials(spec: &mut BuildSpec, home: &[RegistryCredential]) {
    let at = spec
        .credentials
        .iter()
        .take_while(|c| c.source == auth::SOURCE_DOCKER_AUTH_CONFIG)
        .count();
    spec.credentials.splice(at..at, home.iter().cloned());
}

/// The credentials in the `~/.docker/config.json` (or `~/.dockercfg`) of the user drover runs as;
/// none without a `HOME`.
pub fn home_registry_credentials() -> Result<Vec<RegistryCredential>, auth::AuthConfigError> {
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => auth::home_credentials(std::path::Path::new(&home)),
        _ => Ok(Vec::new()),
    }
}

/// The runner's own registry credentials, for what it pulls outside a job (a sandbox's default
/// image): `DOCKER_AUTH_CONFIG` in `[[runners]] environment`, then `~/.docker/config.json`.
pub fn runner_credentials(
    runner: &RunnerSettings,
    home: &[RegistryCredential],
) -> Result<Vec<RegistryCredential>, auth::AuthConfigError> {
    let mut credentials = match runner
        .environment
        .iter()
        .rev()
        .find(|(k, _)| k == "DOCKER_AUTH_CONFIG")
    {
        Some((_, config)) => auth::parse_docker_config(config, auth::SOURCE_DOCKER_AUTH_CONFIG)?,
        None => Vec::new(),
    };
    credentials.extend(home.iter().cloned());
    Ok(credentials)
}
