//! Traffic recorded by the core (a production journal, or another run) turned back into a workload:
//! "what would this day have cost under another config?"
//!
//! Fed every `(now, event, step)` of a replay: a job arrived at `received − time in GitLab's queue`,
//! ran from its `RunJob` command to its `JobFinished` event; machines booted from `CreateMachine` to
//! `MachineCreated` (or failed) and went from `RemoveMachine` to `MachineRemoved`. Boot and removal
//! times become empirical distributions; jobs that never ran take a duration drawn from those that did.
//! Job requests, from `RequestJob` to their answer, give the dispatch path's timings: whether GitLab
//! long-polled, for how long, and its round trip ([`crate::dispatch::RequestTimer`]).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use drover_core::{Command, Config, Event, JobId, MachineId, Signal, Step, Timestamp};

use crate::dispatch::RequestTimer;
use crate::dist::Dist;
use crate::workload::{Arrivals, Faults, Trace, TraceRow, Workload};

/// Collects jobs and machine timings from a stream of core steps.
#[derive(Debug, Default)]
pub struct Recorder {
    /// Runner names by id, as the core numbers them (reloads append).
    runners: Vec<String>,
    jobs: BTreeMap<JobId, Seen>,
    creating: BTreeMap<MachineId, Timestamp>,
    removing: BTreeMap<MachineId, Timestamp>,
    boots_ms: Vec<f64>,
    removals_ms: Vec<f64>,
    creations: u64,
    creation_failures: u64,
    requests: RequestTimer,
    first: Option<Timestamp>,
    last: Timestamp,
}

#[derive(Debug)]
struct Seen {
    arrival: Timestamp,
    runner: u16,
    started: Option<Timestamp>,
    duration_ms: Option<u64>,
}

/// Why recorded traffic cannot make a workload.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordedError {
    #[error("{0}: the recording has no jobs to simulate")]
    NoJobs(String),
    #[error("{0}: no recorded job ran to its end, so there are no durations to learn from")]
    NoDurations(String),
}

impl Recorder {
    /// Starts with the runners of the config the recording began with.
    pub fn new(config: &Config) -> Recorder {
        Recorder {
            runners: config.runners.iter().map(|r| r.name.clone()).collect(),
            ..Recorder::default()
        }
    }

    /// Takes in one step of the recording.
    pub fn observe(&mut self, now: Timestamp, event: &Event, step: &Step) {
        self.first.get_or_insert(now);
        self.last = self.last.max(now);
        match event {
            Event::JobReceived { runner, job, info } => {
                self.requests.answered(runner.0, now, Some(true));
                let arrival = Timestamp(now.0.saturating_sub(info.queued_ms));
                self.first = self.first.map(|f| f.min(arrival));
                self.jobs.entry(*job).or_insert(Seen {
                    arrival,
                    runner: runner.0,
                    started: None,
                    duration_ms: None,
                });
            }
            Event::JobRequestEmpty { runner } | Event::JobRequestAnswered { runner, .. } => {
                self.requests.answered(runner.0, now, Some(false))
            }
            Event::JobRequestFailed { runner, .. } | Event::JobRequestUnhealthy { runner, .. } => {
                self.requests.answered(runner.0, now, None)
            }
            Event::JobFinished { job, .. } => {
                if let Some(j) = self.jobs.get_mut(job)
                    && let (Some(s), None) = (j.started, j.duration_ms)
                {
                    j.duration_ms = Some(now.0.saturating_sub(s.0));
                }
            }
            Event::MachineCreated { machine } => {
                if let Some(t) = self.creating.remove(machine) {
                    self.boots_ms.push(now.0.saturating_sub(t.0) as f64);
                }
            }
            Event::MachineCreationFailed { machine, .. } => {
                self.creation_failures += u64::from(self.creating.remove(machine).is_some());
            }
            Event::MachineRemoved { machine } => {
                if let Some(t) = self.removing.remove(machine) {
                    self.removals_ms.push(now.0.saturating_sub(t.0) as f64);
                }
            }
            Event::Signal(Signal::Reload(config)) => {
                for r in &config.runners {
                    if !self.runners.contains(&r.name) {
                        self.runners.push(r.name.clone());
                    }
                }
            }
            _ => {}
        }
        for command in &step.commands {
            match command {
                Command::RequestJob { runner } => self.requests.sent(runner.0, now),
                Command::RunJob { job, .. } => {
                    if let Some(j) = self.jobs.get_mut(job) {
                        j.started.get_or_insert(now);
                    }
                }
                Command::CreateMachine { machine, .. } => {
                    self.creations += 1;
                    self.creating.entry(*machine).or_insert(now);
                }
                Command::RemoveMachine { machine, .. } => {
                    self.removing.entry(*machine).or_insert(now);
                }
                _ => {}
            }
        }
    }

    /// The workload: every recorded job as a trace row, timings as empirical distributions.
    /// Jobs still running when the recording ends count as lasting until its end.
    pub fn into_workload(self, origin: PathBuf) -> Result<Workload, RecordedError> {
        let name = origin.display().to_string();
        if self.jobs.is_empty() {
            return Err(RecordedError::NoJobs(name));
        }
        let last = self.last;
        let mut rows: Vec<TraceRow> = self
            .jobs
            .values()
            .map(|j| TraceRow {
                at: j.arrival,
                duration_ms: j
                    .duration_ms
                    .or(j.started.map(|s| last.0.saturating_sub(s.0))),
                runner: Some(j.runner),
                line: 0,
            })
            .collect();
        rows.sort_by_key(|r| r.at);
        let durations: Vec<f64> = rows
            .iter()
            .filter_map(|r| r.duration_ms)
            .map(|d| d as f64)
            .collect();
        if durations.is_empty() {
            return Err(RecordedError::NoDurations(name));
        }
        let empirical = |xs: Vec<f64>, default_ms: f64| {
            if xs.is_empty() {
                Dist::Constant { ms: default_ms }
            } else {
                Dist::empirical(xs, None)
            }
        };
        let start = self.first.unwrap_or(Timestamp::ZERO);
        let creations = self.creations.max(1) as f64;
        let (polling, dispatch) = self.requests.dispatch();
        Ok(Workload {
            origin: origin.clone(),
            start,
            horizon_ms: None,
            jobs: None,
            seed: 0,
            arrivals: Arrivals::Trace(Arc::new(Trace {
                rows,
                runners: self.runners,
                source: origin,
            })),
            duration: Some(Dist::empirical(durations, None)),
            boot: empirical(self.boots_ms, 90_000.0),
            boot_failure_rate: self.creation_failures as f64 / creations,
            removal: empirical(self.removals_ms, 10_000.0),
            removal_failure_rate: 0.0,
            polling,
            dispatch,
            job_timeout_ms: 0,
            faults: Faults::default(),
            shares: Vec::new(),
            shares_at: None,
        })
    }
}
