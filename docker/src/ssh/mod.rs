//! Docker over SSH to cloud instances (the docker-autoscaler executor's connector).
//!
//! One [`SshConnection`] per instance carries every Docker request of all the jobs on it: each
//! request opens a channel on the one SSH session, either a `direct-streamlocal@openssh.com`
//! forward to the engine's unix socket or an exec of `docker system dial-stdio` (GitLab Runner's
//! default, which needs the docker CLI on the instance). [`docker_over_ssh`] puts that under
//! bollard as a custom transport, so the executor drives a remote engine exactly as a local one.
//! A dropped session is dialled again on the next request.
//!
//! An [`crate::EngineConfig`] names a connection by its `ssh://` address ([`registry`]), so the
//! executor reaches an instance like any other engine. [`SshConnection::exec`] runs a command
//! (an instance's readiness check) on the same session.
//!
//! Keys ([`keys`]): one ed25519 key per manager, made once and kept 0600 in the state
//! directory, or an operator's static key (`key_path`).

mod connection;
pub mod keys;
pub mod registry;
mod transport;

pub use connection::{
    BeforeDial, DockerTunnel, ExecOutput, HostKeyPolicy, SshConnection, SshError, SshTarget,
};
pub use russh::keys::{PrivateKey, PublicKey};
pub use transport::docker_over_ssh;
