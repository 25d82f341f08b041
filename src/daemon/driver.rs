//! The event loop and its start-up: recovery from the journal, reconciliation, signals, reloads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use drover_core::state::MachineState;
use drover_core::{Command, Core, Event, FailCause, JobId, JobInfo, RunnerId, Signal, Timestamp};
use drover_docker::{EngineConfig, Executor, ExecutorOptions, MachineEndpoint};
use drover_gitlab::api::JobResponse;
use drover_journal::{Header, Writer};
use tokio::sync::mpsc::{self, UnboundedReceiver};

use super::Input;
use super::adapters;
use super::clock::Clock;
use super::coordinator::Coordinator;
use super::jobs::{JobCommand, Jobs, RunnerContext};
use super::machines::{Machines, Placement};
use super::metrics::Metrics;
use super::signals::{self, OpSignal};
use super::state_dir::StateDir;
use super::status::Status;
use crate::config::{self, ExecutorKind, Loaded, Provider, RunnerSettings};
use crate::files::write_private;

/// A snapshot every this many events bounds the work of a restart.
const SNAPSHOT_EVERY: u64 = 2_000;
/// The journal is rewritten from a snapshot when it grows past this.
const COMPACT_AT_BYTES: u64 = 64 << 20;
/// GitLab Runner checks the config file's modification time this often.
const RELOAD_CHECK: Duration = Duration::from_secs(3);
/// How long start-up waits for one engine (or one machine's address) while looking for stray job
/// containers.
const STRAY_SCAN_DEADLINE: Duration = Duration::from_secs(15);

pub struct RunOptions {
    pub config: PathBuf,
    pub state_dir: PathBuf,
}

struct Driver {
    core: Core,
    journal: Writer,
    clock: Clock,
    rx: UnboundedReceiver<Input>,
    coordinator: Coordinator,
    machines: Machines,
    jobs: Jobs,
    contexts: BTreeMap<RunnerId, Arc<RunnerContext>>,
    local_engines: BTreeMap<RunnerId, drover_docker::MachineEndpoint>,
    metrics: Metrics,
    state_dir: StateDir,
    config_path: PathBuf,
    loaded: Loaded,
    config_mtime: Option<SystemTime>,
    system_id: String,
    started_at: String,
    wake: Option<Timestamp>,
    exit: Option<bool>,
    last_status: Option<std::time::Instant>,
    /// The payload of the job being handed to the core, and the runner it came for.
    pending_job: Option<(RunnerId, Box<JobResponse>)>,
    /// Jobs failed for a payload drover cannot use, most recent last: one that comes back is not
    /// accepted (and failed) again.
    rejected: RecentIds,
}

/// The most recent ids of a bounded set.
#[derive(Default)]
struct RecentIds {
    order: std::collections::VecDeque<u64>,
    ids: std::collections::BTreeSet<u64>,
}

impl RecentIds {
    const CAPACITY: usize = 10_000;

    /// Adds `id`; `false` if it was there already.
    fn insert(&mut self, id: u64) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > Self::CAPACITY
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
        true
    }
}

/// Runs the daemon until a shutdown completes. The exit code is 0 after a clean shutdown.
pub async fn run(options: RunOptions, loaded: Loaded) -> anyhow::Result<ExitCode> {
    // First of all: a signal during the start-up (recovery can take a while) is handled once the
    // loop runs, instead of killing the process with the default action.
    let signals = signals::listen().context("installing signal handlers")?;
    let state_dir = StateDir::open(&options.state_dir)?;
    let _lock = state_dir.lock()?;
    let system_id = crate::files::system_id(&options.config)?;
    let (tx, rx) = mpsc::unbounded_channel();

    // Recover the core from the journal, or start one.
    let journal_path = state_dir.journal();
    let mut clock = Clock::new(Timestamp::ZERO);
    let (core, journal, recovered) = if journal_path.exists() {
        let (writer, contents) = Writer::open(&journal_path, true)
            .map_err(|e| crate::exit::with_code(crate::exit::JOURNAL, e))?;
        if let Some(t) = contents.torn_tail {
            tracing::warn!(
                offset = t.offset,
                bytes = t.len,
                "the journal ended in a torn frame (a crash mid-write); it was truncated"
            );
        }
        let core = drover_journal::recover(&contents)
            .map_err(|e| crate::exit::with_code(crate::exit::JOURNAL, e))?;
        tracing::info!(
            events = core.state().seq(),
            "recovered the scheduling core from the journal"
        );
        (core, writer, true)
    } else {
        let now = clock.now();
        let mut config = loaded.core.clone();
        config.seed = rand::random();
        let header = Header {
            created_at: now,
            drover_version: env!("CARGO_PKG_VERSION").into(),
            config: config.clone(),
        };
        let writer = Writer::create(&journal_path, &header, true)
            .map_err(|e| crate::exit::with_code(crate::exit::JOURNAL, e))?;
        (Core::new(config, now), writer, false)
    };
    clock = Clock::new(core.state().now());

    let executor = Executor::new(ExecutorOptions::default());
    let metrics = Metrics::new();
    if let Some(addr) = &loaded.global.listen_address {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening for metrics on listen_address {addr}"))?;
        tracing::info!(address = %listener.local_addr()?, "serving metrics on /metrics");
        tokio::spawn(super::metrics::serve(listener, metrics.clone()));
    }

    let mut driver = Driver {
        core,
        journal,
        clock,
        rx,
        coordinator: Coordinator::new(tx.clone()),
        machines: Machines::new(tx.clone()),
        jobs: Jobs::new(state_dir.clone(), executor.clone(), tx.clone()),
        contexts: BTreeMap::new(),
        local_engines: BTreeMap::new(),
        metrics,
        state_dir,
        config_path: options.config.clone(),
        config_mtime: mtime(&options.config),
        loaded,
        system_id,
        started_at: String::new(),
        wake: None,
        exit: None,
        last_status: None,
        pending_job: None,
        rejected: RecentIds::default(),
    };
    driver.started_at = driver.clock.now().to_string();

    // A new process: first the core re-issues what was in flight (and leaves any shutdown the
    // last process was in), then a config file changed while drover was down applies as a reload
    // (keeping the journal's seed, so machine names keep their scheme).
    let mut commands = driver.handle(Event::Resumed)?;
    let mut wanted = driver.loaded.core.clone();
    wanted.seed = driver.core.config().seed;
    if recovered && *driver.core.config() != wanted {
        tracing::info!("the config file changed since the journal was written; applying it");
        commands.extend(driver.handle(Event::Signal(Signal::Reload(Box::new(wanted))))?);
    }
    // Adapters and job tasks before any command: a runner the reload added needs its provider and
    // GitLab link, a resumed job its task.
    driver.sync_adapters().await?;
    driver.keep_runner_configs();
    driver.adopt_recovered_jobs();
    driver.clean_stray_job_containers(&executor).await;
    // Start from a snapshot so the journal does not grow without bound across restarts.
    driver.journal = Writer::compact(&journal_path, &driver.core, env!("CARGO_PKG_VERSION"), true)
        .map_err(|e| crate::exit::with_code(crate::exit::JOURNAL, e))?;
    driver.execute_all(commands);
    driver.run(signals).await
}

/// Whether a job just handed to the core needs a task: while the core holds it, or when the core
/// failed it in that very step (a job answer that arrives during a forceful shutdown), so the
/// failure is still reported to GitLab.
fn needs_task(core: &Core, commands: &[Command], job: JobId) -> bool {
    core.state().job(job).is_some()
        || commands
            .iter()
            .any(|c| matches!(c, Command::FailJob { job: failed, .. } if *failed == job))
}

fn mtime(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

impl Driver {
    async fn run(mut self, mut signals: UnboundedReceiver<OpSignal>) -> anyhow::Result<ExitCode> {
        let mut reload_tick = tokio::time::interval(RELOAD_CHECK);
        reload_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(
            runners = self.core.config().runners.len(),
            concurrent = self.core.config().concurrent,
            state_dir = %self.state_dir.root().display(),
            "drover is running"
        );
        while self.exit.is_none() {
            self.clock.now();
            let sleep = self.wake.map(|t| self.clock.until(t));
            tokio::select! {
                Some(input) = self.rx.recv() => self.input(input)?,
                () = tokio::time::sleep(sleep.unwrap_or(Duration::ZERO)), if sleep.is_some() => {
                    self.wake = None;
                    self.step(Event::Tick)?;
                }
                Some(signal) = signals.recv() => self.signal(signal).await?,
                _ = reload_tick.tick() => {
                    if mtime(&self.config_path) != self.config_mtime {
                        self.reload().await?;
                    }
                    self.write_status(false);
                }
            }
        }
        let clean = self.exit.unwrap_or(false);
        // Failure reports of jobs that never started may still be on their way to GitLab.
        if clean && !self.jobs.wait(self.core.config().shutdown_timeout).await {
            tracing::warn!("some job reports did not reach GitLab before the shutdown timeout");
        }
        if let Err(e) = self.journal.append_snapshot(&self.core) {
            tracing::error!("writing the final snapshot failed: {e}");
        }
        self.write_status(true);
        tracing::info!(clean, "drover stopped");
        Ok(if clean {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(crate::exit::FAILURE)
        })
    }

    fn input(&mut self, input: Input) -> anyhow::Result<()> {
        match input {
            Input::Event(event) => self.step(event),
            Input::Job { runner, job } if self.core.state().job(JobId(job.id)).is_some() => {
                // The core records the duplicate; the payload of the job it holds stays as it is.
                tracing::warn!(
                    runner = runner.0,
                    job = job.id,
                    "GitLab delivered job {} again while drover holds it; ignoring the second \
                     delivery",
                    job.id
                );
                let info = JobInfo {
                    timeout_ms: drover_core::millis(job.timeout()),
                    queued_ms: 0,
                };
                self.step(Event::JobReceived {
                    runner,
                    job: JobId(job.id),
                    info,
                })
            }
            Input::Undecodable { runner, job } => {
                let name = self.runner_name(runner);
                let ctx = self.contexts.get(&runner).cloned();
                if self.jobs.holds(JobId(job.id)) {
                    // A job drover runs must not be failed by a second, garbled delivery.
                    self.metrics.unusable_payload(&name, "repeated");
                    tracing::warn!(
                        runner = %name,
                        job = job.id,
                        path = %job.error.path,
                        "GitLab delivered job {} again while drover holds it, with a payload \
                         drover cannot use; ignoring the second delivery",
                        job.id
                    );
                } else if !self.rejected.insert(job.id) {
                    self.metrics.unusable_payload(&name, "repeated");
                    tracing::warn!(
                        runner = %name,
                        job = job.id,
                        path = %job.error.path,
                        "GitLab handed out job {} again, whose payload drover already failed; \
                         leaving it alone",
                        job.id
                    );
                } else if let Some(ctx) = ctx {
                    self.metrics.unusable_payload(&name, "failed");
                    tracing::error!(
                        runner = %name,
                        job = job.id,
                        path = %job.error.path,
                        "GitLab sent job {} with a payload drover cannot use; failing the job: {}",
                        job.id,
                        job.error
                    );
                    self.jobs.reject(*job, ctx);
                } else {
                    tracing::error!(job = job.id, "cannot report a job whose runner is gone");
                }
                self.step(Event::JobRequestEmpty { runner })
            }
            Input::Unusable { runner, message } => {
                let name = self.runner_name(runner);
                self.metrics.unusable_payload(&name, "dropped");
                tracing::error!(runner = %name, "dropped an answer to a job request: {message}");
                self.step(Event::JobRequestEmpty { runner })
            }
            Input::Job { runner, job } => {
                // The payload is stored first: a journaled job always has it after a crash.
                self.state_dir
                    .save_job(&job)
                    .context("storing the job payload")?;
                let info = JobInfo {
                    timeout_ms: drover_core::millis(job.timeout()),
                    queued_ms: (job.job_info.time_in_queue_seconds.max(0.0) * 1000.0) as u64,
                };
                let id = JobId(job.id);
                self.pending_job = Some((runner, job));
                self.step(Event::JobReceived {
                    runner,
                    job: id,
                    info,
                })
            }
        }
    }

    fn runner_name(&self, runner: RunnerId) -> String {
        self.core
            .state()
            .runner(runner)
            .map(|r| r.config.name.clone())
            .unwrap_or_default()
    }

    async fn signal(&mut self, signal: OpSignal) -> anyhow::Result<()> {
        match signal {
            OpSignal::Quit => {
                tracing::info!("SIGQUIT: finishing running jobs, then exiting");
                self.step(Event::Signal(Signal::Graceful))
            }
            OpSignal::Terminate => {
                tracing::info!("SIGTERM/SIGINT: aborting jobs and exiting (again to exit at once)");
                self.step(Event::Signal(Signal::Forceful))
            }
            OpSignal::Hangup => self.reload().await,
        }
    }

    /// Journal, handle, act: the write-ahead discipline.
    fn step(&mut self, event: Event) -> anyhow::Result<()> {
        let commands = self.handle(event)?;
        self.execute_all(commands);
        Ok(())
    }

    /// Journals an event and hands it to the core; returns the commands to carry out.
    fn handle(&mut self, event: Event) -> anyhow::Result<Vec<Command>> {
        let now = self.clock.now();
        self.journal
            .append_event(
                self.core.state().seq(),
                now,
                &event,
                self.journal.digest_of(&self.core),
            )
            .context("appending to the journal (without it drover cannot continue safely)")?;
        self.metrics.before(&self.core, now, &event);
        let finished = match &event {
            Event::JobFinished { job, .. } => Some(*job),
            _ => None,
        };
        let step = self.core.handle(now, event);
        if let Some((runner, job)) = self.pending_job.take()
            && needs_task(&self.core, &step.commands, JobId(job.id))
            && let Some(ctx) = self.contexts.get(&runner).cloned()
        {
            self.jobs.adopt(*job, ctx);
        }
        if let Some(job) = finished {
            self.jobs.forget(job);
        }
        self.metrics.after(&self.core, now, &step.commands);
        self.wake = step.wake_at;
        if self.journal.events_since_snapshot() >= SNAPSHOT_EVERY {
            if self.journal.len() > COMPACT_AT_BYTES {
                self.journal = Writer::compact(
                    self.journal.path(),
                    &self.core,
                    env!("CARGO_PKG_VERSION"),
                    true,
                )?;
            } else {
                self.journal.append_snapshot(&self.core)?;
            }
        }
        self.write_status(false);
        Ok(step.commands)
    }

    fn execute_all(&mut self, commands: Vec<Command>) {
        for command in commands {
            self.execute(command);
        }
    }

    fn execute(&mut self, command: Command) {
        match command {
            Command::RequestJob { runner } => self.coordinator.request(runner),
            Command::CancelRequests { runner } => self.coordinator.cancel(runner),
            Command::CreateMachine {
                machine,
                runner,
                name,
            } => self.machines.create(runner, machine, name),
            Command::RemoveMachine {
                machine,
                runner,
                name,
                reason,
            } => self.machines.remove(runner, machine, name, reason.as_str()),
            Command::ListMachines {
                runner,
                request,
                prefixes,
            } => self.machines.list(runner, request, prefixes),
            Command::RunJob {
                job,
                runner,
                machine,
            } => {
                let placement = self.placement(runner, machine);
                self.jobs.command(job, JobCommand::Run(placement));
            }
            Command::ResumeJob {
                job,
                runner,
                machine,
            } => {
                let placement = self.placement(runner, machine);
                self.jobs.command(job, JobCommand::Resume(placement));
            }
            Command::CancelJob { job } => self.jobs.command(job, JobCommand::Cancel),
            Command::AbortJob { job, reason } => self.jobs.command(job, JobCommand::Abort(reason)),
            Command::FailJob {
                job,
                runner,
                reason,
                cause,
            } => {
                if self.jobs.holds(job) {
                    let detail = match cause {
                        FailCause::CreationFailed => self.machines.creation_error(runner),
                        _ => None,
                    };
                    self.jobs.command(job, JobCommand::Fail(reason, detail));
                    self.jobs.release(job);
                } else {
                    tracing::error!(
                        job = job.0,
                        "cannot report a job drover holds no payload for"
                    );
                }
            }
            Command::Exit { clean } => self.exit = Some(clean),
        }
    }

    fn placement(&self, runner: RunnerId, machine: Option<drover_core::MachineId>) -> Placement {
        match machine {
            None => match self.local_engines.get(&runner) {
                Some(endpoint) => Placement::Engine(endpoint.clone()),
                None => Placement::Unavailable(format!(
                    "runner #{} has no Docker engine configured",
                    runner.0
                )),
            },
            Some(m) => {
                let name = self.core.state().machine(m).map(|m| m.name.clone());
                match (self.machines.provider(runner), name) {
                    (Some(provider), Some(name)) => Placement::Machine { provider, name },
                    _ => Placement::Unavailable(format!("machine #{} is gone", m.0)),
                }
            }
        }
    }

    /// Makes sure every runner the core knows has its adapters, built from the current settings.
    /// A runner deleted from the file keeps the adapters it ran with while it drains; after a
    /// restart it gets them from the copy of the config file kept when it was last applied.
    async fn sync_adapters(&mut self) -> anyhow::Result<()> {
        let runners: Vec<(RunnerId, String, String, bool)> = self
            .core
            .state()
            .runners()
            .iter()
            .enumerate()
            .map(|(i, r)| {
                (
                    RunnerId(i as u16),
                    r.config.name.clone(),
                    r.config.short_token.clone(),
                    r.retired,
                )
            })
            .collect();
        for (id, name, short, retired) in runners {
            let settings = if retired {
                if self.contexts.contains_key(&id) || !self.holds_anything(id) {
                    continue;
                }
                match self.kept_settings(&name) {
                    Some(settings) => settings,
                    None => continue,
                }
            } else {
                match self.loaded.runner(&name) {
                    Some(settings) => settings.clone(),
                    None => continue,
                }
            };
            let previous = self.contexts.get(&id).map(|c| c.settings.clone());
            if previous.as_ref() == Some(&settings) {
                continue;
            }
            let (link, context) =
                adapters::runner_link(&settings, &short, &self.system_id, &self.config_path)?;
            self.coordinator.set(id, link);
            self.contexts.insert(id, context);
            match settings.executor {
                ExecutorKind::Docker => {
                    self.local_engines
                        .insert(id, adapters::local_engine(&settings));
                }
                ExecutorKind::DockerMachine => {
                    let keep = self.machines.provider(id).is_some()
                        && previous.is_some_and(|p| adapters::same_provider(&p, &settings));
                    if keep {
                        continue;
                    }
                    if let Some(provider) =
                        adapters::provider(&settings, &short, self.state_dir.root()).await?
                    {
                        self.machines.set(id, provider);
                    }
                }
            }
        }
        Ok(())
    }

    /// Whether the core still holds machines or jobs of the runner.
    fn holds_anything(&self, id: RunnerId) -> bool {
        self.core.state().runner(id).is_some_and(|r| {
            let c = &r.counts;
            c.creating + c.idle + c.busy + c.removing + c.running + c.queued > 0
        })
    }

    /// The settings a runner deleted from the config file ran with, from the copy kept for it.
    fn kept_settings(&self, name: &str) -> Option<RunnerSettings> {
        let kept = self.state_dir.load_runner_config(name);
        let settings = kept.as_deref().and_then(|text| {
            let origin = self.state_dir.root().join("runners");
            match config::parse(text, &origin) {
                Ok(loaded) => loaded.runner(name).cloned(),
                Err(e) => {
                    tracing::warn!(
                        runner = name,
                        "the kept copy of its config is unusable:\n{e}"
                    );
                    None
                }
            }
        });
        if settings.is_none() {
            tracing::error!(
                runner = name,
                "this runner was deleted from the config file while drover was down and none of \
                 its settings are kept: its machines and jobs cannot be finished; remove its \
                 machines by hand"
            );
        }
        settings
    }

    /// Keeps a copy of the config file for each runner it defines, and forgets the copies of
    /// runners that are gone and hold nothing any more.
    fn keep_runner_configs(&self) {
        for runner in &self.loaded.runners {
            if let Err(e) = self
                .state_dir
                .save_runner_config(&runner.name, &self.loaded.text)
            {
                tracing::warn!(runner = %runner.name, "keeping a copy of its config failed: {e:#}");
            }
        }
        for name in self.state_dir.kept_runner_configs() {
            let needed = self.core.state().runner_id(&name).is_some_and(|id| {
                self.core.state().runner(id).is_some_and(|r| !r.retired) || self.holds_anything(id)
            });
            if !needed {
                self.state_dir.forget_runner_config(&name);
            }
        }
    }

    /// After a restart: a task for every job the core still holds. Payloads of jobs it does not hold
    /// (stored just before a crash, never journaled) are dropped: GitLab re-queues unaccepted jobs.
    fn adopt_recovered_jobs(&mut self) {
        let held: Vec<(JobId, RunnerId)> = self
            .core
            .state()
            .jobs()
            .into_iter()
            .map(|(id, j)| (id, j.runner))
            .collect();
        for (job, runner) in &held {
            match (self.state_dir.load_job(job.0), self.contexts.get(runner)) {
                (Ok(payload), Some(ctx)) => self.jobs.adopt(payload, ctx.clone()),
                (Err(e), _) => tracing::error!(job = job.0, "cannot resume the job: {e:#}"),
                (_, None) => {
                    tracing::error!(job = job.0, "cannot resume the job: its runner is gone")
                }
            }
        }
        for id in self.state_dir.jobs() {
            if held.iter().any(|(j, _)| j.0 == id) {
                continue;
            }
            // Accepted, out of the core, not reported: the core failed it and the crash cut the
            // report short. Anything else is done, or was never GitLab's business with us.
            let progress = self.state_dir.load_progress(id);
            let runner = progress
                .runner
                .as_deref()
                .and_then(|name| self.contexts.values().find(|c| c.name == name));
            if let (true, false, Some(ctx), Ok(payload)) = (
                progress.accepted,
                progress.reported,
                runner,
                self.state_dir.load_job(id),
            ) {
                tracing::warn!(
                    job = id,
                    "reporting a job whose failure report a crash cut short"
                );
                let why = self.state_dir.load_rejection(id);
                self.jobs.report_interrupted(payload, ctx.clone(), why);
                continue;
            }
            self.state_dir.remove_job(id);
        }
    }

    /// Removes the containers of jobs the core does not hold (a job finished and forgotten before a
    /// crash cut its cleanup short). Before any command runs, so no new job can be mistaken for a
    /// stray; engines are scanned at once and each within a deadline, so a dead VM delays start-up
    /// by seconds, not by a connection timeout per machine.
    async fn clean_stray_job_containers(&self, executor: &Executor) {
        let mut scans = Vec::new();
        for (id, ctx) in &self.contexts {
            for endpoint in self.job_engines(*id, ctx).await {
                scans.push(async move {
                    let scan = self.clean_engine(executor, ctx, &endpoint);
                    if tokio::time::timeout(STRAY_SCAN_DEADLINE, scan)
                        .await
                        .is_err()
                    {
                        tracing::warn!(
                            runner = %ctx.name,
                            engine = %endpoint.engine.describe(),
                            "gave up looking for stray job containers: the engine did not answer"
                        );
                    }
                });
            }
        }
        futures_util::future::join_all(scans).await;
    }

    async fn clean_engine(&self, executor: &Executor, ctx: &RunnerContext, on: &MachineEndpoint) {
        let jobs = match executor.list_jobs(&on.engine, &ctx.short_token).await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(runner = %ctx.name, "listing job containers failed: {e}");
                return;
            }
        };
        for job in jobs {
            if self.core.state().job(JobId(job)).is_some() {
                continue;
            }
            tracing::info!(
                job,
                "removing the containers of a job drover no longer holds"
            );
            if let Err(e) = executor.cleanup(on, &ctx.short_token, job).await {
                tracing::warn!(job, "removing stray job containers failed: {e}");
            }
        }
    }

    /// The engines a runner's job containers can be on, one endpoint per engine: the local engine
    /// of a plain `docker` runner, the one shared engine of the `docker` provider's sandboxes, or
    /// each live machine's own engine for `docker-machine` (its removed machines took their
    /// containers with them).
    async fn job_engines(&self, id: RunnerId, ctx: &RunnerContext) -> Vec<MachineEndpoint> {
        if let Some(endpoint) = self.local_engines.get(&id) {
            return vec![endpoint.clone()];
        }
        let (Some(provider), Some(machine)) =
            (self.machines.provider(id), ctx.settings.machine.as_ref())
        else {
            return Vec::new();
        };
        if machine.provider == Provider::Docker {
            return vec![MachineEndpoint::engine_only(EngineConfig {
                host: machine.docker_host.clone(),
                tls: None,
            })];
        }
        let machines = self.core.state().machines();
        let lookups = machines
            .iter()
            .filter(|(_, m)| {
                m.runner == id && matches!(m.state, MachineState::Idle | MachineState::Busy(_))
            })
            .map(|(_, m)| {
                let provider = &provider;
                async move {
                    match tokio::time::timeout(STRAY_SCAN_DEADLINE, provider.endpoint(&m.name))
                        .await
                    {
                        Ok(Ok(endpoint)) => Some(endpoint),
                        Ok(Err(e)) => {
                            tracing::debug!(machine = %m.name, "no engine to clean: {e}");
                            None
                        }
                        Err(_) => None,
                    }
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

    async fn reload(&mut self) -> anyhow::Result<()> {
        self.config_mtime = mtime(&self.config_path);
        let loaded = match config::load(&self.config_path)
            .and_then(|l| l.require_registered().map(|()| l))
        {
            Ok(l) => l,
            Err(e) => {
                tracing::error!(
                    "the config file changed but cannot be used; keeping the running config:\n{e}"
                );
                return Ok(());
            }
        };
        for w in &loaded.warnings {
            tracing::warn!("{w}");
        }
        let mut config = loaded.core.clone();
        config.seed = self.core.config().seed;
        self.loaded = loaded;
        tracing::info!("reloading the config");
        let commands = self.handle(Event::Signal(Signal::Reload(Box::new(config))))?;
        // Adapters before the commands: a runner the reload added needs its provider and GitLab link.
        if let Err(e) = self.sync_adapters().await {
            tracing::error!("applying the reloaded settings failed: {e:#}");
        }
        self.keep_runner_configs();
        self.execute_all(commands);
        Ok(())
    }

    fn write_status(&mut self, force: bool) {
        let due = self
            .last_status
            .is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
        if !force && !due {
            return;
        }
        self.last_status = Some(std::time::Instant::now());
        let status = Status::of(
            &self.core,
            &self.config_path.display().to_string(),
            &self.started_at,
        );
        if let Ok(bytes) = serde_json::to_vec_pretty(&status)
            && let Err(e) = write_private(&self.state_dir.status_file(), &bytes)
        {
            tracing::warn!("writing the status file failed: {e:#}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_core::{Config, RunnerConfig};

    const T0: Timestamp = Timestamp(1_767_571_200_000);

    fn received(core: &mut Core, runner: u16, job: u64) -> Vec<Command> {
        let info = JobInfo {
            timeout_ms: 3_600_000,
            queued_ms: 0,
        };
        let runner = RunnerId(runner);
        core.handle(
            T0,
            Event::JobReceived {
                runner,
                job: JobId(job),
                info,
            },
        )
        .commands
    }

    #[test]
    fn a_job_failed_in_the_step_that_receives_it_still_gets_a_task_to_report_it() {
        let mut core = Core::new(
            Config::new(2).with_runner(RunnerConfig::pool("r", 0, 2)),
            T0,
        );
        let commands = received(&mut core, 0, 1);
        assert!(needs_task(&core, &commands, JobId(1)), "a queued job");
        assert!(
            !needs_task(&core, &commands, JobId(99)),
            "a job nobody knows"
        );

        let _ = core.handle(T0, Event::Signal(Signal::Forceful));
        let commands = received(&mut core, 0, 2);
        assert!(core.state().job(JobId(2)).is_none(), "failed at once");
        assert!(needs_task(&core, &commands, JobId(2)), "{commands:?}");
    }
}
