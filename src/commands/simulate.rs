//! `drover simulate`: run a config.toml against a workload in virtual time and report job waits and
//! fleet cost; with `--sweep`, find the cheapest configuration meeting a wait SLO.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use drover_sim::replicate::{DEFAULT_REPLICATIONS, MAX_REPLICATIONS, replicate};
use drover_sim::sweep::{Knob, SweepOptions, SweepReport, SweepSpec, run_sweep};
use drover_sim::{
    Recorder, RunOptions, Scenario, Workload, WorkloadError, plot, report::describe_runner,
};

use crate::config;
use crate::exit;

mod interrupt;
mod perf;
mod progress;

/// Points over time kept for `--plot` (merged in pairs as a run grows, so memory stays bounded).
const PLOT_POINTS: usize = 480;

#[derive(clap::Args, Debug)]
#[command(after_help = "Examples:\n  \
    drover simulate -c config.toml --workload fixtures/workloads/steady-day.toml\n  \
    drover simulate -c config.toml --workload day.toml --sweep IdleCount=0..=10 --sweep limit=10,20,40 \\\n      \
    --slo-p95-wait 2m --cost-per-machine-hour 0.05 --plot sweep.svg")]
pub struct Args {
    #[command(flatten)]
    pub config: crate::paths::ConfigArg,
    /// The traffic and the simulated world (arrivals, job durations, boot times, faults)
    #[arg(
        long,
        value_name = "WORKLOAD.toml",
        required_unless_present = "journal",
        conflicts_with = "journal"
    )]
    pub workload: Option<PathBuf>,
    /// Use the jobs recorded in a journal as the workload
    #[arg(long, value_name = "JOURNAL")]
    pub journal: Option<PathBuf>,
    /// Seed of every random draw [default: the workload's `seed`]
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// How to print the result
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Write the result to FILE instead of standard output
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Draw an SVG: queued jobs and machines over time, or a sweep's cost against p95 wait
    #[arg(long, value_name = "FILE.svg", value_parser = parse_svg_path)]
    pub plot: Option<PathBuf>,
    /// Simulate only this runner of the config (jobs routed to the others are dropped)
    #[arg(long, value_name = "NAME")]
    pub runner: Option<String>,
    /// Vary a knob of every simulated runner: IdleCount, limit, IdleTime, MaxBuilds,
    /// IdleScaleFactor or MaxGrowthRate, over A..=B, A..=B:STEP or V1,V2,... (repeat the flag for a
    /// cartesian product; IdleTime in seconds or with a unit)
    #[arg(long = "sweep", value_name = "KEY=RANGE")]
    pub sweep: Vec<SweepSpec>,
    /// The SLO to recommend for: the p95 job wait not to exceed at the upper end of its 95%
    /// confidence interval (e.g. 90s, 2m; a bare number is seconds)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, default_value = "60s")]
    pub slo_p95_wait: Duration,
    /// Independent runs (seeds) of every configuration; figures are their means with 95%
    /// confidence intervals
    #[arg(long, value_name = "N", default_value_t = DEFAULT_REPLICATIONS,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_REPLICATIONS)))]
    pub replications: u32,
    /// Without --sweep, do not look for the cheapest IdleCount meeting the SLO
    #[arg(long, conflicts_with = "sweep")]
    pub no_plan: bool,
    /// Price of one machine-hour, to report cost (every state is billed, creating and removing too)
    #[arg(long, value_name = "X", value_parser = parse_price)]
    pub cost_per_machine_hour: Option<f64>,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    drover_sim::workload::parse_seconds_or_duration_ms(s)
        .map(Duration::from_millis)
        .map_err(|e| format!("{e}: write a duration like 90s, 2m or 1h30m"))
}

/// A mistake in a workload or trace file, shown as config errors are: the line with a caret under
/// the value, and a hint (for an unknown key, the closest known one).
fn workload_error(e: WorkloadError) -> anyhow::Error {
    let WorkloadError::Invalid(e) = e else {
        return e.into();
    };
    let suggestion = e.unknown_key.as_ref().and_then(|(key, allowed)| {
        config::suggest(key, allowed.iter().map(String::as_str))
            .map(|best| format!("did you mean `{best}`?"))
    });
    let diagnostic = config::Diagnostic::new(&e.message)
        .at(&e.text, e.span.clone())
        .maybe_hint(suggestion.or(e.hint.clone()));
    anyhow::anyhow!(diagnostic.render("", &e.path))
}

/// Plots are SVG: another extension would name a file that is not what it says.
fn parse_svg_path(s: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(s);
    match path.extension().and_then(|e| e.to_str()) {
        Some(e) if e.eq_ignore_ascii_case("svg") => Ok(path),
        _ => Err(format!(
            "{s:?}: plots are drawn as SVG; name the file with .svg (open it in a browser)"
        )),
    }
}

fn parse_price(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(x) if x >= 0.0 && x.is_finite() => Ok(x),
        _ => Err(format!("{s:?} is not a price (a number ≥ 0)")),
    }
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    // A journal carries the config it was recorded under: it is the default for replaying its traffic.
    let recorded = match &args.journal {
        Some(path) => Some(journal_workload(path)?),
        None => None,
    };
    let (config_name, core_config) = match (&args.journal, &recorded, &args.config.config) {
        (Some(path), Some((_, journal_config)), None) => (
            format!("{} (its recorded config)", path.display()),
            journal_config.clone(),
        ),
        _ => {
            let path = args.config.path();
            let loaded = config::load(&path).map_err(|e| exit::with_code(exit::CONFIG, e))?;
            if !loaded.warnings.is_empty() {
                eprintln!(
                    "note: {} has {} warning{} (ignored or deprecated keys); `drover check-config` shows them",
                    loaded.origin.display(),
                    loaded.warnings.len(),
                    if loaded.warnings.len() == 1 { "" } else { "s" }
                );
            }
            (
                path.display().to_string(),
                loaded.scheduled_with_autoscalers(),
            )
        }
    };
    let workload = match (recorded, &args.workload) {
        (Some((workload, _)), _) => workload,
        (None, Some(path)) => Workload::load(path).map_err(workload_error)?,
        (None, None) => anyhow::bail!("give --workload FILE or --journal FILE"),
    };
    let origin = workload.origin.clone();
    let mut scenario = Scenario::new(core_config, Arc::new(workload), args.runner.as_deref())?;
    if let Some(seed) = args.seed {
        scenario = scenario.with_seed(seed);
    }
    let header = header(&config_name, &origin, &scenario);

    if args.sweep.is_empty() {
        single(&args, &scenario, &header)
    } else {
        sweep(&args, &scenario, &header)
    }
}

fn header(config: &str, workload: &Path, scenario: &Scenario) -> String {
    let mut out = format!(
        "drover simulate: {} × {} (base seed {})\n",
        config,
        workload.display(),
        scenario.seed()
    );
    out += &format!("  workload: {}\n", scenario.workload.summary());
    out += &format!("  concurrent {}\n", scenario.config.concurrent);
    for r in &scenario.config.runners {
        out += &format!("  runner {}\n", describe_runner(r));
    }
    out
}

fn single(args: &Args, scenario: &Scenario, header: &str) -> anyhow::Result<ExitCode> {
    let stop = interrupt::install();
    let options = RunOptions {
        series_points: if args.plot.is_some() { PLOT_POINTS } else { 0 },
        stop: Some(stop.clone()),
    };
    let reps = args.replications;
    let plan = (!args.no_plan).then(|| plan_specs(scenario)).flatten();
    let plan_points: usize = plan
        .as_ref()
        .map_or(0, |p| p.iter().map(|s| s.values.len()).product());
    let progress = progress::Bar::new(u64::from(reps) * (1 + plan_points as u64));
    let price = args.cost_per_machine_hour;
    let wall = Instant::now();
    let mut replicated =
        replicate(scenario, reps, &options, price, &|| progress.inc()).map_err(interrupted)?;
    replicated.perf = perf::measured(replicated.perf.events, wall.elapsed());
    // A configuration that could not even be simulated gets its verdict alone.
    let hopeless = replicated
        .summary
        .unstable
        .as_ref()
        .is_some_and(|u| u.stopped && u.evidence == "rates");
    let plan = if hopeless || replicated.interrupted {
        None
    } else {
        plan
    };
    let planned = match &plan {
        Some(specs) => {
            let wall = Instant::now();
            match run_sweep(scenario, specs, &sweep_options(args, &stop), &|| {
                progress.inc()
            }) {
                Ok(mut report) => {
                    report.perf = perf::measured(report.perf.events, wall.elapsed());
                    Some(report)
                }
                Err(drover_sim::SimError::Interrupted) => None,
                Err(e) => return Err(e.into()),
            }
        }
        None => None,
    };
    progress.finish();
    let was_interrupted = stop.load(std::sync::atomic::Ordering::Relaxed);
    let summary = &replicated.summary;
    let mut perf = replicated.perf.clone();
    if let Some(p) = &planned {
        perf.events += p.perf.events;
        perf.wall_seconds = drover_sim::stats::round3(perf.wall_seconds + p.perf.wall_seconds);
        perf.events_per_second = p.perf.events_per_second.max(perf.events_per_second);
        perf.peak_rss_bytes = perf::peak_rss_bytes();
    }
    let text = match args.format {
        Format::Json => {
            let mut doc = serde_json::to_value(summary)?;
            if let Some(o) = doc.as_object_mut() {
                if let Some(p) = &planned {
                    let mut plan = p.to_value();
                    if let Some(plan) = plan.as_object_mut() {
                        // Its figures are part of the document's own `perf`.
                        plan.remove("perf");
                    }
                    o.insert("plan".into(), plan);
                }
                if was_interrupted {
                    o.insert("interrupted".into(), true.into());
                }
                o.insert("perf".into(), serde_json::to_value(&perf)?);
            }
            serde_json::to_string_pretty(&doc)? + "\n"
        }
        Format::Table => {
            let mut text = format!("{header}\n{}", summary.table());
            if was_interrupted {
                text += &format!(
                    "\n  interrupted: {} of {reps} replications finished{}\n",
                    summary.replications,
                    match (&plan, &planned) {
                        (Some(_), None) => "; the plan was not run",
                        _ => "",
                    }
                );
            }
            if let (Some(p), Some(specs)) = (&planned, &plan) {
                let ranges: Vec<String> = specs
                    .iter()
                    .map(|s| {
                        let values: Vec<String> =
                            s.values.iter().map(|v| s.knob.show(*v)).collect();
                        format!("{} {}", s.knob.name(), values.join(","))
                    })
                    .collect();
                text += &format!(
                    "\n  what meets p95 wait ≤ {} at the lowest cost? ({}; everything else as configured)\n",
                    drover_sim::report::human_secs(args.slo_p95_wait.as_secs_f64()),
                    ranges.join("; "),
                );
                text += &p.short_table();
            }
            text += &format!(
                "  perf: {} events in {:.2} s ({:.2} M events/s), peak RSS {:.1} MiB\n",
                drover_sim::report::group(perf.events),
                perf.wall_seconds,
                perf.events_per_second / 1e6,
                perf.peak_rss_bytes as f64 / (1024.0 * 1024.0)
            );
            text
        }
    };
    // The plot first: a failure to draw it must not follow a result printed as if all went well.
    if let Some(path) = &args.plot {
        let title = format!(
            "{} — jobs queued and machines by state (seed {})",
            scenario.workload.origin.display(),
            scenario.seed()
        );
        let first = &replicated.first;
        write_plot(
            path,
            plot::time_series(&title, &first.series, &first.report),
        )?;
    }
    emit(args.out.as_deref(), &text)?;
    Ok(ExitCode::from(if was_interrupted {
        exit::INTERRUPTED
    } else {
        exit::OK
    }))
}

/// An interruption before anything finished exits as an interruption.
fn interrupted(e: drover_sim::SimError) -> anyhow::Error {
    match e {
        drover_sim::SimError::Interrupted => exit::with_code(exit::INTERRUPTED, e),
        e => e.into(),
    }
}

/// What a plain run is compared with: IdleCount from 0 to the runners' `limit` in at most 11 steps,
/// and `limit` as configured, 1.5× and 2× (`concurrent` following). With unlimited runners,
/// IdleCount up to twice its value (at least 10). For docker-autoscaler runners (when there is no
/// docker+machine one) the same over their policies' idle_count. None without machines.
fn plan_specs(scenario: &Scenario) -> Option<Vec<SweepSpec>> {
    let runners = &scenario.config.runners;
    let has_pool = runners
        .iter()
        .any(|r| matches!(r.executor, drover_core::Executor::Pool(_)));
    // docker-autoscaler runners alone: the same plan over idle_count (in slots).
    let (knob, pools): (Knob, Vec<_>) = if has_pool {
        let pools = runners
            .iter()
            .filter(|r| matches!(r.executor, drover_core::Executor::Pool(_)))
            .filter_map(|r| r.policy().map(|p| (r.limit, p.base.idle_count)))
            .collect();
        (Knob::IdleCount, pools)
    } else {
        let slots = runners
            .iter()
            .filter_map(|r| {
                let idle = r
                    .slot_policy()?
                    .pool
                    .periods
                    .iter()
                    .map(|p| p.values.idle_count);
                Some((r.limit, idle.max().unwrap_or(0)))
            })
            .collect();
        (Knob::PolicyIdleCount, slots)
    };
    let limit = pools.iter().map(|p| p.0).max()?;
    let limited = scenario.config.runners.iter().all(|r| r.limit > 0);
    let top = if limited {
        limit
    } else {
        pools.iter().map(|p| 2 * p.1).max().unwrap_or(0).max(10)
    };
    let step = top.div_ceil(10).max(1);
    let mut specs = vec![SweepSpec {
        knob,
        values: (0..=top).step_by(step as usize).map(f64::from).collect(),
    }];
    if limited && scenario.config.runners.len() == 1 {
        let mut limits = vec![limit, limit + limit.div_ceil(2), 2 * limit];
        limits.dedup();
        specs.push(SweepSpec {
            knob: Knob::Limit,
            values: limits.into_iter().map(f64::from).collect(),
        });
    }
    Some(specs)
}

fn sweep_options(args: &Args, stop: &Arc<std::sync::atomic::AtomicBool>) -> SweepOptions {
    SweepOptions {
        slo_p95_wait_seconds: Some(args.slo_p95_wait.as_secs_f64()),
        cost_per_machine_hour: args.cost_per_machine_hour,
        replications: args.replications,
        stop: Some(stop.clone()),
    }
}

fn sweep(args: &Args, scenario: &Scenario, header: &str) -> anyhow::Result<ExitCode> {
    let total: usize = args.sweep.iter().map(|s| s.values.len()).product();
    let progress = progress::Bar::new(total as u64 * u64::from(args.replications));
    let stop = interrupt::install();
    let wall = Instant::now();
    let mut report: SweepReport =
        run_sweep(scenario, &args.sweep, &sweep_options(args, &stop), &|| {
            progress.inc()
        })
        .map_err(interrupted)?;
    report.perf = perf::measured(report.perf.events, wall.elapsed());
    progress.finish();
    let text = match args.format {
        Format::Json => report.to_json() + "\n",
        Format::Table => format!("{header}\n{}{}", report.table(), report.perf_line()),
    };
    if let Some(path) = &args.plot {
        let title = format!("{} — cost vs p95 wait", scenario.workload.origin.display());
        write_plot(path, plot::sweep(&title, &report))?;
    }
    emit(args.out.as_deref(), &text)?;
    // Nothing recommended (every point unstable) misses the SLO too.
    let missed = report.recommended.as_ref().is_none_or(|r| !r.meets_slo);
    Ok(ExitCode::from(
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            exit::INTERRUPTED
        } else if missed {
            exit::SLO_NOT_MET
        } else {
            exit::OK
        },
    ))
}

/// Writes a drawn SVG to `path`.
fn write_plot(path: &Path, svg: Result<String, plot::PlotError>) -> anyhow::Result<()> {
    let svg = svg.with_context(|| format!("cannot draw {}", path.display()))?;
    std::fs::write(path, svg).with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}

fn emit(out: Option<&Path>, text: &str) -> anyhow::Result<()> {
    match out {
        Some(path) => {
            std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
        }
        None => {
            let mut stdout = std::io::stdout().lock();
            match stdout.write_all(text.as_bytes()) {
                // A closed pipe (`| head`) is not an error.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                other => other.context("cannot write to standard output"),
            }
        }
    }
}

/// The jobs recorded in a journal as a workload, with the config the journal was recorded under.
fn journal_workload(path: &Path) -> anyhow::Result<(Workload, drover_core::Config)> {
    let journal = drover_journal::read(path).map_err(|e| exit::with_code(exit::JOURNAL, e))?;
    let mut recorder = Recorder::new(&journal.header.config);
    let replay = drover_journal::replay(&journal, |r| recorder.observe(r.now, r.event, r.step))
        .map_err(|e| exit::with_code(exit::JOURNAL, e))?;
    if !replay.divergences.is_empty() {
        eprintln!(
            "note: {} does not replay to its recorded digests ({} differences; `drover replay` shows \
             them); the jobs it records are simulated all the same",
            path.display(),
            replay.divergences.len()
        );
    }
    let workload = recorder.into_workload(path.to_path_buf())?;
    Ok((workload, journal.header.config.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(text: &str) -> String {
        let e = Workload::parse(text, Path::new("w.toml")).unwrap_err();
        format!("{:#}", workload_error(e))
    }

    #[test]
    fn workload_errors_show_the_line_and_a_caret() {
        // CRLF line ends and a tab before the value: the caret still sits under it.
        let text = "jobs = 10\r\n[arrivals]\r\nkind = \"poisson\"\r\n\trate_per_min = -1.0\r\n";
        assert_eq!(
            shown(text),
            "rate_per_min must be a finite number > 0\n \
             --> w.toml:4:17\n  |\n\
             4 | \trate_per_min = -1.0\n  \
             | \t               ^^^^"
        );
        let text = "jobs = 10\n[arrivals]\nkind = \"poisson\"\nrate_per_min = 1.0\n\
                    [duration]\nkind = \"constant\"\nvalue = \"5 minuts\"\n";
        let err = shown(text);
        assert!(
            err.contains("--> w.toml:7:9\n")
                && err.contains("7 | value = \"5 minuts\"\n  |         ^^^^^^^^^^\n")
                && err.ends_with(
                    "= hint: write durations with a unit, like \"90s\", \"5m\" or \"1h30m\""
                ),
            "{err}"
        );
    }

    #[test]
    fn an_unknown_workload_key_suggests_the_closest() {
        let err =
            shown("jobs = 10\nsead = 4\n[arrivals]\nkind = \"poisson\"\nrate_per_min = 1.0\n");
        assert!(
            err.starts_with("unknown field `sead`")
                && err.contains("--> w.toml:2:1\n")
                && err.contains("2 | sead = 4\n  | ^^^^\n")
                && err.ends_with("= hint: did you mean `seed`?"),
            "{err}"
        );
        let err = shown("jobs = 10\nbanana = 4\n");
        assert!(
            err.ends_with(
                "= hint: the workload format is described in fixtures/workloads/README.md"
            ),
            "{err}"
        );
    }
}
