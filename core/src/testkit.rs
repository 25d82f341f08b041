//! A small deterministic world around the core, for tests, benches and fixtures: a coordinator with a
//! job queue and long polling, a provider with fixed boot and removal times, and jobs with given
//! durations. Virtual time jumps from event to event. (The full simulator lives in `drover-sim`.)
//! [`chaos`] drives the core with arbitrary, often nonsensical, input for the property tests.

pub mod chaos;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;

use crate::command::Command;
use crate::config::Config;
use crate::event::{Event, JobInfo, Outcome};
use crate::ids::{JobId, MachineId, RunnerId};
use crate::scheduler::Core;
use crate::time::Timestamp;

/// One handled event and what the core answered.
#[derive(Clone, Debug)]
pub struct Record {
    pub now: Timestamp,
    pub event: Event,
    pub commands: Vec<Command>,
}

pub struct World {
    pub core: Core,
    pub now: Timestamp,
    pub boot: Duration,
    pub removal: Duration,
    /// A long-polling request without a job comes back empty after this long, as behind GitLab's
    /// Workhorse.
    pub long_poll: Duration,
    /// Check every invariant after every step (panics with the violation).
    pub check: bool,
    /// Keep every step in `records`.
    pub record: bool,
    pub records: Vec<Record>,
    scheduled: BTreeMap<(Timestamp, u64), Event>,
    seq: u64,
    wake: Option<Timestamp>,
    /// Jobs waiting at the coordinator, per runner.
    pending: BTreeMap<RunnerId, VecDeque<(JobId, Duration)>>,
    /// Long-polling requests waiting for a job: the keys of their scheduled "ran out" answers.
    waiting: BTreeMap<RunnerId, VecDeque<(Timestamp, u64)>>,
    durations: BTreeMap<JobId, Duration>,
    machines: BTreeSet<String>,
    next_job: u64,
    pub failed_jobs: Vec<JobId>,
    pub finished_jobs: u64,
    pub exited: Option<bool>,
}

impl World {
    pub fn new(config: Config, start: Timestamp) -> World {
        World {
            core: Core::new(config, start),
            now: start,
            boot: Duration::from_secs(60),
            removal: Duration::from_secs(10),
            long_poll: Duration::from_secs(50),
            check: true,
            record: false,
            records: Vec::new(),
            scheduled: BTreeMap::new(),
            seq: 0,
            wake: None,
            pending: BTreeMap::new(),
            waiting: BTreeMap::new(),
            durations: BTreeMap::new(),
            machines: BTreeSet::new(),
            next_job: 1,
            failed_jobs: Vec::new(),
            finished_jobs: 0,
            exited: None,
        }
    }

    /// Hands one event to the core now and carries out its commands.
    pub fn handle(&mut self, event: Event) -> Vec<Command> {
        if let Event::JobFinished { .. } = event {
            self.finished_jobs += 1;
        }
        let step = self.core.handle(self.now, event.clone());
        if self.check
            && let Err(v) = self
                .core
                .check_invariants()
                .and_then(|()| self.core.check_step(&event, &step))
        {
            panic!("after {event:?} at {}: {v}", self.now);
        }
        if self.record {
            self.records.push(Record {
                now: self.now,
                event,
                commands: step.commands.clone(),
            });
        }
        self.wake = step.wake_at;
        for c in &step.commands {
            self.carry_out(c);
        }
        step.commands
    }

    /// A job appears in the coordinator's queue for `runner`.
    pub fn submit(&mut self, runner: RunnerId, duration: Duration) -> JobId {
        let job = JobId(self.next_job);
        self.next_job += 1;
        self.durations.insert(job, duration);
        if let Some(key) = self.waiting.get_mut(&runner).and_then(VecDeque::pop_front) {
            self.scheduled.remove(&key);
            self.schedule(self.now, received(runner, job));
        } else {
            self.pending
                .entry(runner)
                .or_default()
                .push_back((job, duration));
        }
        job
    }

    pub fn schedule(&mut self, at: Timestamp, event: Event) -> (Timestamp, u64) {
        self.seq += 1;
        self.scheduled.insert((at, self.seq), event);
        (at, self.seq)
    }

    /// Processes everything due up to `until` (world events and the core's ticks), then sets the clock.
    pub fn run_until(&mut self, until: Timestamp) {
        loop {
            let next_event = self.scheduled.keys().next().map(|k| k.0);
            let next = match (next_event, self.wake) {
                (Some(a), Some(b)) => a.min(b),
                (a, b) => match a.or(b) {
                    Some(t) => t,
                    None => break,
                },
            };
            if next > until {
                break;
            }
            self.now = self.now.max(next);
            if next_event == Some(next) {
                if let Some((key, event)) = self.scheduled.pop_first() {
                    if let Event::JobRequestEmpty { runner } = &event {
                        // A long poll ran out: it no longer waits for a job.
                        if let Some(w) = self.waiting.get_mut(runner) {
                            w.retain(|k| *k != key);
                        }
                    }
                    self.handle(event);
                }
            } else {
                self.wake = None;
                self.handle(Event::Tick);
            }
        }
        self.now = self.now.max(until);
    }

    pub fn advance(&mut self, d: Duration) {
        let until = self.now.after(d);
        self.run_until(until);
    }

    /// Runs until nothing is scheduled and the core asks for no tick before `limit`.
    pub fn settle(&mut self, limit: Duration) {
        let until = self.now.after(limit);
        self.run_until(until);
    }

    pub fn provider_machines(&self) -> &BTreeSet<String> {
        &self.machines
    }

    fn carry_out(&mut self, c: &Command) {
        let now = self.now;
        match c {
            Command::RequestJob { runner } => {
                match self.pending.get_mut(runner).and_then(VecDeque::pop_front) {
                    Some((job, _)) => {
                        self.schedule(now, received(*runner, job));
                    }
                    None => {
                        let key = self.schedule(
                            now.after(self.long_poll),
                            Event::JobRequestEmpty { runner: *runner },
                        );
                        self.waiting.entry(*runner).or_default().push_back(key);
                    }
                }
            }
            Command::CancelRequests { runner } => {
                for key in self.waiting.remove(runner).unwrap_or_default() {
                    self.scheduled.remove(&key);
                    self.schedule(now, Event::JobRequestEmpty { runner: *runner });
                }
            }
            Command::CreateMachine { machine, name, .. } => {
                self.machines.insert(name.clone());
                self.schedule(
                    now.after(self.boot),
                    Event::MachineCreated { machine: *machine },
                );
            }
            Command::RemoveMachine { machine, name, .. } => {
                self.machines.remove(name);
                self.schedule(
                    now.after(self.removal),
                    Event::MachineRemoved { machine: *machine },
                );
            }
            Command::RunJob { job, .. } | Command::ResumeJob { job, .. } => {
                let d = self
                    .durations
                    .get(job)
                    .copied()
                    .unwrap_or(Duration::from_secs(60));
                self.schedule(
                    now.after(d),
                    Event::JobFinished {
                        job: *job,
                        outcome: Outcome::Success,
                    },
                );
            }
            Command::CancelJob { job } => {
                self.cancel_scheduled_finish(*job);
                self.schedule(
                    now,
                    Event::JobFinished {
                        job: *job,
                        outcome: Outcome::Canceled,
                    },
                );
            }
            Command::AbortJob { job, reason } => {
                self.cancel_scheduled_finish(*job);
                self.schedule(
                    now,
                    Event::JobFinished {
                        job: *job,
                        outcome: Outcome::Failed {
                            reason: *reason,
                            exit_code: None,
                        },
                    },
                );
            }
            Command::FailJob { job, .. } => self.failed_jobs.push(*job),
            Command::ListMachines {
                runner,
                request,
                prefixes,
            } => {
                let names = self
                    .machines
                    .iter()
                    .filter(|n| prefixes.iter().any(|p| n.starts_with(p.as_str())))
                    .cloned()
                    .collect();
                self.schedule(
                    now,
                    Event::MachinesListed {
                        runner: *runner,
                        request: *request,
                        names,
                    },
                );
            }
            Command::Exit { clean } => self.exited = Some(*clean),
        }
    }

    fn cancel_scheduled_finish(&mut self, job: JobId) {
        let key = self
            .scheduled
            .iter()
            .find(|(_, e)| matches!(e, Event::JobFinished { job: j, .. } if *j == job))
            .map(|(k, _)| *k);
        if let Some(k) = key {
            self.scheduled.remove(&k);
        }
    }

    /// Machines the core holds in each state, summed over runners: (creating, idle, busy, removing).
    pub fn fleet(&self) -> (u32, u32, u32, u32) {
        self.core
            .state()
            .runners()
            .iter()
            .fold((0, 0, 0, 0), |a, r| {
                let c = &r.counts;
                (
                    a.0 + c.creating,
                    a.1 + c.idle,
                    a.2 + c.busy,
                    a.3 + c.removing,
                )
            })
    }

    /// A machine id the core knows by name.
    pub fn machine(&self, name: &str) -> Option<MachineId> {
        self.core.state().machine_by_name(name)
    }
}

fn received(runner: RunnerId, job: JobId) -> Event {
    Event::JobReceived {
        runner,
        job,
        info: JobInfo {
            timeout_ms: 3_600_000,
            queued_ms: 0,
        },
    }
}
