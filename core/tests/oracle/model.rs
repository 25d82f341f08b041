//! The reference model: GitLab Runner's docker+machine autoscaling as
//! `shared/reference/gitlab-autoscale.md` describes it (§1.2–§1.7), plus drover's documented
//! differences (README, "Compatibility with GitLab Runner"), each marked `DEVIATION`.
//!
//! Written to be obviously right rather than fast: no counters, no indexes, no caches. Every
//! decision recounts the fleet from the list of machine records, and the period in force is looked
//! up afresh at every step.

use std::collections::{BTreeMap, BTreeSet};

use drover_core::period::active_period;
use drover_core::{
    Config, CreationFailure, FailCause, FailureReason, JobId, MachineId, PolicyValues,
    RemoveReason, RunnerConfig, RunnerId, Timestamp,
};
use std::time::Duration;

/// What one step decided, per runner: the part of a core step the oracle vouches for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decisions {
    pub creates: BTreeMap<RunnerId, u32>,
    pub removes: BTreeSet<(MachineId, RemoveReason)>,
    pub requests: BTreeMap<RunnerId, u32>,
    pub starts: BTreeSet<(JobId, MachineId)>,
    /// Jobs reported failed without starting: the reason GitLab gets, and why.
    pub fails: BTreeSet<(JobId, FailureReason, FailCause)>,
    pub aborts: BTreeSet<JobId>,
    /// Running jobs GitLab canceled: their script is stopped (once).
    pub cancels: BTreeSet<JobId>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum MState {
    Creating,
    Idle,
    Busy(JobId),
    Removing,
    /// A machine of a runner with job slots running at least one job (which ones: the jobs say).
    InUse,
}

#[derive(Clone, Debug)]
pub struct OMachine {
    pub id: MachineId,
    pub runner: RunnerId,
    pub state: MState,
    pub used_count: u32,
    /// Start of the idle clock (creation or end of the last job), and the order in which machines
    /// became idle at the same instant.
    pub last_used: (Timestamp, u64),
    pub failed_removals: u32,
    /// A failed removal is retried at this time.
    pub retry_at: Option<Timestamp>,
    pub reason: Option<RemoveReason>,
}

#[derive(Clone, Debug)]
pub struct OJob {
    pub runner: RunnerId,
    pub received: u64,
    pub deadline: Timestamp,
    pub running_on: Option<Option<MachineId>>,
    pub aborted: bool,
    pub cancel_requested: bool,
}

#[derive(Clone, Debug, Default)]
pub struct ORunner {
    pub in_flight: u32,
    pub next_poll: Timestamp,
    pub create_failures: u32,
    pub blocked_until: Timestamp,
    /// Creation failures the oldest waiting job has seen (GitLab's Prepare retries).
    pub front_failures: u32,
    /// Unhealthy job requests in a row (a `403`, no usable answer).
    pub unhealthy: u32,
}

pub struct Oracle {
    pub config: Config,
    pub now: Timestamp,
    pub machines: Vec<OMachine>,
    pub jobs: BTreeMap<JobId, OJob>,
    pub runners: Vec<ORunner>,
    pub(crate) next_machine: u64,
    idle_order: u64,
    arrivals: u64,
    /// Machines that came up, and creations that failed.
    pub machines_up: u64,
    pub creation_failures: u64,
    /// Failed removal attempts, and machines given up after MaxRemovalAttempts.
    pub removal_failures: u64,
    pub abandoned: u64,
    /// Machines reported lost.
    pub lost: u64,
    /// A graceful shutdown (SIGQUIT) is under way.
    pub graceful: bool,
}

/// DEVIATION (README): creation failures back off exponentially per runner, 5 s doubling to 5 min;
/// quota errors 30 s to 15 min; fatal errors 5 min to 30 min.
fn creation_backoff(failure: CreationFailure, failures: u32) -> Duration {
    let (base, cap) = match failure {
        CreationFailure::Retryable => (5, 300),
        CreationFailure::Quota => (30, 900),
        CreationFailure::Fatal => (300, 1800),
    };
    let mut secs: u64 = base;
    for _ in 1..failures {
        secs = (secs * 2).min(cap);
    }
    Duration::from_secs(secs)
}

/// DEVIATION (README): failed removals are retried after 5 s, doubling to 5 min (GitLab: 30 s flat).
fn removal_backoff(attempts: u32) -> Duration {
    let mut secs: u64 = 5;
    for _ in 1..attempts {
        secs = (secs * 2).min(300);
    }
    Duration::from_secs(secs)
}

/// GitLab's Prepare retries: creation failures a waiting job sees before it fails.
const PREPARE_ATTEMPTS: u32 = 3;
/// Failed removals after which a machine stops counting against `limit` (DEVIATION: GitLab counts
/// stuck removals forever, issue 26448).
const STUCK_AFTER: u32 = 3;

impl Oracle {
    pub fn new(config: Config, now: Timestamp) -> Oracle {
        let runners = vec![
            ORunner {
                next_poll: now,
                ..ORunner::default()
            };
            config.runners.len()
        ];
        Oracle {
            config,
            now,
            machines: Vec::new(),
            jobs: BTreeMap::new(),
            runners,
            next_machine: 1,
            idle_order: 0,
            arrivals: 0,
            machines_up: 0,
            creation_failures: 0,
            removal_failures: 0,
            abandoned: 0,
            lost: 0,
            graceful: false,
        }
    }

    pub(crate) fn rc(&self, r: RunnerId) -> &RunnerConfig {
        &self.config.runners[r.index()]
    }

    pub(crate) fn machine(&mut self, id: MachineId) -> Option<&mut OMachine> {
        self.machines.iter_mut().find(|m| m.id == id)
    }

    /// The values in force: the last matching period's, else the base ones (§1.7).
    pub fn values(&self, r: RunnerId) -> PolicyValues {
        let p = self.rc(r).policy().expect("the oracle models pool runners");
        active_period(&p.periods, self.now).map_or(p.base, |i| p.periods[i].values)
    }

    pub(crate) fn count(&self, r: RunnerId, f: impl Fn(&OMachine) -> bool) -> u32 {
        self.machines
            .iter()
            .filter(|m| m.runner == r && f(m))
            .count() as u32
    }

    fn idle(&self, r: RunnerId) -> u32 {
        self.count(r, |m| m.state == MState::Idle)
    }
    pub(crate) fn creating(&self, r: RunnerId) -> u32 {
        self.count(r, |m| m.state == MState::Creating)
    }
    fn busy(&self, r: RunnerId) -> u32 {
        self.count(r, |m| matches!(m.state, MState::Busy(_)))
    }
    /// `Total` of §1.2: every state, removals included (DEVIATION: but not stuck ones).
    pub(crate) fn total(&self, r: RunnerId) -> u32 {
        self.count(r, |m| {
            m.state != MState::Removing || m.failed_removals < STUCK_AFTER
        })
    }
    pub(crate) fn queued(&self, r: RunnerId) -> Vec<JobId> {
        let mut q: Vec<(u64, JobId)> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.runner == r && j.running_on.is_none())
            .map(|(id, j)| (j.received, *id))
            .collect();
        q.sort();
        q.into_iter().map(|(_, id)| id).collect()
    }
    pub(crate) fn running(&self, r: Option<RunnerId>) -> u32 {
        self.jobs
            .values()
            .filter(|j| j.running_on.is_some() && r.is_none_or(|r| j.runner == r))
            .count() as u32
    }
    /// Idle machines, least recently used first.
    pub(crate) fn idle_lru(&self, r: RunnerId) -> Vec<MachineId> {
        let mut v: Vec<_> = self
            .machines
            .iter()
            .filter(|m| m.runner == r && m.state == MState::Idle)
            .map(|m| (m.last_used, m.id))
            .collect();
        v.sort();
        v.into_iter().map(|(_, id)| id).collect()
    }

    pub(crate) fn remove(&mut self, id: MachineId, reason: RemoveReason, d: &mut Decisions) {
        if let Some(m) = self.machine(id)
            && m.state != MState::Removing
        {
            m.state = MState::Removing;
            m.reason = Some(reason);
            d.removes.insert((id, reason));
        }
    }

    pub(crate) fn make_idle(&mut self, id: MachineId) {
        self.idle_order += 1;
        let (now, order) = (self.now, self.idle_order);
        if let Some(m) = self.machine(id) {
            m.state = MState::Idle;
            m.last_used = (now, order);
        }
    }

    /// A job that never started is reported: canceled if GitLab canceled it, else a system failure.
    fn fail_job(&mut self, job: JobId, cause: FailCause, d: &mut Decisions) {
        if self.jobs.remove(&job).is_some() {
            let reason = match cause {
                FailCause::Canceled => FailureReason::JobCanceled,
                _ => FailureReason::RunnerSystemFailure,
            };
            d.fails.insert((job, reason, cause));
        }
    }

    fn abort(&mut self, job: JobId, d: &mut Decisions) {
        if let Some(j) = self.jobs.get_mut(&job)
            && !j.aborted
        {
            j.aborted = true;
            d.aborts.insert(job);
        }
    }

    /// The jobs running on a machine, from the jobs' own records.
    pub(crate) fn jobs_on(&self, id: MachineId) -> Vec<JobId> {
        self.jobs
            .iter()
            .filter(|(_, j)| j.running_on == Some(Some(id)))
            .map(|(job, _)| *job)
            .collect()
    }

    // ----- events ----------------------------------------------------------------------------

    pub fn job_received(&mut self, r: RunnerId, job: JobId, timeout_ms: u64) {
        self.runners[r.index()].in_flight -= 1;
        self.runners[r.index()].unhealthy = 0;
        self.arrivals += 1;
        let timeout = if timeout_ms == 0 {
            7_200_000
        } else {
            timeout_ms
        };
        self.jobs.insert(
            job,
            OJob {
                runner: r,
                received: self.arrivals,
                deadline: Timestamp(self.now.0 + timeout),
                running_on: None,
                aborted: false,
                cancel_requested: false,
            },
        );
    }

    /// An empty answer: check_interval.
    pub fn request_empty(&mut self, r: RunnerId) {
        self.runners[r.index()].unhealthy = 0;
        let interval = self.config.check_interval.as_millis() as u64;
        self.request_paused(r, interval);
    }

    /// A failed request: check_interval, or the server's Retry-After, or, from the third unhealthy
    /// one in a row, a minute doubling with each further one up to ten, whichever is longest.
    pub fn request_failed(&mut self, r: RunnerId, retry_after_ms: Option<u64>, unhealthy: bool) {
        let o = &mut self.runners[r.index()];
        if unhealthy {
            o.unhealthy += 1;
        }
        let backoff = match o.unhealthy {
            0..=2 => 0,
            n => (60_000u64 << (n - 3).min(4)).min(600_000),
        };
        let interval = self.config.check_interval.as_millis() as u64;
        let pause = interval.max(retry_after_ms.unwrap_or(0)).max(backoff);
        self.request_paused(r, pause);
    }

    /// An empty answer held `held_ms`: a long poll's, or one held as long as a pause, is followed
    /// at once; a fast one waits check_interval.
    pub fn request_answered(&mut self, r: RunnerId, held_ms: u64, long_poll: bool) {
        self.runners[r.index()].unhealthy = 0;
        let interval = self.config.check_interval.as_millis() as u64;
        let pause = if long_poll || held_ms >= interval {
            0
        } else {
            interval
        };
        self.request_paused(r, pause);
    }

    fn request_paused(&mut self, r: RunnerId, pause: u64) {
        let o = &mut self.runners[r.index()];
        o.in_flight -= 1;
        o.next_poll = o.next_poll.max(Timestamp(self.now.0 + pause));
    }

    pub fn machine_created(&mut self, id: MachineId) {
        let Some(m) = self.machine(id) else { return };
        if m.state == MState::Creating {
            let r = m.runner;
            self.machines_up += 1;
            self.make_idle(id);
            self.runners[r.index()].create_failures = 0;
        }
    }

    /// §1.6: a failed creation is removed. DEVIATION: the runner backs off exponentially, and a
    /// fatal failure fails every waiting job at once.
    pub fn creation_failed(&mut self, id: MachineId, failure: CreationFailure, d: &mut Decisions) {
        let Some(m) = self.machine(id) else { return };
        if m.state != MState::Creating {
            return;
        }
        let r = m.runner;
        self.creation_failures += 1;
        self.remove(id, RemoveReason::CreationFailed, d);
        let now = self.now;
        let o = &mut self.runners[r.index()];
        o.create_failures += 1;
        o.blocked_until = now.after(creation_backoff(failure, o.create_failures));
        let doomed = match failure {
            CreationFailure::Fatal => self.queued(r),
            _ => {
                o.front_failures += 1;
                if o.front_failures >= PREPARE_ATTEMPTS {
                    o.front_failures = 0;
                    self.queued(r).into_iter().take(1).collect()
                } else {
                    Vec::new()
                }
            }
        };
        for job in doomed {
            self.fail_job(job, FailCause::CreationFailed, d);
        }
    }

    /// The provider says the machine is gone: asked for, or vanished under a job (which is aborted).
    pub fn machine_removed(&mut self, id: MachineId, d: &mut Decisions) {
        match self.machine(id).map(|m| m.state) {
            Some(MState::Busy(job)) => self.abort(job, d),
            Some(MState::InUse) => {
                for job in self.jobs_on(id) {
                    self.abort(job, d);
                }
            }
            _ => {}
        }
        self.machines.retain(|m| m.id != id);
    }

    /// §1.6: removals are retried. DEVIATION: with a doubling backoff, up to MaxRemovalAttempts.
    pub fn removal_failed(&mut self, id: MachineId) {
        let now = self.now;
        let Some(m) = self.machine(id) else { return };
        let r = m.runner;
        m.failed_removals += 1;
        let attempts = m.failed_removals;
        self.removal_failures += 1;
        let max = self
            .rc(r)
            .policy()
            .map_or(30, |p| p.max_removal_attempts)
            .max(1);
        if attempts >= max {
            self.abandoned += 1;
            self.machines.retain(|m| m.id != id);
        } else if let Some(m) = self.machine(id) {
            m.retry_at = Some(now.after(removal_backoff(attempts)));
        }
    }

    /// A machine died: its job is aborted and it is removed.
    pub fn machine_lost(&mut self, id: MachineId, d: &mut Decisions) {
        let Some(state) = self.machine(id).map(|m| m.state) else {
            return;
        };
        if state != MState::Removing {
            self.lost += 1;
        }
        if let MState::Busy(job) = state {
            self.abort(job, d);
        }
        if state == MState::InUse {
            for job in self.jobs_on(id) {
                self.abort(job, d);
            }
        }
        self.remove(id, RemoveReason::Lost, d);
    }

    /// §1.5 Release: MaxBuilds reached → removed, else idle again.
    pub fn job_finished(&mut self, job: JobId, d: &mut Decisions) {
        let Some(j) = self.jobs.remove(&job) else {
            return;
        };
        let Some(Some(mid)) = j.running_on else {
            return;
        };
        let max_builds = self.rc(j.runner).policy().map_or(0, |p| p.max_builds);
        let others = self.jobs_on(mid);
        let Some(m) = self.machine(mid) else { return };
        match m.state {
            MState::Busy(j) if j == job => {}
            // A machine with slots frees one; its last job ends as a docker+machine job does.
            MState::InUse if !others.is_empty() => return,
            MState::InUse => {}
            _ => return,
        }
        if max_builds > 0 && m.used_count >= max_builds {
            self.remove(mid, RemoveReason::TooManyBuilds, d);
        } else {
            self.make_idle(mid);
        }
    }

    /// GitLab cancels a job: a waiting one is reported canceled, a running one is asked to stop
    /// (once; not when it is already being aborted).
    pub fn job_canceled(&mut self, job: JobId, d: &mut Decisions) {
        let Some(j) = self.jobs.get_mut(&job) else {
            return;
        };
        if j.running_on.is_none() {
            self.fail_job(job, FailCause::Canceled, d);
        } else if !j.cancel_requested && !j.aborted {
            j.cancel_requested = true;
            d.cancels.insert(job);
        }
    }

    /// A new config for the same runners; machines past a lowered MaxBuilds go at once.
    pub fn reload(&mut self, config: Config, d: &mut Decisions) {
        self.config = config;
        let used_up: Vec<MachineId> = self
            .machines
            .iter()
            .filter(|m| m.state == MState::Idle)
            .filter(|m| {
                let max = self.rc(m.runner).policy().map_or(0, |p| p.max_builds);
                max > 0 && m.used_count >= max
            })
            .map(|m| m.id)
            .collect();
        for id in used_up {
            self.remove(id, RemoveReason::TooManyBuilds, d);
        }
    }

    /// §3 SIGQUIT: no more job requests, no pre-creation; waiting jobs still get machines. Idle
    /// machines stay for the next start (§1.8), or all go at once with `[machine.shutdown_drain]`.
    pub fn graceful_shutdown(&mut self) {
        self.graceful = true;
    }

    // ----- the pass after every event ---------------------------------------------------------

    /// DEVIATION: drover scales after every event, not only inside a job request (§1.1).
    pub fn pass(&mut self, d: &mut Decisions) {
        let now = self.now;
        // Failed removals are retried when due, for the same reason.
        for m in &mut self.machines {
            if m.retry_at.is_some_and(|t| t <= now) {
                m.retry_at = None;
                d.removes
                    .insert((m.id, m.reason.unwrap_or(RemoveReason::Lost)));
            }
        }
        // Waiting jobs past their timeout fail.
        let expired: Vec<JobId> = self
            .jobs
            .iter()
            .filter(|(_, j)| j.running_on.is_none() && j.deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        for job in expired {
            self.fail_job(job, FailCause::Timeout, d);
        }
        for i in 0..self.config.runners.len() {
            self.pass_runner(RunnerId(i as u16), d);
        }
    }

    fn pass_runner(&mut self, r: RunnerId, d: &mut Decisions) {
        if self.rc(r).slot_policy().is_some() {
            return self.pass_slots(r, d);
        }
        let now = self.now;
        let rc = self.rc(r).clone();
        let policy = rc.policy().expect("pool runner").clone();
        let v = self.values(r);
        let concurrent = self.config.concurrent.max(1);

        // Dispatch, §1.4 step 3 / §1.5: the oldest waiting job takes a free machine.
        // DEVIATION: the most recently used idle machine, not the newest created.
        for job in self.queued(r) {
            let room = self.running(None) < concurrent
                && (rc.limit == 0 || self.running(Some(r)) < rc.limit);
            let Some(&mid) = self.idle_lru(r).last() else {
                break;
            };
            if !room {
                break;
            }
            let m = self.machine(mid).expect("idle machine");
            m.state = MState::Busy(job);
            m.used_count += 1;
            let j = self.jobs.get_mut(&job).expect("queued job");
            j.running_on = Some(Some(mid));
            self.runners[r.index()].front_failures = 0;
            d.starts.insert((job, mid));
        }

        // `limit` lowered below the fleet: idle machines above it go, least recently used first.
        // DEVIATION (issue 9 bug 1): machines already being removed are not part of the excess.
        let live = self.count(r, |m| m.state != MState::Removing);
        if rc.limit > 0 && live > rc.limit {
            for mid in self
                .idle_lru(r)
                .into_iter()
                .take((live - rc.limit) as usize)
            {
                self.remove(mid, RemoveReason::TooManyMachines, d);
            }
        }

        // §1.4 step 1: idle machines past IdleTime go while the idle target is exceeded.
        // DEVIATION: least recently used first; machines still creating do not make a ready one
        // surplus; waiting jobs raise the target; an idle machine held for a request in flight
        // (GitLab's Acquired) stays.
        let gated = v.idle_count > 0;
        let drain = self.graceful && self.config.drain_machines_on_shutdown;
        let target = if self.graceful {
            0
        } else {
            v.idle_target(self.busy(r))
        };
        let want = target + self.queued(r).len() as u32;
        let held = if gated && !drain {
            self.runners[r.index()].in_flight
        } else {
            0
        };
        for mid in self.idle_lru(r) {
            let idle = self.idle(r);
            if (self.graceful && !drain) || idle <= want || idle <= held {
                break;
            }
            let m = self.machines.iter().find(|m| m.id == mid).expect("idle");
            if !drain && now.0 <= m.last_used.0.0.saturating_add(v.idle_time_ms) {
                break;
            }
            let reason = if drain {
                RemoveReason::Shutdown
            } else {
                RemoveReason::TooManyIdle
            };
            self.remove(mid, reason, d);
        }

        // §1.4 step 4: job requests. A request holds a worker slot (`concurrent`) and a job slot
        // (`limit`) until its job ends; `request_concurrency` caps requests in flight.
        loop {
            let o = &self.runners[r.index()];
            let queued = self.queued(r).len() as u32;
            let mine = self.running(Some(r)) + queued + o.in_flight;
            let all = self.running(None)
                + self
                    .jobs
                    .values()
                    .filter(|j| j.running_on.is_none())
                    .count() as u32
                + self.runners.iter().map(|o| o.in_flight).sum::<u32>();
            let slot = o.in_flight < rc.request_concurrency.max(1)
                && (rc.limit == 0 || mine < rc.limit)
                && all < concurrent;
            if !slot || now < o.next_poll || self.graceful {
                break;
            }
            let committed = queued + o.in_flight;
            let capacity = if self.idle(r) > committed {
                // An idle machine can be acquired for it.
                true
            } else if gated {
                // IdleCount > 0: "no free machines that can process builds".
                false
            } else {
                // On demand (canCreateOnDemand): room to create its machine under limit and
                // MaxGrowthRate. DEVIATION: counting the machines other waiting jobs need, and
                // not while creation backs off (issue 9 bug 3).
                let supply = self.idle(r) + self.creating(r);
                let deficit = (committed + 1).saturating_sub(supply);
                (deficit == 0 || now >= o.blocked_until)
                    && (rc.limit == 0 || self.total(r) + deficit <= rc.limit)
                    && (policy.max_growth_rate == 0
                        || self.creating(r) + deficit <= policy.max_growth_rate)
            };
            if !capacity {
                break;
            }
            self.runners[r.index()].in_flight += 1;
            *d.requests.entry(r).or_default() += 1;
        }

        // §1.4 step 2: `while canCreate: create; Creating++`. DEVIATION: waiting jobs count
        // toward the target (GitLab creates their machines in Use), and creation backs off.
        if now < self.runners[r.index()].blocked_until {
            return;
        }
        loop {
            let creating = self.creating(r);
            let available = creating + self.idle(r);
            let target = if self.graceful {
                0
            } else {
                v.idle_target(self.busy(r))
            };
            let want = target + self.queued(r).len() as u32;
            // canCreate of §1.4: false at MaxGrowthRate or at `limit`, else while idle is missing.
            let at_growth = policy.max_growth_rate > 0 && creating >= policy.max_growth_rate;
            let at_limit = rc.limit > 0 && self.total(r) >= rc.limit;
            let can_create = !at_growth && !at_limit && available < want;
            if !can_create {
                break;
            }
            let id = MachineId(self.next_machine);
            self.next_machine += 1;
            self.machines.push(OMachine {
                id,
                runner: r,
                state: MState::Creating,
                used_count: 0,
                last_used: (now, 0),
                failed_removals: 0,
                retry_at: None,
                reason: None,
            });
            *d.creates.entry(r).or_default() += 1;
        }
    }
}
