//! drover's Docker adapter: the job [`executor`] and what it needs of an engine.
//!
//! It talks to Docker engines through bollard, negotiating the API version down to the engine's
//! (Docker 20.10 speaks 1.41). Everything drover creates on an engine carries `drover.*` labels
//! ([`labels`]): reconciliation after a crash and cleanup after a job find objects by label alone.
//! Machines come from the `drover-providers` crate, which hands the executor a [`MachineEndpoint`].
//!
//! - [`Executor`] runs one job on a [`MachineEndpoint`]: one container per step, services as
//!   sidecars, output streamed as [`TraceChunk`]s with resumable [`LogCursor`]s.
//! - [`archive`] makes and unpacks a job's archives (artifacts, caches) through the engine's
//!   archive endpoints; the executor moves them to GitLab through an [`ArtifactTransport`].

pub mod archive;
pub mod auth;
mod endpoint;
mod engine;
pub mod executor;
pub mod expand;
pub mod files;
mod image;
pub mod labels;
pub mod ssh;
#[cfg(feature = "testing")]
pub mod testing;
mod trace;

pub use auth::RegistryCredential;
pub use endpoint::MachineEndpoint;
pub use engine::{EngineConfig, EngineError, TlsFiles, is_status};
pub use executor::cleanup::remove_labelled;
pub use executor::spec::{
    ArtifactSpec, ArtifactTransport, BuildSpec, CacheLocation, CacheSave, CacheSource, CacheSpec,
    CacheTarget, ContainerOptions, DependencySpec, GitSpec, GitStrategy, ImageSpec, LineLevel,
    ServiceSpec, Shell, SignedUrl, StepName, StepSpec, SubmoduleStrategy, Submodules,
    TransferError, TransferLog, Transport, Variable, When,
};
pub use executor::{Executor, ExecutorError, ExecutorOptions, JobControl, JobHandle};
pub use image::{ImageError, Pull, PullPolicy, ensure_image_untraced};
pub use trace::{LogCursor, TraceChunk, TraceSink, error_line};
