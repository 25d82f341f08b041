//! `drover simulate`: run a config.toml against a workload in virtual time and report job waits and
//! fleet cost; with `--sweep`, find the cheapest configuration meeting a wait SLO.

use std::io::{IsTerminal, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use drover_sim::sweep::{SweepOptions, SweepSpec, run_sweep};
use drover_sim::{
    Recorder, RunOptions, Scenario, Workload, WorkloadError, plot, report::describe_runner,
};

use crate::config;
use crate::exit;

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
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Simulate only this runner of the config (jobs routed to the others are dropped)
    #[arg(long, value_name = "NAME")]
    pub runner: Option<String>,
    /// Vary a knob of every simulated runner: IdleCount, limit, IdleTime, MaxBuilds,
    /// IdleScaleFactor or MaxGrowthRate, over A..=B, A..=B:STEP or V1,V2,... (repeat the flag for a
    /// cartesian product; IdleTime in seconds or with a unit)
    #[arg(long = "sweep", value_name = "KEY=RANGE")]
    pub sweep: Vec<SweepSpec>,
    /// The SLO a sweep recommends for: the p95 job wait not to exceed (e.g. 90s, 2m; a bare number
    /// is seconds)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "sweep")]
    pub slo_p95_wait: Option<Duration>,
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
            (path.display().to_string(), loaded.core)
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
        "drover simulate: {} × {} (seed {})\n",
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
    let options = RunOptions {
        series_points: if args.plot.is_some() { PLOT_POINTS } else { 0 },
    };
    let result = drover_sim::run(scenario, &options)?;
    let report = result.report.with_price(args.cost_per_machine_hour);
    let text = match args.format {
        Format::Json => report.to_json() + "\n",
        Format::Table => format!("{header}\n{}", report.table()),
    };
    emit(args.out.as_deref(), &text)?;
    if let Some(path) = &args.plot {
        let title = format!(
            "{} — jobs queued and machines by state",
            scenario.workload.origin.display()
        );
        plot::time_series(path, &title, &result.series, &report)?;
        eprintln!("wrote {}", path.display());
    }
    Ok(ExitCode::from(exit::OK))
}

fn sweep(args: &Args, scenario: &Scenario, header: &str) -> anyhow::Result<ExitCode> {
    let options = SweepOptions {
        slo_p95_wait_seconds: args.slo_p95_wait.map(|d| d.as_secs_f64()),
        cost_per_machine_hour: args.cost_per_machine_hour,
    };
    let total: usize = args.sweep.iter().map(|s| s.values.len()).product();
    let bar = std::io::stderr().is_terminal().then(|| {
        let bar = indicatif::ProgressBar::new(total as u64);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} simulating {pos}/{len} configurations {bar:30} {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        bar
    });
    let tick = || {
        if let Some(bar) = &bar {
            bar.inc(1);
        }
    };
    let report = run_sweep(scenario, &args.sweep, &options, &tick)?;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let text = match args.format {
        Format::Json => report.to_json() + "\n",
        Format::Table => format!("{header}\n{}", report.table()),
    };
    emit(args.out.as_deref(), &text)?;
    if let Some(path) = &args.plot {
        let title = format!("{} — cost vs p95 wait", scenario.workload.origin.display());
        plot::sweep(path, &title, &report)?;
        eprintln!("wrote {}", path.display());
    }
    let missed = report.recommended.as_ref().is_some_and(|r| !r.meets_slo);
    Ok(ExitCode::from(if missed {
        exit::SLO_NOT_MET
    } else {
        exit::OK
    }))
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
