//! Runs one job on a machine's Docker engine.
//!
//! # Containers of a job
//!
//! Every step of a job (`get_sources`, `script`, `after_script`) runs as **its own container**, created
//! from the job's image with the builds volume mounted and the job's network joined, labelled with the
//! runner, machine, job, step name and step index. Not `docker exec` into one long-lived container:
//! an exec's output and exit code are lost when drover restarts, a container's are not. Services run as
//! sidecar containers with their aliases on the job's network (the machine's network when the job
//! runs on a machine; else a network of its own).
//!
//! A step's script and the job's file variables are uploaded into its container before it starts;
//! the script exports the job's variables (see `script`), so they are not in the container's
//! environment, whose strings Linux limits to 128 KiB each. A container re-attached after a restart
//! already has its script; one found created but not started gets it again.
//!
//! # Warm containers
//!
//! On a machine with its own network and builds volume (a `docker` sandbox), the executor keeps
//! one **warm** build container started ahead of the next job (`warm`): a job whose image and
//! container settings match claims it and runs its steps there by `exec` (`exec_step`), which
//! skips a container's create, start and log attach per step. Each step still runs its own script
//! in its own shell, with its own timeout, exit code, `CI_JOB_STATUS` and user; everything a step
//! leaves running is killed before the next one. The claimed container is the job's alone and is
//! removed with the job; the job's end starts a new one for the next job like it. Any other job
//! takes the container-per-step path. A ready warm container also holds a **standby** exec
//! (`standby`) that the claiming job's first step starts in with a write, not an exec; while a
//! step runs, the job starts the next step's standby.
//!
//! # Crash recovery
//!
//! The engine is the record. After a restart, [`Executor::resume`] takes the job's [`BuildSpec`] again
//! (the daemon rebuilds it from the job's payload, which it persists) and the last [`LogCursor`] the
//! daemon persisted, finds the job's containers by label, re-reads the running step's log from the
//! cursor, and goes on with the steps that remain. Exit codes of finished steps come from their
//! containers and the job's deadline from a label, so nothing else needs to survive. If the job's
//! step containers are gone, the job fails with `runner_system_failure`. A job that runs by exec
//! keeps the same record inside its claimed container (see `exec_step`): the re-attachment reads
//! the running step's output file from the cursor and its exit code from a file.
//!
//! An executor made with [`Executor::keeping_containers`] leaves a job's containers after its
//! outcome, so that the caller records the outcome before they go (else a crash between the
//! removal and the record would resume a job whose containers are gone as `runner_system_failure`).

mod artifacts;
mod cache;
pub(crate) mod cleanup;
mod context;
mod exec_step;
mod host;
mod job;
mod patience;
mod script;
mod services;
pub mod spec;
mod standby;
mod step;
mod warm;

use std::sync::Arc;
use std::time::Duration;

use drover_core::{FailureReason, Outcome};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::endpoint::MachineEndpoint;
use crate::engine::EngineConfig;
use crate::trace::{LogCursor, TraceSink};
use spec::BuildSpec;

/// Knobs of the executor that are not per job.
#[derive(Clone, Debug)]
pub struct ExecutorOptions {
    /// How long a canceled step gets between SIGTERM and SIGKILL.
    pub stop_timeout: Duration,
    /// How long to wait for a service with a health check to become healthy (GitLab's
    /// `wait_for_services_timeout`).
    pub service_wait: Duration,
    /// Steps of a job that fits a machine's warm container run there by exec (see above); `false`:
    /// every step gets a container of its own.
    pub warm: bool,
}

impl Default for ExecutorOptions {
    fn default() -> ExecutorOptions {
        ExecutorOptions {
            stop_timeout: Duration::from_secs(10),
            service_wait: Duration::from_secs(30),
            warm: true,
        }
    }
}

/// A failure of the executor's maintenance calls ([`Executor::cleanup`], [`Executor::list_jobs`]).
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    #[error(transparent)]
    Engine(#[from] crate::engine::EngineError),
    #[error("Docker engine {engine}: {action}: {source}")]
    Docker {
        engine: String,
        action: String,
        #[source]
        source: bollard::errors::Error,
    },
}

/// Runs jobs. Cheap to clone; holds no connection (each job connects to its machine's engine).
#[derive(Clone, Debug, Default)]
pub struct Executor {
    options: ExecutorOptions,
    /// A job's containers stay after its outcome (the caller records the outcome, then calls
    /// [`Executor::cleanup`]): a crash between the two cannot lose the outcome with the
    /// containers.
    keep_containers: bool,
    /// The standby execs waiting in warm containers (see `standby`), for the jobs that claim them.
    standbys: Arc<standby::Standbys>,
}

impl Executor {
    pub fn new(options: ExecutorOptions) -> Executor {
        Executor {
            options,
            keep_containers: false,
            standbys: Arc::default(),
        }
    }

    /// The same executor, leaving each job's containers in place when the job ends.
    pub fn keeping_containers(&self) -> Executor {
        Executor {
            options: self.options.clone(),
            keep_containers: true,
            standbys: self.standbys.clone(),
        }
    }

    /// Starts a job on `endpoint`; its output streams into `sink`, which must be drained while the
    /// job runs (a full sink holds the job back). Containers left by an earlier attempt of the same
    /// job id are removed first. Must be called within a tokio runtime.
    pub fn start(&self, endpoint: MachineEndpoint, spec: BuildSpec, sink: TraceSink) -> JobHandle {
        self.spawn(endpoint, spec, sink, job::Mode::Fresh, true)
    }

    /// [`Executor::start`] for the last job of its machine (`MaxBuilds` reached: the machine is
    /// removed after it): no warm container is started there for a next job, and the job may
    /// take one with fresh caches ([`Executor::prestart_for_last_job`]).
    pub fn start_last_on_machine(
        &self,
        endpoint: MachineEndpoint,
        spec: BuildSpec,
        sink: TraceSink,
    ) -> JobHandle {
        self.spawn(endpoint, spec, sink, job::Mode::Fresh, false)
    }

    /// Re-attaches to a job started by an earlier drover process: the output continues after
    /// `cursor` (`None`: from the very beginning), the remaining steps run, and the outcome is
    /// reported. The job fails with `runner_system_failure` if its containers are gone.
    pub fn resume(
        &self,
        endpoint: MachineEndpoint,
        spec: BuildSpec,
        cursor: Option<LogCursor>,
        sink: TraceSink,
    ) -> JobHandle {
        self.spawn(endpoint, spec, sink, job::Mode::Resume(cursor), true)
    }

    fn spawn(
        &self,
        endpoint: MachineEndpoint,
        spec: BuildSpec,
        sink: TraceSink,
        mode: job::Mode,
        more_jobs_on_machine: bool,
    ) -> JobHandle {
        let (control_tx, control_rx) = watch::channel(Control::Run);
        let job_id = spec.job_id;
        let task = tokio::spawn(job::run(
            self.clone(),
            endpoint,
            Arc::new(spec),
            sink,
            control_rx,
            mode,
            more_jobs_on_machine,
        ));
        JobHandle {
            job_id,
            control: JobControl(Arc::new(control_tx)),
            task,
        }
    }

    /// Makes sure the machine of `endpoint` has a warm container running for jobs like `spec`
    /// (replacing one for other jobs); returns once it runs. `false`: such jobs do not run warm
    /// there (another kind of machine, or a job an exec cannot run), and nothing was started.
    /// The executor does this itself at the end of each job that fits.
    pub async fn prestart(
        &self,
        endpoint: &MachineEndpoint,
        spec: &BuildSpec,
    ) -> Result<bool, ExecutorError> {
        self.prestart_with(endpoint, spec, false).await
    }

    /// [`Executor::prestart`] for a machine whose next job is its last (a `MaxBuilds 1`
    /// machine's only one): the container mounts new empty volumes in place of the kept ones
    /// (`"/cache"`), so that the job of any project whose cache the machine does not hold yet
    /// runs warm. Such a job must be started with [`Executor::start_last_on_machine`].
    pub async fn prestart_for_last_job(
        &self,
        endpoint: &MachineEndpoint,
        spec: &BuildSpec,
    ) -> Result<bool, ExecutorError> {
        self.prestart_with(endpoint, spec, true).await
    }

    async fn prestart_with(
        &self,
        endpoint: &MachineEndpoint,
        spec: &BuildSpec,
        fresh: bool,
    ) -> Result<bool, ExecutorError> {
        if !self.options.warm {
            return Ok(false);
        }
        let docker = endpoint.engine.connect().await?;
        warm::prestart(&docker, endpoint, spec, fresh, &self.standbys)
            .await
            .map_err(|source| ExecutorError::Docker {
                engine: endpoint.engine.describe(),
                action: "starting a warm build container".to_string(),
                source,
            })
    }

    /// Removes every container, network and volume of a job (idempotent). For reconciliation: the
    /// executor already cleans up after each job it runs to its end.
    pub async fn cleanup(
        &self,
        endpoint: &MachineEndpoint,
        runner: &str,
        job_id: u64,
    ) -> Result<(), ExecutorError> {
        let docker = endpoint.engine.connect().await?;
        cleanup::remove_job(&docker, runner, job_id)
            .await
            .map_err(|source| ExecutorError::Docker {
                engine: endpoint.engine.describe(),
                action: format!("removing the objects of job {job_id}"),
                source,
            })
    }

    /// Whether step containers of job `job_id`, labelled with `runner`, exist on the engine: a
    /// step container that exists is re-attached, never created again.
    pub async fn has_step_containers(
        &self,
        endpoint: &MachineEndpoint,
        runner: &str,
        job_id: u64,
    ) -> Result<bool, ExecutorError> {
        let docker = endpoint.engine.connect().await?;
        cleanup::has_step_containers(&docker, runner, job_id)
            .await
            .map_err(|source| ExecutorError::Docker {
                engine: endpoint.engine.describe(),
                action: format!("listing the step containers of job {job_id}"),
                source,
            })
    }

    /// The ids of the jobs that have containers of `runner` on the engine, for reconciliation.
    pub async fn list_jobs(
        &self,
        engine: &EngineConfig,
        runner: &str,
    ) -> Result<Vec<u64>, ExecutorError> {
        let docker = engine.connect().await?;
        cleanup::list_jobs(&docker, runner)
            .await
            .map_err(|source| ExecutorError::Docker {
                engine: engine.describe(),
                action: "listing job containers".to_string(),
                source,
            })
    }
}

/// What the job should do next: set through [`JobControl`].
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum Control {
    Run,
    /// Stop the script, still run `after_script`; the outcome is `Canceled`.
    Cancel,
    /// Kill everything now; the outcome is `Failed { reason }`.
    Abort(FailureReason),
}

/// Steers a running job. Clone it freely.
#[derive(Clone, Debug)]
pub struct JobControl(Arc<watch::Sender<Control>>);

impl JobControl {
    /// Graceful cancel (the coordinator canceled the job): the running script step is stopped
    /// (SIGTERM, then SIGKILL after `stop_timeout`), `after_script` still runs, the outcome is
    /// `Canceled`.
    pub fn cancel(&self) {
        self.0.send_if_modified(|c| match c {
            Control::Run => {
                *c = Control::Cancel;
                true
            }
            _ => false,
        });
    }

    /// Kills everything of the job now (forceful shutdown, `AbortJob`); the outcome is
    /// `Failed { reason }`.
    pub fn abort(&self, reason: FailureReason) {
        self.0.send_if_modified(|c| match c {
            Control::Abort(_) => false,
            _ => {
                *c = Control::Abort(reason);
                true
            }
        });
    }
}

/// A running job.
#[derive(Debug)]
pub struct JobHandle {
    job_id: u64,
    control: JobControl,
    task: JoinHandle<Outcome>,
}

impl JobHandle {
    pub fn control(&self) -> JobControl {
        self.control.clone()
    }

    /// The job's outcome, once it has ended and its containers are removed.
    pub async fn wait(self) -> Outcome {
        match self.task.await {
            Ok(outcome) => outcome,
            Err(err) => {
                tracing::error!(job = self.job_id, error = %err, "the executor task failed");
                Outcome::Failed {
                    reason: FailureReason::RunnerSystemFailure,
                    exit_code: None,
                }
            }
        }
    }

    /// Stops watching the job without touching its containers: what a crash does. The job keeps
    /// running on its machine and a later [`Executor::resume`] picks it up. Returns once drover's
    /// side has stopped.
    pub async fn abandon(self) {
        self.task.abort();
        // A cancelled task's join error is the expected end here.
        let _ = self.task.await;
    }
}
