//! Crash safety without Docker: a job runs against fake GitLab, fake Docker and a fake core, and
//! drover is killed (its tasks and memory lost, its journals kept) at arbitrary points, up to three
//! times, each time with or without the effect of the operation in flight. Whatever the points,
//! recovery from the journal ends with exactly one final update, no container left behind, no
//! step created twice, every line of the script's output in GitLab's trace exactly once, and the
//! job succeeding if GitLab let drover have it.
//!
//! One file of a little over 600 lines: the fakes and the property are read together.

use std::collections::{BTreeMap, VecDeque};

use drover_core::{FailureReason, Outcome};
use drover_lifecycle::{
    AcceptAnswer, Action, Cursor, Event, FinalAnswer, FinalTrace, Job, Note, Phase, Policy, Record,
};
use proptest::prelude::*;

/// A line of the trace: the preparation's, a step's header, or a step's n-th log message.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Line {
    Prep,
    Header(u16),
    Out(u16, u64),
    Gone,
}

/// Where the (single) executor task is.
#[derive(Copy, Clone, Debug)]
enum Exec {
    Prep,
    Header(u16),
    Create(u16),
    Msg(u16, u64),
    Gone,
    Done(Outcome),
}

/// What an operation does to the fakes (it happens even when the process dies right after).
type Effect = Box<dyn FnOnce(&mut World)>;

/// A line the executor wrote, with its cursor.
type Written = (Line, Cursor);

/// Operations in flight: the tasks a crash kills.
#[derive(Clone, Debug)]
enum Op {
    Accept,
    Place,
    Exec(Exec),
    Persist,
    Upload,
    Ended(Outcome),
    Remove,
    Final,
    CheckClosed,
    CoreFail(FailureReason),
    CoreCancel,
    KeepAlive,
}

#[derive(Default)]
struct Gitlab {
    accepted: bool,
    /// GitLab asks to cancel the job (`Job-Status: canceling`).
    canceling: bool,
    closed: bool,
    final_puts: u32,
    puts_after_close: u32,
    trace: Vec<Line>,
    reported: Option<Outcome>,
}

struct World {
    steps: u16,
    messages: u64,
    answers: VecDeque<AcceptAnswer>,
    policy: Policy,
    // Durable: the job's journal and stored trace, the engine, GitLab, the core's own record.
    journal: Vec<Record>,
    disk: Vec<Line>,
    containers: BTreeMap<u16, ()>,
    created: BTreeMap<u16, u32>,
    gitlab: Gitlab,
    core_holds: bool,
    core_placed: bool,
    core_finished: Vec<Outcome>,
    /// The core asked to cancel the placed job: it does so once, and not again after a restart.
    core_cancel_sent: bool,
    /// The core failed the job on its own (no machine for it).
    core_failed: bool,
    /// The core's cancel reached the job while its script could still run.
    cancel_reached: bool,
    // Lost in a crash.
    job: Job,
    ops: Vec<Op>,
    channel: Vec<(Line, Cursor)>,
    /// The executor was told to cancel.
    canceled: bool,
    discarded: bool,
}

impl World {
    fn new(steps: u16, messages: u64, answers: Vec<AcceptAnswer>) -> World {
        World {
            steps,
            messages,
            answers: answers.into(),
            policy: Policy::DEFAULT,
            journal: Vec::new(),
            disk: Vec::new(),
            containers: BTreeMap::new(),
            created: BTreeMap::new(),
            gitlab: Gitlab::default(),
            core_holds: true,
            core_placed: false,
            core_finished: Vec::new(),
            core_cancel_sent: false,
            core_failed: false,
            cancel_reached: false,
            job: Job::new(),
            ops: vec![Op::Place],
            channel: Vec::new(),
            canceled: false,
            discarded: false,
        }
    }

    /// Write-ahead: journal, handle, queue the actions.
    fn event(&mut self, event: Event) {
        self.journal.push(Record::Event(event.clone()));
        self.cancel_reached |= event == Event::Cancel && self.executing();
        let actions = self.job.handle(event, &self.policy);
        for action in actions {
            self.act(action);
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Accept { .. } => self.ops.push(Op::Accept),
            Action::KeepAlive { .. } => self.ops.push(Op::KeepAlive),
            Action::Cancel => self.canceled = true,
            Action::Abort(_) => {}
            Action::Tell(Note::Canceled) => {
                // The core fails a job it has not placed (and forgets it at once); a placed one
                // it cancels.
                match self.core_placed {
                    // Failed by the core already: it forgot the job.
                    _ if !self.core_holds => {}
                    true if self.core_cancel_sent => {}
                    true => {
                        self.core_cancel_sent = true;
                        self.ops.push(Op::CoreCancel);
                    }
                    false => {
                        self.core_holds = false;
                        self.ops.push(Op::CoreFail(FailureReason::JobCanceled));
                    }
                }
            }
            Action::Tell(Note::Finished(outcome)) => {
                if self.core_holds {
                    self.core_holds = false;
                    self.core_finished.push(outcome);
                }
                self.discarded = true;
            }
            Action::Start { .. } => {
                self.channel.clear();
                self.ops.push(Op::Exec(Exec::Prep));
                self.ops.push(Op::Persist);
                self.ops.push(Op::Upload);
            }
            Action::Inspect => {
                let steps = !self.containers.is_empty();
                self.event(Event::ContainersListed { steps });
            }
            Action::Reattach => {
                let at = self.job.trace.cursor.unwrap_or_default();
                let exec = if self.containers.is_empty() {
                    Exec::Gone
                } else if self.containers.contains_key(&at.step) {
                    Exec::Msg(at.step, at.messages + 1)
                } else {
                    Exec::Header(at.step)
                };
                self.ops.push(Op::Exec(exec));
                self.ops.push(Op::Persist);
                self.ops.push(Op::Upload);
            }
            Action::RemoveContainers => self.ops.push(Op::Remove),
            Action::SendFinal { trace, .. } => {
                if trace != FinalTrace::Stored {
                    assert!(
                        self.gitlab.canceling || self.core_failed,
                        "only a job canceled or failed early never runs"
                    );
                }
                self.ops.push(Op::Final);
            }
            Action::CheckClosed => self.ops.push(Op::CheckClosed),
            Action::Discard => self.discarded = true,
        }
    }

    /// Carries out op `i`: its effect on the fakes, then (unless the process dies first) its event.
    fn step(&mut self, i: usize, dies: Option<bool>) {
        let op = self.ops.remove(i);
        let (effect, event): (Effect, Option<Event>) = match op {
            Op::Accept => {
                let accepted = AcceptAnswer::Accepted {
                    cancel_requested: false,
                };
                // GitLab answers a repeated acknowledgement by the runner that has the job alike.
                let answer = match self.gitlab.accepted {
                    true => accepted,
                    false => self.answers.pop_front().unwrap_or(accepted),
                };
                let accepted = matches!(answer, AcceptAnswer::Accepted { .. });
                (
                    Box::new(move |w: &mut World| w.gitlab.accepted |= accepted),
                    Some(Event::AcceptAnswered(answer)),
                )
            }
            Op::Place => (
                Box::new(|w: &mut World| w.core_placed = w.core_holds),
                self.core_holds.then_some(Event::Placed),
            ),
            Op::CoreFail(reason) => (
                Box::new(|_| {}),
                Some(Event::Fail {
                    reason,
                    text: "the core failed it".into(),
                }),
            ),
            Op::CoreCancel => (Box::new(|_| {}), Some(Event::Cancel)),
            Op::KeepAlive => {
                let canceling = self.gitlab.canceling && self.job.phase == Phase::Accepted;
                (
                    Box::new(|_| {}),
                    canceling.then_some(Event::CancelRequested),
                )
            }
            Op::Exec(exec) => return self.exec(exec, dies),
            // The daemon drains and stores the output, then journals the end.
            Op::Ended(outcome) if !self.channel.is_empty() => {
                self.ops.push(Op::Ended(outcome));
                self.persist(dies);
                return;
            }
            Op::Persist => {
                if self.executing() {
                    self.ops.push(Op::Persist);
                }
                self.persist(dies);
                return;
            }
            Op::Upload => {
                if self.executing() {
                    self.ops.push(Op::Upload);
                }
                let stored = self.job.trace.len as usize;
                if self.gitlab.canceling && !self.gitlab.closed {
                    return self.finish(Box::new(|_| {}), Some(Event::CancelRequested), dies);
                }
                if self.gitlab.closed || self.gitlab.trace.len() >= stored {
                    return;
                }
                (
                    Box::new(move |w: &mut World| {
                        let from = w.gitlab.trace.len();
                        let more = w.disk[from..stored].to_vec();
                        w.gitlab.trace.extend(more);
                    }),
                    Some(Event::TraceAcked {
                        offset: stored as u64,
                    }),
                )
            }
            Op::Ended(outcome) => (Box::new(|_| {}), Some(Event::StepsEnded { outcome })),
            Op::Remove => (
                Box::new(|w: &mut World| w.containers.clear()),
                Some(Event::ContainersRemoved),
            ),
            Op::Final => {
                let outcome = self.job.phase.outcome().expect("reporting");
                let stored = self.job.trace.len as usize;
                let answer = if self.gitlab.closed {
                    FinalAnswer::Closed
                } else {
                    FinalAnswer::Accepted
                };
                (
                    Box::new(move |w: &mut World| {
                        if w.gitlab.closed {
                            w.gitlab.puts_after_close += 1;
                            return;
                        }
                        let from = w.gitlab.trace.len().min(stored);
                        let more = w.disk[from..stored].to_vec();
                        w.gitlab.trace.extend(more);
                        w.gitlab.final_puts += 1;
                        w.gitlab.closed = true;
                        w.gitlab.reported = Some(outcome);
                    }),
                    Some(Event::FinalAnswered(answer)),
                )
            }
            Op::CheckClosed => (
                Box::new(|_| {}),
                Some(Event::ClosedAnswered {
                    closed: self.gitlab.closed,
                }),
            ),
        };
        self.finish(effect, event, dies);
    }

    fn finish(&mut self, effect: Effect, event: Option<Event>, dies: Option<bool>) {
        match dies {
            Some(false) => self.crash(),
            Some(true) => {
                effect(self);
                self.crash();
            }
            None => {
                effect(self);
                if let Some(event) = event {
                    self.event(event);
                }
            }
        }
    }

    /// Stores what the executor wrote since the last time, then journals it.
    fn persist(&mut self, dies: Option<bool>) {
        let Some(&(_, cursor)) = self.channel.last() else {
            return;
        };
        let lines: Vec<Line> = self.channel.drain(..).map(|(l, _)| l).collect();
        let len = (self.disk_len() + lines.len()) as u64;
        let effect: Effect = Box::new(move |w: &mut World| {
            let keep = w.disk_len();
            w.disk.truncate(keep);
            w.disk.extend(lines);
        });
        let event = Event::TraceStored {
            len,
            cursor,
            checkpoint: None,
        };
        self.finish(effect, Some(event), dies);
    }

    fn executing(&self) -> bool {
        matches!(self.job.phase, Phase::Preparing | Phase::Running)
    }

    /// The stored trace as the journal vouches for it (a crash may leave more on disk).
    fn disk_len(&self) -> usize {
        (self.job.trace.len as usize).min(self.disk.len())
    }

    fn exec(&mut self, exec: Exec, dies: Option<bool>) {
        // A canceled script stops at its next line.
        let exec = match exec {
            Exec::Header(_) | Exec::Msg(..) | Exec::Create(_) if self.canceled => {
                Exec::Done(Outcome::Canceled)
            }
            exec => exec,
        };
        let (next, line, effect): (Option<Exec>, Option<Written>, Effect) = match exec {
            // A fresh start removes whatever an earlier attempt left.
            Exec::Prep => (
                Some(Exec::Header(0)),
                Some((Line::Prep, Cursor::default())),
                Box::new(|w: &mut World| w.containers.clear()),
            ),
            Exec::Header(k) if k == self.steps => {
                (Some(Exec::Done(Outcome::Success)), None, Box::new(|_| {}))
            }
            // A re-attached job adopts the containers its steps have.
            Exec::Header(k) if self.containers.contains_key(&k) => {
                (Some(Exec::Msg(k, 1)), None, Box::new(|_| {}))
            }
            Exec::Header(k) => (
                Some(Exec::Create(k)),
                Some((
                    Line::Header(k),
                    Cursor {
                        step: k,
                        messages: 0,
                    },
                )),
                Box::new(|_| {}),
            ),
            Exec::Create(k) => (
                Some(Exec::Msg(k, 1)),
                None,
                Box::new(move |w: &mut World| {
                    w.containers.insert(k, ());
                    *w.created.entry(k).or_default() += 1;
                }),
            ),
            Exec::Msg(k, m) if m > self.messages => {
                (Some(Exec::Header(k + 1)), None, Box::new(|_| {}))
            }
            Exec::Msg(k, m) => (
                Some(Exec::Msg(k, m + 1)),
                Some((
                    Line::Out(k, m),
                    Cursor {
                        step: k,
                        messages: m,
                    },
                )),
                Box::new(|_| {}),
            ),
            Exec::Gone => (
                Some(Exec::Done(Outcome::Failed {
                    reason: FailureReason::RunnerSystemFailure,
                    exit_code: None,
                })),
                Some((Line::Gone, self.job.trace.cursor.unwrap_or_default())),
                Box::new(|_| {}),
            ),
            Exec::Done(outcome) => {
                self.ops.push(Op::Ended(outcome));
                return;
            }
        };
        if dies.is_some() {
            return self.finish(effect, None, dies);
        }
        effect(self);
        if let Some(line) = line {
            self.channel.push(line);
        }
        if let Some(next) = next {
            self.ops.push(Op::Exec(next));
        }
    }

    /// `kill -9`: tasks and memory are gone; the journals, the disk, the engine and GitLab stay.
    fn crash(&mut self) {
        self.ops.clear();
        self.channel.clear();
        self.canceled = false;
        self.discarded = false;
        self.job = Job::replay(&self.journal, &self.policy).expect("a record");
        if self.core_holds {
            // The core re-issues what it holds: a placed job is resumed, an unplaced one placed
            // later.
            self.event(Event::Restarted);
            self.ops.push(Op::Place);
            return;
        }
        // The driver's start-up: a job the core no longer holds is reported failed if it was
        // acknowledged and not reported (its report cut short), else its record goes.
        let accepted = self.job.may_be_accepted();
        let reported = matches!(self.job.phase, Phase::Reported { .. });
        if accepted && !reported {
            self.event(Event::Restarted);
            self.event(Event::Fail {
                reason: FailureReason::RunnerSystemFailure,
                text: "cut short".into(),
            });
        }
    }
}

#[derive(Debug, Clone)]
struct Crash {
    at: usize,
    after_effect: bool,
}

/// Steps, messages, GitLab's answers to the acknowledgement, the crashes, when GitLab cancels,
/// when the core fails the job if it has not placed it yet (most often while its acknowledgement
/// is in flight), the scheduling seed.
type Scenario = (
    u16,
    u64,
    Vec<AcceptAnswer>,
    Vec<Crash>,
    Option<usize>,
    Option<usize>,
    u64,
);

fn scenario() -> impl Strategy<Value = Scenario> {
    let answer = prop_oneof![
        6 => Just(AcceptAnswer::Accepted { cancel_requested: false }),
        2 => Just(AcceptAnswer::Failed),
        1 => Just(AcceptAnswer::TakenBack),
    ];
    let crash =
        (0usize..60, any::<bool>()).prop_map(|(at, after_effect)| Crash { at, after_effect });
    (
        1u16..4,
        1u64..4,
        prop::collection::vec(answer, 0..4),
        prop::collection::vec(crash, 0..4),
        prop::option::weighted(0.3, 0usize..60),
        prop::option::weighted(0.3, 0usize..4),
        any::<u64>(),
    )
}

fn run(
    steps: u16,
    messages: u64,
    answers: Vec<AcceptAnswer>,
    mut crashes: Vec<Crash>,
    cancel_at: Option<usize>,
    fail_at: Option<usize>,
    seed: u64,
) -> World {
    crashes.sort_by_key(|c| c.at);
    let mut crashes: VecDeque<Crash> = crashes.into();
    let mut world = World::new(steps, messages, answers);
    world.event(Event::Received {
        runner: "r".into(),
        label: "runner-abc".into(),
        held: true,
    });
    let mut rng = seed;
    for n in 0..10_000 {
        if world.ops.is_empty() {
            return world;
        }
        // Tasks run concurrently: any in-flight operation may go next.
        rng = rng
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let i = (rng >> 33) as usize % world.ops.len();
        if cancel_at == Some(n) {
            world.gitlab.canceling = true;
        }
        if fail_at.is_some_and(|at| at <= n) && world.core_holds && !world.core_placed {
            world.core_holds = false;
            world.core_failed = true;
            world
                .ops
                .push(Op::CoreFail(FailureReason::RunnerSystemFailure));
        }
        let dies = match crashes.front() {
            Some(c) if c.at <= n => crashes.pop_front().map(|c| c.after_effect),
            _ => None,
        };
        world.step(i, dies);
    }
    panic!("the job did not settle: {:?}", world.job.phase);
}

proptest! {
    // 2000 cases take a fraction of a second; PROPTEST_CASES sets more.
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(2000)
    ))]
    #[test]
    fn any_crashes_end_with_one_final_update_and_nothing_left((steps, messages, answers, crashes, cancel_at, fail_at, seed) in scenario()) {
        let w = run(steps, messages, answers, crashes, cancel_at, fail_at, seed);
        prop_assert!(w.containers.is_empty(), "orphaned containers {:?}", w.containers);
        prop_assert_eq!(w.gitlab.puts_after_close, 0, "a final update after GitLab closed the job");
        prop_assert!(w.created.values().all(|n| *n <= 1), "a step created twice: {:?}", w.created);
        prop_assert!(!w.core_holds, "the core still holds the job");
        if w.gitlab.accepted {
            prop_assert_eq!(w.gitlab.final_puts, 1);
            // The core's cancel reached the job: it never reports success. Canceled by GitLab
            // alone (the cancel came too late, or died with the process before the job's journal
            // had it): success, or canceled. A failure when the core's failure report was cut
            // short by a crash (the restarted driver no longer knows why the core failed it).
            let cut_short = Some(Outcome::Failed {
                reason: FailureReason::RunnerSystemFailure,
                exit_code: None,
            });
            let stopped = w.cancel_reached;
            let canceled = (w.gitlab.canceling || stopped)
                && (w.gitlab.reported == Some(Outcome::Canceled) || w.gitlab.reported == cut_short);
            if w.core_failed {
                prop_assert!(
                    matches!(w.gitlab.reported, Some(Outcome::Failed { .. }))
                        || (w.gitlab.canceling && w.gitlab.reported == Some(Outcome::Canceled)),
                    "failed by the core, reported {:?}", w.gitlab.reported
                );
                prop_assert!(w.created.is_empty(), "a job the core failed ran");
                return Ok(());
            }
            if stopped {
                prop_assert!(canceled, "canceled by the core, reported {:?}", w.gitlab.reported);
            }
            if !canceled {
                prop_assert_eq!(w.gitlab.reported, Some(Outcome::Success), "{:?}", w.gitlab.trace);
            }
            let outputs: Vec<(u16, u64)> = w.gitlab.trace.iter().filter_map(|l| match l {
                Line::Out(k, m) => Some((*k, *m)),
                _ => None,
            }).collect();
            let expected: Vec<(u16, u64)> = (0..steps).flat_map(|k| (1..=messages).map(move |m| (k, m))).collect();
            match canceled {
                // Canceled: what ran, once each, in order.
                true => prop_assert_eq!(&outputs[..], &expected[..outputs.len()]),
                false => prop_assert_eq!(outputs, expected, "every line of output once, in order"),
            }
        } else {
            prop_assert_eq!(w.gitlab.final_puts, 0);
            prop_assert!(w.created.is_empty(), "a job GitLab never gave drover ran");
        }
    }
}
