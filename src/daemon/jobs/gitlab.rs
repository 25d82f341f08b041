//! The GitLab calls of a job's lifecycle, each answered as a lifecycle event: the acknowledgement,
//! the keep-alive of a waiting job, the final update, and "has GitLab closed it?".

use drover_core::{FailureReason, Outcome};
use drover_docker::error_line;
use drover_gitlab::api::{JobOutput, JobResponse, UpdateJobRequest};
use drover_gitlab::trace::{
    FinalOutcome, JobResult, SharedTrace, TraceBuffer, TraceCheckpoint, TraceOptions, TraceUploader,
};
use drover_gitlab::{JobCredentials, UpdateKind};
use drover_lifecycle::{AcceptAnswer, Event, FinalAnswer, FinalTrace, TraceMark};

use super::{RunnerContext, Shared};

/// One attempt to acknowledge the job at GitLab (the two-phase commit); the lifecycle decides
/// about more.
pub(super) async fn accept(runner: &RunnerContext, job: &JobResponse) -> AcceptAnswer {
    let creds = JobCredentials::from(job);
    let result = runner.client.accept_job(&creds, &runner.info).await;
    match result.kind {
        UpdateKind::Ok | UpdateKind::Accepted | UpdateKind::TraceInvalid => {
            AcceptAnswer::Accepted {
                cancel_requested: result.cancel_requested(),
            }
        }
        UpdateKind::Abort | UpdateKind::NotFound => {
            tracing::info!(
                job = job.id,
                "GitLab took the job back before drover acknowledged it"
            );
            AcceptAnswer::TakenBack
        }
        UpdateKind::Failed(e) => {
            tracing::warn!(job = job.id, "acknowledging the job at GitLab failed: {e}");
            AcceptAnswer::Failed
        }
    }
}

/// Keeps a job waiting for a machine alive; GitLab's answer may cancel or end it.
pub(super) async fn keep_alive(runner: &RunnerContext, job: &JobResponse) -> Option<Event> {
    let request =
        UpdateJobRequest::keep_alive(runner.info.clone(), job.token.clone(), JobOutput::default());
    let result = runner
        .client
        .update_job(&JobCredentials::from(job), &request)
        .await;
    match result.kind {
        UpdateKind::Abort | UpdateKind::NotFound => Some(Event::RemoteEnded),
        _ if result.cancel_requested() => Some(Event::CancelRequested),
        _ => None,
    }
}

/// Whether GitLab has closed the job, asked with a keep-alive (answered `403` or `Job-Status`
/// failed/canceled/success for a closed job, without side effects).
pub(super) async fn closed(runner: &RunnerContext, job: &JobResponse) -> bool {
    keep_alive(runner, job).await == Some(Event::RemoteEnded)
}

/// The trace of a job that never started. A creation error comes first, as GitLab Runner's
/// "Preparation failed: …" (the trace buffer masks the job's masked variables in it).
pub(super) fn unstarted_trace(reason: FailureReason, detail: Option<&str>) -> String {
    let why = match reason {
        FailureReason::JobCanceled => "the job was canceled before it started".to_string(),
        r => format!("drover could not start this job ({})", r.as_str()),
    };
    match detail {
        Some(d) => error_line(&format!("Preparation failed: {d}")) + &error_line(&why),
        None => error_line(&why),
    }
}

fn job_result(outcome: Outcome) -> JobResult {
    match outcome {
        Outcome::Success => JobResult::Success,
        Outcome::Failed { reason, exit_code } => JobResult::Failed { reason, exit_code },
        Outcome::Canceled => JobResult::Canceled,
    }
}

/// The final update: the rest of the trace, then the final state. The stored trace of a job
/// that ran (GitLab's copy continues from what it acknowledged), or the trace of one that never
/// did.
pub(super) async fn send_final(
    shared: &Shared,
    runner: &RunnerContext,
    job: &JobResponse,
    mark: &TraceMark,
    outcome: Outcome,
    trace: FinalTrace,
) -> FinalAnswer {
    let options = TraceOptions::for_job(job, Some(u64::from(runner.settings.output_limit_kb)));
    let (buffer, acked) = match trace {
        FinalTrace::Stored => {
            let stored = shared.state_dir.load_trace(job.id, mark.len);
            let mut buffer = TraceBuffer::resume(&options, stored);
            let checkpoint = mark
                .checkpoint
                .as_ref()
                .and_then(|c| serde_json::from_str::<TraceCheckpoint>(&c.0).ok());
            if let Some(Err(e)) = checkpoint.map(|c| buffer.restore(&c)) {
                tracing::warn!(job = job.id, "{e}; bytes held back for masking are lost");
            }
            (buffer, mark.acked)
        }
        FinalTrace::Unstarted(text) => {
            let mut buffer = TraceBuffer::new(&options);
            let reason = match outcome {
                Outcome::Failed { reason, .. } => reason,
                _ => FailureReason::JobCanceled,
            };
            let text = text.unwrap_or_else(|| unstarted_trace(reason, None));
            buffer.write(text.as_bytes());
            (buffer, 0)
        }
    };
    let mut uploader = TraceUploader::resume(
        runner.client.clone(),
        job,
        runner.info.clone(),
        SharedTrace::new(buffer),
        shared.uploader.clone(),
        acked,
    );
    let answer = uploader.finish(job_result(outcome)).await;
    tracing::info!(job = job.id, ?outcome, final_update = ?answer, "job finished");
    match answer {
        FinalOutcome::Accepted => FinalAnswer::Accepted,
        FinalOutcome::Aborted | FinalOutcome::NotFound => FinalAnswer::Closed,
        FinalOutcome::GaveUp(_) => FinalAnswer::GaveUp,
    }
}
