//! Inputs from tasks that need more than journaling: a job's payload is stored before its event,
//! and answers drover cannot use are logged, counted and turned into "no job".

use anyhow::Context;
use drover_core::{Event, JobId, JobInfo, RunnerId};
use drover_gitlab::api::UndecodableJob;

use super::Driver;
use crate::daemon::Input;

impl Driver {
    pub(super) fn input(&mut self, input: Input) -> anyhow::Result<()> {
        match input {
            Input::Event(event) => self.step(event),
            Input::Job { runner, job }
                if self.ledger.core().state().job(JobId(job.id)).is_some() =>
            {
                // The core records the duplicate; the payload of the job it holds stays as it is.
                tracing::warn!(
                    runner = %self.label(runner),
                    job = job.id,
                    "GitLab delivered job {} again while drover holds it; ignoring the second \
                     delivery",
                    job.id
                );
                let info = JobInfo {
                    timeout_ms: drover_core::millis(job.timeout()),
                    queued_ms: 0,
                };
                self.step(Event::JobReceived {
                    runner,
                    job: JobId(job.id),
                    info,
                })
            }
            Input::Job { runner, job } => {
                // The payload is stored first: a journaled job always has it after a crash.
                self.state_dir
                    .save_job(&job)
                    .context("storing the job payload")?;
                let info = JobInfo {
                    timeout_ms: drover_core::millis(job.timeout()),
                    queued_ms: (job.job_info.time_in_queue_seconds.max(0.0) * 1000.0) as u64,
                };
                let id = JobId(job.id);
                self.pending_job = Some((runner, job));
                self.step(Event::JobReceived {
                    runner,
                    job: id,
                    info,
                })
            }
            Input::Undecodable { runner, job } => {
                self.undecodable(runner, *job);
                self.step(Event::JobRequestEmpty { runner })
            }
            Input::CreationFailed {
                runner,
                machine,
                failure,
                error,
            } => {
                self.machines.record_creation_error(runner, error);
                self.step(Event::MachineCreationFailed { machine, failure })
            }
            Input::Unusable { runner, message } => {
                let name = self.runner_name(runner);
                self.ledger.metrics().unusable_payload(&name, "dropped");
                tracing::error!(runner = %self.label(runner), "dropped an answer to a job request: {message}");
                self.step(Event::JobRequestEmpty { runner })
            }
        }
    }

    /// A job whose payload drover cannot use: failed at GitLab once, never run.
    fn undecodable(&mut self, runner: RunnerId, job: UndecodableJob) {
        let name = self.runner_name(runner);
        let label = self.label(runner);
        let metrics = self.ledger.metrics();
        if self.jobs.holds(JobId(job.id)) {
            // A job drover runs must not be failed by a second, garbled delivery.
            metrics.unusable_payload(&name, "repeated");
            tracing::warn!(
                runner = %label,
                job = job.id,
                path = %job.error.path,
                "GitLab delivered job {} again while drover holds it, with a payload \
                 drover cannot use; ignoring the second delivery",
                job.id
            );
        } else if !self.rejected.insert(job.id) {
            metrics.unusable_payload(&name, "repeated");
            tracing::warn!(
                runner = %label,
                job = job.id,
                path = %job.error.path,
                "GitLab handed out job {} again, whose payload drover already failed; \
                 leaving it alone",
                job.id
            );
        } else if let Some(r) = self.runners.get(runner) {
            metrics.unusable_payload(&name, "failed");
            tracing::error!(
                runner = %label,
                job = job.id,
                path = %job.error.path,
                "GitLab sent job {} with a payload drover cannot use; failing the job: {}",
                job.id,
                job.error
            );
            self.jobs.reject(job, r.context.clone());
        } else {
            tracing::error!(runner = %label, job = job.id, "cannot report a job whose runner is gone");
        }
    }
}

/// The most recent ids of a bounded set.
#[derive(Default)]
pub(super) struct RecentIds {
    order: std::collections::VecDeque<u64>,
    ids: std::collections::BTreeSet<u64>,
}

impl RecentIds {
    const CAPACITY: usize = 10_000;

    /// Adds `id`; `false` if it was there already.
    pub(super) fn insert(&mut self, id: u64) -> bool {
        if !self.ids.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > Self::CAPACITY
            && let Some(oldest) = self.order.pop_front()
        {
            self.ids.remove(&oldest);
        }
        true
    }
}
