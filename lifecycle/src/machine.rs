//! The transitions: [`Job::handle`], the only mutator of a job.

use std::time::Duration;

use drover_core::{FailureReason, Outcome};

use crate::event::{AcceptAnswer, Action, Event, FinalTrace, Note};
use crate::recovery::{Recovery, recovery};
use crate::state::Phase;
use crate::{Job, Policy};

impl Job {
    /// Takes one event; returns what to do, in order. Events that do not fit the phase (a late
    /// answer, a repeated placement) change nothing.
    #[must_use]
    pub fn handle(&mut self, event: Event, policy: &Policy) -> Vec<Action> {
        let mut out = Vec::new();
        match event {
            Event::Received {
                runner,
                label,
                held,
            } => {
                self.runner = runner;
                self.label = label;
                self.held = held;
                if let Phase::Received { attempts } = self.phase {
                    out.push(Action::Accept {
                        after: policy.accept_wait(attempts + 1),
                    });
                }
            }
            Event::Labelled { label } => self.label = label,
            Event::AcceptAnswered(answer) => self.accept_answered(answer, policy, &mut out),
            Event::Placed => self.placed(policy, &mut out),
            Event::ContainersListed { steps } => {
                if self.is_executing() {
                    let saw_output = self.trace.cursor.is_some_and(|c| c.saw_step_output());
                    if steps || saw_output {
                        // Its steps exist (or existed): re-attached, never created again, and
                        // stopped again if it was asked to stop.
                        out.push(Action::Reattach);
                        if let Some(stop) = self.stop {
                            out.extend(stop_action(stop));
                        }
                    } else if let Some(outcome) = self.stop {
                        // Asked to stop before its script started: it ends here.
                        self.phase = Phase::Ended { outcome };
                        out.push(Action::RemoveContainers);
                    } else {
                        // Its script never started: start it, after what the trace holds.
                        self.phase = Phase::Preparing;
                        self.trace.cursor = None;
                        out.push(Action::Start { again: true });
                    }
                }
            }
            Event::TraceStored {
                len,
                cursor,
                checkpoint,
            } => {
                self.trace.len = len;
                self.trace.acked = self.trace.acked.min(len);
                self.trace.cursor = Some(cursor);
                self.trace.checkpoint = checkpoint;
                if self.phase == Phase::Preparing && cursor.saw_step_output() {
                    self.phase = Phase::Running;
                }
            }
            Event::TraceAcked { offset } => self.trace.acked = offset.min(self.trace.len),
            Event::StepsEnded { outcome } => {
                if self.is_executing() {
                    // A job asked to stop ends as asked, even if its script got to the end first.
                    let outcome = match (outcome, self.stop) {
                        (Outcome::Success, Some(stop)) => stop,
                        _ => outcome,
                    };
                    self.phase = Phase::Ended { outcome };
                    out.push(Action::RemoveContainers);
                }
            }
            Event::ContainersRemoved => {
                if let Phase::Ended { outcome } = self.phase {
                    self.report(outcome, FinalTrace::Stored, &mut out);
                }
            }
            Event::MachineLost => {
                if self.is_executing() {
                    // Its containers may still run if the machine comes back (the core reuses
                    // it): removed first, as far as the machine can be reached.
                    let outcome = failed(FailureReason::RunnerSystemFailure);
                    self.phase = Phase::Ended { outcome };
                    out.push(Action::RemoveContainers);
                }
            }
            // Whatever the answer: after `GaveUp` GitLab times the job out itself, and sending again
            // could only repeat what the uploader's retries already tried.
            Event::FinalAnswered(_) => {
                if let Phase::Reporting { outcome } = self.phase {
                    self.phase = Phase::Reported { outcome };
                    self.settle(outcome, &mut out);
                }
            }
            Event::ClosedAnswered { closed } => {
                if let Phase::Reporting { outcome } = self.phase {
                    if closed {
                        self.phase = Phase::Reported { outcome };
                        self.settle(outcome, &mut out);
                    } else {
                        out.push(self.send_final(outcome));
                    }
                }
            }
            Event::CancelRequested => {
                let live = matches!(
                    self.phase,
                    Phase::Accepted | Phase::Preparing | Phase::Running
                );
                if live && self.held && !self.cancel_told {
                    self.cancel_told = true;
                    out.push(Action::Tell(Note::Canceled));
                }
            }
            Event::RemoteEnded => match self.phase {
                Phase::Accepted => return self.handle(Event::CancelRequested, policy),
                Phase::Preparing | Phase::Running => {
                    self.remote_over = true;
                    self.stop_with(failed(FailureReason::JobCanceled), &mut out);
                }
                _ => {}
            },
            Event::Cancel => self.core_ends(Outcome::Canceled, None, &mut out),
            Event::Abort { reason } => self.core_ends(failed(reason), None, &mut out),
            Event::Fail { reason, text } => {
                // No event follows a failure in the core: it forgets the job at once.
                let outcome = match reason {
                    FailureReason::JobCanceled => Outcome::Canceled,
                    r => failed(r),
                };
                match self.phase {
                    Phase::Received { .. } | Phase::Accepted | Phase::Dropped => {
                        self.held = false;
                        self.core_ends(outcome, Some(text), &mut out);
                    }
                    _ => {}
                }
            }
            Event::Restarted => self.restarted(policy, &mut out),
        }
        out
    }

    /// The executor has (or may have) the job.
    fn is_executing(&self) -> bool {
        matches!(self.phase, Phase::Preparing | Phase::Running)
    }

    fn accept_answered(&mut self, answer: AcceptAnswer, policy: &Policy, out: &mut Vec<Action>) {
        let Phase::Received { attempts } = self.phase else {
            return;
        };
        match answer {
            AcceptAnswer::Accepted { cancel_requested } => {
                self.phase = Phase::Accepted;
                if let Some((outcome, text)) = self.doomed.take() {
                    self.report(outcome, FinalTrace::Unstarted(text), out);
                    return;
                }
                if cancel_requested {
                    // Canceled while it was being assigned: it is ours to report as canceled.
                    self.handle_into(Event::CancelRequested, policy, out);
                }
                if self.placed {
                    self.start(false, out);
                } else {
                    out.push(Action::KeepAlive {
                        every: policy.keep_alive_every,
                    });
                }
            }
            AcceptAnswer::Failed if attempts + 1 < policy.accept_attempts => {
                self.phase = Phase::Received {
                    attempts: attempts + 1,
                };
                out.push(Action::Accept {
                    after: policy.accept_wait(attempts + 2),
                });
            }
            AcceptAnswer::Failed | AcceptAnswer::TakenBack => self.drop_job(out),
        }
    }

    fn handle_into(&mut self, event: Event, policy: &Policy, out: &mut Vec<Action>) {
        out.extend(self.handle(event, policy));
    }

    /// GitLab gives the job to a runner again: run nothing, report nothing.
    fn drop_job(&mut self, out: &mut Vec<Action>) {
        self.phase = Phase::Dropped;
        self.doomed = None;
        if !self.held {
            out.push(Action::Discard);
        } else if self.placed {
            // Placed already: ending it frees its machine.
            out.push(Action::Tell(Note::Finished(Outcome::Canceled)));
        } else {
            out.push(Action::Tell(Note::Canceled));
        }
    }

    fn placed(&mut self, _policy: &Policy, out: &mut Vec<Action>) {
        if self.placed {
            return;
        }
        self.placed = true;
        match self.phase {
            Phase::Accepted => self.start(false, out),
            // After a restart: its containers decide (`ContainersListed`).
            Phase::Preparing | Phase::Running => out.push(Action::Inspect),
            Phase::Ended { .. } => out.push(Action::RemoveContainers),
            Phase::Dropped if self.held => {
                out.push(Action::Tell(Note::Finished(Outcome::Canceled)))
            }
            // Not acknowledged yet: it starts once it is. Reported ones were settled at the restart.
            _ => {}
        }
    }

    fn start(&mut self, again: bool, out: &mut Vec<Action>) {
        self.phase = Phase::Preparing;
        out.push(Action::Start { again });
    }

    /// The core cancels, aborts or fails the job.
    fn core_ends(&mut self, outcome: Outcome, text: Option<String>, out: &mut Vec<Action>) {
        match self.phase {
            Phase::Received { .. } => self.doomed = Some((outcome, text)),
            // It never ran. The core expects its end if it canceled or aborted it (a placed
            // job whose placement this process has not seen yet), not after failing it (`Fail`
            // cleared `held`).
            Phase::Accepted => self.report(outcome, FinalTrace::Unstarted(text), out),
            Phase::Preparing | Phase::Running => self.stop_with(outcome, out),
            Phase::Dropped if self.held => {
                out.push(Action::Tell(Note::Finished(Outcome::Canceled)));
            }
            Phase::Dropped => out.push(Action::Discard),
            _ => {}
        }
    }

    /// Stops the executing job, saved for a restart. A cancel never softens an abort, and a
    /// repeated request is not sent twice.
    fn stop_with(&mut self, outcome: Outcome, out: &mut Vec<Action>) {
        let repeated = matches!(
            (self.stop, outcome),
            (Some(Outcome::Failed { .. }), _) | (Some(Outcome::Canceled), Outcome::Canceled)
        );
        if repeated || outcome == Outcome::Success {
            return;
        }
        self.stop = Some(outcome);
        out.extend(stop_action(outcome));
    }

    fn report(&mut self, outcome: Outcome, trace: FinalTrace, out: &mut Vec<Action>) {
        if let FinalTrace::Unstarted(text) = &trace {
            self.unstarted = Some(text.clone().unwrap_or_default());
        }
        if self.remote_over {
            self.phase = Phase::Reported { outcome };
            self.settle(outcome, out);
            return;
        }
        self.phase = Phase::Reporting { outcome };
        out.push(Action::SendFinal { outcome, trace });
    }

    fn send_final(&self, outcome: Outcome) -> Action {
        let trace = match &self.unstarted {
            Some(text) if text.is_empty() => FinalTrace::Unstarted(None),
            Some(text) => FinalTrace::Unstarted(Some(text.clone())),
            None => FinalTrace::Stored,
        };
        Action::SendFinal { outcome, trace }
    }

    /// GitLab knows the end: tell the core, or drop the record of a job it does not hold.
    fn settle(&mut self, outcome: Outcome, out: &mut Vec<Action>) {
        if self.held {
            out.push(Action::Tell(Note::Finished(outcome)));
        } else {
            out.push(Action::Discard);
        }
    }

    fn restarted(&mut self, policy: &Policy, out: &mut Vec<Action>) {
        self.placed = false;
        self.cancel_told = false;
        self.restarted = true;
        match recovery(self.phase.kind()) {
            Recovery::Accept => {
                self.phase = Phase::Received { attempts: 0 };
                out.push(Action::Accept {
                    after: Duration::ZERO,
                });
            }
            Recovery::KeepAliveUntilPlaced => out.push(Action::KeepAlive {
                every: policy.keep_alive_every,
            }),
            Recovery::InspectWhenPlaced | Recovery::RemoveContainersWhenPlaced => {}
            Recovery::CheckClosed => out.push(Action::CheckClosed),
            Recovery::Settle => {
                if let Some(outcome) = self.phase.outcome() {
                    self.settle(outcome, out);
                }
            }
            Recovery::TellDropped => self.drop_job(out),
        }
    }
}

/// What stops an executing job for `outcome`.
fn stop_action(outcome: Outcome) -> Option<Action> {
    match outcome {
        Outcome::Canceled => Some(Action::Cancel),
        Outcome::Failed { reason, .. } => Some(Action::Abort(reason)),
        Outcome::Success => None,
    }
}

fn failed(reason: FailureReason) -> Outcome {
    Outcome::Failed {
        reason,
        exit_code: None,
    }
}
