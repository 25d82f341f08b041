//! Job requests and machine listings: a request answered or failed and the pause before the
//! runner's next one ([`request_pause`]), requests canceled, listings asked for and their answers
//! reconciled (lost machines, orphans).

use std::collections::BTreeSet;
use std::time::Duration;

use super::Core;
use crate::command::{Command, RemoveReason};
use crate::config::Executor;
use crate::ids::{MachineId, RunnerId};
use crate::state::{AnomalyKind, MachineState};

/// How a job request without a job ended, as [`request_pause`] sees it.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum RequestEnd {
    /// Empty, with nothing said of how ([`crate::Event::JobRequestEmpty`]).
    Empty,
    /// Empty after the coordinator held it for `held` ([`crate::Event::JobRequestAnswered`]).
    Answered { held: Duration, long_poll: bool },
    /// Failed ([`crate::Event::JobRequestFailed`], [`crate::Event::JobRequestUnhealthy`]), with
    /// the server's wish and the runner's unhealthy requests in a row, this one included.
    Failed {
        retry_after: Option<Duration>,
        unhealthy: u32,
    },
}

/// The pause before a runner's next job request after one ended without a job (after a job the
/// runner asks again at once, as GitLab Runner does). Requests of one slot start `check_interval`
/// apart at the most often, unless the coordinator long-polls:
///
/// - an answer held at least `check_interval` is followed at once: the hold was the pause, so a
///   request slot still asks no more often than `check_interval` (a long poll that ran out, or a
///   slow coordinator);
/// - a long-poll answer that is news (`long_poll`: a hold ended because the queue changed, or a
///   fresh queue version) is followed at once: the next request is held until the queue changes,
///   so requests go no faster than the runner's queue changes;
/// - any other empty answer (a coordinator without Workhorse, or one that echoes the version
///   sent) waits `check_interval`, so such a GitLab is never hammered;
/// - a failure waits the longest of `check_interval`, the server's `Retry-After` and the
///   runner's [`unhealthy_backoff`].
pub fn request_pause(check_interval: Duration, end: RequestEnd) -> Duration {
    match end {
        RequestEnd::Answered { held, long_poll } if long_poll || held >= check_interval => {
            Duration::ZERO
        }
        RequestEnd::Empty | RequestEnd::Answered { .. } => check_interval,
        RequestEnd::Failed {
            retry_after,
            unhealthy,
        } => check_interval
            .max(retry_after.unwrap_or_default())
            .max(unhealthy_backoff(unhealthy).unwrap_or_default()),
    }
}

/// Unhealthy job requests in a row (a `403`, no usable answer) before a runner backs off, as
/// GitLab Runner's default `unhealthy_requests_limit`: a single dropped connection only waits
/// `check_interval`.
pub const UNHEALTHY_LIMIT: u32 = 3;

/// The pause after `n` unhealthy requests in a row: none below [`UNHEALTHY_LIMIT`], then 60 s
/// doubling up to 10 minutes (GitLab Runner rests the runner for its `unhealthy_interval`, an hour
/// by default, at once; drover tries again sooner, and keeps the run across reloads).
pub fn unhealthy_backoff(n: u32) -> Option<Duration> {
    let over = n.checked_sub(UNHEALTHY_LIMIT)?;
    Some(
        Duration::from_secs(60)
            .saturating_mul(1 << over.min(4))
            .min(Duration::from_secs(600)),
    )
}

impl Core {
    /// A failed request: `unhealthy` ones lengthen the runner's run of them, others leave it.
    pub(super) fn on_request_failed(
        &mut self,
        runner: RunnerId,
        retry_after_ms: Option<u64>,
        unhealthy: bool,
    ) {
        let run = self
            .unhealthy_run(runner)
            .saturating_add(u32::from(unhealthy));
        let end = RequestEnd::Failed {
            retry_after: retry_after_ms.map(Duration::from_millis),
            unhealthy: run,
        };
        if self.on_request_done(runner, end) && unhealthy {
            self.set_unhealthy_run(runner, run);
        }
    }

    /// A request ended without a job: the runner's next one waits [`request_pause`]. Whether it
    /// was one of the runner's requests in flight (else it is an anomaly, and changes nothing).
    pub(super) fn on_request_done(&mut self, runner: RunnerId, end: RequestEnd) -> bool {
        let now = self.state.now;
        let pause = request_pause(self.config.check_interval, end);
        let Some(r) = self.state.runners.get_mut(runner.index()) else {
            self.anomaly(AnomalyKind::UnknownRunner, u64::from(runner.0));
            return false;
        };
        if r.counts.in_flight == 0 {
            self.anomaly(AnomalyKind::UnexpectedJobResponse, u64::from(runner.0));
            return false;
        }
        r.counts.in_flight -= 1;
        self.state.totals.in_flight -= 1;
        r.next_poll_at = r.next_poll_at.max(now.after(pause));
        if !matches!(end, RequestEnd::Failed { .. }) {
            self.set_unhealthy_run(runner, 0);
        }
        true
    }

    /// The runner's unhealthy requests in a row.
    pub(super) fn unhealthy_run(&self, runner: RunnerId) -> u32 {
        self.state
            .unhealthy
            .get(runner.index())
            .copied()
            .unwrap_or(0)
    }

    /// Sets the runner's run of unhealthy requests; the list grows only for a run that starts.
    pub(super) fn set_unhealthy_run(&mut self, runner: RunnerId, n: u32) {
        let runs = &mut self.state.unhealthy;
        match runs.get_mut(runner.index()) {
            Some(slot) => *slot = n,
            None if n > 0 => {
                runs.resize(runner.index(), 0);
                runs.push(n);
            }
            None => {}
        }
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

#[cfg(test)]
mod tests {
    use super::{RequestEnd, UNHEALTHY_LIMIT, request_pause, unhealthy_backoff};
    use proptest::prelude::*;
    use std::time::Duration;

    const CHECK: Duration = Duration::from_secs(3);

    fn answered(held_ms: u64, long_poll: bool) -> RequestEnd {
        RequestEnd::Answered {
            held: Duration::from_millis(held_ms),
            long_poll,
        }
    }

    #[test]
    fn fast_empty_answers_keep_check_interval_and_held_ones_go_on_at_once() {
        assert_eq!(request_pause(CHECK, RequestEnd::Empty), CHECK);
        assert_eq!(
            request_pause(CHECK, answered(40, false)),
            CHECK,
            "no Workhorse"
        );
        assert_eq!(
            request_pause(CHECK, answered(50_000, false)),
            Duration::ZERO,
            "a long poll that ran out"
        );
        assert_eq!(
            request_pause(CHECK, answered(2_999, false)),
            CHECK,
            "held, but shorter than check_interval"
        );
        assert_eq!(request_pause(CHECK, answered(3_000, false)), Duration::ZERO);
        assert_eq!(
            request_pause(CHECK, answered(5, true)),
            Duration::ZERO,
            "a hold ended by a new job, or a fresh queue version"
        );
        let failed = |ms: Option<u64>, unhealthy| RequestEnd::Failed {
            retry_after: ms.map(Duration::from_millis),
            unhealthy,
        };
        assert_eq!(request_pause(CHECK, failed(None, 0)), CHECK);
        assert_eq!(request_pause(CHECK, failed(Some(1), 0)), CHECK);
        assert_eq!(
            request_pause(CHECK, failed(Some(60_000), 0)),
            Duration::from_secs(60)
        );
        assert_eq!(request_pause(CHECK, failed(None, 2)), CHECK);
        assert_eq!(
            request_pause(CHECK, failed(Some(1), 3)),
            Duration::from_secs(60),
            "the third unhealthy request in a row"
        );
        assert_eq!(
            request_pause(CHECK, failed(Some(900_000), 4)),
            Duration::from_secs(900),
            "the server's wish, when longer"
        );
    }

    #[test]
    fn a_runner_backs_off_only_after_repeated_unhealthy_requests() {
        assert_eq!(unhealthy_backoff(0), None);
        assert_eq!(unhealthy_backoff(UNHEALTHY_LIMIT - 1), None);
        assert_eq!(
            unhealthy_backoff(UNHEALTHY_LIMIT),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            unhealthy_backoff(UNHEALTHY_LIMIT + 1),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            unhealthy_backoff(UNHEALTHY_LIMIT + 30),
            Some(Duration::from_secs(600))
        );
    }

    proptest! {
        /// Without a long-poll signal a request slot starts requests at least `check_interval`
        /// apart: the time the request took plus the pause after it.
        #[test]
        fn without_long_polling_requests_are_paced(check_ms in 0u64..120_000, held_ms in 0u64..200_000) {
            let check = Duration::from_millis(check_ms);
            let pause = request_pause(check, answered(held_ms, false));
            prop_assert!(Duration::from_millis(held_ms) + pause >= check);
            prop_assert!(pause == Duration::ZERO || pause == check);
            prop_assert!(request_pause(check, RequestEnd::Empty) == check);
        }

        /// A long-poll answer never waits, and nothing waits longer than check_interval but a
        /// failure with the server's Retry-After or a run of unhealthy requests; those never
        /// shorten the wait.
        #[test]
        fn long_polls_go_on_at_once_and_only_failures_wait_longer(
            check_ms in 0u64..120_000,
            held_ms in 0u64..200_000,
            retry in proptest::option::of(0u64..3_600_000),
            unhealthy in 0u32..40,
        ) {
            let check = Duration::from_millis(check_ms);
            prop_assert_eq!(request_pause(check, answered(held_ms, true)), Duration::ZERO);
            let retry_after = retry.map(Duration::from_millis);
            let healthy = request_pause(check, RequestEnd::Failed { retry_after, unhealthy: 0 });
            prop_assert_eq!(healthy, check.max(Duration::from_millis(retry.unwrap_or(0))));
            let sick = request_pause(check, RequestEnd::Failed { retry_after, unhealthy });
            prop_assert!(sick >= healthy);
            prop_assert!(sick <= healthy.max(Duration::from_secs(600)));
        }
    }
}
