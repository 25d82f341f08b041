//! One job's task: every event (a command of the core, an answer of GitLab or Docker) is
//! journaled, handed to the job's lifecycle, and the actions it returns are carried out, each as
//! a task of its own whose result comes back as an event. The job's state is the lifecycle's.

use std::sync::Arc;

use drover_core::{FailureReason, JobId, Outcome};
use drover_docker::error_line;
use drover_gitlab::api::JobResponse;
use drover_gitlab::trace::{SharedTrace, TraceBuffer, TraceCheckpoint, TraceOptions};
use drover_lifecycle::{Action, Event, Job, Note, Phase};
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio_util::task::TaskTracker;

use super::execute::{self, Steer};
use super::journal::JobJournal;
use super::spec::label_candidates;
use super::{JobCommand, RunnerContext, Shared, gitlab};
use crate::daemon::Input;
use crate::daemon::machines::Placement;

pub(super) use super::gitlab::unstarted_trace;

/// Why the task was started.
pub(super) enum Start {
    /// The core holds the job.
    Held,
    /// The core failed the job (or its acknowledgement was in flight) before a crash cut its report short; `text` is its trace.
    Interrupted(String),
    /// The payload is unusable: the job is acknowledged and failed with `text`.
    Rejected(String),
}

struct JobTask {
    shared: Arc<Shared>,
    tracker: TaskTracker,
    runner: Arc<RunnerContext>,
    payload: Arc<JobResponse>,
    job: Job,
    journal: Option<JobJournal>,
    /// Why the job's journal cannot be kept (then `journal` is `None`): its script must not run,
    /// as a crash would run it again or lose it.
    unrecorded: Option<String>,
    /// The core holds the job: it hears of GitLab's cancel and of the job's end.
    core_holds: bool,
    placement: Option<Placement>,
    events: UnboundedSender<Event>,
    /// The executor's run, while there is one.
    steer: Option<UnboundedSender<Steer>>,
    pending_steer: Option<Steer>,
    /// The run's trace: GitLab gets what the journal vouches for, no more.
    trace: Option<SharedTrace>,
    done: bool,
}

pub(super) async fn run(
    shared: Arc<Shared>,
    tracker: TaskTracker,
    runner: Arc<RunnerContext>,
    payload: JobResponse,
    start: Start,
    mut commands: Option<UnboundedReceiver<JobCommand>>,
) {
    let id = payload.id;
    let (journal, records, unrecorded) = match JobJournal::open(&shared.state_dir, id) {
        Ok((journal, records)) => (Some(journal), records, None),
        Err(e) => {
            // Without a journal a crash would run the script again: it never runs.
            let why = format!("opening the job's journal failed: {e:#}");
            tracing::error!(job = id, "{why}; the job fails without running");
            let records = shared.state_dir.job_records(id).unwrap_or_default();
            (None, records, Some(why))
        }
    };
    let replayed = Job::replay(&records, &shared.policy);
    let (events, mut results) = mpsc::unbounded_channel();
    let mut task = JobTask {
        runner: runner.clone(),
        payload: Arc::new(payload),
        job: Job::new(),
        journal,
        unrecorded,
        core_holds: matches!(start, Start::Held),
        placement: None,
        events,
        steer: None,
        pending_steer: None,
        trace: None,
        done: false,
        shared,
        tracker,
    };
    let mut first = match replayed {
        Some(job) => {
            task.job = job;
            vec![Event::Restarted]
        }
        None => vec![Event::Received {
            runner: runner.name.clone(),
            label: runner.short_token.clone(),
            held: task.core_holds,
        }],
    };
    if let Start::Interrupted(text) | Start::Rejected(text) = start {
        first.push(Event::Fail {
            reason: FailureReason::RunnerSystemFailure,
            text,
        });
    }
    for event in first {
        task.step(event);
    }
    let mut keep_alive = tokio::time::interval_at(
        tokio::time::Instant::now() + task.shared.policy.keep_alive_every,
        task.shared.policy.keep_alive_every,
    );
    while !task.done {
        let waiting = task.job.phase == Phase::Accepted && !task.job.placed && task.core_holds;
        tokio::select! {
            command = next_command(&mut commands) => match command {
                Some(command) => task.command(command),
                None => commands = None,
            },
            Some(event) = results.recv() => task.step(event),
            _ = keep_alive.tick(), if waiting => task.spawn(|runner, job| async move {
                gitlab::keep_alive(&runner, &job).await
            }),
        }
    }
}

async fn next_command(commands: &mut Option<UnboundedReceiver<JobCommand>>) -> Option<JobCommand> {
    match commands {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

impl JobTask {
    /// Journal, handle, act: the write-ahead discipline. An event the journal cannot take is still
    /// handled (it happened), but the job is ended rather than run on unrecorded.
    fn step(&mut self, event: Event) {
        let recorded = self.record(&event);
        let stored = match event {
            Event::TraceStored { len, .. } => Some(len),
            _ => None,
        };
        let actions = self.job.handle(event, &self.shared.policy);
        if let (true, Some(len), Some(trace)) = (recorded, stored, &self.trace) {
            // Journaled for good: GitLab may have it now.
            trace.lock().limit_uploads_to(len);
        }
        for action in actions {
            self.act(action);
        }
        if !recorded
            && self.job.stop.is_none()
            && matches!(self.job.phase, Phase::Preparing | Phase::Running)
        {
            self.step(Event::Abort {
                reason: FailureReason::RunnerSystemFailure,
            });
        }
    }

    /// Appends `event` to the journal; `false` when it is not there (nor will any later event be).
    fn record(&mut self, event: &Event) -> bool {
        let Some(journal) = &mut self.journal else {
            return false;
        };
        match journal.append(event, &self.job) {
            Ok(()) => true,
            Err(e) => {
                let why = format!("journaling the job's event failed: {e:#}");
                tracing::error!(job = self.payload.id, "{why}; the job ends");
                self.journal = None;
                self.unrecorded = Some(why);
                false
            }
        }
    }

    /// Ends a job that cannot be journaled where it would start or re-attach: its trace says why.
    fn refuse_to_run(&mut self, why: String) {
        let id = self.payload.id;
        let line = error_line(&format!(
            "drover cannot keep this job's record, so it does not run it: {why}"
        ));
        let mark = &self.job.trace;
        match self
            .shared
            .state_dir
            .store_trace(id, mark.len, line.as_bytes())
        {
            Ok(()) => {
                let _ = self.events.send(Event::TraceStored {
                    len: mark.len + line.len() as u64,
                    cursor: mark.cursor.unwrap_or_default(),
                    checkpoint: mark.checkpoint.clone(),
                });
            }
            Err(e) => tracing::error!(job = id, "storing the job's trace failed: {e:#}"),
        }
        let _ = self.events.send(Event::StepsEnded {
            outcome: Outcome::Failed {
                reason: FailureReason::RunnerSystemFailure,
                exit_code: None,
            },
        });
    }

    fn command(&mut self, command: JobCommand) {
        let event = match command {
            JobCommand::Run(placement) | JobCommand::Resume(placement) => {
                self.placement = Some(placement);
                Event::Placed
            }
            JobCommand::Cancel => Event::Cancel,
            JobCommand::Abort(reason) => Event::Abort { reason },
            JobCommand::Fail(reason, detail) => Event::Fail {
                reason,
                text: unstarted_trace(reason, detail.as_deref()),
            },
        };
        self.step(event);
    }

    /// Runs `call` as a task of its own; the events it returns come back to this task.
    fn spawn<F, Fut, R>(&self, call: F)
    where
        F: FnOnce(Arc<RunnerContext>, Arc<JobResponse>) -> Fut,
        Fut: Future<Output = R> + Send + 'static,
        R: IntoIterator<Item = Event>,
    {
        let (runner, job, events) = (
            self.runner.clone(),
            self.payload.clone(),
            self.events.clone(),
        );
        let call = call(runner, job);
        self.tracker.spawn(async move {
            for event in call.await {
                let _ = events.send(event);
            }
        });
    }

    fn act(&mut self, action: Action) {
        let id = self.payload.id;
        match action {
            Action::Accept { after } => self.spawn(move |runner, job| async move {
                tokio::time::sleep(after).await;
                Some(Event::AcceptAnswered(gitlab::accept(&runner, &job).await))
            }),
            // The task's keep-alive ticks while the job waits for a machine.
            Action::KeepAlive { .. } => {}
            Action::Tell(note) => self.tell(note),
            Action::Start { .. } | Action::Reattach if self.unrecorded.is_some() => {
                let why = self.unrecorded.clone().unwrap_or_default();
                self.refuse_to_run(why);
            }
            Action::Start { again } => self.execute(None, again),
            Action::Reattach => self.execute(Some(self.job.trace.cursor), false),
            Action::Inspect => self.inspect(),
            Action::Cancel => self.steer(Steer::Cancel),
            Action::Abort(reason) => self.steer(Steer::Abort(reason)),
            Action::RemoveContainers => {
                let (shared, placement) = (self.shared.clone(), self.placement.clone());
                let label = self.job.label.clone();
                self.spawn(move |_, job| async move {
                    remove_containers(&shared, placement, &label, job.id).await;
                    Some(Event::ContainersRemoved)
                });
            }
            Action::SendFinal { outcome, trace } => {
                let (shared, mark) = (self.shared.clone(), self.job.trace.clone());
                self.spawn(move |runner, job| async move {
                    let answer =
                        gitlab::send_final(&shared, &runner, &job, &mark, outcome, trace).await;
                    Some(Event::FinalAnswered(answer))
                });
            }
            Action::CheckClosed => self.spawn(|runner, job| async move {
                let closed = gitlab::closed(&runner, &job).await;
                if closed {
                    tracing::info!(
                        job = job.id,
                        "job finished before the restart; GitLab has closed it"
                    );
                }
                Some(Event::ClosedAnswered { closed })
            }),
            Action::Discard => {
                self.shared.state_dir.remove_job(id);
                self.done = true;
            }
        }
    }

    fn tell(&mut self, note: Note) {
        let id = JobId(self.payload.id);
        let event = match note {
            Note::Canceled => drover_core::Event::JobCanceled { job: id },
            Note::Finished(outcome) => {
                self.done = true;
                if !self.core_holds {
                    self.shared.state_dir.remove_job(id.0);
                    return;
                }
                if self.job.restarted
                    && self.job.phase.kind() == drover_lifecycle::PhaseKind::Reported
                {
                    tracing::info!(job = id.0, ?outcome, "job finished; already reported");
                }
                drover_core::Event::JobFinished { job: id, outcome }
            }
        };
        if self.core_holds {
            let _ = self.shared.inputs.send(Input::Event(event));
        }
    }

    /// Steers the executor's run; one that is yet to start (after a restart, while its
    /// containers are looked for) starts steered.
    fn steer(&mut self, steer: Steer) {
        match &self.steer {
            Some(tx) => {
                let _ = tx.send(steer);
            }
            None => self.pending_steer = Some(steer),
        }
    }

    /// Runs the executor: a fresh start (`reattach: None`) or a re-attachment after `cursor`.
    fn execute(&mut self, reattach: Option<Option<drover_lifecycle::Cursor>>, again: bool) {
        let Some(placement) = self.placement.clone() else {
            tracing::error!(job = self.payload.id, "no placement for a job to run");
            return;
        };
        let mark = self.job.trace.clone();
        let options = TraceOptions::for_job(
            &self.payload,
            Some(u64::from(self.runner.settings.output_limit_kb)),
        );
        let stored = self.shared.state_dir.load_trace(self.payload.id, mark.len);
        let mut buffer = TraceBuffer::resume(&options, stored);
        let checkpoint = mark
            .checkpoint
            .as_ref()
            .and_then(|c| serde_json::from_str::<TraceCheckpoint>(&c.0).ok());
        if let Some(Err(e)) = checkpoint.map(|c| buffer.restore(&c)) {
            tracing::warn!(
                job = self.payload.id,
                "{e}; the few bytes held back for masking at the crash are lost"
            );
        }
        // GitLab gets only what the journal vouches for, so that after a crash the stored trace
        // always continues what GitLab has.
        buffer.limit_uploads_to(buffer.len());
        let trace = SharedTrace::new(buffer);
        let (steer, steer_rx) = mpsc::unbounded_channel();
        if let Some(pending) = self.pending_steer.take() {
            let _ = steer.send(pending);
        }
        self.steer = Some(steer);
        self.trace = Some(trace.clone());
        let run = execute::Run {
            shared: self.shared.clone(),
            runner: self.runner.clone(),
            job: self.payload.clone(),
            placement,
            label: self.job.label.clone(),
            reattach,
            again,
            mark,
            trace,
            events: self.events.clone(),
            steer: steer_rx,
        };
        self.tracker.spawn(execute::run(run));
    }

    /// After a restart: do step containers of the job exist on its machine?
    fn inspect(&mut self) {
        let Some(placement) = self.placement.clone() else {
            return;
        };
        let (shared, label) = (self.shared.clone(), self.job.label.clone());
        self.spawn(move |runner, job| async move {
            let listed = |steps| vec![Event::ContainersListed { steps }];
            let endpoint = match placement.endpoint_retried(&shared.policy).await {
                Ok(endpoint) => endpoint,
                // The run finds the machine gone again and says so in the trace.
                Err(_) => return listed(true),
            };
            // A record of an older drover does not name the label: it is learnt here.
            let learn = label.is_empty();
            let candidates = match learn {
                true => label_candidates(&runner),
                false => vec![label],
            };
            for label in &candidates {
                match shared
                    .executor
                    .has_step_containers(&endpoint, label, job.id)
                    .await
                {
                    Ok(false) => {}
                    Ok(true) if learn => {
                        let label = label.clone();
                        return vec![Event::Labelled { label }, listed(true).remove(0)];
                    }
                    Ok(true) => return listed(true),
                    Err(e) => {
                        // Unknown: never risk running a step twice; re-attaching says what is
                        // wrong.
                        tracing::warn!(job = job.id, "{e}");
                        return listed(true);
                    }
                }
            }
            match learn {
                true => vec![
                    Event::Labelled {
                        label: runner.short_token.clone(),
                    },
                    listed(false).remove(0),
                ],
                false => listed(false),
            }
        });
    }
}

/// Makes sure the job's containers are gone from its machine (idempotent): tried until they are,
/// or the machine is gone, so the core never gets a machine back with the job still on it.
async fn remove_containers(shared: &Shared, placement: Option<Placement>, label: &str, job: u64) {
    let Some(placement) = placement else {
        return;
    };
    until_removed(&shared.policy, job, || async {
        match placement.endpoint().await {
            Ok(endpoint) => shared
                .executor
                .cleanup(&endpoint, label, job)
                .await
                .map_err(|e| Removal::Failed(e.to_string())),
            Err(e) if e.gone => Err(Removal::Gone),
            Err(e) => Err(Removal::Failed(e.message)),
        }
    })
    .await;
}

/// Why one try at removing a job's containers did not remove them.
enum Removal {
    /// The machine is gone, and the containers with it.
    Gone,
    Failed(String),
}

/// Tries `remove` until it succeeds or finds the machine gone, waiting as the policy's endpoint
/// backoff says (settling at its longest wait); returns the number of tries.
async fn until_removed<F, Fut>(policy: &drover_lifecycle::Policy, job: u64, mut remove: F) -> u32
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), Removal>>,
{
    let (removed, tries) = crate::daemon::retry::at_endpoint_backoff(
        policy,
        None,
        &mut remove,
        |e| matches!(e, Removal::Gone),
        |attempt, e| {
            if let Removal::Failed(e) = e {
                tracing::warn!(
                    job,
                    "removing the job's containers failed (try {attempt}): {e}"
                );
            }
        },
    )
    .await;
    if let Err(Removal::Gone) = removed {
        tracing::info!(job, "the job's machine is gone, and its containers with it");
    }
    tries
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    const QUICK: drover_lifecycle::Policy = drover_lifecycle::Policy {
        endpoint_first_wait: std::time::Duration::ZERO,
        ..drover_lifecycle::Policy::DEFAULT
    };

    #[tokio::test]
    async fn container_removal_is_tried_until_it_succeeds() {
        let calls = AtomicU32::new(0);
        let tries = until_removed(&QUICK, 7, || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0..=8 => Err(Removal::Failed("engine unreachable".into())),
                _ => Ok(()),
            }
        })
        .await;
        assert_eq!(tries, 10);
        assert_eq!(calls.load(Ordering::SeqCst), 10);
    }

    #[tokio::test]
    async fn container_removal_stops_at_a_gone_machine() {
        let calls = AtomicU32::new(0);
        let tries = until_removed(&QUICK, 7, || async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0 => Err(Removal::Failed("engine unreachable".into())),
                _ => Err(Removal::Gone),
            }
        })
        .await;
        assert_eq!(tries, 2);
    }
}
