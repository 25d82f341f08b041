//! From the raw layer to the validated configs: the core's [`drover_core::Config`] and the
//! daemon's settings. Every problem is collected with its place in the file, so one run of
//! `drover check-config` shows them all.

use std::collections::BTreeMap;
use std::time::Duration;

use drover_core::{Config as CoreConfig, Executor, RunnerConfig};
use drover_gitlab::Secret;
use toml::Spanned;

use super::autoscaler::{self, AutoscalerRunner, raw::RawAutoscaler};
use super::ctx::{Ctx, key_values};
use super::diagnostic::{Diagnostic, KeyRef, Warning, WarningKind};
use super::raw::{RawConfig, RawRunner};
use super::schema::{Walk, suggest};
use super::settings::{
    DockerSettings, ExecutorKind, GlobalSettings, Hooks, LogFormat, LogLevel, RunnerSettings,
};
use super::timezone::LocalZone;
use super::{cache, docker, machine};

/// GitLab Runner's defaults.
const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(3);
const DEFAULT_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_OUTPUT_LIMIT_KB: u32 = 4096;
/// GitLab Runner's `cache_dir` for docker executors.
const DEFAULT_CACHE_DIR: &str = "/cache";

/// Builds the validated configs, or returns `None` when errors were recorded in `ctx`.
pub fn build(raw: RawConfig, walk: &Walk, ctx: &mut Ctx<'_>) -> Option<Built> {
    key_warnings(walk, ctx);
    let (mut core, global) = global(&raw, ctx);
    let names = runner_names(&raw.runners, ctx);

    let mut core_runners = Vec::new();
    let mut runners = Vec::new();
    let mut autoscalers = Vec::new();
    let key_names = key_names(&raw.runners, &names);
    let runs = raw.runners.into_iter().zip(names).zip(key_names);
    for (i, ((raw_runner, name), key_name)) in runs.enumerate() {
        match runner(raw_runner, i, name, &key_name, ctx) {
            Some(Runner::Scheduled(core, settings)) => {
                core_runners.push(core);
                runners.push(settings);
            }
            Some(Runner::Autoscaler(a)) => autoscalers.push(a),
            None => {}
        }
    }
    if let Some((path, span)) = ctx.local_zone_used.clone()
        && let LocalZone::Unknown { reason } = ctx.local
    {
        let d = Diagnostic::new(format!(
            "periods in the `Local` time zone are evaluated in UTC: {reason}"
        ))
        .hint("set `Timezone` to a zone name such as \"Europe/Berlin\", or set TZ");
        ctx.warn_at(WarningKind::LocalTimezone, path, span, d);
    }
    if !ctx.errors.is_empty() {
        return None;
    }

    core.runners = core_runners;
    if let Err(e) = core.validate() {
        // Everything `validate` checks was checked above with a location; this is a backstop.
        ctx.error(Diagnostic::new(format!("invalid config: {e}")));
        return None;
    }
    Some(Built {
        core,
        global,
        runners,
        autoscalers,
    })
}

/// The validated configs of a file.
pub struct Built {
    pub core: CoreConfig,
    pub global: GlobalSettings,
    /// The runners the core schedules, in its order.
    pub runners: Vec<RunnerSettings>,
    /// `docker-autoscaler` runners, which the core does not schedule yet.
    pub autoscalers: Vec<AutoscalerRunner>,
}

/// One `[[runners]]` entry, validated.
#[allow(clippy::large_enum_variant)] // one per entry, built once and unpacked at once
enum Runner {
    Scheduled(RunnerConfig, RunnerSettings),
    Autoscaler(AutoscalerRunner),
}

/// One warning naming every ignored key, and one per kind of deprecation.
fn key_warnings(walk: &Walk, ctx: &mut Ctx<'_>) {
    if !walk.ignored.is_empty() {
        let n = walk.ignored.len();
        let mut d = Diagnostic::new(format!(
            "{n} key{} GitLab Runner knows {} no effect in drover and {} ignored",
            if n == 1 { "" } else { "s" },
            if n == 1 { "has" } else { "have" },
            if n == 1 { "is" } else { "are" },
        ))
        .hint("remove them to silence this warning; drover acts on the keys listed in its README");
        d.listing = walk
            .ignored
            .iter()
            .map(|k| (k.line, k.path.clone()))
            .collect();
        ctx.warnings.push(Warning {
            kind: WarningKind::IgnoredKeys,
            keys: walk.ignored.clone(),
            diagnostic: d,
        });
    }
    let mut by_hint: BTreeMap<&str, Vec<KeyRef>> = BTreeMap::new();
    for (key, hint) in &walk.deprecated {
        by_hint.entry(hint).or_default().push(key.clone());
    }
    for (hint, keys) in by_hint {
        let mut d = Diagnostic::new("deprecated keys have no effect and are ignored").hint(hint);
        d.listing = keys.iter().map(|k| (k.line, k.path.clone())).collect();
        ctx.warnings.push(Warning {
            kind: WarningKind::Deprecated,
            keys,
            diagnostic: d,
        });
    }
}

/// The top level: the core's global values (its runners still to add) and the daemon's.
fn global(raw: &RawConfig, ctx: &mut Ctx<'_>) -> (CoreConfig, GlobalSettings) {
    let concurrent = match &raw.concurrent {
        None => {
            ctx.error(
                Diagnostic::new("`concurrent` is missing")
                    .hint("add `concurrent = N` at the top of the file: how many jobs drover runs at once across all runners"),
            );
            1
        }
        Some(c) if c.get_ref().0 == 0 => {
            ctx.error(
                ctx.diag(c.span(), "`concurrent` must be at least 1")
                    .label("no job could ever run")
                    .hint("set it to how many jobs may run at once across all runners, e.g. `concurrent = 10`"),
            );
            1
        }
        Some(c) => c.get_ref().0,
    };
    let secs_or = |v: Option<super::raw::Count>, default: Duration| match v {
        Some(c) if c.0 > 0 => Duration::from_secs(u64::from(c.0)),
        _ => default,
    };
    let log_level = raw.log_level.as_ref().and_then(|l| {
        let level = LogLevel::parse(l.get_ref());
        if level.is_none() {
            ctx.error(
                ctx.diag(l.span(), format!("unknown log_level {:?}", l.get_ref()))
                    .hint("use one of \"debug\", \"info\", \"warning\", \"error\""),
            );
        }
        level
    });
    let log_format = raw.log_format.as_ref().and_then(|l| {
        let format = LogFormat::parse(l.get_ref());
        if format.is_none() {
            ctx.error(
                ctx.diag(l.span(), format!("unknown log_format {:?}", l.get_ref()))
                    .hint("use \"text\" (or GitLab Runner's \"runner\") or \"json\""),
            );
        }
        format
    });
    let listen_address = raw.listen_address.as_ref().and_then(|a| {
        let addr = a.get_ref().trim();
        let port_ok = addr.rsplit_once(':').is_some_and(|(_, p)| p.parse::<u16>().is_ok());
        if addr.is_empty() {
            None
        } else if port_ok {
            Some(addr.to_string())
        } else {
            ctx.error(
                ctx.diag(a.span(), format!("listen_address {addr:?} has no port"))
                    .label("expected host:port")
                    .hint("write the metrics address as \"host:port\", e.g. \"127.0.0.1:9252\" or \":9252\""),
            );
            None
        }
    });
    let mut core = CoreConfig::new(concurrent);
    core.check_interval = secs_or(raw.check_interval, DEFAULT_CHECK_INTERVAL);
    core.shutdown_timeout = secs_or(raw.shutdown_timeout, DEFAULT_SHUTDOWN_TIMEOUT);
    core.drain_machines_on_shutdown = raw
        .machine
        .as_ref()
        .and_then(|m| m.shutdown_drain.as_ref())
        .is_some_and(|d| d.enabled);
    let global = GlobalSettings {
        listen_address,
        log_level,
        log_format,
    };
    (core, global)
}

/// What each runner's machine key is made from besides the system id and URL: its own name, or
/// `#<n>` for the n-th runner without one. Not the name drover gives an unnamed runner: that is
/// derived from its token, which rotates; the position among unnamed runners does not.
fn key_names(runners: &[Spanned<RawRunner>], names: &[String]) -> Vec<String> {
    let mut unnamed = 0;
    runners
        .iter()
        .zip(names)
        .map(|(r, name)| {
            let named = r
                .get_ref()
                .name
                .as_ref()
                .is_some_and(|n| !n.get_ref().trim().is_empty());
            if named {
                name.clone()
            } else {
                unnamed += 1;
                format!("#{unnamed}")
            }
        })
        .collect()
}

/// Each runner's unique name: its own, or one derived from its token or position.
fn runner_names(runners: &[Spanned<RawRunner>], ctx: &mut Ctx<'_>) -> Vec<String> {
    let mut first_seen: BTreeMap<String, usize> = BTreeMap::new();
    for r in runners {
        if let Some(name) = r
            .get_ref()
            .name
            .as_ref()
            .filter(|n| !n.get_ref().trim().is_empty())
        {
            let line = ctx.line(name.span());
            let key = name.get_ref().trim().to_string();
            if let Some(first) = first_seen.get(&key) {
                ctx.error(
                    ctx.diag(name.span(), format!("two runners are named {key:?}"))
                        .label("a second runner with this name")
                        .note(format!("the first is on line {first}"))
                        .hint("runner names must be unique: drover matches runners by name across reloads"),
                );
            } else {
                first_seen.insert(key, line);
            }
        }
    }
    let mut taken: std::collections::BTreeSet<String> = first_seen.into_keys().collect();
    let mut names = Vec::new();
    for (i, r) in runners.iter().enumerate() {
        let raw = r.get_ref();
        if let Some(name) = raw.name.as_ref().filter(|n| !n.get_ref().trim().is_empty()) {
            names.push(name.get_ref().trim().to_string());
            continue;
        }
        let token = raw.token.as_deref().filter(|t| !t.is_empty());
        let base = match token {
            Some(t) => format!("runner-{}", drover_core::config::short_token(t, "")),
            None => format!("runner-{}", i + 1),
        };
        let mut name = base.clone();
        let mut n = 2;
        while taken.contains(&name) {
            name = format!("{base}-{n}");
            n += 1;
        }
        taken.insert(name.clone());
        let d = Diagnostic::new(format!(
            "runner #{} has no name; drover calls it {name:?}",
            i + 1
        ))
        .label("this [[runners]] entry")
        .hint(
            "add `name = \"...\"` to it: logs, metrics and config reloads identify runners by name",
        );
        ctx.warn_at(
            WarningKind::UnnamedRunner,
            format!("runners[{i}]"),
            r.span(),
            d,
        );
        names.push(name);
    }
    names
}

fn runner(
    raw: Spanned<RawRunner>,
    index: usize,
    name: String,
    key_name: &str,
    ctx: &mut Ctx<'_>,
) -> Option<Runner> {
    let span = raw.span();
    let raw = raw.into_inner();
    let errors_before = ctx.errors.len();
    let executor = match &raw.executor {
        None => {
            ctx.error(
                ctx.diag(span.clone(), format!("runner {name:?} has no `executor`"))
                    .label("this [[runners]] entry")
                    .hint(
                        "add `executor = \"docker+machine\"` (an autoscaled pool of machines), \
                         `executor = \"docker-autoscaler\"` (an AWS Auto Scaling group) or \
                         `executor = \"docker\"` (jobs on this host's Docker engine)",
                    ),
            );
            None
        }
        Some(e) => match e.get_ref().as_str() {
            "docker+machine" => Some(ExecutorKind::DockerMachine),
            "docker" => Some(ExecutorKind::Docker),
            "docker-autoscaler" => None,
            other => {
                let known = ["docker+machine", "docker", "docker-autoscaler"];
                let hint = match suggest(other, known.into_iter()) {
                    Some(s) => format!("did you mean {s:?}?"),
                    None => "drover supports \"docker+machine\" (an autoscaled pool of machines), \
                             \"docker-autoscaler\" (an AWS Auto Scaling group) and \"docker\" \
                             (jobs on this host's Docker engine)"
                        .into(),
                };
                ctx.error(
                    ctx.diag(
                        e.span(),
                        format!("runner {name:?}: executor {other:?} is not supported"),
                    )
                    .label("drover runs jobs in Docker only")
                    .hint(hint),
                );
                None
            }
        },
    };

    let url = raw.url.as_ref().and_then(|u| {
        let url = u.get_ref().trim();
        if url.is_empty() {
            None
        } else if url.starts_with("https://") || url.starts_with("http://") {
            Some(url.to_string())
        } else {
            ctx.error(
                ctx.diag(
                    u.span(),
                    format!("runner {name:?}: url {url:?} is not an http(s) URL"),
                )
                .hint("write the GitLab address in full, e.g. \"https://gitlab.example.com/\""),
            );
            None
        }
    });
    let token = raw
        .token
        .as_deref()
        .filter(|t| !t.is_empty())
        .map(Secret::new);
    let environment = key_values(
        &raw.environment,
        &format!("runners[{index}].environment"),
        ctx,
    );
    let docker = raw
        .docker
        .map(|d| docker::settings(d, index, ctx))
        .unwrap_or_else(docker::defaults);
    let cache = cache::settings(raw.cache, index, ctx);
    let cache_dir = match raw.cache_dir {
        Some(d) if d.get_ref().trim().starts_with('/') => {
            d.into_inner().trim().trim_end_matches('/').to_string()
        }
        Some(d) if !d.get_ref().trim().is_empty() => {
            ctx.error(
                ctx.diag(
                    d.span(),
                    format!(
                        "`runners[{index}].cache_dir` {:?} is not an absolute path",
                        d.get_ref()
                    ),
                )
                .hint("write the directory inside the job as an absolute path, e.g. \"/cache\""),
            );
            String::new()
        }
        _ => DEFAULT_CACHE_DIR.to_string(),
    };

    let autoscaler = raw
        .executor
        .as_ref()
        .is_some_and(|e| e.get_ref() == "docker-autoscaler");
    if autoscaler {
        // What the daemon runs the runner's jobs with; `autoscaler` is filled in once validated.
        let settings = RunnerSettings {
            name: name.clone(),
            url: url.clone(),
            token: token.clone(),
            tls_ca_file: raw.tls_ca_file.filter(|f| !f.is_empty()),
            executor: ExecutorKind::DockerAutoscaler,
            output_limit_kb: output_limit_kb(raw.output_limit),
            environment,
            builds_dir: raw.builds_dir.filter(|d| !d.is_empty()),
            hooks: Hooks {
                pre_build_script: raw.pre_build_script,
                post_build_script: raw.post_build_script,
            },
            docker: docker.clone(),
            machine: None,
            cache,
            cache_dir,
            autoscaler: None,
        };
        let common = Common {
            index,
            name,
            span,
            url,
            token,
            docker,
            limit: raw.limit.map_or(0, |c| c.0),
            request_concurrency: raw.request_concurrency.map_or(1, |c| c.0.max(1)),
            errors_before,
            settings,
        };
        let machine_span = raw.machine.as_ref().map(|m| m.span());
        return autoscaler_runner(common, key_name, raw.autoscaler, machine_span, ctx);
    }
    if let Some(a) = &raw.autoscaler {
        let d = Diagnostic::new(format!(
            "runner {name:?} does not use executor \"docker-autoscaler\": its [runners.autoscaler] section has no effect"
        ))
        .hint("remove the section, or set `executor = \"docker-autoscaler\"`");
        ctx.warn_at(
            WarningKind::NoEffect,
            format!("runners[{index}].autoscaler"),
            a.span(),
            d,
        );
    }
    let (core_executor, machine) = match executor {
        Some(ExecutorKind::DockerMachine) => {
            match machine::pool(raw.machine, index, &name, span.clone(), ctx) {
                Some((policy, settings)) => (Some(Executor::Pool(policy)), Some(settings)),
                None => (None, None),
            }
        }
        Some(ExecutorKind::Docker) => {
            if let Some(m) = &raw.machine {
                let d = Diagnostic::new(format!(
                    "runner {name:?} has executor \"docker\": its [runners.machine] section has no effect"
                ))
                .hint("remove the section, or set `executor = \"docker+machine\"` for an autoscaled pool");
                ctx.warn_at(
                    WarningKind::NoEffect,
                    format!("runners[{index}].machine"),
                    m.span(),
                    d,
                );
            }
            (Some(Executor::Direct), None)
        }
        // docker-autoscaler runners were built above.
        None | Some(ExecutorKind::DockerAutoscaler) => (None, None),
    };

    if ctx.errors.len() > errors_before {
        return None;
    }
    let (core_executor, executor) = (core_executor?, executor?);
    let limit = raw.limit.map_or(0, |c| c.0);
    if let Executor::Pool(policy) = &core_executor {
        let idle = policy.periods.iter().map(|p| p.values.idle_count);
        let most = idle.chain([policy.base.idle_count]).max().unwrap_or(0);
        if limit > 0 && most > limit {
            let d = Diagnostic::new(format!(
                "runner {name:?}: IdleCount {most} is above limit {limit}, so it is never reached"
            ))
            .label("this [[runners]] entry")
            .hint("`limit` caps the machines of every state, idle ones included: raise it or lower IdleCount");
            ctx.warn_at(
                WarningKind::NoEffect,
                format!("runners[{index}].limit"),
                span,
                d,
            );
        }
    }
    let request_concurrency = raw.request_concurrency.map_or(1, |c| c.0.max(1));
    // Machines are named by installation, URL and name, not by the token: a rotated token keeps
    // its machines, and another installation's machines are not ours.
    let short_token =
        drover_core::config::machine_key(&ctx.system_id, url.as_deref().unwrap_or(""), key_name);
    let core = RunnerConfig {
        name: name.clone(),
        short_token,
        limit,
        request_concurrency,
        executor: core_executor,
    };
    let settings = RunnerSettings {
        name,
        url,
        token,
        tls_ca_file: raw.tls_ca_file.filter(|f| !f.is_empty()),
        executor,
        output_limit_kb: output_limit_kb(raw.output_limit),
        environment,
        builds_dir: raw.builds_dir.filter(|d| !d.is_empty()),
        hooks: Hooks {
            pre_build_script: raw.pre_build_script,
            post_build_script: raw.post_build_script,
        },
        docker,
        machine,
        cache,
        cache_dir,
        autoscaler: None,
    };
    Some(Runner::Scheduled(core, settings))
}

/// `output_limit` in KiB; unset or 0: GitLab Runner's default.
fn output_limit_kb(raw: Option<super::raw::Count>) -> u32 {
    raw.map(|c| c.0)
        .filter(|&kb| kb > 0)
        .unwrap_or(DEFAULT_OUTPUT_LIMIT_KB)
}

/// The keys of a `[[runners]]` entry every executor shares, already validated.
struct Common {
    index: usize,
    name: String,
    span: std::ops::Range<usize>,
    url: Option<String>,
    token: Option<Secret>,
    docker: DockerSettings,
    limit: u32,
    request_concurrency: u32,
    errors_before: usize,
    /// The daemon's settings of the runner.
    settings: RunnerSettings,
}

/// A `docker-autoscaler` runner: the common keys plus `[runners.autoscaler]`.
fn autoscaler_runner(
    c: Common,
    key_name: &str,
    raw: Option<Spanned<RawAutoscaler>>,
    machine_span: Option<std::ops::Range<usize>>,
    ctx: &mut Ctx<'_>,
) -> Option<Runner> {
    let Common { index, name, .. } = &c;
    if let Some(span) = machine_span {
        let d = Diagnostic::new(format!(
            "runner {name:?} has executor \"docker-autoscaler\": its [runners.machine] section has no effect"
        ))
        .hint("the Auto Scaling group and [runners.autoscaler] size the fleet; remove [runners.machine]");
        ctx.warn_at(
            WarningKind::NoEffect,
            format!("runners[{index}].machine"),
            span,
            d,
        );
    }
    let autoscaler = autoscaler::settings(raw, *index, name, c.span.clone(), ctx);
    if ctx.errors.len() > c.errors_before {
        return None;
    }
    let autoscaler = autoscaler?;
    let core = autoscaler::core_runner(
        name,
        key_name,
        &ctx.system_id,
        c.url.as_deref(),
        c.limit,
        c.request_concurrency,
        &autoscaler,
    );
    let core = match core {
        Ok(core) => core,
        Err(e) => {
            // The policies were checked above with their places; this is a backstop.
            ctx.error(Diagnostic::new(format!("runner {name:?}: {e}")));
            return None;
        }
    };
    let mut settings = c.settings;
    settings.autoscaler = Some(Box::new(autoscaler.clone()));
    Some(Runner::Autoscaler(AutoscalerRunner {
        core,
        settings,
        name: c.name,
        url: c.url,
        token: c.token,
        limit: c.limit,
        request_concurrency: c.request_concurrency,
        docker: c.docker,
        autoscaler,
    }))
}
