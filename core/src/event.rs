//! Every input of the core. Serializable: the journal stores these, and only these.

use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::ids::{JobId, MachineId, RunnerId};

/// Something that happened. The driver stamps it with the time and hands it to [`crate::Core::handle`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Event {
    /// The coordinator assigned a job in answer to a [`crate::Command::RequestJob`].
    JobReceived {
        runner: RunnerId,
        job: JobId,
        info: JobInfo,
    },
    /// A job request came back without a job (204, or a long poll that ran out), with nothing
    /// said of how: the runner waits `check_interval`. What journals of format 2 and older hold
    /// for every empty answer; drivers now send [`Event::JobRequestAnswered`] for a `204`, and
    /// this for an answer that carried nothing usable.
    JobRequestEmpty { runner: RunnerId },
    /// A job request failed after the client's own retries, in a way that says nothing of the
    /// runner's health (a `5xx`, a `409`, a `429`). `retry_after_ms` is the server's wish.
    /// Journals of format 3 and older hold this for every failure.
    JobRequestFailed {
        runner: RunnerId,
        retry_after_ms: Option<u64>,
    },
    /// The provider finished creating a machine: it can take a job.
    MachineCreated { machine: MachineId },
    /// The provider could not create a machine. Whatever it left behind is removed by the core.
    MachineCreationFailed {
        machine: MachineId,
        failure: CreationFailure,
    },
    /// The provider removed a machine (or found it already gone).
    MachineRemoved { machine: MachineId },
    /// A removal attempt failed; the core retries with backoff.
    MachineRemovalFailed { machine: MachineId },
    /// A machine died or became unreachable outside any command of ours.
    MachineLost { machine: MachineId },
    /// Answer to [`crate::Command::ListMachines`]: the names the provider has with the prefixes asked.
    MachinesListed {
        runner: RunnerId,
        request: u64,
        names: Vec<String>,
    },
    /// A job ended on its machine; its final state has been reported to the coordinator.
    JobFinished { job: JobId, outcome: Outcome },
    /// The coordinator asked to cancel a job (`Job-Status: canceling`/`canceled`).
    JobCanceled { job: JobId },
    /// An operator's signal or a reloaded config.
    Signal(Signal),
    /// The driver restarted from the journal: re-issue what was in flight and reconcile.
    Resumed,
    /// Time passed; sent at or after [`crate::Step::wake_at`].
    Tick,
    /// A job request came back without a job, with what decides the runner's next request
    /// ([`crate::request_pause`]). Appended after the others, so they keep their journal encoding
    /// (journal format 3 on).
    JobRequestAnswered {
        runner: RunnerId,
        /// How long the coordinator took to answer, in milliseconds of the driver's clock.
        held_ms: u64,
        /// The coordinator long-polls (Workhorse's `Gitlab-Ci-Builds-Polling: yes`) and this
        /// answer is news: a bare `204` that ended a hold, or a queue version other than the one
        /// sent. The next request will be held until the queue changes, so it may go at once.
        long_poll: bool,
    },
    /// A job request failed in a way GitLab Runner counts toward `unhealthy_requests_limit` (a
    /// `403`, or no usable answer at all), after the client's own retries. After
    /// [`crate::UNHEALTHY_LIMIT`] in a row the runner backs off ([`crate::unhealthy_backoff`]);
    /// any answer from the coordinator ends the run. Appended last (journal format 4 on).
    JobRequestUnhealthy {
        runner: RunnerId,
        retry_after_ms: Option<u64>,
    },
}

/// What the core keeps of a job: enough to schedule it, and for the simulator to rebuild the traffic of
/// a recorded day (arrival = received − time in GitLab's queue; duration = finished − started).
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInfo {
    /// The job's timeout (`runner_info.timeout`), in milliseconds; 0 means GitLab's default 7200 s.
    pub timeout_ms: u64,
    /// How long the job had waited in GitLab's queue when it was assigned (`time_in_queue_seconds`).
    pub queued_ms: u64,
}

/// How a job ended.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Success,
    Failed {
        reason: FailureReason,
        exit_code: Option<i32>,
    },
    Canceled,
}

/// GitLab's failure reasons, as the runner may report them (serialized under GitLab's names).
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    ScriptFailure,
    RunnerSystemFailure,
    JobExecutionTimeout,
    ImagePullFailure,
    UnknownFailure,
    RunnerConfigurationError,
    RunnerExternalDependencyFailure,
    RunnerInterrupted,
    JobCanceled,
}

impl FailureReason {
    /// The wire name GitLab uses.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::ScriptFailure => "script_failure",
            FailureReason::RunnerSystemFailure => "runner_system_failure",
            FailureReason::JobExecutionTimeout => "job_execution_timeout",
            FailureReason::ImagePullFailure => "image_pull_failure",
            FailureReason::UnknownFailure => "unknown_failure",
            FailureReason::RunnerConfigurationError => "runner_configuration_error",
            FailureReason::RunnerExternalDependencyFailure => "runner_external_dependency_failure",
            FailureReason::RunnerInterrupted => "runner_interrupted",
            FailureReason::JobCanceled => "job_canceled",
        }
    }
}

/// Why a machine could not be created; it decides how long the runner backs off.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CreationFailure {
    /// Worth retrying soon (a timeout, a transient API error).
    Retryable,
    /// The cloud said no more (quota, rate limit): back off longer.
    Quota,
    /// Will not work without an operator (bad driver, bad credentials): back off longest and fail the
    /// jobs waiting for a machine.
    Fatal,
}

/// Operator signals.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Signal {
    /// SIGQUIT: stop requesting jobs, let running jobs finish, then exit.
    Graceful,
    /// SIGTERM/SIGINT: abort running jobs, then exit within `shutdown_timeout`; a second one exits now.
    Forceful,
    /// SIGHUP or a changed file: apply a new config live.
    Reload(Box<Config>),
}

impl Event {
    /// A short, stable name for summaries and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Event::JobReceived { .. } => "job_received",
            Event::JobRequestEmpty { .. } | Event::JobRequestAnswered { .. } => "job_request_empty",
            Event::JobRequestFailed { .. } => "job_request_failed",
            Event::JobRequestUnhealthy { .. } => "job_request_unhealthy",
            Event::MachineCreated { .. } => "machine_created",
            Event::MachineCreationFailed { .. } => "machine_creation_failed",
            Event::MachineRemoved { .. } => "machine_removed",
            Event::MachineRemovalFailed { .. } => "machine_removal_failed",
            Event::MachineLost { .. } => "machine_lost",
            Event::MachinesListed { .. } => "machines_listed",
            Event::JobFinished { .. } => "job_finished",
            Event::JobCanceled { .. } => "job_canceled",
            Event::Signal(Signal::Graceful) => "signal_graceful",
            Event::Signal(Signal::Forceful) => "signal_forceful",
            Event::Signal(Signal::Reload(_)) => "signal_reload",
            Event::Resumed => "resumed",
            Event::Tick => "tick",
        }
    }
}
