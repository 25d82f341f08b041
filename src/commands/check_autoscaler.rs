//! The `drover check-config` section of a `docker-autoscaler` runner: what drover read from
//! `[runners.autoscaler]`, the scaling the core plans for it, and that `drover run` does not run
//! it yet.

use std::fmt::Write as _;

use super::figures::{human, unlimited};
use crate::config::{AutoscalerPolicy, AutoscalerRunner, Loaded};

pub fn runner(out: &mut String, loaded: &Loaded, r: &AutoscalerRunner) {
    let a = &r.autoscaler;
    let _ = writeln!(
        out,
        "runner {:?}: executor docker-autoscaler: AWS Auto Scaling group {:?} (plugin {:?})",
        r.name, a.aws.group, a.plugin
    );
    let _ = writeln!(
        out,
        "  not run by this version: `drover run` refuses it until the AWS provider is built in"
    );
    match (&r.url, &r.token) {
        (Some(url), Some(token)) => {
            let _ = writeln!(out, "  registered with {url} (token {})", token.masked());
        }
        _ => {
            let _ = writeln!(
                out,
                "  not registered: run `drover register -c {}`",
                loaded.origin.display()
            );
        }
    }
    let mut credentials = Vec::new();
    if let Some(p) = &a.aws.profile {
        credentials.push(format!("profile {p}"));
    }
    if let Some(f) = &a.aws.config_file {
        credentials.push(format!("config {f}"));
    }
    if let Some(f) = &a.aws.credentials_file {
        credentials.push(format!("credentials {f}"));
    }
    let _ = writeln!(
        out,
        "  AWS credentials: {}",
        if credentials.is_empty() {
            "the default chain (environment, profile, instance role)".to_string()
        } else {
            credentials.join(", ")
        }
    );
    let _ = writeln!(
        out,
        "  limit {}, request_concurrency {}, capacity_per_instance {}, max_use_count {}, max_instances {}",
        unlimited(r.limit),
        r.request_concurrency,
        a.capacity_per_instance,
        unlimited(a.max_use_count),
        unlimited(a.max_instances)
    );
    let _ = writeln!(
        out,
        "  image {}, instance_ready_command {}, delete_instances_on_shutdown {}",
        r.docker
            .image
            .as_deref()
            .unwrap_or("none (each job must name one)"),
        a.instance_ready_command
            .as_deref()
            .map_or("none".to_string(), |c| format!("{c:?}")),
        a.delete_instances_on_shutdown
    );
    let c = &a.connector;
    let key = match (&c.key_path, c.use_static_credentials) {
        (Some(path), true) => format!("static key {path}, already on the instances"),
        (Some(path), false) => format!("key {path}, pushed through EC2 Instance Connect"),
        (None, _) => "drover's ed25519 key, pushed through EC2 Instance Connect".to_string(),
    };
    let _ = writeln!(
        out,
        "  connector: ssh as {} on port {}, {} address, {key}",
        c.username.as_deref().unwrap_or("ec2-user"),
        c.port,
        if c.use_external_addr {
            "external"
        } else {
            "internal"
        }
    );
    let i = &a.intervals;
    let _ = writeln!(
        out,
        "  intervals: acquire timeout {}, update {} ({} when expecting), deletion retry {}, shutdown deletion {} × {}, failure threshold {}",
        human(i.instance_acquire_timeout),
        human(i.update_interval),
        human(i.update_interval_when_expecting),
        human(i.deletion_retry_interval),
        human(i.shutdown_deletion_interval),
        i.shutdown_deletion_retries,
        i.failure_threshold
    );
    let _ = writeln!(
        out,
        "  scale throttle: {} burst {}",
        a.scale_throttle
            .per_second
            .map_or("no limit,".to_string(), |n| format!("{n} instances/s,")),
        a.scale_throttle.burst
    );
    if let Some(sp) = r.core.slot_policy() {
        let per = sp.machine_slots();
        let most = match sp.max_machines {
            0 => "no cap on instances".to_string(),
            n => format!(
                "at most {n} instances ({} jobs at once)",
                n.saturating_mul(sp.slots)
            ),
        };
        let _ = writeln!(
            out,
            "  planned scaling: {per} job slot{} per new instance, {most}; `drover simulate` plans it",
            if per == 1 { "" } else { "s" }
        );
    }
    let per = r.core.slot_policy().map_or(1, |sp| sp.machine_slots());
    let _ = writeln!(out, "  policies (the last matching one wins):");
    for (n, p) in a.policies.iter().enumerate() {
        let _ = writeln!(out, "    {}. {}", n + 1, policy(p, per));
    }
}

/// A policy, and the idle instances its `idle_count` keeps with `per` slots per instance.
fn policy(p: &AutoscalerPolicy, per: u32) -> String {
    let periods: Vec<String> = p.periods.iter().map(|e| format!("{e:?}")).collect();
    let warm = p.idle_count.div_ceil(per.max(1));
    format!(
        "{} in {}: idle_count {} slots ({warm} idle instance{} at rest), idle_time {}, scale_factor {}{}, preemptive {}",
        periods.join(", "),
        p.timezone,
        p.idle_count,
        if warm == 1 { "" } else { "s" },
        human(p.idle_time),
        p.scale_factor,
        if p.scale_factor_limit > 0 {
            format!(" (limit {})", p.scale_factor_limit)
        } else {
            String::new()
        },
        if p.preemptive_mode { "on" } else { "off" }
    )
}
