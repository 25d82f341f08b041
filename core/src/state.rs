//! The core's state: read-only to everyone but [`crate::Core::handle`].

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::index::{IdMap, NameIndex};

use crate::command::RemoveReason;
use crate::config::{RunnerConfig, SlotPolicy};
use crate::event::JobInfo;
use crate::ids::{JobId, MachineId, RunnerId};
use crate::period::PolicyValues;
use crate::time::Timestamp;

/// Everything the core knows. Counters are kept incrementally so no event scans the fleet.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    pub(crate) now: Timestamp,
    /// Events handled so far.
    pub(crate) seq: u64,
    pub(crate) runners: Vec<RunnerState>,
    pub(crate) machines: IdMap<MachineId, Machine>,
    pub(crate) names: NameIndex,
    pub(crate) jobs: IdMap<JobId, Job>,
    pub(crate) totals: Totals,
    pub(crate) next_machine: u64,
    /// Failed removals waiting for their next attempt.
    pub(crate) removal_retries: BTreeSet<(Timestamp, MachineId)>,
    /// Received jobs waiting for a machine, by the time they give up: a deque per distinct timeout
    /// (see `queues.rs`).
    pub(crate) queue_deadlines: BTreeMap<u64, VecDeque<(Timestamp, u64, JobId)>>,
    /// No queued job gives up before this (an early bound: the job may have left the queue).
    pub(crate) next_deadline: Option<Timestamp>,
    /// Jobs received during the current event; those still queued when it is handled get a deadline
    /// entry (most start at once and never need one). Always empty between events.
    #[serde(skip)]
    pub(crate) received_now: Vec<JobId>,
    pub(crate) next_list_at: Option<Timestamp>,
    pub(crate) shutdown: Shutdown,
    pub(crate) exited: bool,
    pub(crate) anomalies: Anomalies,
    pub(crate) stats: Stats,
    /// Unhealthy job requests in a row, by runner index (missing = 0): see
    /// [`crate::unhealthy_backoff`]. Last in the state, so a snapshot of journal format 3 and older
    /// (which has none) decodes with it empty (`snapshot.rs`).
    pub(crate) unhealthy: Vec<u32>,
}

/// Global counters across runners.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub running: u32,
    pub queued: u32,
    pub in_flight: u32,
}

/// Per-runner counters. `counted` machines are what `limit` caps.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub creating: u32,
    pub idle: u32,
    pub busy: u32,
    pub removing: u32,
    /// Removing machines whose removal failed at least [`STUCK_AFTER`] times: reported, and no longer
    /// counted against `limit`.
    pub stuck: u32,
    pub running: u32,
    pub queued: u32,
    pub in_flight: u32,
}

/// Failed removals after which a machine stops counting against `limit`.
pub const STUCK_AFTER: u32 = 3;

impl Counts {
    /// Machines that count against `limit`: every state but stuck removals.
    pub fn counted(&self) -> u32 {
        self.creating + self.idle + self.busy + self.removing - self.stuck
    }

    /// Machines that can take a job now or soon.
    pub fn supply(&self) -> u32 {
        self.creating + self.idle
    }
}

/// One runner's pool and job pipeline.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RunnerState {
    pub config: RunnerConfig,
    /// Removed from the config by a reload: drains, then stays empty.
    pub retired: bool,
    pub counts: Counts,
    /// Idle machines by last use; the back is the most recently used (see `queues.rs`).
    pub(crate) idle: VecDeque<(Timestamp, MachineId)>,
    /// Received jobs waiting for a machine, first come first served, with the sequence number at which
    /// each was queued.
    pub(crate) queue: VecDeque<(u64, JobId)>,
    pub(crate) next_poll_at: Timestamp,
    pub(crate) create_failures: u32,
    pub(crate) create_blocked_until: Timestamp,
    /// Creation failures the oldest waiting job has seen.
    pub(crate) front_failures: u32,
    pub(crate) policy: ActivePolicy,
    /// No idle machine of this runner expires before this (an early bound: reaping looks no further
    /// until then). Reset whenever IdleTime may have changed.
    pub(crate) reap_after: Timestamp,
    /// Free job slots on this runner's ready machines (idle ones, and machines running fewer jobs
    /// than they take), for a runner with slots (0 for the others). Derived from the machine
    /// records and the config (see `slots.rs`): not journaled, rebuilt after a snapshot or a reload.
    #[serde(skip)]
    pub(crate) free_slots: u32,
    /// Machines running jobs with a slot free, by the jobs they run: the fullest takes the next
    /// job, so idle machines can expire. Derived, as `free_slots`.
    #[serde(skip)]
    pub(crate) open: BTreeSet<(u32, MachineId)>,
}

/// The autoscaling values in force and until when they are known to hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ActivePolicy {
    pub values: PolicyValues,
    /// Index of the `[[runners.machine.autoscaling]]` block in force, if any.
    pub period: Option<usize>,
    pub valid_until: Timestamp,
}

impl RunnerState {
    pub fn policy(&self) -> &ActivePolicy {
        &self.policy
    }

    pub fn next_poll_at(&self) -> Timestamp {
        self.next_poll_at
    }

    /// When creations may resume after failures.
    pub fn create_blocked_until(&self) -> Timestamp {
        self.create_blocked_until
    }

    /// Free job slots on the ready machines of a runner with slots (0 for the others).
    pub fn free_slots(&self) -> u32 {
        self.free_slots
    }

    /// The idle capacity the runner's policy asks for now, for status and metrics: idle machines
    /// for docker+machine (`IdleCount` with `IdleScaleFactor` over busy machines), idle job
    /// slots for a runner with slots (`idle_count` with `scale_factor` over running jobs).
    pub fn idle_target(&self) -> u32 {
        match self.config.slot_policy() {
            Some(sp) => SlotPolicy::idle_slots(
                &self.policy.values,
                sp.extra(self.policy.period),
                self.counts.running,
            ),
            None => self.policy.values.idle_target(self.counts.busy),
        }
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MachineState {
    Creating,
    Idle,
    Busy(JobId),
    Removing,
    /// Running this many jobs (at least one) on a machine of a runner with job slots
    /// (`docker-autoscaler`); which ones, the jobs' records say. (Appended last: journals name
    /// the states above by their position.)
    Shared(u32),
}

impl MachineState {
    /// Jobs the machine runs.
    pub fn jobs(self) -> u32 {
        match self {
            MachineState::Busy(_) => 1,
            MachineState::Shared(k) => k,
            MachineState::Creating | MachineState::Idle | MachineState::Removing => 0,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            MachineState::Creating => "creating",
            MachineState::Idle => "idle",
            MachineState::Busy(_) | MachineState::Shared(_) => "busy",
            MachineState::Removing => "removing",
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    pub runner: RunnerId,
    pub name: String,
    pub state: MachineState,
    /// Jobs started on it.
    pub used_count: u32,
    pub created_at: Timestamp,
    /// Start of the idle clock: creation, or the end of its last job.
    pub last_used: Timestamp,
    /// Event sequence number of its last state change (reconciliation ignores changes newer than a list).
    pub changed_seq: u64,
    pub removal_attempts: u32,
    pub remove_reason: Option<RemoveReason>,
    /// Set while a failed removal waits for its next attempt.
    pub retry_at: Option<Timestamp>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    pub runner: RunnerId,
    pub info: JobInfo,
    pub received_at: Timestamp,
    /// The event sequence number at which it was queued (identifies its queue entries).
    pub enqueued: u64,
    pub state: JobState,
    pub cancel_requested: bool,
    pub aborted: bool,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobState {
    Queued {
        deadline: Timestamp,
    },
    Running {
        machine: Option<MachineId>,
        started_at: Timestamp,
    },
}

#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Shutdown {
    #[default]
    None,
    Graceful {
        since: Timestamp,
    },
    Forceful {
        since: Timestamp,
        deadline: Timestamp,
    },
}

/// Running totals, for summaries and the simulator.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stats {
    pub jobs_received: u64,
    pub jobs_started: u64,
    pub jobs_finished: u64,
    /// Jobs reported failed without ever starting.
    pub jobs_failed_unstarted: u64,
    pub machines_requested: u64,
    pub machines_created: u64,
    pub creation_failures: u64,
    pub machines_removed: u64,
    pub removal_failures: u64,
    /// Machines given up after `MaxRemovalAttempts`: possibly orphaned at the provider.
    pub machines_abandoned: u64,
    pub orphans_found: u64,
    pub machines_lost: u64,
}

/// Inputs that made no sense. The core records them and moves on; it never panics on them.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct Anomalies {
    pub by_kind: BTreeMap<AnomalyKind, u64>,
    /// The most recent ones, for logs and `drover status`.
    pub recent: VecDeque<Anomaly>,
}

const RECENT_ANOMALIES: usize = 32;

impl Anomalies {
    pub(crate) fn record(&mut self, at: Timestamp, kind: AnomalyKind, subject: u64) {
        *self.by_kind.entry(kind).or_default() += 1;
        if self.recent.len() == RECENT_ANOMALIES {
            self.recent.pop_front();
        }
        self.recent.push_back(Anomaly { at, kind, subject });
    }

    pub fn total(&self) -> u64 {
        self.by_kind.values().sum()
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anomaly {
    pub at: Timestamp,
    pub kind: AnomalyKind,
    /// The job, machine or runner number it concerns.
    pub subject: u64,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum AnomalyKind {
    TimeWentBackwards,
    UnknownRunner,
    UnexpectedJobResponse,
    DuplicateJob,
    UnknownJob,
    JobFinishedBeforeStart,
    UnknownMachine,
    UnexpectedMachineEvent,
    MachineVanished,
    MachineAbandoned,
}

impl AnomalyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyKind::TimeWentBackwards => "time went backwards",
            AnomalyKind::UnknownRunner => "event for an unknown runner",
            AnomalyKind::UnexpectedJobResponse => "job response without a request in flight",
            AnomalyKind::DuplicateJob => "job received twice",
            AnomalyKind::UnknownJob => "event for an unknown job (duplicate finish?)",
            AnomalyKind::JobFinishedBeforeStart => "job finished before it started",
            AnomalyKind::UnknownMachine => "event for an unknown machine",
            AnomalyKind::UnexpectedMachineEvent => "machine event that does not fit its state",
            AnomalyKind::MachineVanished => "machine removed or lost outside our commands",
            AnomalyKind::MachineAbandoned => "removal given up after MaxRemovalAttempts",
        }
    }
}

impl State {
    pub fn now(&self) -> Timestamp {
        self.now
    }

    /// Events handled so far.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn runners(&self) -> &[RunnerState] {
        &self.runners
    }

    pub fn runner(&self, id: RunnerId) -> Option<&RunnerState> {
        self.runners.get(id.index())
    }

    /// The id of the runner with this name (stable across reloads).
    pub fn runner_id(&self, name: &str) -> Option<RunnerId> {
        self.runners
            .iter()
            .position(|r| r.config.name == name)
            .and_then(|i| u16::try_from(i).ok())
            .map(RunnerId)
    }

    /// Every machine, by id. O(n log n): for status and checks, not per event.
    pub fn machines(&self) -> Vec<(MachineId, &Machine)> {
        self.machines.sorted()
    }

    pub fn machine(&self, id: MachineId) -> Option<&Machine> {
        self.machines.get(&id)
    }

    pub fn machine_by_name(&self, name: &str) -> Option<MachineId> {
        self.names.get(name).copied()
    }

    /// Every job held (queued or running), by id. O(n log n): for status and checks, not per event.
    pub fn jobs(&self) -> Vec<(JobId, &Job)> {
        self.jobs.sorted()
    }

    pub fn job(&self, id: JobId) -> Option<&Job> {
        self.jobs.get(&id)
    }

    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    pub fn shutdown(&self) -> Shutdown {
        self.shutdown
    }

    pub fn exited(&self) -> bool {
        self.exited
    }

    pub fn anomalies(&self) -> &Anomalies {
        &self.anomalies
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The name prefixes a runner's machines are listed by: its current one first, then those its
    /// known machines were named under, if different. O(n): for the periodic list, not per event.
    pub fn machine_prefixes(&self, runner: RunnerId) -> Vec<String> {
        let Some(r) = self.runner(runner) else {
            return Vec::new();
        };
        let current = r.config.machine_prefix();
        let mut others = BTreeSet::new();
        for (_, m) in self.machines.sorted() {
            if m.runner == runner
                && let Some(p) = crate::config::prefix_of(&m.name)
                && p != current
            {
                others.insert(p.to_string());
            }
        }
        std::iter::once(current).chain(others).collect()
    }

    /// Every key (`runner-<key>-` in machine names, the `drover.runner` label of job containers)
    /// the runner owns: its current one first, then those its known machines were named under
    /// (before an upgrade changed the key), if different. A driver looking for the runner's
    /// leftovers looks under each of them; earlier keys of a runner's config that no known machine
    /// carries ([`crate::config::earlier_keys`]) may be another installation's and are not listed.
    /// O(n), as [`State::machine_prefixes`].
    pub fn runner_keys(&self, runner: RunnerId) -> Vec<String> {
        self.machine_prefixes(runner)
            .iter()
            .filter_map(|p| Some(p.strip_prefix("runner-")?.strip_suffix('-')?.to_string()))
            .collect()
    }

    /// Failed removals waiting for a retry.
    pub fn removals_waiting(&self) -> usize {
        self.removal_retries.len()
    }
}
