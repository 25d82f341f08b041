//! The event loop: one `select!` that only translates. Inputs from tasks, the core's timer,
//! signals and config-file changes become events; each event is journaled, handed to the core
//! (see [`Ledger`]), and its commands are dispatched as spawned tasks carrying all they need.
//! No arm awaits network or Docker I/O: a reload's slow half runs as a task ([`reload`]).
//! [`inputs`] translates the inputs that need more than journaling, [`dispatch`] the commands.

mod dispatch;
mod inputs;
mod late;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use drover_core::{Command, Core, Event, JobId, RunnerId, Signal, Timestamp};
use drover_docker::Executor;
use drover_gitlab::api::JobResponse;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use super::Input;
use super::adapters::Site;
use super::jobs::Jobs;
use super::late::Late;
use super::ledger::Ledger;
use super::machines::Machines;
use super::reload::{self, Prepared};
use super::runners::{self, Runners};
use super::signals::{self, OpSignal};
use super::startup::{self, Setup};
use super::state_dir::StateDir;
use super::status::Status;
use crate::config::Loaded;
use crate::files::write_private;
use inputs::RecentIds;

/// GitLab Runner checks the config file's modification time this often.
const RELOAD_CHECK: Duration = Duration::from_secs(3);
/// How long drover waits at exit for its machine providers to end their child processes.
const PROVIDER_SHUTDOWN: Duration = Duration::from_secs(20);

pub struct RunOptions {
    pub config: PathBuf,
    pub state_dir: PathBuf,
}

struct Driver {
    ledger: Ledger,
    rx: UnboundedReceiver<Input>,
    inputs: UnboundedSender<Input>,
    runners: Runners,
    machines: Machines,
    jobs: Jobs,
    /// The executor that sweeps a late runner's stray job containers.
    executor: Executor,
    /// Runners whose adapters are not built yet, and what waits for them.
    late: Late,
    state_dir: StateDir,
    site: Site,
    loaded: Loaded,
    config_mtime: Option<SystemTime>,
    started_at: String,
    wake: Option<Timestamp>,
    exit: Option<bool>,
    last_status: Option<std::time::Instant>,
    reloads: Reloads,
    /// The payload of the job being handed to the core, and the runner it came for.
    pending_job: Option<(RunnerId, Box<JobResponse>)>,
    /// Jobs failed for a payload drover cannot use, most recent last: one that comes back is not
    /// accepted (and failed) again.
    rejected: RecentIds,
}

/// Reloads in preparation: one at a time, and one more if the file changed meanwhile.
struct Reloads {
    done_tx: UnboundedSender<Option<Prepared>>,
    done: UnboundedReceiver<Option<Prepared>>,
    running: bool,
    again: bool,
}

/// Runs the daemon until a shutdown completes. The exit code is 0 after a clean shutdown.
pub async fn run(options: RunOptions, loaded: Loaded) -> anyhow::Result<ExitCode> {
    // First of all: a signal during the start-up (recovery can take a while) is handled once the
    // loop runs, instead of killing the process with the default action.
    let signals = signals::listen().context("installing signal handlers")?;
    let state_dir = StateDir::open(&options.state_dir)?;
    let _lock = state_dir.lock()?;
    let site = Site {
        system_id: crate::files::system_id(&options.config)?,
        config_path: options.config.clone(),
        state_dir: state_dir.root().to_path_buf(),
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let started = startup::start(Setup {
        state_dir: &state_dir,
        site: &site,
        loaded: &loaded,
        inputs: tx.clone(),
    })
    .await?;
    let (done_tx, done) = mpsc::unbounded_channel();
    let mut driver = Driver {
        ledger: started.ledger,
        rx,
        inputs: tx.clone(),
        runners: started.runners,
        machines: Machines::new(tx),
        jobs: started.jobs,
        executor: started.executor,
        late: started.late,
        state_dir,
        // The time the running config was read at, not now: an edit since is reloaded.
        config_mtime: loaded.mtime,
        site,
        loaded,
        started_at: String::new(),
        wake: started.wake,
        exit: None,
        last_status: None,
        reloads: Reloads {
            done_tx,
            done,
            running: false,
            again: false,
        },
        pending_job: None,
        rejected: RecentIds::default(),
    };
    driver.started_at = driver.ledger.now().to_string();
    driver.execute_all(started.commands);
    driver.run(signals).await
}

impl Driver {
    async fn run(mut self, signals: UnboundedReceiver<OpSignal>) -> anyhow::Result<ExitCode> {
        let ran = self.run_loop(signals).await;
        if ran.is_err() {
            // The loop failed (the journal cannot be written): still end the providers' children.
            self.shut_down_providers().await;
        }
        ran
    }

    /// Ends what providers run on their own (docker-machine children: `SIGTERM`, then `SIGKILL`),
    /// within a bound: a provider that hangs cannot keep drover from exiting, and what it left
    /// still dies with drover (see `drover_providers::children`).
    async fn shut_down_providers(&self) {
        let providers = self.runners.providers();
        let all = futures_util::future::join_all(providers.iter().map(|p| p.shutdown()));
        if tokio::time::timeout(PROVIDER_SHUTDOWN, all).await.is_err() {
            tracing::warn!(
                "the machine providers did not shut down within {PROVIDER_SHUTDOWN:?}; exiting"
            );
        }
    }

    async fn run_loop(
        &mut self,
        mut signals: UnboundedReceiver<OpSignal>,
    ) -> anyhow::Result<ExitCode> {
        let mut reload_tick = tokio::time::interval(RELOAD_CHECK);
        reload_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tracing::info!(
            runners = self.ledger.core().config().runners.len(),
            concurrent = self.ledger.core().config().concurrent,
            state_dir = %self.state_dir.root().display(),
            "drover is running"
        );
        while self.exit.is_none() {
            self.ledger.now();
            let sleep = self.wake.map(|t| self.ledger.until(t));
            tokio::select! {
                Some(input) = self.rx.recv() => self.input(input)?,
                () = tokio::time::sleep(sleep.unwrap_or(Duration::ZERO)), if sleep.is_some() => {
                    self.wake = None;
                    self.step(Event::Tick)?;
                }
                Some(signal) = signals.recv() => self.signal(signal)?,
                Some(prepared) = self.reloads.done.recv() => self.reloaded(prepared)?,
                Some(built) = self.late.built.recv() => self.late_built(built),
                _ = reload_tick.tick() => {
                    if crate::config::mtime(&self.site.config_path) != self.config_mtime {
                        self.start_reload();
                    }
                    self.write_status(false);
                }
            }
        }
        let clean = self.exit.unwrap_or(false);
        // Failure reports of jobs that never started may still be on their way to GitLab.
        let within = self.ledger.core().config().shutdown_timeout;
        if clean && !self.jobs.wait(within).await {
            tracing::warn!("some job reports did not reach GitLab before the shutdown timeout");
        }
        self.shut_down_providers().await;
        self.ledger.close();
        self.write_status(true);
        tracing::info!(clean, "drover stopped");
        Ok(if clean {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(crate::exit::FAILURE)
        })
    }

    fn signal(&mut self, signal: OpSignal) -> anyhow::Result<()> {
        match signal {
            OpSignal::Quit => {
                tracing::info!("SIGQUIT: finishing running jobs, then exiting");
                self.step(Event::Signal(Signal::Graceful))
            }
            OpSignal::Terminate => {
                tracing::info!("SIGTERM/SIGINT: aborting jobs and exiting (again to exit at once)");
                self.step(Event::Signal(Signal::Forceful))
            }
            OpSignal::Hangup => {
                self.start_reload();
                Ok(())
            }
        }
    }

    /// Starts reading the config file and building the adapters it needs, as a task.
    fn start_reload(&mut self) {
        self.config_mtime = crate::config::mtime(&self.site.config_path);
        if self.reloads.running {
            self.reloads.again = true;
            return;
        }
        self.reloads.running = true;
        reload::spawn(
            self.site.clone(),
            reload::Current::of(&self.runners),
            self.reloads.done_tx.clone(),
        );
    }

    /// A prepared reload: journaled and handed to the core, then its adapters installed before
    /// the commands run (a runner the reload added needs its provider and GitLab link).
    fn reloaded(&mut self, prepared: Option<Prepared>) -> anyhow::Result<()> {
        self.reloads.running = false;
        if let Some(prepared) = prepared {
            let mut config = prepared.loaded.core.clone();
            config.seed = self.ledger.core().config().seed;
            self.loaded = prepared.loaded;
            tracing::info!("reloading the config");
            let commands = self.handle(Event::Signal(Signal::Reload(Box::new(config))))?;
            let core = self.ledger.core();
            let machines = |id| {
                let all = core.state().machines();
                let of = all.into_iter().filter(|(_, m)| m.runner == id);
                of.map(|(_, m)| m.name.clone()).collect()
            };
            // A waiting runner the reload built is swept first, as if its retry had built it.
            let (waited, built): (Vec<_>, Vec<_>) =
                prepared.runners.into_iter().partition(|(name, _)| {
                    core.state()
                        .runner_id(name)
                        .is_some_and(|id| self.late.is_waiting(id))
                });
            reload::install(
                built,
                |name| core.state().runner_id(name),
                machines,
                &mut self.runners,
            );
            let held: std::collections::BTreeSet<(RunnerId, String)> = core
                .state()
                .machines()
                .into_iter()
                .map(|(_, m)| (m.runner, m.name.clone()))
                .collect();
            self.runners
                .retain_machines(|id, name| held.contains(&(id, name.to_string())));
            self.wait_for_unbuilt(prepared.unbuilt);
            self.sweep_then_install(waited);
            self.release_installed();
            runners::keep_configs(&self.state_dir, &self.loaded, self.ledger.core());
            self.execute_all(commands);
        }
        if std::mem::take(&mut self.reloads.again) {
            self.start_reload();
        }
        Ok(())
    }

    fn runner_name(&self, runner: RunnerId) -> String {
        self.ledger
            .core()
            .state()
            .runner(runner)
            .map(|r| r.config.name.clone())
            .unwrap_or_default()
    }

    /// How logs name the runner: `name/short-token`.
    fn label(&self, runner: RunnerId) -> String {
        runners::core_label(self.ledger.core(), &self.runners, runner)
    }

    /// Journal, handle, act: the write-ahead discipline.
    fn step(&mut self, event: Event) -> anyhow::Result<()> {
        let commands = self.handle(event)?;
        self.execute_all(commands);
        Ok(())
    }

    /// Journals an event and hands it to the core; returns the commands to carry out.
    fn handle(&mut self, event: Event) -> anyhow::Result<Vec<Command>> {
        let finished = match &event {
            Event::JobFinished { job, .. } => Some(*job),
            _ => None,
        };
        // A machine the event may end: once the core forgets it, so do the runners' records of
        // which provider made it.
        let ending = match &event {
            Event::MachineRemoved { machine }
            | Event::MachineLost { machine }
            | Event::MachineCreationFailed { machine, .. } => Some(*machine),
            _ => None,
        };
        let ending = ending.and_then(|id| {
            let m = self.ledger.core().state().machine(id)?;
            Some((id, m.runner, m.name.clone()))
        });
        let decided = self.ledger.record(event)?;
        if let Some((id, runner, name)) = ending
            && self.ledger.core().state().machine(id).is_none()
        {
            self.runners.removed(runner, &name);
        }
        if let Some((runner, job)) = self.pending_job.take()
            && needs_task(self.ledger.core(), &decided.commands, JobId(job.id))
            && let Some(r) = self.runners.get(runner)
        {
            self.jobs.adopt(*job, r.context.clone());
        }
        if let Some(job) = finished {
            self.jobs.forget(job);
        }
        self.wake = decided.wake_at;
        self.write_status(false);
        Ok(decided.commands)
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
            self.ledger.core(),
            &self.site.config_path.display().to_string(),
            &self.started_at,
        );
        if let Ok(bytes) = serde_json::to_vec_pretty(&status)
            && let Err(e) = write_private(&self.state_dir.status_file(), &bytes)
        {
            tracing::warn!("writing the status file failed: {e:#}");
        }
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use drover_core::JobInfo;
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
