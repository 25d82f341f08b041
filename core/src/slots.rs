//! Job slots: a machine of a `docker-autoscaler` runner runs up to `capacity_per_instance` jobs at
//! once (a docker+machine machine, one). Each runner keeps the free slots of its ready machines
//! and an index of the machines running jobs with a slot free, both derived from the machine
//! records: every change of a machine's state or use count goes through [`State::unslot`] and
//! [`State::reslot`], and [`State::rebuild_slots`] recounts them after a snapshot or a reload.

use crate::ids::{JobId, MachineId};
use crate::state::{JobState, Machine, MachineState, State};

/// Free slots of a machine in `state` that has started `used` jobs, on a runner whose machines
/// take `slots` jobs at once and `max_use` jobs in all (0 = unlimited). Machines creating or being
/// removed have none.
pub(crate) fn free_slots(state: MachineState, used: u32, (slots, max_use): (u32, u32)) -> u32 {
    if matches!(state, MachineState::Creating | MachineState::Removing) {
        return 0;
    }
    let room = slots.saturating_sub(state.jobs());
    if max_use == 0 {
        room
    } else {
        room.min(max_use.saturating_sub(used))
    }
}

impl State {
    /// A machine's free slots and, if it runs jobs with a slot free, its key in the open index.
    fn slot_use(&self, m: &Machine) -> (u32, Option<u32>) {
        let Some(r) = self.runners.get(m.runner.index()) else {
            return (0, None);
        };
        let free = free_slots(m.state, m.used_count, r.config.machine_capacity());
        let open = match m.state {
            MachineState::Shared(k) if free > 0 => Some(k),
            _ => None,
        };
        (free, open)
    }

    /// Takes a machine's slots out of its runner's counts, before its record changes.
    pub(crate) fn unslot(&mut self, id: MachineId) {
        let Some(m) = self.machines.get(&id) else {
            return;
        };
        let (free, open) = self.slot_use(m);
        let r = &mut self.runners[m.runner.index()];
        r.free_slots -= free;
        if let Some(k) = open {
            r.open.remove(&(k, id));
        }
    }

    /// Puts a machine's slots into its runner's counts, after its record changed.
    pub(crate) fn reslot(&mut self, id: MachineId) {
        let Some(m) = self.machines.get(&id) else {
            return;
        };
        let (free, open) = self.slot_use(m);
        let r = &mut self.runners[m.runner.index()];
        r.free_slots += free;
        if let Some(k) = open {
            r.open.insert((k, id));
        }
    }

    /// Recounts every runner's slots from the machine records and the config.
    pub(crate) fn rebuild_slots(&mut self) {
        for r in &mut self.runners {
            r.free_slots = 0;
            r.open.clear();
        }
        let ids: Vec<MachineId> = self
            .machines
            .sorted()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        for id in ids {
            self.reslot(id);
        }
    }

    /// The machine of `runner` running jobs with a slot free that runs the most, if any.
    pub(crate) fn fullest_open(&self, runner: usize) -> Option<MachineId> {
        self.runners[runner].open.last().map(|&(_, m)| m)
    }

    /// The jobs running on a machine. O(jobs): for a machine lost or vanished, not per event.
    pub(crate) fn jobs_on(&self, machine: MachineId) -> Vec<JobId> {
        self.jobs
            .sorted()
            .into_iter()
            .filter(|(_, j)| {
                matches!(j.state, JobState::Running { machine: Some(m), .. } if m == machine)
            })
            .map(|(id, _)| id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_slots_of_each_state() {
        let cap = (4, 0);
        assert_eq!(free_slots(MachineState::Creating, 0, cap), 0);
        assert_eq!(free_slots(MachineState::Removing, 0, cap), 0);
        assert_eq!(free_slots(MachineState::Idle, 3, cap), 4);
        assert_eq!(free_slots(MachineState::Shared(3), 3, cap), 1);
        assert_eq!(free_slots(MachineState::Shared(4), 4, cap), 0);
        // max_use_count: a machine that started 9 of its 10 jobs takes one more, however idle.
        assert_eq!(free_slots(MachineState::Idle, 9, (4, 10)), 1);
        assert_eq!(free_slots(MachineState::Shared(1), 10, (4, 10)), 0);
        // docker+machine: one slot, MaxBuilds.
        assert_eq!(free_slots(MachineState::Idle, 0, (1, 0)), 1);
        assert_eq!(free_slots(MachineState::Busy(JobId(1)), 1, (1, 0)), 0);
        assert_eq!(free_slots(MachineState::Idle, 2, (1, 2)), 0);
    }
}
