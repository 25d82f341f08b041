//! Signals and lifecycle: graceful and forceful shutdown, a config reload, a resume after a restart.

use std::collections::BTreeSet;

use super::Core;
use crate::command::{Command, FailCause, RemoveReason};
use crate::config::Config;
use crate::event::FailureReason;
use crate::ids::{JobId, MachineId};
use crate::state::{AnomalyKind, JobState, MachineState, RunnerState, Shutdown};
use crate::time::Timestamp;

impl Core {
    pub(super) fn on_graceful(&mut self, out: &mut Vec<Command>) {
        if self.state.shutdown != Shutdown::None {
            return;
        }
        self.state.shutdown = Shutdown::Graceful {
            since: self.state.now,
        };
        self.cancel_requests(out);
    }

    pub(super) fn on_forceful(&mut self, out: &mut Vec<Command>) {
        let now = self.state.now;
        if let Shutdown::Forceful { .. } = self.state.shutdown {
            // A second forceful signal: exit at once.
            if !self.state.exited {
                self.state.exited = true;
                out.push(Command::Exit { clean: false });
            }
            return;
        }
        self.state.shutdown = Shutdown::Forceful {
            since: now,
            deadline: now.after(self.config.shutdown_timeout),
        };
        self.cancel_requests(out);
        let jobs: Vec<(JobId, JobState)> = self
            .state
            .jobs
            .sorted()
            .into_iter()
            .map(|(id, j)| (id, j.state))
            .collect();
        for (job, state) in jobs {
            match state {
                JobState::Queued { .. } => self.fail_queued(job, FailCause::Shutdown, out),
                JobState::Running { .. } => self.abort_job(job, out),
            }
        }
    }

    /// After a reload lowered MaxBuilds, idle machines that reached it go (busy ones after their job).
    pub(super) fn remove_used_up_idle(&mut self, out: &mut Vec<Command>) {
        let used_up: Vec<MachineId> = self
            .state
            .machines
            .sorted()
            .into_iter()
            .filter(|(_, m)| m.state == MachineState::Idle)
            .filter(|(_, m)| {
                let max = self.state.runners[m.runner.index()]
                    .config
                    .policy()
                    .map_or(0, |p| p.max_builds);
                max > 0 && m.used_count >= max
            })
            .map(|(id, _)| id)
            .collect();
        for m in used_up {
            self.start_removal(m, RemoveReason::TooManyBuilds, out);
        }
    }

    pub(super) fn on_reload(&mut self, config: Config, out: &mut Vec<Command>) {
        let now = self.state.now;
        let mut seen = BTreeSet::new();
        for rc in &config.runners {
            seen.insert(rc.name.clone());
            match self
                .state
                .runners
                .iter()
                .position(|r| r.config.name == rc.name)
            {
                Some(i) => {
                    let r = &mut self.state.runners[i];
                    r.config = rc.clone();
                    r.retired = false;
                    r.policy.valid_until = Timestamp::ZERO; // re-evaluate periods now
                    r.reap_after = Timestamp::ZERO; // IdleTime may have changed
                }
                None if self.state.runners.len() < usize::from(u16::MAX) => {
                    self.state.runners.push(RunnerState::new(rc.clone(), now));
                }
                None => self.anomaly(AnomalyKind::UnknownRunner, self.state.runners.len() as u64),
            }
        }
        for r in &mut self.state.runners {
            if !seen.contains(&r.config.name) {
                r.retired = true;
            }
        }
        // Slots per machine or uses per machine may have changed.
        self.state.rebuild_slots();
        self.cancel_requests_of_retired(out);
        self.remove_used_up_idle(out);
        self.config_digest = std::sync::OnceLock::new();
        self.state.next_list_at = match (config.reconcile_interval, self.state.next_list_at) {
            (Some(i), Some(at)) => Some(at.min(now.after(i))),
            (Some(i), None) => Some(now.after(i)),
            (None, _) => None,
        };
        self.config = config;
    }

    pub(super) fn on_resumed(&mut self, out: &mut Vec<Command>) {
        let now = self.state.now;
        // A new process: whatever shutdown the old one was in is over.
        self.state.shutdown = Shutdown::None;
        self.state.exited = false;
        // Requests in flight died with the old process.
        for r in &mut self.state.runners {
            self.state.totals.in_flight -= r.counts.in_flight;
            r.counts.in_flight = 0;
            r.next_poll_at = now;
        }
        for (id, m) in self.state.machines.sorted() {
            match m.state {
                MachineState::Creating => out.push(Command::CreateMachine {
                    machine: id,
                    runner: m.runner,
                    name: m.name.clone(),
                }),
                MachineState::Removing if m.retry_at.is_none() => {
                    out.push(Command::RemoveMachine {
                        machine: id,
                        runner: m.runner,
                        name: m.name.clone(),
                        reason: m.remove_reason.unwrap_or(RemoveReason::Lost),
                    })
                }
                _ => {}
            }
        }
        for (job, j) in self.state.jobs.sorted() {
            if let JobState::Running { machine, .. } = j.state {
                out.push(Command::ResumeJob {
                    job,
                    runner: j.runner,
                    machine,
                });
                // A cancel or abort sent before the crash may not have reached the job's own
                // record: say it again (the job's lifecycle ignores a repeat).
                if j.aborted {
                    out.push(Command::AbortJob {
                        job,
                        reason: FailureReason::RunnerSystemFailure,
                    });
                } else if j.cancel_requested {
                    out.push(Command::CancelJob { job });
                }
            }
        }
        self.request_lists(out);
    }
}
