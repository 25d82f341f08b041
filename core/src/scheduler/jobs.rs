//! Job handlers: a job received, finished or canceled, started on a machine, aborted, or failed
//! before it started; the waiting deadline of each queued job.

use std::time::Duration;

use super::{Core, DEFAULT_JOB_TIMEOUT};
use crate::command::{Command, FailCause, RemoveReason};
use crate::event::{FailureReason, JobInfo, Outcome};
use crate::ids::{JobId, MachineId, RunnerId};
use crate::state::{AnomalyKind, Job, JobState, MachineState};
use crate::time::Timestamp;

impl Core {
    /// Indexes the deadline of a job received during this event if it is still waiting.
    pub(super) fn index_deadline(&mut self, job: JobId) -> Option<Timestamp> {
        let j = self.state.jobs.get(&job)?;
        let JobState::Queued { deadline } = j.state else {
            return None;
        };
        let timeout = crate::time::millis(job_timeout(&j.info));
        let seq = j.enqueued;
        self.state.push_deadline(timeout, deadline, seq, job);
        Some(deadline)
    }

    pub(super) fn on_job_received(
        &mut self,
        runner: RunnerId,
        job: JobId,
        info: JobInfo,
        out: &mut Vec<Command>,
    ) {
        let now = self.state.now;
        let Some(r) = self.state.runners.get_mut(runner.index()) else {
            self.anomaly(AnomalyKind::UnknownRunner, u64::from(runner.0));
            out.push(Command::FailJob {
                job,
                runner,
                reason: FailureReason::RunnerSystemFailure,
                cause: FailCause::UnknownRunner,
            });
            return;
        };
        if r.counts.in_flight > 0 {
            r.counts.in_flight -= 1;
            self.state.totals.in_flight -= 1;
            // An answer with a job ends a run of unhealthy requests.
            self.set_unhealthy_run(runner, 0);
        } else {
            self.anomaly(AnomalyKind::UnexpectedJobResponse, job.0);
        }
        if self.state.jobs.contains_key(&job) {
            self.anomaly(AnomalyKind::DuplicateJob, job.0);
            return;
        }
        let deadline = now.after(job_timeout(&info));
        let seq = self.state.seq;
        self.state.jobs.insert(
            job,
            Job {
                runner,
                info,
                received_at: now,
                enqueued: seq,
                state: JobState::Queued { deadline },
                cancel_requested: false,
                aborted: false,
            },
        );
        let r = &mut self.state.runners[runner.index()];
        r.counts.queued += 1;
        self.state.totals.queued += 1;
        self.state.push_queued(runner.index(), seq, job);
        self.state.received_now.push(job);
        self.state.stats.jobs_received += 1;
    }

    /// Takes a queued job out of the job table (its index entries go stale).
    pub(super) fn dequeue(&mut self, job: JobId) -> Option<Job> {
        let j = self.state.jobs.remove(&job)?;
        if let JobState::Queued { .. } = j.state {
            self.state.runners[j.runner.index()].counts.queued -= 1;
            self.state.totals.queued -= 1;
            self.state.compact_queue(j.runner.index());
        }
        Some(j)
    }

    pub(super) fn fail_queued(&mut self, job: JobId, cause: FailCause, out: &mut Vec<Command>) {
        if let Some(j) = self.dequeue(job) {
            self.state.stats.jobs_failed_unstarted += 1;
            let reason = match cause {
                FailCause::Canceled => FailureReason::JobCanceled,
                _ => FailureReason::RunnerSystemFailure,
            };
            out.push(Command::FailJob {
                job,
                runner: j.runner,
                reason,
                cause,
            });
        }
    }

    pub(super) fn on_job_finished(
        &mut self,
        job: JobId,
        _outcome: Outcome,
        out: &mut Vec<Command>,
    ) {
        let now = self.state.now;
        let Some(j) = self.state.jobs.remove(&job) else {
            self.anomaly(AnomalyKind::UnknownJob, job.0);
            return;
        };
        let JobState::Running { machine, .. } = j.state else {
            // Nonsense: it never started. It stays queued, so it still runs or is reported.
            self.state.jobs.insert(job, j);
            self.anomaly(AnomalyKind::JobFinishedBeforeStart, job.0);
            return;
        };
        let runner = j.runner;
        self.state.stats.jobs_finished += 1;
        let r = &mut self.state.runners[runner.index()];
        r.counts.running -= 1;
        self.state.totals.running -= 1;
        let Some(mid) = machine else { return };
        let Some(m) = self.state.machines.get(&mid) else {
            return;
        };
        match m.state {
            MachineState::Busy(j) if j == job => {}
            // One of the jobs of a machine with slots: the machine frees a slot.
            MachineState::Shared(k) if k > 1 => {
                self.set_machine_state(mid, MachineState::Shared(k - 1));
                return;
            }
            MachineState::Shared(_) => {}
            _ => return, // lost or removed while the job ran; its removal is already under way
        }
        let max_builds = r.config.policy().map_or(0, |p| p.max_builds);
        if max_builds > 0 && m.used_count >= max_builds {
            self.start_removal(mid, RemoveReason::TooManyBuilds, out);
        } else if r.retired {
            self.start_removal(mid, RemoveReason::RunnerRemoved, out);
        } else {
            self.make_idle(mid, now);
        }
    }

    pub(super) fn on_job_canceled(&mut self, job: JobId, out: &mut Vec<Command>) {
        let Some(j) = self.state.jobs.get_mut(&job) else {
            self.anomaly(AnomalyKind::UnknownJob, job.0);
            return;
        };
        match j.state {
            JobState::Queued { .. } => self.fail_queued(job, FailCause::Canceled, out),
            JobState::Running { .. } => {
                if !j.cancel_requested && !j.aborted {
                    j.cancel_requested = true;
                    out.push(Command::CancelJob { job });
                }
            }
        }
    }

    /// Starts the oldest queued job of `runner` on `machine` (an idle one already taken out of the
    /// idle index, or one with a free slot), or directly for runners without a pool. The caller checked that a job is queued.
    pub(crate) fn start_job(
        &mut self,
        runner: RunnerId,
        machine: Option<MachineId>,
        out: &mut Vec<Command>,
    ) -> bool {
        let now = self.state.now;
        let Some(job) = self.state.start_queued(runner.index(), machine, now) else {
            return false;
        };
        let r = &mut self.state.runners[runner.index()];
        r.counts.queued -= 1;
        r.counts.running += 1;
        r.front_failures = 0;
        self.state.totals.queued -= 1;
        self.state.totals.running += 1;
        if let Some(mid) = machine {
            // A machine of a runner with slots counts its jobs; docker+machine's runs one.
            let slots = r.config.slot_policy().is_some();
            let to = match self.state.machines.get(&mid).map(|m| m.state) {
                Some(MachineState::Shared(k)) => MachineState::Shared(k + 1),
                Some(MachineState::Busy(_)) => MachineState::Shared(2),
                _ if slots => MachineState::Shared(1),
                _ => MachineState::Busy(job),
            };
            self.move_machine(mid, to, 1);
        }
        self.state.stats.jobs_started += 1;
        out.push(Command::RunJob {
            job,
            runner,
            machine,
        });
        true
    }

    pub(super) fn abort_job(&mut self, job: JobId, out: &mut Vec<Command>) {
        if let Some(j) = self.state.jobs.get_mut(&job)
            && !j.aborted
        {
            j.aborted = true;
            out.push(Command::AbortJob {
                job,
                reason: FailureReason::RunnerSystemFailure,
            });
        }
    }

    pub(crate) fn fail_job_deadline(&mut self, job: JobId, out: &mut Vec<Command>) {
        self.fail_queued(job, FailCause::Timeout, out);
    }

    pub(crate) fn fail_all_queued(&mut self, out: &mut Vec<Command>) {
        if self.state.totals.queued == 0 {
            return;
        }
        let jobs: Vec<JobId> = (0..self.state.runners.len())
            .flat_map(|r| self.state.queued_jobs(r))
            .collect();
        for job in jobs {
            self.fail_queued(job, FailCause::Shutdown, out);
        }
    }
}

/// How long a job may wait for a machine: its own timeout, or GitLab's default when it has none.
fn job_timeout(info: &JobInfo) -> Duration {
    if info.timeout_ms == 0 {
        DEFAULT_JOB_TIMEOUT
    } else {
        Duration::from_millis(info.timeout_ms)
    }
}
