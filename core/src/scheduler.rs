//! [`Core`]: the event handlers. Scaling decisions live in `scale.rs`.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use crate::command::{Command, FailCause, RemoveReason, Step};
use crate::config::{Config, Executor, RunnerConfig};
use crate::digest::state_digest;
use crate::event::{CreationFailure, Event, FailureReason, JobInfo, Outcome, Signal};
use crate::hash::hash_of;
use crate::ids::{JobId, MachineId, RunnerId};
use crate::index::IdMap;
use crate::state::{
    ActivePolicy, AnomalyKind, Counts, Job, JobState, Machine, MachineState, RunnerState,
    STUCK_AFTER, Shutdown, State,
};
use crate::time::Timestamp;

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
}

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
            names: BTreeMap::new(),
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
        };
        Core {
            config,
            state,
            config_digest: std::sync::OnceLock::new(),
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
            Event::JobRequestEmpty { runner } => self.on_request_done(runner, None),
            Event::JobRequestFailed {
                runner,
                retry_after_ms,
            } => self.on_request_done(runner, Some(retry_after_ms.unwrap_or(0))),
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
        self.state.machines.settle();
        self.state.jobs.settle();
        wake
    }

    /// Indexes the deadline of a job received during this event if it is still waiting.
    fn index_deadline(&mut self, job: JobId) -> Option<Timestamp> {
        let j = self.state.jobs.get(&job)?;
        let JobState::Queued { deadline } = j.state else {
            return None;
        };
        let timeout = crate::time::millis(job_timeout(&j.info));
        let seq = j.enqueued;
        self.state.push_deadline(timeout, deadline, seq, job);
        Some(deadline)
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    // ----- jobs ---------------------------------------------------------------------------------

    fn on_job_received(
        &mut self,
        runner: RunnerId,
        job: JobId,
        info: JobInfo,
        out: &mut Vec<Command>,
    ) {
        let now = self.state.now;
        let Some(r) = self.state.runners.get_mut(runner.index()) else {
            self.anomaly(AnomalyKind::UnknownRunner, u64::from(runner.0));
            out.push(Command::FailJob {
                job,
                runner,
                reason: FailureReason::RunnerSystemFailure,
                cause: FailCause::UnknownRunner,
            });
            return;
        };
        if r.counts.in_flight > 0 {
            r.counts.in_flight -= 1;
            self.state.totals.in_flight -= 1;
        } else {
            self.anomaly(AnomalyKind::UnexpectedJobResponse, job.0);
        }
        if self.state.jobs.contains_key(&job) {
            self.anomaly(AnomalyKind::DuplicateJob, job.0);
            return;
        }
        let deadline = now.after(job_timeout(&info));
        let seq = self.state.seq;
        self.state.jobs.insert(
            job,
            Job {
                runner,
                info,
                received_at: now,
                enqueued: seq,
                state: JobState::Queued { deadline },
                cancel_requested: false,
                aborted: false,
            },
        );
        let r = &mut self.state.runners[runner.index()];
        r.counts.queued += 1;
        self.state.totals.queued += 1;
        self.state.push_queued(runner.index(), seq, job);
        self.state.received_now.push(job);
        self.state.stats.jobs_received += 1;
    }

    /// Takes a queued job out of the job table (its index entries go stale).
    fn dequeue(&mut self, job: JobId) -> Option<Job> {
        let j = self.state.jobs.remove(&job)?;
        if let JobState::Queued { .. } = j.state {
            self.state.runners[j.runner.index()].counts.queued -= 1;
            self.state.totals.queued -= 1;
            self.state.compact_queue(j.runner.index());
        }
        Some(j)
    }

    fn fail_queued(&mut self, job: JobId, cause: FailCause, out: &mut Vec<Command>) {
        if let Some(j) = self.dequeue(job) {
            self.state.stats.jobs_failed_unstarted += 1;
            let reason = match cause {
                FailCause::Canceled => FailureReason::JobCanceled,
                _ => FailureReason::RunnerSystemFailure,
            };
            out.push(Command::FailJob {
                job,
                runner: j.runner,
                reason,
                cause,
            });
        }
    }

    fn on_request_done(&mut self, runner: RunnerId, failed_retry_after: Option<u64>) {
        let now = self.state.now;
        let interval = self.config.check_interval;
        let Some(r) = self.state.runners.get_mut(runner.index()) else {
            self.anomaly(AnomalyKind::UnknownRunner, u64::from(runner.0));
            return;
        };
        if r.counts.in_flight == 0 {
            self.anomaly(AnomalyKind::UnexpectedJobResponse, u64::from(runner.0));
            return;
        }
        r.counts.in_flight -= 1;
        self.state.totals.in_flight -= 1;
        let pause = match failed_retry_after {
            Some(ms) => interval.max(Duration::from_millis(ms)),
            None => interval,
        };
        r.next_poll_at = r.next_poll_at.max(now.after(pause));
    }

    fn on_job_finished(&mut self, job: JobId, _outcome: Outcome, out: &mut Vec<Command>) {
        let now = self.state.now;
        let Some(j) = self.state.jobs.remove(&job) else {
            self.anomaly(AnomalyKind::UnknownJob, job.0);
            return;
        };
        let JobState::Running { machine, .. } = j.state else {
            // Nonsense: it never started. It stays queued, so it still runs or is reported.
            self.state.jobs.insert(job, j);
            self.anomaly(AnomalyKind::JobFinishedBeforeStart, job.0);
            return;
        };
        let runner = j.runner;
        self.state.stats.jobs_finished += 1;
        let r = &mut self.state.runners[runner.index()];
        r.counts.running -= 1;
        self.state.totals.running -= 1;
        let Some(mid) = machine else { return };
        let Some(m) = self.state.machines.get(&mid) else {
            return;
        };
        if m.state != MachineState::Busy(job) {
            return; // lost or removed while the job ran; its removal is already under way
        }
        let max_builds = r.config.policy().map_or(0, |p| p.max_builds);
        if max_builds > 0 && m.used_count >= max_builds {
            self.start_removal(mid, RemoveReason::TooManyBuilds, out);
        } else if r.retired {
            self.start_removal(mid, RemoveReason::RunnerRemoved, out);
        } else {
            self.make_idle(mid, now);
        }
    }

    fn on_job_canceled(&mut self, job: JobId, out: &mut Vec<Command>) {
        let Some(j) = self.state.jobs.get_mut(&job) else {
            self.anomaly(AnomalyKind::UnknownJob, job.0);
            return;
        };
        match j.state {
            JobState::Queued { .. } => self.fail_queued(job, FailCause::Canceled, out),
            JobState::Running { .. } => {
                if !j.cancel_requested && !j.aborted {
                    j.cancel_requested = true;
                    out.push(Command::CancelJob { job });
                }
            }
        }
    }

    /// Starts the oldest queued job of `runner` on `machine` (already taken out of the idle index),
    /// or directly for runners without a pool. The caller checked that a job is queued.
    pub(crate) fn start_job(
        &mut self,
        runner: RunnerId,
        machine: Option<MachineId>,
        out: &mut Vec<Command>,
    ) -> bool {
        let now = self.state.now;
        let Some(job) = self.state.start_queued(runner.index(), machine, now) else {
            return false;
        };
        let r = &mut self.state.runners[runner.index()];
        r.counts.queued -= 1;
        r.counts.running += 1;
        r.front_failures = 0;
        self.state.totals.queued -= 1;
        self.state.totals.running += 1;
        if let Some(mid) = machine
            && let Some(m) = self.set_machine_state(mid, MachineState::Busy(job))
        {
            m.used_count += 1;
        }
        self.state.stats.jobs_started += 1;
        out.push(Command::RunJob {
            job,
            runner,
            machine,
        });
        true
    }

    // ----- machines -----------------------------------------------------------------------------

    /// Allocates, names and records a machine, then asks for it.
    pub(crate) fn create_machine(&mut self, runner: RunnerId, out: &mut Vec<Command>) {
        let now = self.state.now;
        let id = MachineId(self.state.next_machine);
        let name = machine_name(
            &self.state.runners[runner.index()].config,
            self.config.seed,
            id,
            now,
        );
        self.record_machine(runner, name.clone(), MachineState::Creating, None);
        self.state.stats.machines_requested += 1;
        out.push(Command::CreateMachine {
            machine: id,
            runner,
            name,
        });
    }

    /// Adds a machine record under the next id, counted in its state and indexed by name.
    fn record_machine(
        &mut self,
        runner: RunnerId,
        name: String,
        state: MachineState,
        remove_reason: Option<RemoveReason>,
    ) -> MachineId {
        let now = self.state.now;
        let id = MachineId(self.state.next_machine);
        self.state.next_machine += 1;
        inc_state(&mut self.state.runners[runner.index()].counts, state);
        self.state.names.insert(name.clone(), id);
        self.state.machines.insert(
            id,
            Machine {
                runner,
                name,
                state,
                used_count: 0,
                created_at: now,
                last_used: now,
                changed_seq: self.state.seq,
                removal_attempts: 0,
                remove_reason,
                retry_at: None,
            },
        );
        id
    }

    fn on_machine_created(&mut self, machine: MachineId) {
        let now = self.state.now;
        let Some(m) = self.state.machines.get(&machine) else {
            self.anomaly(AnomalyKind::UnknownMachine, machine.0);
            return;
        };
        match m.state {
            MachineState::Creating => {
                let runner = m.runner;
                self.make_idle(machine, now);
                let r = &mut self.state.runners[runner.index()];
                r.create_failures = 0;
                self.state.stats.machines_created += 1;
            }
            // Doomed while creating (a lowered limit, a shutdown): its removal is already queued.
            MachineState::Removing => {}
            MachineState::Idle | MachineState::Busy(_) => {
                self.anomaly(AnomalyKind::UnexpectedMachineEvent, machine.0)
            }
        }
    }

    fn on_creation_failed(
        &mut self,
        machine: MachineId,
        failure: CreationFailure,
        out: &mut Vec<Command>,
    ) {
        let now = self.state.now;
        let Some(m) = self.state.machines.get(&machine) else {
            self.anomaly(AnomalyKind::UnknownMachine, machine.0);
            return;
        };
        match m.state {
            MachineState::Creating => {}
            MachineState::Removing => return,
            MachineState::Idle | MachineState::Busy(_) => {
                self.anomaly(AnomalyKind::UnexpectedMachineEvent, machine.0);
                return;
            }
        }
        let runner = m.runner;
        self.state.stats.creation_failures += 1;
        self.start_removal(machine, RemoveReason::CreationFailed, out);
        let r = &mut self.state.runners[runner.index()];
        r.create_failures = r.create_failures.saturating_add(1);
        r.create_blocked_until = now.after(creation_backoff(failure, r.create_failures));
        let doomed: Vec<JobId> = match failure {
            CreationFailure::Fatal => self.state.queued_jobs(runner.index()),
            CreationFailure::Retryable | CreationFailure::Quota => {
                r.front_failures += 1;
                if r.front_failures >= PREPARE_ATTEMPTS {
                    r.front_failures = 0;
                    self.state
                        .front_queued(runner.index())
                        .into_iter()
                        .collect()
                } else {
                    Vec::new()
                }
            }
        };
        for job in doomed {
            self.fail_queued(job, FailCause::CreationFailed, out);
        }
    }

    fn on_machine_removed(&mut self, machine: MachineId, out: &mut Vec<Command>) {
        let Some(m) = self.state.machines.get(&machine) else {
            self.anomaly(AnomalyKind::UnknownMachine, machine.0);
            return;
        };
        match m.state {
            MachineState::Removing => {}
            MachineState::Busy(job) => {
                self.anomaly(AnomalyKind::MachineVanished, machine.0);
                self.abort_job(job, out);
            }
            MachineState::Idle | MachineState::Creating => {
                self.anomaly(AnomalyKind::MachineVanished, machine.0)
            }
        }
        self.forget_machine(machine);
        self.state.stats.machines_removed += 1;
    }

    fn on_removal_failed(&mut self, machine: MachineId) {
        let now = self.state.now;
        let Some(m) = self.state.machines.get_mut(&machine) else {
            self.anomaly(AnomalyKind::UnknownMachine, machine.0);
            return;
        };
        if m.state != MachineState::Removing || m.retry_at.is_some() {
            self.anomaly(AnomalyKind::UnexpectedMachineEvent, machine.0);
            return;
        }
        m.removal_attempts += 1;
        let attempts = m.removal_attempts;
        let runner = m.runner;
        self.state.stats.removal_failures += 1;
        let r = &mut self.state.runners[runner.index()];
        let max = r
            .config
            .policy()
            .map_or(30, |p| p.max_removal_attempts)
            .max(1);
        if attempts == STUCK_AFTER {
            r.counts.stuck += 1;
        }
        if attempts >= max {
            self.anomaly(AnomalyKind::MachineAbandoned, machine.0);
            self.state.stats.machines_abandoned += 1;
            self.forget_machine(machine);
            return;
        }
        let at = now.after(removal_backoff(attempts));
        if let Some(m) = self.state.machines.get_mut(&machine) {
            m.retry_at = Some(at);
        }
        self.state.removal_retries.insert((at, machine));
    }

    fn on_machine_lost(&mut self, machine: MachineId, out: &mut Vec<Command>) {
        let Some(m) = self.state.machines.get(&machine) else {
            self.anomaly(AnomalyKind::UnknownMachine, machine.0);
            return;
        };
        self.state.stats.machines_lost += 1;
        match m.state {
            MachineState::Removing => {}
            MachineState::Busy(job) => {
                self.abort_job(job, out);
                self.start_removal(machine, RemoveReason::Lost, out);
            }
            MachineState::Idle | MachineState::Creating => {
                self.start_removal(machine, RemoveReason::Lost, out)
            }
        }
    }

    fn on_machines_listed(
        &mut self,
        runner: RunnerId,
        request: u64,
        names: Vec<String>,
        out: &mut Vec<Command>,
    ) {
        if self.state.runners.get(runner.index()).is_none() {
            self.anomaly(AnomalyKind::UnknownRunner, u64::from(runner.0));
            return;
        }
        // The prefixes the list covered: the runner's own and those its machines carry. A machine
        // named under another key (a rotated token, an older drover) is still ours.
        let prefixes = self.state.machine_prefixes(runner);
        let listed: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        // Known machines that settled before the list was asked for and are missing from it: lost.
        let missing: Vec<MachineId> = self
            .state
            .machines
            .sorted()
            .into_iter()
            .filter(|(_, m)| {
                m.runner == runner && m.changed_seq < request && !listed.contains(m.name.as_str())
            })
            .filter(|(_, m)| {
                matches!(m.state, MachineState::Idle | MachineState::Busy(_))
                    || m.retry_at.is_some()
            })
            .map(|(id, _)| id)
            .collect();
        for id in missing {
            let waiting_retry = self
                .state
                .machines
                .get(&id)
                .is_some_and(|m| m.retry_at.is_some());
            if waiting_retry {
                // A failed removal that in fact went through.
                self.forget_machine(id);
                self.state.stats.machines_removed += 1;
            } else {
                self.state.stats.machines_lost += 1;
                if let Some(MachineState::Busy(job)) = self.state.machines.get(&id).map(|m| m.state)
                {
                    self.abort_job(job, out);
                }
                self.start_removal(id, RemoveReason::Lost, out);
            }
        }
        // Unknown machines with our prefix: leftovers of a crash or of a foreign history. Remove them.
        for name in names {
            if !prefixes.iter().any(|p| name.starts_with(p.as_str()))
                || self.state.names.contains_key(&name)
            {
                continue;
            }
            let id = self.record_machine(
                runner,
                name.clone(),
                MachineState::Removing,
                Some(RemoveReason::Orphan),
            );
            self.state.stats.orphans_found += 1;
            out.push(Command::RemoveMachine {
                machine: id,
                runner,
                name,
                reason: RemoveReason::Orphan,
            });
        }
    }

    /// Moves a machine to Removing and asks for its removal.
    pub(crate) fn start_removal(
        &mut self,
        machine: MachineId,
        reason: RemoveReason,
        out: &mut Vec<Command>,
    ) {
        let Some(m) = self.state.machines.get(&machine) else {
            return;
        };
        if m.state == MachineState::Removing {
            return;
        }
        self.set_machine_state(machine, MachineState::Removing);
        let Some(m) = self.state.machines.get_mut(&machine) else {
            return;
        };
        m.remove_reason = Some(reason);
        out.push(Command::RemoveMachine {
            machine,
            runner: m.runner,
            name: m.name.clone(),
            reason,
        });
    }

    fn forget_machine(&mut self, machine: MachineId) {
        let Some(m) = self.state.machines.get(&machine) else {
            return;
        };
        let (runner, state, attempts, retry_at) =
            (m.runner, m.state, m.removal_attempts, m.retry_at);
        let counts = &mut self.state.runners[runner.index()].counts;
        dec_state(counts, state);
        if state == MachineState::Removing && attempts >= STUCK_AFTER {
            counts.stuck -= 1;
        }
        if let Some(at) = retry_at {
            self.state.removal_retries.remove(&(at, machine));
        }
        if let Some(m) = self.state.machines.remove(&machine) {
            self.state.names.remove(&m.name);
        }
    }

    /// Moves a machine to another state, keeping the counters; returns it for further updates.
    fn set_machine_state(&mut self, machine: MachineId, to: MachineState) -> Option<&mut Machine> {
        let seq = self.state.seq;
        let m = self.state.machines.get_mut(&machine)?;
        let from = m.state;
        m.state = to;
        m.changed_seq = seq;
        let counts = &mut self.state.runners[m.runner.index()].counts;
        dec_state(counts, from);
        inc_state(counts, to);
        Some(m)
    }

    /// A machine becomes idle now: its idle clock starts and it joins the idle index.
    fn make_idle(&mut self, machine: MachineId, now: Timestamp) {
        let Some(m) = self.set_machine_state(machine, MachineState::Idle) else {
            return;
        };
        m.last_used = now;
        let runner = m.runner.index();
        self.state.push_idle(runner, now, machine);
    }

    fn abort_job(&mut self, job: JobId, out: &mut Vec<Command>) {
        if let Some(j) = self.state.jobs.get_mut(&job)
            && !j.aborted
        {
            j.aborted = true;
            out.push(Command::AbortJob {
                job,
                reason: FailureReason::RunnerSystemFailure,
            });
        }
    }

    // ----- signals and lifecycle ----------------------------------------------------------------

    fn on_graceful(&mut self, out: &mut Vec<Command>) {
        if self.state.shutdown != Shutdown::None {
            return;
        }
        self.state.shutdown = Shutdown::Graceful {
            since: self.state.now,
        };
        self.cancel_requests(out);
    }

    fn on_forceful(&mut self, out: &mut Vec<Command>) {
        let now = self.state.now;
        if let Shutdown::Forceful { .. } = self.state.shutdown {
            // A second forceful signal: exit at once.
            if !self.state.exited {
                self.state.exited = true;
                out.push(Command::Exit { clean: false });
            }
            return;
        }
        self.state.shutdown = Shutdown::Forceful {
            since: now,
            deadline: now.after(self.config.shutdown_timeout),
        };
        self.cancel_requests(out);
        let jobs: Vec<(JobId, JobState)> = self
            .state
            .jobs
            .sorted()
            .into_iter()
            .map(|(id, j)| (id, j.state))
            .collect();
        for (job, state) in jobs {
            match state {
                JobState::Queued { .. } => self.fail_queued(job, FailCause::Shutdown, out),
                JobState::Running { .. } => self.abort_job(job, out),
            }
        }
    }

    fn cancel_requests(&mut self, out: &mut Vec<Command>) {
        for (i, r) in self.state.runners.iter().enumerate() {
            if r.counts.in_flight > 0 {
                out.push(Command::CancelRequests {
                    runner: RunnerId(i as u16),
                });
            }
        }
    }

    /// After a reload lowered MaxBuilds, idle machines that reached it go (busy ones after their job).
    fn remove_used_up_idle(&mut self, out: &mut Vec<Command>) {
        let used_up: Vec<MachineId> = self
            .state
            .machines
            .sorted()
            .into_iter()
            .filter(|(_, m)| m.state == MachineState::Idle)
            .filter(|(_, m)| {
                let max = self.state.runners[m.runner.index()]
                    .config
                    .policy()
                    .map_or(0, |p| p.max_builds);
                max > 0 && m.used_count >= max
            })
            .map(|(id, _)| id)
            .collect();
        for m in used_up {
            self.start_removal(m, RemoveReason::TooManyBuilds, out);
        }
    }

    fn cancel_requests_of_retired(&mut self, out: &mut Vec<Command>) {
        for (i, r) in self.state.runners.iter().enumerate() {
            if r.retired && r.counts.in_flight > 0 {
                out.push(Command::CancelRequests {
                    runner: RunnerId(i as u16),
                });
            }
        }
    }

    fn on_reload(&mut self, config: Config, out: &mut Vec<Command>) {
        let now = self.state.now;
        let mut seen = BTreeSet::new();
        for rc in &config.runners {
            seen.insert(rc.name.clone());
            match self
                .state
                .runners
                .iter()
                .position(|r| r.config.name == rc.name)
            {
                Some(i) => {
                    let r = &mut self.state.runners[i];
                    r.config = rc.clone();
                    r.retired = false;
                    r.policy.valid_until = Timestamp::ZERO; // re-evaluate periods now
                    r.reap_after = Timestamp::ZERO; // IdleTime may have changed
                }
                None if self.state.runners.len() < usize::from(u16::MAX) => {
                    self.state.runners.push(RunnerState::new(rc.clone(), now));
                }
                None => self.anomaly(AnomalyKind::UnknownRunner, self.state.runners.len() as u64),
            }
        }
        for r in &mut self.state.runners {
            if !seen.contains(&r.config.name) {
                r.retired = true;
            }
        }
        self.cancel_requests_of_retired(out);
        self.remove_used_up_idle(out);
        self.config_digest = std::sync::OnceLock::new();
        self.state.next_list_at = match (config.reconcile_interval, self.state.next_list_at) {
            (Some(i), Some(at)) => Some(at.min(now.after(i))),
            (Some(i), None) => Some(now.after(i)),
            (None, _) => None,
        };
        self.config = config;
    }

    fn on_resumed(&mut self, out: &mut Vec<Command>) {
        let now = self.state.now;
        // A new process: whatever shutdown the old one was in is over.
        self.state.shutdown = Shutdown::None;
        self.state.exited = false;
        // Requests in flight died with the old process.
        for r in &mut self.state.runners {
            self.state.totals.in_flight -= r.counts.in_flight;
            r.counts.in_flight = 0;
            r.next_poll_at = now;
        }
        for (id, m) in self.state.machines.sorted() {
            match m.state {
                MachineState::Creating => out.push(Command::CreateMachine {
                    machine: id,
                    runner: m.runner,
                    name: m.name.clone(),
                }),
                MachineState::Removing if m.retry_at.is_none() => {
                    out.push(Command::RemoveMachine {
                        machine: id,
                        runner: m.runner,
                        name: m.name.clone(),
                        reason: m.remove_reason.unwrap_or(RemoveReason::Lost),
                    })
                }
                _ => {}
            }
        }
        for (job, j) in self.state.jobs.sorted() {
            if let JobState::Running { machine, .. } = j.state {
                out.push(Command::ResumeJob {
                    job,
                    runner: j.runner,
                    machine,
                });
            }
        }
        self.request_lists(out);
    }

    pub(crate) fn request_lists(&mut self, out: &mut Vec<Command>) {
        let request = self.state.seq;
        for (i, r) in self.state.runners.iter().enumerate() {
            if matches!(r.config.executor, Executor::Pool(_)) {
                let runner = RunnerId(i as u16);
                out.push(Command::ListMachines {
                    runner,
                    request,
                    prefixes: self.state.machine_prefixes(runner),
                });
            }
        }
    }

    pub(crate) fn anomaly(&mut self, kind: AnomalyKind, subject: u64) {
        self.state.anomalies.record(self.state.now, kind, subject);
    }

    pub(crate) fn fail_job_deadline(&mut self, job: JobId, out: &mut Vec<Command>) {
        self.fail_queued(job, FailCause::Timeout, out);
    }

    pub(crate) fn fail_all_queued(&mut self, out: &mut Vec<Command>) {
        if self.state.totals.queued == 0 {
            return;
        }
        let jobs: Vec<JobId> = (0..self.state.runners.len())
            .flat_map(|r| self.state.queued_jobs(r))
            .collect();
        for job in jobs {
            self.fail_queued(job, FailCause::Shutdown, out);
        }
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

    /// The digest of format-1 journals: xxh3 of the whole serialized core, indexes included.
    pub fn digest_v1(&self) -> u64 {
        hash_of(self)
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
        }
    }
}

fn inc_state(counts: &mut Counts, state: MachineState) {
    match state {
        MachineState::Creating => counts.creating += 1,
        MachineState::Idle => counts.idle += 1,
        MachineState::Busy(_) => counts.busy += 1,
        MachineState::Removing => counts.removing += 1,
    }
}

fn dec_state(counts: &mut Counts, state: MachineState) {
    match state {
        MachineState::Creating => counts.creating -= 1,
        MachineState::Idle => counts.idle -= 1,
        MachineState::Busy(_) => counts.busy -= 1,
        MachineState::Removing => counts.removing -= 1,
    }
}

/// `runner-<short token>-` + `MachineName` with `%s` → `<unix seconds>-<8 hex digits>`, as GitLab names
/// machines. The hex digits come from the configured seed, so names are reproducible in replays.
pub fn machine_name(runner: &RunnerConfig, seed: u64, id: MachineId, now: Timestamp) -> String {
    let pattern = runner.policy().map_or("%s", |p| p.machine_name.as_str());
    let suffix = format!("{}-{:08x}", now.0 / 1000, splitmix64(seed ^ id.0) as u32);
    format!(
        "{}{}",
        runner.machine_prefix(),
        pattern.replacen("%s", &suffix, 1)
    )
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// Exponential backoff after creation failures, longer for quota and fatal errors.
pub fn creation_backoff(failure: CreationFailure, failures: u32) -> Duration {
    let (base, cap) = match failure {
        CreationFailure::Retryable => (Duration::from_secs(5), Duration::from_secs(300)),
        CreationFailure::Quota => (Duration::from_secs(30), Duration::from_secs(900)),
        CreationFailure::Fatal => (Duration::from_secs(300), Duration::from_secs(1800)),
    };
    let exp = failures.saturating_sub(1).min(16);
    base.saturating_mul(1 << exp).min(cap)
}

/// Backoff between removal attempts: 5 s doubling up to 5 min (GitLab waits a flat 30 s).
pub fn removal_backoff(attempts: u32) -> Duration {
    let exp = attempts.saturating_sub(1).min(16);
    Duration::from_secs(5)
        .saturating_mul(1 << exp)
        .min(Duration::from_secs(300))
}

/// How long a job may wait for a machine: its own timeout, or GitLab's default when it has none.
fn job_timeout(info: &JobInfo) -> Duration {
    if info.timeout_ms == 0 {
        DEFAULT_JOB_TIMEOUT
    } else {
        Duration::from_millis(info.timeout_ms)
    }
}
