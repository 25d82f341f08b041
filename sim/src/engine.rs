//! The discrete-event engine: the real [`Core`] against a simulated coordinator, provider and executor.
//!
//! Virtual time jumps from event to event. Scheduled events live in queues ordered by
//! `(time, sequence)` (`crate::queue`: a heap, and a FIFO for the long-poll timeouts), so events at
//! the same instant run in the order they were scheduled. Answers
//! the coordinator gives "at once" (a job for a waiting request, an empty answer) go to a FIFO that
//! is drained before the heap: they happen at the current instant, before anything scheduled.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use drover_core::state::JobState;
use drover_core::{
    Command, Config, Core, CreationFailure, Event, JobId, JobInfo, MachineId, Outcome, RunnerId,
    Step, Timestamp,
};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::SimError;
use crate::arrivals::{ArrivalStream, NewJob};
use crate::dispatch::{Fate, Line, Released};
use crate::dist::exponential;
use crate::overload::{self, MAX_WAITING, Unstable};
use crate::queue::{Fifo, Keyed, Queue};
use crate::report::{Perf, Report};
use crate::routing::Routing;
use crate::stats::{Series, SeriesPoint, Stats, WaitCause};
use crate::workload::{DRAIN_LIMIT_MS, Polling, Workload};

/// Hashing for maps keyed by the core's ids, which are counters: FxHash, not SipHash (no one chooses
/// them, so a flooding defence buys nothing; such a map is never iterated, so its order cannot
/// reach a result).
type IdHash = std::hash::BuildHasherDefault<rustc_hash::FxHasher>;

/// How long an aborted or canceled job takes to stop and report.
pub const STOP_DELAY_MS: u64 = 1_000;

/// Ticks at one instant after which the core is deemed stuck (it asked to be woken "now" forever).
const STALL_LIMIT: u32 = 100_000;

/// What to simulate: a config (the runners to simulate), a workload and a seed.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub config: Config,
    pub workload: Arc<Workload>,
    routing: Routing,
}

impl Scenario {
    /// Simulates every runner of `config`, or only `runner`: jobs routed to the other runners of the
    /// file are then dropped. The seed is the workload's.
    pub fn new(
        mut config: Config,
        workload: Arc<Workload>,
        runner: Option<&str>,
    ) -> Result<Scenario, SimError> {
        config.validate()?;
        let mut excluded = Vec::new();
        if let Some(name) = runner {
            let Some(i) = config.runners.iter().position(|r| r.name == name) else {
                return Err(SimError::UnknownRunner {
                    name: name.to_string(),
                    known: config.runners.iter().map(|r| r.name.clone()).collect(),
                });
            };
            let picked = config.runners.swap_remove(i);
            excluded = config.runners.drain(..).map(|r| r.name).collect();
            excluded.sort();
            config.runners.push(picked);
        }
        if config.runners.is_empty() {
            return Err(SimError::NoRunners);
        }
        let routing = Routing::resolve(&workload, &config, &excluded)?;
        config.seed = workload.seed;
        // The simulated provider never loses a machine silently (deaths come as MachineLost), so
        // periodic listing would find nothing; it would only cost a scan of the fleet.
        config.reconcile_interval = None;
        Ok(Scenario {
            config,
            workload,
            routing,
        })
    }

    /// Seeds the traffic, the boot and removal times and the faults (and the core's machine names).
    pub fn seed(&self) -> u64 {
        self.config.seed
    }

    pub fn with_seed(mut self, seed: u64) -> Scenario {
        self.config.seed = seed;
        self
    }

    pub(crate) fn routing(&self) -> &Routing {
        &self.routing
    }
}

/// Knobs of one run that do not change its outcome.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Collect about this many points over time for plots (0: none).
    pub series_points: usize,
    /// Set (by a Ctrl-C handler) to abandon the run: it ends with [`SimError::Interrupted`].
    pub stop: Option<Arc<AtomicBool>>,
}

impl RunOptions {
    pub(crate) fn stopped(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
    }
}

/// The outcome of one run.
#[derive(Clone, Debug)]
pub struct RunResult {
    pub report: Report,
    /// Levels over time, when asked for.
    pub series: Vec<SeriesPoint>,
}

/// Sees every step of a run: for tests (invariants, independent accounting) and debugging.
pub trait Observer {
    /// Whether [`Observer::on_step`] is wanted; `false` spares the engine a clone of each event.
    const ACTIVE: bool = true;

    fn on_step(&mut self, now: Timestamp, event: &Event, step: &Step, core: &Core);
}

/// Observes nothing.
pub struct NoObserver;

impl Observer for NoObserver {
    const ACTIVE: bool = false;
    fn on_step(&mut self, _: Timestamp, _: &Event, _: &Step, _: &Core) {}
}

/// Runs a scenario to its end.
pub fn run(scenario: &Scenario, options: &RunOptions) -> Result<RunResult, SimError> {
    run_observed(scenario, options, &mut NoObserver)
}

/// Runs a scenario, showing every step to `observer`.
pub fn run_observed<O: Observer>(
    scenario: &Scenario,
    options: &RunOptions,
    observer: &mut O,
) -> Result<RunResult, SimError> {
    let mut world = World::new(scenario, options, observer);
    // A configuration that cannot keep up for long is not simulated at all; a short overload
    // (a busy day) is simulated and flagged.
    match overload::by_rates(
        &scenario.workload,
        &scenario.config,
        &scenario.routing().fractions(scenario.config.runners.len()),
    ) {
        Some((verdict, true)) => world.unstable = Some(verdict),
        rates => {
            world.run()?;
            if world.unstable.is_none() {
                world.unstable = rates.map(|(verdict, _)| verdict);
            }
        }
    }
    let end = world.end;
    world.stats.settle_waits();
    let perf = Perf::counted(world.stats.events);
    let series = world
        .stats
        .series
        .as_ref()
        .map(|s| s.points(end))
        .unwrap_or_default();
    let report = Report::build(
        scenario.seed(),
        &world.stats,
        world.core.state(),
        world.start,
        end,
        world.drained,
        perf,
    );
    let report = Report {
        unstable: world.unstable,
        ..report
    };
    Ok(RunResult { report, series })
}

/// An event at a future instant.
#[derive(Clone, Copy, Debug)]
enum Scheduled {
    Created(MachineId),
    CreationFailed(MachineId),
    Removed(MachineId),
    RemovalFailed(MachineId),
    JobDone(JobId),
    JobStopped(JobId),
    /// The machine running this job dies.
    MachineLost(JobId),
    /// A wake-up; stale unless its sequence number is the pending tick's.
    Tick,
    /// GitLab's answer to a job request arrives after its round trip: an [`Answer`], flattened
    /// so that an entry stays 16 bytes.
    AnswerJob {
        runner: RunnerId,
        job: JobId,
    },
    AnswerEmpty {
        runner: RunnerId,
        held_ms: u64,
        long_poll: bool,
    },
    /// Workhorse's long-poll timeout for a held request of this runner.
    HoldTimeout(RunnerId, u64),
}

/// A queued event, ordered by `time << 64 | sequence` alone: one comparison orders both.
#[derive(Clone, Copy, Debug)]
struct Entry {
    key: u128,
    what: Scheduled,
}

// Two entries to a cache line: the queue's pops read a node's four children.
const _: () = assert!(std::mem::size_of::<Entry>() == 32);

impl Entry {
    fn new(at: Timestamp, seq: u64, what: Scheduled) -> Entry {
        Entry {
            key: Entry::key_of(at, seq),
            what,
        }
    }

    fn key_of(at: Timestamp, seq: u64) -> u128 {
        (u128::from(at.0) << 64) | u128::from(seq)
    }

    fn seq(&self) -> u64 {
        self.key as u64
    }
}

impl Keyed for Entry {
    #[inline]
    fn key(&self) -> u128 {
        self.key
    }
}

/// Which queue the next event comes from.
#[derive(Clone, Copy)]
enum Next {
    Arrival,
    Heap,
    HoldTimeout,
}

/// A coordinator answer given at the current instant.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Job {
        runner: RunnerId,
        job: JobId,
    },
    /// `held_ms` from the request; `long_poll`: Workhorse's answer, or Rails' fresh queue version
    /// behind Workhorse (see [`Event::JobRequestAnswered`]).
    Empty {
        runner: RunnerId,
        held_ms: u64,
        long_poll: bool,
    },
}

/// A job between its arrival and its end.
struct JobRec {
    arrival: Timestamp,
    duration_ms: u64,
    started: bool,
    stopping: Option<Outcome>,
}

/// Jobs alive, indexed by id. Ids are given in arrival order, so the live jobs form a window.
struct JobWindow {
    base: u64,
    slots: VecDeque<Option<JobRec>>,
    live: usize,
}

impl JobWindow {
    fn push(&mut self, rec: JobRec) -> JobId {
        let id = JobId(self.base + self.slots.len() as u64);
        self.slots.push_back(Some(rec));
        self.live += 1;
        id
    }

    fn slot(&mut self, id: JobId) -> Option<&mut Option<JobRec>> {
        let i = usize::try_from(id.0.checked_sub(self.base)?).ok()?;
        self.slots.get_mut(i)
    }

    fn get_mut(&mut self, id: JobId) -> Option<&mut JobRec> {
        self.slot(id)?.as_mut()
    }

    fn remove(&mut self, id: JobId) -> Option<JobRec> {
        let rec = self.slot(id)?.take()?;
        self.live -= 1;
        while matches!(self.slots.front(), Some(None)) {
            self.slots.pop_front();
            self.base += 1;
        }
        Some(rec)
    }
}

struct World<'s, O> {
    core: Core,
    workload: &'s Workload,
    start: Timestamp,
    now: Timestamp,
    end: Timestamp,
    heap: Queue<Entry>,
    /// The long-poll timeouts, out of the heap: each is `long_poll_ms` after its request, so they
    /// come due in the order they are scheduled.
    hold_timeouts: Fifo<Entry>,
    seq: u64,
    answers: VecDeque<Answer>,
    pending_tick: Option<(Timestamp, u64)>,
    /// Reused for every step's commands (`Core::handle_into`): no allocation per event.
    commands: Vec<Command>,
    ticks_now: u32,
    arrivals: ArrivalStream<'s>,
    /// The next arrival and its sequence number: kept out of the heap, as there is always exactly
    /// one (this saves a push and a pop per job).
    next_job: Option<(NewJob, u64)>,
    arrivals_done_at: Option<Timestamp>,
    horizon_end: Option<Timestamp>,
    /// Each runner's line at the coordinator (`crate::dispatch`).
    coordinators: Vec<Line>,
    jobs: JobWindow,
    /// The simulated provider: when each machine asked for is (or was) ready, until it is removed.
    ready_at: HashMap<MachineId, Timestamp, IdHash>,
    boot_rng: ChaCha8Rng,
    removal_rng: ChaCha8Rng,
    fault_rng: ChaCha8Rng,
    request_rng: ChaCha8Rng,
    stats: Stats,
    drained: bool,
    exited: bool,
    stop: Option<Arc<AtomicBool>>,
    /// Each runner's `limit` and the config's `concurrent`, for [`World::wait_cause`].
    limits: Vec<u32>,
    concurrent: u32,
    /// Set when the queue outgrew [`MAX_WAITING`]: the run stops there.
    unstable: Option<Unstable>,
    observer: &'s mut O,
}

/// Independent random streams of one seed.
fn stream(seed: u64, id: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(id);
    rng
}

impl<'s, O: Observer> World<'s, O> {
    fn new(scenario: &'s Scenario, options: &RunOptions, observer: &'s mut O) -> Self {
        let w: &Workload = &scenario.workload;
        let seed = scenario.seed();
        let start = w.start;
        let horizon_end = w.horizon_ms.map(|h| Timestamp(start.0.saturating_add(h)));
        let series = (options.series_points > 0).then(|| {
            let expected = w.horizon_ms.or_else(|| {
                let per_min = w.mean_rate_per_min()?;
                Some((w.jobs? as f64 / per_min * 60_000.0) as u64)
            });
            Series::new(start, expected.unwrap_or(86_400_000), options.series_points)
        });
        let arrivals = ArrivalStream::new(
            w,
            &scenario.routing,
            [stream(seed, 1), stream(seed, 2), stream(seed, 3)],
        );
        let mut core = Core::new(scenario.config.clone(), start);
        // A run never asks for the digest per event: hash the core's records in batches.
        core.defer_hashing();
        World {
            core,
            workload: w,
            start,
            now: start,
            end: start,
            heap: Queue::new(),
            hold_timeouts: Fifo::new(),
            seq: 0,
            answers: VecDeque::new(),
            pending_tick: None,
            commands: Vec::new(),
            ticks_now: 0,
            arrivals,
            next_job: None,
            arrivals_done_at: None,
            horizon_end,
            coordinators: scenario
                .config
                .runners
                .iter()
                .map(|_| Line::default())
                .collect(),
            jobs: JobWindow {
                base: 1,
                slots: VecDeque::new(),
                live: 0,
            },
            ready_at: HashMap::default(),
            boot_rng: stream(seed, 4),
            removal_rng: stream(seed, 5),
            fault_rng: stream(seed, 6),
            request_rng: stream(seed, 7),
            stats: Stats::new(start, series),
            drained: false,
            exited: false,
            stop: options.stop.clone(),
            limits: scenario.config.runners.iter().map(|r| r.limit).collect(),
            concurrent: scenario.config.concurrent,
            unstable: None,
            observer,
        }
    }

    fn schedule(&mut self, at: Timestamp, what: Scheduled) {
        self.seq += 1;
        self.heap.push(Entry::new(at, self.seq, what));
    }

    fn schedule_arrival(&mut self) {
        match self.arrivals.next_job() {
            Some(mut job) => {
                job.at = job.at.max(self.now);
                self.seq += 1;
                self.next_job = Some((job, self.seq));
            }
            None => self.arrivals_done_at = Some(self.now),
        }
    }

    fn run(&mut self) -> Result<(), SimError> {
        self.feed(Event::Tick);
        self.schedule_arrival();
        let mut steps: u32 = 0;
        loop {
            if self.exited || self.unstable.is_some() {
                break;
            }
            steps = steps.wrapping_add(1);
            if steps.is_multiple_of(4096)
                && let Some(stop) = &self.stop
                && stop.load(Ordering::Relaxed)
            {
                return Err(SimError::Interrupted);
            }
            if let Some(answer) = self.answers.pop_front() {
                self.answer(answer);
                continue;
            }
            self.drained = self.arrivals_done_at.is_some() && self.jobs.live == 0;
            let Some((key, next)) = self.next() else {
                break;
            };
            let at = Timestamp((key >> 64) as u64);
            if self.drained && self.horizon_end.is_none_or(|h| at >= h) {
                break;
            }
            if let Some(done) = self.arrivals_done_at
                && at.0 > done.0.saturating_add(DRAIN_LIMIT_MS)
            {
                break;
            }
            if at > self.now {
                self.advance(at);
                self.now = at;
                self.ticks_now = 0;
            }
            let entry = match next {
                Next::Arrival => {
                    self.arrive();
                    continue;
                }
                Next::Heap => self.heap.pop(),
                Next::HoldTimeout => self.hold_timeouts.pop(),
            };
            if let Some(entry) = entry {
                self.dispatch(entry.seq(), entry.what)?;
            }
        }
        self.drained = self.arrivals_done_at.is_some() && self.jobs.live == 0;
        self.end = match self.horizon_end {
            Some(h) if self.drained => h.max(self.now),
            _ => self.now,
        };
        self.advance(self.end);
        Ok(())
    }

    /// The key of the earliest scheduled event and where it waits; keys are unique, so exactly one
    /// queue holds the earliest.
    #[inline]
    fn next(&self) -> Option<(u128, Next)> {
        let arrival = self.next_job.map(|(job, seq)| Entry::key_of(job.at, seq));
        let mut next = arrival.map(|k| (k, Next::Arrival));
        for (key, from) in [
            (self.heap.peek().map(Entry::key), Next::Heap),
            (self.hold_timeouts.peek().map(Entry::key), Next::HoldTimeout),
        ] {
            if let Some(k) = key
                && next.is_none_or(|(n, _)| k < n)
            {
                next = Some((k, from));
            }
        }
        next
    }

    /// Integrates the levels up to `at`. The wait cause is judged here rather than after every
    /// event: it only weighs time spent waiting, and the fleet it reads changes only in steps.
    fn advance(&mut self, at: Timestamp) {
        if self.stats.waiting > 0 {
            self.stats.cause = self.wait_cause();
        }
        self.stats.advance(at);
    }

    fn dispatch(&mut self, seq: u64, what: Scheduled) -> Result<(), SimError> {
        match what {
            Scheduled::Tick => {
                if self.pending_tick.is_some_and(|(_, s)| s == seq) {
                    self.pending_tick = None;
                    self.ticks_now += 1;
                    if self.ticks_now > STALL_LIMIT {
                        return Err(SimError::Stalled { at: self.now });
                    }
                    self.feed(Event::Tick);
                }
            }
            Scheduled::Created(machine) => self.feed(Event::MachineCreated { machine }),
            Scheduled::CreationFailed(machine) => self.feed(Event::MachineCreationFailed {
                machine,
                failure: CreationFailure::Retryable,
            }),
            Scheduled::Removed(machine) => {
                self.ready_at.remove(&machine);
                self.feed(Event::MachineRemoved { machine });
            }
            Scheduled::RemovalFailed(machine) => self.feed(Event::MachineRemovalFailed { machine }),
            Scheduled::AnswerJob { runner, job } => self.answer(Answer::Job { runner, job }),
            Scheduled::AnswerEmpty {
                runner,
                held_ms,
                long_poll,
            } => self.answer(Answer::Empty {
                runner,
                held_ms,
                long_poll,
            }),
            Scheduled::HoldTimeout(runner, hold) => {
                if self.coordinators[runner.index()].time_out(hold) {
                    self.answers.push_back(Answer::Empty {
                        runner,
                        held_ms: self.workload.dispatch.long_poll_ms,
                        long_poll: true,
                    });
                }
            }
            Scheduled::JobDone(job) => {
                if self.jobs.get_mut(job).is_some_and(|j| j.stopping.is_none()) {
                    self.jobs.remove(job);
                    self.stats.completed += 1;
                    self.feed(Event::JobFinished {
                        job,
                        outcome: Outcome::Success,
                    });
                }
            }
            Scheduled::JobStopped(job) => {
                if let Some(outcome) = self.jobs.remove(job).and_then(|j| j.stopping) {
                    self.stats.failed += 1;
                    self.feed(Event::JobFinished { job, outcome });
                }
            }
            Scheduled::MachineLost(job) => {
                if self.jobs.get_mut(job).is_some_and(|j| j.stopping.is_none()) {
                    let on = self.core.state().job(job).map(|j| j.state);
                    if let Some(JobState::Running {
                        machine: Some(machine),
                        ..
                    }) = on
                    {
                        self.feed(Event::MachineLost { machine });
                    }
                }
            }
        }
        Ok(())
    }

    fn arrive(&mut self) {
        let Some((job, _)) = self.next_job.take() else {
            return;
        };
        let id = self.jobs.push(JobRec {
            arrival: self.now,
            duration_ms: job.duration_ms,
            started: false,
            stopping: None,
        });
        self.stats.arrived += 1;
        self.stats.waiting += 1;
        if self.stats.waiting > MAX_WAITING {
            self.stop_unstable();
        }
        // Workhorse ends the runner's held requests with a bare 204: the job goes to a later one.
        let runner = job.runner;
        let (now, answers) = (self.now, &mut self.answers);
        let released =
            self.coordinators[runner.index()].enqueue(id, self.workload.polling, |since| {
                answers.push_back(Answer::Empty {
                    runner,
                    held_ms: now.0.saturating_sub(since.0),
                    long_poll: true,
                })
            });
        if let Released::Job(job) = released {
            self.answers.push_back(Answer::Job { runner, job });
        }
        self.schedule_arrival();
    }

    /// Why waiting jobs wait now: a free machine means the next request; else a runner at its
    /// `limit` (or `concurrent` reached) means the cap; else machines in creation.
    fn wait_cause(&self) -> WaitCause {
        let runners = self.core.state().runners();
        let (mut idle, mut creating, mut running, mut capped) = (0, 0, 0, false);
        for (r, limit) in runners.iter().zip(&self.limits) {
            let c = &r.counts;
            creating += c.creating;
            running += c.running;
            let counted = (c.creating + c.idle + c.busy + c.removing).saturating_sub(c.stuck);
            if let Some(sp) = r.config.slot_policy() {
                // With slots, a busy machine may have a free slot; `limit` caps jobs and
                // `max_instances` machines.
                idle += r.free_slots();
                capped |= (*limit > 0 && c.running >= *limit)
                    || (sp.max_machines > 0 && counted >= sp.max_machines);
            } else {
                idle += c.idle;
                capped |= *limit > 0 && counted >= *limit;
            }
        }
        if idle > 0 {
            WaitCause::Request
        } else if capped || running >= self.concurrent {
            WaitCause::Limit
        } else if creating > 0 {
            WaitCause::Creating
        } else {
            WaitCause::Request
        }
    }

    /// Stops a run whose queue outgrew [`MAX_WAITING`], with the rates measured so far.
    fn stop_unstable(&mut self) {
        let hours = (self.now.0.saturating_sub(self.start.0)).max(1) as f64 / 3_600_000.0;
        self.unstable = Some(Unstable {
            arrivals_per_hour: crate::stats::round3(self.stats.arrived as f64 / hours),
            capacity_per_hour: crate::stats::round3(self.stats.started() as f64 / hours),
            limited_by: "jobs started so far".into(),
            evidence: "queue",
            at_seconds: crate::stats::round3(hours * 3600.0),
            stopped: true,
        });
    }

    /// Inlined into the run loop, which reads the answer straight from the FIFO: a whole copy of
    /// an entry just written field by field stalls store forwarding.
    #[inline(always)]
    fn answer(&mut self, answer: Answer) {
        match answer {
            Answer::Job { runner, job } => {
                let queued_ms = self
                    .jobs
                    .get_mut(job)
                    .map_or(0, |j| self.now.0 - j.arrival.0);
                let info = JobInfo {
                    timeout_ms: self.workload.job_timeout_ms,
                    queued_ms,
                };
                self.feed(Event::JobReceived { runner, job, info })
            }
            Answer::Empty {
                runner,
                held_ms,
                long_poll,
            } => self.feed(Event::JobRequestAnswered {
                runner,
                held_ms,
                long_poll,
            }),
        }
    }

    /// Hands one event to the core and carries out what it says.
    ///
    /// Inlined so that the event is built where the core reads it: copying a just-written event
    /// into a call's argument stalls the CPU's store forwarding, on every event.
    #[inline(always)]
    fn feed(&mut self, event: Event) {
        let seen = if O::ACTIVE { Some(event.clone()) } else { None };
        let mut commands = std::mem::take(&mut self.commands);
        let wake_at = self.core.handle_into(self.now, event, &mut commands);
        self.carry_out(seen, commands, wake_at);
    }

    /// What follows a step: the fleet's levels, the observer, the commands and the next wake-up.
    fn carry_out(
        &mut self,
        seen: Option<Event>,
        mut commands: Vec<Command>,
        wake_at: Option<Timestamp>,
    ) {
        self.stats.events += 1;
        let runners = self.core.state().runners();
        self.stats.set_machines(runners.iter().map(|r| &r.counts));
        if let Some(event) = seen {
            let step = Step {
                commands: commands.clone(),
                wake_at,
            };
            self.observer.on_step(self.now, &event, &step, &self.core);
        }
        for command in commands.drain(..) {
            self.command(command);
        }
        self.commands = commands;
        if let Some(at) = wake_at {
            let at = at.max(self.now);
            if self.pending_tick.is_none_or(|(pending, _)| at < pending) {
                self.schedule(at, Scheduled::Tick);
                self.pending_tick = Some((at, self.seq));
            }
        }
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::RequestJob { runner } => {
                let Some(c) = self.coordinators.get_mut(runner.index()) else {
                    return;
                };
                match c.request(self.workload.polling, self.now) {
                    Fate::Job(job) => self.reply(Answer::Job { runner, job }),
                    // Rails' empty answer carries a fresh queue version; behind Workhorse the next
                    // request is held.
                    Fate::Empty => self.reply(Answer::Empty {
                        runner,
                        held_ms: 0,
                        long_poll: self.workload.polling == Polling::Long,
                    }),
                    // An idealised push coordinator holds a request for as long as it takes.
                    Fate::Held(_) if self.workload.polling == Polling::Push => {}
                    Fate::Held(hold) => {
                        let at = self
                            .now
                            .0
                            .saturating_add(self.workload.dispatch.long_poll_ms);
                        self.seq += 1;
                        self.hold_timeouts.push(Entry::new(
                            Timestamp(at),
                            self.seq,
                            Scheduled::HoldTimeout(runner, hold),
                        ));
                    }
                }
            }
            Command::CancelRequests { runner } => {
                if let Some(c) = self.coordinators.get_mut(runner.index()) {
                    for _ in 0..c.cancel() {
                        self.answers.push_back(Answer::Empty {
                            runner,
                            held_ms: 0,
                            long_poll: false,
                        });
                    }
                }
            }
            Command::CreateMachine { machine, .. } => self.create(machine),
            Command::RemoveMachine { machine, .. } => self.remove(machine),
            // Nothing restarts in a simulation; a resumed job would simply run.
            Command::RunJob { job, machine, .. } | Command::ResumeJob { job, machine, .. } => {
                self.start_job(job, machine)
            }
            Command::CancelJob { job } => self.stop_job(job, Outcome::Canceled),
            Command::AbortJob { job, reason } => self.stop_job(
                job,
                Outcome::Failed {
                    reason,
                    exit_code: None,
                },
            ),
            Command::FailJob { job, .. } => {
                if let Some(rec) = self.jobs.remove(job) {
                    if !rec.started {
                        self.stats.waiting -= 1;
                    }
                    self.stats.failed += 1;
                }
            }
            // Never asked: the core lists machines only on a restart (`Resumed`, never fed here) or
            // for periodic reconciliation, which `Scenario::new` switches off.
            Command::ListMachines { .. } => {}
            Command::Exit { .. } => self.exited = true,
        }
    }

    /// Rails' answer to a request, after the round trip.
    fn reply(&mut self, mut answer: Answer) {
        let delay = self
            .workload
            .dispatch
            .round_trip
            .sample_ms(&mut self.request_rng);
        if let Answer::Empty { held_ms, .. } = &mut answer {
            *held_ms = delay;
        }
        if delay == 0 {
            self.answers.push_back(answer);
        } else {
            let what = match answer {
                Answer::Job { runner, job } => Scheduled::AnswerJob { runner, job },
                Answer::Empty {
                    runner,
                    held_ms,
                    long_poll,
                } => Scheduled::AnswerEmpty {
                    runner,
                    held_ms,
                    long_poll,
                },
            };
            self.schedule(Timestamp(self.now.0.saturating_add(delay)), what);
        }
    }

    fn create(&mut self, machine: MachineId) {
        let w = self.workload;
        let mut boot = w.boot.sample_ms(&mut self.boot_rng);
        if w.faults.slow_boot_rate > 0.0 && self.fault_rng.random::<f64>() < w.faults.slow_boot_rate
        {
            boot = (boot as f64 * w.faults.slow_boot_factor) as u64;
        }
        let fails =
            w.boot_failure_rate > 0.0 && self.fault_rng.random::<f64>() < w.boot_failure_rate;
        let ready_at = Timestamp(self.now.0.saturating_add(boot));
        self.ready_at.insert(machine, ready_at);
        self.schedule(
            ready_at,
            if fails {
                Scheduled::CreationFailed(machine)
            } else {
                Scheduled::Created(machine)
            },
        );
    }

    fn remove(&mut self, machine: MachineId) {
        let w = self.workload;
        // A creation in progress finishes first.
        let from = self
            .ready_at
            .get(&machine)
            .map_or(self.now, |at| (*at).max(self.now));
        let at = Timestamp(
            from.0
                .saturating_add(w.removal.sample_ms(&mut self.removal_rng)),
        );
        let fails =
            w.removal_failure_rate > 0.0 && self.fault_rng.random::<f64>() < w.removal_failure_rate;
        self.schedule(
            at,
            if fails {
                Scheduled::RemovalFailed(machine)
            } else {
                Scheduled::Removed(machine)
            },
        );
    }

    fn start_job(&mut self, job: JobId, machine: Option<MachineId>) {
        let now = self.now;
        let Some(rec) = self.jobs.get_mut(job) else {
            return;
        };
        if rec.started {
            return;
        }
        rec.started = true;
        let (wait, duration) = (now.0 - rec.arrival.0, rec.duration_ms);
        self.stats.waiting -= 1;
        self.stats.record_wait(now, wait);
        let loss = self.workload.faults.machine_loss_per_hour;
        if machine.is_some() && loss > 0.0 {
            let death = exponential(&mut self.fault_rng, 3_600_000.0 / loss);
            if death < duration as f64 {
                self.schedule(Timestamp(now.0 + death as u64), Scheduled::MachineLost(job));
                return;
            }
        }
        self.schedule(
            Timestamp(now.0.saturating_add(duration)),
            Scheduled::JobDone(job),
        );
    }

    fn stop_job(&mut self, job: JobId, outcome: Outcome) {
        let Some(rec) = self.jobs.get_mut(job) else {
            return;
        };
        if rec.stopping.is_some() {
            return;
        }
        rec.stopping = Some(outcome);
        let at = Timestamp(self.now.0 + STOP_DELAY_MS);
        self.schedule(at, Scheduled::JobStopped(job));
    }
}
