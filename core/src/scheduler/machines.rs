//! Machine handlers: a machine asked for, created, failed, removed, failed to be removed or lost;
//! the state moves and counters every machine record goes through.

use super::backoff::{creation_backoff, removal_backoff};
use super::naming::machine_name;
use super::{Core, PREPARE_ATTEMPTS};
use crate::command::{Command, FailCause, RemoveReason};
use crate::event::CreationFailure;
use crate::ids::{JobId, MachineId, RunnerId};
use crate::state::{AnomalyKind, Counts, Machine, MachineState, STUCK_AFTER};
use crate::time::Timestamp;

impl Core {
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
    pub(super) fn record_machine(
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
        self.state.reslot(id);
        id
    }

    pub(super) fn on_machine_created(&mut self, machine: MachineId) {
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
            MachineState::Idle | MachineState::Busy(_) | MachineState::Shared(_) => {
                self.anomaly(AnomalyKind::UnexpectedMachineEvent, machine.0)
            }
        }
    }

    pub(super) fn on_creation_failed(
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
            MachineState::Idle | MachineState::Busy(_) | MachineState::Shared(_) => {
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

    pub(super) fn on_machine_removed(&mut self, machine: MachineId, out: &mut Vec<Command>) {
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
            MachineState::Shared(_) => {
                self.anomaly(AnomalyKind::MachineVanished, machine.0);
                self.abort_jobs_on(machine, out);
            }
            MachineState::Idle | MachineState::Creating => {
                self.anomaly(AnomalyKind::MachineVanished, machine.0)
            }
        }
        self.forget_machine(machine);
        self.state.stats.machines_removed += 1;
    }

    pub(super) fn on_removal_failed(&mut self, machine: MachineId) {
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

    pub(super) fn on_machine_lost(&mut self, machine: MachineId, out: &mut Vec<Command>) {
        let Some(m) = self.state.machines.get(&machine) else {
            self.anomaly(AnomalyKind::UnknownMachine, machine.0);
            return;
        };
        // Counted once: a machine already being removed (its loss reported by each of its jobs,
        // or lost while it was going anyway) is not lost again.
        if m.state != MachineState::Removing {
            self.state.stats.machines_lost += 1;
        }
        match m.state {
            MachineState::Removing => {}
            MachineState::Busy(job) => {
                self.abort_job(job, out);
                self.start_removal(machine, RemoveReason::Lost, out);
            }
            MachineState::Shared(_) => {
                self.abort_jobs_on(machine, out);
                self.start_removal(machine, RemoveReason::Lost, out);
            }
            MachineState::Idle | MachineState::Creating => {
                self.start_removal(machine, RemoveReason::Lost, out)
            }
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

    pub(super) fn forget_machine(&mut self, machine: MachineId) {
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
        self.state.unslot(machine);
        if let Some(m) = self.state.machines.remove(&machine) {
            self.state.names.remove(&m.name);
        }
    }

    /// Moves a machine to another state, keeping the counters; returns it for further updates.
    pub(super) fn set_machine_state(
        &mut self,
        machine: MachineId,
        to: MachineState,
    ) -> Option<&mut Machine> {
        self.move_machine(machine, to, 0)
    }

    /// [`Core::set_machine_state`] that also counts `started` more jobs started on the machine.
    pub(super) fn move_machine(
        &mut self,
        machine: MachineId,
        to: MachineState,
        started: u32,
    ) -> Option<&mut Machine> {
        let runner = self.state.machines.get(&machine)?.runner;
        let slots = self.state.runners[runner.index()]
            .config
            .slot_policy()
            .is_some();
        if slots {
            self.state.unslot(machine);
            self.change_machine(machine, to, started);
            self.state.reslot(machine);
            self.state.machines.get_mut(&machine)
        } else {
            self.change_machine(machine, to, started)
        }
    }

    /// The record and counter update of [`Core::move_machine`].
    fn change_machine(
        &mut self,
        machine: MachineId,
        to: MachineState,
        started: u32,
    ) -> Option<&mut Machine> {
        let seq = self.state.seq;
        let m = self.state.machines.get_mut(&machine)?;
        let from = m.state;
        m.state = to;
        m.changed_seq = seq;
        m.used_count += started;
        let counts = &mut self.state.runners[m.runner.index()].counts;
        dec_state(counts, from);
        inc_state(counts, to);
        Some(m)
    }

    /// Aborts every job running on a machine.
    pub(crate) fn abort_jobs_on(&mut self, machine: MachineId, out: &mut Vec<Command>) {
        for job in self.state.jobs_on(machine) {
            self.abort_job(job, out);
        }
    }

    /// A machine becomes idle now: its idle clock starts and it joins the idle index.
    pub(super) fn make_idle(&mut self, machine: MachineId, now: Timestamp) {
        let Some(m) = self.set_machine_state(machine, MachineState::Idle) else {
            return;
        };
        m.last_used = now;
        let runner = m.runner.index();
        self.state.push_idle(runner, now, machine);
    }
}

fn inc_state(counts: &mut Counts, state: MachineState) {
    match state {
        MachineState::Creating => counts.creating += 1,
        MachineState::Idle => counts.idle += 1,
        MachineState::Busy(_) | MachineState::Shared(_) => counts.busy += 1,
        MachineState::Removing => counts.removing += 1,
    }
}

fn dec_state(counts: &mut Counts, state: MachineState) {
    match state {
        MachineState::Creating => counts.creating -= 1,
        MachineState::Idle => counts.idle -= 1,
        MachineState::Busy(_) | MachineState::Shared(_) => counts.busy -= 1,
        MachineState::Removing => counts.removing -= 1,
    }
}
