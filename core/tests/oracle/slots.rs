//! The reference model of a runner with job slots: GitLab Runner's docker-autoscaler
//! (taskscaler) as `shared/reference/gitlab-autoscale.md` §2.2–§2.3 and `cloud-provider.md` §1.4
//! describe it, with drover's choices marked `DEVIATION` or `CHOICE` (where GitLab's documents
//! are silent).
//!
//! As the rest of the model: no counters, no indexes; every decision recounts the machines and
//! looks at each job's record for the machine it runs on.

use drover_core::period::active_period;
use drover_core::{MachineId, RemoveReason, RunnerId, SlotPolicy};

use super::model::{Decisions, MState, OMachine, Oracle};

impl Oracle {
    /// Jobs a machine can still take: `capacity_per_instance` less the jobs on it, and no more than
    /// `max_use_count` leaves it. None while creating or being removed.
    fn free(&self, m: &OMachine, sp: &SlotPolicy) -> u32 {
        if matches!(m.state, MState::Creating | MState::Removing) {
            return 0;
        }
        let room = sp
            .slots
            .max(1)
            .saturating_sub(self.jobs_on(m.id).len() as u32);
        match sp.pool.max_builds {
            0 => room,
            max => room.min(max.saturating_sub(m.used_count)),
        }
    }

    /// Free slots on the runner's ready machines (idle or running jobs).
    fn free_slots(&self, r: RunnerId, sp: &SlotPolicy) -> u32 {
        self.machines
            .iter()
            .filter(|m| m.runner == r)
            .map(|m| self.free(m, sp))
            .sum()
    }

    /// Slots a new machine brings.
    fn per_machine(sp: &SlotPolicy) -> u32 {
        match sp.pool.max_builds {
            0 => sp.slots.max(1),
            max => sp.slots.max(1).min(max),
        }
    }

    pub fn pass_slots(&mut self, r: RunnerId, d: &mut Decisions) {
        let now = self.now;
        let rc = self.rc(r).clone();
        let sp = rc.slot_policy().expect("a runner with slots").clone();
        let v = self.values(r);
        let extra = sp.extra(active_period(&sp.pool.periods, now));
        let concurrent = self.config.concurrent.max(1);
        let per_machine = Self::per_machine(&sp);

        // Dispatch: the oldest waiting job takes a free slot. CHOICE: on the machine running the
        // most jobs (the newest on a tie), so that idle machines can expire; else the most
        // recently used idle machine.
        for job in self.queued(r) {
            let room = self.running(None) < concurrent
                && (rc.limit == 0 || self.running(Some(r)) < rc.limit);
            if !room {
                break;
            }
            let in_use = self
                .machines
                .iter()
                .filter(|m| m.runner == r && m.state == MState::InUse && self.free(m, &sp) > 0)
                .map(|m| (self.jobs_on(m.id).len(), m.id))
                .max();
            let Some(mid) = in_use
                .map(|(_, id)| id)
                .or_else(|| self.idle_lru(r).last().copied())
            else {
                break;
            };
            let m = self.machine(mid).expect("a ready machine");
            m.state = MState::InUse;
            m.used_count += 1;
            let j = self.jobs.get_mut(&job).expect("queued job");
            j.running_on = Some(Some(mid));
            self.runners[r.index()].front_failures = 0;
            d.starts.insert((job, mid));
        }

        // `max_instances` lowered below the fleet: idle machines above it go.
        let live = self.count(r, |m| m.state != MState::Removing);
        if sp.max_machines > 0 && live > sp.max_machines {
            for mid in self
                .idle_lru(r)
                .into_iter()
                .take((live - sp.max_machines) as usize)
            {
                self.remove(mid, RemoveReason::TooManyMachines, d);
            }
        }

        // §2.3: idle capacity in job slots: `idle_count`, with `scale_factor` the factor times the
        // slots in use, capped by `scale_factor_limit`, never below `idle_count`. CHOICE: never
        // more than `limit` leaves jobs for. Waiting jobs need slots too.
        let queued = self.queued(r).len() as u32;
        let target = if self.graceful {
            0
        } else {
            let in_use = self.running(Some(r));
            let mut idle = v.idle_count;
            if v.idle_scale_factor > 0.0 {
                let mut scaled = (f64::from(in_use) * v.idle_scale_factor).floor() as u32;
                if extra.scale_factor_limit > 0 {
                    scaled = scaled.min(extra.scale_factor_limit);
                }
                idle = idle.max(scaled);
            }
            if rc.limit > 0 {
                idle = idle.min(rc.limit.saturating_sub(in_use + queued));
            }
            idle
        };
        let want = target + queued;

        // An idle instance past `idle_time` is deleted unless needed for the idle capacity; with
        // `preemptive_mode`, free slots held for requests in flight stay (the idle capacity
        // serves them too: taskscaler caps reservations so they do not block scaling down).
        // Least recently used first.
        let drain = self.graceful && self.config.drain_machines_on_shutdown;
        // CHOICE: preemptive_mode holds requests back only while the policy keeps idle slots
        // (with none, GitLab Runner would never request a job again).
        let gated = extra.preemptive && target > 0;
        let held = if gated && !drain {
            self.runners[r.index()].in_flight
        } else {
            0
        };
        for mid in self.idle_lru(r) {
            if self.graceful && !drain {
                break;
            }
            let m = self.machines.iter().find(|m| m.id == mid).expect("idle");
            let slots = self.free(m, &sp);
            if self.free_slots(r, &sp) - slots < want.max(held) {
                break;
            }
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

        // Job requests: with `preemptive_mode` only when a free slot can take the job; else on
        // demand, while `max_instances` leaves room for the machine it needs.
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
            let free = self.free_slots(r, &sp);
            let capacity = if free > committed {
                true
            } else if gated {
                false
            } else {
                let supply = free + self.creating(r) * per_machine;
                let deficit = (committed + 1).saturating_sub(supply).div_ceil(per_machine);
                (deficit == 0 || now >= o.blocked_until)
                    && (sp.max_machines == 0 || self.total(r) + deficit <= sp.max_machines)
                    && (sp.pool.max_growth_rate == 0
                        || self.creating(r) + deficit <= sp.pool.max_growth_rate)
            };
            if !capacity {
                break;
            }
            self.runners[r.index()].in_flight += 1;
            *d.requests.entry(r).or_default() += 1;
        }

        // Instances wanted ≈ ceil((waiting + idle capacity) / capacity_per_instance), counting the
        // free slots there are and those of instances on their way, capped by `max_instances`.
        if now < self.runners[r.index()].blocked_until {
            return;
        }
        loop {
            let creating = self.creating(r);
            let supply = self.free_slots(r, &sp) + creating * per_machine;
            let at_growth = sp.pool.max_growth_rate > 0 && creating >= sp.pool.max_growth_rate;
            let at_max = sp.max_machines > 0 && self.total(r) >= sp.max_machines;
            if at_growth || at_max || supply >= want {
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
