//! The jobs drover holds: one task per job that carries out what the job's lifecycle
//! (`drover-lifecycle`) decides, and turns GitLab's and Docker's answers into its events.
//!
//! ```text
//! mod.rs      Jobs: the driver's handle (adopt, command, forget, …) and the runner context
//! task.rs     one job's task: journal the event, let the lifecycle decide, carry out the actions
//! execute.rs  the executor run: trace stored every second, uploaded as stored, the outcome
//! gitlab.rs   the GitLab calls: accept, keep-alive, the final update, "is it closed?"
//! spec.rs     the job's BuildSpec from its payload, its runner and its machine
//! journal.rs  the job's journal file (and the upgrade of an older drover's record)
//! ```

mod execute;
mod gitlab;
pub mod journal;
mod spec;
mod task;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use drover_core::{FailureReason, JobId};
use drover_docker::{Executor, error_line};
use drover_gitlab::api::{JobResponse, RunnerInfo, UndecodableJob};
use drover_gitlab::trace::UploaderConfig;
use drover_lifecycle::Policy;
use tokio::sync::mpsc::{self, UnboundedSender};
use tokio_util::task::TaskTracker;

use super::Input;
use super::concurrency::Slots;
use super::machines::{Placement, Warmup};
use super::state_dir::StateDir;
use crate::config::RunnerSettings;
use drover_gitlab::Client;
use task::Start;

/// What every job of a runner shares.
pub struct RunnerContext {
    pub name: String,
    pub client: Client,
    pub info: RunnerInfo,
    pub settings: RunnerSettings,
    pub short_token: String,
    pub registry_mirrors: Vec<String>,
    /// `CI_CONCURRENT_ID`s of the runner's running jobs.
    pub slots: Arc<Slots>,
    /// `tls-ca-file`, resolved: the job's `CI_SERVER_TLS_CA_FILE`.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// This drover's system id (`s_…`), part of the local cache's volume names.
    pub system_id: String,
}

/// What the core decided for a job.
#[derive(Clone)]
pub enum JobCommand {
    Run(Placement),
    /// After a restart; the job's record, not the command, decides how it goes on.
    Resume(Placement),
    Cancel,
    Abort(FailureReason),
    /// Report it failed without running it; the detail (a creation error) goes into its trace.
    Fail(FailureReason, Option<String>),
}

pub struct Jobs {
    tasks: BTreeMap<JobId, UnboundedSender<JobCommand>>,
    /// Every job task, so that a clean exit waits for the reports still on their way to GitLab.
    tracker: TaskTracker,
    shared: Arc<Shared>,
}

/// What every job task shares.
pub(super) struct Shared {
    pub state_dir: StateDir,
    pub executor: Executor,
    pub inputs: UnboundedSender<Input>,
    pub uploader: UploaderConfig,
    pub policy: Policy,
}

impl Jobs {
    pub fn new(state_dir: StateDir, executor: Executor, inputs: UnboundedSender<Input>) -> Jobs {
        Jobs {
            tasks: BTreeMap::new(),
            tracker: TaskTracker::new(),
            shared: Arc::new(Shared {
                state_dir,
                // The job's record says when its containers may go (after its outcome).
                executor: executor.keeping_containers(),
                inputs,
                uploader: UploaderConfig::default(),
                policy: Policy::DEFAULT,
            }),
        }
    }

    /// How a new machine of `runner` named `machine` starts its first warm build container, for
    /// jobs with the runner's defaults, before it is reported ready (see `machines.rs`). The spec
    /// is made in the machine's task: it reads files (a TLS CA, registry credentials).
    pub fn warmup(
        &self,
        runner: Arc<RunnerContext>,
        machine: String,
        first_job_is_last: bool,
    ) -> Warmup {
        Warmup {
            executor: self.shared.executor.clone(),
            spec: Box::new(move || spec::default_job_spec(&runner, &machine)),
            first_job_is_last,
        }
    }

    /// Starts the task of a job the core now holds (received, or recovered after a restart).
    pub fn adopt(&mut self, job: JobResponse, runner: Arc<RunnerContext>) {
        let id = JobId(job.id);
        if self.tasks.contains_key(&id) {
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        self.tasks.insert(id, tx);
        self.spawn(job, runner, Start::Held, Some(rx));
    }

    /// After a restart: a job the core gave up on (or whose payload drover could not use, `why`)
    /// before the crash, whose failure report the crash cut short. Its record decides: a report
    /// in flight is checked and finished, else it is reported failed (`runner_system_failure`).
    pub fn report_interrupted(
        &mut self,
        job: JobResponse,
        runner: Arc<RunnerContext>,
        why: Option<String>,
    ) {
        let text = match why {
            Some(why) => error_line(&why),
            None => task::unstarted_trace(FailureReason::RunnerSystemFailure, None),
        };
        self.spawn(job, runner, Start::Interrupted(text), None);
    }

    /// A job whose payload drover cannot use: accepted at GitLab and failed at once with the
    /// reason in its trace, as GitLab Runner fails a job it cannot validate. The core never holds
    /// it; the state directory does until it is reported, so a crash cannot leave it hanging.
    pub fn reject(&mut self, bad: UndecodableJob, runner: Arc<RunnerContext>) {
        let job = JobResponse {
            id: bad.id,
            token: bad.token,
            ..Default::default()
        };
        let why = format!(
            "GitLab sent this job with a payload drover cannot use: {}",
            bad.error
        );
        let stored = self
            .shared
            .state_dir
            .save_job(&job)
            .and_then(|()| self.shared.state_dir.save_rejection(job.id, &why));
        if let Err(e) = stored {
            tracing::error!(job = job.id, "storing the job failed: {e:#}");
        }
        self.spawn(job, runner, Start::Rejected(error_line(&why)), None);
    }

    fn spawn(
        &mut self,
        job: JobResponse,
        runner: Arc<RunnerContext>,
        start: Start,
        commands: Option<mpsc::UnboundedReceiver<JobCommand>>,
    ) {
        let shared = self.shared.clone();
        let tracker = self.tracker.clone();
        self.tracker
            .spawn(async move { task::run(shared, tracker, runner, job, start, commands).await });
    }

    /// Waits (at most `within`) until every job task has ended: at a clean exit, only reports of
    /// jobs the core failed are still running. `false` if some did not end in time.
    pub async fn wait(&self, within: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(within, self.tracker.wait())
            .await
            .is_ok()
    }

    pub fn command(&mut self, job: JobId, command: JobCommand) {
        match self.tasks.get(&job) {
            Some(tx) => {
                let _ = tx.send(command);
            }
            None => tracing::error!(job = job.0, "no task for a job the core holds"),
        }
    }

    /// The core has journaled the job's end: forget it.
    pub fn forget(&mut self, job: JobId) {
        self.tasks.remove(&job);
        self.shared.state_dir.remove_job(job.0);
    }

    /// The task reports the job by itself and ends: no more commands for it.
    pub fn release(&mut self, job: JobId) {
        self.tasks.remove(&job);
    }

    pub fn holds(&self, job: JobId) -> bool {
        self.tasks.contains_key(&job)
    }
}
