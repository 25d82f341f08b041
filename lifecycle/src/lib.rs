//! drover's job lifecycle: one job's way from GitLab's answer to its acknowledged final update, as
//! a pure state machine. Events in, actions out; no I/O, no clock, no threads.
//!
//! ```text
//! received ─accept─▶ accepted ─placed─▶ preparing ─step output─▶ running ─steps ended / machine lost─▶ ended
//!    │ taken back / gave up                                                                              │ containers removed
//!    ▼                                                                                                   ▼
//! dropped            core fail / cancel / abort (never placed) ──────────────────────────────────▶ reporting
//!                                                                                                        │ final answered (or GitLab closed it)
//!                                                                                                        ▼
//!                                                                                                     reported ──▶ core told / record dropped
//! ```
//!
//! # The run-loop rule
//!
//! The daemon owns one [`Job`] per job and a per-job journal of [`Record`]s. For every event:
//! 1. append it to the journal (durably): a crash from here on replays it;
//! 2. `let actions = job.handle(event, &policy)`;
//! 3. carry the actions out; each result comes back as an event (step 1).
//!
//! After a restart, [`Job::replay`] folds the journal back into the job and [`Event::Restarted`]
//! (journaled too) yields what the recovery table ([`recovery::RECOVERY`]) says for its phase.
//! The crash-safety property (for every prefix of a job's history, recovery sends exactly one
//! final update and leaves no container behind) is tested in `tests/crash.rs` against fakes.

mod event;
mod machine;
mod policy;
pub mod recovery;
mod state;

pub use event::{AcceptAnswer, Action, Event, FinalAnswer, FinalTrace, Note};
pub use policy::Policy;
pub use recovery::{RECOVERY, Recovery};
pub use state::{Checkpoint, Cursor, Phase, PhaseKind, TraceMark};

use serde::{Deserialize, Serialize};

/// Everything drover knows of one job, in one place.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub phase: Phase,
    /// The runner (by name) the job came for.
    pub runner: String,
    /// The label the job's containers carry (the runner's, when the job started).
    pub label: String,
    /// The core holds the job and waits for its end. Not for a job drover failed before the
    /// core knew it, nor once the core failed it (no event follows a failure).
    pub held: bool,
    pub trace: TraceMark,
    /// The trace of a job that never ran, resent as it was after a restart.
    #[serde(default)]
    pub unstarted: Option<String>,
    /// The core failed or canceled the job before GitLab let drover acknowledge it: reported
    /// so once acknowledged.
    #[serde(default)]
    pub doomed: Option<(drover_core::Outcome, Option<String>)>,
    /// GitLab ended the job while it ran: no final update.
    #[serde(default)]
    pub remote_over: bool,
    /// The core (or GitLab) asked the running job to stop, and how it ends. Kept so a restart
    /// sends it again: the core asks only once and resumes a job without asking again.
    #[serde(default)]
    pub stop: Option<drover_core::Outcome>,
    /// This process has the job placed (cleared by a restart).
    #[serde(default)]
    pub placed: bool,
    /// This process told the core of GitLab's cancel (cleared by a restart).
    #[serde(default)]
    pub cancel_told: bool,
    /// The job was taken over from its record at least once.
    #[serde(default)]
    pub restarted: bool,
}

/// One line of a job's journal.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Record {
    /// The whole job: where a compacted journal (or one upgraded from an older format) begins.
    Snapshot(Box<Job>),
    Event(Event),
}

impl Job {
    /// A job before its first event ([`Event::Received`] fills it in).
    pub fn new() -> Job {
        Job {
            phase: Phase::Received { attempts: 0 },
            runner: String::new(),
            label: String::new(),
            held: false,
            trace: TraceMark::default(),
            unstarted: None,
            doomed: None,
            remote_over: false,
            stop: None,
            placed: false,
            cancel_told: false,
            restarted: false,
        }
    }

    /// The job a journal describes (`None` for an empty one). The actions are dropped: they were
    /// carried out, or died with the process, and [`Event::Restarted`] settles which.
    pub fn replay<'a>(
        records: impl IntoIterator<Item = &'a Record>,
        policy: &Policy,
    ) -> Option<Job> {
        let mut job: Option<Job> = None;
        for record in records {
            match record {
                Record::Snapshot(snapshot) => job = Some((**snapshot).clone()),
                Record::Event(event) => {
                    let _ = job
                        .get_or_insert_with(Job::new)
                        .handle(event.clone(), policy);
                }
            }
        }
        job
    }
}

impl Job {
    /// GitLab may have given drover the job: an acknowledgement may have gone out, its answer
    /// unjournaled. Every record begins by sending one ([`Event::Received`]), and a job the core
    /// failed meanwhile (its `Fail` journaled or lost in the crash) may still be GitLab's on this
    /// runner: only GitLab's refusal ([`Phase::Dropped`]) rules it out.
    pub fn may_be_accepted(&self) -> bool {
        self.phase != Phase::Dropped
    }
}

impl Default for Job {
    fn default() -> Job {
        Job::new()
    }
}
