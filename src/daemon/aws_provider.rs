//! The machine provider of a `docker-autoscaler` runner: drover's AWS Auto Scaling group provider,
//! configured from the runner's `[runners.autoscaler]` (cargo feature `aws`; a build without it
//! refuses such runners when the config is loaded, see `Loaded::require_runnable`).
//!
//! Every AWS runner keeps its name ↔ instance bindings and the manager's SSH key under
//! `<state dir>/aws`, so a restart re-adopts the instances, and shares the daemon's per-name locks.

use std::path::Path;
use std::sync::Arc;

use drover_providers::MachineProvider;

use crate::config::autoscaler::AutoscalerSettings;

/// The folder of the AWS providers' records in the state directory.
#[cfg(feature = "aws")]
const STATE_SUBDIR: &str = "aws";

/// The AWS provider of runner `runner` (for messages), from its `[runners.autoscaler]`. Relative
/// paths (`key_path`, `config_file`, `credentials_file`) are read beside the config file.
#[cfg(feature = "aws")]
pub async fn provider(
    runner: &str,
    a: &AutoscalerSettings,
    config_path: &Path,
    state_dir: &Path,
) -> anyhow::Result<Arc<dyn MachineProvider>> {
    use anyhow::Context;
    use drover_providers::NameLocks;
    use drover_providers::aws::{AwsProvider, AwsProviderConfig, AwsTarget, ConnectorConfig};

    let beside = |p: &str| crate::paths::in_config_dir(config_path, Path::new(p));
    let config = AwsProviderConfig {
        target: AwsTarget {
            group: a.aws.group.clone(),
            profile: a.aws.profile.clone(),
            config_file: a.aws.config_file.as_deref().map(beside),
            credentials_file: a.aws.credentials_file.as_deref().map(beside),
            ..AwsTarget::default()
        },
        connector: ConnectorConfig {
            username: a.connector.username.clone(),
            key_path: a.connector.key_path.as_deref().map(beside),
            use_static_credentials: a.connector.use_static_credentials,
            use_external_addr: a.connector.use_external_addr,
            protocol: None,
            protocol_port: Some(a.connector.port),
            timeout: a.connector.timeout,
            keepalive: a.connector.keepalive,
        },
        instance_ready_command: a.instance_ready_command.clone(),
        ready_timeout: a.intervals.instance_acquire_timeout,
        delete_instances_on_shutdown: a.delete_instances_on_shutdown,
        state_dir: state_dir.join(STATE_SUBDIR),
    };
    let provider = AwsProvider::new(config, NameLocks::shared(state_dir))
        .await
        .with_context(|| {
            format!(
                "runner {runner:?}: setting up the AWS Auto Scaling group {:?}",
                a.aws.group
            )
        })?;
    tracing::info!(
        runner,
        group = %a.aws.group,
        max_size = provider.max_size(),
        "machines are instances of an AWS Auto Scaling group"
    );
    Ok(Arc::new(provider))
}

/// Without the `aws` feature: the config check refuses these runners first; a reload that adds
/// one is refused here with the same reason.
#[cfg(not(feature = "aws"))]
pub async fn provider(
    runner: &str,
    _: &AutoscalerSettings,
    _: &Path,
    _: &Path,
) -> anyhow::Result<Arc<dyn MachineProvider>> {
    anyhow::bail!(
        "runner {runner:?} uses executor \"docker-autoscaler\", but this drover was built \
         without AWS support (cargo feature `aws`)"
    )
}

/// Whether two versions of `[runners.autoscaler]` make the same provider: the same group, the
/// same way to reach and ready its instances. The sizes and policies are the core's.
pub fn same_group(a: Option<&AutoscalerSettings>, b: Option<&AutoscalerSettings>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => {
            a.aws == b.aws
                && a.connector == b.connector
                && a.instance_ready_command == b.instance_ready_command
                && a.intervals.instance_acquire_timeout == b.intervals.instance_acquire_timeout
                && a.delete_instances_on_shutdown == b.delete_instances_on_shutdown
        }
        (a, b) => a.is_none() && b.is_none(),
    }
}
