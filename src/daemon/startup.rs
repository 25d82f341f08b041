//! Start-up: the core recovered from the journal (or a new journal), `Resumed`, a config file
//! changed while drover was down applied as a reload, every runner's adapters (a runner whose
//! engine or provider does not answer waits in `late.rs`), tasks for the jobs the core still
//! holds, stray job containers removed (`strays.rs`), and the journal compacted. Everything here
//! runs before the event loop, so it may wait on engines and providers.

use drover_core::{Command, Core, Event, JobId, RunnerId, Signal, Timestamp};
use drover_docker::{Executor, ExecutorOptions};
use drover_journal::{Header, Writer};
use tokio::sync::mpsc::UnboundedSender;

use super::Input;
use super::adapters::{self, Site};
use super::jobs::Jobs;
use super::late::{Late, Retry};
use super::ledger::Ledger;
use super::metrics::Metrics;
use super::runners::{self, Runners};
use super::state_dir::StateDir;
use super::strays;
use crate::config::Loaded;
use anyhow::Context;

/// What start-up works with.
pub struct Setup<'a> {
    pub state_dir: &'a StateDir,
    pub site: &'a Site,
    pub loaded: &'a Loaded,
    pub inputs: UnboundedSender<Input>,
}

/// What the event loop starts from.
pub struct Started {
    pub ledger: Ledger,
    pub runners: Runners,
    pub jobs: Jobs,
    /// The executor that swept the stray job containers, for the runners built later.
    pub executor: Executor,
    /// Runners whose adapters could not be built yet: what concerns them waits there.
    pub late: Late,
    /// The commands of `Resumed` (and of the reload at start), not carried out yet.
    pub commands: Vec<Command>,
    pub wake: Option<Timestamp>,
}

pub async fn start(setup: Setup<'_>) -> anyhow::Result<Started> {
    let (core, journal, recovered) = open_journal(setup.state_dir, setup.loaded)?;
    let metrics = Metrics::new();
    if let Some(addr) = &setup.loaded.global.listen_address {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening for metrics on listen_address {addr}"))?;
        tracing::info!(address = %listener.local_addr()?, "serving metrics on /metrics");
        tokio::spawn(super::metrics::serve(listener, metrics.clone()));
    }
    let mut ledger = Ledger::new(core, journal, metrics);

    // A new process: first the core re-issues what was in flight (and leaves any shutdown the
    // last process was in), then a config file changed while drover was down applies as a reload
    // (keeping the journal's seed, so machine names keep their scheme).
    let resumed = ledger.record(Event::Resumed)?;
    let mut commands = resumed.commands;
    let mut wake = resumed.wake_at;
    let mut wanted = setup.loaded.core.clone();
    wanted.seed = ledger.core().config().seed;
    if recovered && *ledger.core().config() != wanted {
        tracing::info!("the config file changed since the journal was written; applying it");
        let reload = ledger.record(Event::Signal(Signal::Reload(Box::new(wanted))))?;
        commands.extend(reload.commands);
        wake = reload.wake_at;
    }
    // Adapters and job tasks before any command: a runner the reload added needs its provider and
    // GitLab link, a resumed job its task.
    let executor = Executor::new(ExecutorOptions::default());
    let (runners, mut late) = build_runners(&setup, ledger.core(), &executor).await?;
    runners::keep_configs(setup.state_dir, setup.loaded, ledger.core());
    let mut jobs = Jobs::new(
        setup.state_dir.clone(),
        executor.clone(),
        setup.inputs.clone(),
    );
    adopt_recovered_jobs(
        setup.state_dir,
        ledger.core(),
        &runners,
        &mut late,
        &mut jobs,
    );
    // Before any command runs, so no new job can be mistaken for a stray.
    let sweeps = runners.iter().map(|(id, r)| {
        let plan = strays::plan(
            ledger.core(),
            id,
            r.settings(),
            &r.context.short_token,
            &r.label,
        );
        (plan, r.provider())
    });
    strays::sweep(sweeps.collect(), &executor).await;
    // Start from a snapshot so the journal does not grow without bound across restarts.
    ledger.compact()?;
    Ok(Started {
        ledger,
        runners,
        jobs,
        executor,
        late,
        commands,
        wake,
    })
}

/// The core recovered from the journal, or a new one with a new journal; `true` if recovered.
fn open_journal(state_dir: &StateDir, loaded: &Loaded) -> anyhow::Result<(Core, Writer, bool)> {
    let journal_err = |e| crate::exit::with_code(crate::exit::JOURNAL, e);
    let path = state_dir.journal();
    if !path.exists() {
        let now = super::clock::Clock::new(Timestamp::ZERO).now();
        let mut config = loaded.core.clone();
        config.seed = rand::random();
        let header = Header {
            created_at: now,
            drover_version: env!("CARGO_PKG_VERSION").into(),
            config: config.clone(),
        };
        let writer = Writer::create(&path, &header, true).map_err(journal_err)?;
        return Ok((Core::new(config, now), writer, false));
    }
    let (writer, contents) = Writer::open(&path, true).map_err(journal_err)?;
    if let Some(t) = contents.torn_tail {
        tracing::warn!(
            offset = t.offset,
            bytes = t.len,
            "the journal ended in a torn frame (a crash mid-write); it was truncated"
        );
    }
    let core = drover_journal::recover(&contents).map_err(journal_err)?;
    tracing::info!(
        events = core.state().seq(),
        "recovered the scheduling core from the journal"
    );
    Ok((core, writer, true))
}

/// Adapters for every runner the core knows. A runner deleted from the file gets them from the
/// copy of the config file kept when it was last applied, while it still holds anything. A runner
/// whose provider cannot be built (its engine is down) waits in [`Late`] while drover tries
/// again; its GitLab settings must be usable, or start-up fails as for any config error.
async fn build_runners(
    setup: &Setup<'_>,
    core: &Core,
    executor: &Executor,
) -> anyhow::Result<(Runners, Late)> {
    let mut runners = Runners::default();
    let mut late = Late::default();
    for (i, r) in core.state().runners().iter().enumerate() {
        let id = RunnerId(i as u16);
        let settings = if r.retired {
            if !runners::holds_anything(core, id) {
                continue;
            }
            match runners::kept_settings(setup.state_dir, &r.config.name) {
                Some(settings) => settings,
                None => continue,
            }
        } else {
            match setup.loaded.runner(&r.config.name) {
                Some(settings) => {
                    adapters::warn_if_provider_changed(setup.state_dir, core, id, settings);
                    settings.clone()
                }
                None => continue,
            }
        };
        let short = &r.config.short_token;
        let site = setup.site;
        adapters::runner_link(&settings, short, &site.system_id, &site.config_path)?;
        match adapters::build(&settings, short, site, None).await {
            Ok(runner) => runners.install(id, runner),
            Err(e) => {
                let label = runners::label(&settings, short);
                let strays = strays::plan(core, id, &settings, short, &label);
                let retry = Retry {
                    settings,
                    short: short.clone(),
                    label,
                    site: site.clone(),
                    strays,
                    executor: executor.clone(),
                };
                late.start(id, retry, &e);
            }
        }
    }
    Ok((runners, late))
}

/// A task for every job the core still holds. Payloads of jobs it does not hold (stored just
/// before a crash, never journaled) are dropped: GitLab re-queues unaccepted jobs.
/// Those of a runner still waiting for its adapters wait in `late`.
fn adopt_recovered_jobs(
    state_dir: &StateDir,
    core: &Core,
    runners: &Runners,
    late: &mut Late,
    jobs: &mut Jobs,
) {
    let held: Vec<(JobId, RunnerId)> = core
        .state()
        .jobs()
        .into_iter()
        .map(|(id, j)| (id, j.runner))
        .collect();
    for (job, runner) in &held {
        match (state_dir.load_job(job.0), runners.get(*runner)) {
            (Ok(payload), Some(r)) => jobs.adopt(payload, r.context.clone()),
            (Ok(payload), None) if late.is_waiting(*runner) => late.hold_job(*runner, payload),
            (Err(e), _) => tracing::error!(job = job.0, "cannot resume the job: {e:#}"),
            (_, None) => {
                tracing::error!(job = job.0, "cannot resume the job: its runner is gone")
            }
        }
    }
    for id in state_dir.jobs() {
        if held.iter().any(|(j, _)| j.0 == id) {
            continue;
        }
        // Perhaps accepted (an acknowledgement may have been in flight), out of the core, not
        // reported: the core failed it and the crash cut the report short; re-acknowledging it
        // settles whether it is ours to report. Anything else is done, or GitLab refused it.
        let progress = match state_dir.load_progress(id) {
            Ok(progress) => progress,
            Err(e) => {
                // Kept for an operator: what the job did is unknown, so nothing is done with it.
                tracing::error!(job = id, "the job's record cannot be read: {e:#}");
                continue;
            }
        };
        let waiting = progress.runner.as_deref().and_then(|n| late.named(n));
        if let (true, false, Some(waiting), Ok(payload)) = (
            progress.accepted,
            progress.reported,
            waiting,
            state_dir.load_job(id),
        ) {
            late.hold_interrupted(waiting, payload, state_dir.load_rejection(id));
            continue;
        }
        let runner = progress.runner.as_deref().and_then(|n| runners.named(n));
        if let (true, false, Some(r), Ok(payload)) = (
            progress.accepted,
            progress.reported,
            runner,
            state_dir.load_job(id),
        ) {
            tracing::warn!(
                runner = %r.label,
                job = id,
                "reporting a job whose failure report a crash cut short"
            );
            let why = state_dir.load_rejection(id);
            jobs.report_interrupted(payload, r.context.clone(), why);
            continue;
        }
        state_dir.remove_job(id);
    }
}
