//! Service containers: sidecars on the job's network, reachable by their aliases.

use std::collections::HashMap;
use std::time::Duration;

use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthStatusEnum, HostConfig, HostConfigLogConfig,
    NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, LogsOptions, StartContainerOptions,
};
use futures_util::StreamExt;
use tokio::time::Instant;

use super::host;
use super::job::{Job, JobError};
use super::script::ENV_STRING_MAX;
use crate::labels;

/// How often a starting service's health is looked at.
const HEALTH_POLL: Duration = Duration::from_millis(250);

/// Starts every service of the job, then waits until each runs (and is healthy, if its image has
/// a health check). A service that dies or stays unhealthy is a warning, as in GitLab: the job runs
/// and its script shows what is missing.
pub(crate) async fn start(job: &mut Job) -> Result<(), JobError> {
    let spec = job.spec.clone();
    let mut names = Vec::new();
    for (i, service) in spec.services.iter().enumerate() {
        let name = job.names.service(i);
        let aliases = match service.aliases.is_empty() {
            true => default_aliases(&service.image.name),
            false => service.aliases.clone(),
        };
        job.trace
            .say(format!(
                "Starting service {} as {} ...\n",
                service.image.name,
                aliases.join(", ")
            ))
            .await;
        // As GitLab Runner: the job's public variables (masked and protected ones stay with the
        // job) and the service's own. Linux refuses a longer environment string at start.
        let mut env = Vec::new();
        for v in spec
            .variables
            .iter()
            .filter(|v| v.public && !v.file)
            .chain(&service.variables)
        {
            let entry = format!("{}={}", v.key, v.value);
            if entry.len() <= ENV_STRING_MAX {
                env.push(entry);
                continue;
            }
            job.trace
                .warn(&format!(
                    "the variable {} is not passed to service {}: {} bytes as KEY=value, and \
                     Linux refuses an environment string over {ENV_STRING_MAX} bytes",
                    v.key,
                    service.image.name,
                    entry.len()
                ))
                .await;
        }
        let mut host_config = HostConfig {
            network_mode: Some(job.network.clone()),
            privileged: Some(spec.privileged),
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".to_string()),
                config: None,
            }),
            ..Default::default()
        };
        host::for_service(&spec.container_options, &mut host_config);
        let body = ContainerCreateBody {
            image: Some(service.image.name.clone()),
            entrypoint: service.image.entrypoint.clone(),
            cmd: service.command.clone(),
            env: Some(env),
            labels: Some(job.labels(labels::ROLE_SERVICE)),
            host_config: Some(host_config),
            networking_config: Some(NetworkingConfig {
                endpoints_config: Some(HashMap::from([(
                    job.network.clone(),
                    EndpointSettings {
                        aliases: Some(aliases),
                        ..Default::default()
                    },
                )])),
            }),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(name.clone()),
            ..Default::default()
        };
        job.docker.create_container(Some(options), body).await?;
        match job
            .docker
            .start_container(&name, None::<StartContainerOptions>)
            .await
        {
            Ok(()) => names.push((name, service.image.name.clone())),
            Err(err) => {
                let image = &service.image.name;
                job.trace
                    .warn(&format!("service {image} could not start: {err}"))
                    .await;
            }
        }
    }
    for (name, image) in names {
        wait_until_ready(job, &name, &image).await?;
    }
    Ok(())
}

async fn wait_until_ready(job: &mut Job, name: &str, image: &str) -> Result<(), JobError> {
    let give_up = Instant::now() + job.options.service_wait;
    loop {
        let inspect = job
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await?;
        let state = inspect.state.unwrap_or_default();
        if state.running != Some(true) {
            let code = state.exit_code.unwrap_or(-1);
            job.trace
                .warn(&format!(
                    "service {image} is not running (exit code {code}); its last output:"
                ))
                .await;
            let tail = service_log_tail(job, name).await;
            job.trace.say(tail).await;
            return Ok(());
        }
        // Unhealthy is not final: Docker keeps probing, and a service that starts slower than its
        // check's retries allow turns healthy later. Wait for either until the deadline.
        match state.health.and_then(|h| h.status) {
            Some(HealthStatusEnum::STARTING | HealthStatusEnum::UNHEALTHY)
                if Instant::now() < give_up =>
            {
                tokio::time::sleep(HEALTH_POLL).await;
            }
            Some(HealthStatusEnum::STARTING | HealthStatusEnum::UNHEALTHY) => {
                job.trace
                    .warn(&format!(
                        "service {image} is not healthy; the job goes on without waiting"
                    ))
                    .await;
                return Ok(());
            }
            _ => return Ok(()),
        }
    }
}

async fn service_log_tail(job: &Job, name: &str) -> String {
    let options = LogsOptions {
        stdout: true,
        stderr: true,
        tail: "20".to_string(),
        ..Default::default()
    };
    let mut out = Vec::new();
    let mut stream = job.docker.logs(name, Some(options));
    while let Some(Ok(chunk)) = stream.next().await {
        out.extend_from_slice(&chunk.into_bytes());
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// GitLab's aliases for a service without one: `tutum/wordpress:1` → `tutum-wordpress` and
/// `tutum__wordpress`.
pub(crate) fn default_aliases(image: &str) -> Vec<String> {
    let name = image.split('@').next().unwrap_or(image);
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let name = match name[last_slash..].rfind(':') {
        Some(i) => &name[..last_slash + i],
        None => name,
    };
    let name = name.replace(':', "-");
    let mut aliases = vec![name.replace('/', "-")];
    let second = name.replace('/', "__");
    if second != aliases[0] {
        aliases.push(second);
    }
    aliases
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aliases_from_image_names() {
        assert_eq!(
            default_aliases("tutum/wordpress:1"),
            vec!["tutum-wordpress", "tutum__wordpress"]
        );
        assert_eq!(default_aliases("postgres:16"), vec!["postgres"]);
        assert_eq!(
            default_aliases("registry.local:5000/g/redis@sha256:ab"),
            vec![
                "registry.local-5000-g-redis",
                "registry.local-5000__g__redis"
            ]
        );
    }
}
