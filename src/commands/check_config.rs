//! `drover check-config`: validate a config file and show, per runner, the autoscaling policy in
//! force now and at every period boundary of the coming days.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use drover_core::period::{Period, PolicyValues, active_period, next_change};
use drover_core::{Executor, MachinePolicy, RunnerConfig, Timestamp};

use super::figures::{human, unlimited};
use crate::config::{self, ExecutorKind, Loaded, RunnerSettings};
use crate::exit;

/// Period boundaries listed per runner before the rest is summarised.
const MAX_ROWS: usize = 60;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The config file to check (the same as -c FILE)
    #[arg(value_name = "FILE")]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub config: crate::paths::ConfigArg,
    /// Evaluate the policy from this instant instead of now (RFC 3339, e.g. 2026-03-27T12:00:00Z)
    #[arg(long, value_name = "RFC3339", value_parser = parse_instant)]
    pub at: Option<DateTime<Utc>>,
    /// How many days of period boundaries to show
    #[arg(long, value_name = "N", default_value_t = 7,
          value_parser = clap::value_parser!(u32).range(1..=366))]
    pub days: u32,
}

fn parse_instant(s: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{e}: write an RFC 3339 instant such as 2026-03-27T12:00:00Z"))
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let path = match (&args.file, &args.config.config) {
        (Some(file), Some(flag)) if file != flag => {
            return Err(exit::with_code(
                exit::CONFIG,
                anyhow::anyhow!(
                    "two config files given: {} and -c {}; pass one",
                    file.display(),
                    flag.display()
                ),
            ));
        }
        (Some(file), _) => file.clone(),
        (None, _) => args.config.path(),
    };
    let loaded = config::load(&path).map_err(|e| exit::with_code(exit::CONFIG, e))?;
    for warning in &loaded.warnings {
        eprintln!("{}\n", warning.render(&loaded.origin));
    }
    let at = args.at.unwrap_or_else(Utc::now);
    print!("{}", report(&loaded, at, args.days));
    Ok(ExitCode::from(exit::OK))
}

/// The whole report for a valid config, evaluated from `at` for `days` days.
pub fn report(loaded: &Loaded, at: DateTime<Utc>, days: u32) -> String {
    let mut out = String::new();
    let n = loaded.runners.len() + loaded.autoscalers.len();
    let _ = writeln!(
        out,
        "{}: valid, {n} runner{}",
        loaded.origin.display(),
        if n == 1 { "" } else { "s" }
    );
    let (core, g) = (&loaded.core, &loaded.global);
    let _ = writeln!(
        out,
        "concurrent {}, check_interval {}, shutdown_timeout {}, metrics {}, log {} {}, machines {} on shutdown",
        core.concurrent,
        human(core.check_interval),
        human(core.shutdown_timeout),
        g.listen_address.as_deref().unwrap_or("off"),
        g.log_level.map_or("info", |l| l.as_str()),
        match g.log_format {
            Some(config::LogFormat::Json) => "json",
            _ => "text",
        },
        if core.drain_machines_on_shutdown {
            "removed"
        } else {
            "kept"
        },
    );
    for (core, settings) in loaded.core.runners.iter().zip(&loaded.runners) {
        out.push('\n');
        runner(&mut out, loaded, core, settings, at, days);
    }
    for a in &loaded.autoscalers {
        out.push('\n');
        crate::commands::check_autoscaler::runner(&mut out, loaded, a);
    }
    out
}

fn runner(
    out: &mut String,
    loaded: &Loaded,
    core: &RunnerConfig,
    s: &RunnerSettings,
    at: DateTime<Utc>,
    days: u32,
) {
    let kind = match (&s.executor, &s.machine) {
        (ExecutorKind::DockerMachine, Some(m)) => match &m.machine_driver {
            Some(driver) => format!("provider {} (driver {driver})", m.provider.as_str()),
            None => format!(
                "provider {} on {}",
                m.provider.as_str(),
                m.docker_host
                    .as_deref()
                    .unwrap_or("the local Docker engine")
            ),
        },
        _ => "jobs run on this host's Docker engine, no machines to manage".to_string(),
    };
    let _ = writeln!(
        out,
        "runner {:?}: executor {}: {kind}",
        s.name,
        s.executor.as_str()
    );
    match s.require_registered() {
        Ok((url, token)) => {
            let _ = writeln!(out, "  registered with {url} (token {})", token.masked());
        }
        Err(_) => {
            let _ = writeln!(
                out,
                "  not registered: `drover run` needs its url and token; run `drover register -c {}`",
                loaded.origin.display()
            );
        }
    }
    let limit = unlimited(core.limit);
    let image = s
        .docker
        .image
        .as_deref()
        .unwrap_or("none (each job must name one)");
    let pull: Vec<&str> = s.docker.pull_policy.iter().map(|p| p.as_str()).collect();
    let cache = match &s.cache {
        Some(c) => format!(
            "cache: s3 bucket {} at {} ({}){}{}",
            c.s3.bucket,
            c.s3.endpoint,
            c.s3.region,
            if c.path.is_empty() {
                String::new()
            } else {
                format!(", Path {}", c.path)
            },
            if c.shared { ", shared" } else { "" }
        ),
        None if !s.local_cache_kept() => format!(
            "cache: local, not kept across jobs (no volume at {})",
            s.cache_dir
        ),
        None if s.docker.disable_cache => {
            "cache: local, dropped after each job (disable_cache)".to_string()
        }
        None => "cache: local, kept per project on the machine".to_string(),
    };
    match &core.executor {
        // docker-autoscaler runners have their own section (`check_autoscaler.rs`).
        Executor::Direct | Executor::Slots(_) => {
            let _ = writeln!(
                out,
                "  limit {limit}, request_concurrency {}",
                core.request_concurrency
            );
            let _ = writeln!(out, "  image {image}, pull_policy {}", pull.join(", "));
            let _ = writeln!(out, "  {cache}");
        }
        Executor::Pool(policy) => {
            let _ = writeln!(
                out,
                "  limit {limit}, request_concurrency {}, MaxBuilds {}, MaxGrowthRate {}, MaxRemovalAttempts {}",
                core.request_concurrency,
                unlimited(policy.max_builds),
                unlimited(policy.max_growth_rate),
                policy.max_removal_attempts,
            );
            let _ = writeln!(out, "  image {image}, pull_policy {}", pull.join(", "));
            let _ = writeln!(out, "  {cache}");
            let _ = writeln!(
                out,
                "  machine names: {}{}",
                core.machine_prefix(),
                policy.machine_name
            );
            if let Some(m) = &s.machine
                && !m.registry_mirrors.is_empty()
            {
                let _ = writeln!(out, "  registry mirrors: {}", m.registry_mirrors.join(", "));
            }
            schedule(out, policy, at, days);
        }
    }
}

fn schedule(out: &mut String, policy: &MachinePolicy, at: DateTime<Utc>, days: u32) {
    if policy.periods.is_empty() {
        let _ = writeln!(
            out,
            "  policy at all times (no autoscaling periods): {}",
            values(&policy.base)
        );
        return;
    }
    let _ = writeln!(out, "  base policy: {}", values(&policy.base));
    let _ = writeln!(out, "  periods (the last matching one wins):");
    for (i, p) in policy.periods.iter().enumerate() {
        let exprs: Vec<String> = p
            .exprs()
            .iter()
            .map(|e| format!("{:?}", e.source()))
            .collect();
        let _ = writeln!(
            out,
            "    {}. {} in {}: {}",
            i + 1,
            exprs.join(", "),
            p.timezone().name(),
            values(&p.values)
        );
        if p.exprs().iter().any(|e| e.uses_day_specials()) {
            let _ = writeln!(
                out,
                "       L, W and # are evaluated by drover as GitLab's cronexpr defines them \
                 (no maintained cron crate reads them in the 7-field syntax)"
            );
        }
    }
    let _ = writeln!(
        out,
        "  in force from {} for {days} day{}:",
        at.format("%Y-%m-%d %H:%M:%S UTC"),
        if days == 1 { "" } else { "s" }
    );
    let _ = writeln!(
        out,
        "    {:<23}  {:<28}  {:<9}  {:>9}  {:>12}  {:>15}  {:>8}",
        "from (UTC)",
        "local time",
        "policy",
        "IdleCount",
        "IdleCountMin",
        "IdleScaleFactor",
        "IdleTime"
    );
    let start = Timestamp(u64::try_from(at.timestamp_millis()).unwrap_or(0));
    let end = start.after(Duration::from_secs(u64::from(days) * 86_400));
    let mut t = start;
    let mut active = active_period(&policy.periods, t);
    // Outside every period, local times are shown in the zone of the period last in force.
    let mut zone_of = active.unwrap_or(0);
    let mut rows = 0;
    loop {
        if let Some(i) = active {
            zone_of = i;
        }
        if rows == MAX_ROWS {
            // Counting the rest would cost as much as listing it (a 5-field period flips twice a
            // minute); say there is more and stop.
            let _ = writeln!(
                out,
                "    … more changes follow; the list stops after {MAX_ROWS}"
            );
            break;
        }
        row(out, policy, t, active, &policy.periods[zone_of]);
        rows += 1;
        // `next_change` may return a re-check instant with no change; skip those.
        let mut next = t;
        let next_active = loop {
            match next_change(&policy.periods, next) {
                Some(n) if n > next && n < end => {
                    next = n;
                    let a = active_period(&policy.periods, n);
                    if a != active {
                        break Some(a);
                    }
                }
                _ => break None,
            }
        };
        match next_active {
            Some(a) => {
                t = next;
                active = a;
            }
            None => break,
        }
    }
}

fn row(
    out: &mut String,
    policy: &MachinePolicy,
    t: Timestamp,
    active: Option<usize>,
    zone: &Period,
) {
    let utc = DateTime::<Utc>::from_timestamp_millis(t.0 as i64).unwrap_or_default();
    let local = utc.with_timezone(&zone.timezone());
    let (name, v) = match active {
        Some(i) => (format!("period {}", i + 1), policy.periods[i].values),
        None => ("base".to_string(), policy.base),
    };
    let _ = writeln!(
        out,
        "    {:<23}  {:<28}  {:<9}  {:>9}  {:>12}  {:>15}  {:>8}",
        utc.format("%a %Y-%m-%d %H:%M:%S").to_string(),
        local.format("%a %Y-%m-%d %H:%M:%S %Z").to_string(),
        name,
        v.idle_count,
        v.idle_count_min,
        v.idle_scale_factor,
        human(Duration::from_millis(v.idle_time_ms)),
    );
}

fn values(v: &PolicyValues) -> String {
    format!(
        "IdleCount {}, IdleCountMin {}, IdleScaleFactor {}, IdleTime {}",
        v.idle_count,
        v.idle_count_min,
        v.idle_scale_factor,
        human(Duration::from_millis(v.idle_time_ms))
    )
}
