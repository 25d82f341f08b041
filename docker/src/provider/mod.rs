//! Machine providers: where build machines come from. One trait, so that the `docker` provider
//! (sandboxes on a Docker engine), the `docker-machine` provider (VMs through its CLI) and cloud
//! providers are interchangeable for the daemon.

mod docker;
mod docker_machine;
mod locks;

use std::fmt;

use drover_core::CreationFailure;
use futures_util::future::BoxFuture;

use crate::engine::EngineConfig;
pub use docker::{DockerProvider, DockerProviderConfig};
#[cfg(feature = "testing")]
pub use docker_machine::fake::{FakeCall, FakeDockerMachine};
pub use docker_machine::{
    DockerMachineConfig, DockerMachineProvider, DockerMachineSetupError, DockerMachineTimeouts,
    mask_option,
};

/// Where a machine's jobs run: its Docker engine, and the sandbox objects jobs attach to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineEndpoint {
    /// The machine's name; `None` for jobs of runners without machines (the plain `docker`
    /// executor), which run on `engine` directly.
    pub machine: Option<String>,
    pub engine: EngineConfig,
    /// A network the machine's jobs and services join; `None`: each job gets its own.
    pub network: Option<String>,
    /// A volume the machine's jobs build in (kept across the machine's jobs, so `GIT_STRATEGY=fetch`
    /// reuses the working copy); `None`: each job gets its own.
    pub builds_volume: Option<String>,
}

impl MachineEndpoint {
    /// Jobs straight on an engine, without a machine (`executor = "docker"`).
    pub fn engine_only(engine: EngineConfig) -> MachineEndpoint {
        MachineEndpoint {
            machine: None,
            engine,
            network: None,
            builds_volume: None,
        }
    }
}

/// Why a provider call failed, which decides what the core does next.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ProviderErrorKind {
    /// Worth retrying soon (engine unreachable, a timeout, a registry hiccup).
    Retryable,
    /// Out of capacity (quota, disk): back off longer.
    Quota,
    /// Will not work without an operator (bad image, a foreign object with our name).
    Fatal,
    /// The machine does not exist (from [`MachineProvider::endpoint`]).
    NotFound,
}

/// A failed provider call on one machine.
#[derive(Debug, thiserror::Error)]
pub struct ProviderError {
    pub machine: String,
    pub kind: ProviderErrorKind,
    pub message: String,
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "machine {}: {}", self.machine, self.message)
    }
}

impl ProviderError {
    pub fn new(
        machine: &str,
        kind: ProviderErrorKind,
        message: impl Into<String>,
    ) -> ProviderError {
        ProviderError {
            machine: machine.to_string(),
            kind,
            message: message.into(),
        }
    }

    /// The core's view of a failed creation.
    pub fn creation_failure(&self) -> CreationFailure {
        match self.kind {
            ProviderErrorKind::Retryable | ProviderErrorKind::NotFound => {
                CreationFailure::Retryable
            }
            ProviderErrorKind::Quota => CreationFailure::Quota,
            ProviderErrorKind::Fatal => CreationFailure::Fatal,
        }
    }
}

/// Creates, removes and lists build machines by name. Every call is idempotent by name, so that
/// replaying the journal after a crash can issue the same call again; calls on one name are
/// serialised (a `remove` during a `create` waits for it, then removes).
pub trait MachineProvider: Send + Sync {
    /// Creates the machine, or finishes one that exists in part, or adopts a complete one.
    fn create<'a>(&'a self, name: &'a str)
    -> BoxFuture<'a, Result<MachineEndpoint, ProviderError>>;

    /// Removes the machine and everything on it; an absent machine is `Ok`.
    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), ProviderError>>;

    /// The names of the machines (complete or not) whose names start with `prefix`, sorted.
    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, ProviderError>>;

    /// How to reach a complete machine's engine; `NotFound` if it is absent or incomplete.
    fn endpoint<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<MachineEndpoint, ProviderError>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_map_to_creation_failures() {
        let e = |kind| ProviderError::new("m", kind, "x").creation_failure();
        assert_eq!(e(ProviderErrorKind::Retryable), CreationFailure::Retryable);
        assert_eq!(e(ProviderErrorKind::Quota), CreationFailure::Quota);
        assert_eq!(e(ProviderErrorKind::Fatal), CreationFailure::Fatal);
        assert_eq!(
            ProviderError::new("m1", ProviderErrorKind::Fatal, "bad").to_string(),
            "machine m1: bad"
        );
    }
}
