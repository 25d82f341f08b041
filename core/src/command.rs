//! Every output of the core: what the driver must do next.

use serde::{Deserialize, Serialize};

use crate::event::FailureReason;
use crate::ids::{JobId, MachineId, RunnerId};

/// An instruction for the driver. Each one that has a result comes back as an [`crate::Event`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Ask the coordinator for a job → `JobReceived` / `JobRequestAnswered` / `JobRequestFailed`.
    RequestJob { runner: RunnerId },
    /// Stop the runner's job requests in flight (shutdown); each still answers with an event.
    CancelRequests { runner: RunnerId },
    /// Create a machine with this name → `MachineCreated` / `MachineCreationFailed`. Idempotent by
    /// name: after a restart the same create may be issued again.
    CreateMachine {
        machine: MachineId,
        runner: RunnerId,
        name: String,
    },
    /// Remove a machine by name → `MachineRemoved` / `MachineRemovalFailed`. Idempotent by name; may be
    /// issued while its creation is still running (the provider finishes or aborts the creation first).
    RemoveMachine {
        machine: MachineId,
        runner: RunnerId,
        name: String,
        reason: RemoveReason,
    },
    /// Run a job; `machine` is `None` for runners without a pool (the `docker` executor) → `JobFinished`.
    RunJob {
        job: JobId,
        runner: RunnerId,
        machine: Option<MachineId>,
    },
    /// After a restart: re-attach to a job that was running → `JobFinished`.
    ResumeJob {
        job: JobId,
        runner: RunnerId,
        machine: Option<MachineId>,
    },
    /// The coordinator canceled a running job: stop its script, run after_script → `JobFinished`.
    CancelJob { job: JobId },
    /// Kill a running job now and report it failed → `JobFinished`.
    AbortJob { job: JobId, reason: FailureReason },
    /// Report a job that never started as failed (or canceled) to the coordinator. No event follows.
    FailJob {
        job: JobId,
        runner: RunnerId,
        reason: FailureReason,
        /// Why it never started, for the job's trace.
        cause: FailCause,
    },
    /// List the provider's machines whose names start with any of `prefixes` → one `MachinesListed`
    /// with this `request` and the names of all of them. The runner's current prefix comes first;
    /// the others are those its known machines were named under (before a reload changed its key,
    /// or before an upgrade changed how keys are made).
    ListMachines {
        runner: RunnerId,
        request: u64,
        prefixes: Vec<String>,
    },
    /// Everything that had to finish has finished: exit. `clean` is false after a shutdown timeout.
    Exit { clean: bool },
}

/// Why a job is reported failed without having started. The driver says it in the job's trace; with
/// [`FailCause::CreationFailed`] it adds the provider's error, as GitLab's "Preparation failed: …".
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum FailCause {
    /// The machines created for it kept failing (or failed fatally).
    CreationFailed,
    /// It waited for a machine longer than its timeout.
    Timeout,
    /// A forceful shutdown.
    Shutdown,
    /// The coordinator canceled it while it waited.
    Canceled,
    /// It came for a runner the core does not know.
    UnknownRunner,
}

/// Why a machine is removed: logged, counted in metrics, shown by `drover status`.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum RemoveReason {
    /// `MaxBuilds` reached.
    TooManyBuilds,
    /// More machines than `limit` (after a reload lowered it).
    TooManyMachines,
    /// Surplus idle machine past `IdleTime`.
    TooManyIdle,
    /// Its creation failed; clean up whatever was left.
    CreationFailed,
    /// It died or vanished.
    Lost,
    /// Found by reconciliation with our prefix, but unknown to the journal.
    Orphan,
    /// Its runner left the config.
    RunnerRemoved,
    /// Graceful shutdown with machine draining enabled.
    Shutdown,
    /// A reload turned its runner into one without a pool.
    ConfigChanged,
}

impl RemoveReason {
    pub fn as_str(self) -> &'static str {
        match self {
            RemoveReason::TooManyBuilds => "too_many_builds",
            RemoveReason::TooManyMachines => "too_many_machines",
            RemoveReason::TooManyIdle => "too_many_idle_machines",
            RemoveReason::CreationFailed => "creation_failed",
            RemoveReason::Lost => "lost",
            RemoveReason::Orphan => "orphan",
            RemoveReason::RunnerRemoved => "runner_removed",
            RemoveReason::Shutdown => "shutdown",
            RemoveReason::ConfigChanged => "config_changed",
        }
    }
}

/// The result of one [`crate::Core::handle`] call.
#[must_use = "the commands must be carried out and wake_at honoured"]
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Step {
    pub commands: Vec<Command>,
    /// The earliest instant at which the core wants a [`crate::Event::Tick`].
    pub wake_at: Option<crate::Timestamp>,
}
