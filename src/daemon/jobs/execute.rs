//! One run of the executor for a job (started, or re-attached after a restart): its output goes
//! into the trace, the trace is stored every `persist_every` and uploaded as far as it is stored,
//! and everything comes back to the job's task as lifecycle events.

use std::sync::Arc;
use std::time::Duration;

use drover_core::{FailureReason, MachineId, Outcome};
use drover_docker::{LogCursor, error_line};
use drover_gitlab::api::JobResponse;
use drover_gitlab::trace::{RemoteState, SharedTrace, TraceUploader};
use drover_lifecycle::{Checkpoint, Cursor, Event, TraceMark};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};

use super::spec::job_spec;
use super::{RunnerContext, Shared};
use crate::config::ExecutorKind;
use crate::daemon::build_spec::Unsupported;
use crate::daemon::builds_slots;
use crate::daemon::machines::Placement;

/// How the task steers a running executor.
pub(super) enum Steer {
    Cancel,
    Abort(FailureReason),
}

/// What a run needs, all of it owned: the run is a task of its own.
pub(super) struct Run {
    pub shared: Arc<Shared>,
    pub runner: Arc<RunnerContext>,
    pub job: Arc<JobResponse>,
    pub placement: Placement,
    pub label: String,
    /// `None`: start the job; else re-attach, continuing after this cursor.
    pub reattach: Option<Option<Cursor>>,
    /// A restart found none of the job's steps started: the trace says it starts again.
    pub again: bool,
    pub mark: TraceMark,
    pub trace: SharedTrace,
    pub events: UnboundedSender<Event>,
    pub steer: UnboundedReceiver<Steer>,
}

/// Stores the trace written since the last call, then reports it (the task journals it and only
/// then lets the uploader send it).
struct Persister {
    stored: u64,
    cursor: Option<LogCursor>,
    /// The acknowledged offset last reported.
    acked: u64,
    /// The acknowledged offset when the uploader stopped.
    latest: u64,
}

impl Persister {
    fn persist(&mut self, run: &Run, acked: u64) {
        let (bytes, len, checkpoint) = {
            let buf = run.trace.lock();
            (
                buf.bytes()[self.stored as usize..].to_vec(),
                buf.len(),
                buf.checkpoint(),
            )
        };
        if let Err(e) = run
            .shared
            .state_dir
            .store_trace(run.job.id, self.stored, &bytes)
        {
            tracing::error!(job = run.job.id, "storing the trace failed: {e:#}");
            return;
        }
        self.stored = len;
        let cursor = self.cursor.unwrap_or_default();
        let _ = run.events.send(Event::TraceStored {
            len,
            cursor: Cursor {
                step: cursor.step,
                messages: cursor.messages,
            },
            checkpoint: serde_json::to_string(&checkpoint).ok().map(Checkpoint),
        });
        if acked != self.acked {
            self.acked = acked;
            let _ = run.events.send(Event::TraceAcked { offset: acked });
        }
    }
}

pub(super) async fn run(mut run: Run) {
    let mut persister = Persister {
        stored: run.mark.len,
        cursor: run.mark.cursor.map(|c| LogCursor {
            step: c.step,
            messages: c.messages,
        }),
        acked: run.mark.acked,
        latest: run.mark.acked,
    };
    let event = match execute(&mut run, &mut persister).await {
        Ok(outcome) => {
            if let Outcome::Failed {
                reason: FailureReason::RunnerSystemFailure,
                ..
            } = outcome
                && let Some(lost) = run.placement.gone().await
            {
                report_lost_machine(&run, lost, true);
            }
            Event::StepsEnded { outcome }
        }
        Err(lost) => lost,
    };
    // The executor's last lines and what redaction held back: stored before the end is journaled.
    run.trace.finish();
    let latest = persister.latest;
    persister.persist(&run, latest);
    let _ = run.events.send(event);
}

/// The machine of a job that failed for the system may be gone (an instance terminated behind
/// drover's back): the core hears of it at once, and the trace (with `note`) names it.
fn report_lost_machine(run: &Run, (machine, why): (MachineId, String), note: bool) {
    if note {
        run.trace
            .write(error_line(&format!("the job's machine is gone: {why}")).as_bytes());
        run.trace.write(b"\n");
    }
    let lost = drover_core::Event::MachineLost { machine };
    let _ = run.shared.inputs.send(crate::daemon::Input::Event(lost));
}

/// Runs the executor to its outcome; `Err(MachineLost)` when the machine cannot be reached (after
/// the policy's retries).
async fn execute(run: &mut Run, persister: &mut Persister) -> Result<Outcome, Event> {
    // The executor frames the trace (its first and last lines); a job it never sees gets its
    // error and last line here.
    let not_started = |message: String, reason: FailureReason| {
        run.trace.write(error_line(&message).as_bytes());
        run.trace.write(b"\n");
        run.trace
            .write(error_line(&format!("Job failed: {}", reason.as_str())).as_bytes());
    };
    let mut endpoint = match run.placement.endpoint_retried(&run.shared.policy).await {
        Ok(e) => e,
        Err(e) => {
            not_started(
                format!("the machine for this job is unreachable: {e}"),
                FailureReason::RunnerSystemFailure,
            );
            // The provider said so already: no need to ask it again.
            if e.gone
                && let Some(id) = run.placement.machine_id()
            {
                report_lost_machine(run, (id, e.message), false);
            }
            return Err(Event::MachineLost);
        }
    };
    // Held while the job runs: this function returns when it has ended.
    let slot = run.runner.slots.acquire(run.job.job_info.project_id);
    let _builds = match run.runner.settings.executor {
        ExecutorKind::DockerAutoscaler => {
            builds_slots::take(&mut endpoint, &run.shared.state_dir, run.job.id)
        }
        _ => None,
    };
    let machine = endpoint.machine.clone();
    let spec = match job_spec(&run.runner, &run.job, machine.as_deref(), &slot, &run.label) {
        Ok(spec) => spec,
        Err(Unsupported { reason, message }) => {
            not_started(message, reason);
            return Ok(Outcome::Failed {
                reason,
                exit_code: None,
            });
        }
    };
    if run.again {
        run.trace.write(
            b"\x1b[0;33mWARNING: drover restarted before this job's script started; \
              preparing it again\x1b[0;m\n",
        );
    }
    let uploader = TraceUploader::resume(
        run.runner.client.clone(),
        &run.job,
        run.runner.info.clone(),
        run.trace.clone(),
        run.shared.uploader.clone(),
        run.mark.acked,
    );
    let mut remote = uploader.remote();
    let acked = uploader.acked();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let upload = tokio::spawn(async move {
        let mut uploader = uploader;
        uploader
            .run(async {
                let _ = stop_rx.await;
            })
            .await;
    });

    let (sink, mut chunks) = mpsc::channel(256);
    let handle = match run.reattach {
        Some(cursor) => {
            let cursor = cursor.map(|c| LogCursor {
                step: c.step,
                messages: c.messages,
            });
            run.shared.executor.resume(endpoint, spec, cursor, sink)
        }
        None if run.placement.last_job() => run
            .shared
            .executor
            .start_last_on_machine(endpoint, spec, sink),
        None => run.shared.executor.start(endpoint, spec, sink),
    };
    let control = handle.control();
    let mut wait = Box::pin(handle.wait());
    let mut persist_tick = tokio::time::interval(run.shared.policy.persist_every);
    let mut dirty = false;
    let mut steer_open = true;
    let outcome = loop {
        tokio::select! {
            Some(chunk) = chunks.recv() => {
                run.trace.write(&chunk.data);
                persister.cursor = Some(chunk.cursor);
                dirty = true;
            }
            _ = persist_tick.tick() => {
                if dirty {
                    persister.persist(run, *acked.borrow());
                    dirty = false;
                }
            }
            Ok(()) = remote.changed() => {
                let state = remote.borrow_and_update().clone();
                let event = match state {
                    RemoteState::CancelRequested => Some(Event::CancelRequested),
                    RemoteState::Aborted | RemoteState::NotFound => Some(Event::RemoteEnded),
                    RemoteState::Running => None,
                };
                if let Some(event) = event {
                    let _ = run.events.send(event);
                }
            }
            steer = run.steer.recv(), if steer_open => match steer {
                Some(Steer::Cancel) => control.cancel(),
                Some(Steer::Abort(reason)) => control.abort(reason),
                None => steer_open = false,
            },
            outcome = &mut wait => break outcome,
        }
    };
    // The executor is done: what it still had in the channel belongs to the trace.
    while let Ok(Some(chunk)) = tokio::time::timeout(Duration::from_secs(5), chunks.recv()).await {
        run.trace.write(&chunk.data);
        persister.cursor = Some(chunk.cursor);
    }
    let _ = stop_tx.send(());
    if let Err(e) = upload.await {
        tracing::error!(job = run.job.id, "the trace uploader failed: {e}");
    }
    persister.latest = *acked.borrow();
    Ok(outcome)
}
