//! Start-up: the core recovered from the journal (or a new journal), `Resumed`, a config file
//! changed while drover was down applied as a reload, every runner's adapters, tasks for the jobs
//! the core still holds, stray job containers removed, and the journal compacted. Everything here
//! runs before the event loop, so it may wait on engines and providers.

use std::time::Duration;

use drover_core::state::MachineState;
use drover_core::{Command, Core, Event, JobId, RunnerId, Signal, Timestamp};
use drover_docker::{EngineConfig, Executor, ExecutorOptions, MachineEndpoint};
use drover_journal::{Header, Writer};
use tokio::sync::mpsc::UnboundedSender;

use super::Input;
use super::adapters::{self, Site};
use super::jobs::Jobs;
use super::ledger::Ledger;
use super::metrics::Metrics;
use super::runners::{self, Runner, Runners};
use super::state_dir::StateDir;
use crate::config::{Loaded, Provider};
use anyhow::Context;

/// How long start-up waits for one engine (or one machine's address) while looking for stray job
/// containers.
const STRAY_SCAN_DEADLINE: Duration = Duration::from_secs(15);

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
    let runners = build_runners(&setup, ledger.core()).await?;
    runners::keep_configs(setup.state_dir, setup.loaded, ledger.core());
    let executor = Executor::new(ExecutorOptions::default());
    let mut jobs = Jobs::new(
        setup.state_dir.clone(),
        executor.clone(),
        setup.inputs.clone(),
    );
    adopt_recovered_jobs(setup.state_dir, ledger.core(), &runners, &mut jobs);
    clean_stray_job_containers(ledger.core(), &runners, &executor).await;
    // Start from a snapshot so the journal does not grow without bound across restarts.
    ledger.compact()?;
    Ok(Started {
        ledger,
        runners,
        jobs,
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
/// copy of the config file kept when it was last applied, while it still holds anything.
async fn build_runners(setup: &Setup<'_>, core: &Core) -> anyhow::Result<Runners> {
    let mut runners = Runners::default();
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
        let runner = adapters::build(&settings, &r.config.short_token, setup.site, None).await?;
        runners.install(id, runner);
    }
    Ok(runners)
}

/// A task for every job the core still holds. Payloads of jobs it does not hold (stored just
/// before a crash, never journaled) are dropped: GitLab re-queues unaccepted jobs.
fn adopt_recovered_jobs(state_dir: &StateDir, core: &Core, runners: &Runners, jobs: &mut Jobs) {
    let held: Vec<(JobId, RunnerId)> = core
        .state()
        .jobs()
        .into_iter()
        .map(|(id, j)| (id, j.runner))
        .collect();
    for (job, runner) in &held {
        match (state_dir.load_job(job.0), runners.get(*runner)) {
            (Ok(payload), Some(r)) => jobs.adopt(payload, r.context.clone()),
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

/// Removes the containers of jobs the core does not hold (a job finished and forgotten before a
/// crash cut its cleanup short). Before any command runs, so no new job can be mistaken for a
/// stray; engines are scanned at once and each within a deadline, so a dead VM delays start-up
/// by seconds, not by a connection timeout per machine.
async fn clean_stray_job_containers(core: &Core, runners: &Runners, executor: &Executor) {
    let mut scans = Vec::new();
    for (id, runner) in runners.iter() {
        let keys = stray_keys(core, id, runner);
        for endpoint in job_engines(core, id, runner).await {
            let keys = keys.clone();
            scans.push(async move {
                let scan = clean_engine(core, executor, runner, &endpoint, &keys);
                if tokio::time::timeout(STRAY_SCAN_DEADLINE, scan)
                    .await
                    .is_err()
                {
                    tracing::warn!(
                        runner = %runner.label,
                        engine = %endpoint.engine.describe(),
                        "gave up looking for stray job containers: the engine did not answer"
                    );
                }
            });
        }
    }
    futures_util::future::join_all(scans).await;
}

/// The labels a runner's stray job containers can carry. On a docker-machine VM, which only this
/// runner uses, every key the runner had (its machines named under an earlier key keep jobs
/// labelled with it); on an engine other installations may share (a plain `docker` runner, the
/// `docker` provider's sandboxes), only the current key, which includes this installation's id:
/// an earlier key may be another installation's too.
fn stray_keys(core: &Core, id: RunnerId, runner: &Runner) -> Vec<String> {
    let mut keys = vec![runner.context.short_token.clone()];
    let own_vms = matches!(runner.place, runners::Place::Provider(_))
        && runner
            .settings()
            .machine
            .as_ref()
            .is_some_and(|m| m.provider != Provider::Docker);
    if own_vms {
        for key in core.state().runner_keys(id) {
            if !keys.contains(&key) {
                keys.push(key);
            }
        }
    }
    keys
}

async fn clean_engine(
    core: &Core,
    executor: &Executor,
    runner: &Runner,
    on: &MachineEndpoint,
    keys: &[String],
) {
    for key in keys {
        let jobs = match executor.list_jobs(&on.engine, key).await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(runner = %runner.label, "listing job containers failed: {e}");
                return;
            }
        };
        for job in jobs {
            if core.state().job(JobId(job)).is_some() {
                continue;
            }
            tracing::info!(
                runner = %runner.label,
                job,
                "removing the containers of a job drover no longer holds"
            );
            if let Err(e) = executor.cleanup(on, key, job).await {
                tracing::warn!(runner = %runner.label, job, "removing stray job containers failed: {e}");
            }
        }
    }
}

/// The engines a runner's job containers can be on, one endpoint per engine: the local engine
/// of a plain `docker` runner, the one shared engine of the `docker` provider's sandboxes, or
/// each live machine's own engine for `docker-machine` and cloud instances (its removed machines
/// took their containers with them).
async fn job_engines(core: &Core, id: RunnerId, runner: &Runner) -> Vec<MachineEndpoint> {
    let provider = match &runner.place {
        runners::Place::Engine(endpoint) => return vec![endpoint.clone()],
        runners::Place::Nowhere => return Vec::new(),
        runners::Place::Provider(provider) => provider,
    };
    // The `docker` provider's one engine; else (docker-machine VMs, cloud instances) each
    // machine's own.
    if let Some(machine) = runner.settings().machine.as_ref()
        && machine.provider == Provider::Docker
    {
        return vec![MachineEndpoint::engine_only(EngineConfig {
            host: machine.docker_host.clone(),
            tls: None,
        })];
    }
    let machines = core.state().machines();
    let lookups = machines
        .iter()
        .filter(|(_, m)| {
            m.runner == id
                && matches!(
                    m.state,
                    MachineState::Idle | MachineState::Busy(_) | MachineState::Shared(_)
                )
        })
        .map(|(_, m)| async move {
            match tokio::time::timeout(STRAY_SCAN_DEADLINE, provider.endpoint(&m.name)).await {
                Ok(Ok(endpoint)) => Some(endpoint),
                Ok(Err(e)) => {
                    tracing::debug!(machine = %m.name, "no engine to clean: {e}");
                    None
                }
                Err(_) => None,
            }
        });
    let mut endpoints: Vec<MachineEndpoint> = Vec::new();
    for endpoint in futures_util::future::join_all(lookups)
        .await
        .into_iter()
        .flatten()
    {
        if !endpoints
            .iter()
            .any(|known| known.engine == endpoint.engine)
        {
            endpoints.push(endpoint);
        }
    }
    endpoints
}
