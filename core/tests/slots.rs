//! Job slots (`docker-autoscaler`), case by case: several jobs on one machine, idle capacity in
//! slots, `max_use_count`, `max_instances` against `limit`, a lost machine with several jobs, and
//! idle machines removed only while the others cover the idle slots. Every step is checked
//! against the core's invariants.

use std::time::Duration;

use drover_core::state::MachineState;
use drover_core::{
    Command, Config, Core, Event, JobId, JobInfo, MachineId, RemoveReason, RunnerConfig, RunnerId,
    Step, Timestamp,
};

const T0: Timestamp = Timestamp(1_767_571_200_000);
const R: RunnerId = RunnerId(0);

struct Run {
    core: Core,
    now: Timestamp,
}

impl Run {
    fn new(runner: RunnerConfig) -> (Run, Step) {
        let mut run = Run {
            core: Core::new(Config::new(20).with_runner(runner), T0),
            now: T0,
        };
        let step = run.feed(Event::Tick);
        (run, step)
    }

    fn feed(&mut self, event: Event) -> Step {
        let step = self.core.handle(self.now, event.clone());
        self.core.check_invariants().expect("invariants");
        self.core
            .check_step(&event, &step)
            .expect("step invariants");
        step
    }

    fn later(&mut self, secs: u64, event: Event) -> Step {
        self.now = self.now.after(Duration::from_secs(secs));
        self.feed(event)
    }

    fn job(&mut self, id: u64) -> Step {
        self.feed(Event::JobReceived {
            runner: R,
            job: JobId(id),
            info: JobInfo::default(),
        })
    }

    fn state_of(&self, m: u64) -> Option<MachineState> {
        self.core.state().machine(MachineId(m)).map(|m| m.state)
    }
}

fn creates(step: &Step) -> Vec<MachineId> {
    step.commands
        .iter()
        .filter_map(|c| match c {
            Command::CreateMachine { machine, .. } => Some(*machine),
            _ => None,
        })
        .collect()
}

fn requests(step: &Step) -> usize {
    step.commands
        .iter()
        .filter(|c| matches!(c, Command::RequestJob { .. }))
        .count()
}

fn runs(step: &Step) -> Vec<(JobId, Option<MachineId>)> {
    step.commands
        .iter()
        .filter_map(|c| match c {
            Command::RunJob { job, machine, .. } => Some((*job, *machine)),
            _ => None,
        })
        .collect()
}

fn removals(step: &Step) -> Vec<(MachineId, RemoveReason)> {
    step.commands
        .iter()
        .filter_map(|c| match c {
            Command::RemoveMachine {
                machine, reason, ..
            } => Some((*machine, *reason)),
            _ => None,
        })
        .collect()
}

#[test]
fn idle_count_counts_slots_not_machines() {
    // 10 idle slots at 4 jobs per machine: 3 machines.
    let (_, step) = Run::new(RunnerConfig::slots("a", 4, 10, 0, 0));
    assert_eq!(creates(&step).len(), 3);
    // docker+machine's IdleCount counts machines: 10.
    let mut core = Core::new(
        Config::new(20).with_runner(RunnerConfig::pool("p", 10, 0)),
        T0,
    );
    assert_eq!(creates(&core.handle(T0, Event::Tick)).len(), 10);
}

/// Two jobs on one machine with two slots; the idle slots they took are made up with a new
/// machine, and the machine frees a slot per job that ends.
#[test]
fn jobs_share_a_machine_and_free_its_slots_one_by_one() {
    let mut r = RunnerConfig::slots("a", 2, 2, 0, 0);
    r.request_concurrency = 2;
    let (mut run, step) = Run::new(r);
    assert_eq!(creates(&step), vec![MachineId(1)]);
    assert_eq!(requests(&step), 0, "preemptive: no free slot yet");
    let step = run.later(
        60,
        Event::MachineCreated {
            machine: MachineId(1),
        },
    );
    assert_eq!(requests(&step), 2, "two free slots, two requests");
    let step = run.job(1);
    assert_eq!(runs(&step), vec![(JobId(1), Some(MachineId(1)))]);
    assert_eq!(
        creates(&step).len(),
        1,
        "1 idle slot of 2 left: a second machine"
    );
    let step = run.job(2);
    assert_eq!(runs(&step), vec![(JobId(2), Some(MachineId(1)))]);
    assert_eq!(run.state_of(1), Some(MachineState::Shared(2)));
    assert!(
        creates(&step).is_empty(),
        "the machine creating brings 2 slots"
    );
    assert_eq!(run.core.state().runners()[0].counts.busy, 1);

    let step = run.later(
        30,
        Event::JobFinished {
            job: JobId(1),
            outcome: drover_core::Outcome::Success,
        },
    );
    assert_eq!(run.state_of(1), Some(MachineState::Shared(1)));
    assert!(removals(&step).is_empty());
    assert_eq!(run.core.state().runners()[0].free_slots(), 1);
    let _ = run.later(
        30,
        Event::JobFinished {
            job: JobId(2),
            outcome: drover_core::Outcome::Success,
        },
    );
    assert_eq!(run.state_of(1), Some(MachineState::Idle));
    assert_eq!(run.core.state().runners()[0].free_slots(), 2);
}

/// `max_use_count` counts jobs per machine: the machine takes no job past it, and goes once its
/// last job ends, not before.
#[test]
fn max_use_count_retires_a_machine_after_its_last_job() {
    let mut r = RunnerConfig::slots("a", 2, 0, 0, 0);
    r.request_concurrency = 2;
    r.policy_mut().expect("machines").max_builds = 2;
    let (mut run, step) = Run::new(r);
    assert_eq!(requests(&step), 2, "on demand: requests before any machine");
    let _ = run.job(1);
    let step = run.job(2);
    assert_eq!(
        creates(&step).len(),
        0,
        "the machine asked for the first job takes both"
    );
    let step = run.later(
        60,
        Event::MachineCreated {
            machine: MachineId(1),
        },
    );
    assert_eq!(
        runs(&step),
        vec![
            (JobId(1), Some(MachineId(1))),
            (JobId(2), Some(MachineId(1)))
        ]
    );
    let step = run.later(
        10,
        Event::JobFinished {
            job: JobId(1),
            outcome: drover_core::Outcome::Success,
        },
    );
    assert!(removals(&step).is_empty(), "a job still runs on it");
    let step = run.later(
        10,
        Event::JobFinished {
            job: JobId(2),
            outcome: drover_core::Outcome::Success,
        },
    );
    assert_eq!(
        removals(&step),
        vec![(MachineId(1), RemoveReason::TooManyBuilds)]
    );
}

/// `max_instances` caps machines; `limit` caps jobs, and so the idle slots worth keeping.
#[test]
fn max_instances_caps_machines_and_limit_caps_jobs() {
    // 10 idle slots wanted, but `limit` 3 leaves room for 3 jobs: 2 machines of 2 slots...
    let (_, step) = Run::new(RunnerConfig::slots("a", 2, 10, 3, 0));
    assert_eq!(creates(&step).len(), 2);
    // ... and `max_instances` 1 allows one.
    let (_, step) = Run::new(RunnerConfig::slots("a", 2, 10, 3, 1));
    assert_eq!(creates(&step).len(), 1);
}

/// A lost machine aborts every job on it and is removed; its slots are made up.
#[test]
fn a_lost_machine_aborts_every_job_on_it() {
    let mut r = RunnerConfig::slots("a", 3, 3, 0, 0);
    r.request_concurrency = 3;
    let (mut run, _) = Run::new(r);
    let _ = run.later(
        60,
        Event::MachineCreated {
            machine: MachineId(1),
        },
    );
    for j in 1..=3 {
        let _ = run.job(j);
    }
    assert_eq!(run.state_of(1), Some(MachineState::Shared(3)));
    let step = run.later(
        5,
        Event::MachineLost {
            machine: MachineId(1),
        },
    );
    let aborted: Vec<JobId> = step
        .commands
        .iter()
        .filter_map(|c| match c {
            Command::AbortJob { job, .. } => Some(*job),
            _ => None,
        })
        .collect();
    assert_eq!(aborted, vec![JobId(1), JobId(2), JobId(3)]);
    assert_eq!(removals(&step), vec![(MachineId(1), RemoveReason::Lost)]);
    // Each job on it reports the loss: the machine is lost once.
    let again = run.later(
        1,
        Event::MachineLost {
            machine: MachineId(1),
        },
    );
    assert!(again.commands.is_empty(), "{:?}", again.commands);
    assert_eq!(run.core.state().stats().machines_lost, 1);
}

/// Past `idle_time`, an idle machine goes only while the other machines' free slots still cover
/// the idle slots; a machine running a job never goes.
#[test]
fn idle_machines_go_only_while_the_rest_cover_the_idle_slots() {
    let mut r = RunnerConfig::slots("a", 2, 2, 0, 0);
    r.request_concurrency = 2;
    let idle_time = 60_000;
    r.policy_mut().expect("machines").base.idle_time_ms = idle_time;
    let (mut run, _) = Run::new(r);
    let _ = run.later(
        60,
        Event::MachineCreated {
            machine: MachineId(1),
        },
    );
    let step = run.job(1);
    assert_eq!(creates(&step), vec![MachineId(2)]);
    let _ = run.job(2);
    let _ = run.later(
        60,
        Event::MachineCreated {
            machine: MachineId(2),
        },
    );
    // Both jobs end: 4 free slots for a target of 2; the 2 requests in flight are served by
    // those 2.
    let _ = run.later(
        10,
        Event::JobFinished {
            job: JobId(1),
            outcome: drover_core::Outcome::Success,
        },
    );
    let _ = run.later(
        0,
        Event::JobFinished {
            job: JobId(2),
            outcome: drover_core::Outcome::Success,
        },
    );
    let step = run.later(30, Event::Tick);
    assert!(removals(&step).is_empty(), "not idle long enough");
    let step = run.later(61, Event::Tick);
    assert_eq!(
        removals(&step),
        vec![(MachineId(2), RemoveReason::TooManyIdle)],
        "the least recently used goes; the other keeps the 2 idle slots"
    );
    let step = run.later(600, Event::Tick);
    assert!(removals(&step).is_empty());
    assert_eq!(run.state_of(1), Some(MachineState::Idle));
}
