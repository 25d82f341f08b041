//! The chaos model's own checks of the core, beside the invariants the core checks itself: when
//! `Exit` comes, that no job waits needlessly, what a listing covers and declares lost, and that
//! the core's clock never goes back.

use crate::command::Command;
use crate::config::SlotPolicy;
use crate::event::{Event, Signal};
use crate::state::RunnerState;
use std::collections::BTreeSet;

use crate::ids::{MachineId, RunnerId};
use crate::state::{AnomalyKind, MachineState, Shutdown};
use crate::time::Timestamp;

use super::Chaos;

impl Chaos {
    /// `Exit` comes exactly when the shutdown in progress has nothing left to wait for, at most
    /// once: a graceful one waits for every job (running, queued, requested), every machine being
    /// created or removed (not the removals waiting for a retry), and with draining every idle
    /// machine; a forceful one for the jobs until its deadline (then exits unclean), and a second
    /// forceful signal exits at once.
    pub(super) fn check_exit(
        &self,
        event: &Event,
        commands: &[Command],
        (exited_before, shutdown_before): (bool, Shutdown),
    ) -> Result<(), String> {
        let exits: Vec<bool> = commands
            .iter()
            .filter_map(|c| match c {
                Command::Exit { clean } => Some(*clean),
                _ => None,
            })
            .collect();
        let s = self.core.state();
        if exits.len() > 1 || (exited_before && !exits.is_empty()) {
            return Err(format!("exits again: {exits:?}"));
        }
        let (mut jobs, mut creating, mut removing, mut idle) = (0, 0, 0, 0);
        for r in s.runners() {
            let c = &r.counts;
            jobs += c.running + c.queued + c.in_flight;
            creating += c.creating;
            removing += c.removing;
            idle += c.idle;
        }
        let removals_in_progress = removing as usize - s.removals_waiting();
        let drain = self.core.config().drain_machines_on_shutdown;
        let exit = exits.first().copied();
        // A signal starts its shutdown (a graceful one only from none); a forceful one aborts
        // every running job at once.
        let started = match (event, s.shutdown()) {
            (Event::Signal(Signal::Forceful), Shutdown::Forceful { .. }) => {
                let running = s.jobs().into_iter().map(|(_, j)| j);
                !running
                    .filter(|j| matches!(j.state, crate::state::JobState::Running { .. }))
                    .any(|j| !j.aborted)
            }
            (Event::Signal(Signal::Forceful), _) => false,
            (Event::Signal(Signal::Graceful), now) => {
                shutdown_before != Shutdown::None || matches!(now, Shutdown::Graceful { .. })
            }
            _ => true,
        };
        if !started && !exited_before {
            return Err(format!("{event:?} left the shutdown at {:?}", s.shutdown()));
        }
        // A restart lists every pool runner's machines.
        if matches!(event, Event::Resumed) {
            for (i, r) in s.runners().iter().enumerate() {
                let listed = commands.iter().any(|c| {
                    matches!(c, Command::ListMachines { runner, .. } if usize::from(runner.0) == i)
                });
                if r.config.policy().is_some() && !listed {
                    return Err(format!("a restart did not list runner {i}'s machines"));
                }
            }
        }
        // A shutdown starting cancels every job request in flight; a reload those of the runners
        // it removed.
        let starts = matches!(event, Event::Signal(Signal::Graceful | Signal::Forceful))
            && shutdown_before == Shutdown::None;
        if starts || matches!(event, Event::Signal(Signal::Reload(_))) {
            for (i, r) in s.runners().iter().enumerate() {
                let canceled = commands.iter().any(|c| {
                    matches!(c, Command::CancelRequests { runner } if usize::from(runner.0) == i)
                });
                if r.counts.in_flight > 0 && !canceled && (starts || r.retired) {
                    return Err(format!("{event:?} left runner {i}'s requests open"));
                }
                // ... and nothing of a runner it keeps: their long polls go on.
                if canceled && !starts && !r.retired {
                    return Err(format!(
                        "{event:?} canceled the requests of kept runner {i}"
                    ));
                }
            }
        }
        match s.shutdown() {
            Shutdown::None if exit.is_some() => Err("exits without a shutdown".into()),
            Shutdown::None => Ok(()),
            _ if exited_before => Ok(()),
            Shutdown::Graceful { .. } => {
                let due = jobs == 0
                    && creating == 0
                    && removals_in_progress == 0
                    && (!drain || idle == 0);
                match exit {
                    Some(true) if due => Ok(()),
                    None if !due => Ok(()),
                    _ => Err(format!(
                        "graceful exit {exit:?}, due {due}: {jobs} jobs, {creating} creating, \
                         {removals_in_progress} removing, {idle} idle"
                    )),
                }
            }
            Shutdown::Forceful { deadline, .. } => {
                let second = matches!(event, Event::Signal(Signal::Forceful))
                    && matches!(shutdown_before, Shutdown::Forceful { .. });
                let due = jobs == 0 || s.now() >= deadline;
                match exit {
                    Some(false) if second => Ok(()),
                    _ if second => Err(format!("a second forceful signal exits {exit:?}")),
                    Some(clean) if due && clean == (jobs == 0) => Ok(()),
                    None if !due => Ok(()),
                    _ => Err(format!(
                        "forceful exit {exit:?}, due {due}: {jobs} jobs, deadline {deadline}"
                    )),
                }
            }
        }
    }

    /// A plain docker runner's job never waits: while one is queued, every job slot it may use
    /// (`concurrent`, its `limit`) is taken.
    pub(super) fn check_direct_runners(&self) -> Result<(), String> {
        let s = self.core.state();
        if let Shutdown::Forceful { .. } = s.shutdown()
            && s.totals().queued > 0
        {
            return Err("a forceful shutdown keeps jobs waiting".into());
        }
        let concurrent = self.core.config().concurrent.max(1);
        for r in s.runners() {
            let c = &r.counts;
            if r.config.policy().is_some() || c.queued == 0 {
                continue;
            }
            let full = s.totals().running >= concurrent
                || (r.config.limit > 0 && c.running >= r.config.limit);
            if !full {
                return Err(format!(
                    "runner {} keeps {} jobs waiting with a free slot",
                    r.config.name, c.queued
                ));
            }
        }
        Ok(())
    }

    /// A listing covers the runner's current prefix (first) and every prefix its known machines
    /// carry, once each; [`crate::State::runner_keys`] are the same keys.
    pub(super) fn check_list_request(
        &self,
        runner: RunnerId,
        prefixes: &[String],
    ) -> Result<(), String> {
        let s = self.core.state();
        let Some(r) = s.runner(runner) else {
            return Err(format!("a list for unknown runner {runner:?}"));
        };
        let mut expected: BTreeSet<String> = s
            .machines()
            .into_iter()
            .filter(|(_, m)| m.runner == runner)
            .filter_map(|(_, m)| crate::config::prefix_of(&m.name).map(str::to_string))
            .collect();
        expected.insert(r.config.machine_prefix());
        let listed: BTreeSet<String> = prefixes.iter().cloned().collect();
        if prefixes.first() != Some(&r.config.machine_prefix())
            || listed != expected
            || listed.len() != prefixes.len()
        {
            return Err(format!("lists {prefixes:?}, expected {expected:?}"));
        }
        let keys: Vec<String> = prefixes
            .iter()
            .map(|p| p["runner-".len()..p.len() - 1].to_string())
            .collect();
        if s.runner_keys(runner) != keys {
            return Err(format!(
                "runner keys {:?} for {prefixes:?}",
                s.runner_keys(runner)
            ));
        }
        Ok(())
    }

    /// The machines of runner 0 a listing asked for at `request` and missing `names` must be
    /// declared lost: those that settled (idle or busy) before the request, and those waiting to
    /// retry a removal, which in fact went through. Returns (lost, gone) to compare after the event.
    pub(super) fn listing_expectations(
        &self,
        request: u64,
        names: &[String],
    ) -> (Vec<MachineId>, Vec<MachineId>) {
        let (mut lost, mut gone) = (Vec::new(), Vec::new());
        for (id, m) in self.core.state().machines() {
            if m.runner.0 != 0 || m.changed_seq >= request || names.contains(&m.name) {
                continue;
            }
            if m.retry_at.is_some() {
                gone.push(id);
            } else if matches!(
                m.state,
                MachineState::Idle | MachineState::Busy(_) | MachineState::Shared(_)
            ) {
                lost.push(id);
            }
        }
        (lost, gone)
    }

    pub(super) fn check_listing(
        &self,
        (lost, gone): (Vec<MachineId>, Vec<MachineId>),
        lost_before: u64,
    ) -> Result<(), String> {
        let s = self.core.state();
        for id in &lost {
            let m = s.machine(*id);
            if !m.is_some_and(|m| m.state == MachineState::Removing) {
                return Err(format!(
                    "machine {id:?} missing from the list is not removed: {m:?}"
                ));
            }
        }
        if let Some(id) = gone.iter().find(|id| s.machine(**id).is_some()) {
            return Err(format!(
                "machine {id:?}, whose removal went through, is still held"
            ));
        }
        let counted = s.stats().machines_lost - lost_before;
        if counted != lost.len() as u64 {
            return Err(format!(
                "{counted} machines counted lost, expected {lost:?}"
            ));
        }
        Ok(())
    }

    /// The core's clock never goes back: an event stamped earlier than the last one is recorded
    /// as an anomaly (by how much) and handled at the core's own time.
    pub(super) fn check_clock(
        &self,
        (before, anomalies): (Timestamp, u64),
        at: Timestamp,
    ) -> Result<(), String> {
        let s = self.core.state();
        let count = |a: &crate::state::Anomalies| {
            a.by_kind
                .get(&AnomalyKind::TimeWentBackwards)
                .copied()
                .unwrap_or(0)
        };
        let now_count = count(s.anomalies());
        if at < before {
            let last = s.anomalies().recent.back();
            let recorded = last.is_some_and(|a| {
                a.kind == AnomalyKind::TimeWentBackwards && a.subject == before.0 - at.0
            });
            if s.now() != before || now_count != anomalies + 1 || !recorded {
                return Err(format!("time went back from {before} to {at}: {last:?}"));
            }
        } else if s.now() != at || now_count != anomalies {
            return Err(format!(
                "time moved from {before} to {at}, the core says {}",
                s.now()
            ));
        }
        Ok(())
    }

    /// Invariant 4 for a runner with slots: once healed, its idle machines hold the idle slots of
    /// its policy (at most `limit`), or as many as `max_instances` allows, and the least recently
    /// used one is not surplus (the rest would still hold them, or the free slots requests in
    /// flight hold with `preemptive_mode`); none once retired or drained.
    pub(super) fn check_slots_converged(
        &self,
        r: &RunnerState,
        sp: &SlotPolicy,
    ) -> Result<(), String> {
        let s = self.core.state();
        let c = &r.counts;
        let name = &r.config.name;
        let drained = r.retired
            || (matches!(s.shutdown(), Shutdown::Graceful { .. })
                && self.core.config().drain_machines_on_shutdown);
        if drained {
            return match c.idle {
                0 => Ok(()),
                n => Err(format!(
                    "runner {name} keeps {n} idle machines after draining"
                )),
            };
        }
        if s.shutdown() != Shutdown::None {
            return Ok(()); // idle machines stay for the next start, however many
        }
        let extra = sp.extra(r.policy().period);
        let mut target = SlotPolicy::idle_slots(&r.policy().values, extra, 0);
        if r.config.limit > 0 {
            target = target.min(r.config.limit);
        }
        let held = if extra.preemptive && target > 0 {
            c.in_flight
        } else {
            0
        };
        let capped = sp.max_machines > 0 && c.counted() >= sp.max_machines;
        if r.free_slots() < target && !capped {
            return Err(format!(
                "runner {name} holds {} free slots, expected {target}",
                r.free_slots()
            ));
        }
        let idle = s.idle_machines(s.runner_id(name).map_or(0, |id| id.index()));
        if let Some(lru) = idle.first().and_then(|&m| s.machine(m)) {
            let slots = crate::slots::free_slots(
                MachineState::Idle,
                lru.used_count,
                r.config.machine_capacity(),
            );
            if r.free_slots() - slots >= target.max(held) {
                return Err(format!(
                    "runner {name} keeps {} free slots for a target of {target} ({held} held): {} is surplus",
                    r.free_slots(),
                    lru.name
                ));
            }
        }
        Ok(())
    }
}
