//! [`Core`]: the scheduling core's type, its constructor and the event dispatch. The handlers live
//! in the submodules by concern; scaling decisions live in `scale.rs`.

mod backoff;
mod jobs;
mod lifecycle;
mod machines;
mod naming;
mod requests;

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use crate::command::{Command, Step};
use crate::config::{Config, RunnerConfig};
use crate::digest::state_digest;
use crate::event::{Event, Signal};
use crate::hash::hash_of;
use crate::index::IdMap;
use crate::state::{ActivePolicy, AnomalyKind, Counts, RunnerState, Shutdown, State};
use crate::time::Timestamp;

pub use backoff::{creation_backoff, removal_backoff};
pub use naming::machine_name;
pub use requests::{RequestEnd, UNHEALTHY_LIMIT, request_pause, unhealthy_backoff};

/// GitLab's default job timeout, used when the job names none.
pub const DEFAULT_JOB_TIMEOUT: Duration = Duration::from_secs(7200);

/// Creation failures a waiting job sees before it is reported failed (GitLab's Prepare retries).
pub const PREPARE_ATTEMPTS: u32 = 3;

/// The scheduling core. See the crate docs for the contract.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Core {
    pub(crate) config: Config,
    pub(crate) state: State,
    /// The hash of the configs, for the digest; reset by a reload.
    #[serde(skip)]
    pub(crate) config_digest: std::sync::OnceLock<u64>,
    /// Hash changed records in batches rather than after every event (see [`Core::defer_hashing`]).
    #[serde(skip)]
    pub(crate) hashing_deferred: bool,
}

/// With hashing deferred, changed records are hashed once this many are pending: often enough to
/// keep the pending list small, seldom enough that most jobs have come and gone in between.
const DEFERRED_HASH_BATCH: usize = 4096;

impl Core {
    /// A core with no machines and no jobs. The config should have passed [`Config::validate`];
    /// a `concurrent` of 0 is treated as 1 rather than refused.
    pub fn new(config: Config, now: Timestamp) -> Core {
        let runners = config
            .runners
            .iter()
            .map(|r| RunnerState::new(r.clone(), now))
            .collect();
        let next_list_at = config.reconcile_interval.map(|i| now.after(i));
        let state = State {
            now,
            seq: 0,
            runners,
            machines: IdMap::new(),
            names: Default::default(),
            jobs: IdMap::new(),
            totals: Default::default(),
            next_machine: 1,
            removal_retries: BTreeSet::new(),
            queue_deadlines: BTreeMap::new(),
            next_deadline: None,
            received_now: Vec::new(),
            next_list_at,
            shutdown: Shutdown::None,
            exited: false,
            anomalies: Default::default(),
            stats: Default::default(),
            unhealthy: Vec::new(),
        };
        Core {
            config,
            state,
            config_digest: std::sync::OnceLock::new(),
            hashing_deferred: false,
        }
    }

    /// Handles one event at `now` and returns what to do next. The only mutator; never panics.
    pub fn handle(&mut self, now: Timestamp, event: Event) -> Step {
        let mut commands = Vec::new();
        let wake_at = self.handle_into(now, event, &mut commands);
        Step { commands, wake_at }
    }

    /// [`Core::handle`] that appends the commands to `out` instead of allocating a `Vec` per event:
    /// for drivers that handle millions of events (the simulator). Returns `wake_at`.
    pub fn handle_into(
        &mut self,
        now: Timestamp,
        event: Event,
        out: &mut Vec<Command>,
    ) -> Option<Timestamp> {
        if now < self.state.now {
            self.anomaly(AnomalyKind::TimeWentBackwards, self.state.now.0 - now.0);
        } else {
            self.state.now = now;
        }
        self.state.seq += 1;
        match event {
            Event::JobReceived { runner, job, info } => {
                self.on_job_received(runner, job, info, out)
            }
            Event::JobRequestEmpty { runner } => {
                self.on_request_done(runner, RequestEnd::Empty);
            }
            Event::JobRequestAnswered {
                runner,
                held_ms,
                long_poll,
            } => {
                self.on_request_done(
                    runner,
                    RequestEnd::Answered {
                        held: Duration::from_millis(held_ms),
                        long_poll,
                    },
                );
            }
            Event::JobRequestFailed {
                runner,
                retry_after_ms,
            } => self.on_request_failed(runner, retry_after_ms, false),
            Event::JobRequestUnhealthy {
                runner,
                retry_after_ms,
            } => self.on_request_failed(runner, retry_after_ms, true),
            Event::MachineCreated { machine } => self.on_machine_created(machine),
            Event::MachineCreationFailed { machine, failure } => {
                self.on_creation_failed(machine, failure, out)
            }
            Event::MachineRemoved { machine } => self.on_machine_removed(machine, out),
            Event::MachineRemovalFailed { machine } => self.on_removal_failed(machine),
            Event::MachineLost { machine } => self.on_machine_lost(machine, out),
            Event::MachinesListed {
                runner,
                request,
                names,
            } => self.on_machines_listed(runner, request, names, out),
            Event::JobFinished { job, outcome } => self.on_job_finished(job, outcome, out),
            Event::JobCanceled { job } => self.on_job_canceled(job, out),
            Event::Signal(Signal::Graceful) => self.on_graceful(out),
            Event::Signal(Signal::Forceful) => self.on_forceful(out),
            Event::Signal(Signal::Reload(config)) => self.on_reload(*config, out),
            Event::Resumed => self.on_resumed(out),
            Event::Tick => {}
        }
        let mut wake = self.reconcile(out);
        // Indexed by position: the buffer keeps its capacity from event to event.
        for i in 0..self.state.received_now.len() {
            let job = self.state.received_now[i];
            wake = crate::time::earliest(wake, self.index_deadline(job));
        }
        self.state.received_now.clear();
        // Records changed in place are rehashed for the digest.
        let pending = self.state.machines.unsettled() + self.state.jobs.unsettled();
        if !self.hashing_deferred || pending >= DEFERRED_HASH_BATCH {
            self.state.machines.settle();
            self.state.jobs.settle();
        }
        wake
    }

    /// For drivers that ask for [`Core::digest`] seldom (the simulator): records changed by events
    /// are hashed in batches, and a job received and finished between two batches never at all,
    /// instead of after every event. The digest stays exact; a call to it then costs O(changed
    /// records) instead of O(1).
    pub fn defer_hashing(&mut self) {
        self.hashing_deferred = true;
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    pub(crate) fn anomaly(&mut self, kind: AnomalyKind, subject: u64) {
        self.state.anomalies.record(self.state.now, kind, subject);
    }
}

impl Core {
    /// A stable hash of the live state (digest version [`crate::DIGEST_VERSION`]), for replay checks.
    /// O(runners): machine and job records are hashed as they change.
    pub fn digest(&self) -> u64 {
        self.digest_with(self.state.machines.digest(), self.state.jobs.digest())
    }

    /// [`Core::digest`] recomputed from every record: equal to it, or the running sums are wrong.
    pub fn digest_from_scratch(&self) -> u64 {
        self.digest_with(
            self.state.machines.digest_from_scratch(),
            self.state.jobs.digest_from_scratch(),
        )
    }

    fn digest_with(&self, machines: u64, jobs: u64) -> u64 {
        state_digest(self.config_digest(), &self.state, machines, jobs)
    }

    /// The hash of the config and of every runner's config (a retired runner keeps its own),
    /// computed once per reload.
    fn config_digest(&self) -> u64 {
        *self.config_digest.get_or_init(|| {
            let runners: Vec<_> = self.state.runners.iter().map(|r| &r.config).collect();
            hash_of(&(&self.config, runners))
        })
    }

    /// The digest of format-1 journals: xxh3 of the whole serialized core, indexes included, as
    /// it was serialized then: without the unhealthy-request runs, which end it (an empty list is
    /// its last byte) and never began in such a journal.
    pub fn digest_v1(&self) -> u64 {
        let mut bytes = crate::encode_snapshot(self).unwrap_or_default();
        if self.state.unhealthy.is_empty() {
            bytes.pop();
        }
        xxhash_rust::xxh3::xxh3_64(&bytes)
    }
}

impl RunnerState {
    fn new(config: RunnerConfig, now: Timestamp) -> RunnerState {
        RunnerState {
            config,
            retired: false,
            counts: Counts::default(),
            idle: VecDeque::new(),
            queue: VecDeque::new(),
            next_poll_at: now,
            create_failures: 0,
            create_blocked_until: Timestamp::ZERO,
            front_failures: 0,
            policy: ActivePolicy::default(),
            reap_after: Timestamp::ZERO,
            free_slots: 0,
            open: BTreeSet::new(),
        }
    }
}
