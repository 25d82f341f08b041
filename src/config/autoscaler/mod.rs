//! `executor = "docker-autoscaler"`: `[runners.autoscaler]` as GitLab Runner reads it, validated
//! into [`AutoscalerSettings`]. The `plugin` must name GitLab's AWS fleeting plugin, in any of
//! the forms GitLab Runner accepts; it selects drover's own AWS provider (no plugin binary runs).

mod core;
mod duration;
pub mod raw;
mod runner;
pub mod schema;
pub(crate) mod settings;

use std::ops::Range;
use std::time::Duration;

use drover_core::period::CronExpr;
use drover_gitlab::Secret;
use toml::Spanned;

use super::ctx::Ctx;
use super::diagnostic::{Diagnostic, WarningKind};
use super::schema::suggest;
pub use core::core_runner;
use raw::{RawAutoscaler, RawConnector, RawDuration, RawPolicy};
pub use runner::AutoscalerRunner;
pub use settings::{
    AutoscalerPolicy, AutoscalerSettings, AwsGroup, ConnectorSettings, Intervals, ScaleThrottle,
};

/// What drover answers to when `plugin` names something else.
pub const SUPPORTED_PLUGINS: &str = "\"aws\" (also \"aws:<version>\", \"fleeting-plugin-aws\" or an OCI reference \
     such as \"registry.gitlab.com/gitlab-org/fleeting/plugins/aws:1.0.0\")";
/// GitLab Runner's default period: always.
const ALWAYS: &str = "* * * * *";
/// taskscaler's default `scale_throttle.limit` (instances per second).
const DEFAULT_THROTTLE: u32 = 100;

/// Whether `plugin` names GitLab's AWS fleeting plugin: `aws`, `fleeting-plugin-aws`, either
/// with a `:<version constraint>`, a path to the binary, or an OCI reference
/// `[<registry>/]<repo>/aws[:<tag>|@<digest>]`.
pub fn is_aws_plugin(plugin: &str) -> bool {
    let plugin = plugin.trim();
    let without_digest = plugin.split_once('@').map_or(plugin, |(name, _)| name);
    // The tag follows the last path segment; a registry's `host:port` comes before a `/`.
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    let name = last.split_once(':').map_or(last, |(name, _)| name);
    matches!(name, "aws" | "fleeting-plugin-aws")
}

/// The validated `[runners.autoscaler]` of runner `runner` (`runners[index]`); `None` when
/// errors were recorded.
pub fn settings(
    raw: Option<Spanned<RawAutoscaler>>,
    index: usize,
    runner: &str,
    runner_span: Range<usize>,
    ctx: &mut Ctx<'_>,
) -> Option<AutoscalerSettings> {
    let errors_before = ctx.errors.len();
    let path = format!("runners[{index}].autoscaler");
    let Some(raw) = raw else {
        ctx.error(
            ctx.diag(runner_span, format!("runner {runner:?} uses docker-autoscaler but has no [runners.autoscaler] section"))
                .label("this [[runners]] entry")
                .hint("add [runners.autoscaler] with `plugin = \"aws\"`, `capacity_per_instance`, `max_instances` and a [runners.autoscaler.plugin_config] naming the Auto Scaling group"),
        );
        return None;
    };
    let section_span = raw.span();
    let a = raw.into_inner();

    let plugin = match &a.plugin {
        None => {
            ctx.error(
                ctx.diag(
                    section_span.clone(),
                    format!("runner {runner:?}: [runners.autoscaler] has no `plugin`"),
                )
                .hint(format!(
                    "add `plugin = \"aws\"`: drover supports {SUPPORTED_PLUGINS}"
                )),
            );
            None
        }
        Some(p) if is_aws_plugin(p.get_ref()) => Some(p.get_ref().trim().to_string()),
        Some(p) => {
            ctx.error(
                ctx.diag(
                    p.span(),
                    format!(
                        "runner {runner:?}: fleeting plugin {:?} is not supported",
                        p.get_ref()
                    ),
                )
                .label("drover has a native provider for AWS Auto Scaling groups only")
                .hint(format!(
                    "drover supports {SUPPORTED_PLUGINS}; it runs no plugin binary"
                )),
            );
            None
        }
    };

    let capacity_per_instance = match &a.capacity_per_instance {
        None => 1,
        Some(c) if c.get_ref().0 == 0 => {
            ctx.error(
                ctx.diag(
                    c.span(),
                    format!("runner {runner:?}: capacity_per_instance must be at least 1"),
                )
                .label("no job could ever run on an instance")
                .hint(
                    "set how many jobs one instance runs at once, e.g. `capacity_per_instance = 1`",
                ),
            );
            1
        }
        Some(c) => c.get_ref().0,
    };
    let max_instances = a.max_instances.map_or(0, |c| c.0);

    let defaults = Intervals::default();
    let mut interval = |v: &Option<Spanned<RawDuration>>, key: &str, default: Duration| {
        v.as_ref().map_or(Some(default), |d| {
            duration(d, &format!("{path}.{key}"), runner, ctx)
        })
    };
    let intervals = Intervals {
        instance_acquire_timeout: interval(
            &a.instance_acquire_timeout,
            "instance_acquire_timeout",
            defaults.instance_acquire_timeout,
        )
        .filter(|d| !d.is_zero())
        .unwrap_or(defaults.instance_acquire_timeout),
        update_interval: interval(
            &a.update_interval,
            "update_interval",
            defaults.update_interval,
        )
        .filter(|d| !d.is_zero())
        .unwrap_or(defaults.update_interval),
        update_interval_when_expecting: interval(
            &a.update_interval_when_expecting,
            "update_interval_when_expecting",
            defaults.update_interval_when_expecting,
        )
        .filter(|d| !d.is_zero())
        .unwrap_or(defaults.update_interval_when_expecting),
        deletion_retry_interval: interval(
            &a.deletion_retry_interval,
            "deletion_retry_interval",
            defaults.deletion_retry_interval,
        )
        .filter(|d| !d.is_zero())
        .unwrap_or(defaults.deletion_retry_interval),
        shutdown_deletion_interval: interval(
            &a.shutdown_deletion_interval,
            "shutdown_deletion_interval",
            defaults.shutdown_deletion_interval,
        )
        .filter(|d| !d.is_zero())
        .unwrap_or(defaults.shutdown_deletion_interval),
        shutdown_deletion_retries: a
            .shutdown_deletion_retries
            .map(|c| c.0)
            .filter(|&n| n > 0)
            .unwrap_or(defaults.shutdown_deletion_retries),
        failure_threshold: a
            .failure_threshold
            .map(|c| c.0)
            .filter(|&n| n > 0)
            .unwrap_or(defaults.failure_threshold),
    };

    let scale_throttle = scale_throttle(&a, max_instances, runner, ctx);
    if let Some(storage) = &a.state_storage {
        let d = Diagnostic::new(format!(
            "runner {runner:?}: drover always journals its instances; [runners.autoscaler.state_storage] has no effect"
        ))
        .hint("remove the section: drover keeps each instance's state in its journal and re-adopts idle instances after a restart");
        ctx.warn_at(
            WarningKind::NoEffect,
            format!("{path}.state_storage"),
            storage.span(),
            d,
        );
    }
    let aws = aws_group(a.plugin_config, &section_span, runner, ctx);
    let connector = connector(a.connector_config.unwrap_or_default(), &path, runner, ctx);
    let mut policies: Vec<AutoscalerPolicy> = a
        .policy
        .iter()
        .enumerate()
        .filter_map(|(i, p)| policy(p, &format!("{path}.policy[{i}]"), runner, ctx))
        .collect();
    if a.policy.is_empty() {
        policies.push(AutoscalerPolicy {
            periods: vec![ALWAYS.to_string()],
            timezone: ctx.local.name().to_string(),
            idle_count: 0,
            idle_time: Duration::ZERO,
            scale_factor: 0.0,
            scale_factor_limit: 0,
            preemptive_mode: false,
        });
    }

    if ctx.errors.len() > errors_before {
        return None;
    }
    Some(AutoscalerSettings {
        plugin: plugin?,
        capacity_per_instance,
        max_use_count: a.max_use_count.map_or(0, |c| c.0),
        max_instances,
        instance_ready_command: a.instance_ready_command.filter(|c| !c.trim().is_empty()),
        delete_instances_on_shutdown: a.delete_instances_on_shutdown,
        reservation_throttling: a.reservation_throttling.unwrap_or(true),
        intervals,
        scale_throttle,
        aws: aws?,
        connector: connector?,
        policies,
    })
}

fn duration(
    d: &Spanned<RawDuration>,
    path: &str,
    runner: &str,
    ctx: &mut Ctx<'_>,
) -> Option<Duration> {
    let parsed = match d.get_ref() {
        RawDuration::Text(t) => duration::parse_go(t),
        RawDuration::Nanos(n) => u64::try_from(*n).ok().map(Duration::from_nanos),
    };
    if parsed.is_none() {
        ctx.error(
            ctx.diag(d.span(), format!("runner {runner:?}: `{path}` is not a duration"))
                .label("expected a Go duration")
                .hint("write a duration such as \"30s\", \"1m\", \"20m0s\" or \"1h30m\" (units ns, us, ms, s, m, h)"),
        );
    }
    parsed
}

fn scale_throttle(
    a: &RawAutoscaler,
    max_instances: u32,
    runner: &str,
    ctx: &mut Ctx<'_>,
) -> ScaleThrottle {
    let raw = a.scale_throttle.as_ref().map(|t| t.get_ref());
    let per_second = match raw.and_then(|t| t.limit.as_ref()) {
        None => Some(DEFAULT_THROTTLE),
        Some(l) => {
            match *l.get_ref() {
                -1 => None,
                0 => Some(DEFAULT_THROTTLE),
                n if n > 0 => Some(u32::try_from(n).unwrap_or(u32::MAX)),
                _ => {
                    ctx.error(
                    ctx.diag(l.span(), format!("runner {runner:?}: scale_throttle.limit must be -1, 0 or more"))
                        .hint("instances created per second; 0 is the default (100), -1 lifts the limit"),
                );
                    Some(DEFAULT_THROTTLE)
                }
            }
        }
    };
    let burst = raw
        .and_then(|t| t.burst)
        .map(|b| b.0)
        .filter(|&b| b > 0)
        .or((max_instances > 0).then_some(max_instances))
        .unwrap_or(per_second.unwrap_or(u32::MAX));
    ScaleThrottle { per_second, burst }
}

fn aws_group(
    raw: Option<Spanned<raw::RawPluginConfig>>,
    section_span: &Range<usize>,
    runner: &str,
    ctx: &mut Ctx<'_>,
) -> Option<AwsGroup> {
    let hint = "add [runners.autoscaler.plugin_config] with `name = \"<Auto Scaling group>\"`";
    let Some(raw) = raw else {
        ctx.error(
            ctx.diag(
                section_span.clone(),
                format!(
                    "runner {runner:?}: the AWS plugin needs [runners.autoscaler.plugin_config]"
                ),
            )
            .hint(hint),
        );
        return None;
    };
    let span = raw.span();
    let p = raw.into_inner();
    let nonempty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    match p.name.filter(|n| !n.get_ref().trim().is_empty()) {
        Some(name) => Some(AwsGroup {
            group: name.into_inner().trim().to_string(),
            profile: nonempty(p.profile),
            config_file: nonempty(p.config_file),
            credentials_file: nonempty(p.credentials_file),
        }),
        None => {
            ctx.error(
                ctx.diag(
                    span,
                    format!("runner {runner:?}: plugin_config has no Auto Scaling group `name`"),
                )
                .hint(hint),
            );
            None
        }
    }
}

fn connector(
    c: RawConnector,
    path: &str,
    runner: &str,
    ctx: &mut Ctx<'_>,
) -> Option<ConnectorSettings> {
    let errors_before = ctx.errors.len();
    let path = format!("{path}.connector_config");
    if let Some(p) = &c.protocol
        && !matches!(p.get_ref().as_str(), "" | "ssh")
    {
        ctx.error(
            ctx.diag(
                p.span(),
                format!(
                    "runner {runner:?}: connector protocol {:?} is not supported",
                    p.get_ref()
                ),
            )
            .label("drover reaches instances over SSH only")
            .hint("use `protocol = \"ssh\"` (the default) with Linux instances"),
        );
    }
    if let Some(os) = &c.os
        && !matches!(os.get_ref().as_str(), "" | "linux")
    {
        ctx.error(
            ctx.diag(
                os.span(),
                format!(
                    "runner {runner:?}: instances with os {:?} are not supported",
                    os.get_ref()
                ),
            )
            .label("drover runs jobs in Docker on Linux instances")
            .hint("use Linux instances and `os = \"linux\"` (or leave it out)"),
        );
    }
    let arch = c.arch.as_ref().and_then(|a| match a.get_ref().as_str() {
        "" => None,
        "amd64" | "arm64" | "386" | "arm" => Some(a.get_ref().clone()),
        other => {
            let hint = match suggest(other, ["amd64", "arm64"].into_iter()) {
                Some(s) => format!("did you mean {s:?}?"),
                None => "use Go's names: \"amd64\" or \"arm64\"".to_string(),
            };
            ctx.error(
                ctx.diag(
                    a.span(),
                    format!("runner {runner:?}: unknown arch {other:?}"),
                )
                .hint(hint),
            );
            None
        }
    });
    let port = match &c.protocol_port {
        None => 22,
        Some(p) => match u16::try_from(p.get_ref().0) {
            Ok(0) => 22,
            Ok(port) => port,
            Err(_) => {
                ctx.error(
                    ctx.diag(
                        p.span(),
                        format!(
                            "runner {runner:?}: protocol_port {} is not a port",
                            p.get_ref().0
                        ),
                    )
                    .hint("write the instances' SSH port, 1 to 65535 (default 22)"),
                );
                22
            }
        },
    };
    if c.use_static_credentials && c.key_path.is_none() && c.password.is_none() {
        let d = Diagnostic::new(format!(
            "runner {runner:?}: use_static_credentials without key_path: drover has no key the instances know"
        ))
        .hint("set `key_path` to the private key whose public half the instances' image holds");
        ctx.error(d);
    }
    let keepalive = c
        .keepalive
        .as_ref()
        .and_then(|d| duration(d, &format!("{path}.keepalive"), runner, ctx))
        .filter(|d| !d.is_zero());
    let timeout = c
        .timeout
        .as_ref()
        .and_then(|d| duration(d, &format!("{path}.timeout"), runner, ctx))
        .filter(|d| !d.is_zero());
    if ctx.errors.len() > errors_before {
        return None;
    }
    Some(ConnectorSettings {
        username: c.username.filter(|u| !u.is_empty()),
        password: c.password.filter(|p| !p.is_empty()).map(Secret::new),
        port,
        key_path: c
            .key_path
            .map(|k| k.into_inner())
            .filter(|k| !k.trim().is_empty()),
        use_static_credentials: c.use_static_credentials,
        keepalive,
        timeout,
        use_external_addr: c.use_external_addr,
        arch,
    })
}

/// One `[[runners.autoscaler.policy]]`.
fn policy(
    raw: &Spanned<RawPolicy>,
    path: &str,
    runner: &str,
    ctx: &mut Ctx<'_>,
) -> Option<AutoscalerPolicy> {
    let p = raw.get_ref();
    let errors_before = ctx.errors.len();
    for expr in &p.periods {
        let fields = expr.get_ref().split_whitespace().count();
        let reason = match CronExpr::parse(expr.get_ref()) {
            _ if fields != 5 => Some(format!("{fields} fields")),
            Err(e) => Some(
                e.to_string()
                    .lines()
                    .rev()
                    .find(|l| !l.trim().is_empty())
                    .unwrap_or("invalid")
                    .trim()
                    .to_string(),
            ),
            Ok(_) => None,
        };
        if let Some(reason) = reason {
            ctx.error(
                ctx.diag(expr.span(), format!("runner {runner:?}: invalid cron expression in `{path}.periods`"))
                    .label(reason)
                    .hint("policy periods take 5 fields: minute (0-59), hour (0-23), day of month (1-31), month (1-12 or jan-dec), day of week (0-6 or sun-sat); e.g. \"* 8-18 * * mon-fri\""),
            );
        }
    }
    let timezone = match &p.timezone {
        Some(tz) if !tz.get_ref().is_empty() && tz.get_ref() != "Local" => {
            super::machine::named_zone(tz, runner, ctx).unwrap_or_default()
        }
        Some(tz) => ctx.local_zone(&format!("{path}.timezone"), tz.span()),
        None => ctx.local_zone(path, raw.span()),
    };
    let idle_time = p
        .idle_time
        .as_ref()
        .and_then(|d| duration(d, &format!("{path}.idle_time"), runner, ctx))
        .unwrap_or(Duration::ZERO);
    let scale_factor = match &p.scale_factor {
        None => 0.0,
        Some(f) if f.get_ref().is_finite() && *f.get_ref() >= 0.0 => *f.get_ref(),
        Some(f) => {
            ctx.error(
                ctx.diag(
                    f.span(),
                    format!("runner {runner:?}: scale_factor must be 0.0 or more"),
                )
                .hint("idle slots kept per slot in use, e.g. 0.5"),
            );
            0.0
        }
    };
    if ctx.errors.len() > errors_before {
        return None;
    }
    let idle_count = p.idle_count.map_or(0, |c| c.0);
    let periods = if p.periods.is_empty() {
        vec![ALWAYS.to_string()]
    } else {
        p.periods
            .iter()
            .map(|e| e.get_ref().trim().to_string())
            .collect()
    };
    Some(AutoscalerPolicy {
        periods,
        timezone,
        idle_count,
        idle_time,
        scale_factor,
        scale_factor_limit: p.scale_factor_limit.map_or(0, |c| c.0),
        preemptive_mode: p.preemptive_mode.unwrap_or(idle_count > 0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plugin_names_gitlab_accepts_select_aws() {
        for ok in [
            "aws",
            "aws:latest",
            "aws:0.4.0",
            "aws:~1.0",
            "fleeting-plugin-aws",
            "fleeting-plugin-aws:0.4.0",
            "/usr/local/bin/fleeting-plugin-aws",
            "gitlab-org/fleeting/plugins/aws",
            "registry.gitlab.com/gitlab-org/fleeting/plugins/aws:1.0.0",
            "registry.example.com:5000/mirror/aws@sha256:0123abcd",
        ] {
            assert!(is_aws_plugin(ok), "{ok}");
        }
        for bad in [
            "googlecloud",
            "fleeting-plugin-googlecompute",
            "registry.gitlab.com/gitlab-org/fleeting/plugins/azure:1",
            "aws-extra",
            "awsome:1",
            "",
        ] {
            assert!(!is_aws_plugin(bad), "{bad}");
        }
    }
}

#[cfg(test)]
mod load_tests;
