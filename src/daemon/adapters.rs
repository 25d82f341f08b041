//! Building each runner's adapters from its settings: the GitLab link, the machine provider and the
//! job context, together a [`Runner`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use drover_docker::{EngineConfig, MachineEndpoint, TlsFiles};
use drover_gitlab::api::RunnerInfo;
use drover_gitlab::{Client, ClientConfig, RunnerIdentity};
use drover_providers::{
    DockerMachineConfig, DockerMachineProvider, DockerProvider, DockerProviderConfig,
    MachineProvider, NameLocks,
};

use super::aws_provider;
use super::build_spec::{home_registry_credentials, runner_credentials, runner_pull_policies};
use super::coordinator::{RunnerLink, features};
use super::jobs::RunnerContext;
use super::runners::{self, Place, Runner};
use super::state_dir::StateDir;
use crate::config::{ExecutorKind, Provider, RunnerSettings};
use drover_core::{Core, RunnerId};

/// drover's identity towards GitLab (the `User-Agent` and `info`), for the daemon and the
/// commands alike.
pub fn identity() -> RunnerIdentity {
    RunnerIdentity::drover(
        env!("CARGO_PKG_VERSION"),
        option_env!("DROVER_REVISION").unwrap_or("unknown"),
    )
}

/// The `info` block of a runner with this executor (`docker+machine` or `docker`): what the
/// daemon sends with every request, and what `register` and `verify` send, so GitLab shows one
/// description of this host's runner manager whichever of them spoke last.
pub fn runner_info(executor: &str) -> RunnerInfo {
    identity().info(executor, "sh", features())
}

/// What every runner's adapters are built against.
#[derive(Clone, Debug)]
pub struct Site {
    /// This drover's system id (`s_…`).
    pub system_id: String,
    /// The config file: relative paths in it are read beside it.
    pub config_path: PathBuf,
    /// The state directory: providers keep their records there, and every provider built for it
    /// shares one table of per-name locks.
    pub state_dir: PathBuf,
}

/// A runner's adapters from its settings; `short` is its machine key (it names the runner's
/// objects on engines). The provider of the `previous` settings is kept when these make it the
/// same way; a new one shares the old one's lock table, so calls on one machine never overlap.
pub async fn build(
    settings: &RunnerSettings,
    short: &str,
    site: &Site,
    previous: Option<(&RunnerSettings, &Place)>,
) -> anyhow::Result<Runner> {
    let (link, context) = runner_link(settings, short, &site.system_id, &site.config_path)?;
    let place = match settings.executor {
        ExecutorKind::Docker => Place::Engine(local_engine(settings)),
        ExecutorKind::DockerMachine => match previous {
            Some((before, place @ Place::Provider(_))) if same_provider(before, settings) => {
                place.clone()
            }
            _ => match provider(settings, short, &site.state_dir).await? {
                Some(provider) => Place::Provider(provider),
                None => Place::Nowhere,
            },
        },
        ExecutorKind::DockerAutoscaler => match (previous, &settings.autoscaler) {
            (Some((before, place @ Place::Provider(_))), _) if same_provider(before, settings) => {
                place.clone()
            }
            (_, Some(a)) => Place::Provider(
                aws_provider::provider(&settings.name, a, &site.config_path, &site.state_dir)
                    .await?,
            ),
            (_, None) => Place::Nowhere,
        },
    };
    Ok(Runner {
        label: runners::label(settings, short),
        link,
        context,
        place,
    })
}

/// The GitLab link and the job context of a runner.
pub fn runner_link(
    settings: &RunnerSettings,
    short_token: &str,
    system_id: &str,
    config_path: &Path,
) -> anyhow::Result<(RunnerLink, Arc<RunnerContext>)> {
    let (url, token) = settings.require_registered()?;
    let mut client_config = ClientConfig::new(url, identity());
    let tls_ca_file = settings
        .tls_ca_file
        .as_ref()
        .map(|f| crate::paths::in_config_dir(config_path, Path::new(f)));
    client_config.tls_ca_file = tls_ca_file.clone();
    let client = Client::new(client_config).with_context(|| {
        format!(
            "runner {:?}: setting up the GitLab client for {url}",
            settings.name
        )
    })?;
    let executor = match settings.executor {
        ExecutorKind::DockerMachine => "docker+machine",
        ExecutorKind::Docker => "docker",
        ExecutorKind::DockerAutoscaler => "docker-autoscaler",
    };
    let info = runner_info(executor);
    let token = token.clone();
    let label = runners::label(settings, short_token);
    let link = RunnerLink::new(
        client.clone(),
        token,
        system_id.to_string(),
        info.clone(),
        label,
    );
    let context = Arc::new(RunnerContext {
        name: settings.name.clone(),
        client,
        info,
        settings: settings.clone(),
        short_token: short_token.to_string(),
        system_id: system_id.to_string(),
        registry_mirrors: settings
            .machine
            .as_ref()
            .map(|m| m.registry_mirrors.clone())
            .unwrap_or_default(),
        slots: Default::default(),
        tls_ca_file,
    });
    Ok((link, context))
}

/// The engine a plain `docker` runner runs its jobs on.
pub fn local_engine(settings: &RunnerSettings) -> MachineEndpoint {
    MachineEndpoint::engine_only(EngineConfig {
        host: settings.docker.host.clone(),
        tls: settings
            .docker
            .tls_cert_path
            .as_ref()
            .map(TlsFiles::from_dir),
    })
}

/// Whether two versions of a runner's settings make the same machine provider. A reload that
/// changes only other settings (`output_limit`, `environment` but its `DOCKER_AUTH_CONFIG`, the
/// token, the autoscaler's policies, ...) keeps the provider, and with it the serialisation of
/// calls on one machine (a removal waits for the creation in flight).
pub fn same_provider(a: &RunnerSettings, b: &RunnerSettings) -> bool {
    a.executor == b.executor
        && a.machine == b.machine
        && aws_provider::same_group(a.autoscaler.as_deref(), b.autoscaler.as_deref())
        && a.docker.image == b.docker.image
        && a.docker.pull_policy == b.docker.pull_policy
        && docker_auth_config(a) == docker_auth_config(b)
}

/// Logs an error when a runner's provider settings differ from those of the copy kept when it
/// last ran while the core holds machines of it: they were made by the old provider (another
/// engine, other `MachineOptions`), which the new one cannot reach, so the core will declare them
/// lost and they must be removed by hand. Called at startup, before the copies are replaced.
pub fn warn_if_provider_changed(
    state_dir: &StateDir,
    core: &Core,
    id: RunnerId,
    now: &RunnerSettings,
) {
    let mut machines: Vec<String> = core
        .state()
        .machines()
        .iter()
        .filter(|(_, m)| m.runner == id)
        .map(|(_, m)| m.name.clone())
        .collect();
    if machines.is_empty() {
        return;
    }
    machines.sort();
    let kept = state_dir.load_runner_config(&now.name);
    let before = kept.as_deref().and_then(|text| {
        let origin = state_dir.root().join("runners");
        crate::config::parse(text, &origin)
            .ok()?
            .runner(&now.name)
            .cloned()
    });
    if let Some(before) = before
        && !same_provider(&before, now)
    {
        tracing::error!(
            runner = %runners::label(now, "-"),
            machines = %machines.join(" "),
            "the runner's machine provider (DockerHost, MachineOptions, MachineDriver, ...) \
             changed while drover was down: the machines made by the previous provider cannot be \
             reached and will be declared lost. Remove them by hand where the previous settings \
             made them: {}",
            removal_hint(&before, &machines)
        );
    }
}

/// How an operator removes `machines` made under `settings`.
fn removal_hint(settings: &RunnerSettings, machines: &[String]) -> String {
    let names = machines.join(" ");
    match settings.machine.as_ref() {
        Some(m) if m.provider == Provider::Docker => format!(
            "on the engine {}, remove the containers, networks and volumes labelled \
             drover.machine=<name> (`docker rm -f`, `docker network rm`, `docker volume rm`) for \
             {names}",
            m.docker_host.as_deref().unwrap_or("of DOCKER_HOST")
        ),
        _ => {
            format!("`docker-machine rm -y {names}` with the previous MachineDriver's credentials")
        }
    }
}

/// The runner's `DOCKER_AUTH_CONFIG`: the sandboxes' credentials.
fn docker_auth_config(settings: &RunnerSettings) -> Option<&str> {
    settings
        .environment
        .iter()
        .rev()
        .find(|(k, _)| k == "DOCKER_AUTH_CONFIG")
        .map(|(_, v)| v.as_str())
}

/// The credentials a sandbox pulls the runner's default image with. One that cannot be read is
/// logged (never its content) and left out: the pull may still succeed without it.
fn sandbox_credentials(
    settings: &RunnerSettings,
    label: &str,
) -> Vec<drover_docker::RegistryCredential> {
    let home = home_registry_credentials().unwrap_or_else(|err| {
        tracing::warn!(runner = %label, error = %err, "ignoring registry credentials");
        Vec::new()
    });
    runner_credentials(settings, &home).unwrap_or_else(|err| {
        tracing::warn!(runner = %label, error = %err, "ignoring registry credentials");
        home
    })
}

/// The machine provider of a `docker+machine` runner. Every provider built for one state directory
/// shares one table of per-name locks, so after a reload that replaced a runner's provider (new
/// `MachineOptions`, another `DockerHost`) a call on a machine still waits for the old provider's
/// call on it. docker-machine keeps its crash records under `<state_dir>/docker-machine`.
pub async fn provider(
    settings: &RunnerSettings,
    short_token: &str,
    state_dir: &Path,
) -> anyhow::Result<Option<Arc<dyn MachineProvider>>> {
    let Some(machine) = &settings.machine else {
        return Ok(None);
    };
    let locks = NameLocks::shared(state_dir);
    match machine.provider {
        Provider::Docker => {
            let config = DockerProviderConfig {
                engine: EngineConfig {
                    host: machine.docker_host.clone(),
                    tls: None,
                },
                runner: short_token.to_string(),
                image: settings
                    .docker
                    .image
                    .clone()
                    .unwrap_or_else(|| "alpine:latest".to_string()),
                pull_policy: runner_pull_policies(settings),
                credentials: sandbox_credentials(settings, &runners::label(settings, short_token)),
                registry_mirrors: machine.registry_mirrors.clone(),
            };
            let provider = DockerProvider::connect(config).await.with_context(|| {
                format!(
                    "runner {:?}: connecting to the machines' Docker engine",
                    settings.name
                )
            })?;
            Ok(Some(Arc::new(provider.with_locks(locks))))
        }
        Provider::DockerMachine => {
            let mut config = DockerMachineConfig::new(
                machine.machine_driver.clone().unwrap_or_default(),
                machine.machine_options.clone(),
                machine.machine_options_with_name.clone(),
            );
            if let Some(path) = &machine.docker_machine_path {
                config.program = path.into();
            }
            let records = state_dir.join("docker-machine");
            let provider = DockerMachineProvider::new(config)
                .map_err(anyhow::Error::from)
                .and_then(|p| {
                    p.with_state_dir(&records).with_context(|| {
                        format!("keeping docker-machine's records in {}", records.display())
                    })
                })
                .with_context(|| {
                    format!(
                        "runner {:?}: setting up the docker-machine provider",
                        settings.name
                    )
                })?
                .with_locks(locks);
            tracing::info!(
                runner = %runners::label(settings, short_token),
                program = %provider.config().program.display(),
                storage = %provider
                    .config()
                    .storage_path
                    .as_deref()
                    .unwrap_or(Path::new(""))
                    .display(),
                "machines come from docker-machine"
            );
            Ok(Some(Arc::new(provider)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn runner(output_limit: u32, options: &str) -> RunnerSettings {
        let text = format!(
            "concurrent = 4\n[[runners]]\nname = \"vms\"\nexecutor = \"docker+machine\"\n\
             output_limit = {output_limit}\n[runners.docker]\nimage = \"alpine\"\n[runners.machine]\n\
             IdleCount = 1\nMachineName = \"vm-%s\"\nMachineDriver = \"fakecloud\"\n\
             MachineOptions = [\"{options}\"]\n"
        );
        let loaded = crate::config::parse(&text, Path::new("config.toml")).unwrap();
        loaded.runners[0].clone()
    }

    #[test]
    fn a_relative_tls_ca_file_is_read_beside_the_config() {
        let text = "concurrent = 1\n[[runners]]\nname = \"a\"\nurl = \"https://gitlab.example.com\"\n\
                    token = \"glrt-x\"\ntls-ca-file = \"certs/ca.pem\"\nexecutor = \"docker\"\n";
        let config = Path::new("/nonexistent/drover/config.toml");
        let loaded = crate::config::parse(text, config).unwrap();
        let Err(error) = runner_link(&loaded.runners[0], "x", "r_000000000000", config) else {
            panic!("the CA file does not exist");
        };
        assert!(
            format!("{error:#}").contains("/nonexistent/drover/certs/ca.pem"),
            "{error:#}"
        );
    }

    #[test]
    fn a_provider_changed_while_down_names_the_machines_and_how_to_remove_them() {
        let names = ["vm-1".to_string(), "vm-2".to_string()];
        let hint = removal_hint(&runner(4096, "fakecloud-region=eu"), &names);
        assert!(hint.contains("`docker-machine rm -y vm-1 vm-2`"), "{hint}");
        let mut sandboxes = runner(4096, "x");
        if let Some(m) = sandboxes.machine.as_mut() {
            m.provider = Provider::Docker;
            m.docker_host = Some("tcp://10.0.0.9:2375".into());
        }
        let hint = removal_hint(&sandboxes, &names);
        assert!(hint.contains("tcp://10.0.0.9:2375"), "{hint}");
        assert!(
            hint.contains("drover.machine=<name>") && hint.contains("vm-1 vm-2"),
            "{hint}"
        );
    }

    #[test]
    fn a_reload_keeps_the_provider_unless_what_makes_machines_changes() {
        let before = runner(4096, "fakecloud-region=eu");
        let more = runner(8192, "fakecloud-region=eu");
        assert!(before != more, "the settings differ, in output_limit");
        assert!(same_provider(&before, &more));
        assert!(!same_provider(
            &before,
            &runner(4096, "fakecloud-region=us")
        ));
        // The sandboxes' registry credentials come from the environment.
        let mut other_env = before.clone();
        other_env.environment.push(("FOO".into(), "bar".into()));
        assert!(same_provider(&before, &other_env));
        let mut auth = before.clone();
        auth.environment
            .push(("DOCKER_AUTH_CONFIG".into(), "{\"auths\": {}}".into()));
        assert!(!same_provider(&before, &auth));
    }
}
