//! `CI_CONCURRENT_ID` and `CI_CONCURRENT_PROJECT_ID`: the lowest index not held by another running
//! job of the runner (and of the same project), as GitLab Runner's builds helper hands them out.
//! Jobs use them to pick per-slot ports, database names or directories.

use std::sync::{Arc, Mutex};

/// The indexes a runner's running jobs hold.
#[derive(Debug, Default)]
pub struct Slots {
    held: Mutex<Vec<Held>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Held {
    id: u32,
    project: u64,
    project_id: u32,
}

/// A job's indexes, given back when it is dropped.
#[derive(Debug)]
pub struct Slot {
    slots: Arc<Slots>,
    held: Held,
}

impl Slot {
    /// `CI_CONCURRENT_ID`.
    pub fn id(&self) -> u32 {
        self.held.id
    }

    /// `CI_CONCURRENT_PROJECT_ID`.
    pub fn project_id(&self) -> u32 {
        self.held.project_id
    }
}

impl Slots {
    /// Takes the lowest free index among all the runner's jobs, and the lowest free among its
    /// jobs of `project`.
    pub fn acquire(self: &Arc<Self>, project: u64) -> Slot {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let lowest_free = |taken: Vec<u32>| (0..).find(|i| !taken.contains(i)).unwrap_or(0);
        let id = lowest_free(held.iter().map(|h| h.id).collect());
        let project_id = lowest_free(
            held.iter()
                .filter(|h| h.project == project)
                .map(|h| h.project_id)
                .collect(),
        );
        let slot = Held {
            id,
            project,
            project_id,
        };
        held.push(slot);
        Slot {
            slots: self.clone(),
            held: slot,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut held = self.slots.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = held.iter().position(|h| *h == self.held) {
            held.swap_remove(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_free_index_is_taken_and_given_back() {
        let slots = Arc::new(Slots::default());
        let a = slots.acquire(1);
        let b = slots.acquire(1);
        let c = slots.acquire(2);
        assert_eq!((a.id(), b.id(), c.id()), (0, 1, 2));
        assert_eq!((a.project_id(), b.project_id(), c.project_id()), (0, 1, 0));
        drop(a);
        let d = slots.acquire(2);
        assert_eq!((d.id(), d.project_id()), (0, 1), "index 0 is free again");
        let e = slots.acquire(1);
        assert_eq!((e.id(), e.project_id()), (3, 0));
    }
}
