//! The ordered indexes of the dispatch path, as FIFO deques with lazy deletion: O(1) amortized where
//! ordered trees would cost O(log n) with a cache miss per level.
//!
//! - Idle machines per runner, by last use. Machines only ever become idle "now" and time never goes
//!   backwards, so pushing at the back keeps the deque sorted: the back is the most recently used, the
//!   front the least.
//! - Queued jobs per runner, first come first served.
//! - Queued jobs' deadlines, one deque per distinct timeout (sorted, since jobs arrive in time order).
//!
//! An entry whose machine or job has moved on is stale; it is skipped and dropped when it reaches an
//! end. A stale entry can never look valid again: idle entries carry the machine's `last_used`, queue
//! entries the event sequence number at which the job was queued.

use crate::ids::{JobId, MachineId};
use crate::state::{JobState, MachineState, State};
use crate::time::Timestamp;

impl State {
    fn idle_entry_valid(&self, (at, m): (Timestamp, MachineId)) -> bool {
        self.machines
            .get(&m)
            .is_some_and(|m| m.state == MachineState::Idle && m.last_used == at)
    }

    fn queue_entry_valid(&self, runner: usize, (seq, job): (u64, JobId)) -> bool {
        self.jobs.get(&job).is_some_and(|j| {
            j.enqueued == seq
                && j.runner.index() == runner
                && matches!(j.state, JobState::Queued { .. })
        })
    }

    /// Indexes a machine that became idle at `at`, the current time (so the deque stays sorted).
    pub(crate) fn push_idle(&mut self, runner: usize, at: Timestamp, m: MachineId) {
        self.runners[runner].idle.push_back((at, m));
    }

    /// Takes the most recently used idle machine out of the index.
    pub(crate) fn pop_mru(&mut self, runner: usize) -> Option<MachineId> {
        while let Some(&entry) = self.runners[runner].idle.back() {
            self.runners[runner].idle.pop_back();
            if self.idle_entry_valid(entry) {
                return Some(entry.1);
            }
        }
        None
    }

    /// The least recently used idle machine and its last use, dropping stale entries on the way.
    pub(crate) fn peek_lru(&mut self, runner: usize) -> Option<(Timestamp, MachineId)> {
        while let Some(&entry) = self.runners[runner].idle.front() {
            if self.idle_entry_valid(entry) {
                return Some(entry);
            }
            self.runners[runner].idle.pop_front();
        }
        None
    }

    /// Takes the least recently used idle machine out of the index.
    pub(crate) fn pop_lru(&mut self, runner: usize) -> Option<MachineId> {
        let (_, m) = self.peek_lru(runner)?;
        self.runners[runner].idle.pop_front();
        Some(m)
    }

    pub(crate) fn push_queued(&mut self, runner: usize, seq: u64, job: JobId) {
        self.runners[runner].queue.push_back((seq, job));
    }

    /// The oldest queued job of a runner, dropping stale entries on the way.
    pub(crate) fn front_queued(&mut self, runner: usize) -> Option<JobId> {
        while let Some(&entry) = self.runners[runner].queue.front() {
            if self.queue_entry_valid(runner, entry) {
                return Some(entry.1);
            }
            self.runners[runner].queue.pop_front();
        }
        None
    }

    /// After a queued job left other than by starting (canceled, timed out, failed): without a
    /// machine to start jobs, nothing else would ever drop its entry, and a runner whose machines
    /// cannot be created would grow its queue by one entry per job. Drops stale entries at the
    /// front, and rebuilds the deque once most of it is stale (amortized O(1) per job).
    pub(crate) fn compact_queue(&mut self, runner: usize) {
        self.front_queued(runner);
        let live = self.runners[runner].counts.queued as usize;
        if self.runners[runner].queue.len() > 2 * live + 16 {
            let mut queue = std::mem::take(&mut self.runners[runner].queue);
            queue.retain(|&entry| self.queue_entry_valid(runner, entry));
            self.runners[runner].queue = queue;
        }
    }

    /// Takes the oldest queued job of a runner out of the queue and marks it running: one lookup.
    pub(crate) fn start_queued(
        &mut self,
        runner: usize,
        machine: Option<MachineId>,
        now: Timestamp,
    ) -> Option<JobId> {
        while let Some((seq, job)) = self.runners[runner].queue.pop_front() {
            if let Some(j) = self.jobs.get_mut(&job)
                && j.enqueued == seq
                && j.runner.index() == runner
                && matches!(j.state, JobState::Queued { .. })
            {
                j.state = JobState::Running {
                    machine,
                    started_at: now,
                };
                return Some(job);
            }
        }
        None
    }

    pub(crate) fn push_deadline(
        &mut self,
        timeout_ms: u64,
        deadline: Timestamp,
        seq: u64,
        job: JobId,
    ) {
        self.queue_deadlines
            .entry(timeout_ms)
            .or_default()
            .push_back((deadline, seq, job));
        self.next_deadline = Some(self.next_deadline.map_or(deadline, |d| d.min(deadline)));
    }

    /// The queued jobs whose deadline has passed, and the next deadline to wake for. Looks at the
    /// deques only once the earliest known deadline is due (it may have left the queue since: then this
    /// finds the next one).
    pub(crate) fn expired_jobs(&mut self, now: Timestamp) -> (Vec<JobId>, Option<Timestamp>) {
        let mut expired = Vec::new();
        if self.next_deadline.is_none_or(|d| d > now) {
            return (expired, self.next_deadline);
        }
        let mut next: Option<Timestamp> = None;
        let mut emptied = Vec::new();
        for (&timeout, q) in self.queue_deadlines.iter_mut() {
            while let Some(&(deadline, seq, job)) = q.front() {
                let valid = self
                    .jobs
                    .get(&job)
                    .is_some_and(|j| j.enqueued == seq && j.state == JobState::Queued { deadline });
                if !valid {
                    q.pop_front();
                } else if deadline <= now {
                    expired.push(job);
                    q.pop_front();
                } else {
                    next = Some(next.map_or(deadline, |n| n.min(deadline)));
                    break;
                }
            }
            if q.is_empty() {
                emptied.push(timeout);
            }
        }
        for timeout in emptied {
            self.queue_deadlines.remove(&timeout);
        }
        self.next_deadline = next;
        (expired, next)
    }

    /// Idle machines of a runner, least recently used first.
    pub fn idle_machines(&self, runner: usize) -> Vec<MachineId> {
        self.runners
            .get(runner)
            .map(|r| {
                r.idle
                    .iter()
                    .filter(|&&e| self.idle_entry_valid(e))
                    .map(|&(_, m)| m)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Jobs of a runner waiting for a machine, oldest first.
    pub fn queued_jobs(&self, runner: usize) -> Vec<JobId> {
        self.runners
            .get(runner)
            .map(|r| {
                r.queue
                    .iter()
                    .filter(|&&e| self.queue_entry_valid(runner, e))
                    .map(|&(_, j)| j)
                    .collect()
            })
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::{Config, RunnerConfig};
    use crate::event::{Event, JobInfo};
    use crate::ids::{JobId, RunnerId};
    use crate::scheduler::Core;
    use crate::time::Timestamp;

    /// A runner whose machine never comes up: every job it receives is canceled while queued.
    /// Its queue index must not keep an entry per job that ever passed through.
    #[test]
    fn jobs_leaving_the_queue_without_a_machine_leave_no_entries_behind() {
        let t0 = Timestamp(1_767_571_200_000);
        let mut core = Core::new(
            Config::new(4).with_runner(RunnerConfig::pool("stuck", 0, 1)),
            t0,
        );
        let info = JobInfo {
            timeout_ms: 3_600_000,
            queued_ms: 0,
        };
        for i in 0..1_000u64 {
            let now = t0.after(Duration::from_millis(i));
            let runner = RunnerId(0);
            let _ = core.handle(
                now,
                Event::JobReceived {
                    runner,
                    job: JobId(i),
                    info,
                },
            );
            let _ = core.handle(now, Event::JobCanceled { job: JobId(i) });
        }
        let state = core.state();
        assert_eq!(state.totals().queued, 0);
        assert!(
            state.runners()[0].queue.len() <= 16,
            "{} stale queue entries",
            state.runners()[0].queue.len()
        );
    }
}
