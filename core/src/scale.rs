//! Reconciliation, run after every event: timers, dispatch, job requests, reaping, creation, exit.
//!
//! Unlike GitLab, which scales only inside its job-request path (and so stops reaping and pre-creating
//! while `limit` is reached), drover reconciles every runner after every event and tick. Each pass is
//! O(runners · log n): counters are incremental and idle expiry looks only at the least recently used
//! idle machine.

use crate::command::{Command, RemoveReason};
use crate::config::Executor;
use crate::ids::RunnerId;
use crate::period::{active_period, next_change};
use crate::scheduler::Core;
use crate::state::Shutdown;
use crate::time::{Timestamp, earliest};

impl Core {
    /// Brings the fleet toward its targets and returns when to wake next.
    pub(crate) fn reconcile(&mut self, out: &mut Vec<Command>) -> Option<Timestamp> {
        let now = self.state.now;
        let mut wake = None;

        // Removal retries that are due.
        while let Some(&(at, machine)) = self.state.removal_retries.first() {
            if at > now {
                wake = earliest(wake, Some(at));
                break;
            }
            self.state.removal_retries.pop_first();
            if let Some(m) = self.state.machines.get_mut(&machine) {
                m.retry_at = None;
                let reason = m.remove_reason.unwrap_or(RemoveReason::Lost);
                out.push(Command::RemoveMachine {
                    machine,
                    runner: m.runner,
                    name: m.name.clone(),
                    reason,
                });
            }
        }

        // Jobs that waited for a machine longer than their timeout.
        let (expired, next_deadline) = self.state.expired_jobs(now);
        for job in expired {
            self.fail_job_deadline(job, out);
        }
        wake = earliest(wake, next_deadline);

        // Periodic reconciliation with the providers.
        if let (Some(at), Some(interval)) =
            (self.state.next_list_at, self.config.reconcile_interval)
        {
            if now >= at {
                self.request_lists(out);
                self.state.next_list_at = Some(now.after(interval));
            }
            wake = earliest(wake, self.state.next_list_at);
        }

        if let Shutdown::Forceful { .. } = self.state.shutdown {
            self.fail_all_queued(out);
        }

        for i in 0..self.state.runners.len() {
            let runner = RunnerId(i as u16);
            let w = match self.state.runners[i].config.executor {
                Executor::Pool(_) => self.reconcile_pool(runner, out),
                Executor::Direct => self.reconcile_direct(runner, out),
                Executor::Slots(_) => self.reconcile_slots(runner, out),
            };
            wake = earliest(wake, w);
        }

        earliest(wake, self.check_exit(out))
    }

    pub(crate) fn can_start(&self, runner: RunnerId) -> bool {
        let r = &self.state.runners[runner.index()];
        self.state.totals.running < self.config.concurrent.max(1)
            && (r.config.limit == 0 || r.counts.running < r.config.limit)
    }

    /// Whether a job slot is free for one more request (`limit` and `concurrent` count running, queued
    /// and requested jobs).
    fn has_request_slot(&self, runner: RunnerId) -> bool {
        let r = &self.state.runners[runner.index()];
        let c = &r.counts;
        let t = &self.state.totals;
        r.counts.in_flight < r.config.request_concurrency.max(1)
            && (r.config.limit == 0 || c.running + c.queued + c.in_flight < r.config.limit)
            && t.running + t.queued + t.in_flight < self.config.concurrent.max(1)
    }

    pub(crate) fn may_request(&self, runner: RunnerId) -> bool {
        let r = &self.state.runners[runner.index()];
        self.state.shutdown == Shutdown::None && !r.retired && !self.state.exited
    }

    fn reconcile_direct(&mut self, runner: RunnerId, out: &mut Vec<Command>) -> Option<Timestamp> {
        // Machines left from before a reload turned this runner into a plain docker runner.
        while let Some(m) = self.state.pop_lru(runner.index()) {
            self.start_removal(m, RemoveReason::ConfigChanged, out);
        }
        while self.state.runners[runner.index()].counts.queued > 0 && self.can_start(runner) {
            if !self.start_job(runner, None, out) {
                break;
            }
        }
        if !self.may_request(runner) {
            return None;
        }
        self.issue_requests(runner, out, |_| true)
    }

    /// Emits job requests while a slot is free and `has_capacity` holds; returns the next poll time
    /// if the only thing in the way is the polling interval.
    pub(crate) fn issue_requests(
        &mut self,
        runner: RunnerId,
        out: &mut Vec<Command>,
        has_capacity: impl Fn(&Core) -> bool,
    ) -> Option<Timestamp> {
        let now = self.state.now;
        while self.has_request_slot(runner) && has_capacity(self) {
            let r = &mut self.state.runners[runner.index()];
            if now < r.next_poll_at {
                return Some(r.next_poll_at);
            }
            r.counts.in_flight += 1;
            self.state.totals.in_flight += 1;
            out.push(Command::RequestJob { runner });
        }
        None
    }

    pub(crate) fn refresh_policy(&mut self, runner: RunnerId) -> Option<Timestamp> {
        let now = self.state.now;
        let r = &mut self.state.runners[runner.index()];
        let policy = r.config.policy()?;
        if policy.periods.is_empty() {
            r.policy.values = policy.base;
            r.policy.period = None;
            r.policy.valid_until = Timestamp::MAX;
            return None;
        }
        if now >= r.policy.valid_until {
            let period = active_period(&policy.periods, now);
            r.policy.period = period;
            r.policy.values = period.map_or(policy.base, |i| policy.periods[i].values);
            r.policy.valid_until = next_change(&policy.periods, now).unwrap_or(Timestamp::MAX);
            r.reap_after = Timestamp::ZERO;
        }
        Some(r.policy.valid_until)
    }

    fn reconcile_pool(&mut self, runner: RunnerId, out: &mut Vec<Command>) -> Option<Timestamp> {
        let now = self.state.now;
        let mut wake = self.refresh_policy(runner);
        let ri = runner.index();

        // Dispatch: the oldest waiting job takes the most recently used idle machine.
        while self.state.runners[ri].counts.queued > 0 && self.can_start(runner) {
            let Some(machine) = self.state.pop_mru(ri) else {
                break;
            };
            self.start_job(runner, Some(machine), out);
        }

        let r = &self.state.runners[ri];
        let Executor::Pool(policy) = &r.config.executor else {
            return wake;
        };
        let values = r.policy.values;
        let (max_growth, limit) = (policy.max_growth_rate, r.config.limit);
        let shutdown = self.state.shutdown;
        let retired = r.retired;
        // With IdleCount > 0 a job is requested only when an idle machine can take it (GitLab's gate).
        let gated = values.idle_count > 0;

        // Targets. A graceful shutdown stops pre-creating; a forceful one stops creating at all.
        let r = &self.state.runners[ri];
        let c = r.counts.clone();
        let target = if retired || shutdown != Shutdown::None {
            0
        } else {
            values.idle_target(c.busy)
        };
        let want = target + c.queued;

        // More machines than `limit` (a reload lowered it): remove idle ones now, least recently used
        // first. Machines already being removed are on their way out: counting them here would take
        // the idle pool down with them (they still count against `limit` when creating).
        let live = c.creating + c.idle + c.busy;
        if limit > 0 && live > limit {
            let excess = live - limit;
            for _ in 0..excess {
                let Some(m) = self.state.pop_lru(ri) else {
                    break;
                };
                self.start_removal(m, RemoveReason::TooManyMachines, out);
            }
        }

        // Surplus idle machines past IdleTime go, least recently used first. While shutting down
        // gracefully, idle machines stay for the next start unless draining was asked for.
        let drain_all = retired
            || (matches!(shutdown, Shutdown::Graceful { .. })
                && self.config.drain_machines_on_shutdown);
        let reap = drain_all || shutdown == Shutdown::None;
        if reap {
            // Draining removes at once; otherwise a machine goes once it has been idle longer than
            // IdleTime (strictly, as GitLab: with IdleTime 0 not in the instant it was freed).
            let (reason, idle_time) = if retired {
                (RemoveReason::RunnerRemoved, None)
            } else if drain_all {
                (RemoveReason::Shutdown, None)
            } else {
                (RemoveReason::TooManyIdle, Some(values.idle_time_ms))
            };
            let c = &self.state.runners[ri].counts;
            // Requests in flight hold idle machines for the job they may bring (GitLab's Acquired state);
            // a drain does not wait for them.
            let reserved = if gated && !drain_all { c.in_flight } else { 0 };
            // Only idle machines beyond the target are surplus. Unlike GitLab, machines still creating do
            // not make a ready machine surplus: that would trade it for one that is not ready yet.
            let mut surplus = c.idle.saturating_sub(want);
            let mut idle = c.idle;
            let reap_after = self.state.runners[ri].reap_after;
            if idle_time.is_some() && now < reap_after && surplus > 0 && idle > reserved {
                // The least recently used machine was not due at the last look; none is before then.
                wake = earliest(wake, Some(reap_after));
                surplus = 0;
            }
            while surplus > 0 && idle > reserved {
                let Some((last_used, m)) = self.state.peek_lru(ri) else {
                    break;
                };
                if let Some(idle_time) = idle_time {
                    let expires = Timestamp(last_used.0.saturating_add(idle_time));
                    if now <= expires {
                        let due = Timestamp(expires.0.saturating_add(1));
                        self.state.runners[ri].reap_after = due;
                        wake = earliest(wake, Some(due));
                        break;
                    }
                }
                self.state.pop_lru(ri);
                self.start_removal(m, reason, out);
                surplus -= 1;
                idle -= 1;
            }
        }

        // Job requests, after reaping: a machine that expired is not offered for a new job.
        if self.may_request(runner) {
            // While creation backs off, a job that needs a new machine cannot get one: leave it in
            // GitLab's queue for other runners instead of taking it only to fail it.
            let backing_off = now < self.state.runners[ri].create_blocked_until;
            if backing_off && !gated {
                wake = earliest(wake, Some(self.state.runners[ri].create_blocked_until));
            }
            let w = self.issue_requests(runner, out, |core| {
                let r = &core.state.runners[ri];
                let c = &r.counts;
                let committed = c.queued + c.in_flight;
                if c.idle > committed {
                    return true;
                }
                if gated {
                    return false;
                }
                // On demand: there must be room to create a machine for it.
                let deficit = (committed + 1).saturating_sub(c.supply());
                (deficit == 0 || !backing_off)
                    && (limit == 0 || c.counted() + deficit <= limit)
                    && (max_growth == 0 || c.creating + deficit <= max_growth)
            });
            wake = earliest(wake, w);
        }

        // Creation, throttled by limit, MaxGrowthRate and the failure backoff.
        if !matches!(shutdown, Shutdown::Forceful { .. }) {
            let need = want.saturating_sub(self.state.runners[ri].counts.supply());
            let blocked = self.create_capped(runner, need, limit, max_growth, now, out);
            wake = earliest(wake, blocked);
        }
        wake
    }

    /// Creates up to `need` machines for `runner`: no more than `cap` machines counted in all and
    /// `max_growth` creating at once (0: no bound). While failures block creations, creates
    /// nothing and returns when they may resume.
    pub(crate) fn create_capped(
        &mut self,
        runner: RunnerId,
        need: u32,
        cap: u32,
        max_growth: u32,
        now: Timestamp,
        out: &mut Vec<Command>,
    ) -> Option<Timestamp> {
        if need == 0 {
            return None;
        }
        let r = &self.state.runners[runner.index()];
        if now < r.create_blocked_until {
            return Some(r.create_blocked_until);
        }
        let c = &r.counts;
        let headroom = match cap {
            0 => u32::MAX,
            cap => cap.saturating_sub(c.counted()),
        };
        let growth = match max_growth {
            0 => u32::MAX,
            g => g.saturating_sub(c.creating),
        };
        for _ in 0..need.min(headroom).min(growth) {
            self.create_machine(runner, out);
        }
        None
    }

    /// Emits `Exit` once everything a shutdown waits for has finished.
    fn check_exit(&mut self, out: &mut Vec<Command>) -> Option<Timestamp> {
        if self.state.exited {
            return None;
        }
        let t = &self.state.totals;
        let jobs_done = t.running == 0 && t.queued == 0 && t.in_flight == 0;
        match self.state.shutdown {
            Shutdown::None => None,
            Shutdown::Forceful { deadline, .. } => {
                if jobs_done || self.state.now >= deadline {
                    self.state.exited = true;
                    out.push(Command::Exit { clean: jobs_done });
                    None
                } else {
                    Some(deadline)
                }
            }
            Shutdown::Graceful { .. } => {
                let (creating, removing, idle) =
                    self.state.runners.iter().fold((0, 0, 0), |acc, r| {
                        (
                            acc.0 + r.counts.creating,
                            acc.1 + r.counts.removing,
                            acc.2 + r.counts.idle,
                        )
                    });
                let removals_in_progress = removing as usize - self.state.removal_retries.len();
                let machines_done = creating == 0
                    && removals_in_progress == 0
                    && (!self.config.drain_machines_on_shutdown || idle == 0);
                if jobs_done && machines_done {
                    self.state.exited = true;
                    out.push(Command::Exit { clean: true });
                }
                None
            }
        }
    }
}
