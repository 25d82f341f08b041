//! [`AwsProvider`]: machines as instances of one Auto Scaling group, behind
//! [`MachineProvider`].
//!
//! Instances are anonymous, so a name is bound to one ([`super::records`]): `create` records the
//! name as pending, then, under the group's lock, adopts an instance of the group no name is
//! bound to (left over by a creation a crash cut short) or raises the desired capacity by one
//! (never past `MaxSize`) and binds the new instance; then it waits for the instance to be ready.
//! `remove` terminates the bound instance, lowering the capacity. Bindings live in the state
//! directory, so a restarted drover adopts its instances instead of deleting them.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use drover_docker::ssh::keys;
use drover_docker::{EngineConfig, MachineEndpoint};
use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::time::Instant;

use super::calls::{RetryPolicy, provider_error, retrying};
use super::config::AwsProviderConfig;
use super::instances::Connector;
use super::records::{Record, Records};
use super::{AsgGroup, InstanceState};
use crate::{MachineProvider, NameLocks, ProviderError, ProviderErrorKind};

/// How often a raised capacity is looked at until its instance shows in the group.
const NEW_INSTANCE_POLL: Duration = Duration::from_millis(500);

/// Machines as instances of one AWS Auto Scaling group, reached over SSH.
pub struct AwsProvider {
    config: AwsProviderConfig,
    group: Arc<AsgGroup>,
    records: Records,
    locks: NameLocks,
    connector: Connector,
    policy: RetryPolicy,
}

impl AwsProvider {
    /// Checks the settings, loads (or makes) the SSH key, describes the group once (it must
    /// exist; what is off in its setup is logged) and opens the bindings in `state_dir`. Calls on
    /// one name are serialised with every provider sharing `locks`.
    pub async fn new(
        config: AwsProviderConfig,
        locks: NameLocks,
    ) -> Result<AwsProvider, ProviderError> {
        let group_name = config.target.group.clone();
        let fatal =
            |message: String| ProviderError::new(&group_name, ProviderErrorKind::Fatal, message);
        if group_name.is_empty() {
            return Err(fatal(
                "plugin_config.name is empty: set it to the Auto Scaling group's name".into(),
            ));
        }
        config.connector.check().map_err(fatal)?;
        let key = match &config.connector.key_path {
            Some(path) => keys::load(path),
            None => keys::manager_key(&config.state_dir),
        }
        .map_err(|e| fatal(e.to_string()))?;
        let records = Records::open(&config.state_dir, &group_name).map_err(|e| {
            fatal(format!(
                "cannot keep instance records in {}: {e}",
                config.state_dir.display()
            ))
        })?;
        let policy = RetryPolicy::DEFAULT;
        let group = retrying(policy, || AsgGroup::init(&config.target))
            .await
            .map_err(|e| provider_error(&group_name, e))?;
        for note in group.setup_notes() {
            tracing::warn!(group = %group_name, "{note}");
        }
        let group = Arc::new(group);
        let connector = Connector::new(
            group.clone(),
            config.connector.clone(),
            Arc::new(key),
            policy,
        );
        Ok(AwsProvider {
            config,
            group,
            records,
            locks,
            connector,
            policy,
        })
    }

    /// The group's `MaxSize`, as read at start.
    pub fn max_size(&self) -> u32 {
        self.group.max_size()
    }

    /// The lock key of the group: taken (inside a name's lock) while an instance is chosen for a
    /// name, so two names never take the same instance. No machine name starts with NUL.
    fn group_lock_key(&self) -> String {
        format!("\0aws-group {}", self.group.name())
    }

    fn io_error(&self, name: &str, e: std::io::Error) -> ProviderError {
        let kind = if e.kind() == std::io::ErrorKind::InvalidInput {
            ProviderErrorKind::Fatal
        } else {
            ProviderErrorKind::Retryable
        };
        ProviderError::new(
            name,
            kind,
            format!("instance records in {}: {e}", self.records.dir().display()),
        )
    }

    async fn create_locked(&self, name: &str) -> Result<MachineEndpoint, ProviderError> {
        let started = Instant::now();
        let deadline = started + self.config.ready_timeout;
        let instance = match self
            .records
            .read(name)
            .map_err(|e| self.io_error(name, e))?
        {
            Some(Record::Bound { instance, ready }) => {
                if ready {
                    // Adopt a complete machine, if it is still there.
                    return self.endpoint_locked(name).await;
                }
                instance
            }
            Some(Record::Pending) => self.bind(name, deadline).await?,
            None => {
                // Recorded before the capacity is raised: a crash in between leaves a name
                // `list` reports.
                self.records
                    .write(name, &Record::Pending)
                    .map_err(|e| self.io_error(name, e))?;
                self.bind(name, deadline).await?
            }
        };
        self.connector
            .wait_ready(
                name,
                &instance,
                self.config.instance_ready_command.as_deref(),
                started,
                deadline,
            )
            .await?;
        self.records
            .write(
                name,
                &Record::Bound {
                    instance,
                    ready: true,
                },
            )
            .map_err(|e| self.io_error(name, e))?;
        self.endpoint_locked(name).await
    }

    /// Binds an instance to the pending `name`: one no name has, or a new one.
    async fn bind(&self, name: &str, deadline: Instant) -> Result<String, ProviderError> {
        let _group = self.locks.lock(&self.group_lock_key()).await;
        let mut raised = false;
        loop {
            if let (Some(instance), _) = self.unbound_instance(name).await? {
                if !raised {
                    tracing::info!(machine = name, %instance, "adopting an instance no name had");
                }
                self.records
                    .write(
                        name,
                        &Record::Bound {
                            instance: instance.clone(),
                            ready: false,
                        },
                    )
                    .map_err(|e| self.io_error(name, e))?;
                return Ok(instance);
            }
            if !raised {
                let added = retrying(self.policy, || self.group.increase(1))
                    .await
                    .map_err(|e| provider_error(name, e))?;
                if added == 0 {
                    // Nothing was asked for: the name is not a machine.
                    let _ = self.records.remove(name);
                    return Err(ProviderError::new(
                        name,
                        ProviderErrorKind::Quota,
                        format!(
                            "Auto Scaling group {} is at its MaxSize ({}): raise MaxSize or \
                             lower max_instances",
                            self.group.name(),
                            self.group.max_size()
                        ),
                    ));
                }
                raised = true;
                continue;
            }
            if Instant::now() >= deadline {
                return Err(ProviderError::new(
                    name,
                    ProviderErrorKind::Retryable,
                    format!(
                        "Auto Scaling group {}: no new instance showed after the desired \
                         capacity was raised",
                        self.group.name()
                    ),
                ));
            }
            tokio::time::sleep(NEW_INSTANCE_POLL).await;
        }
    }

    async fn endpoint_locked(&self, name: &str) -> Result<MachineEndpoint, ProviderError> {
        let instance = match self
            .records
            .read(name)
            .map_err(|e| self.io_error(name, e))?
        {
            Some(Record::Bound {
                instance,
                ready: true,
            }) => instance,
            Some(Record::Bound { instance, .. }) => {
                return Err(ProviderError::new(
                    name,
                    ProviderErrorKind::NotFound,
                    format!("instance {instance} has not passed its readiness checks"),
                ));
            }
            Some(Record::Pending) => {
                return Err(ProviderError::new(
                    name,
                    ProviderErrorKind::NotFound,
                    "no instance is bound yet (its creation did not finish)",
                ));
            }
            None => {
                return Err(ProviderError::new(
                    name,
                    ProviderErrorKind::NotFound,
                    "no such machine",
                ));
            }
        };
        let (connection, engine) = self.connector.connection(name, &instance).await?;
        self.connector.heartbeat(name, &connection).await?;
        Ok(MachineEndpoint {
            machine: Some(name.to_string()),
            engine: EngineConfig {
                host: Some(engine),
                tls: None,
            },
            network: None,
            builds_volume: None,
        })
    }

    async fn remove_locked(&self, name: &str) -> Result<(), ProviderError> {
        let record = self
            .records
            .read(name)
            .map_err(|e| self.io_error(name, e))?;
        match record {
            Some(Record::Bound { instance, .. }) => {
                self.connector.forget(&instance).await;
                self.terminate(name, &instance).await?;
            }
            Some(Record::Pending) => self.settle_pending(name).await?,
            None => {}
        }
        self.records
            .remove(name)
            .map_err(|e| self.io_error(name, e))
    }

    /// Undoes what a creation that never bound an instance (timed out, cut by a crash) may have
    /// left: under the group's lock, an instance of the group no name is bound to is terminated
    /// with the capacity; if none has shown yet, the capacity is lowered by one (never below the
    /// instances names are bound to), so no instance starts for nobody.
    async fn settle_pending(&self, name: &str) -> Result<(), ProviderError> {
        let _group = self.locks.lock(&self.group_lock_key()).await;
        let (free, bound) = self.unbound_instance(name).await?;
        if let Some(free) = free {
            tracing::info!(machine = name, instance = %free, "terminating the instance a pending name left");
            return self.terminate(name, &free).await;
        }
        let floor = u32::try_from(bound).unwrap_or(u32::MAX);
        let lowered = retrying(self.policy, || self.group.lower_one(floor))
            .await
            .map_err(|e| provider_error(name, e))?;
        if lowered {
            tracing::info!(
                machine = name,
                "lowered the capacity a pending name had raised"
            );
        }
        Ok(())
    }

    /// The instances names are bound to.
    /// From the group as AWS reports it now: the first live instance no name is bound to, and
    /// how many instances names are bound to. Called under the group's lock.
    async fn unbound_instance(&self, name: &str) -> Result<(Option<String>, usize), ProviderError> {
        let instances = retrying(self.policy, || self.group.update())
            .await
            .map_err(|e| provider_error(name, e))?;
        let bound = self.bound_instances(name)?;
        let free = instances
            .iter()
            .find(|i| i.state != InstanceState::Deleting && !bound.contains(&i.id))
            .map(|i| i.id.clone());
        Ok((free, bound.len()))
    }

    fn bound_instances(&self, name: &str) -> Result<BTreeSet<String>, ProviderError> {
        Ok(self
            .records
            .list()
            .map_err(|e| self.io_error(name, e))?
            .into_iter()
            .filter_map(|(_, r)| match r {
                Record::Bound { instance, .. } => Some(instance),
                Record::Pending => None,
            })
            .collect())
    }

    /// Terminates `instance`, lowering the desired capacity; one already gone is fine.
    async fn terminate(&self, name: &str, instance: &str) -> Result<(), ProviderError> {
        let instances = retrying(self.policy, || self.group.update())
            .await
            .map_err(|e| provider_error(name, e))?;
        let live = instances
            .iter()
            .any(|i| i.id == instance && i.state != InstanceState::Deleting);
        if !live {
            return Ok(());
        }
        let ids = [instance.to_string()];
        retrying(self.policy, || async {
            match self.group.decrease(&ids).await {
                (_, Some(e)) => Err(e),
                (_, None) => Ok(()),
            }
        })
        .await
        .map_err(|e| provider_error(name, e))
    }

    /// Deletes every bound instance in one decrease, taking no name's lock (the daemon gives
    /// shutdown 20 s); what cannot be deleted is logged with the command that deletes it.
    async fn shutdown_now(&self) {
        if self.config.delete_instances_on_shutdown {
            self.delete_all_now().await;
        }
        self.connector.close_all().await;
    }

    async fn delete_all_now(&self) {
        let group = self.group.name();
        let records = match self.records.list() {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(%group, "deleting on shutdown: cannot read instance records: {e}");
                return;
            }
        };
        let bound: Vec<(String, String)> = records
            .into_iter()
            .filter_map(|(name, r)| match r {
                Record::Bound { instance, .. } => Some((name, instance)),
                Record::Pending => {
                    tracing::warn!(machine = %name, "deleting on shutdown: no instance bound yet; the next start settles it");
                    None
                }
            })
            .collect();
        if bound.is_empty() {
            return;
        }
        // Ids already gone need no call; if the group cannot be read, every id is tried.
        let live: Option<BTreeSet<String>> = match self.group.update().await {
            Ok(instances) => Some(
                instances
                    .into_iter()
                    .filter(|i| i.state != InstanceState::Deleting)
                    .map(|i| i.id)
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!(%group, "deleting on shutdown: cannot describe the group: {e}");
                None
            }
        };
        let ids: Vec<String> = bound
            .iter()
            .map(|(_, id)| id.clone())
            .filter(|id| live.as_ref().is_none_or(|l| l.contains(id)))
            .collect();
        let (done, error) = self.group.decrease(&ids).await;
        if let Some(e) = &error {
            tracing::warn!(%group, "deleting on shutdown: {e}");
        }
        for (name, instance) in &bound {
            if done.contains(instance) || !ids.contains(instance) {
                tracing::info!(machine = %name, %instance, "instance deleted on shutdown");
                if let Err(e) = self.records.remove(name) {
                    tracing::warn!(machine = %name, "deleting on shutdown: record: {e}");
                }
            } else {
                tracing::warn!(
                    machine = %name,
                    %instance,
                    "instance left running on shutdown; delete it with: aws autoscaling \
                     terminate-instance-in-auto-scaling-group --instance-id {instance} \
                     --should-decrement-desired-capacity"
                );
            }
        }
    }
}

impl MachineProvider for AwsProvider {
    fn create<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<MachineEndpoint, ProviderError>> {
        async move {
            let _guard = self.locks.lock(name).await;
            self.create_locked(name).await
        }
        .boxed()
    }

    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        async move {
            let _guard = self.locks.lock(name).await;
            self.remove_locked(name).await
        }
        .boxed()
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, ProviderError>> {
        async move {
            let records = self.records.list().map_err(|e| self.io_error(prefix, e))?;
            Ok(records
                .into_iter()
                .map(|(name, _)| name)
                .filter(|name| name.starts_with(prefix))
                .collect())
        }
        .boxed()
    }

    fn endpoint<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<MachineEndpoint, ProviderError>> {
        async move {
            let _guard = self.locks.lock(name).await;
            self.endpoint_locked(name).await
        }
        .boxed()
    }

    fn shutdown(&self) -> BoxFuture<'_, ()> {
        self.shutdown_now().boxed()
    }
}
