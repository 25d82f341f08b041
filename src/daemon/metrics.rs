//! Prometheus metrics on `listen_address` (`/metrics`), named in GitLab Runner's spirit (`drover_…`).
//! Gauges are read off the core after every step (O(runners)); counters and histograms are fed by
//! the events and commands that pass through the driver.

use std::sync::atomic::{AtomicI64, AtomicU64};
use std::sync::{Arc, Mutex};

use drover_core::{Command, Core, Event, Timestamp};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunnerState {
    pub runner: String,
    pub state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunnerLabel {
    pub runner: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub runner: String,
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    pub runner: String,
    pub reason: String,
}

#[derive(Clone)]
pub struct Metrics {
    registry: Arc<Mutex<Registry>>,
    jobs: Family<RunnerState, Gauge>,
    machines: Family<RunnerState, Gauge>,
    limit: Family<RunnerLabel, Gauge>,
    idle_target: Family<RunnerLabel, Gauge>,
    concurrent: Gauge,
    requests: Family<Outcome, Counter>,
    unusable_payloads: Family<Outcome, Counter>,
    jobs_finished: Family<Outcome, Counter>,
    creations: Family<RunnerLabel, Counter>,
    creation_failures: Family<RunnerLabel, Counter>,
    removals: Family<Reason, Counter>,
    removal_failures: Family<RunnerLabel, Counter>,
    anomalies: Counter<u64, AtomicU64>,
    events: Counter<u64, AtomicU64>,
    job_wait: Family<RunnerLabel, Histogram>,
    job_duration: Family<RunnerLabel, Histogram>,
    last_anomalies: Arc<AtomicI64>,
}

fn seconds_histogram() -> Histogram {
    // 1 s … ~9 h
    Histogram::new(exponential_buckets(1.0, 2.0, 16))
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Arc::new(Mutex::new(Registry::with_prefix("drover"))),
            jobs: Family::default(),
            machines: Family::default(),
            limit: Family::default(),
            idle_target: Family::default(),
            concurrent: Gauge::default(),
            requests: Family::default(),
            unusable_payloads: Family::default(),
            jobs_finished: Family::default(),
            creations: Family::default(),
            creation_failures: Family::default(),
            removals: Family::default(),
            removal_failures: Family::default(),
            anomalies: Counter::default(),
            events: Counter::default(),
            job_wait: Family::new_with_constructor(seconds_histogram),
            job_duration: Family::new_with_constructor(seconds_histogram),
            last_anomalies: Arc::default(),
        };
        {
            let mut r = m.registry.lock().unwrap_or_else(|e| e.into_inner());
            r.register(
                "jobs",
                "Jobs held, by runner and state (queued, running)",
                m.jobs.clone(),
            );
            r.register(
                "machines",
                "Machines, by runner and state (creating, idle, busy, removing, stuck)",
                m.machines.clone(),
            );
            r.register(
                "limit",
                "The runner's limit (0 = unlimited)",
                m.limit.clone(),
            );
            r.register(
                "idle_target",
                "Idle capacity the runner keeps now: machines (docker+machine) or job slots (docker-autoscaler)",
                m.idle_target.clone(),
            );
            r.register(
                "concurrent",
                "Job slots across runners",
                m.concurrent.clone(),
            );
            r.register(
                "job_requests",
                "Job requests to GitLab by outcome (job, empty, failed)",
                m.requests.clone(),
            );
            r.register(
                "unusable_job_payloads",
                "Job payloads from GitLab drover could not use, by what it did: failed (the job \
                 was failed with the reason in its trace), dropped (the answer named no job), \
                 repeated (a job already failed that way came again and was left alone)",
                m.unusable_payloads.clone(),
            );
            r.register(
                "jobs_finished",
                "Jobs that ended, by outcome",
                m.jobs_finished.clone(),
            );
            r.register("machine_creations", "Machines created", m.creations.clone());
            r.register(
                "machine_creation_failures",
                "Machine creations that failed",
                m.creation_failures.clone(),
            );
            r.register(
                "machine_removals",
                "Machines removed, by reason asked",
                m.removals.clone(),
            );
            r.register(
                "machine_removal_failures",
                "Machine removals that failed",
                m.removal_failures.clone(),
            );
            r.register(
                "anomalies",
                "Inputs the core found nonsensical",
                m.anomalies.clone(),
            );
            r.register("events", "Events handled by the core", m.events.clone());
            r.register(
                "job_wait_seconds",
                "From a job's arrival in GitLab's queue to its start",
                m.job_wait.clone(),
            );
            r.register(
                "job_duration_seconds",
                "From a job's start to its end",
                m.job_duration.clone(),
            );
        }
        m
    }

    /// Before the core handles `event`: counters that need the state it refers to.
    pub fn before(&self, core: &Core, now: Timestamp, event: &Event) {
        self.events.inc();
        let runner_of_machine = |m| {
            core.state()
                .machine(m)
                .and_then(|m| core.state().runner(m.runner))
                .map(|r| r.config.name.clone())
        };
        let runner_name = |r: drover_core::RunnerId| {
            core.state()
                .runner(r)
                .map(|r| r.config.name.clone())
                .unwrap_or_default()
        };
        match event {
            Event::JobReceived { runner, .. } => self.request(&runner_name(*runner), "job"),
            Event::JobRequestEmpty { runner } | Event::JobRequestAnswered { runner, .. } => {
                self.request(&runner_name(*runner), "empty")
            }
            Event::JobRequestFailed { runner, .. } | Event::JobRequestUnhealthy { runner, .. } => {
                self.request(&runner_name(*runner), "failed")
            }
            Event::MachineCreated { machine } => {
                if let Some(runner) = runner_of_machine(*machine) {
                    self.creations.get_or_create(&RunnerLabel { runner }).inc();
                }
            }
            Event::MachineCreationFailed { machine, .. } => {
                if let Some(runner) = runner_of_machine(*machine) {
                    self.creation_failures
                        .get_or_create(&RunnerLabel { runner })
                        .inc();
                }
            }
            Event::MachineRemovalFailed { machine } => {
                if let Some(runner) = runner_of_machine(*machine) {
                    self.removal_failures
                        .get_or_create(&RunnerLabel { runner })
                        .inc();
                }
            }
            Event::JobFinished { job, outcome } => {
                if let Some(j) = core.state().job(*job) {
                    let runner = runner_name(j.runner);
                    if let drover_core::state::JobState::Running { started_at, .. } = j.state {
                        self.job_duration
                            .get_or_create(&RunnerLabel {
                                runner: runner.clone(),
                            })
                            .observe(now.since(started_at).as_secs_f64());
                    }
                    let outcome = match outcome {
                        drover_core::Outcome::Success => "success".to_string(),
                        drover_core::Outcome::Failed { reason, .. } => reason.as_str().to_string(),
                        drover_core::Outcome::Canceled => "canceled".to_string(),
                    };
                    self.jobs_finished
                        .get_or_create(&Outcome { runner, outcome })
                        .inc();
                }
            }
            _ => {}
        }
    }

    /// A job payload drover could not use; `outcome` is `failed`, `dropped` or `repeated`.
    pub fn unusable_payload(&self, runner: &str, outcome: &str) {
        self.unusable_payloads
            .get_or_create(&Outcome {
                runner: runner.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    fn request(&self, runner: &str, outcome: &str) {
        self.requests
            .get_or_create(&Outcome {
                runner: runner.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
    }

    /// After the core handled an event: gauges, and what the commands tell.
    pub fn after(&self, core: &Core, now: Timestamp, commands: &[Command]) {
        let s = core.state();
        self.concurrent.set(i64::from(core.config().concurrent));
        for r in s.runners() {
            let name = r.config.name.clone();
            let c = &r.counts;
            for (state, n) in [
                ("creating", c.creating),
                ("idle", c.idle),
                ("busy", c.busy),
                ("removing", c.removing),
                ("stuck", c.stuck),
            ] {
                self.machines
                    .get_or_create(&RunnerState {
                        runner: name.clone(),
                        state: state.into(),
                    })
                    .set(i64::from(n));
            }
            for (state, n) in [("queued", c.queued), ("running", c.running)] {
                self.jobs
                    .get_or_create(&RunnerState {
                        runner: name.clone(),
                        state: state.into(),
                    })
                    .set(i64::from(n));
            }
            self.limit
                .get_or_create(&RunnerLabel {
                    runner: name.clone(),
                })
                .set(i64::from(r.config.limit));
            self.idle_target
                .get_or_create(&RunnerLabel { runner: name })
                .set(i64::from(r.idle_target()));
        }
        for c in commands {
            match c {
                Command::RunJob { job, runner, .. } => {
                    if let (Some(j), Some(r)) = (s.job(*job), s.runner(*runner)) {
                        let wait = now.since(j.received_at).as_secs_f64()
                            + j.info.queued_ms as f64 / 1000.0;
                        self.job_wait
                            .get_or_create(&RunnerLabel {
                                runner: r.config.name.clone(),
                            })
                            .observe(wait);
                    }
                }
                Command::RemoveMachine { runner, reason, .. } => {
                    if let Some(r) = s.runner(*runner) {
                        self.removals
                            .get_or_create(&Reason {
                                runner: r.config.name.clone(),
                                reason: reason.as_str().into(),
                            })
                            .inc();
                    }
                }
                _ => {}
            }
        }
        let total = s.anomalies().total() as i64;
        let before = self
            .last_anomalies
            .swap(total, std::sync::atomic::Ordering::Relaxed);
        if total > before {
            self.anomalies.inc_by((total - before) as u64);
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        if encode(&mut out, &registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Serves `/metrics` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Metrics) {
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let metrics = metrics.clone();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    )],
                    metrics.render(),
                )
            }
        }),
    );
    if let Err(e) = axum::serve(listener, app).await {
        tracing::error!("the metrics server stopped: {e}");
    }
}
