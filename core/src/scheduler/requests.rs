//! Job requests and machine listings: a request answered or failed, requests canceled, listings
//! asked for and their answers reconciled (lost machines, orphans).

use std::collections::BTreeSet;
use std::time::Duration;

use super::Core;
use crate::command::{Command, RemoveReason};
use crate::config::Executor;
use crate::ids::{MachineId, RunnerId};
use crate::state::{AnomalyKind, MachineState};

impl Core {
    pub(super) fn on_request_done(&mut self, runner: RunnerId, failed_retry_after: Option<u64>) {
        let now = self.state.now;
        let interval = self.config.check_interval;
        let Some(r) = self.state.runners.get_mut(runner.index()) else {
            self.anomaly(AnomalyKind::UnknownRunner, u64::from(runner.0));
            return;
        };
        if r.counts.in_flight == 0 {
            self.anomaly(AnomalyKind::UnexpectedJobResponse, u64::from(runner.0));
            return;
        }
        r.counts.in_flight -= 1;
        self.state.totals.in_flight -= 1;
        let pause = match failed_retry_after {
            Some(ms) => interval.max(Duration::from_millis(ms)),
            None => interval,
        };
        r.next_poll_at = r.next_poll_at.max(now.after(pause));
    }

    pub(super) fn on_machines_listed(
        &mut self,
        runner: RunnerId,
        request: u64,
        names: Vec<String>,
        out: &mut Vec<Command>,
    ) {
        if self.state.runners.get(runner.index()).is_none() {
            self.anomaly(AnomalyKind::UnknownRunner, u64::from(runner.0));
            return;
        }
        let listed: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        // Known machines that settled before the list was asked for and are missing from it: lost.
        let missing: Vec<MachineId> = self
            .state
            .machines
            .sorted()
            .into_iter()
            .filter(|(_, m)| {
                m.runner == runner && m.changed_seq < request && !listed.contains(m.name.as_str())
            })
            .filter(|(_, m)| {
                matches!(
                    m.state,
                    MachineState::Idle | MachineState::Busy(_) | MachineState::Shared(_)
                ) || m.retry_at.is_some()
            })
            .map(|(id, _)| id)
            .collect();
        for id in missing {
            let waiting_retry = self
                .state
                .machines
                .get(&id)
                .is_some_and(|m| m.retry_at.is_some());
            if waiting_retry {
                // A failed removal that in fact went through.
                self.forget_machine(id);
                self.state.stats.machines_removed += 1;
            } else {
                self.state.stats.machines_lost += 1;
                self.abort_jobs_on(id, out);
                self.start_removal(id, RemoveReason::Lost, out);
            }
        }
        // Unknown machines this runner would name so (its key and its MachineName, as GitLab's
        // filter): leftovers of a crash or of a lost journal. Remove them. The list also covers the
        // prefixes the runner's known machines carry (named under an earlier key, before an
        // upgrade): those are matched by name above; an unknown machine under such a prefix may be
        // another installation's, which used the same earlier key, so it is left alone.
        for name in names {
            if self.state.names.contains_key(&name)
                || !self.state.runners[runner.index()]
                    .config
                    .owns_machine(&name)
            {
                continue;
            }
            let id = self.record_machine(
                runner,
                name.clone(),
                MachineState::Removing,
                Some(RemoveReason::Orphan),
            );
            self.state.stats.orphans_found += 1;
            out.push(Command::RemoveMachine {
                machine: id,
                runner,
                name,
                reason: RemoveReason::Orphan,
            });
        }
    }

    pub(super) fn cancel_requests(&mut self, out: &mut Vec<Command>) {
        for (i, r) in self.state.runners.iter().enumerate() {
            if r.counts.in_flight > 0 {
                out.push(Command::CancelRequests {
                    runner: RunnerId(i as u16),
                });
            }
        }
    }

    pub(super) fn cancel_requests_of_retired(&mut self, out: &mut Vec<Command>) {
        for (i, r) in self.state.runners.iter().enumerate() {
            if r.retired && r.counts.in_flight > 0 {
                out.push(Command::CancelRequests {
                    runner: RunnerId(i as u16),
                });
            }
        }
    }

    pub(crate) fn request_lists(&mut self, out: &mut Vec<Command>) {
        let request = self.state.seq;
        for (i, r) in self.state.runners.iter().enumerate() {
            if matches!(r.config.executor, Executor::Pool(_) | Executor::Slots(_)) {
                let runner = RunnerId(i as u16);
                out.push(Command::ListMachines {
                    runner,
                    request,
                    prefixes: self.state.machine_prefixes(runner),
                });
            }
        }
    }
}
