//! The core side by side with an independent reference model of GitLab's autoscaling
//! (`oracle/model.rs`, written from `shared/reference/gitlab-autoscale.md`): on generated event
//! sequences, every step's creations, removals, job requests, job starts and failures must agree.
//! Where drover differs from GitLab on purpose, the model says so (`DEVIATION`) and the README's
//! compatibility table lists it.
//!
//! The generators cover several periods in several time zones across DST changes, MaxGrowthRate,
//! request_concurrency, `limit` and `concurrent` against requests, busy machines that vanish,
//! machine churn (creation failures of every kind, machines lost while idle or busy, failed
//! removals), reloads mid-run (limit up and down, IdleCount, MaxBuilds, a new machine key), and a
//! graceful shutdown with and without draining the machines.
//! After each sequence the world heals, and every received job must have started or failed
//! (liveness once capacity exists).
//!
//! Every run tries the same cases (a fixed seed, `common/seed.rs`);
//! `PROPTEST_CASES=5000 PROPTEST_RNG_SEED=$RANDOM cargo test -p drover-core --features testkit --test oracle`
//! for a longer hunt elsewhere. A failure prints the seed and the shrunk input, and proptest keeps
//! the failing case's own seed in `oracle.proptest-regressions`, replayed first on every run.

#[path = "oracle/gen.rs"]
mod generate;
#[path = "oracle/model.rs"]
mod model;
#[path = "common/seed.rs"]
mod seed;
#[path = "oracle/slots.rs"]
mod slots;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use drover_core::{
    Command, Config, Core, CreationFailure, Event, JobId, JobInfo, MachineId, Outcome,
    RunnerConfig, RunnerId, Signal, Step, Timestamp,
};
use generate::{config, slots_config};
use model::{Decisions, Oracle};
use proptest::prelude::*;

/// Saturday 2026-03-28 22:00 UTC: Europe's clocks go forward in the night, America's went forward
/// three weeks before; a long sequence also crosses midnights and office-hour boundaries.
const T0: Timestamp = Timestamp(1_774_735_200_000);

/// A request without a job stays open this long (GitLab's Workhorse holds it for up to a minute;
/// longer here so that healing takes fewer steps).
const LONG_POLL: Duration = Duration::from_secs(300);

/// What the core did in a step, in the oracle's terms.
fn decisions(step: &Step) -> Decisions {
    let mut d = Decisions::default();
    for c in &step.commands {
        match c {
            Command::CreateMachine { runner, .. } => *d.creates.entry(*runner).or_default() += 1,
            Command::RemoveMachine {
                machine, reason, ..
            } => {
                d.removes.insert((*machine, *reason));
            }
            Command::RequestJob { runner } => *d.requests.entry(*runner).or_default() += 1,
            Command::RunJob {
                job,
                machine: Some(m),
                ..
            } => {
                d.starts.insert((*job, *m));
            }
            Command::FailJob {
                job, reason, cause, ..
            } => {
                d.fails.insert((*job, *reason, *cause));
            }
            Command::AbortJob { job, .. } => {
                d.aborts.insert(*job);
            }
            Command::CancelJob { job } => {
                d.cancels.insert(*job);
            }
            _ => {}
        }
    }
    d
}

/// The core, the oracle, and the commands the world still owes an answer to.
struct Duo {
    core: Core,
    oracle: Oracle,
    now: Timestamp,
    wake: Option<Timestamp>,
    /// Requests in flight and when they were made (a long poll answers empty after a while).
    requests: Vec<(RunnerId, Timestamp)>,
    creating: BTreeSet<MachineId>,
    removing: BTreeSet<MachineId>,
    running: BTreeSet<JobId>,
    received: BTreeSet<JobId>,
    resolved: BTreeSet<JobId>,
    next_job: u64,
    steps: usize,
    /// Machines the core asked to create, and jobs it started.
    created: u64,
    started: u64,
}

impl Duo {
    fn new(config: Config) -> Result<Duo, TestCaseError> {
        let mut duo = Duo {
            core: Core::new(config.clone(), T0),
            oracle: Oracle::new(config, T0),
            now: T0,
            wake: None,
            requests: Vec::new(),
            creating: BTreeSet::new(),
            removing: BTreeSet::new(),
            running: BTreeSet::new(),
            received: BTreeSet::new(),
            resolved: BTreeSet::new(),
            next_job: 1,
            steps: 0,
            created: 0,
            started: 0,
        };
        duo.feed(Event::Tick)?;
        Ok(duo)
    }

    /// Hands the event to both; their decisions must agree.
    fn feed(&mut self, event: Event) -> Result<(), TestCaseError> {
        self.steps += 1;
        let mut expected = Decisions::default();
        let o = &mut self.oracle;
        o.now = self.now;
        match &event {
            Event::JobReceived { runner, job, info } => {
                o.job_received(*runner, *job, info.timeout_ms)
            }
            Event::JobRequestEmpty { runner } => o.request_empty(*runner),
            Event::JobRequestAnswered {
                runner,
                held_ms,
                long_poll,
            } => o.request_answered(*runner, *held_ms, *long_poll),
            Event::JobRequestFailed {
                runner,
                retry_after_ms,
            } => o.request_failed(*runner, *retry_after_ms, false),
            Event::JobRequestUnhealthy {
                runner,
                retry_after_ms,
            } => o.request_failed(*runner, *retry_after_ms, true),
            Event::MachineCreated { machine } => o.machine_created(*machine),
            Event::MachineCreationFailed { machine, failure } => {
                o.creation_failed(*machine, *failure, &mut expected)
            }
            Event::MachineRemoved { machine } => o.machine_removed(*machine, &mut expected),
            Event::MachineRemovalFailed { machine } => o.removal_failed(*machine),
            Event::MachineLost { machine } => o.machine_lost(*machine, &mut expected),
            Event::JobFinished { job, .. } => o.job_finished(*job, &mut expected),
            Event::JobCanceled { job } => o.job_canceled(*job, &mut expected),
            Event::Signal(Signal::Reload(c)) => o.reload((**c).clone(), &mut expected),
            Event::Signal(Signal::Graceful) => o.graceful_shutdown(),
            Event::Tick => {}
            other => unreachable!("the oracle's generator does not make {other:?}"),
        }
        o.pass(&mut expected);

        let step = self.core.handle(self.now, event.clone());
        if let Err(v) = self
            .core
            .check_invariants()
            .and_then(|()| self.core.check_step(&event, &step))
        {
            return Err(TestCaseError::fail(format!(
                "step {} ({event:?}): {v}",
                self.steps
            )));
        }
        let got = decisions(&step);
        prop_assert_eq!(
            &got,
            &expected,
            "step {} at {}: core and oracle disagree on {:?}\ncore commands: {:?}",
            self.steps,
            self.now,
            event,
            step.commands
        );
        self.wake = step.wake_at;
        for c in &step.commands {
            match c {
                Command::RequestJob { runner } => self.requests.push((*runner, self.now)),
                Command::CreateMachine { machine, .. } => {
                    self.created += 1;
                    self.creating.insert(*machine);
                }
                Command::RemoveMachine { machine, .. } => {
                    self.creating.remove(machine);
                    self.removing.insert(*machine);
                }
                Command::RunJob { job, .. } => {
                    self.started += 1;
                    self.running.insert(*job);
                }
                Command::FailJob { job, .. } => {
                    self.resolved.insert(*job);
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn pick<T: Copy>(set: &BTreeSet<T>, i: u32) -> Option<T> {
        (!set.is_empty()).then(|| *set.iter().nth(i as usize % set.len()).expect("in range"))
    }

    fn act(&mut self, (kind, a, b): (u8, u32, u32)) -> Result<(), TestCaseError> {
        match kind % 16 {
            0..=2 => {
                self.now = self
                    .now
                    .after(Duration::from_millis(u64::from(a % 900_000)));
                self.feed(Event::Tick)
            }
            3..=5 if !self.requests.is_empty() => {
                let (runner, _) = self.requests.remove(a as usize % self.requests.len());
                let event = match b % 9 {
                    0 => Event::JobRequestEmpty { runner },
                    5 | 6 => Event::JobRequestAnswered {
                        runner,
                        held_ms: u64::from(a % 8_000),
                        long_poll: b % 3 == 0,
                    },
                    1 => Event::JobRequestFailed {
                        runner,
                        retry_after_ms: (b % 3 == 0).then_some(u64::from(b % 60_000)),
                    },
                    // Often enough in a row to reach the backoff.
                    7 | 8 => Event::JobRequestUnhealthy {
                        runner,
                        retry_after_ms: (b % 5 == 0).then_some(u64::from(b % 60_000)),
                    },
                    _ => {
                        let job = JobId(self.next_job);
                        self.next_job += 1;
                        self.received.insert(job);
                        let info = JobInfo {
                            timeout_ms: u64::from(b % 5) * 900_000,
                            queued_ms: 0,
                        };
                        Event::JobReceived { runner, job, info }
                    }
                };
                self.feed(event)
            }
            6 | 7 => {
                let Some(machine) = Self::pick(&self.creating, a) else {
                    return Ok(());
                };
                self.creating.remove(&machine);
                let event = match b % 8 {
                    0 => Event::MachineCreationFailed {
                        machine,
                        failure: CreationFailure::Retryable,
                    },
                    1 => Event::MachineCreationFailed {
                        machine,
                        failure: CreationFailure::Quota,
                    },
                    2 if b % 16 == 2 => Event::MachineCreationFailed {
                        machine,
                        failure: CreationFailure::Fatal,
                    },
                    _ => Event::MachineCreated { machine },
                };
                self.feed(event)
            }
            8 => {
                let Some(machine) = Self::pick(&self.removing, a) else {
                    return Ok(());
                };
                self.removing.remove(&machine);
                if b % 4 == 0 {
                    self.feed(Event::MachineRemovalFailed { machine })
                } else {
                    self.feed(Event::MachineRemoved { machine })
                }
            }
            9 | 10 => {
                let Some(job) = Self::pick(&self.running, a) else {
                    return Ok(());
                };
                self.running.remove(&job);
                self.resolved.insert(job);
                let outcome = if b % 3 == 0 {
                    Outcome::Canceled
                } else {
                    Outcome::Success
                };
                self.feed(Event::JobFinished { job, outcome })
            }
            11 => {
                // A machine dies or vanishes: idle, busy (its job is aborted) or still creating.
                let live: Vec<MachineId> = self
                    .core
                    .state()
                    .machines()
                    .into_iter()
                    .filter(|(_, m)| m.state != drover_core::state::MachineState::Removing)
                    .map(|(id, _)| id)
                    .collect();
                let Some(&machine) = live.get(a as usize % live.len().max(1)) else {
                    return Ok(());
                };
                self.creating.remove(&machine);
                if b % 3 == 0 {
                    // Removed at the provider behind our back, busy or not.
                    self.feed(Event::MachineRemoved { machine })
                } else {
                    self.feed(Event::MachineLost { machine })
                }
            }
            12 => {
                let Some(job) = Self::pick(&self.received, a) else {
                    return Ok(());
                };
                if self.resolved.contains(&job) {
                    return Ok(());
                }
                self.feed(Event::JobCanceled { job })
            }
            13 => {
                // A reload: the same runners with a new limit, IdleCount, MaxBuilds, MaxGrowthRate
                // or machine key (a rotated token under an older drover).
                let mut c = self.core.config().clone();
                let i = a as usize % c.runners.len();
                let r = &mut c.runners[i];
                match b % 5 {
                    0 => r.limit = r.limit.saturating_sub(1 + b % 3),
                    1 => r.limit = if r.limit == 0 { 2 } else { r.limit + 1 + b % 3 },
                    2 => r.short_token = format!("rot{}", b % 1000),
                    3 => {
                        let p = r.policy_mut().expect("a pool");
                        p.max_builds = (b >> 4) % 3;
                        p.max_growth_rate = (b >> 6) % 3;
                    }
                    _ => r.policy_mut().expect("a pool").base.idle_count = (b >> 4) % 5,
                }
                c.concurrent = 1 + (a >> 8) % 6;
                self.feed(Event::Signal(Signal::Reload(Box::new(c))))
            }
            14 if a % 40 == 0 => self.feed(Event::Signal(Signal::Graceful)),
            _ => {
                // Wake exactly when the core asked to.
                if let Some(w) = self.wake {
                    self.now = self.now.max(w);
                }
                self.feed(Event::Tick)
            }
        }
    }

    /// Faults heal: creations and removals succeed, jobs finish, no more jobs come; time moves on
    /// until nothing is left to do. Every step is still compared.
    fn heal(&mut self) -> Result<(), TestCaseError> {
        let horizon = self.now.after(Duration::from_secs(3 * 3600));
        for _ in 0..20_000 {
            if let Some(m) = self.creating.pop_first() {
                self.feed(Event::MachineCreated { machine: m })?;
            } else if let Some(m) = self.removing.pop_first() {
                self.feed(Event::MachineRemoved { machine: m })?;
            } else if let Some(j) = self.running.pop_first() {
                self.resolved.insert(j);
                self.feed(Event::JobFinished {
                    job: j,
                    outcome: Outcome::Success,
                })?;
            } else if let Some(i) = self
                .requests
                .iter()
                .position(|(_, at)| at.after(LONG_POLL) <= self.now)
            {
                let (runner, _) = self.requests.remove(i);
                self.feed(Event::JobRequestEmpty { runner })?;
            } else if let Some(t) = self
                .requests
                .iter()
                .map(|(_, at)| at.after(LONG_POLL))
                .chain(self.wake)
                .min()
                .filter(|t| *t <= horizon)
            {
                self.now = self.now.max(t);
                if self.wake.is_some_and(|w| w <= self.now) {
                    self.feed(Event::Tick)?;
                }
            } else {
                return Ok(());
            }
        }
        Err(TestCaseError::fail(
            "the world did not settle after healing",
        ))
    }
}

fn run(config: Config, acts: Vec<(u8, u32, u32)>) -> Result<(), TestCaseError> {
    let mut duo = Duo::new(config)?;
    for a in acts {
        duo.act(a)?;
    }
    duo.heal()?;
    check_settled(&duo)
}

/// After healing: every job started or failed, the core's totals agree, and polling goes on.
fn check_settled(duo: &Duo) -> Result<(), TestCaseError> {
    // Liveness: once capacity exists, every received job was started or failed, and nothing waits.
    let pending: Vec<&JobId> = duo.received.difference(&duo.resolved).collect();
    prop_assert!(
        pending.is_empty(),
        "jobs never started nor failed: {pending:?}"
    );
    let held: BTreeMap<JobId, _> = duo
        .core
        .state()
        .jobs()
        .into_iter()
        .map(|(id, j)| (id, j.state))
        .collect();
    prop_assert!(held.is_empty(), "jobs still held: {held:?}");
    // The core's running totals tell the same story.
    let stats = duo.core.state().stats();
    prop_assert_eq!(stats.jobs_received, duo.received.len() as u64);
    prop_assert_eq!(stats.jobs_started, duo.started);
    prop_assert_eq!(stats.jobs_finished, duo.started);
    prop_assert_eq!(
        stats.jobs_started + stats.jobs_failed_unstarted,
        duo.received.len() as u64
    );
    prop_assert_eq!(stats.machines_requested, duo.created);
    prop_assert_eq!(stats.machines_created, duo.oracle.machines_up);
    prop_assert_eq!(stats.creation_failures, duo.oracle.creation_failures);
    prop_assert_eq!(stats.removal_failures, duo.oracle.removal_failures);
    prop_assert_eq!(stats.machines_abandoned, duo.oracle.abandoned);
    prop_assert_eq!(stats.machines_lost, duo.oracle.lost);
    // Polling never stalls: unless shutting down, every runner has a request in flight or a wake-up
    // due by its next poll.
    // (A runner whose job slots other runners hold under `concurrent` waits for their answers.)
    if !duo.oracle.graceful {
        let s = duo.core.state();
        let t = s.totals();
        let all_slots_taken =
            t.running + t.queued + t.in_flight >= duo.core.config().concurrent.max(1);
        for (i, r) in s.runners().iter().enumerate() {
            let polling = duo.requests.iter().any(|(runner, _)| runner.index() == i)
                || duo.wake.is_some_and(|w| w <= r.next_poll_at().max(duo.now));
            prop_assert!(
                polling || all_slots_taken,
                "runner {} stopped polling at {}",
                i,
                duo.now
            );
        }
    }
    Ok(())
}

proptest! {
    // 128 cases (CI runs this on 2 shared cores) from a fixed seed: see `common/seed.rs`.
    #![proptest_config(seed::config(128))]

    #[test]
    fn core_agrees_with_the_reference_model(
        n in any::<[u32; 8]>(),
        acts in prop::collection::vec(any::<(u8, u32, u32)>(), 0..250),
    ) {
        run(config(n), acts)?;
    }

    /// The same with job slots (docker-autoscaler runners) against the model of taskscaler.
    #[test]
    fn core_agrees_with_the_reference_model_with_slots(
        n in any::<[u32; 8]>(),
        acts in prop::collection::vec(any::<(u8, u32, u32)>(), 0..250),
    ) {
        run(slots_config(n), acts)?;
    }
}

/// The MaxGrowthRate gates, hit head on: an on-demand runner with MaxGrowthRate 1 receives jobs
/// faster than machines boot, and a warm pool of 4 may create only 2 at a time.
#[test]
fn max_growth_rate_is_respected_on_both_paths() {
    for (idle, growth) in [(0, 1), (4, 2)] {
        let mut c = Config::new(8);
        let mut r = RunnerConfig::pool("g", idle, 8);
        r.request_concurrency = 3;
        r.policy_mut().expect("a pool").max_growth_rate = growth;
        c.runners.push(r);
        let mut duo = Duo::new(c).expect("agrees");
        for i in 0..40u32 {
            // Answer every request with a job, let machines come up one by one.
            duo.act((3, 0, 2 + 5 * i)).expect("agrees");
            duo.act((6, i, 3)).expect("agrees");
            duo.act((0, 1000, 0)).expect("agrees");
        }
        duo.heal().expect("agrees");
    }
}

/// A job whose machine was lost and removed still holds its job slot until it ends: with `limit` 2,
/// one such job and two idle machines, only one request may go out (the model and the core agree
/// step by step, and the count is checked directly).
#[test]
fn a_job_outliving_its_lost_machine_keeps_its_job_slot() {
    let mut c = Config::new(8);
    let mut r = RunnerConfig::pool("s", 2, 2);
    r.request_concurrency = 2;
    c.runners.push(r);
    let mut duo = Duo::new(c).expect("agrees");
    for m in [1, 2] {
        duo.creating.remove(&MachineId(m));
        duo.feed(Event::MachineCreated {
            machine: MachineId(m),
        })
        .expect("agrees");
    }
    assert_eq!(duo.requests.len(), 2);
    let (runner, _) = duo.requests.remove(0);
    duo.received.insert(JobId(1));
    duo.feed(Event::JobReceived {
        runner,
        job: JobId(1),
        info: JobInfo::default(),
    })
    .expect("agrees");
    let (runner, _) = duo.requests.remove(0);
    duo.feed(Event::JobRequestEmpty { runner }).expect("agrees");
    let busy = duo
        .core
        .state()
        .job(JobId(1))
        .and_then(|j| match j.state {
            drover_core::state::JobState::Running { machine, .. } => machine,
            _ => None,
        })
        .expect("job 1 runs on a machine");
    duo.feed(Event::MachineLost { machine: busy })
        .expect("agrees");
    duo.removing.remove(&busy);
    duo.feed(Event::MachineRemoved { machine: busy })
        .expect("agrees");
    let replacement = duo.creating.pop_first().expect("a replacement machine");
    duo.feed(Event::MachineCreated {
        machine: replacement,
    })
    .expect("agrees");
    duo.now = duo.now.after(Duration::from_secs(10));
    duo.feed(Event::Tick).expect("agrees");
    let r = &duo.core.state().runners()[0];
    assert_eq!((r.counts.idle, r.counts.running), (2, 1));
    assert_eq!(
        r.counts.in_flight, 1,
        "limit 2: the aborted job still holds a slot"
    );
}

/// An on-demand runner whose creation failed fatally (its waiting job failed with it) stops taking
/// jobs while it backs off, and starts polling again when the backoff ends: it is never left with
/// neither a request in flight nor a wake-up.
#[test]
fn an_on_demand_runner_polls_again_after_its_creation_backoff() {
    let mut config = Config::new(4).with_runner(RunnerConfig::pool("od", 0, 4));
    config.reconcile_interval = None; // no periodic list to wake it by chance
    let mut duo = Duo::new(config).expect("agrees");
    let (runner, _) = duo.requests.remove(0);
    duo.received.insert(JobId(1));
    duo.feed(Event::JobReceived {
        runner,
        job: JobId(1),
        info: JobInfo {
            // Short, so that its stale deadline does not wake the runner by chance.
            timeout_ms: 60_000,
            queued_ms: 0,
        },
    })
    .expect("agrees");
    let machine = duo.creating.pop_first().expect("its machine");
    while let Some((runner, _)) = duo.requests.pop() {
        duo.feed(Event::JobRequestEmpty { runner }).expect("agrees");
    }
    duo.feed(Event::MachineCreationFailed {
        machine,
        failure: CreationFailure::Fatal,
    })
    .expect("agrees");
    assert!(duo.resolved.contains(&JobId(1)), "the waiting job failed");
    duo.heal().expect("agrees");
    check_settled(&duo).expect("settled and polling");
}
