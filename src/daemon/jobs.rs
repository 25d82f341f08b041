//! One task per job: accept it at GitLab, wait for the core to place it, run it through the executor
//! while the trace streams to GitLab, and report how it ended — resumable after a restart from what
//! the state directory holds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use drover_core::{Event, FailureReason, JobId, Outcome};
use drover_docker::{Executor, LogCursor};
use drover_gitlab::api::{self, JobOutput, JobResponse, RunnerInfo, UpdateJobRequest};
use drover_gitlab::trace::{
    JobResult, RemoteState, SharedTrace, TraceBuffer, TraceOptions, TraceUploader, UploaderConfig,
};
use drover_gitlab::{Client, JobCredentials, UpdateKind};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use super::Input;
use super::build_spec::{Unsupported, build_spec};
use super::machines::Placement;
use super::state_dir::{Progress, StateDir};
use crate::config::RunnerSettings;

/// What every job of a runner shares.
pub struct RunnerContext {
    pub name: String,
    pub client: Client,
    pub info: RunnerInfo,
    pub settings: RunnerSettings,
    pub short_token: String,
    pub registry_mirrors: Vec<String>,
}

/// What the core decided for a job.
#[derive(Clone)]
pub enum JobCommand {
    Run(Placement),
    Resume(Placement),
    Cancel,
    Abort(FailureReason),
    Fail(FailureReason),
}

pub struct Jobs {
    tasks: BTreeMap<JobId, UnboundedSender<JobCommand>>,
    shared: Arc<Shared>,
}

struct Shared {
    state_dir: StateDir,
    executor: Executor,
    inputs: UnboundedSender<Input>,
    uploader: UploaderConfig,
}

impl Jobs {
    pub fn new(state_dir: StateDir, executor: Executor, inputs: UnboundedSender<Input>) -> Jobs {
        Jobs {
            tasks: BTreeMap::new(),
            shared: Arc::new(Shared { state_dir, executor, inputs, uploader: UploaderConfig::default() }),
        }
    }

    /// Starts the task of a job the core now holds (received, or recovered after a restart).
    pub fn adopt(&mut self, job: JobResponse, runner: Arc<RunnerContext>) {
        let id = JobId(job.id);
        if self.tasks.contains_key(&id) {
            return;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        self.tasks.insert(id, tx);
        let shared = self.shared.clone();
        tokio::spawn(async move { job_task(shared, runner, job, rx).await });
    }

    pub fn command(&mut self, job: JobId, command: JobCommand) {
        match self.tasks.get(&job) {
            Some(tx) => {
                let _ = tx.send(command);
            }
            None => tracing::error!(job = job.0, "no task for a job the core holds"),
        }
    }

    /// The core has journaled the job's end: forget it.
    pub fn forget(&mut self, job: JobId) {
        self.tasks.remove(&job);
        self.shared.state_dir.remove_job(job.0);
    }

    /// The task reports the job by itself and ends: no more commands for it.
    pub fn release(&mut self, job: JobId) {
        self.tasks.remove(&job);
    }

    pub fn holds(&self, job: JobId) -> bool {
        self.tasks.contains_key(&job)
    }
}

fn api_reason(r: FailureReason) -> api::FailureReason {
    match r {
        FailureReason::ScriptFailure => api::FailureReason::ScriptFailure,
        FailureReason::RunnerSystemFailure => api::FailureReason::RunnerSystemFailure,
        FailureReason::JobExecutionTimeout => api::FailureReason::JobExecutionTimeout,
        FailureReason::ImagePullFailure => api::FailureReason::ImagePullFailure,
        FailureReason::UnknownFailure => api::FailureReason::UnknownFailure,
        FailureReason::RunnerConfigurationError => api::FailureReason::RunnerConfigurationError,
        FailureReason::RunnerExternalDependencyFailure => api::FailureReason::RunnerExternalDependencyFailure,
        FailureReason::RunnerInterrupted => api::FailureReason::RunnerInterrupted,
        FailureReason::JobCanceled => api::FailureReason::JobCanceled,
    }
}

fn job_result(outcome: Outcome) -> JobResult {
    match outcome {
        Outcome::Success => JobResult::Success,
        Outcome::Failed { reason, exit_code } => JobResult::Failed { reason: api_reason(reason), exit_code },
        Outcome::Canceled => JobResult::Canceled,
    }
}

/// The last lines of a trace, as GitLab Runner writes them.
fn footer(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Success => "\n\x1b[32;1mJob succeeded\x1b[0;m\n".to_string(),
        Outcome::Failed { reason, exit_code: Some(code) } => {
            format!("\n\x1b[31;1mERROR: Job failed: exit code {code} ({})\x1b[0;m\n", reason.as_str())
        }
        Outcome::Failed { reason, exit_code: None } => {
            format!("\n\x1b[31;1mERROR: Job failed: {}\x1b[0;m\n", reason.as_str())
        }
        Outcome::Canceled => "\n\x1b[31;1mERROR: Job failed: canceled\x1b[0;m\n".to_string(),
    }
}

async fn job_task(
    shared: Arc<Shared>,
    runner: Arc<RunnerContext>,
    job: JobResponse,
    mut rx: UnboundedReceiver<JobCommand>,
) {
    let id = JobId(job.id);
    let creds = JobCredentials::from(&job);
    let mut progress = shared.state_dir.load_progress(job.id);
    let canceled = || {
        let _ = shared.inputs.send(Input::Event(Event::JobCanceled { job: id }));
    };

    if !progress.accepted {
        let result = runner.client.accept_job(&creds, &runner.info).await;
        match result.kind {
            UpdateKind::Abort | UpdateKind::NotFound => canceled(),
            _ if result.cancel_requested() => canceled(),
            UpdateKind::Failed(e) => tracing::warn!(job = job.id, "accepting the job failed: {e}"),
            UpdateKind::Ok | UpdateKind::Accepted | UpdateKind::TraceInvalid => {
                progress.accepted = true;
                save(&shared, job.id, &progress);
            }
        }
    }

    // Waiting for a machine: keep the job alive at GitLab and notice a cancel.
    let mut keepalive = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(30),
        Duration::from_secs(30),
    );
    let command = loop {
        tokio::select! {
            command = rx.recv() => match command {
                Some(c) => break c,
                None => return,
            },
            _ = keepalive.tick() => {
                let request = UpdateJobRequest::keep_alive(runner.info.clone(), creds.token.clone(), JobOutput::default());
                let result = runner.client.update_job(&creds, &request).await;
                if matches!(result.kind, UpdateKind::Abort | UpdateKind::NotFound) || result.cancel_requested() {
                    canceled();
                }
            }
        }
    };
    match command {
        JobCommand::Run(placement) => run(&shared, &runner, job, progress, placement, false, rx).await,
        JobCommand::Resume(placement) => run(&shared, &runner, job, progress, placement, true, rx).await,
        JobCommand::Fail(reason) | JobCommand::Abort(reason) => report_unstarted(&shared, &runner, &job, reason).await,
        JobCommand::Cancel => report_unstarted(&shared, &runner, &job, FailureReason::JobCanceled).await,
    }
}

/// A job that never started: a line of trace and a final `failed`.
async fn report_unstarted(shared: &Shared, runner: &RunnerContext, job: &JobResponse, reason: FailureReason) {
    let options = TraceOptions::for_job(job, Some(u64::from(runner.settings.output_limit_kb)));
    let trace = SharedTrace::new(TraceBuffer::new(&options));
    let why = match reason {
        FailureReason::JobCanceled => "the job was canceled before it started".to_string(),
        r => format!("drover could not start this job ({})", r.as_str()),
    };
    trace.write(format!("\x1b[31;1mERROR: {why}\x1b[0;m\n").as_bytes());
    trace.finish();
    let mut uploader =
        TraceUploader::new(runner.client.clone(), job, runner.info.clone(), trace, shared.uploader.clone());
    let result = match reason {
        FailureReason::JobCanceled => JobResult::Canceled,
        r => JobResult::Failed { reason: api_reason(r), exit_code: None },
    };
    let outcome = uploader.finish(result).await;
    tracing::info!(job = job.id, ?outcome, "reported a job that never started");
    shared.state_dir.remove_job(job.id);
}

fn save(shared: &Shared, job: u64, progress: &Progress) {
    if let Err(e) = shared.state_dir.save_progress(job, progress) {
        tracing::error!(job, "saving the job's progress failed: {e:#}");
    }
}

/// Stores the trace written since the last call and where the executor is, together.
struct Persister {
    stored: u64,
    cursor: Option<LogCursor>,
}

impl Persister {
    fn persist(&mut self, shared: &Shared, job: u64, trace: &SharedTrace, acked: u64, progress: &mut Progress) {
        let (bytes, len) = {
            let buf = trace.lock();
            (buf.bytes()[self.stored as usize..].to_vec(), buf.len())
        };
        if let Err(e) = shared.state_dir.store_trace(job, self.stored, &bytes) {
            tracing::error!(job, "storing the trace failed: {e:#}");
            return;
        }
        self.stored = len;
        progress.trace_len = len;
        progress.cursor = self.cursor;
        progress.acked = acked.min(len);
        save(shared, job, progress);
    }
}

#[allow(clippy::too_many_arguments)]
async fn run(
    shared: &Arc<Shared>,
    runner: &Arc<RunnerContext>,
    job: JobResponse,
    mut progress: Progress,
    placement: Placement,
    resume: bool,
    mut rx: UnboundedReceiver<JobCommand>,
) {
    let id = JobId(job.id);
    let options = TraceOptions::for_job(&job, Some(u64::from(runner.settings.output_limit_kb)));
    let (buffer, acked) = if resume {
        let stored = shared.state_dir.load_trace(job.id, &progress);
        let acked = progress.acked.min(stored.len() as u64);
        (TraceBuffer::resume(&options, stored), acked)
    } else {
        progress = Progress { accepted: progress.accepted, ..Progress::default() };
        (TraceBuffer::new(&options), 0)
    };
    let trace = SharedTrace::new(buffer);
    let mut persister = Persister { stored: trace.lock().len(), cursor: progress.cursor };
    let uploader = TraceUploader::resume(
        runner.client.clone(),
        &job,
        runner.info.clone(),
        trace.clone(),
        shared.uploader.clone(),
        acked,
    );
    let mut remote = uploader.remote();
    let acked_rx = uploader.acked();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let upload = tokio::spawn(async move {
        let mut uploader = uploader;
        uploader
            .run(async {
                let _ = stop_rx.await;
            })
            .await;
        uploader
    });

    let mut remote_over = false;
    let outcome = match progress.outcome {
        // It ended before a restart; only the final update is left.
        Some(outcome) => outcome,
        None => {
            let outcome = execute(shared, runner, &job, &placement, resume, &trace, &mut persister, &mut progress, &acked_rx, &mut remote, &mut rx, &mut remote_over).await;
            trace.write(footer(&outcome).as_bytes());
            outcome
        }
    };
    trace.finish();
    progress.outcome = Some(outcome);
    persister.persist(shared, job.id, &trace, *acked_rx.borrow(), &mut progress);

    let _ = stop_tx.send(());
    match upload.await {
        Ok(mut uploader) if !remote_over => {
            let fin = uploader.finish(job_result(outcome)).await;
            tracing::info!(job = job.id, ?outcome, final_update = ?fin, "job finished");
        }
        Ok(_) => tracing::info!(job = job.id, ?outcome, "job finished; GitLab had already ended it"),
        Err(e) => tracing::error!(job = job.id, "the trace uploader failed: {e}"),
    }
    let _ = shared.inputs.send(Input::Event(Event::JobFinished { job: id, outcome }));
}

#[allow(clippy::too_many_arguments)]
async fn execute(
    shared: &Arc<Shared>,
    runner: &Arc<RunnerContext>,
    job: &JobResponse,
    placement: &Placement,
    resume: bool,
    trace: &SharedTrace,
    persister: &mut Persister,
    progress: &mut Progress,
    acked: &tokio::sync::watch::Receiver<u64>,
    remote: &mut tokio::sync::watch::Receiver<RemoteState>,
    rx: &mut UnboundedReceiver<JobCommand>,
    remote_over: &mut bool,
) -> Outcome {
    let endpoint = match placement.endpoint().await {
        Ok(e) => e,
        Err(e) => {
            trace.write(format!("\x1b[31;1mERROR: the machine for this job is unreachable: {e}\x1b[0;m\n").as_bytes());
            return Outcome::Failed { reason: FailureReason::RunnerSystemFailure, exit_code: None };
        }
    };
    let spec = match build_spec(job, &runner.settings, &runner.short_token, &runner.registry_mirrors) {
        Ok(spec) => spec,
        Err(Unsupported { reason, message }) => {
            trace.write(format!("\x1b[31;1mERROR: {message}\x1b[0;m\n").as_bytes());
            return Outcome::Failed { reason, exit_code: None };
        }
    };
    if !resume {
        let on = endpoint.machine.as_deref().unwrap_or("the local engine");
        trace.write(
            format!(
                "\x1b[1mRunning with drover {}\x1b[0;m\n  on {} {}\n\x1b[36;1mPreparing the \"docker\" executor on {on}\x1b[0;m\n",
                env!("CARGO_PKG_VERSION"),
                runner.name,
                runner.short_token,
            )
            .as_bytes(),
        );
    }
    let (sink, mut chunks) = mpsc::channel(256);
    let handle = if resume {
        shared.executor.resume(endpoint, spec, progress.cursor, sink)
    } else {
        shared.executor.start(endpoint, spec, sink)
    };
    let control = handle.control();
    let mut wait = Box::pin(handle.wait());
    let mut persist_tick = tokio::time::interval(Duration::from_secs(1));
    let mut cancel_reported = false;
    let mut dirty = false;
    let outcome = loop {
        tokio::select! {
            Some(chunk) = chunks.recv() => {
                trace.write(&chunk.data);
                persister.cursor = Some(chunk.cursor);
                dirty = true;
            }
            _ = persist_tick.tick() => {
                if dirty {
                    persister.persist(shared, job.id, trace, *acked.borrow(), progress);
                    dirty = false;
                }
            }
            Ok(()) = remote.changed() => {
                let state = remote.borrow_and_update().clone();
                match state {
                    RemoteState::CancelRequested if !cancel_reported => {
                        cancel_reported = true;
                        let _ = shared.inputs.send(Input::Event(Event::JobCanceled { job: JobId(job.id) }));
                    }
                    RemoteState::Aborted | RemoteState::NotFound => {
                        *remote_over = true;
                        control.abort(FailureReason::JobCanceled);
                    }
                    _ => {}
                }
            }
            Some(command) = rx.recv() => match command {
                JobCommand::Cancel => control.cancel(),
                JobCommand::Abort(reason) => control.abort(reason),
                JobCommand::Run(_) | JobCommand::Resume(_) | JobCommand::Fail(_) => {}
            },
            outcome = &mut wait => break outcome,
        }
    };
    // The executor is done: what it still had in the channel belongs to the trace.
    while let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_secs(5), chunks.recv()).await {
        trace.write(&chunk.data);
        persister.cursor = Some(chunk.cursor);
    }
    outcome
}
