//! `[runners.machine]` and its `[[runners.machine.autoscaling]]` periods.

use std::ops::Range;

use drover_core::MachinePolicy;
use drover_core::period::{CronExpr, Period, PeriodError, PolicyValues, parse_timezone};
use toml::Spanned;

use super::ctx::Ctx;
use super::diagnostic::{Diagnostic, WarningKind};
use super::raw::{Count, RawMachine, RawPeriod, StrictFloat};
use super::schema::suggest;
use super::settings::{MachineSettings, Provider};
use super::timezone::zone_names;

/// GitLab Runner's default for `MaxRemovalAttempts`.
const DEFAULT_MAX_REMOVAL_ATTEMPTS: u32 = 30;
/// What a period expression looks like, for hints.
const CRON_FIELDS: &str = "Periods take 7 fields: second (0-59), minute (0-59), hour (0-23), \
                           day of month (1-31), month (1-12 or jan-dec), day of week (0-6 or \
                           sun-sat), year; e.g. \"* * 9-17 * * mon-fri *\"";
/// `MachineName` for the `docker` provider when the file has none.
const DEFAULT_MACHINE_NAME: &str = "%s";

/// The pool policy (for the core) and machine settings (for the daemon) of a `docker+machine`
/// runner; `None` when errors were recorded.
pub fn pool(
    raw: Option<Spanned<RawMachine>>,
    index: usize,
    runner: &str,
    runner_span: Range<usize>,
    ctx: &mut Ctx<'_>,
) -> Option<(MachinePolicy, MachineSettings)> {
    let errors_before = ctx.errors.len();
    let (section_span, m) = match raw {
        Some(m) => (m.span(), Some(m.into_inner())),
        None => (runner_span, None),
    };
    let m = m.unwrap_or_default();
    let path = format!("runners[{index}].machine");

    let provider = provider(&m, runner, ctx);
    let driver = m
        .MachineDriver
        .as_ref()
        .map(|d| d.get_ref().trim().to_string())
        .filter(|d| !d.is_empty());
    match provider {
        Some(Provider::DockerMachine) if driver.is_none() => {
            let at = m
                .Provider
                .as_ref()
                .map_or(section_span.clone(), |p| p.span());
            ctx.error(
                ctx.diag(at, format!("runner {runner:?}: the docker-machine provider needs a `MachineDriver`"))
                    .hint("set `MachineDriver` in [runners.machine], e.g. `MachineDriver = \"amazonec2\"`, or `Provider = \"docker\"` for sandboxes on a Docker engine"),
            );
        }
        Some(Provider::Docker) => {
            let unused = [
                ("MachineDriver", m.MachineDriver.as_ref()),
                ("MachineOptions", m.MachineOptions.first()),
                ("MachineOptionsWithName", m.MachineOptionsWithName.first()),
                ("DockerMachinePath", m.DockerMachinePath.as_ref()),
            ];
            if let Some((key, first)) = unused.iter().find_map(|(k, v)| v.map(|v| (k, v))) {
                let d = Diagnostic::new(format!(
                    "runner {runner:?} uses the docker provider: MachineDriver and MachineOptions have no effect"
                ))
                .hint("remove them, or set `Provider = \"docker-machine\"` to create machines with docker-machine");
                ctx.warn_at(
                    WarningKind::NoEffect,
                    format!("{path}.{key}"),
                    first.span(),
                    d,
                );
            }
        }
        _ => {}
    }
    if let (Some(Provider::DockerMachine), Some(host)) = (provider, &m.DockerHost) {
        let d = Diagnostic::new(format!(
            "runner {runner:?} uses the docker-machine provider: DockerHost has no effect"
        ))
        .hint("DockerHost is where the docker provider creates its sandboxes; remove it");
        ctx.warn_at(
            WarningKind::NoEffect,
            format!("{path}.DockerHost"),
            host.span(),
            d,
        );
    }

    let docker_machine_path = docker_machine_path(m.DockerMachinePath.as_ref(), runner, ctx);

    let machine_name = match &m.MachineName {
        Some(n) if !n.get_ref().contains("%s") => {
            ctx.error(
                ctx.diag(n.span(), format!("runner {runner:?}: MachineName must contain `%s`"))
                    .label("no `%s` here")
                    .hint(format!(
                        "drover replaces `%s` with a unique suffix per machine, e.g. MachineName = {:?}",
                        suggested_name(n.get_ref())
                    )),
            );
            None
        }
        Some(n) => Some(n.get_ref().clone()),
        None if provider == Some(Provider::DockerMachine) => {
            ctx.error(
                ctx.diag(section_span.clone(), format!("runner {runner:?}: `MachineName` is missing"))
                    .hint("add `MachineName = \"auto-%s\"` to [runners.machine]: `%s` becomes a unique suffix per machine"),
            );
            None
        }
        None => Some(DEFAULT_MACHINE_NAME.to_string()),
    };

    let base = policy_values(
        m.IdleCount,
        m.IdleCountMin,
        m.IdleScaleFactor.as_ref(),
        m.IdleTime,
        runner,
        ctx,
    );
    let periods: Vec<Period> = m
        .autoscaling
        .iter()
        .enumerate()
        .filter_map(|(i, p)| period(p, &format!("{path}.autoscaling[{i}]"), runner, ctx))
        .collect();

    let options = |v: &[Spanned<String>]| v.iter().map(|o| o.get_ref().clone()).collect::<Vec<_>>();
    let machine_options = options(&m.MachineOptions);
    if ctx.errors.len() > errors_before {
        return None;
    }
    let policy = MachinePolicy {
        base,
        max_builds: count(m.MaxBuilds),
        max_growth_rate: count(m.MaxGrowthRate),
        max_removal_attempts: m
            .MaxRemovalAttempts
            .map(|c| c.0)
            .filter(|&n| n > 0)
            .unwrap_or(DEFAULT_MAX_REMOVAL_ATTEMPTS),
        machine_name: machine_name.clone()?,
        periods,
    };
    let settings = MachineSettings {
        provider: provider?,
        docker_host: m
            .DockerHost
            .map(|h| h.into_inner())
            .filter(|h| !h.is_empty()),
        machine_driver: driver,
        docker_machine_path,
        machine_name: machine_name?,
        registry_mirrors: registry_mirrors(&machine_options),
        machine_options,
        machine_options_with_name: options(&m.MachineOptionsWithName),
    };
    Some((policy, settings))
}

fn provider(m: &RawMachine, runner: &str, ctx: &mut Ctx<'_>) -> Option<Provider> {
    let has_driver = m
        .MachineDriver
        .as_ref()
        .is_some_and(|d| !d.get_ref().trim().is_empty());
    let Some(p) = &m.Provider else {
        return Some(if has_driver {
            Provider::DockerMachine
        } else {
            Provider::Docker
        });
    };
    match p.get_ref().as_str() {
        "docker" => Some(Provider::Docker),
        "docker-machine" => Some(Provider::DockerMachine),
        other => {
            let hint = match suggest(other, ["docker", "docker-machine"].into_iter()) {
                Some(s) => format!("did you mean {s:?}?"),
                None => "use \"docker\" (sandboxes on a Docker engine) or \"docker-machine\" \
                         (machines created with docker-machine and MachineDriver)"
                    .to_string(),
            };
            ctx.error(
                ctx.diag(
                    p.span(),
                    format!("runner {runner:?}: unknown Provider {other:?}"),
                )
                .hint(hint),
            );
            None
        }
    }
}

/// `DockerMachinePath`: an absolute path, or a bare program name looked up in `PATH`. A relative
/// path would depend on the directory drover happens to be started in.
fn docker_machine_path(
    raw: Option<&Spanned<String>>,
    runner: &str,
    ctx: &mut Ctx<'_>,
) -> Option<String> {
    let raw = raw?;
    let path = raw.get_ref().trim();
    if path.is_empty() || path.starts_with('/') || !path.contains('/') {
        return (!path.is_empty()).then(|| path.to_string());
    }
    ctx.error(
        ctx.diag(
            raw.span(),
            format!("runner {runner:?}: DockerMachinePath must be an absolute path or a program name"),
        )
        .label("a relative path")
        .hint("write the full path, e.g. \"/usr/local/bin/docker-machine\", or just \"docker-machine\" to search PATH"),
    );
    None
}

fn count(c: Option<Count>) -> u32 {
    c.map_or(0, |c| c.0)
}

fn seconds_ms(c: Option<Count>) -> u64 {
    u64::from(count(c)) * 1000
}

/// `IdleCount`, `IdleCountMin`, `IdleScaleFactor` and `IdleTime`, of `[runners.machine]` or of a
/// period.
fn policy_values(
    idle_count: Option<Count>,
    idle_count_min: Option<Count>,
    idle_scale_factor: Option<&Spanned<StrictFloat>>,
    idle_time: Option<Count>,
    runner: &str,
    ctx: &mut Ctx<'_>,
) -> PolicyValues {
    PolicyValues {
        idle_count: count(idle_count),
        idle_count_min: count(idle_count_min),
        idle_scale_factor: factor(idle_scale_factor, runner, ctx),
        idle_time_ms: seconds_ms(idle_time),
    }
}

fn factor(f: Option<&Spanned<StrictFloat>>, runner: &str, ctx: &mut Ctx<'_>) -> f64 {
    match f {
        None => 0.0,
        Some(f) if f.get_ref().0.is_finite() && f.get_ref().0 >= 0.0 => f.get_ref().0,
        Some(f) => {
            ctx.error(
                ctx.diag(f.span(), format!("runner {runner:?}: IdleScaleFactor must be 0.0 or more"))
                    .label("a negative or infinite factor")
                    .hint("0.0 keeps IdleCount machines idle; 0.5 keeps half as many idle machines as busy ones"),
            );
            0.0
        }
    }
}

/// One `[[runners.machine.autoscaling]]` block.
fn period(raw: &Spanned<RawPeriod>, path: &str, runner: &str, ctx: &mut Ctx<'_>) -> Option<Period> {
    let p = raw.get_ref();
    let errors_before = ctx.errors.len();
    if p.Periods.is_empty() {
        let d = Diagnostic::new(format!("runner {runner:?}: this autoscaling block has no Periods and never applies"))
            .hint("add `Periods = [\"* * 9-17 * * mon-fri *\"]` (sec min hour dom month dow year) or remove the block");
        ctx.warn_at(WarningKind::EmptyPeriod, path.to_string(), raw.span(), d);
    }
    for expr in &p.Periods {
        match CronExpr::parse(expr.get_ref()) {
            Err(PeriodError::Cron { reason, .. }) => ctx.error(
                ctx.diag(
                    expr.span(),
                    format!("runner {runner:?}: invalid cron expression in Periods"),
                )
                // The cron parser draws its own caret over several lines; its last line says why.
                .label(
                    reason
                        .lines()
                        .rev()
                        .find(|l| !l.trim().is_empty())
                        .unwrap_or("invalid")
                        .trim(),
                )
                .hint(CRON_FIELDS),
            ),
            Err(e) => ctx.error(ctx.diag(expr.span(), format!("runner {runner:?}: {e}"))),
            Ok(parsed) if parsed.field_count() < 7 => {
                let src = expr.get_ref().trim();
                let (read_as, fix) = if parsed.field_count() == 5 {
                    (format!("0 {src} *"), format!("* {src} *"))
                } else {
                    (format!("0 {src}"), format!("* {src}"))
                };
                let d = Diagnostic::new(format!(
                    "period {src:?} has {} fields: it is read as {read_as:?}, active only in second 0 of each minute",
                    parsed.field_count()
                ))
                .label("seconds field missing")
                .hint(format!("write all 7 fields (sec min hour dom month dow year): {fix:?}"));
                ctx.warn_at(
                    WarningKind::ShortCron,
                    format!("{path}.Periods"),
                    expr.span(),
                    d,
                );
            }
            Ok(_) => {}
        }
    }
    let timezone = match &p.Timezone {
        Some(tz) if !tz.get_ref().is_empty() && tz.get_ref() != "Local" => {
            named_zone(tz, runner, ctx)?
        }
        Some(tz) => ctx.local_zone(&format!("{path}.Timezone"), tz.span()),
        None => ctx.local_zone(path, raw.span()),
    };
    let values = policy_values(
        p.IdleCount,
        p.IdleCountMin,
        p.IdleScaleFactor.as_ref(),
        p.IdleTime,
        runner,
        ctx,
    );
    if ctx.errors.len() > errors_before {
        return None;
    }
    let exprs: Vec<&str> = p.Periods.iter().map(|e| e.get_ref().as_str()).collect();
    match Period::new(&exprs, &timezone, values) {
        Ok(period) => Some(period),
        Err(e) => {
            ctx.error(ctx.diag(raw.span(), format!("runner {runner:?}: {e}")));
            None
        }
    }
}

/// `MachineName` with `%s` added where an operator would likely want it.
fn suggested_name(name: &str) -> String {
    match name.split_once('.') {
        Some((host, domain)) => format!("{host}-%s.{domain}"),
        None => format!("{name}-%s"),
    }
}

/// `engine-registry-mirror=URL` options configure the machine's Docker engine to pull through a
/// mirror; the executor uses them too.
fn registry_mirrors(options: &[String]) -> Vec<String> {
    options
        .iter()
        .filter_map(|o| {
            o.trim_start_matches('-')
                .strip_prefix("engine-registry-mirror=")
        })
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .collect()
}

/// A time zone's IANA name, or `None` once an unknown one is reported (with a suggestion).
pub(super) fn named_zone(tz: &Spanned<String>, runner: &str, ctx: &mut Ctx<'_>) -> Option<String> {
    if let Ok(zone) = parse_timezone(tz.get_ref()) {
        return Some(zone.name().to_string());
    }
    let hint = match suggest(tz.get_ref(), zone_names()) {
        Some(s) => format!("did you mean {s:?}?"),
        None => "use an IANA zone name such as \"Europe/Berlin\", \"UTC\" or \"Local\"".into(),
    };
    ctx.error(
        ctx.diag(
            tz.span(),
            format!("runner {runner:?}: unknown time zone {:?}", tz.get_ref()),
        )
        .hint(hint),
    );
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_mirrors_come_from_engine_options() {
        let opts = [
            "amazonec2-region=eu-west-1".to_string(),
            "engine-registry-mirror=http://10.0.0.5:6000".to_string(),
            "--engine-registry-mirror=http://mirror:5000".to_string(),
        ];
        assert_eq!(
            registry_mirrors(&opts),
            ["http://10.0.0.5:6000", "http://mirror:5000"]
        );
    }

    #[test]
    fn machine_name_suggestions_keep_the_domain() {
        assert_eq!(suggested_name("ci-runner"), "ci-runner-%s");
        assert_eq!(suggested_name("auto.example.com"), "auto-%s.example.com");
    }
}
