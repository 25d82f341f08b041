//! Reconciliation of a runner with job slots (`docker-autoscaler`): dispatch, idle capacity in
//! slots, reaping, job requests and creation, as GitLab's taskscaler sizes an instance group.
//!
//! - A queued job takes a free slot on the fullest machine already running jobs, else the most
//!   recently used idle machine: jobs are packed so that idle machines can expire.
//! - Idle capacity is counted in slots: the policy's `idle_count`, or with a `scale_factor`
//!   `max(idle_count, floor(in_use × scale_factor))` capped by `scale_factor_limit`
//!   ([`SlotPolicy::idle_slots`]); never more than `limit` leaves room for.
//! - Machines wanted: enough for the idle slots and the queued jobs, `slots` per new machine (fewer
//!   if `max_use_count` is lower), capped by `max_instances`. `limit` caps jobs, not machines.
//! - Only an idle machine (no job) past `idle_time` is removed, and only while the other ready
//!   machines' free slots still cover the target.
//! - With `preemptive_mode` a job is requested only when a free slot can take it (while the
//!   policy keeps idle slots: with none, requests are made on demand, as without it).

use crate::command::{Command, RemoveReason};
use crate::config::SlotPolicy;
use crate::ids::RunnerId;
use crate::scheduler::Core;
use crate::slots::free_slots;
use crate::state::{MachineState, Shutdown};
use crate::time::{Timestamp, earliest};

impl Core {
    pub(crate) fn reconcile_slots(
        &mut self,
        runner: RunnerId,
        out: &mut Vec<Command>,
    ) -> Option<Timestamp> {
        let now = self.state.now;
        let mut wake = self.refresh_policy(runner);
        let ri = runner.index();

        // Dispatch: the oldest waiting job takes a slot on the fullest machine running jobs, else
        // the most recently used idle machine.
        while self.state.runners[ri].counts.queued > 0 && self.can_start(runner) {
            let machine = match self.state.fullest_open(ri) {
                Some(m) => m,
                None => match self.state.pop_mru(ri) {
                    Some(m) => m,
                    None => break,
                },
            };
            self.start_job(runner, Some(machine), out);
        }

        let r = &self.state.runners[ri];
        let Some(sp) = r.config.slot_policy() else {
            return wake;
        };
        let values = r.policy.values;
        let extra = sp.extra(r.policy.period);
        let per_machine = sp.machine_slots();
        let capacity = r.config.machine_capacity();
        let max_growth = sp.pool.max_growth_rate;
        let max_machines = sp.max_machines;
        let shutdown = self.state.shutdown;
        let retired = r.retired;
        let c = r.counts.clone();
        let target = self.slot_target(runner);
        // preemptive_mode holds requests back for a free slot only while the policy keeps idle
        // slots: with none to wait for, GitLab Runner would never ask for a job again.
        let gated = extra.preemptive && target > 0;
        let want = target + c.queued;

        // More machines than `max_instances` (a reload lowered it): remove idle ones now.
        let live = c.creating + c.idle + c.busy;
        if max_machines > 0 && live > max_machines {
            for _ in 0..live - max_machines {
                let Some(m) = self.state.pop_lru(ri) else {
                    break;
                };
                self.start_removal(m, RemoveReason::TooManyMachines, out);
            }
        }

        // Idle machines past idle_time go, least recently used first, while the free slots of the
        // other ready machines still cover the target.
        let drain_all = retired
            || (matches!(shutdown, Shutdown::Graceful { .. })
                && self.config.drain_machines_on_shutdown);
        if drain_all || shutdown == Shutdown::None {
            let (reason, idle_time) = if retired {
                (RemoveReason::RunnerRemoved, None)
            } else if drain_all {
                (RemoveReason::Shutdown, None)
            } else {
                (RemoveReason::TooManyIdle, Some(values.idle_time_ms))
            };
            // Requests in flight hold free slots for the jobs they may bring (the idle slots
            // kept serve them too).
            let reserved = if gated && !drain_all {
                self.state.runners[ri].counts.in_flight
            } else {
                0
            };
            let keep = want.max(reserved);
            let reap_after = self.state.runners[ri].reap_after;
            let mut free = self.state.runners[ri].free_slots;
            if idle_time.is_some() && now < reap_after && free > keep {
                wake = earliest(wake, Some(reap_after));
            } else {
                while let Some((last_used, m)) = self.state.peek_lru(ri) {
                    let slots = self.state.machine(m).map_or(0, |m| {
                        free_slots(MachineState::Idle, m.used_count, capacity)
                    });
                    if free.saturating_sub(slots) < keep {
                        break;
                    }
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
                    free -= slots;
                }
            }
        }

        // Job requests, after reaping.
        if self.may_request(runner) {
            let backing_off = now < self.state.runners[ri].create_blocked_until;
            if backing_off && !gated {
                wake = earliest(wake, Some(self.state.runners[ri].create_blocked_until));
            }
            let w = self.issue_requests(runner, out, |core| {
                let r = &core.state.runners[ri];
                let c = &r.counts;
                let committed = c.queued + c.in_flight;
                if r.free_slots > committed {
                    return true;
                }
                if gated {
                    return false;
                }
                // On demand: a machine creating, or room to create one, must have a slot for it.
                let supply = r.free_slots + c.creating * per_machine;
                let deficit = machines_for((committed + 1).saturating_sub(supply), per_machine);
                (deficit == 0 || !backing_off)
                    && (max_machines == 0 || c.counted() + deficit <= max_machines)
                    && (max_growth == 0 || c.creating + deficit <= max_growth)
            });
            wake = earliest(wake, w);
        }

        // Creation, throttled by max_instances, the growth rate and the failure backoff.
        if !matches!(shutdown, Shutdown::Forceful { .. }) {
            let r = &self.state.runners[ri];
            let supply = r.free_slots + r.counts.creating * per_machine;
            let need = machines_for(want.saturating_sub(supply), per_machine);
            let blocked = self.create_capped(runner, need, max_machines, max_growth, now, out);
            wake = earliest(wake, blocked);
        }
        wake
    }
}

impl Core {
    /// The idle slots a runner with slots keeps now: its policy's ([`SlotPolicy::idle_slots`]),
    /// never more than `limit` leaves jobs for; none while retired or shutting down (a graceful
    /// shutdown stops pre-creating, a forceful one creating at all).
    pub(crate) fn slot_target(&self, runner: RunnerId) -> u32 {
        let r = &self.state.runners[runner.index()];
        let Some(sp) = r.config.slot_policy() else {
            return 0;
        };
        if r.retired || self.state.shutdown != Shutdown::None {
            return 0;
        }
        let c = &r.counts;
        let idle = SlotPolicy::idle_slots(&r.policy.values, sp.extra(r.policy.period), c.running);
        match r.config.limit {
            0 => idle,
            limit => idle.min(limit.saturating_sub(c.running + c.queued)),
        }
    }

    /// Whether `preemptive_mode` holds the runner's job requests back for a free slot.
    pub(crate) fn slot_gated(&self, runner: RunnerId) -> bool {
        let r = &self.state.runners[runner.index()];
        r.config
            .slot_policy()
            .is_some_and(|sp| sp.extra(r.policy.period).preemptive)
            && self.slot_target(runner) > 0
    }
}

/// Machines of `per_machine` slots that hold `slots` slots.
fn machines_for(slots: u32, per_machine: u32) -> u32 {
    slots.div_ceil(per_machine.max(1))
}
