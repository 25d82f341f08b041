//! The `docker` provider: a machine is a sandbox on a Docker engine.
//!
//! A sandbox is three labelled objects, all named after the machine:
//! - a **builds volume** (`<name>-builds`): the jobs' working copies, kept across the machine's jobs
//!   and dropped with it, so `MaxBuilds` gives a fresh one;
//! - a **network** (`<name>`): the machine's jobs and their services meet there, apart from other
//!   machines' jobs;
//! - an **anchor container** (`<name>`), created from the runner's default image and never started.
//!   It costs no process, and it is the sandbox's commit record: created last, so "the anchor
//!   exists" means "the machine is complete". It also keeps the default image referenced, so the
//!   engine's image pruning cannot take the warm image away from an idle machine.
//!
//! A sandbox also gets a **warm build container** (`<name>-warm`, labelled with the machine) from
//! the executor once a job ran on it: started ahead of the next job, which runs its steps there by
//! exec (see `drover_docker`'s executor). The machine's label makes its removal take it; the
//! executor awaits a warm container's start before a job's outcome, so a removal after the job
//! never races it.
//!
//! Creation checks the default image per the pull policy before the anchor exists, so an idle
//! machine (`IdleCount`) is real warm capacity: the image is present, the volume and network ready.
//! Every object carries `drover.machine=<name>` and `drover.runner=<runner>`; listing and removal
//! go by those labels, so a half-created sandbox is found and removed like a complete one.

use std::collections::{BTreeSet, HashMap};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, NetworkCreateRequest, VolumeCreateOptions};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, ListNetworksOptions,
    ListVolumesOptions,
};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use drover_docker::{
    EngineConfig, EngineError, ImageError, MachineEndpoint, Pull, PullPolicy, RegistryCredential,
    ensure_image_untraced, is_status, labels, remove_labelled,
};

use crate::{MachineProvider, NameLocks, ProviderError, ProviderErrorKind};

/// Where the anchor container mounts the builds volume (only so the volume counts as in use).
const ANCHOR_MOUNT: &str = "/builds";
const ANCHOR_COMMAND: &str = "/drover-sandbox-anchor-never-started";

/// The settings of a runner's `docker` provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerProviderConfig {
    /// The engine the sandboxes live on (`[runners.machine] DockerHost`).
    pub engine: EngineConfig,
    /// The runner's short token: the `drover.runner` label of every object.
    pub runner: String,
    /// The runner's default image (`[runners.docker] image`), present on a machine before a job
    /// needs it.
    pub image: String,
    pub pull_policy: Vec<PullPolicy>,
    pub credentials: Vec<RegistryCredential>,
    pub registry_mirrors: Vec<String>,
}

/// Sandboxes on one Docker engine.
pub struct DockerProvider {
    config: DockerProviderConfig,
    docker: Docker,
    locks: NameLocks,
}

impl DockerProvider {
    /// Connects to the engine (negotiating the API version).
    pub async fn connect(config: DockerProviderConfig) -> Result<DockerProvider, EngineError> {
        let docker = config.engine.connect().await?;
        Ok(DockerProvider {
            config,
            docker,
            locks: NameLocks::new(),
        })
    }

    /// Serialises calls on a name with every provider that shares `locks` (see [`NameLocks`]).
    pub fn with_locks(mut self, locks: NameLocks) -> DockerProvider {
        self.locks = locks;
        self
    }

    fn endpoint_of(&self, name: &str) -> MachineEndpoint {
        MachineEndpoint {
            machine: Some(name.to_string()),
            engine: self.config.engine.clone(),
            network: Some(name.to_string()),
            builds_volume: Some(volume_name(name)),
        }
    }

    fn labels(&self, name: &str, role: &str) -> HashMap<String, String> {
        HashMap::from([
            (labels::MACHINE.to_string(), name.to_string()),
            (labels::RUNNER.to_string(), self.config.runner.clone()),
            (labels::ROLE.to_string(), role.to_string()),
        ])
    }

    async fn create_locked(&self, name: &str) -> Result<MachineEndpoint, ProviderError> {
        let err = |e| docker_error(name, e);
        let volume = VolumeCreateOptions {
            name: Some(volume_name(name)),
            labels: Some(self.labels(name, labels::ROLE_BUILDS)),
            ..Default::default()
        };
        // Creating an existing volume returns it: check it is ours, not a stranger's.
        let volume = self.docker.create_volume(volume).await.map_err(err)?;
        ensure_ours(name, "volume", &volume.name, Some(&volume.labels))?;

        match self
            .docker
            .inspect_network(
                name,
                None::<bollard::query_parameters::InspectNetworkOptions>,
            )
            .await
        {
            Ok(network) => ensure_ours(name, "network", name, network.labels.as_ref())?,
            Err(e) if is_status(&e, &[404]) => {
                let request = NetworkCreateRequest {
                    name: name.to_string(),
                    driver: Some("bridge".to_string()),
                    labels: Some(self.labels(name, labels::ROLE_NETWORK)),
                    ..Default::default()
                };
                self.docker.create_network(request).await.map_err(err)?;
            }
            Err(e) => return Err(err(e)),
        }

        let pull = Pull {
            policies: &self.config.pull_policy,
            credentials: &self.config.credentials,
            mirrors: &self.config.registry_mirrors,
        };
        ensure_image_untraced(&self.docker, &self.config.image, pull)
            .await
            .map_err(|e| image_error(name, &self.config.pull_policy, e))?;

        match self
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(anchor) => {
                let labels = anchor.config.and_then(|c| c.labels);
                ensure_ours(name, "container", name, labels.as_ref())?;
            }
            Err(e) if is_status(&e, &[404]) => {
                let body = ContainerCreateBody {
                    image: Some(self.config.image.clone()),
                    // Never started, but the engine refuses a container with nothing to run.
                    entrypoint: Some(vec![ANCHOR_COMMAND.to_string()]),
                    labels: Some(self.labels(name, labels::ROLE_ANCHOR)),
                    host_config: Some(HostConfig {
                        binds: Some(vec![format!("{}:{ANCHOR_MOUNT}", volume_name(name))]),
                        network_mode: Some(name.to_string()),
                        ..Default::default()
                    }),
                    ..Default::default()
                };
                let options = CreateContainerOptions {
                    name: Some(name.to_string()),
                    ..Default::default()
                };
                self.docker
                    .create_container(Some(options), body)
                    .await
                    .map_err(err)?;
            }
            Err(e) => return Err(err(e)),
        }
        Ok(self.endpoint_of(name))
    }

    async fn remove_locked(&self, name: &str) -> Result<(), ProviderError> {
        let filter = labels::filter(&[(labels::MACHINE, Some(name))]);
        remove_labelled(&self.docker, filter)
            .await
            .map_err(|e| docker_error(name, e))
    }

    async fn list_all(&self, prefix: &str) -> Result<Vec<String>, bollard::errors::Error> {
        let filter = labels::filter(&[(labels::MACHINE, None)]);
        let mut names = BTreeSet::new();
        let mut keep = |labels: Option<&HashMap<String, String>>| {
            if let Some(name) = labels.and_then(|l| l.get(labels::MACHINE))
                && name.starts_with(prefix)
            {
                names.insert(name.clone());
            }
        };
        let options = ListContainersOptions {
            all: true,
            filters: Some(filter.clone()),
            ..Default::default()
        };
        for container in self.docker.list_containers(Some(options)).await? {
            keep(container.labels.as_ref());
        }
        let options = ListNetworksOptions {
            filters: Some(filter.clone()),
        };
        for network in self.docker.list_networks(Some(options)).await? {
            keep(network.labels.as_ref());
        }
        let options = ListVolumesOptions {
            filters: Some(filter),
        };
        for volume in self
            .docker
            .list_volumes(Some(options))
            .await?
            .volumes
            .unwrap_or_default()
        {
            keep(Some(&volume.labels));
        }
        Ok(names.into_iter().collect())
    }

    async fn endpoint_checked(&self, name: &str) -> Result<MachineEndpoint, ProviderError> {
        match self
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await
        {
            Ok(anchor) => {
                let labels = anchor.config.and_then(|c| c.labels).unwrap_or_default();
                match labels.get(labels::ROLE).map(String::as_str) == Some(labels::ROLE_ANCHOR)
                    && labels.get(labels::MACHINE).map(String::as_str) == Some(name)
                {
                    true => Ok(self.endpoint_of(name)),
                    false => Err(ProviderError::new(
                        name,
                        ProviderErrorKind::NotFound,
                        "the container of that name is not a drover sandbox",
                    )),
                }
            }
            Err(e) if is_status(&e, &[404]) => Err(ProviderError::new(
                name,
                ProviderErrorKind::NotFound,
                "no such sandbox (or its creation did not finish)",
            )),
            Err(e) => Err(docker_error(name, e)),
        }
    }
}

impl MachineProvider for DockerProvider {
    fn create<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<MachineEndpoint, ProviderError>> {
        async move {
            let _guard = self.locks.lock(name).await;
            tracing::debug!(machine = name, "creating sandbox");
            self.create_locked(name).await
        }
        .boxed()
    }

    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        async move {
            let _guard = self.locks.lock(name).await;
            tracing::debug!(machine = name, "removing sandbox");
            self.remove_locked(name).await
        }
        .boxed()
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, ProviderError>> {
        async move {
            self.list_all(prefix)
                .await
                .map_err(|e| docker_error(prefix, e))
        }
        .boxed()
    }

    fn endpoint<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<MachineEndpoint, ProviderError>> {
        async move {
            let _guard = self.locks.lock(name).await;
            self.endpoint_checked(name).await
        }
        .boxed()
    }
}

fn volume_name(machine: &str) -> String {
    format!("{machine}-builds")
}

/// An object with the machine's name must carry the machine's label: never adopt (and later
/// remove) something drover did not create.
fn ensure_ours(
    machine: &str,
    what: &str,
    object: &str,
    labels: Option<&HashMap<String, String>>,
) -> Result<(), ProviderError> {
    match labels
        .and_then(|l| l.get(labels::MACHINE))
        .map(String::as_str)
    {
        Some(label) if label == machine => Ok(()),
        _ => Err(ProviderError::new(
            machine,
            ProviderErrorKind::Fatal,
            format!(
                "a {what} named {object} exists that drover did not create for this machine; \
                 remove or rename it"
            ),
        )),
    }
}

fn docker_error(machine: &str, err: bollard::errors::Error) -> ProviderError {
    use bollard::errors::Error;
    let kind = match &err {
        Error::DockerResponseServerError { message, .. }
            if message.contains("no space left") || message.contains("quota") =>
        {
            ProviderErrorKind::Quota
        }
        Error::DockerResponseServerError { status_code, .. } if *status_code < 500 => {
            ProviderErrorKind::Fatal
        }
        _ => ProviderErrorKind::Retryable,
    };
    ProviderError::new(machine, kind, format!("Docker engine: {err}"))
}

fn image_error(machine: &str, policies: &[PullPolicy], err: ImageError) -> ProviderError {
    let kind = match &err {
        // Only an operator can bring an image onto an engine that may not pull.
        ImageError::Pull { .. } if policies == [PullPolicy::Never] => ProviderErrorKind::Fatal,
        ImageError::Pull { .. } => ProviderErrorKind::Retryable,
        ImageError::Engine { .. } => ProviderErrorKind::Retryable,
    };
    ProviderError::new(machine, kind, err.to_string())
}
