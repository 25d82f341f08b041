//! GitLab docker+machine semantics and drover's deliberate differences, one behaviour per test,
//! written from /shared/reference/gitlab-autoscale.md.

use std::time::Duration;

use drover_core::state::MachineState;
use drover_core::testkit::World;
use drover_core::{
    Command, Config, CreationFailure, Event, FailureReason, JobId, JobInfo, Outcome, Period,
    PolicyValues, RemoveReason, RunnerConfig, RunnerId, Signal, Timestamp,
};

const R: RunnerId = RunnerId(0);
const T0: Timestamp = Timestamp(1_767_571_200_000); // 2026-01-05T00:00:00Z, a Monday

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn pool(idle: u32, limit: u32) -> RunnerConfig {
    RunnerConfig::pool("linux", idle, limit)
}

fn world(concurrent: u32, runner: RunnerConfig) -> World {
    World::new(Config::new(concurrent).with_runner(runner), T0)
}

fn count(cmds: &[Command], f: impl Fn(&Command) -> bool) -> usize {
    cmds.iter().filter(|c| f(c)).count()
}

fn creates(cmds: &[Command]) -> usize {
    count(cmds, |c| matches!(c, Command::CreateMachine { .. }))
}

fn requests(cmds: &[Command]) -> usize {
    count(cmds, |c| matches!(c, Command::RequestJob { .. }))
}

fn removals(cmds: &[Command], reason: RemoveReason) -> usize {
    count(
        cmds,
        |c| matches!(c, Command::RemoveMachine { reason: r, .. } if *r == reason),
    )
}

fn info() -> JobInfo {
    JobInfo {
        timeout_ms: 3_600_000,
        queued_ms: 0,
    }
}

#[test]
fn idle_count_keeps_warm_machines() {
    let mut w = world(10, pool(3, 10));
    let cmds = w.handle(Event::Tick);
    assert_eq!(creates(&cmds), 3);
    // Gated: nothing is requested until a machine is idle.
    assert_eq!(requests(&cmds), 0);
    w.advance(secs(60));
    assert_eq!(w.fleet(), (0, 3, 0, 0));
    // One request (request_concurrency 1) now that idle machines exist.
    assert_eq!(w.core.state().totals().in_flight, 1);
    w.submit(R, secs(300));
    w.advance(secs(1));
    // The job took an idle machine; Available (creating + idle) is refilled to IdleCount.
    let (creating, idle, busy, _) = w.fleet();
    assert_eq!((creating + idle, busy), (3, 1));
}

#[test]
fn machine_names_are_allocated_before_creation() {
    let mut r = pool(1, 5);
    r.short_token = "6sykqxw9b".into();
    r.policy_mut().unwrap().machine_name = "ci-%s.example.com".into();
    let mut w = world(5, r);
    let cmds = w.handle(Event::Tick);
    let Some(Command::CreateMachine { machine, name, .. }) = cmds.first() else {
        panic!("{cmds:?}")
    };
    assert!(
        name.starts_with("runner-6sykqxw9b-ci-1767571200-"),
        "{name}"
    );
    assert!(name.ends_with(".example.com"), "{name}");
    // Known to the core (and so to the journal) before the provider was asked.
    assert_eq!(
        w.core.state().machine(*machine).map(|m| m.state),
        Some(MachineState::Creating)
    );
    assert_eq!(w.machine(name), Some(*machine));
}

#[test]
fn idle_scale_factor_scales_with_machines_in_use() {
    let mut r = pool(10, 100);
    let p = r.policy_mut().unwrap();
    p.base.idle_scale_factor = 0.5;
    p.base.idle_count_min = 2;
    let mut w = world(100, r);
    let cmds = w.handle(Event::Tick);
    assert_eq!(creates(&cmds), 2, "IdleCountMin floor with nothing in use");
    w.advance(secs(60));
    // Occupy 12 machines: the target grows to floor(12 * 0.5) = 6 available machines.
    for _ in 0..12 {
        w.submit(R, secs(100_000));
    }
    w.advance(secs(600));
    let (creating, idle, busy, _) = w.fleet();
    assert_eq!(busy, 12);
    assert_eq!(creating + idle, 6);
}

#[test]
fn on_demand_with_idle_count_zero() {
    let mut w = world(10, pool(0, 10));
    let cmds = w.handle(Event::Tick);
    assert_eq!(creates(&cmds), 0);
    // Not gated: a request goes out with no machine at all, because one can be created.
    assert_eq!(requests(&cmds), 1);
    let job = w.submit(R, secs(30));
    w.advance(Duration::ZERO);
    assert_eq!(
        w.fleet(),
        (1, 0, 0, 0),
        "the received job created its machine"
    );
    assert!(matches!(
        w.core.state().job(job).map(|j| j.state),
        Some(drover_core::state::JobState::Queued { .. })
    ));
    w.advance(secs(60));
    assert_eq!(
        w.fleet().2,
        1,
        "the job runs on its machine once it is ready"
    );
}

#[test]
fn gated_runner_does_not_request_without_an_idle_machine() {
    let mut w = world(10, pool(1, 10));
    w.handle(Event::Tick);
    w.advance(secs(60));
    assert_eq!(w.core.state().totals().in_flight, 1);
    w.submit(R, secs(1000));
    w.advance(secs(1));
    // The only idle machine is busy and its replacement is still creating: no request in flight.
    assert_eq!(w.fleet(), (1, 0, 1, 0));
    assert_eq!(w.core.state().totals().in_flight, 0);
    w.advance(secs(60));
    assert_eq!(w.core.state().totals().in_flight, 1);
}

#[test]
fn idle_time_removes_only_surplus_machines_least_recently_used_first() {
    let mut r = pool(1, 10);
    r.policy_mut().unwrap().base.idle_time_ms = 1_800_000;
    r.request_concurrency = 4;
    let mut w = world(10, r);
    w.record = true;
    w.handle(Event::Tick);
    w.advance(secs(60));
    // Jobs arrive while each one occupies the only idle machine: the fleet grows (gated, so one at a time).
    for _ in 0..4 {
        w.submit(R, secs(600));
    }
    w.advance(secs(1200));
    let (_, idle, busy, _) = w.fleet();
    assert_eq!(busy, 0);
    assert!(idle >= 3, "surplus idle machines exist: {:?}", w.fleet());
    // Within IdleTime of their last job they stay.
    w.advance(secs(60));
    assert_eq!(w.fleet().1, idle);
    let before: Vec<(String, drover_core::Timestamp)> = {
        w.core
            .state()
            .idle_machines(0)
            .into_iter()
            .map(|m| {
                (
                    w.core.state().machine(m).unwrap().name.clone(),
                    w.core.state().machine(m).unwrap().last_used,
                )
            })
            .collect()
    };
    w.advance(secs(1800));
    // Only the IdleCount floor survives, and it is the most recently used machine.
    assert_eq!(w.fleet(), (0, 1, 0, 0));
    let kept = w
        .core
        .state()
        .machines()
        .into_iter()
        .map(|(_, m)| m)
        .next()
        .unwrap()
        .name
        .clone();
    assert_eq!(kept, before.last().unwrap().0);
}

#[test]
fn idle_machines_within_target_never_expire() {
    let mut r = pool(2, 10);
    r.policy_mut().unwrap().base.idle_time_ms = 1000;
    let mut w = world(10, r);
    w.handle(Event::Tick);
    w.advance(secs(24 * 3600));
    assert_eq!(w.fleet(), (0, 2, 0, 0));
    assert_eq!(w.core.state().stats().machines_removed, 0);
}

#[test]
fn max_builds_removes_a_machine_after_its_last_allowed_job() {
    let mut r = pool(1, 10);
    r.policy_mut().unwrap().max_builds = 2;
    r.policy_mut().unwrap().base.idle_time_ms = 3_600_000;
    let mut w = world(10, r);
    w.record = true;
    w.handle(Event::Tick);
    w.advance(secs(60));
    for _ in 0..2 {
        w.submit(R, secs(10));
        w.advance(secs(11));
    }
    let all: Vec<Command> = w.records.iter().flat_map(|r| r.commands.clone()).collect();
    assert_eq!(removals(&all, RemoveReason::TooManyBuilds), 1, "{all:?}");
    // Both jobs ran on the first machine (most recently used first), which was then replaced.
    assert!(
        w.core
            .state()
            .machines()
            .into_iter()
            .map(|(_, m)| m)
            .all(|m| m.used_count <= 2)
    );
}

#[test]
fn jobs_go_to_the_most_recently_used_idle_machine() {
    let mut r = pool(3, 10);
    r.request_concurrency = 1;
    let mut w = world(10, r);
    w.handle(Event::Tick);
    w.advance(secs(60));
    let j1 = w.submit(R, secs(10));
    w.advance(secs(20));
    let m1 = match w
        .core
        .state()
        .machines()
        .into_iter()
        .map(|(_, m)| m)
        .find(|m| m.used_count == 1)
    {
        Some(m) => m.name.clone(),
        None => panic!("no machine ran the first job"),
    };
    let _ = j1;
    w.submit(R, secs(10));
    w.advance(secs(20));
    let again = w
        .core
        .state()
        .machines()
        .into_iter()
        .map(|(_, m)| m)
        .find(|m| m.name == m1)
        .map(|m| m.used_count);
    assert_eq!(
        again,
        Some(2),
        "the second job reused the most recently used machine"
    );
}

#[test]
fn max_growth_rate_limits_concurrent_creations() {
    let mut r = pool(20, 50);
    r.policy_mut().unwrap().max_growth_rate = 5;
    let mut w = world(50, r);
    let cmds = w.handle(Event::Tick);
    assert_eq!(creates(&cmds), 5);
    w.advance(secs(60));
    assert_eq!(w.fleet(), (5, 5, 0, 0));
    w.advance(secs(120));
    assert_eq!(w.fleet(), (5, 15, 0, 0));
    w.advance(secs(60));
    assert_eq!(w.fleet(), (0, 20, 0, 0));
}

#[test]
fn limit_caps_machines_in_every_state_and_jobs() {
    let mut w = world(100, pool(0, 3));
    w.core = drover_core::Core::new(
        Config::new(100).with_runner({
            let mut r = pool(0, 3);
            r.request_concurrency = 10;
            r
        }),
        T0,
    );
    w.handle(Event::Tick);
    for _ in 0..10 {
        w.submit(R, secs(600));
    }
    w.advance(secs(300));
    let (creating, idle, busy, removing) = w.fleet();
    assert!(creating + idle + busy + removing <= 3);
    assert_eq!(busy, 3);
    assert_eq!(w.core.state().totals().running, 3);
}

#[test]
fn concurrent_is_shared_by_runners() {
    let mut a = RunnerConfig::pool("a", 0, 0);
    a.request_concurrency = 10;
    let mut b = RunnerConfig::pool("b", 0, 0);
    b.request_concurrency = 10;
    let mut w = World::new(Config::new(4).with_runner(a).with_runner(b), T0);
    w.handle(Event::Tick);
    for _ in 0..10 {
        w.submit(RunnerId(0), secs(600));
        w.submit(RunnerId(1), secs(600));
    }
    w.advance(secs(300));
    assert_eq!(w.core.state().totals().running, 4);
}

#[test]
fn request_concurrency_and_check_interval() {
    let mut r = pool(0, 0);
    r.request_concurrency = 3;
    let mut c = Config::new(10).with_runner(r);
    c.check_interval = secs(5);
    let mut core = drover_core::Core::new(c, T0);
    let step = core.handle(T0, Event::Tick);
    assert_eq!(requests(&step.commands), 3);
    let step = core.handle(T0, Event::JobRequestEmpty { runner: R });
    assert_eq!(
        requests(&step.commands),
        0,
        "waits check_interval after an empty answer"
    );
    assert_eq!(step.wake_at, Some(T0.after(secs(5))));
    let step = core.handle(T0.after(secs(5)), Event::Tick);
    assert_eq!(requests(&step.commands), 1);
    // A received job does not pause polling.
    let step = core.handle(
        T0.after(secs(6)),
        Event::JobReceived {
            runner: R,
            job: JobId(1),
            info: info(),
        },
    );
    assert_eq!(requests(&step.commands), 1);
    // A failed request honours the server's Retry-After.
    let step = core.handle(
        T0.after(secs(7)),
        Event::JobRequestFailed {
            runner: R,
            retry_after_ms: Some(60_000),
        },
    );
    assert_eq!(requests(&step.commands), 0);
    let _ = core.handle(T0.after(secs(30)), Event::Tick);
    let step = core.handle(T0.after(secs(67)), Event::Tick);
    assert_eq!(requests(&step.commands), 1);
}

/// With long polling the runner keeps a request outstanding: an empty answer the coordinator held
/// (a long poll that ran out, or ended by a new job) is followed by the next request at once; a
/// fast empty answer from a coordinator without long polling waits `check_interval`.
#[test]
fn held_answers_are_followed_at_once_and_fast_ones_are_paced() {
    let mut c = Config::new(10).with_runner(pool(0, 0));
    c.check_interval = secs(3);
    let mut core = drover_core::Core::new(c, T0);
    let step = core.handle(T0, Event::Tick);
    assert_eq!(requests(&step.commands), 1);
    let answered = |held_ms, long_poll| Event::JobRequestAnswered {
        runner: R,
        held_ms,
        long_poll,
    };
    // The first answer (no last_update yet) comes from Rails with a fresh queue version.
    let step = core.handle(T0.after(secs(0)), answered(20, true));
    assert_eq!(requests(&step.commands), 1, "a long-poll answer: at once");
    // The poll runs out after 50 s.
    let step = core.handle(T0.after(secs(50)), answered(50_000, false));
    assert_eq!(
        requests(&step.commands),
        1,
        "held as long as a pause: at once"
    );
    // A job ends the hold early: the bare 204 is news.
    let step = core.handle(T0.after(secs(51)), answered(1_000, true));
    assert_eq!(requests(&step.commands), 1);
    let step = core.handle(
        T0.after(secs(51)),
        Event::JobReceived {
            runner: R,
            job: JobId(1),
            info: info(),
        },
    );
    assert_eq!(requests(&step.commands), 1, "after a job: at once");
    // A coordinator without long polling answers at once: paced.
    let step = core.handle(T0.after(secs(52)), answered(30, false));
    assert_eq!(requests(&step.commands), 0);
    assert_eq!(step.wake_at, Some(T0.after(secs(55))));
    assert_eq!(
        requests(&core.handle(T0.after(secs(54)), Event::Tick).commands),
        0
    );
    assert_eq!(
        requests(&core.handle(T0.after(secs(55)), Event::Tick).commands),
        1
    );
}

/// Unhealthy job requests (a `403`, no usable answer) back a runner off only from the third in a
/// row: a minute, then doubling; any answer ends the run, and other failures neither lengthen nor
/// end it (GitLab Runner's `unhealthy_requests_limit`).
#[test]
fn a_run_of_unhealthy_requests_backs_the_runner_off() {
    let mut c = Config::new(10).with_runner(pool(0, 0));
    c.check_interval = secs(3);
    let mut core = drover_core::Core::new(c, T0);
    let mut now = T0;
    let step = core.handle(now, Event::Tick);
    assert_eq!(requests(&step.commands), 1);
    let unhealthy = Event::JobRequestUnhealthy {
        runner: R,
        retry_after_ms: None,
    };
    // Hands `event` to the core at `now` and returns the pause until the next request.
    fn pause_after(core: &mut drover_core::Core, event: Event, now: &mut Timestamp) -> u64 {
        let step = core.handle(*now, event);
        assert_eq!(requests(&step.commands), 0);
        // Other work may wake the core first (its periodic checks): tick until it asks.
        let mut wake = step.wake_at.expect("the next request is planned");
        loop {
            let step = core.handle(wake, Event::Tick);
            if requests(&step.commands) == 1 {
                break;
            }
            wake = step.wake_at.expect("the next request is planned");
        }
        let pause = wake.0 - now.0;
        *now = wake;
        pause
    }
    assert_eq!(pause_after(&mut core, unhealthy.clone(), &mut now), 3_000);
    assert_eq!(pause_after(&mut core, unhealthy.clone(), &mut now), 3_000);
    assert_eq!(
        pause_after(&mut core, unhealthy.clone(), &mut now),
        60_000,
        "the third"
    );
    assert_eq!(pause_after(&mut core, unhealthy.clone(), &mut now), 120_000);
    let failed = Event::JobRequestFailed {
        runner: R,
        retry_after_ms: None,
    };
    assert_eq!(
        pause_after(&mut core, failed, &mut now),
        120_000,
        "a 5xx keeps the run as it is"
    );
    assert_eq!(pause_after(&mut core, unhealthy.clone(), &mut now), 240_000);
    for _ in 0..4 {
        pause_after(&mut core, unhealthy.clone(), &mut now);
    }
    assert_eq!(
        pause_after(&mut core, unhealthy.clone(), &mut now),
        600_000,
        "ten minutes at the most"
    );
    let answered = Event::JobRequestAnswered {
        runner: R,
        held_ms: 50_000,
        long_poll: false,
    };
    let step = core.handle(now, answered);
    assert_eq!(requests(&step.commands), 1, "a held answer: at once");
    assert_eq!(
        pause_after(&mut core, unhealthy, &mut now),
        3_000,
        "an answer ended the run"
    );
}

#[test]
fn periods_last_match_wins_and_switch_at_boundaries() {
    let mut r = pool(1, 20);
    let p = r.policy_mut().unwrap();
    p.base.idle_time_ms = 0;
    p.periods = vec![
        Period::new(
            &["* * 9-17 * * mon-fri *"],
            "UTC",
            PolicyValues {
                idle_count: 5,
                ..Default::default()
            },
        )
        .unwrap(),
        // Fridays override the office-hours block: last match wins, and replaces every value.
        Period::new(
            &["* * * * * fri *"],
            "UTC",
            PolicyValues {
                idle_count: 2,
                ..Default::default()
            },
        )
        .unwrap(),
    ];
    let mut w = world(20, r);
    let step_cmds = w.handle(Event::Tick);
    assert_eq!(creates(&step_cmds), 1, "Monday 00:00: the base IdleCount");
    w.run_until(T0.after(secs(9 * 3600 + 120)));
    assert_eq!(w.fleet().1, 5, "Monday 09:00: office hours");
    assert_eq!(w.core.state().runners()[0].policy().period, Some(0));
    w.run_until(T0.after(secs(18 * 3600 + 60)));
    assert_eq!(
        w.fleet().1,
        1,
        "Monday 18:00: back to base, surplus gone (IdleTime 0)"
    );
    w.run_until(T0.after(secs(4 * 86400 + 10 * 3600)));
    assert_eq!(w.fleet().1, 2, "Friday 10:00: the later block wins");
    assert_eq!(w.core.state().runners()[0].policy().period, Some(1));
}

#[test]
fn creation_failures_back_off_exponentially_without_storms() {
    let mut core = drover_core::Core::new(Config::new(10).with_runner(pool(2, 10)), T0);
    let step = core.handle(T0, Event::Tick);
    let ids: Vec<_> = step
        .commands
        .iter()
        .filter_map(|c| match c {
            Command::CreateMachine { machine, .. } => Some(*machine),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 2);
    let step = core.handle(
        T0.after(secs(1)),
        Event::MachineCreationFailed {
            machine: ids[0],
            failure: CreationFailure::Retryable,
        },
    );
    assert_eq!(
        removals(&step.commands, RemoveReason::CreationFailed),
        1,
        "leftovers are cleaned up"
    );
    assert_eq!(creates(&step.commands), 0, "no immediate retry");
    let until = core.state().runners()[0].create_blocked_until();
    assert_eq!(until, T0.after(secs(1 + 5)));
    let step = core.handle(
        T0.after(secs(2)),
        Event::MachineCreationFailed {
            machine: ids[1],
            failure: CreationFailure::Retryable,
        },
    );
    assert_eq!(creates(&step.commands), 0);
    assert_eq!(
        core.state().runners()[0].create_blocked_until(),
        T0.after(secs(2 + 10)),
        "doubles"
    );
    let step = core.handle(T0.after(secs(12)), Event::Tick);
    assert_eq!(creates(&step.commands), 2, "retries after the backoff");
    // Quota errors back off longer.
    assert!(
        drover_core::creation_backoff(CreationFailure::Quota, 1)
            > drover_core::creation_backoff(CreationFailure::Retryable, 1)
    );
}

#[test]
fn waiting_jobs_fail_after_repeated_creation_failures() {
    let mut core = drover_core::Core::new(Config::new(10).with_runner(pool(0, 10)), T0);
    let _ = core.handle(T0, Event::Tick);
    let mut t = T0;
    let step = core.handle(
        t,
        Event::JobReceived {
            runner: R,
            job: JobId(7),
            info: info(),
        },
    );
    let mut machine = step.commands.iter().find_map(|c| match c {
        Command::CreateMachine { machine, .. } => Some(*machine),
        _ => None,
    });
    let mut failed = false;
    for _ in 0..drover_core::PREPARE_ATTEMPTS {
        let Some(m) = machine else { break };
        t = t.after(secs(1));
        let step = core.handle(
            t,
            Event::MachineCreationFailed {
                machine: m,
                failure: CreationFailure::Retryable,
            },
        );
        failed |= step.commands.iter().any(|c| {
            matches!(
                c,
                Command::FailJob {
                    job: JobId(7),
                    reason: FailureReason::RunnerSystemFailure,
                    ..
                }
            )
        });
        t = core.state().runners()[0].create_blocked_until();
        let step = core.handle(t, Event::Tick);
        machine = step.commands.iter().find_map(|c| match c {
            Command::CreateMachine { machine, .. } => Some(*machine),
            _ => None,
        });
    }
    assert!(
        failed,
        "the job is reported failed after {} failed creations",
        drover_core::PREPARE_ATTEMPTS
    );
    assert!(core.state().job(JobId(7)).is_none());
}

/// Regression (issue #9, bug 3): an on-demand runner whose machine creation is backing off takes no
/// job it cannot make a machine for (the job stays in GitLab's queue for other runners); when a job
/// does fail because its machines could not be created, the command says so, for its trace.
#[test]
fn on_demand_runner_takes_no_jobs_while_creation_backs_off() {
    let mut core = drover_core::Core::new(Config::new(10).with_runner(pool(0, 10)), T0);
    let step = core.handle(T0, Event::Tick);
    assert_eq!(requests(&step.commands), 1);
    let step = core.handle(
        T0,
        Event::JobReceived {
            runner: R,
            job: JobId(7),
            info: info(),
        },
    );
    let m = step.commands.iter().find_map(|c| match c {
        Command::CreateMachine { machine, .. } => Some(*machine),
        _ => None,
    });
    assert_eq!(requests(&step.commands), 1, "room for another machine");
    let step = core.handle(T0, Event::JobRequestEmpty { runner: R });
    assert_eq!(requests(&step.commands), 0, "check_interval");
    let t = T0.after(secs(1));
    let step = core.handle(
        t,
        Event::MachineCreationFailed {
            machine: m.unwrap(),
            failure: CreationFailure::Retryable,
        },
    );
    let until = core.state().runners()[0].create_blocked_until();
    assert!(until > t.after(secs(3)));
    assert_eq!(requests(&step.commands), 0);
    // Past check_interval, still backing off: no request.
    let step = core.handle(t.after(secs(3)), Event::Tick);
    assert_eq!(
        requests(&step.commands),
        0,
        "no job is taken for a machine that cannot be created yet"
    );
    assert!(step.wake_at.is_some_and(|w| w <= until));
    // The backoff is over: the waiting job gets a machine and requests resume.
    let step = core.handle(until, Event::Tick);
    assert_eq!(creates(&step.commands), 1);
    assert_eq!(requests(&step.commands), 1);
    // A fatal failure fails the waiting job, and says why.
    let m = step.commands.iter().find_map(|c| match c {
        Command::CreateMachine { machine, .. } => Some(*machine),
        _ => None,
    });
    let step = core.handle(
        until,
        Event::MachineCreationFailed {
            machine: m.unwrap(),
            failure: CreationFailure::Fatal,
        },
    );
    assert!(step.commands.iter().any(|c| matches!(
        c,
        Command::FailJob {
            job: JobId(7),
            reason: FailureReason::RunnerSystemFailure,
            cause: drover_core::FailCause::CreationFailed,
            ..
        }
    )));
}

#[test]
fn fatal_creation_failure_fails_waiting_jobs_at_once() {
    let mut core = drover_core::Core::new(Config::new(10).with_runner(pool(0, 10)), T0);
    let _ = core.handle(T0, Event::Tick);
    let step = core.handle(
        T0,
        Event::JobReceived {
            runner: R,
            job: JobId(7),
            info: info(),
        },
    );
    let m = step.commands.iter().find_map(|c| match c {
        Command::CreateMachine { machine, .. } => Some(*machine),
        _ => None,
    });
    let step = core.handle(
        T0,
        Event::MachineCreationFailed {
            machine: m.unwrap(),
            failure: CreationFailure::Fatal,
        },
    );
    assert_eq!(
        count(&step.commands, |c| matches!(c, Command::FailJob { .. })),
        1
    );
}

#[test]
fn failed_removals_retry_with_backoff_and_stop_eating_the_limit() {
    let mut r = pool(1, 1);
    r.policy_mut().unwrap().max_removal_attempts = 5;
    r.policy_mut().unwrap().max_builds = 1;
    let mut w = world(10, r);
    w.handle(Event::Tick);
    w.advance(secs(60));
    w.submit(R, secs(10));
    w.advance(secs(5));
    // Intercept: the job finishes, the machine is removed (MaxBuilds 1), and removal keeps failing.
    w.advance(secs(5));
    let removing: Vec<_> = w
        .core
        .state()
        .machines()
        .into_iter()
        .filter(|(_, m)| m.state == MachineState::Removing)
        .map(|(id, _)| id)
        .collect();
    assert_eq!(removing.len(), 1);
    let m = removing[0];
    // The world will report MachineRemoved after 10 s; fail it first, three times.
    let mut core = w.core.clone();
    let mut t = w.now;
    for attempt in 1..=3u32 {
        let step = core.handle(t, Event::MachineRemovalFailed { machine: m });
        assert_eq!(
            creates(&step.commands),
            if attempt < 3 { 0 } else { 1 },
            "attempt {attempt}: {step:?}"
        );
        t = t.after(drover_core::removal_backoff(attempt));
        let step = core.handle(t, Event::Tick);
        assert_eq!(
            removals(&step.commands, RemoveReason::TooManyBuilds),
            1,
            "retried after backoff"
        );
    }
    // Stuck after three failures: it no longer counts against limit = 1, so a replacement was created.
    assert_eq!(core.state().runners()[0].counts.stuck, 1);
    for _ in 4..=5 {
        let _ = core.handle(t, Event::MachineRemovalFailed { machine: m });
        t = t.after(secs(600));
        let _ = core.handle(t, Event::Tick);
    }
    assert!(
        core.state().machine(m).is_none(),
        "given up after MaxRemovalAttempts"
    );
    assert_eq!(core.state().stats().machines_abandoned, 1);
    core.check_invariants().unwrap();
}

#[test]
fn graceful_shutdown_finishes_jobs_then_exits() {
    let mut w = world(10, pool(2, 10));
    w.handle(Event::Tick);
    w.advance(secs(60));
    w.submit(R, secs(300));
    w.advance(secs(1));
    let cmds = w.handle(Event::Signal(Signal::Graceful));
    assert!(
        cmds.iter()
            .any(|c| matches!(c, Command::CancelRequests { .. }))
    );
    w.submit(R, secs(10));
    w.advance(secs(100));
    assert_eq!(w.exited, None, "a job is still running");
    assert_eq!(
        w.core.state().stats().jobs_started,
        1,
        "no new job was requested"
    );
    w.advance(secs(300));
    assert_eq!(w.exited, Some(true));
    // Machines stay for the next start unless draining is asked for.
    assert!(w.fleet().1 >= 1);
}

#[test]
fn graceful_shutdown_with_drain_removes_every_machine() {
    let mut c = Config::new(10).with_runner(pool(2, 10));
    c.drain_machines_on_shutdown = true;
    let mut w = World::new(c, T0);
    w.handle(Event::Tick);
    w.advance(secs(60));
    w.handle(Event::Signal(Signal::Graceful));
    w.advance(secs(60));
    assert_eq!(w.exited, Some(true));
    assert_eq!(w.fleet(), (0, 0, 0, 0));
    assert!(w.provider_machines().is_empty());
}

#[test]
fn forceful_shutdown_aborts_jobs_and_a_second_signal_exits_at_once() {
    let mut w = world(10, pool(2, 10));
    w.handle(Event::Tick);
    w.advance(secs(60));
    let job = w.submit(R, secs(300));
    w.advance(secs(1));
    let cmds = w.handle(Event::Signal(Signal::Forceful));
    assert!(
        cmds.iter()
            .any(|c| matches!(c, Command::AbortJob { job: j, .. } if *j == job))
    );
    w.advance(secs(1));
    assert_eq!(
        w.exited,
        Some(true),
        "exits clean once the aborted job reported back"
    );

    // A queued job is failed at once; the shutdown waits for the canceled request to come back.
    let mut core = drover_core::Core::new(Config::new(10).with_runner(pool(0, 10)), T0);
    let _ = core.handle(T0, Event::Tick);
    let _ = core.handle(
        T0,
        Event::JobReceived {
            runner: R,
            job: JobId(1),
            info: info(),
        },
    );
    let step = core.handle(T0, Event::Signal(Signal::Forceful));
    assert!(
        step.commands
            .iter()
            .any(|c| matches!(c, Command::FailJob { job: JobId(1), .. }))
    );
    assert!(
        step.commands
            .iter()
            .any(|c| matches!(c, Command::CancelRequests { .. }))
    );
    let step = core.handle(T0, Event::JobRequestEmpty { runner: R });
    assert!(
        step.commands.contains(&Command::Exit { clean: true }),
        "{step:?}"
    );

    // A job that never reports back: the shutdown timeout exits unclean.
    let mut core = drover_core::Core::new(Config::new(10).with_runner(pool(1, 10)), T0);
    let step = core.handle(T0, Event::Tick);
    let m = step.commands.iter().find_map(|c| match c {
        Command::CreateMachine { machine, .. } => Some(*machine),
        _ => None,
    });
    let _ = core.handle(
        T0,
        Event::MachineCreated {
            machine: m.unwrap(),
        },
    );
    let _ = core.handle(
        T0,
        Event::JobReceived {
            runner: R,
            job: JobId(1),
            info: info(),
        },
    );
    let step = core.handle(T0, Event::Signal(Signal::Forceful));
    assert_eq!(step.wake_at, Some(T0.after(secs(30))));
    let step = core.handle(T0.after(secs(29)), Event::Tick);
    assert!(step.commands.is_empty(), "{step:?}");
    let step = core.handle(T0.after(secs(30)), Event::Tick);
    assert_eq!(step.commands, vec![Command::Exit { clean: false }]);

    // A second forceful signal exits at once.
    let mut core = drover_core::Core::new(Config::new(10).with_runner(pool(1, 10)), T0);
    let step = core.handle(T0, Event::Tick);
    let m = step.commands.iter().find_map(|c| match c {
        Command::CreateMachine { machine, .. } => Some(*machine),
        _ => None,
    });
    let _ = core.handle(
        T0,
        Event::MachineCreated {
            machine: m.unwrap(),
        },
    );
    let _ = core.handle(
        T0,
        Event::JobReceived {
            runner: R,
            job: JobId(2),
            info: info(),
        },
    );
    let _ = core.handle(T0, Event::Signal(Signal::Forceful));
    let step = core.handle(T0.after(secs(1)), Event::Signal(Signal::Forceful));
    assert_eq!(step.commands, vec![Command::Exit { clean: false }]);
}

#[test]
fn reload_lowering_limit_drains_idle_never_busy() {
    let mut w = world(20, pool(6, 10));
    w.handle(Event::Tick);
    w.advance(secs(60));
    for _ in 0..4 {
        w.submit(R, secs(3600));
        w.advance(secs(61));
    }
    let (_, idle, busy, _) = w.fleet();
    assert_eq!(busy, 4);
    assert!(idle >= 5);
    let mut lowered = w.core.config().clone();
    lowered.runners[0].limit = 5;
    let cmds = w.handle(Event::Signal(Signal::Reload(Box::new(lowered))));
    assert!(removals(&cmds, RemoveReason::TooManyMachines) >= 1);
    w.advance(secs(30));
    let (creating, idle, busy, _) = w.fleet();
    assert_eq!(busy, 4, "busy machines are never removed");
    assert_eq!(creating + idle + busy, 5);
}

/// Regression (issue #9, bug 1): machines already being removed are not part of the excess. Three
/// orphans under removal, three idle machines, and a reload from limit 3 to 2 must remove exactly one
/// idle machine (the least recently used), not the whole pool.
#[test]
fn lowering_limit_while_removals_are_in_flight_removes_only_the_excess() {
    let mut w = world(10, pool(3, 3));
    w.removal = secs(600); // slow removals, as docker-machine's
    w.handle(Event::Tick);
    w.advance(secs(60));
    assert_eq!(w.fleet(), (0, 3, 0, 0));
    let oldest = w.core.state().idle_machines(0)[0];
    let prefix = w.core.state().runners()[0].config.machine_prefix();
    let mut names: Vec<String> = w.provider_machines().iter().cloned().collect();
    names.extend((0..3).map(|i| format!("{prefix}auto-orphan-{i}")));
    let request = w.core.state().seq();
    let mut cmds = w.handle(Event::MachinesListed {
        runner: R,
        request,
        names,
    });
    assert_eq!(removals(&cmds, RemoveReason::Orphan), 3);
    let mut lowered = w.core.config().clone();
    lowered.runners[0].limit = 2;
    cmds.extend(w.handle(Event::Signal(Signal::Reload(Box::new(lowered)))));
    assert_eq!(
        removals(&cmds, RemoveReason::TooManyMachines),
        1,
        "only the one machine above the new limit goes: {cmds:?}"
    );
    assert!(cmds.iter().any(|c| matches!(c,
        Command::RemoveMachine { machine, reason: RemoveReason::TooManyMachines, .. } if *machine == oldest)));
    assert_eq!(w.fleet(), (0, 2, 0, 4));
}

#[test]
fn reload_lowering_idle_count_drains_surplus_after_idle_time() {
    let mut r = pool(6, 10);
    r.policy_mut().unwrap().base.idle_time_ms = 300_000;
    let mut w = world(20, r);
    w.handle(Event::Tick);
    w.advance(secs(600));
    let mut lowered = w.core.config().clone();
    lowered.runners[0].policy_mut().unwrap().base.idle_count = 2;
    w.handle(Event::Signal(Signal::Reload(Box::new(lowered))));
    w.advance(secs(1));
    assert_eq!(
        w.fleet().1,
        2,
        "all surplus machines were idle longer than IdleTime"
    );
}

#[test]
fn reload_removing_a_runner_drains_it() {
    let mut w = World::new(
        Config::new(10)
            .with_runner(RunnerConfig::pool("a", 2, 5))
            .with_runner(RunnerConfig::pool("b", 1, 5)),
        T0,
    );
    w.handle(Event::Tick);
    w.advance(secs(60));
    let only_b = Config::new(10).with_runner(RunnerConfig::pool("b", 1, 5));
    w.handle(Event::Signal(Signal::Reload(Box::new(only_b))));
    w.advance(secs(60));
    let a = &w.core.state().runners()[0];
    assert!(a.retired);
    assert_eq!(a.counts.counted(), 0);
    assert_eq!(
        w.core.state().runner_id("b"),
        Some(RunnerId(1)),
        "ids are stable across reloads"
    );
    assert_eq!(w.core.state().runners()[1].counts.idle, 1);
}

#[test]
fn resume_reissues_what_was_in_flight_and_reconciles() {
    let mut r = pool(2, 10);
    r.short_token = "abc".into();
    let mut w = world(10, r);
    w.handle(Event::Tick);
    w.advance(secs(60));
    w.submit(R, secs(600));
    w.advance(secs(1));
    // A crash: the new process replays the journal into an identical core and resumes.
    let mut core = w.core.clone();
    let step = core.handle(w.now, Event::Resumed);
    assert_eq!(
        count(&step.commands, |c| matches!(c, Command::ResumeJob { .. })),
        1
    );
    assert_eq!(
        creates(&step.commands),
        1,
        "the replacement machine that was creating"
    );
    let request = step.commands.iter().find_map(|c| match c {
        Command::ListMachines { request, .. } => Some(*request),
        _ => None,
    });
    // The provider has a machine we never heard of with our prefix, and lost one of ours.
    let mut names: Vec<String> = w.provider_machines().iter().cloned().collect();
    let idle_name = core
        .state()
        .machines()
        .into_iter()
        .map(|(_, m)| m)
        .find(|m| m.state == MachineState::Idle)
        .map(|m| m.name.clone())
        .unwrap();
    names.retain(|n| *n != idle_name);
    names.push("runner-abc-auto-1-deadbeef".into());
    names.push("someone-else".into());
    let step = core.handle(
        w.now,
        Event::MachinesListed {
            runner: R,
            request: request.unwrap(),
            names,
        },
    );
    assert_eq!(removals(&step.commands, RemoveReason::Orphan), 1);
    assert_eq!(removals(&step.commands, RemoveReason::Lost), 1);
    core.check_invariants().unwrap();
}

/// Two installations of one runner (same name and URL, another system id, so another key) and a
/// second manager of it (same key, another `MachineName`, GitLab's runner-manager model) share one
/// engine: each lists everyone's machines and neither adopts nor removes another's. A leftover of
/// its own is still found.
#[test]
fn installations_and_managers_sharing_an_engine_keep_their_own_machines() {
    let runner = |key: &str, pattern: &str| {
        let mut r = pool(2, 4);
        r.short_token = key.into();
        r.policy_mut().unwrap().machine_name = pattern.into();
        r
    };
    let mut worlds = [
        world(4, runner("aaaaaaaaa", "auto-%s")),
        world(4, runner("bbbbbbbbb", "auto-%s")), // another installation
        world(4, runner("aaaaaaaaa", "ci-%s.example.com")), // another manager
    ];
    let mut everyone = Vec::new();
    for w in &mut worlds {
        w.handle(Event::Tick);
        w.advance(secs(60));
        assert_eq!(w.fleet(), (0, 2, 0, 0));
        everyone.extend(w.provider_machines().iter().cloned());
    }
    assert_eq!(everyone.len(), 6);
    let leftover = "runner-aaaaaaaaa-auto-1767571200-0badcafe".to_string();
    everyone.push(leftover.clone());
    for (i, w) in worlds.iter_mut().enumerate() {
        let request = w.core.state().seq();
        let cmds = w.handle(Event::MachinesListed {
            runner: R,
            request,
            names: everyone.clone(),
        });
        let orphans: Vec<&String> = cmds
            .iter()
            .filter_map(|c| match c {
                Command::RemoveMachine { name, .. } => Some(name),
                _ => None,
            })
            .collect();
        let expected: Vec<&String> = if i == 0 { vec![&leftover] } else { vec![] };
        assert_eq!(orphans, expected, "world {i}");
        assert_eq!(w.fleet(), (0, 2, 0, u32::from(i == 0)), "world {i}");
        assert_eq!(w.core.state().stats().machines_lost, 0, "world {i}");
    }
}

/// After an upgrade changed the key, the machines named under the earlier one are recognised by
/// their names; an unknown machine under the earlier key may be another installation's (which
/// used the same earlier key) and is left alone.
#[test]
fn unknown_machines_under_an_earlier_key_are_left_alone() {
    let mut r = pool(1, 4);
    r.short_token = "aaaaaaaaa".into();
    let mut w = world(4, r);
    w.handle(Event::Tick);
    w.advance(secs(60));
    let mut upgraded = w.core.config().clone();
    upgraded.runners[0].short_token = "bbbbbbbbb".into();
    w.handle(Event::Signal(Signal::Reload(Box::new(upgraded))));
    assert_eq!(
        w.core.state().runner_keys(R),
        ["bbbbbbbbb".to_string(), "aaaaaaaaa".to_string()]
    );
    let mut names: Vec<String> = w.provider_machines().iter().cloned().collect();
    names.push("runner-aaaaaaaaa-auto-1767571200-0badcafe".into());
    names.push("runner-bbbbbbbbb-auto-1767571200-0badcafe".into());
    let request = w.core.state().seq();
    let cmds = w.handle(Event::MachinesListed {
        runner: R,
        request,
        names,
    });
    assert_eq!(removals(&cmds, RemoveReason::Orphan), 1);
    assert!(cmds.iter().any(|c| matches!(c,
        Command::RemoveMachine { name, .. } if name.starts_with("runner-bbbbbbbbb-"))));
    assert_eq!(w.core.state().stats().machines_lost, 0);
}

/// Regression (issue #9, bug 2): a runner's machine key changes (a token rotated under an older
/// drover, or the upgrade from token-derived keys) and drover restarts mid-job. Its machines, named
/// under the old key, are still listed and recognised: the job keeps running, nothing is "lost".
#[test]
fn machines_named_under_an_earlier_key_survive_a_restart() {
    let mut r = pool(1, 4);
    r.short_token = "aaaaaaaaa".into();
    let mut w = world(4, r);
    w.handle(Event::Tick);
    w.advance(secs(60));
    let job = w.submit(R, secs(3600));
    w.advance(secs(61));
    assert_eq!(w.fleet(), (0, 1, 1, 0));
    let mut rotated = w.core.config().clone();
    rotated.runners[0].short_token = "bbbbbbbbb".into();
    w.handle(Event::Signal(Signal::Reload(Box::new(rotated))));
    let cmds = w.handle(Event::Resumed);
    let prefixes = cmds.iter().find_map(|c| match c {
        Command::ListMachines { prefixes, .. } => Some(prefixes.clone()),
        _ => None,
    });
    assert_eq!(
        prefixes,
        Some(vec![
            "runner-bbbbbbbbb-".to_string(),
            "runner-aaaaaaaaa-".to_string()
        ])
    );
    w.advance(secs(1));
    assert_eq!(w.core.state().stats().machines_lost, 0);
    assert_eq!(w.fleet(), (0, 1, 1, 0), "both machines are still ours");
    assert!(matches!(
        w.core.state().job(job).map(|j| j.state),
        Some(drover_core::state::JobState::Running { .. })
    ));
    // New machines are named under the new key.
    w.submit(R, secs(3600));
    let cmds = w.handle(Event::Tick);
    w.advance(secs(1));
    let _ = cmds;
    assert!(
        w.provider_machines()
            .iter()
            .any(|n| n.starts_with("runner-bbbbbbbbb-"))
    );
}

#[test]
fn nonsense_inputs_are_anomalies_not_panics() {
    let mut core = drover_core::Core::new(Config::new(2).with_runner(pool(1, 2)), T0);
    let _ = core.handle(
        T0,
        Event::JobFinished {
            job: JobId(99),
            outcome: Outcome::Success,
        },
    );
    let _ = core.handle(
        T0,
        Event::MachineCreated {
            machine: drover_core::MachineId(42),
        },
    );
    let _ = core.handle(
        T0,
        Event::JobRequestEmpty {
            runner: RunnerId(9),
        },
    );
    let step = core.handle(
        T0,
        Event::JobReceived {
            runner: RunnerId(9),
            job: JobId(5),
            info: info(),
        },
    );
    assert!(
        step.commands
            .iter()
            .any(|c| matches!(c, Command::FailJob { job: JobId(5), .. }))
    );
    let _ = core.handle(Timestamp(0), Event::Tick);
    assert_eq!(core.state().now(), T0, "time never goes backwards");
    assert_eq!(core.state().anomalies().total(), 5);
    core.check_invariants().unwrap();
}

#[test]
fn direct_runners_run_jobs_without_machines() {
    let mut r = RunnerConfig::pool("local", 0, 2);
    r.executor = drover_core::Executor::Direct;
    r.request_concurrency = 4;
    let mut w = world(10, r);
    let cmds = w.handle(Event::Tick);
    assert_eq!(requests(&cmds), 2, "limit 2 caps requests too");
    for _ in 0..3 {
        w.submit(R, secs(10));
    }
    w.advance(secs(5));
    assert_eq!(w.core.state().totals().running, 2);
    assert!(w.core.state().machines().is_empty());
    w.advance(secs(30));
    assert_eq!(w.finished_jobs, 3);
}

#[test]
fn canceled_jobs() {
    let mut core = drover_core::Core::new(Config::new(4).with_runner(pool(0, 4)), T0);
    let _ = core.handle(T0, Event::Tick);
    let _ = core.handle(
        T0,
        Event::JobReceived {
            runner: R,
            job: JobId(1),
            info: info(),
        },
    );
    let step = core.handle(T0, Event::JobCanceled { job: JobId(1) });
    assert!(step.commands.iter().any(|c| matches!(
        c,
        Command::FailJob {
            job: JobId(1),
            reason: FailureReason::JobCanceled,
            ..
        }
    )));

    let mut w = world(4, pool(1, 4));
    w.handle(Event::Tick);
    w.advance(secs(60));
    let job = w.submit(R, secs(600));
    w.advance(secs(1));
    let first = w.handle(Event::JobCanceled { job });
    let second = w.handle(Event::JobCanceled { job });
    assert_eq!(count(&first, |c| matches!(c, Command::CancelJob { .. })), 1);
    assert_eq!(
        count(&second, |c| matches!(c, Command::CancelJob { .. })),
        0,
        "asked once"
    );
}

#[test]
fn a_restart_after_a_shutdown_runs_normally() {
    let mut w = world(4, pool(1, 4));
    w.handle(Event::Tick);
    w.advance(secs(60));
    w.handle(Event::Signal(Signal::Forceful));
    w.advance(secs(1));
    assert_eq!(w.exited, Some(true));
    // The daemon starts again from the journal: the old shutdown is over.
    w.exited = None;
    w.handle(Event::Resumed);
    w.advance(secs(60));
    assert_eq!(
        w.core.state().shutdown(),
        drover_core::state::Shutdown::None
    );
    assert_eq!(w.core.state().totals().in_flight, 1, "polling again");
    let job = w.submit(R, secs(10));
    w.advance(secs(20));
    assert!(w.core.state().job(job).is_none(), "the job ran");
    assert_eq!(w.finished_jobs, 1);
}

#[test]
fn a_ready_machine_is_not_traded_for_one_still_creating() {
    // IdleCount 2, GitLab's default IdleTime 0. A job takes one of two idle machines, so a third is
    // created; the job ends before it is ready. GitLab counts the creating machine as available and
    // reaps a ready one; drover keeps both ready machines until the third is ready.
    let mut core = drover_core::Core::new(Config::new(4).with_runner(pool(2, 10)), T0);
    let step = core.handle(T0, Event::Tick);
    let created: Vec<_> = step
        .commands
        .iter()
        .filter_map(|c| match c {
            Command::CreateMachine { machine, .. } => Some(*machine),
            _ => None,
        })
        .collect();
    for &m in &created {
        let _ = core.handle(T0, Event::MachineCreated { machine: m });
    }
    let step = core.handle(
        T0.after(secs(1)),
        Event::JobReceived {
            runner: R,
            job: JobId(1),
            info: info(),
        },
    );
    assert_eq!(
        creates(&step.commands),
        1,
        "a replacement for the machine the job took"
    );
    let third = step.commands.iter().find_map(|c| match c {
        Command::CreateMachine { machine, .. } => Some(*machine),
        _ => None,
    });
    let step = core.handle(
        T0.after(secs(10)),
        Event::JobFinished {
            job: JobId(1),
            outcome: Outcome::Success,
        },
    );
    assert_eq!(
        removals(&step.commands, RemoveReason::TooManyIdle),
        0,
        "{step:?}"
    );
    let step = core.handle(T0.after(secs(11)), Event::Tick);
    assert_eq!(
        removals(&step.commands, RemoveReason::TooManyIdle),
        0,
        "{step:?}"
    );
    assert_eq!(core.state().runners()[0].counts.idle, 2);
    // Once the third is ready there are three idle machines for a target of two: the least recently
    // used one, idle since T0, goes.
    let step = core.handle(
        T0.after(secs(60)),
        Event::MachineCreated {
            machine: third.unwrap(),
        },
    );
    assert_eq!(
        removals(&step.commands, RemoveReason::TooManyIdle),
        1,
        "{step:?}"
    );
    let removed = step.commands.iter().find_map(|c| match c {
        Command::RemoveMachine { machine, .. } => Some(*machine),
        _ => None,
    });
    let lru = created.iter().copied().find(|m| *m != removed.unwrap());
    assert!(
        created.contains(&removed.unwrap()) && lru.is_some(),
        "one of the first two"
    );
    let unused = core.state().machine(removed.unwrap());
    assert!(
        unused.is_some_and(|m| m.used_count == 0),
        "the one unused since T0, not the one just freed"
    );
}

#[test]
fn idle_time_zero_still_waits_past_the_instant_a_machine_was_freed() {
    // GitLab removes a machine idle *longer than* IdleTime: with 0, not in the very instant it was
    // freed, so a request issued in that instant can still take it.
    let mut core = drover_core::Core::new(Config::new(4).with_runner(pool(0, 10)), T0);
    let _ = core.handle(T0, Event::Tick);
    let step = core.handle(
        T0,
        Event::JobReceived {
            runner: R,
            job: JobId(1),
            info: info(),
        },
    );
    let m = step.commands.iter().find_map(|c| match c {
        Command::CreateMachine { machine, .. } => Some(*machine),
        _ => None,
    });
    let _ = core.handle(
        T0.after(secs(60)),
        Event::MachineCreated {
            machine: m.unwrap(),
        },
    );
    let t = T0.after(secs(70));
    let step = core.handle(
        t,
        Event::JobFinished {
            job: JobId(1),
            outcome: Outcome::Success,
        },
    );
    assert_eq!(
        removals(&step.commands, RemoveReason::TooManyIdle),
        0,
        "{step:?}"
    );
    let later = t.after(Duration::from_millis(1));
    assert!(step.wake_at.is_some_and(|w| w <= later), "{step:?}");
    let step = core.handle(later, Event::Tick);
    assert_eq!(
        removals(&step.commands, RemoveReason::TooManyIdle),
        1,
        "{step:?}"
    );
}

/// A cancel (or abort) the core sent before a crash may not have reached the job's own record:
/// after the restart the core sends it again, right after resuming the job.
#[test]
fn a_cancel_sent_before_a_restart_is_sent_again_after_resuming() {
    let mut w = world(4, pool(1, 4));
    w.handle(Event::Tick);
    w.advance(secs(60));
    let job = w.submit(R, secs(3600));
    w.advance(secs(61));
    let cmds = w.handle(Event::JobCanceled { job });
    assert!(cmds.contains(&Command::CancelJob { job }));
    let cmds = w.handle(Event::Resumed);
    let resume = cmds
        .iter()
        .position(|c| matches!(c, Command::ResumeJob { job: j, .. } if *j == job));
    let cancel = cmds.iter().position(|c| *c == Command::CancelJob { job });
    assert!(
        matches!((resume, cancel), (Some(r), Some(c)) if r < c),
        "{cmds:?}"
    );
}
