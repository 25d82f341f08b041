//! One step container: create (or adopt), start, stream its log, enforce its deadline and the job's
//! control, report how it ended.

use std::time::Duration;

use bollard::body_full;
use bollard::models::{
    ContainerCreateBody, ContainerSummary, ContainerSummaryStateEnum, HostConfig,
    HostConfigLogConfig,
};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, KillContainerOptions, LogsOptions,
    StartContainerOptions, StopContainerOptions, UploadToContainerOptions,
};
use bytes::Bytes;
use drover_core::FailureReason;
use futures_util::StreamExt;
use tokio::time::Instant;

use super::context::{
    Adopted, Job, JobError, Kind, Planned, instant_at, later, next_control, step_label,
};
use super::patience::Patience;
use super::script::{self, FileEntry, SCRIPT_PATH};
use super::spec::GitStrategy;
use super::{Control, host};
use crate::engine::is_status;
use crate::labels;
use crate::trace::LogCursor;

/// The first pause before reading a running step's log again after its stream ended early.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);

/// The exit code of a step killed with SIGKILL (through its init process).
const SIGKILLED: i32 = 128 + 9;

/// How a step ended.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub(crate) enum StepEnd {
    Exited(i32),
    TimedOut,
    /// Stopped by a graceful cancel.
    Canceled,
    /// Killed by an abort; nothing else of the job runs.
    Aborted(FailureReason),
}

/// What happened to the step while its log streamed.
enum Interruption {
    TimedOut,
    Canceled,
}

impl Job {
    /// Runs (or, after a restart, adopts) one step. `skip` log messages were already delivered;
    /// `bound_by_job` steps obey the job's deadline and are stopped by a cancel.
    pub(crate) async fn run_step(
        &mut self,
        planned: Planned,
        adopted: Option<&Adopted>,
        skip: u64,
        bound_by_job: bool,
    ) -> Result<StepEnd, JobError> {
        let timeout = match planned.kind {
            Kind::Sources => self.spec.timeout,
            Kind::User(i) => self.spec.steps[i].timeout,
        };
        if skip != u64::MAX {
            self.trace.cursor = LogCursor {
                step: planned.index,
                messages: skip,
            };
        }
        let (end, own) = match (&self.warm, adopted) {
            (Some(_), adopted) => {
                let record = match adopted {
                    Some(Adopted::Exec(record)) => Some(*record),
                    _ => None,
                };
                self.run_exec_step(planned, record, skip, timeout, bound_by_job)
                    .await?
            }
            (None, adopted) => {
                let container = match adopted {
                    Some(Adopted::Container(c)) => Some(c.as_ref()),
                    _ => None,
                };
                self.run_container_step(planned, container, skip, timeout, bound_by_job)
                    .await?
            }
        };
        let job = instant_at(self.deadline_ms);
        // What the trace says of a timeout: the step's own limit when it came before the job's.
        // (Steps not bound by the job, after_script, never decide the job's result.)
        if end == StepEnd::TimedOut && bound_by_job && own < job && self.step_timeout_hit.is_none()
        {
            self.step_timeout_hit = Some(timeout);
        }
        Ok(end)
    }

    /// A step in a container of its own; also returns the step's own deadline.
    async fn run_container_step(
        &mut self,
        planned: Planned,
        adopted: Option<&ContainerSummary>,
        skip: u64,
        timeout: Duration,
        bound_by_job: bool,
    ) -> Result<(StepEnd, Instant), JobError> {
        let name = self.names.step(&planned, &self.spec);
        let started = match adopted.and_then(|c| c.state) {
            None => {
                self.trace.section(header(&planned, &self.spec)).await;
                self.create_step(&planned, &name).await?;
                let started = self.upload_and_start(&planned, &name).await?;
                self.prestart_next();
                started
            }
            Some(ContainerSummaryStateEnum::CREATED) => {
                self.upload_and_start(&planned, &name).await?
            }
            Some(_) => self.started_at(&name).await?,
        };
        let own = later(started, timeout);
        let job = instant_at(self.deadline_ms);
        let deadline = if bound_by_job { own.min(job) } else { own };
        let end = self
            .follow(&name, planned.index, skip, deadline, bound_by_job)
            .await?;
        Ok((end, own))
    }

    fn step_image(&self, planned: &Planned) -> (String, Option<Vec<String>>) {
        let fetches = matches!(
            self.spec.git.strategy,
            GitStrategy::Fetch | GitStrategy::Clone
        );
        match (planned.kind, &self.spec.helper_image) {
            (Kind::Sources, Some(helper)) if fetches => (helper.clone(), None),
            _ => (
                self.spec.image.name.clone(),
                self.spec.image.entrypoint.clone(),
            ),
        }
    }

    async fn create_step(&mut self, planned: &Planned, name: &str) -> Result<(), JobError> {
        let (image, entrypoint) = self.step_image(planned);
        let mut labels = self.labels(labels::ROLE_STEP);
        labels.insert(
            labels::STEP.to_string(),
            step_label(planned, &self.spec).to_string(),
        );
        labels.insert(labels::STEP_INDEX.to_string(), planned.index.to_string());
        labels.insert(labels::DEADLINE.to_string(), self.deadline_ms.to_string());
        let options = &self.spec.container_options;
        let mut host_config = HostConfig {
            binds: Some(self.binds.clone()),
            network_mode: Some(self.network.clone()),
            // An init process forwards SIGTERM to the shell (a shell as PID 1 ignores it).
            init: Some(true),
            privileged: Some(self.spec.privileged),
            // The log is the step's record: it must be readable back, whatever the daemon's
            // default driver is.
            log_config: Some(HostConfigLogConfig {
                typ: Some("json-file".to_string()),
                config: None,
            }),
            ..Default::default()
        };
        host::for_step(options, &mut host_config);
        let body = ContainerCreateBody {
            image: Some(image),
            // As GitLab Runner's: the user's steps run as `user`, the sources step as the image's.
            user: match planned.kind {
                Kind::User(_) => options.user.clone(),
                Kind::Sources => None,
            },
            entrypoint,
            cmd: Some(vec![
                self.spec.shell.program().to_string(),
                SCRIPT_PATH.to_string(),
            ]),
            env: Some({
                let mut env = self.environment();
                env.push(format!("CI_JOB_STATUS={}", self.job_status));
                env
            }),
            labels: Some(labels),
            tty: Some(false),
            host_config: Some(host_config),
            ..Default::default()
        };
        let options = CreateContainerOptions {
            name: Some(name.to_string()),
            ..Default::default()
        };
        self.docker.create_container(Some(options), body).await?;
        Ok(())
    }

    /// `KEY=value` for the variables the script cannot export (their names are no shell names);
    /// the script exports all others. One too long for Linux is left out (the trace says so).
    pub(crate) fn environment(&self) -> Vec<String> {
        self.spec
            .variables
            .iter()
            .filter(|v| script::in_environment(v))
            .map(|v| match v.file {
                true => format!("{}={}", v.key, script::file_variable_path(&v.key)),
                false => format!("{}={}", v.key, v.value),
            })
            .filter(|entry| entry.len() <= script::ENV_STRING_MAX)
            .collect()
    }

    /// The job's file variables, as files for a step's container.
    pub(crate) fn file_variables(&self) -> Vec<FileEntry> {
        self.spec
            .variables
            .iter()
            .filter(|v| v.file)
            .map(|v| FileEntry {
                path: script::file_variable_path(&v.key),
                content: v.value.clone().into_bytes(),
                mode: 0o644,
            })
            .collect()
    }

    /// Puts the step's script and the file variables into the container, then starts it.
    async fn upload_and_start(
        &mut self,
        planned: &Planned,
        name: &str,
    ) -> Result<Instant, JobError> {
        let text = match planned.kind {
            Kind::Sources => script::get_sources(&self.spec, &self.step_image(planned).0),
            Kind::User(i) => script::user_step(&self.spec, &self.spec.steps[i]),
        };
        let mut files = vec![FileEntry {
            path: SCRIPT_PATH.to_string(),
            content: text.into_bytes(),
            mode: 0o755,
        }];
        files.extend(self.file_variables());
        let tar = script::archive(&files)
            .map_err(|e| JobError::System(format!("building the step's files: {e}")))?;
        let options = UploadToContainerOptions {
            path: "/".to_string(),
            ..Default::default()
        };
        self.docker
            .upload_to_container(name, Some(options), body_full(Bytes::from(tar)))
            .await?;
        self.docker
            .start_container(name, None::<StartContainerOptions>)
            .await?;
        Ok(Instant::now())
    }

    /// When an adopted step container started, as a tokio instant.
    async fn started_at(&self, name: &str) -> Result<Instant, JobError> {
        let inspect = self
            .docker
            .inspect_container(name, None::<InspectContainerOptions>)
            .await?;
        let started = inspect
            .state
            .and_then(|s| s.started_at)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.timestamp_millis().max(0) as u64);
        Ok(match started {
            Some(ms) => {
                let age = super::context::now_ms().saturating_sub(ms);
                Instant::now()
                    .checked_sub(Duration::from_millis(age))
                    .unwrap_or_else(Instant::now)
            }
            None => Instant::now(),
        })
    }

    /// Streams the step's log (skipping `delivered` messages) until the container exits, while
    /// enforcing the deadline and the job's control.
    async fn follow(
        &mut self,
        name: &str,
        step: u16,
        mut delivered: u64,
        deadline: Instant,
        cancelable: bool,
    ) -> Result<StepEnd, JobError> {
        let mut interruption = None;
        let mut handled = Control::Run;
        let mut reconnects = 0u32;
        let mut patience = Patience::default();
        // Before reading the log again: a pause that the deadline and the control still cut into.
        let mut pause: Option<Instant> = None;
        loop {
            let options = LogsOptions {
                follow: true,
                stdout: true,
                stderr: true,
                tail: "all".to_string(),
                ..Default::default()
            };
            let mut stream = self.docker.logs(name, Some(options));
            let mut seen = 0u64;
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(pause.unwrap_or_else(Instant::now)),
                        if pause.is_some() => pause = None,
                    item = stream.next(), if pause.is_none() => match item {
                        Some(Ok(output)) => {
                            seen += 1;
                            reconnects = 0;
                            if seen > delivered {
                                delivered = seen;
                                let cursor = LogCursor { step, messages: seen };
                                self.trace.output(output.into_bytes(), cursor).await;
                            }
                        }
                        Some(Err(err)) => {
                            tracing::debug!(container = name, error = %err, "log stream broke");
                            break;
                        }
                        None => break,
                    },
                    () = tokio::time::sleep_until(deadline), if interruption.is_none() => {
                        self.kill(name).await?;
                        interruption = Some(Interruption::TimedOut);
                    }
                    control = next_control(
                        &mut self.control, &mut self.control_open, handled
                    ) => {
                        handled = control;
                        match control {
                            Control::Abort(reason) => {
                                self.kill(name).await?;
                                return Ok(StepEnd::Aborted(reason));
                            }
                            Control::Cancel if cancelable && interruption.is_none() => {
                                self.trace.warn("the job was canceled: stopping the script").await;
                                self.stop(name).await?;
                                interruption = Some(Interruption::Canceled);
                            }
                            // A step that runs to its end on cancel (after_script), or one that is
                            // already being stopped.
                            _ => {}
                        }
                    }
                }
            }
            let inspect = match self
                .docker
                .inspect_container(name, None::<InspectContainerOptions>)
                .await
            {
                Ok(inspect) => {
                    patience.answered();
                    inspect
                }
                Err(err) if is_status(&err, &[404]) => {
                    return Err(JobError::System(format!("the container {name} vanished")));
                }
                // No answer at all: the engine may be back in a moment.
                Err(err) if patience.bears(&err) => {
                    tracing::debug!(container = name, error = %err, "the engine does not answer");
                    reconnects += 1;
                    pause = Some(Instant::now() + RECONNECT_PAUSE * reconnects.min(10));
                    continue;
                }
                Err(err) => return Err(err.into()),
            };
            let state = inspect.state.unwrap_or_default();
            if state.running == Some(true) || state.restarting == Some(true) {
                // The stream ended early (engine restart, a dropped connection): read on, backing
                // off if it keeps ending without output.
                reconnects += 1;
                if reconnects > 1 {
                    pause = Some(Instant::now() + RECONNECT_PAUSE * reconnects.min(10));
                }
                continue;
            }
            let code = state.exit_code.unwrap_or(-1) as i32;
            return Ok(match interruption {
                Some(Interruption::TimedOut) => StepEnd::TimedOut,
                Some(Interruption::Canceled) => StepEnd::Canceled,
                // Killed past its deadline by an earlier drover process that then died.
                None if code == SIGKILLED && Instant::now() >= deadline => StepEnd::TimedOut,
                None => StepEnd::Exited(code),
            });
        }
    }

    async fn kill(&self, name: &str) -> Result<(), JobError> {
        let options = KillContainerOptions {
            signal: "KILL".to_string(),
        };
        match self.docker.kill_container(name, Some(options)).await {
            Err(err) if !is_status(&err, &[404, 409]) => Err(err.into()),
            _ => Ok(()),
        }
    }

    async fn stop(&self, name: &str) -> Result<(), JobError> {
        let secs = self.options.stop_timeout.as_secs().min(i32::MAX as u64) as i32;
        let options = StopContainerOptions {
            t: Some(secs),
            ..Default::default()
        };
        match self.docker.stop_container(name, Some(options)).await {
            Err(err) if !is_status(&err, &[304, 404, 409]) => Err(err.into()),
            _ => Ok(()),
        }
    }
}

pub(crate) fn header(planned: &Planned, spec: &super::spec::BuildSpec) -> &'static str {
    match planned.kind {
        Kind::Sources => "Getting source from Git repository",
        Kind::User(i) => match spec.steps[i].name {
            super::spec::StepName::Script => "Executing \"step_script\" stage of the job script",
            super::spec::StepName::AfterScript => "Running after_script",
        },
    }
}
