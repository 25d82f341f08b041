//! Reaching instances over SSH: one [`SshConnection`] per instance, shared by all its jobs and
//! named to the executor by its `ssh://` engine address; the key pushed through EC2 Instance
//! Connect right before each dial (unless static credentials), so no dial waits on a key; and
//! the readiness wait of a new instance (in service, `instance_ready_command`, Docker answering).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_docker::ssh::{
    self, BeforeDial, DockerTunnel, HostKeyPolicy, PrivateKey, SshConnection, SshTarget,
};
use futures_util::FutureExt;
use tokio::time::Instant;

use super::calls::{RetryPolicy, provider_error, retrying};
use super::config::ConnectorConfig;
use super::{AsgGroup, AwsErrorKind, InstanceState};
use crate::{ProviderError, ProviderErrorKind};

/// Bound on one Docker ping during the readiness wait.
const PING_TIMEOUT_SECS: u64 = 30;

/// SSH keepalive interval when the settings give none: a session whose instance vanished
/// (hard-terminated, network gone) is noticed in about a minute and a half, not TCP's ~15.
const DEFAULT_KEEPALIVE: Duration = Duration::from_secs(30);

/// The SSH side of a provider.
pub(super) struct Connector {
    group: Arc<AsgGroup>,
    config: ConnectorConfig,
    key: Arc<PrivateKey>,
    /// The public key pushed before each dial; `None` with static credentials.
    push: Option<String>,
    policy: RetryPolicy,
    /// Instance id → its connection.
    connections: Mutex<HashMap<String, Arc<SshConnection>>>,
}

/// Why an instance is not ready (yet).
enum NotReady {
    /// It will not be: it is gone.
    Gone(ProviderError),
    /// Not yet; the reason.
    Yet(String),
    /// The deadline cut the attempt short; what it was doing.
    Cut(String),
}

impl Connector {
    pub fn new(
        group: Arc<AsgGroup>,
        config: ConnectorConfig,
        key: Arc<PrivateKey>,
        policy: RetryPolicy,
    ) -> Connector {
        let push = (!config.use_static_credentials).then(|| ssh::keys::authorized_key(&key));
        Connector {
            group,
            config,
            key,
            push,
            policy,
            connections: Mutex::default(),
        }
    }

    /// The instance's connection and its engine address. The instance is described first, so
    /// one terminated behind drover's back is `NotFound`, named.
    pub async fn connection(
        &self,
        machine: &str,
        instance: &str,
    ) -> Result<(Arc<SshConnection>, String), ProviderError> {
        let user = self.config.username();
        let info = retrying(self.policy, || {
            self.group.connect_info(instance, user, None)
        })
        .await
        .map_err(|e| gone(machine, instance, e))?;
        let host = if self.config.use_external_addr {
            info.external_addr.or(info.internal_addr)
        } else {
            info.internal_addr
        }
        .ok_or_else(|| {
            ProviderError::new(
                machine,
                ProviderErrorKind::Retryable,
                format!("instance {instance} has no address yet"),
            )
        })?;
        let address = format!("{host}:{}", self.config.port());
        let mut connections = self.connections.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = connections.get(instance)
            && c.target().address == address
        {
            return Ok((c.clone(), ssh::registry::address(c, instance)));
        }
        let target = SshTarget {
            address,
            username: user.to_string(),
            key: self.key.clone(),
            tunnel: DockerTunnel::DialStdio,
            host_key: HostKeyPolicy::TrustFirstUse,
            keepalive: Some(self.config.keepalive.unwrap_or(DEFAULT_KEEPALIVE)),
            timeout: self.config.dial_timeout(),
        };
        let mut connection = SshConnection::new(target);
        if let Some(public_key) = &self.push {
            connection = connection.with_before_dial(self.push_hook(instance, public_key));
        }
        let connection = Arc::new(connection);
        let engine = ssh::registry::address(&connection, instance);
        ssh::registry::register(&engine, &connection);
        connections.insert(instance.to_string(), connection.clone());
        Ok((connection, engine))
    }

    /// Pushes the manager's public key for the instance's user, valid 60 s: right before a
    /// dial, so the dial never waits for a key and never meets an expired one.
    fn push_hook(&self, instance: &str, public_key: &str) -> BeforeDial {
        let group = self.group.clone();
        let instance = instance.to_string();
        let user = self.config.username().to_string();
        let public_key = public_key.to_string();
        let policy = self.policy;
        Arc::new(move || {
            let (group, instance, user, public_key) = (
                group.clone(),
                instance.clone(),
                user.clone(),
                public_key.clone(),
            );
            async move {
                let info = retrying(policy, || {
                    group.connect_info(&instance, &user, Some(&public_key))
                })
                .await
                .map_err(|e| e.to_string())?;
                if info.key_pushed {
                    Ok(())
                } else {
                    Err(format!(
                        "EC2 Instance Connect did not take the key for {user} on {instance}"
                    ))
                }
            }
            .boxed()
        })
    }

    /// Closes and forgets the instance's connection.
    pub async fn forget(&self, instance: &str) {
        let connection = self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(instance);
        if let Some(c) = connection {
            c.close().await;
        }
    }

    /// Closes every connection (shutdown): no session outlives the provider.
    pub async fn close_all(&self) {
        let all: Vec<_> = self
            .connections
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .drain()
            .map(|(_, c)| c)
            .collect();
        for c in all {
            c.close().await;
        }
    }

    /// Checks the instance is reachable now (fleeting's heartbeat: a command over SSH), within
    /// the dial timeout: it runs under the machine's lock, and a half-open session (the
    /// instance hard-terminated) would otherwise hold it until TCP gives up. A session that
    /// does not answer in time is closed, so the next request dials again.
    pub async fn heartbeat(
        &self,
        machine: &str,
        connection: &SshConnection,
    ) -> Result<(), ProviderError> {
        let timeout = self.config.dial_timeout();
        let Ok(result) = tokio::time::timeout(timeout, connection.exec("exit 0")).await else {
            // Closing a dead session only queues a disconnect; bounded all the same.
            let _ = tokio::time::timeout(timeout, connection.close()).await;
            return Err(ProviderError::new(
                machine,
                ProviderErrorKind::Retryable,
                format!("heartbeat `exit 0` over SSH had no answer within {timeout:?}"),
            ));
        };
        match result {
            Ok(out) if out.success() => Ok(()),
            Ok(out) => Err(ProviderError::new(
                machine,
                ProviderErrorKind::Retryable,
                format!("heartbeat `exit 0` over SSH ended with {:?}", out.status),
            )),
            Err(e) => Err(ProviderError::new(
                machine,
                ProviderErrorKind::Retryable,
                format!("heartbeat failed: {e}"),
            )),
        }
    }

    /// Waits until the instance is in service, answers SSH, passes `command` and its Docker
    /// engine answers, retrying with backoff until `deadline`. A timeout says what was last
    /// wrong; an instance that is gone fails at once (`NotFound`).
    pub async fn wait_ready(
        &self,
        machine: &str,
        instance: &str,
        command: Option<&str>,
        started: Instant,
        deadline: Instant,
    ) -> Result<(), ProviderError> {
        let mut attempt = 0;
        // The reason of the last attempt that ran to its end: the one worth reporting when the
        // deadline cuts a later attempt short (a slow dial on a busy host).
        let mut last_real: Option<String> = None;
        loop {
            attempt += 1;
            let why = match self.try_ready(machine, instance, command, deadline).await {
                Ok(()) => return Ok(()),
                Err(NotReady::Gone(e)) => return Err(e),
                Err(NotReady::Yet(why)) => {
                    last_real = Some(why.clone());
                    why
                }
                Err(NotReady::Cut(cut)) => match &last_real {
                    Some(real) => format!("{real} (then {cut})"),
                    None => cut,
                },
            };
            let wait = drover_core::doubling(
                Duration::from_millis(250),
                attempt - 1,
                Duration::from_secs(5),
            );
            // No attempt that the deadline would cut short: the message keeps the last real
            // reason.
            if Instant::now() + wait >= deadline {
                return Err(ProviderError::new(
                    machine,
                    ProviderErrorKind::Retryable,
                    format!(
                        "instance {instance} was not ready within {} ({attempt} attempts); \
                         last: {why}",
                        humantime::format_duration(round(deadline - started))
                    ),
                ));
            }
            tracing::debug!(machine, instance, attempt, "instance not ready: {why}");
            tokio::time::sleep(wait).await;
        }
    }

    async fn try_ready(
        &self,
        machine: &str,
        instance: &str,
        command: Option<&str>,
        deadline: Instant,
    ) -> Result<(), NotReady> {
        let instances = retrying(self.policy, || self.group.update())
            .await
            .map_err(|e| NotReady::Yet(e.to_string()))?;
        match instances.iter().find(|i| i.id == instance) {
            None => {
                return Err(NotReady::Gone(gone_error(
                    machine,
                    instance,
                    "it left the Auto Scaling group",
                )));
            }
            Some(i) if i.state == InstanceState::Deleting => {
                return Err(NotReady::Gone(gone_error(
                    machine,
                    instance,
                    &format!("the group is {}", i.lifecycle),
                )));
            }
            Some(i) if i.state != InstanceState::Running => {
                return Err(NotReady::Yet(format!("it is {}", i.lifecycle)));
            }
            Some(_) => {}
        }
        let (connection, _) =
            self.connection(machine, instance)
                .await
                .map_err(|e| match e.kind {
                    ProviderErrorKind::NotFound => NotReady::Gone(e),
                    _ => NotReady::Yet(e.message),
                })?;
        let left = deadline.saturating_duration_since(Instant::now());
        if let Some(command) = command {
            let out = tokio::time::timeout(left, connection.exec(command))
                .await
                .map_err(|_| {
                    NotReady::Cut(format!(
                        "instance_ready_command `{command}` (or the SSH dial before it) did not \
                         finish in time"
                    ))
                })?
                .map_err(|e| NotReady::Yet(e.to_string()))?;
            if !out.success() {
                let stderr = String::from_utf8_lossy(&out.stderr);
                let stderr = stderr.trim();
                let status = out
                    .status
                    .map_or("no exit status".to_string(), |s| format!("exit status {s}"));
                return Err(NotReady::Yet(format!(
                    "instance_ready_command `{command}` ended with {status}{}{stderr}",
                    if stderr.is_empty() { "" } else { ": " }
                )));
            }
        }
        let docker = ssh::docker_over_ssh(connection, PING_TIMEOUT_SECS)
            .map_err(|e| NotReady::Yet(format!("Docker over SSH: {e}")))?;
        docker
            .ping()
            .await
            .map_err(|e| NotReady::Yet(format!("Docker over SSH did not answer: {e}")))?;
        Ok(())
    }
}

/// An instance that is not there any more, for the job and the operator to read.
pub(super) fn gone_error(machine: &str, instance: &str, why: &str) -> ProviderError {
    ProviderError::new(
        machine,
        ProviderErrorKind::NotFound,
        format!("instance {instance} is gone ({why}): terminated or reclaimed outside drover"),
    )
}

/// An AWS failure describing `instance`: `NotFound` names the lost instance.
fn gone(machine: &str, instance: &str, e: super::AwsError) -> ProviderError {
    if e.kind == AwsErrorKind::NotFound {
        gone_error(machine, instance, &e.message)
    } else {
        provider_error(machine, e)
    }
}

fn round(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs_f64().round() as u64)
}
