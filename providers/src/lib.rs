//! drover's machine providers: where build machines come from.
//!
//! One trait, [`MachineProvider`], so the daemon treats every kind of machine alike: create by
//! name, remove by name (idempotently), list by this manager's name prefix, hand the executor a
//! Docker endpoint, shut down. Two implementations today:
//!
//! - [`DockerProvider`]: a machine is a sandbox (builds volume + network + anchor container) on one
//!   Docker engine (`Provider = "docker"`).
//! - [`DockerMachineProvider`]: a machine is a VM made by the `docker-machine` command from GitLab
//!   Runner's `MachineDriver` and `MachineOptions`. Its child processes die with drover
//!   ([`children`]), and a creation a crash cut short is handed to `docker-machine rm -y`.
//!
//! Calls on one machine name are serialised through [`NameLocks`], a table that providers of the
//! same state directory share, so a reload that replaces a provider never runs the old and the new
//! one on the same name at once. Every provider passes the same behavioural suite,
//! [`conformance`] (cargo feature `testing`).

#[cfg(feature = "aws")]
pub mod aws;
pub mod children;
#[cfg(feature = "testing")]
pub mod conformance;
mod docker;
mod docker_machine;
mod error;
mod locks;
mod provider;

pub use docker::{DockerProvider, DockerProviderConfig};
#[cfg(feature = "testing")]
pub use docker_machine::fake::{FakeCall, FakeDockerMachine};
pub use docker_machine::{
    DockerMachineConfig, DockerMachineProvider, DockerMachineSetupError, DockerMachineTimeouts,
    mask_option,
};
pub use drover_docker::MachineEndpoint;
pub use error::{ProviderError, ProviderErrorKind};
pub use locks::{NameGuard, NameLocks};
pub use provider::MachineProvider;
