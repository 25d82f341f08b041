//! One task per job: accept it at GitLab, wait for the core to place it, run it through the executor
//! while the trace streams to GitLab, and report how it ended — resumable after a restart from what
//! the state directory holds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use drover_core::{Event, FailureReason, JobId, Outcome};
use drover_docker::{BuildSpec, Executor, LogCursor, Transport, error_line};
use drover_gitlab::api::{JobOutput, JobResponse, RunnerInfo, UndecodableJob, UpdateJobRequest};
use drover_gitlab::trace::{
    JobResult, RemoteState, SharedTrace, TraceBuffer, TraceOptions, TraceUploader, UploaderConfig,
};
use drover_gitlab::{Client, JobCredentials, UpdateKind};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio_util::task::TaskTracker;

use super::Input;
use super::artifacts::GitlabTransport;
use super::build_spec::{
    Unsupported, build_spec, home_registry_credentials, with_concurrency, with_home_credentials,
    with_tls_ca,
};
use super::cache;
use super::concurrency::{Slot, Slots};
use super::machines::Placement;
use super::state_dir::{Progress, StateDir};
use crate::config::{ExecutorKind, RunnerSettings};

/// Attempts to acknowledge a job at GitLab, 1 s apart and doubling (about half a minute in all).
const ACCEPT_ATTEMPTS: u32 = 6;
const ACCEPT_FIRST_WAIT: Duration = Duration::from_secs(1);

/// What every job of a runner shares.
pub struct RunnerContext {
    pub name: String,
    pub client: Client,
    pub info: RunnerInfo,
    pub settings: RunnerSettings,
    pub short_token: String,
    pub registry_mirrors: Vec<String>,
    /// `CI_CONCURRENT_ID`s of the runner's running jobs.
    pub slots: Arc<Slots>,
    /// `tls-ca-file`, resolved: the job's `CI_SERVER_TLS_CA_FILE`.
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// This drover's system id (`s_…`), part of the local cache's volume names.
    pub system_id: String,
}

/// What the core decided for a job.
#[derive(Clone)]
pub enum JobCommand {
    Run(Placement),
    Resume(Placement),
    Cancel,
    Abort(FailureReason),
    /// Report it failed without running it; the detail (a creation error) goes into its trace.
    Fail(FailureReason, Option<String>),
}

pub struct Jobs {
    tasks: BTreeMap<JobId, UnboundedSender<JobCommand>>,
    /// Every job task, so that a clean exit waits for the reports still on their way to GitLab.
    tracker: TaskTracker,
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
            tracker: TaskTracker::new(),
            shared: Arc::new(Shared {
                state_dir,
                executor,
                inputs,
                uploader: UploaderConfig::default(),
            }),
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
        self.tracker
            .spawn(async move { job_task(shared, runner, job, rx).await });
    }

    /// After a restart: a job the core gave up on (or whose payload drover could not use, `why`)
    /// before the crash, whose failure report the crash cut short. It is reported failed
    /// (`runner_system_failure`).
    pub fn report_interrupted(
        &mut self,
        job: JobResponse,
        runner: Arc<RunnerContext>,
        why: Option<String>,
    ) {
        let shared = self.shared.clone();
        self.tracker.spawn(async move {
            report_unstarted(
                &shared,
                &runner,
                &job,
                FailureReason::RunnerSystemFailure,
                why.map(|w| error_line(&w)),
            )
            .await
        });
    }

    /// A job whose payload drover cannot use: accepted at GitLab and failed at once with the
    /// reason in its trace, as GitLab Runner fails a job it cannot validate. The core never holds
    /// it; the state directory does until it is reported, so a crash cannot leave it hanging.
    pub fn reject(&mut self, bad: UndecodableJob, runner: Arc<RunnerContext>) {
        let shared = self.shared.clone();
        self.tracker
            .spawn(async move { reject(&shared, &runner, bad).await });
    }

    /// Waits (at most `within`) until every job task has ended: at a clean exit, only reports of
    /// jobs the core failed are still running. `false` if some did not end in time.
    pub async fn wait(&self, within: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(within, self.tracker.wait())
            .await
            .is_ok()
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

fn job_result(outcome: Outcome) -> JobResult {
    match outcome {
        Outcome::Success => JobResult::Success,
        Outcome::Failed { reason, exit_code } => JobResult::Failed { reason, exit_code },
        Outcome::Canceled => JobResult::Canceled,
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
        let _ = shared
            .inputs
            .send(Input::Event(Event::JobCanceled { job: id }));
    };

    if !progress.accepted && accept(&runner, &creds, &canceled).await {
        progress.accepted = true;
        progress.runner = Some(runner.name.clone());
        save(&shared, job.id, &progress);
    }

    // Waiting for a machine: keep the job alive at GitLab and notice a cancel.
    let mut keepalive = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(30),
        Duration::from_secs(30),
    );
    let mut cancel_reported = false;
    let command = loop {
        tokio::select! {
            command = rx.recv() => match command {
                Some(c) => break c,
                None => return,
            },
            _ = keepalive.tick(), if progress.accepted && !cancel_reported => {
                let request = UpdateJobRequest::keep_alive(runner.info.clone(), creds.token.clone(), JobOutput::default());
                let result = runner.client.update_job(&creds, &request).await;
                if matches!(result.kind, UpdateKind::Abort | UpdateKind::NotFound) || result.cancel_requested() {
                    cancel_reported = true;
                    canceled();
                }
            }
        }
    };
    if !progress.accepted {
        // GitLab never had the job acknowledged: it gives the job to a runner again. Run nothing,
        // report nothing; a job the core already placed ends at once to free its machine.
        tracing::warn!(
            job = job.id,
            "dropping a job GitLab did not let drover acknowledge"
        );
        if matches!(command, JobCommand::Run(_) | JobCommand::Resume(_)) {
            let _ = shared.inputs.send(Input::Event(Event::JobFinished {
                job: id,
                outcome: Outcome::Canceled,
            }));
        } else {
            shared.state_dir.remove_job(job.id);
        }
        return;
    }
    match command {
        JobCommand::Run(placement) => {
            run(&shared, &runner, job, progress, placement, false, rx).await
        }
        JobCommand::Resume(placement) => {
            run(&shared, &runner, job, progress, placement, true, rx).await
        }
        JobCommand::Fail(reason, detail) => {
            let text = unstarted_trace(reason, detail.as_deref());
            report_unstarted(&shared, &runner, &job, reason, Some(text)).await
        }
        JobCommand::Abort(reason) => report_unstarted(&shared, &runner, &job, reason, None).await,
        JobCommand::Cancel => {
            report_unstarted(&shared, &runner, &job, FailureReason::JobCanceled, None).await
        }
    }
}

/// The trace of a job that never started. A creation error comes first, as GitLab Runner's
/// "Preparation failed: …" (the trace buffer masks the job's masked variables in it).
fn unstarted_trace(reason: FailureReason, detail: Option<&str>) -> String {
    let why = match reason {
        FailureReason::JobCanceled => "the job was canceled before it started".to_string(),
        r => format!("drover could not start this job ({})", r.as_str()),
    };
    match detail {
        Some(d) => error_line(&format!("Preparation failed: {d}")) + &error_line(&why),
        None => error_line(&why),
    }
}

/// Acknowledges a job at GitLab (the two-phase commit), retrying failed attempts with backoff.
/// `true` once GitLab runs the job on this runner; `false` (and the core told) when GitLab took
/// it back or never answered.
async fn accept(runner: &RunnerContext, creds: &JobCredentials, canceled: &impl Fn()) -> bool {
    let mut wait = ACCEPT_FIRST_WAIT;
    for attempt in 1..=ACCEPT_ATTEMPTS {
        let result = runner.client.accept_job(creds, &runner.info).await;
        match result.kind {
            UpdateKind::Ok | UpdateKind::Accepted | UpdateKind::TraceInvalid => {
                // Canceled while it was being assigned: it is ours to report as canceled.
                if result.cancel_requested() {
                    canceled();
                }
                return true;
            }
            UpdateKind::Abort | UpdateKind::NotFound => {
                tracing::info!(
                    job = creds.id,
                    "GitLab took the job back before drover acknowledged it"
                );
                canceled();
                return false;
            }
            UpdateKind::Failed(e) => {
                tracing::warn!(
                    job = creds.id,
                    attempt,
                    "acknowledging the job at GitLab failed: {e}"
                );
            }
        }
        if attempt < ACCEPT_ATTEMPTS {
            tokio::time::sleep(wait).await;
            wait *= 2;
        }
    }
    canceled();
    false
}

async fn reject(shared: &Shared, runner: &RunnerContext, bad: UndecodableJob) {
    let job = JobResponse {
        id: bad.id,
        token: bad.token,
        ..Default::default()
    };
    let why = format!(
        "GitLab sent this job with a payload drover cannot use: {}",
        bad.error
    );
    let stored = shared.state_dir.save_job(&job).and_then(|()| {
        shared.state_dir.save_rejection(job.id, &why)?;
        let progress = Progress {
            runner: Some(runner.name.clone()),
            ..Progress::default()
        };
        shared.state_dir.save_progress(job.id, &progress)
    });
    if let Err(e) = stored {
        tracing::error!(job = job.id, "storing the job failed: {e:#}");
    }
    let creds = JobCredentials::from(&job);
    // GitLab's cancel before the acknowledgement ends the job anyway: nothing to tell the core,
    // which never held it.
    if !accept(runner, &creds, &|| {}).await {
        shared.state_dir.remove_job(job.id);
        return;
    }
    let mut progress = shared.state_dir.load_progress(job.id);
    progress.accepted = true;
    save(shared, job.id, &progress);
    report_unstarted(
        shared,
        runner,
        &job,
        FailureReason::RunnerSystemFailure,
        Some(error_line(&why)),
    )
    .await;
}

/// A job that never started: its trace (`trace_text`, else a line for the reason) and a final
/// `failed`.
async fn report_unstarted(
    shared: &Shared,
    runner: &RunnerContext,
    job: &JobResponse,
    reason: FailureReason,
    trace_text: Option<String>,
) {
    let options = TraceOptions::for_job(job, Some(u64::from(runner.settings.output_limit_kb)));
    let trace = SharedTrace::new(TraceBuffer::new(&options));
    let text = trace_text.unwrap_or_else(|| unstarted_trace(reason, None));
    trace.write(text.as_bytes());
    trace.finish();
    let mut uploader = TraceUploader::new(
        runner.client.clone(),
        job,
        runner.info.clone(),
        trace,
        shared.uploader.clone(),
    );
    let result = match reason {
        FailureReason::JobCanceled => JobResult::Canceled,
        r => JobResult::Failed {
            reason: r,
            exit_code: None,
        },
    };
    let outcome = uploader.finish(result).await;
    tracing::info!(job = job.id, ?outcome, "reported a job that never started");
    let mut progress = shared.state_dir.load_progress(job.id);
    progress.reported = true;
    save(shared, job.id, &progress);
    shared.state_dir.remove_job(job.id);
}

fn save(shared: &Shared, job: u64, progress: &Progress) {
    if let Err(e) = shared.state_dir.save_progress(job, progress) {
        tracing::error!(job, "saving the job's progress failed: {e:#}");
    }
}

/// Stores the trace written since the last call and where the executor is, together, then lets
/// the uploader send what is stored.
struct Persister {
    stored: u64,
    cursor: Option<LogCursor>,
}

impl Persister {
    fn persist(
        &mut self,
        shared: &Shared,
        job: u64,
        trace: &SharedTrace,
        acked: u64,
        progress: &mut Progress,
    ) {
        // The bytes and what redaction holds back after them, taken together.
        let (bytes, len, redaction) = {
            let buf = trace.lock();
            (
                buf.bytes()[self.stored as usize..].to_vec(),
                buf.len(),
                buf.checkpoint(),
            )
        };
        if let Err(e) = shared.state_dir.store_trace(job, self.stored, &bytes) {
            tracing::error!(job, "storing the trace failed: {e:#}");
            return;
        }
        self.stored = len;
        progress.trace_len = len;
        progress.cursor = self.cursor;
        progress.acked = acked.min(len);
        progress.redaction = Some(redaction);
        match shared.state_dir.save_progress(job, progress) {
            // Stored for good: GitLab may have it now.
            Ok(()) => trace.lock().limit_uploads_to(len),
            Err(e) => tracing::error!(job, "saving the job's progress failed: {e:#}"),
        }
    }
}

/// Whether GitLab has closed the job, asked with a keep-alive (answered `403` or `Job-Status`
/// failed/canceled/success for a closed job, without side effects): a job whose final update may
/// have gone through gets no more patches or updates then.
async fn gitlab_closed(runner: &RunnerContext, job: &JobResponse, trace: &SharedTrace) -> bool {
    let output = trace.lock().output();
    let request = UpdateJobRequest::keep_alive(runner.info.clone(), job.token.clone(), output);
    let reply = runner
        .client
        .update_job(&JobCredentials::from(job), &request)
        .await;
    matches!(reply.kind, UpdateKind::Abort | UpdateKind::NotFound)
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
    if let (true, Some(outcome)) = (progress.reported, progress.outcome) {
        // GitLab has the final state already; the crash came before the core journaled the end.
        tracing::info!(
            job = job.id,
            ?outcome,
            "job finished before the restart; already reported"
        );
        let _ = shared
            .inputs
            .send(Input::Event(Event::JobFinished { job: id, outcome }));
        return;
    }
    let options = TraceOptions::for_job(&job, Some(u64::from(runner.settings.output_limit_kb)));
    let (mut buffer, acked) = if resume {
        let stored = shared.state_dir.load_trace(job.id, &progress);
        let acked = progress.acked.min(stored.len() as u64);
        let mut buffer = TraceBuffer::resume(&options, stored);
        if let Some(Err(e)) = progress.redaction.as_ref().map(|c| buffer.restore(c)) {
            tracing::warn!(
                job = job.id,
                "{e}; the few bytes held back for masking at the crash are lost"
            );
        }
        (buffer, acked)
    } else {
        progress = Progress {
            accepted: progress.accepted,
            runner: progress.runner.take(),
            ..Progress::default()
        };
        (TraceBuffer::new(&options), 0)
    };
    // GitLab gets only what the state directory holds, so that after a crash the stored trace
    // always continues what GitLab has.
    buffer.limit_uploads_to(buffer.len());
    let trace = SharedTrace::new(buffer);
    if let (true, Some(outcome)) = (resume, progress.outcome)
        && gitlab_closed(runner, &job, &trace).await
    {
        // The final update went through just before the crash (or GitLab ended the job since).
        tracing::info!(
            job = job.id,
            ?outcome,
            "job finished before the restart; GitLab has closed it"
        );
        progress.reported = true;
        save(shared, job.id, &progress);
        let _ = shared
            .inputs
            .send(Input::Event(Event::JobFinished { job: id, outcome }));
        return;
    }
    let mut persister = Persister {
        stored: trace.lock().len(),
        cursor: progress.cursor,
    };
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
            execute(
                shared,
                runner,
                &job,
                &placement,
                resume,
                &trace,
                &mut persister,
                &mut progress,
                &acked_rx,
                &mut remote,
                &mut rx,
                &mut remote_over,
            )
            .await
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
        Ok(_) => tracing::info!(
            job = job.id,
            ?outcome,
            "job finished; GitLab had already ended it"
        ),
        Err(e) => tracing::error!(job = job.id, "the trace uploader failed: {e}"),
    }
    // Before the core hears of the end: a crash from here on must not repeat the final update.
    progress.reported = true;
    save(shared, job.id, &progress);
    let _ = shared
        .inputs
        .send(Input::Event(Event::JobFinished { job: id, outcome }));
}

/// The job's [`BuildSpec`], completed in the order its parts become known:
/// 1. `build_spec`: the payload and the runner's settings (may refuse the job);
/// 2. `cache::plan`: the caches, which depend on the machine the job landed on (may refuse it);
/// 3. what only the daemon knows at run time, each put before the job's variables so that the
///    job's own win: the concurrency ids of `slot`, `CI_SERVER_TLS_CA_FILE`, then the registry
///    credentials of drover's user (ranked among the job's);
/// 4. the transport its artifacts go through to GitLab.
fn job_spec(
    runner: &RunnerContext,
    job: &JobResponse,
    machine: Option<&str>,
    slot: &Slot,
) -> Result<BuildSpec, Unsupported> {
    let mut spec = build_spec(
        job,
        &runner.settings,
        &runner.short_token,
        &runner.registry_mirrors,
    )?;
    cache::plan(&mut spec, job, &runner.settings, &runner.system_id, machine)?;
    // Before machine names followed the runner's URL and name, labels were the token's short form.
    let token = runner.settings.token.as_ref().map_or("", |t| t.expose());
    let earlier = drover_core::config::short_token(token, &runner.name);
    if earlier != spec.runner {
        spec.earlier_runner_labels.push(earlier);
    }
    // docker+machine: one job per machine, so GitLab Runner counts per-project slots on a
    // machine, always 0.
    let project_id = match runner.settings.executor {
        ExecutorKind::DockerMachine => 0,
        ExecutorKind::Docker => slot.project_id(),
    };
    with_concurrency(&mut spec, slot.id(), project_id);
    if let Some(path) = &runner.tls_ca_file {
        match std::fs::read_to_string(path) {
            Ok(ca) => with_tls_ca(&mut spec, ca),
            Err(err) => spec.warnings.push(format!(
                "CI_SERVER_TLS_CA_FILE is not set: reading tls-ca-file {}: {err}",
                path.display()
            )),
        }
    }
    match home_registry_credentials() {
        Ok(home) => with_home_credentials(&mut spec, &home),
        Err(err) => spec
            .warnings
            .push(format!("ignoring registry credentials: {err}")),
    }
    spec.transport = Transport::new(Arc::new(GitlabTransport {
        client: runner.client.clone(),
        job: JobCredentials::from(job),
    }));
    Ok(spec)
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
    // The executor frames the trace (its first and last lines); a job it never sees gets its
    // error and last line here.
    let not_started = |message: String, reason: FailureReason| {
        trace.write(error_line(&message).as_bytes());
        trace.write(b"\n");
        trace.write(error_line(&format!("Job failed: {}", reason.as_str())).as_bytes());
        Outcome::Failed {
            reason,
            exit_code: None,
        }
    };
    let endpoint = match placement.endpoint().await {
        Ok(e) => e,
        Err(e) => {
            return not_started(
                format!("the machine for this job is unreachable: {e}"),
                FailureReason::RunnerSystemFailure,
            );
        }
    };
    // Held while the job runs: this function returns when it has ended.
    let slot = runner.slots.acquire(job.job_info.project_id);
    let machine = endpoint.machine.as_deref();
    let spec = match job_spec(runner, job, machine, &slot) {
        Ok(spec) => spec,
        Err(Unsupported { reason, message }) => return not_started(message, reason),
    };
    let (sink, mut chunks) = mpsc::channel(256);
    let handle = if resume {
        shared
            .executor
            .resume(endpoint, spec, progress.cursor, sink)
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
                JobCommand::Run(_) | JobCommand::Resume(_) | JobCommand::Fail(..) => {}
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
