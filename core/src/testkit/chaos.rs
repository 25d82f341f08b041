//! Arbitrary input for the property tests: a model that hands the core every kind of event — the
//! plausible (results of its own commands, in any order, failing at any step), the operator's
//! (signals, reloads, restarts at any time) and the nonsensical (duplicate finishes, unknown machines,
//! answers to requests never made) — then heals the world and checks that the fleet converges.
//!
//! Actions are decoded from raw numbers so that any property-testing crate can generate and shrink
//! them.

use std::collections::BTreeSet;
use std::time::Duration;

use crate::command::Command;
use crate::config::{Config, Executor, RunnerConfig, SlotExtra, SlotPolicy};
use crate::event::{CreationFailure, Event, FailureReason, JobInfo, Outcome, Signal};
use crate::ids::{JobId, MachineId, RunnerId};
use crate::period::{Period, PolicyValues};
use crate::scheduler::Core;
use crate::time::Timestamp;

/// How long a request without a job stays open.
const LONG_POLL: Duration = Duration::from_secs(50);

mod checks;

/// A config drawn from eight numbers: one or two runners with small pools and limits, so that limits,
/// growth rates and MaxBuilds are hit often.
pub fn config(n: [u32; 8]) -> Config {
    let mut c = Config::new(1 + n[0] % 8);
    c.check_interval = Duration::from_secs(u64::from(1 + n[1] % 5));
    c.shutdown_timeout = Duration::from_secs(30);
    c.drain_machines_on_shutdown = n[1].is_multiple_of(2);
    c.reconcile_interval = if n[2].is_multiple_of(3) {
        None
    } else {
        Some(Duration::from_secs(120))
    };
    c.seed = u64::from(n[3]);
    let runners = 1 + (n[2] % 2) as usize;
    for i in 0..runners {
        let k = n[4 + i * 2];
        let l = n[5 + i * 2];
        let mut r = RunnerConfig::pool(&format!("r{i}"), k % 4, l % 7);
        r.request_concurrency = 1 + (k >> 2) % 3;
        if (k >> 4).is_multiple_of(5) {
            r.executor = crate::config::Executor::Direct;
        } else if let Some(p) = r.policy_mut() {
            p.max_builds = (k >> 6) % 4;
            p.max_growth_rate = (k >> 8) % 3;
            p.max_removal_attempts = 1 + (k >> 10) % 5;
            if (k >> 13).is_multiple_of(2) {
                p.machine_name = "ci-%s.example.com".into(); // literal text on both sides
            }
            p.base.idle_time_ms = u64::from((l >> 3) % 4) * 60_000;
            if (l >> 5).is_multiple_of(3) {
                p.base.idle_scale_factor = 0.5;
                p.base.idle_count_min = (l >> 7) % 3;
            }
            if (l >> 9).is_multiple_of(4) {
                let values = PolicyValues {
                    idle_count: (l >> 11) % 5,
                    ..PolicyValues::default()
                };
                if let Ok(period) = Period::new(&["* 0-29 * * * * *"], "Europe/Berlin", values) {
                    p.periods.push(period);
                }
            }
        }
        c.runners.push(r);
    }
    c
}

/// [`config`] with each pool runner turned into a runner with job slots (`docker-autoscaler`):
/// one to four slots per machine, `max_instances` often binding, policies with and without
/// `preemptive_mode` and a capped `scale_factor`. Its own idle values carry over, in slots.
pub fn slots_config(n: [u32; 8]) -> Config {
    let mut c = config(n);
    c.concurrent = c.concurrent.max(4);
    for (i, r) in c.runners.iter_mut().enumerate() {
        let Executor::Pool(pool) = &r.executor else {
            continue;
        };
        let m = n[4 + i * 2].rotate_left(9) ^ n[5 + i * 2].rotate_left(17);
        let mut pool = pool.clone();
        pool.base.idle_count_min = 0;
        let extra = |bits: u32| SlotExtra {
            scale_factor_limit: bits % 3,
            preemptive: (bits >> 2).is_multiple_of(2),
        };
        let extras = (0..pool.periods.len() as u32)
            .map(|j| extra(m >> (8 + 3 * j)))
            .collect();
        // Several requests at once, so that machines fill several slots.
        r.request_concurrency = 1 + (m >> 12) % 4;
        r.executor = Executor::Slots(SlotPolicy {
            slots: [1, 2, 3, 4, 2, 3, 4, 3][(m % 8) as usize],
            max_machines: (m >> 3) % 5,
            pool,
            base_extra: extra(m >> 5),
            extras,
        });
    }
    c
}

/// The model: the core plus what it has asked for and not yet heard back about.
pub struct Chaos {
    pub core: Core,
    pub now: Timestamp,
    /// Every input, for replay checks.
    pub inputs: Vec<(Timestamp, Event)>,
    creating: BTreeSet<MachineId>,
    removing: BTreeSet<MachineId>,
    running: BTreeSet<JobId>,
    /// Requests in flight and when they were made.
    requests: Vec<(RunnerId, Timestamp)>,
    /// Runners whose requests the core asked to cancel.
    canceled: BTreeSet<RunnerId>,
    next_job: u64,
    /// Jobs the core received, and those it resolved (finished, or reported failed without starting).
    pub received: BTreeSet<JobId>,
    pub resolved: BTreeSet<JobId>,
    pub exited: Option<bool>,
    wake: Option<Timestamp>,
    /// Machine names listed that are another manager's or installation's: never to be removed.
    foreign: BTreeSet<String>,
    /// Machines known to the core that went: what its `machines_removed` total must say.
    removed: u64,
    /// Leftovers of this runner listed while unknown: its `orphans_found` total.
    orphans: u64,
}

impl Chaos {
    pub fn new(config: Config, start: Timestamp) -> Chaos {
        let mut c = Chaos {
            core: Core::new(config, start),
            now: start,
            inputs: Vec::new(),
            creating: BTreeSet::new(),
            removing: BTreeSet::new(),
            running: BTreeSet::new(),
            requests: Vec::new(),
            canceled: BTreeSet::new(),
            next_job: 1,
            received: BTreeSet::new(),
            resolved: BTreeSet::new(),
            exited: None,
            wake: None,
            foreign: BTreeSet::new(),
            removed: 0,
            orphans: 0,
        };
        c.feed(Event::Tick);
        c
    }

    /// Hands an event to the core, checks every invariant, and records what it asked for.
    pub fn feed(&mut self, event: Event) {
        match &event {
            Event::JobFinished { job, .. } if self.running.remove(job) => {
                self.resolved.insert(*job);
            }
            Event::JobReceived { job, .. } => {
                self.received.insert(*job);
            }
            Event::MachineRemoved { machine } if self.core.state().machine(*machine).is_some() => {
                self.removed += 1;
            }
            Event::Resumed => {
                // A new process: none of the old requests, nor their cancellation, carries over,
                // nor any creation, removal or job it had under way: the core asks for them again.
                self.requests.clear();
                self.canceled.clear();
                self.creating.clear();
                self.removing.clear();
                self.running.clear();
            }
            _ => {}
        }
        self.inputs.push((self.now, event.clone()));
        let before = (self.core.state().exited(), self.core.state().shutdown());
        let clock = (
            self.core.state().now(),
            self.core
                .state()
                .anomalies()
                .by_kind
                .get(&crate::state::AnomalyKind::TimeWentBackwards)
                .copied()
                .unwrap_or(0),
        );
        let step = self.core.handle(self.now, event.clone());
        if let Err(v) = self
            .core
            .check_invariants()
            .and_then(|()| self.core.check_step(&event, &step))
        {
            panic!("after {event:?} at {}: {v}\nstep: {step:?}", self.now);
        }
        if let Err(v) = self
            .check_exit(&event, &step.commands, before)
            .and_then(|()| self.check_direct_runners())
            .and_then(|()| self.check_clock(clock, self.now))
        {
            panic!("after {event:?} at {}: {v}\nstep: {step:?}", self.now);
        }
        self.wake = step.wake_at;
        for c in step.commands {
            match c {
                Command::RequestJob { runner } => self.requests.push((runner, self.now)),
                Command::CreateMachine { machine, .. } => {
                    self.creating.insert(machine);
                }
                Command::RemoveMachine { machine, name, .. } => {
                    assert!(
                        !self.foreign.contains(&name),
                        "after {event:?}: removes {name}, which is not this installation's"
                    );
                    self.creating.remove(&machine);
                    assert!(
                        self.removing.insert(machine),
                        "after {event:?}: asks again to remove {name} while it is being removed"
                    );
                }
                Command::RunJob { job, .. } | Command::ResumeJob { job, .. } => {
                    self.running.insert(job);
                }
                Command::FailJob { job, .. } => {
                    self.resolved.insert(job);
                }
                Command::Exit { clean } => self.exited = Some(clean),
                Command::CancelRequests { runner } => {
                    self.canceled.insert(runner);
                }
                Command::ListMachines {
                    runner, prefixes, ..
                } => {
                    if let Err(v) = self.check_list_request(runner, &prefixes) {
                        panic!("after {event:?} at {}: {v}", self.now);
                    }
                }
                Command::CancelJob { .. } | Command::AbortJob { .. } => {}
            }
        }
    }

    fn pick<T: Copy>(set: &BTreeSet<T>, i: u32) -> Option<T> {
        if set.is_empty() {
            None
        } else {
            set.iter().nth(i as usize % set.len()).copied()
        }
    }

    /// Applies one action decoded from `(kind, a, b)`.
    pub fn act(&mut self, (kind, a, b): (u8, u32, u32)) {
        match kind % 20 {
            0..=2 => {
                let d = Duration::from_millis(u64::from(a % 600_000));
                self.now = self.now.after(d);
                self.feed(Event::Tick);
            }
            3 | 4 => {
                // Answer a request: with a job most of the time.
                if self.requests.is_empty() {
                    return;
                }
                let (runner, _) = self.requests.remove(a as usize % self.requests.len());
                let event = match b % 4 {
                    0 if (b >> 4) % 2 == 0 => Event::JobRequestEmpty { runner },
                    // Held for up to 60 s (a long poll), or news from a long-polling coordinator.
                    0 => Event::JobRequestAnswered {
                        runner,
                        held_ms: u64::from(a % 60_000),
                        long_poll: (b >> 5) % 2 == 0,
                    },
                    1 if (b >> 4) % 2 == 0 => Event::JobRequestFailed {
                        runner,
                        retry_after_ms: Some(u64::from(b % 90_000)),
                    },
                    // A 403 or no answer at all: several in a row back the runner off.
                    1 => Event::JobRequestUnhealthy {
                        runner,
                        retry_after_ms: ((b >> 5) % 4 == 0).then_some(u64::from(b % 90_000)),
                    },
                    _ => {
                        let job = JobId(self.next_job);
                        self.next_job += 1;
                        let info = JobInfo {
                            timeout_ms: u64::from(b % 7) * 600_000,
                            queued_ms: u64::from(b % 1000),
                        };
                        Event::JobReceived { runner, job, info }
                    }
                };
                self.feed(event);
            }
            5 | 6 => {
                let Some(machine) = Self::pick(&self.creating, a) else {
                    return;
                };
                self.creating.remove(&machine);
                let event = match b % 6 {
                    0 => Event::MachineCreationFailed {
                        machine,
                        failure: CreationFailure::Retryable,
                    },
                    1 => Event::MachineCreationFailed {
                        machine,
                        failure: CreationFailure::Quota,
                    },
                    2 if b % 12 == 2 => Event::MachineCreationFailed {
                        machine,
                        failure: CreationFailure::Fatal,
                    },
                    _ => Event::MachineCreated { machine },
                };
                self.feed(event);
            }
            7 | 8 => {
                let Some(machine) = Self::pick(&self.removing, a) else {
                    return;
                };
                self.removing.remove(&machine);
                let event = if b % 3 == 0 {
                    Event::MachineRemovalFailed { machine }
                } else {
                    Event::MachineRemoved { machine }
                };
                self.feed(event);
            }
            9 | 10 => {
                let Some(job) = Self::pick(&self.running, a) else {
                    return;
                };
                let outcome = match b % 4 {
                    0 => Outcome::Failed {
                        reason: FailureReason::ScriptFailure,
                        exit_code: Some(1),
                    },
                    1 => Outcome::Canceled,
                    _ => Outcome::Success,
                };
                self.feed(Event::JobFinished { job, outcome });
            }
            11 => {
                let Some(job) = Self::pick(&self.received, a) else {
                    return;
                };
                self.feed(Event::JobCanceled { job });
            }
            12 => {
                let ids: Vec<MachineId> = self
                    .core
                    .state()
                    .machines()
                    .into_iter()
                    .map(|(id, _)| id)
                    .collect();
                if let Some(&machine) = ids.get(a as usize % ids.len().max(1)) {
                    self.feed(Event::MachineLost { machine });
                }
            }
            13 => {
                // A provider list that misses some machines and has a stranger with our prefix.
                let Some(r) = self.core.state().runners().first() else {
                    return;
                };
                let prefix = r.config.machine_prefix();
                let mut names: Vec<String> = self
                    .core
                    .state()
                    .machines()
                    .into_iter()
                    .map(|(_, m)| m)
                    .filter(|m| m.runner == RunnerId(0))
                    .map(|m| m.name.clone())
                    .enumerate()
                    .filter(|(i, _)| (a >> (i % 32)) & 1 == 1)
                    .map(|(_, n)| n)
                    .collect();
                // A leftover this runner named (its key, its MachineName): an orphan to remove.
                let stray = r.config.policy().filter(|_| b % 2 == 0).map(|p| {
                    format!(
                        "{prefix}{}",
                        p.machine_name.replacen("%s", &b.to_string(), 1)
                    )
                });
                names.extend(stray.clone());
                let known = |n: &String| {
                    self.core
                        .state()
                        .machines()
                        .iter()
                        .any(|(_, m)| m.name == *n)
                };
                if stray.as_ref().is_some_and(|n| !known(n)) {
                    self.orphans += 1;
                }
                // Never ours: another manager of this runner (another MachineName), and another
                // installation of it (another key) on the same engine.
                let key = &r.config.short_token;
                let pattern = r.config.policy().map_or("%s", |p| p.machine_name.as_str());
                let foreign = [
                    format!("{prefix}other-{b}"),
                    format!(
                        "runner-{key}z-{}",
                        pattern.replacen("%s", &b.to_string(), 1)
                    ),
                    // The pattern with nothing for `%s`: no name this runner makes.
                    format!("{prefix}{}", pattern.replacen("%s", "", 1)),
                ];
                if b % 3 != 0 {
                    names.extend(foreign.iter().cloned());
                    self.foreign.extend(foreign);
                }
                let request = self.core.state().seq().saturating_sub(u64::from(b % 3));
                let expected = self.listing_expectations(request, &names);
                self.removed += expected.1.len() as u64; // removals that went through
                let lost_before = self.core.state().stats().machines_lost;
                self.feed(Event::MachinesListed {
                    runner: RunnerId(0),
                    request,
                    names,
                });
                if let Err(v) = self.check_listing(expected, lost_before) {
                    panic!("after a listing at {}: {v}", self.now);
                }
                if let Some(stray) = stray {
                    let known = self.core.state().machines().into_iter();
                    assert!(
                        known.map(|(_, m)| m).any(|m| m.name == stray),
                        "the leftover {stray} was not taken as this runner's"
                    );
                }
            }
            14 => {
                let signal = match a % 6 {
                    0 => Signal::Graceful,
                    1 => Signal::Forceful,
                    _ => {
                        let n = [
                            a,
                            b,
                            a ^ b,
                            b,
                            a.rotate_left(7),
                            b.rotate_left(3),
                            a.rotate_left(13),
                            b.rotate_left(11),
                        ];
                        // A world with slots reloads into slots or pools alike.
                        let slots = self
                            .core
                            .config()
                            .runners
                            .iter()
                            .any(|r| r.slot_policy().is_some());
                        Signal::Reload(Box::new(if slots && b % 3 != 0 {
                            slots_config(n)
                        } else {
                            config(n)
                        }))
                    }
                };
                self.feed(Event::Signal(signal));
            }
            15 => self.feed(Event::Resumed),
            // Nonsense: duplicates, unknowns and answers nobody asked for.
            16 => self.feed(Event::JobFinished {
                job: JobId(u64::from(a % 8)),
                outcome: Outcome::Success,
            }),
            17 => self.feed(Event::MachineCreated {
                machine: MachineId(u64::from(a % 16)),
            }),
            18 => self.feed(Event::MachineRemoved {
                machine: MachineId(u64::from(a % 16)),
            }),
            _ => match a % 4 {
                3 => {
                    // An event stamped earlier than the last one (a clock stepped back).
                    let was = self.now;
                    self.now = Timestamp(was.0.saturating_sub(u64::from(b % 60_000) + 1));
                    self.feed(Event::Tick);
                    self.now = was;
                }
                0 => self.feed(Event::JobRequestEmpty {
                    runner: RunnerId((b % 3) as u16),
                }),
                1 => {
                    let machine = MachineId(u64::from(b % 16));
                    self.removing.remove(&machine);
                    self.feed(Event::MachineRemovalFailed { machine });
                }
                _ => self.feed(Event::JobReceived {
                    runner: RunnerId((b % 3) as u16),
                    job: JobId(u64::from(b % 8)),
                    info: JobInfo::default(),
                }),
            },
        }
    }

    /// The faults heal: every outstanding command succeeds, requests find no more jobs, and time moves on
    /// until nothing is left to do (bounded).
    pub fn heal(&mut self) {
        let horizon = self.now.after(Duration::from_secs(6 * 3600));
        for _ in 0..100_000 {
            if let Some(&m) = self.creating.iter().next() {
                self.creating.remove(&m);
                self.feed(Event::MachineCreated { machine: m });
            } else if let Some(&m) = self.removing.iter().next() {
                self.removing.remove(&m);
                self.feed(Event::MachineRemoved { machine: m });
            } else if let Some(&j) = self.running.iter().next() {
                self.feed(Event::JobFinished {
                    job: j,
                    outcome: Outcome::Success,
                });
            } else if let Some(i) = self
                .requests
                .iter()
                .position(|(r, _)| self.canceled.contains(r))
            {
                let (runner, _) = self.requests.remove(i);
                self.feed(Event::JobRequestEmpty { runner });
            } else if let Some(i) = self
                .requests
                .iter()
                .position(|(_, at)| at.after(LONG_POLL) <= self.now)
            {
                // No more jobs come: long polls run out, as behind GitLab's Workhorse.
                let (runner, _) = self.requests.remove(i);
                self.feed(Event::JobRequestEmpty { runner });
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
                    self.feed(Event::Tick);
                }
            } else {
                return;
            }
        }
        panic!(
            "the world did not settle after healing: {:?} {:?}",
            self.core.state().totals(),
            self.core
                .state()
                .runners()
                .iter()
                .map(|r| &r.counts)
                .collect::<Vec<_>>()
        );
    }

    /// Invariant 4 after healing: every received job was run or reported, and each runner holds exactly
    /// its idle target (or nothing, once retired or drained), with nothing creating or removing.
    pub fn check_converged(&self) -> Result<(), String> {
        let lost: Vec<&JobId> = self.received.difference(&self.resolved).collect();
        if !lost.is_empty() {
            return Err(format!("jobs never resolved: {lost:?}"));
        }
        let s = self.core.state();
        if s.stats().orphans_found != self.orphans {
            return Err(format!(
                "{} orphans counted, {} found",
                s.stats().orphans_found,
                self.orphans
            ));
        }
        if s.stats().machines_removed != self.removed {
            return Err(format!(
                "{} machines counted removed, {} went",
                s.stats().machines_removed,
                self.removed
            ));
        }
        // Every runner of the config in force (reloads add runners) is there, and active.
        for rc in &self.core.config().runners {
            match s.runner_id(&rc.name).and_then(|id| s.runner(id)) {
                Some(r) if !r.retired && r.config == *rc => {}
                _ => return Err(format!("runner {} of the config is not active", rc.name)),
            }
        }
        if !s.jobs().is_empty() {
            return Err(format!(
                "jobs still held: {:?}",
                s.jobs().into_iter().map(|(id, _)| id).collect::<Vec<_>>()
            ));
        }
        let polling = !s.exited() && s.shutdown() == crate::state::Shutdown::None;
        for r in s.runners() {
            let c = &r.counts;
            if c.creating != 0 || c.removing != 0 || c.busy != 0 {
                return Err(format!("runner {} did not settle: {c:?}", r.config.name));
            }
            if r.config.policy().is_none() {
                // A plain docker runner asks for jobs whenever a job slot is free (or is about to:
                // the world stops healing at a horizon, maybe right after an empty answer).
                let slots_taken = s.totals().in_flight >= self.core.config().concurrent.max(1);
                let asking = c.in_flight > 0 || r.next_poll_at() > self.now;
                if polling && !r.retired && !asking && !slots_taken {
                    return Err(format!("runner {} stopped asking for jobs", r.config.name));
                }
                continue;
            }
            if let Some(sp) = r.config.slot_policy() {
                self.check_slots_converged(r, sp)?;
                continue;
            }
            let mut target = r.policy().values.idle_target(0);
            if r.config.limit > 0 {
                target = target.min(r.config.limit);
            }
            let expected = match s.shutdown() {
                _ if r.retired => 0,
                crate::state::Shutdown::None => target,
                crate::state::Shutdown::Graceful { .. }
                    if self.core.config().drain_machines_on_shutdown =>
                {
                    0
                }
                // Otherwise a shutdown leaves idle machines for the next start, however many there are.
                _ => c.idle,
            };
            // Requests in flight hold idle machines until they come back (at most a long poll later).
            let held = if r.policy().values.idle_count > 0 {
                c.in_flight
            } else {
                0
            };
            if c.idle < expected || c.idle > expected.max(held) {
                return Err(format!(
                    "runner {} holds {} idle machines, expected {expected}",
                    r.config.name, c.idle
                ));
            }
        }
        Ok(())
    }
}
