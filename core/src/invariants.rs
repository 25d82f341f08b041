//! The invariants of design section 7, checked by full scans. For tests, the simulator's checker
//! mode and `drover replay`; never on the dispatch path.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::Executor;
use crate::ids::{JobId, MachineId};
use crate::scheduler::Core;
use crate::state::{Counts, JobState, MachineState, STUCK_AFTER, Totals};

/// A broken invariant, with enough detail to debug it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invariant violated: {0}")]
pub struct Violation(pub String);

macro_rules! ensure {
    ($cond:expr, $($arg:tt)*) => {
        if !$cond {
            return Err(Violation(format!($($arg)*)));
        }
    };
}

impl Core {
    /// Checks every invariant and that the incremental counters agree with a full recount.
    pub fn check_invariants(&self) -> Result<(), Violation> {
        let s = &self.state;
        let mut counts: Vec<Counts> = vec![Counts::default(); s.runners.len()];
        let mut totals = Totals::default();
        let mut machine_jobs: BTreeMap<MachineId, JobId> = BTreeMap::new();
        let mut shared: BTreeMap<MachineId, u32> = BTreeMap::new();
        let mut free = vec![0u32; s.runners.len()];
        let mut open: Vec<BTreeSet<(u32, MachineId)>> = vec![BTreeSet::new(); s.runners.len()];

        for (id, m) in s.machines.sorted() {
            ensure!(
                m.runner.index() < s.runners.len(),
                "{id} belongs to unknown {}",
                m.runner
            );
            ensure!(
                s.names.get(&m.name) == Some(&id),
                "{id} is not indexed by its name {}",
                m.name
            );
            let capacity = s.runners[m.runner.index()].config.machine_capacity();
            let f = crate::slots::free_slots(m.state, m.used_count, capacity);
            free[m.runner.index()] += f;
            if let MachineState::Shared(k) = m.state
                && f > 0
            {
                open[m.runner.index()].insert((k, id));
            }
            let c = &mut counts[m.runner.index()];
            match m.state {
                MachineState::Creating => c.creating += 1,
                MachineState::Idle => {
                    c.idle += 1;
                    ensure!(
                        s.runners[m.runner.index()]
                            .idle
                            .contains(&(m.last_used, id)),
                        "idle {id} missing from the idle index"
                    );
                }
                MachineState::Busy(job) => {
                    c.busy += 1;
                    let j = s.jobs.get(&job);
                    ensure!(
                        matches!(j.map(|j| j.state), Some(JobState::Running { machine: Some(mm), .. }) if mm == id),
                        "busy {id} runs {job}, which does not run on it"
                    );
                    machine_jobs.insert(id, job);
                }
                MachineState::Shared(k) => {
                    c.busy += 1;
                    ensure!(k >= 1, "{id} shares its slots among no job");
                    shared.insert(id, k);
                }
                MachineState::Removing => {
                    c.removing += 1;
                    if m.removal_attempts >= STUCK_AFTER {
                        c.stuck += 1;
                    }
                    if let Some(at) = m.retry_at {
                        ensure!(
                            s.removal_retries.contains(&(at, id)),
                            "{id} waits for a retry nobody scheduled"
                        );
                    }
                }
            }
        }
        ensure!(
            s.names.len() == s.machines.len(),
            "name index has {} entries for {} machines",
            s.names.len(),
            s.machines.len()
        );

        let mut on_machine: BTreeMap<MachineId, JobId> = BTreeMap::new();
        let mut sharing: BTreeMap<MachineId, u32> = BTreeMap::new();
        for (job, j) in s.jobs.sorted() {
            ensure!(
                j.runner.index() < s.runners.len(),
                "{job} belongs to unknown {}",
                j.runner
            );
            let c = &mut counts[j.runner.index()];
            match j.state {
                JobState::Queued { deadline } => {
                    c.queued += 1;
                    totals.queued += 1;
                    ensure!(
                        s.runners[j.runner.index()]
                            .queue
                            .contains(&(j.enqueued, job)),
                        "queued {job} not in its queue"
                    );
                    ensure!(
                        s.queue_deadlines
                            .values()
                            .any(|q| q.contains(&(deadline, j.enqueued, job))),
                        "queued {job} has no deadline entry"
                    );
                }
                JobState::Running { machine, .. } => {
                    c.running += 1;
                    totals.running += 1;
                    if let Some(m) = machine {
                        *sharing.entry(m).or_default() += 1;
                        // Several jobs share a machine with slots; one with slots that was lost
                        // keeps its aborted jobs until they end.
                        let live_shared = shared.contains_key(&m);
                        if let Some(prev) = on_machine.insert(m, job)
                            && !live_shared
                            && !(j.aborted && s.jobs.get(&prev).is_some_and(|p| p.aborted))
                        {
                            return Err(Violation(format!("{m} runs both {prev} and {job}")));
                        }
                        // The machine may be gone (lost mid-job), but if it is busy it is busy with this job.
                        if let Some(mm) = s.machines.get(&m) {
                            ensure!(
                                !matches!(mm.state, MachineState::Busy(other) if other != job),
                                "{job} runs on {m}, which is busy with another job"
                            );
                        }
                    }
                }
            }
        }
        for (m, k) in &shared {
            let n = sharing.get(m).copied().unwrap_or(0);
            ensure!(n == *k, "{m} counts {k} jobs, but {n} run on it");
        }
        for (i, r) in s.runners.iter().enumerate() {
            ensure!(
                r.free_slots == free[i] && r.open == open[i],
                "runner {i} ({}) counts {} free slots and {} open machines; a recount finds {} and {}",
                r.config.name,
                r.free_slots,
                r.open.len(),
                free[i],
                open[i].len()
            );
            counts[i].in_flight = r.counts.in_flight;
            totals.in_flight += r.counts.in_flight;
            ensure!(
                counts[i] == r.counts,
                "runner {i} ({}) counters {:?} differ from a recount {:?}",
                r.config.name,
                r.counts,
                counts[i]
            );
            let idle = s.idle_machines(i);
            ensure!(
                idle.len() as u32 == r.counts.idle,
                "runner {i} idle index has {} live entries for {} idle machines",
                idle.len(),
                r.counts.idle
            );
            ensure!(
                r.idle
                    .iter()
                    .zip(r.idle.iter().skip(1))
                    .all(|(a, b)| a.0 <= b.0),
                "runner {i} idle index is not ordered by last use"
            );
            let queued = s.queued_jobs(i);
            ensure!(
                queued.len() as u32 == r.counts.queued,
                "runner {i} queue has {} live entries for {} queued jobs",
                queued.len(),
                r.counts.queued
            );
        }
        ensure!(
            totals == s.totals,
            "totals {:?} differ from a recount {totals:?}",
            s.totals
        );
        ensure!(
            self.digest() == self.digest_from_scratch(),
            "the running digest differs from a recount: a record changed without being rehashed"
        );
        Ok(())
    }
}

impl Core {
    /// Checks the invariants that concern what a step emitted. Invariant 6: with IdleCount > 0 a job
    /// is requested only when a free idle machine (not held for a queued job or another request) can take
    /// it — so after a step that requested jobs, requests in flight never outnumber free idle machines.
    ///
    /// Invariant 1, checked where the core acts: it never creates a machine beyond `limit`
    /// (`max_instances` for a runner with slots; machines in every state but stuck removals count),
    /// never starts a job beyond `limit` or `concurrent`, nor on a machine with no slot free. (A
    /// reload may lower a limit below what already runs; those drain instead of being killed.)
    /// `event` is what produced `step`: after [`crate::Event::Resumed`] the creations are re-issues
    /// of machines that already count, not new ones.
    pub fn check_step(&self, event: &crate::Event, step: &crate::Step) -> Result<(), Violation> {
        if matches!(event, crate::Event::Resumed) {
            return Ok(());
        }
        let mut started_any = false;
        for c in &step.commands {
            match c {
                crate::Command::CreateMachine { runner, .. } => {
                    let r = &self.state.runners[runner.index()];
                    // With slots, `max_instances` caps machines and `limit` jobs.
                    let cap = match &r.config.executor {
                        Executor::Slots(sp) => sp.max_machines,
                        _ => r.config.limit,
                    };
                    ensure!(
                        cap == 0 || r.counts.counted() <= cap,
                        "runner {} created a machine: {} machines, limit {}",
                        runner.0,
                        r.counts.counted(),
                        cap
                    );
                }
                // Invariant 2: a machine is asked to go only once it no longer takes jobs.
                crate::Command::RemoveMachine { machine, name, .. } => {
                    if let Some(m) = self.state.machines.get(machine) {
                        ensure!(
                            m.state == MachineState::Removing,
                            "asked to remove {name}, which is still {}",
                            m.state.as_str()
                        );
                    }
                }
                crate::Command::RunJob {
                    runner, machine, ..
                } => {
                    started_any = true;
                    // Invariant 3: no machine runs more than MaxBuilds jobs.
                    let max_builds = self.state.runners[runner.index()]
                        .config
                        .policy()
                        .map_or(0, |p| p.max_builds);
                    if let Some(m) = machine.and_then(|m| self.state.machines.get(&m)) {
                        ensure!(
                            max_builds == 0 || m.used_count <= max_builds,
                            "started job {} of {} on a machine with MaxBuilds {max_builds}",
                            m.used_count,
                            m.name
                        );
                        // No machine runs more jobs at once than it has slots.
                        let (slots, _) =
                            self.state.runners[runner.index()].config.machine_capacity();
                        ensure!(
                            m.state.jobs() <= slots,
                            "{} runs {} jobs with {slots} slots",
                            m.name,
                            m.state.jobs()
                        );
                    }
                    let r = &self.state.runners[runner.index()];
                    ensure!(
                        r.config.limit == 0 || r.counts.running <= r.config.limit,
                        "runner {} started a job: {} running, limit {}",
                        runner.0,
                        r.counts.running,
                        r.config.limit
                    );
                }
                _ => {}
            }
        }
        ensure!(
            !started_any || self.state.totals.running <= self.config.concurrent.max(1),
            "started a job: {} running, concurrent {}",
            self.state.totals.running,
            self.config.concurrent
        );
        for (i, r) in self.state.runners.iter().enumerate() {
            let requested = step
                .commands
                .iter()
                .any(|c| matches!(c, crate::Command::RequestJob { runner } if runner.index() == i));
            if !requested {
                continue;
            }
            // With slots and preemptive_mode: requests and queued jobs never outnumber free slots.
            if let Executor::Slots(_) = &r.config.executor {
                let c = &r.counts;
                ensure!(
                    !self.slot_gated(crate::RunnerId(i as u16))
                        || c.in_flight + c.queued <= r.free_slots,
                    "runner {i} requested a job with {} requests in flight and {} queued jobs for {} free slots",
                    c.in_flight,
                    c.queued,
                    r.free_slots
                );
                continue;
            }
            if r.policy.values.idle_count == 0 || !matches!(r.config.executor, Executor::Pool(_)) {
                continue;
            }
            let c = &r.counts;
            ensure!(
                c.in_flight + c.queued <= c.idle,
                "runner {i} requested a job with {} requests in flight and {} queued jobs for {} idle machines",
                c.in_flight,
                c.queued,
                c.idle
            );
        }
        Ok(())
    }
}
