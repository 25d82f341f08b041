//! Sending a job's log and its final state to GitLab.
//!
//! The daemon drives one [`TraceUploader`] per running job:
//! 1. [`TraceUploader::run`] until the job ends: every interval (3 s, or as GitLab asks) a tick
//!    PATCHes what GitLab does not have yet and, when nothing was sent for 30 s, PUTs a `running`
//!    keep-alive. Cancellation and abort signals from GitLab are published on
//!    [`TraceUploader::remote`].
//! 2. [`TraceUploader::finish`] once: flush the trace, then the final `PUT` (202/412: wait and
//!    redo; failures: retried with backoff, bounded).
//!
//! Persist the acknowledged offset (watch [`TraceUploader::acked`]) together with the stored trace
//! bytes; after a restart, [`TraceUploader::resume`] continues from that offset.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;
use tokio::time::Instant;

use super::SharedTrace;
use crate::api::{
    FailureReason, JobResponse, JobState, RunnerInfo, ServerReason, UpdateJobRequest,
};
use crate::client::{Client, JobCredentials, JobReply, PatchKind, UpdateKind};
use crate::retry::Backoff;

/// Timing and size limits, GitLab Runner's defaults.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploaderConfig {
    /// Between ticks until GitLab asks for another interval (3 s).
    pub update_interval: Duration,
    /// The longest interval honoured, whatever GitLab asks (15 min).
    pub max_update_interval: Duration,
    /// A keep-alive `PUT` after this long without a successful send (30 s).
    pub force_send_interval: Duration,
    /// Bytes per `PATCH` (1 MiB).
    pub max_patch_size: usize,
    /// Final-update sequences tried before giving up (10).
    pub final_retry_limit: u32,
    /// Backoff between failed final-update sequences (1 s to 60 min).
    pub final_backoff_min: Duration,
    pub final_backoff_max: Duration,
    /// Consecutive failed patches within one flush before the sequence counts as failed.
    pub flush_failure_limit: u32,
    /// `202`/`412` answers to the final update before giving up (GitLab forces the final state
    /// through after 5 minutes, so this is only reached against a broken server).
    pub final_not_completed_limit: u32,
}

impl Default for UploaderConfig {
    fn default() -> Self {
        UploaderConfig {
            update_interval: Duration::from_secs(3),
            max_update_interval: Duration::from_secs(15 * 60),
            force_send_interval: Duration::from_secs(30),
            max_patch_size: 1024 * 1024,
            final_retry_limit: 10,
            final_backoff_min: Duration::from_secs(1),
            final_backoff_max: Duration::from_secs(60 * 60),
            flush_failure_limit: 20,
            final_not_completed_limit: 200,
        }
    }
}

/// What GitLab last said about the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RemoteState {
    Running,
    /// `Job-Status: canceling`: stop the script gracefully; `after_script` still runs.
    CancelRequested,
    /// `403` or `Job-Status: canceled/failed`: kill everything; the job is over in GitLab.
    Aborted,
    /// `404`: GitLab no longer knows the job.
    NotFound,
}

impl RemoteState {
    /// The job is over for GitLab: stop sending.
    pub fn is_terminal(&self) -> bool {
        matches!(self, RemoteState::Aborted | RemoteState::NotFound)
    }
}

/// How a job ended on this side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobResult {
    Success,
    Failed {
        reason: FailureReason,
        exit_code: Option<i32>,
    },
    /// Canceled (by GitLab or by a forceful shutdown): reported as failed with `job_canceled`,
    /// which GitLab's mapper turns into `unknown_failure` unless the server knows it.
    Canceled,
}

/// What one incremental tick did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TickOutcome {
    /// Nothing new to send and no keep-alive due.
    Idle,
    /// Sent a patch or a keep-alive (or tried to; failures are retried on the next tick).
    Sent,
    /// GitLab ended the job; stop ticking and report the result with [`TraceUploader::finish`].
    Stopped(RemoteState),
}

/// How the final update ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FinalOutcome {
    /// GitLab accepted the final state (`200`).
    Accepted,
    /// `403` or `Job-Status: canceled/failed`: GitLab had already ended the job.
    Aborted,
    /// `404`.
    NotFound,
    /// The bounded retries ran out; the last error.
    GaveUp(String),
}

/// Uploads one job's trace and reports its end. See the module docs for the driving protocol.
#[derive(Debug)]
pub struct TraceUploader {
    client: Client,
    job: JobCredentials,
    info: RunnerInfo,
    failure_reasons: Vec<String>,
    trace: SharedTrace,
    config: UploaderConfig,
    sent: u64,
    interval: Duration,
    last_sent: Instant,
    remote: watch::Sender<RemoteState>,
    acked: watch::Sender<u64>,
    final_sent: bool,
}

impl TraceUploader {
    /// For a job just accepted: nothing sent yet.
    pub fn new(
        client: Client,
        job: &JobResponse,
        info: RunnerInfo,
        trace: SharedTrace,
        config: UploaderConfig,
    ) -> Self {
        Self::resume(client, job, info, trace, config, 0)
    }

    /// For a job whose first `acked_offset` bytes GitLab acknowledged before a restart.
    pub fn resume(
        client: Client,
        job: &JobResponse,
        info: RunnerInfo,
        trace: SharedTrace,
        config: UploaderConfig,
        acked_offset: u64,
    ) -> Self {
        let interval = config.update_interval;
        TraceUploader {
            client,
            job: JobCredentials::from(job),
            info,
            failure_reasons: job.features.failure_reasons.clone(),
            trace,
            config,
            sent: acked_offset,
            interval,
            last_sent: Instant::now(),
            remote: watch::Sender::new(RemoteState::Running),
            acked: watch::Sender::new(acked_offset),
            final_sent: false,
        }
    }

    /// Bytes of the trace GitLab has acknowledged (tests; the daemon follows
    /// [`TraceUploader::acked`]).
    #[cfg(feature = "fake")]
    pub fn acked_offset(&self) -> u64 {
        self.sent
    }

    /// Follows the bytes of the trace GitLab has acknowledged (persist them with the trace bytes).
    pub fn acked(&self) -> watch::Receiver<u64> {
        self.acked.subscribe()
    }

    /// Follows what GitLab says about the job (cancel requests, aborts).
    pub fn remote(&self) -> watch::Receiver<RemoteState> {
        self.remote.subscribe()
    }

    /// The interval before the next tick, as GitLab last set it (tests).
    #[cfg(feature = "fake")]
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Ticks every interval until `stop` completes or GitLab ends the job. Returns the last
    /// remote state; then call [`TraceUploader::finish`].
    pub async fn run(&mut self, stop: impl std::future::Future<Output = ()>) -> RemoteState {
        tokio::pin!(stop);
        loop {
            tokio::select! {
                biased;
                () = &mut stop => break,
                () = tokio::time::sleep(self.interval) => {
                    if let TickOutcome::Stopped(state) = self.tick().await {
                        return state;
                    }
                }
            }
        }
        self.remote.borrow().clone()
    }

    /// One incremental update: send the next patch; after a successful one (or with nothing to
    /// send) PUT a keep-alive when nothing was sent for the force-send interval.
    pub async fn tick(&mut self) -> TickOutcome {
        if self.remote.borrow().is_terminal() {
            return TickOutcome::Stopped(self.remote.borrow().clone());
        }
        let patch = self.send_patch().await;
        match patch {
            Some(PatchKind::Abort) => return self.stop(RemoteState::Aborted),
            Some(PatchKind::NotFound) => return self.stop(RemoteState::NotFound),
            Some(PatchKind::Accepted { .. }) | None => {}
            Some(_) => return TickOutcome::Sent,
        }
        if self.last_sent.elapsed() <= self.config.force_send_interval {
            return if patch.is_some() {
                TickOutcome::Sent
            } else {
                TickOutcome::Idle
            };
        }
        let output = self.trace.lock().output();
        let request =
            UpdateJobRequest::keep_alive(self.info.clone(), self.job.token.clone(), output);
        let result = self.client.update_job(&self.job, &request).await;
        self.observe(&result);
        match result.kind {
            UpdateKind::Ok => self.last_sent = Instant::now(),
            UpdateKind::Abort => return self.stop(RemoteState::Aborted),
            UpdateKind::NotFound => return self.stop(RemoteState::NotFound),
            _ => {}
        }
        TickOutcome::Sent
    }

    fn stop(&mut self, state: RemoteState) -> TickOutcome {
        self.remote.send_replace(state.clone());
        TickOutcome::Stopped(state)
    }

    /// Sends the next patch, if there is anything to send. `None`: nothing to send.
    async fn send_patch(&mut self) -> Option<PatchKind> {
        let content = {
            let trace = self.trace.lock();
            if self.sent > trace.len() {
                // GitLab holds more than this side has (a trace lost locally): nothing to resend.
                tracing::warn!(
                    job = self.job.id,
                    acked = self.sent,
                    stored = trace.len(),
                    "GitLab acknowledged more trace than is stored here"
                );
                self.sent = trace.len();
                // The daemon persists this watch with its stored bytes: it must never vouch for
                // more than is stored.
                self.acked.send_replace(self.sent);
            }
            let allowed = trace.uploadable().saturating_sub(self.sent) as usize;
            Bytes::copy_from_slice(trace.slice(self.sent, allowed.min(self.config.max_patch_size)))
        };
        if content.is_empty() {
            return None;
        }
        let result = self.client.patch_trace(&self.job, self.sent, content).await;
        self.observe(&result);
        match result.kind {
            PatchKind::Accepted { sent_to } => self.advance(sent_to),
            PatchKind::RangeMismatch { server_size } => {
                tracing::warn!(
                    job = self.job.id,
                    sent = self.sent,
                    server_size,
                    "trace range mismatch; rewinding"
                );
                self.advance(server_size);
            }
            PatchKind::Failed(ref detail) => {
                tracing::warn!(job = self.job.id, %detail, "trace patch failed; will retry");
            }
            PatchKind::Abort | PatchKind::NotFound => {}
        }
        Some(result.kind)
    }

    fn advance(&mut self, offset: u64) {
        self.sent = offset;
        self.last_sent = Instant::now();
        self.acked.send_replace(offset);
    }

    /// What every answer may carry: a new interval, a cancel request.
    fn observe<K>(&mut self, result: &JobReply<K>) {
        self.set_interval(result.update_interval);
        if result.cancel_requested() {
            self.request_cancel();
        }
    }

    fn request_cancel(&mut self) {
        self.remote.send_if_modified(|state| {
            let change = *state == RemoteState::Running;
            if change {
                *state = RemoteState::CancelRequested;
            }
            change
        });
    }

    fn set_interval(&mut self, interval: Option<Duration>) {
        if let Some(interval) = interval {
            self.interval = interval.min(self.config.max_update_interval);
        }
    }

    /// Sends the whole remaining trace and the final state, once. Call after the job's output
    /// has ended (the trace is finished here if the caller did not; its upload limit is lifted).
    /// A second call returns `GaveUp` without sending anything.
    pub async fn finish(&mut self, result: JobResult) -> FinalOutcome {
        if self.final_sent {
            return FinalOutcome::GaveUp("the final update was already sent for this job".into());
        }
        self.final_sent = true;
        {
            let mut trace = self.trace.lock();
            trace.finish();
            trace.lift_upload_limit();
        }
        // GitLab Runner falls back to the default interval and lets GitLab override it.
        self.interval = self.config.update_interval;
        let mut backoff =
            Backoff::new(self.config.final_backoff_min, self.config.final_backoff_max);
        let mut not_completed = 0;
        let mut last_error = String::from("no attempt was made");
        for attempt in 0..=self.config.final_retry_limit {
            if attempt > 0 {
                let wait = backoff.next_ceiling();
                tracing::warn!(job = self.job.id, attempt, wait_s = wait.as_secs(), error = %last_error,
                    "final update failed; retrying");
                tokio::time::sleep(wait).await;
            }
            loop {
                match self.flush().await {
                    Flush::Done => {}
                    Flush::Aborted => return self.finished(FinalOutcome::Aborted),
                    Flush::NotFound => return self.finished(FinalOutcome::NotFound),
                    Flush::Failed(detail) => {
                        last_error = detail;
                        break;
                    }
                }
                let update = self.final_request(result);
                let reply = self.client.update_job(&self.job, &update).await;
                self.set_interval(reply.update_interval);
                match reply.kind {
                    UpdateKind::Ok => return self.finished(FinalOutcome::Accepted),
                    // GitLab Runner reads `200` + `Job-Status: failed/canceled` as an abort; for
                    // the final update it is the acceptance of exactly that state.
                    UpdateKind::Abort if reply.status == Some(200) => {
                        return self.finished(FinalOutcome::Accepted);
                    }
                    UpdateKind::Abort => return self.finished(FinalOutcome::Aborted),
                    UpdateKind::NotFound => return self.finished(FinalOutcome::NotFound),
                    UpdateKind::Accepted | UpdateKind::TraceInvalid => {
                        not_completed += 1;
                        if not_completed > self.config.final_not_completed_limit {
                            return self.finished(FinalOutcome::GaveUp(
                                "GitLab kept answering the final update with 202/412".into(),
                            ));
                        }
                        if reply.kind == UpdateKind::TraceInvalid {
                            tracing::warn!(
                                job = self.job.id,
                                "GitLab rejected the trace (412); resending it all"
                            );
                            self.sent = 0;
                            self.acked.send_replace(0);
                        }
                        tokio::time::sleep(self.interval).await;
                    }
                    UpdateKind::Failed(detail) => {
                        last_error = detail;
                        break;
                    }
                }
            }
        }
        self.finished(FinalOutcome::GaveUp(last_error))
    }

    fn finished(&mut self, outcome: FinalOutcome) -> FinalOutcome {
        match outcome {
            FinalOutcome::Aborted => {
                self.remote.send_replace(RemoteState::Aborted);
            }
            FinalOutcome::NotFound => {
                self.remote.send_replace(RemoteState::NotFound);
            }
            _ => {}
        }
        outcome
    }

    fn final_request(&self, result: JobResult) -> UpdateJobRequest {
        let (state, reason, exit_code) = match result {
            JobResult::Success => (JobState::Success, String::new(), None),
            JobResult::Failed { reason, exit_code } => (
                JobState::Failed,
                reason.for_server(&self.failure_reasons).to_owned(),
                exit_code,
            ),
            JobResult::Canceled => (
                JobState::Failed,
                FailureReason::JobCanceled
                    .for_server(&self.failure_reasons)
                    .to_owned(),
                None,
            ),
        };
        let output = self.trace.lock().output();
        UpdateJobRequest::finish(
            self.info.clone(),
            self.job.token.clone(),
            state,
            &reason,
            exit_code,
            output,
        )
    }

    /// Sends everything not yet acknowledged.
    async fn flush(&mut self) -> Flush {
        let mut failures = 0;
        loop {
            let kind = match self.send_patch().await {
                None => return Flush::Done,
                Some(kind) => kind,
            };
            match kind {
                PatchKind::Accepted { .. } => failures = 0,
                PatchKind::Abort => return Flush::Aborted,
                PatchKind::NotFound => return Flush::NotFound,
                PatchKind::RangeMismatch { .. } => {
                    failures += 1;
                    if failures > self.config.flush_failure_limit {
                        return Flush::Failed("the trace range kept mismatching".into());
                    }
                    tokio::time::sleep(self.interval).await;
                }
                PatchKind::Failed(detail) => {
                    failures += 1;
                    if failures > self.config.flush_failure_limit {
                        return Flush::Failed(detail);
                    }
                    tokio::time::sleep(self.interval).await;
                }
            }
        }
    }
}

enum Flush {
    Done,
    Aborted,
    NotFound,
    Failed(String),
}
