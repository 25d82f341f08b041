//! What drover knows of one job: where it is on its way ([`Phase`]) and the marks a restart
//! continues from ([`TraceMark`]).

use drover_core::Outcome;
use serde::{Deserialize, Serialize};

/// How far the executor's output was consumed: the step (its place in the job's plan) and how many
/// log messages of that step's container. Mirrors the executor's own cursor.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Cursor {
    pub step: u16,
    pub messages: u64,
}

impl Cursor {
    /// Output of a step's container was stored, or a later step began: the job's step
    /// containers exist or existed. The preparation's own lines carry the first step's cursor
    /// with no message, so they do not count.
    pub fn saw_step_output(&self) -> bool {
        self.step > 0 || self.messages > 0
    }
}

/// State the trace's redaction holds back at a mark, opaque here (it may hold the start of a secret:
/// the record is as private as the job's payload).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint(pub String);

/// The stored trace: its length, what GitLab acknowledged of it, and where the executor's output
/// stood when it was stored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceMark {
    pub len: u64,
    pub acked: u64,
    pub cursor: Option<Cursor>,
    pub checkpoint: Option<Checkpoint>,
}

/// Where a job is on its way.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Stored, not yet acknowledged at GitLab; `attempts` failed so far.
    Received { attempts: u32 },
    /// GitLab runs it on this runner; it waits for the core to place it.
    Accepted,
    /// Placed: the executor prepares it (images, volumes, services); no step's output is stored.
    Preparing,
    /// A step's output is stored: the job's step containers exist or existed.
    Running,
    /// The executor reported the outcome; the job's containers may still be there.
    Ended { outcome: Outcome },
    /// The final update went out, perhaps without reaching GitLab.
    Reporting { outcome: Outcome },
    /// GitLab acknowledged the final update, or had ended the job itself: nothing more to send.
    Reported { outcome: Outcome },
    /// GitLab never let drover acknowledge the job: nothing runs and nothing is reported.
    Dropped,
}

/// [`Phase`] without its data: the rows of the recovery table.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum PhaseKind {
    Received,
    Accepted,
    Preparing,
    Running,
    Ended,
    Reporting,
    Reported,
    Dropped,
}

impl Phase {
    pub fn kind(&self) -> PhaseKind {
        match self {
            Phase::Received { .. } => PhaseKind::Received,
            Phase::Accepted => PhaseKind::Accepted,
            Phase::Preparing => PhaseKind::Preparing,
            Phase::Running => PhaseKind::Running,
            Phase::Ended { .. } => PhaseKind::Ended,
            Phase::Reporting { .. } => PhaseKind::Reporting,
            Phase::Reported { .. } => PhaseKind::Reported,
            Phase::Dropped => PhaseKind::Dropped,
        }
    }

    /// The job's outcome, once known.
    pub fn outcome(&self) -> Option<Outcome> {
        match self {
            Phase::Ended { outcome }
            | Phase::Reporting { outcome }
            | Phase::Reported { outcome } => Some(*outcome),
            _ => None,
        }
    }
}
