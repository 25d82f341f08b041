//! What happens to a job ([`Event`], in) and what drover does about it ([`Action`], out).

use std::time::Duration;

use drover_core::{FailureReason, Outcome};
use serde::{Deserialize, Serialize};

use crate::state::{Checkpoint, Cursor};

/// One thing that happened to a job. Each is journaled before the actions it leads to are
/// carried out, so a restart replays the record to the very phase the job was in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// The record's start: the runner (by name) the job came for, the label its containers
    /// carry, and whether the core holds it (and waits for its end).
    Received {
        runner: String,
        label: String,
        held: bool,
    },
    /// The label the job's containers carry, learnt from them: a record written by an older
    /// drover did not keep it.
    Labelled {
        label: String,
    },
    AcceptAnswered(AcceptAnswer),
    /// The core placed the job (a first run, or again after a restart).
    Placed,
    /// After a restart: whether step containers of the job exist on its machine.
    ContainersListed {
        steps: bool,
    },
    /// The trace's first `len` bytes are stored, with the executor's position after them.
    TraceStored {
        len: u64,
        cursor: Cursor,
        checkpoint: Option<Checkpoint>,
    },
    /// GitLab acknowledged the trace up to `offset`.
    TraceAcked {
        offset: u64,
    },
    /// The executor's outcome (its last lines are stored).
    StepsEnded {
        outcome: Outcome,
    },
    /// The job's containers are gone.
    ContainersRemoved,
    FinalAnswered(FinalAnswer),
    /// Whether GitLab has closed the job (asked after a restart).
    ClosedAnswered {
        closed: bool,
    },
    /// GitLab asks to cancel the job (`Job-Status: canceling`).
    CancelRequested,
    /// GitLab ended the job itself (`403`, `404`): stop it, send no final update.
    RemoteEnded,
    /// The core cancels the job (GitLab's cancel, passed on).
    Cancel,
    /// The core kills the job (forceful shutdown, a lost machine).
    Abort {
        reason: FailureReason,
    },
    /// The core gives up on a job that never ran; `text` goes into its trace.
    Fail {
        reason: FailureReason,
        text: String,
    },
    /// The job's machine cannot be reached to run it (its trace says why).
    MachineLost,
    /// A new drover process took the job over from its record.
    Restarted,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AcceptAnswer {
    /// GitLab runs the job on this runner; it may already ask to cancel it.
    Accepted { cancel_requested: bool },
    /// GitLab took the job back (`403`, `404`).
    TakenBack,
    /// No answer, or an error: try again.
    Failed,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FinalAnswer {
    /// GitLab took the final state.
    Accepted,
    /// GitLab had already ended the job.
    Closed,
    /// The uploader's bounded retries ran out: GitLab times the job out itself.
    GaveUp,
}

/// What to tell the core.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Note {
    /// GitLab canceled the job (the core cancels, fails or forgets it).
    Canceled,
    /// The job ended and GitLab knows: the core may free its machine and forget it.
    Finished(Outcome),
}

/// Which trace the final update closes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FinalTrace {
    /// The job's stored trace (it ran, or began to).
    Stored,
    /// The job never ran: a trace of its own, `text` or a line for the outcome.
    Unstarted(Option<String>),
}

/// One thing for drover to do; its result comes back as an [`Event`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Acknowledge the job at GitLab after `after` → [`Event::AcceptAnswered`].
    Accept {
        after: Duration,
    },
    /// Keep the waiting job alive at GitLab every `every` until it is placed →
    /// [`Event::CancelRequested`] / [`Event::RemoteEnded`].
    KeepAlive {
        every: Duration,
    },
    Tell(Note),
    /// Prepare the job and run its steps from the first → [`Event::TraceStored`]…,
    /// [`Event::StepsEnded`]. `again`: a restart found none of its steps started.
    Start {
        again: bool,
    },
    /// List the job's step containers (job id and label) → [`Event::ContainersListed`].
    Inspect,
    /// Re-attach to the job's containers; the output continues after the stored trace's cursor
    /// → [`Event::TraceStored`]…, [`Event::StepsEnded`].
    Reattach,
    /// Stop the script gracefully; `after_script` still runs.
    Cancel,
    /// Kill everything of the job now.
    Abort(FailureReason),
    /// Make sure the job's containers are gone → [`Event::ContainersRemoved`].
    RemoveContainers,
    /// The final update → [`Event::FinalAnswered`].
    SendFinal {
        outcome: Outcome,
        trace: FinalTrace,
    },
    /// Ask GitLab whether it closed the job → [`Event::ClosedAnswered`].
    CheckClosed,
    /// Nothing is left to do and the core does not hold the job: drop its record.
    Discard,
}
