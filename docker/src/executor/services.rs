//! Service containers: sidecars on the job's network, reachable by their aliases.

use std::collections::HashMap;
use std::time::Duration;

use bollard::exec::{CreateExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, EndpointSettings, HealthStatusEnum, HostConfig, HostConfigLogConfig,
    NetworkingConfig,
};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, LogsOptions, StartContainerOptions,
};
use futures_util::StreamExt;
use tokio::time::Instant;

use super::context::{Job, JobError};
use super::host;
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
    let mut taken: Vec<String> = Vec::new();
    for (i, service) in spec.services.iter().enumerate() {
        let name = job.names.service(i);
        // GitLab's: the image's default aliases, then the service's own; an alias an earlier
        // service has is not given twice.
        let mut aliases = Vec::new();
        for alias in default_aliases(&service.image.name)
            .into_iter()
            .chain(service.aliases.iter().cloned())
        {
            if taken.contains(&alias) {
                if service.aliases.contains(&alias) {
                    job.trace
                        .warn(&format!(
                            "the alias {alias} of service {} is already taken by another service",
                            service.image.name
                        ))
                        .await;
                }
            } else if !aliases.contains(&alias) {
                aliases.push(alias);
            }
        }
        taken.extend(aliases.iter().cloned());
        job.trace
            .say(format!(
                "Starting service {} as {} ...\n",
                service.image.name,
                aliases.join(", ")
            ))
            .await;
        // The daemon composed the service's environment (the job's public variables and the
        // service's own, as GitLab Runner). Linux refuses a longer environment string at start.
        let mut env = Vec::new();
        for v in service.variables.iter().filter(|v| !v.file) {
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
                continue;
            }
            Some(HealthStatusEnum::STARTING | HealthStatusEnum::UNHEALTHY) => {
                job.trace
                    .warn(&format!(
                        "service {image} is not healthy; the job goes on without waiting"
                    ))
                    .await;
                return Ok(());
            }
            Some(HealthStatusEnum::HEALTHY) => return Ok(()),
            // No health check: wait, as GitLab Runner, until its TCP ports accept connections.
            _ => {}
        }
        let ports = tcp_ports(inspect.config.as_ref());
        if ports.is_empty() {
            return Ok(());
        }
        let Some(listening) = listening_ports(job, name).await else {
            job.trace
                .warn(&format!(
                    "service {image}: cannot tell whether its ports are open (no `cat` in the \
                     image); the job goes on without waiting"
                ))
                .await;
            return Ok(());
        };
        let closed: Vec<String> = ports
            .iter()
            .filter(|p| !listening.contains(p))
            .map(u16::to_string)
            .collect();
        if closed.is_empty() {
            return Ok(());
        }
        if Instant::now() >= give_up {
            job.trace
                .warn(&format!(
                    "Service {image} probably didn't start properly: port {} not open after {} s; \
                     its last output:",
                    closed.join(", "),
                    job.options.service_wait.as_secs()
                ))
                .await;
            let tail = service_log_tail(job, name).await;
            job.trace.say(tail).await;
            return Ok(());
        }
        tokio::time::sleep(HEALTH_POLL).await;
    }
}

/// The TCP ports a service is waited for: its `HEALTHCHECK_TCP_PORT` variable, else every port its
/// image exposes (GitLab Runner's rule).
fn tcp_ports(config: Option<&bollard::models::ContainerConfig>) -> Vec<u16> {
    let Some(config) = config else {
        return Vec::new();
    };
    let chosen = config.env.iter().flatten().find_map(|e| {
        e.strip_prefix("HEALTHCHECK_TCP_PORT=")
            .and_then(|p| p.trim().parse().ok())
    });
    if let Some(port) = chosen {
        return vec![port];
    }
    let mut ports: Vec<u16> = config
        .exposed_ports
        .iter()
        .flatten()
        .filter_map(|(spec, _)| spec.strip_suffix("/tcp").and_then(|p| p.parse().ok()))
        .collect();
    ports.sort_unstable();
    ports
}

/// The TCP ports something listens on inside the service, read from its `/proc/net/tcp{,6}`
/// through `docker exec`: this works wherever the engine is, without reaching the service's
/// network. `None` when the image cannot show them.
async fn listening_ports(job: &Job, name: &str) -> Option<Vec<u16>> {
    let exec = job
        .docker
        .create_exec(
            name,
            CreateExecOptions {
                attach_stdout: Some(true),
                attach_stderr: Some(false),
                cmd: Some(vec!["cat", "/proc/net/tcp", "/proc/net/tcp6"]),
                ..Default::default()
            },
        )
        .await
        .ok()?;
    let StartExecResults::Attached { mut output, .. } =
        job.docker.start_exec(&exec.id, None).await.ok()?
    else {
        return None;
    };
    let mut text = Vec::new();
    while let Some(Ok(chunk)) = output.next().await {
        text.extend_from_slice(&chunk.into_bytes());
    }
    let text = String::from_utf8_lossy(&text);
    (!text.trim().is_empty()).then(|| parse_listening(&text))
}

/// Local ports in state `0A` (LISTEN) of `/proc/net/tcp` lines (`sl local rem st ...`).
fn parse_listening(proc_net_tcp: &str) -> Vec<u16> {
    proc_net_tcp
        .lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (local, state) = (fields.get(1)?, fields.get(3)?);
            let port = local.rsplit_once(':')?.1;
            (*state == "0A")
                .then(|| u16::from_str_radix(port, 16).ok())
                .flatten()
        })
        .collect()
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

/// GitLab's aliases of every service: `tutum/wordpress:1` → `tutum-wordpress` and
/// `tutum__wordpress`; a registry's port is left out (`reg.local:5000/g/redis` → `reg.local-g-redis`).
pub(crate) fn default_aliases(image: &str) -> Vec<String> {
    let name = image.split('@').next().unwrap_or(image);
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    let name = match name[last_slash..].rfind(':') {
        Some(i) => &name[..last_slash + i],
        None => name,
    };
    let name = match (name.find(':'), name.find('/')) {
        (Some(colon), Some(slash)) if colon < slash => {
            format!("{}{}", &name[..colon], &name[slash..])
        }
        _ => name.to_string(),
    };
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
    fn listening_ports_come_from_proc_net_tcp() {
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue\n\
                   \x20  0: 00000000:0050 00000000:0000 0A 00000000:00000000 00:00000000\n\
                   \x20  1: 0100007F:1538 00000000:0000 0A 00000000:00000000 00:00000000\n\
                   \x20  2: 0100007F:9C40 0100007F:0050 01 00000000:00000000 00:00000000\n\
                   \x20  0: 00000000000000000000000000000000:18EB 00000000000000000000000000000000:0000 0A\n";
        assert_eq!(parse_listening(tcp), vec![80, 5432, 6379]);
    }

    #[test]
    fn services_are_waited_for_on_their_exposed_or_chosen_port() {
        let mut config = bollard::models::ContainerConfig {
            exposed_ports: Some(HashMap::from([
                ("6379/tcp".to_string(), HashMap::new()),
                ("53/udp".to_string(), HashMap::new()),
                ("80/tcp".to_string(), HashMap::new()),
            ])),
            env: Some(vec!["PATH=/bin".to_string()]),
            ..Default::default()
        };
        assert_eq!(tcp_ports(Some(&config)), vec![80, 6379]);
        config.env = Some(vec!["HEALTHCHECK_TCP_PORT=8080".to_string()]);
        assert_eq!(tcp_ports(Some(&config)), vec![8080]);
        assert!(tcp_ports(None).is_empty());
    }

    #[test]
    fn aliases_from_image_names() {
        assert_eq!(
            default_aliases("tutum/wordpress:1"),
            vec!["tutum-wordpress", "tutum__wordpress"]
        );
        assert_eq!(default_aliases("postgres:16"), vec!["postgres"]);
        assert_eq!(
            default_aliases("registry.local:5000/g/redis@sha256:ab"),
            vec!["registry.local-g-redis", "registry.local__g__redis"]
        );
    }
}
