//! One job from start (or resume) to outcome: prepare, run the steps, report, clean up.

use std::collections::BTreeMap;
use std::sync::Arc;

use bollard::models::{NetworkCreateRequest, VolumeCreateOptions};
use bollard::query_parameters::{InspectContainerOptions, ListContainersOptions};
use drover_core::{FailureReason, Outcome};
use tokio::sync::watch;

use super::context::{
    Adopted, Job, JobError, Kind, Names, Planned, instant_at, next_control, now_ms, step_label,
};
use super::spec::{BuildSpec, GitStrategy, StepName, When};
use super::step::StepEnd;
use super::{Control, Executor, cleanup, script, services, warm};
use crate::endpoint::MachineEndpoint;
use crate::image::{Pull, PullPolicy, ensure_image};
use crate::labels;
use crate::trace::{LogCursor, Trace, TraceSink};

/// The helper image is pulled only when missing, as GitLab Runner does.
const HELPER_PULL_POLICY: [PullPolicy; 1] = [PullPolicy::IfNotPresent];

pub(crate) enum Mode {
    Fresh,
    Resume(Option<LogCursor>),
}

pub(crate) async fn run(
    executor: Executor,
    endpoint: MachineEndpoint,
    spec: Arc<BuildSpec>,
    sink: TraceSink,
    control: watch::Receiver<Control>,
    mode: Mode,
    more_jobs_on_machine: bool,
) -> Outcome {
    let Executor {
        options,
        keep_containers,
        standbys,
    } = executor;
    let mut trace = Trace::new(Some(sink));
    let docker = match endpoint.engine.connect().await {
        Ok(docker) => docker,
        Err(err) => {
            let outcome = system_failure();
            trace
                .error(&format!("Job failed (system failure): {err}"))
                .await;
            return outcome;
        }
    };
    let names = Names::new(&spec);
    let network = endpoint.network.clone().unwrap_or_else(|| names.network());
    let mut job = Job {
        docker,
        spec,
        endpoint,
        options,
        trace,
        control,
        control_open: true,
        names,
        deadline_ms: 0,
        network,
        binds: Vec::new(),
        resumed: false,
        step_timeout_hit: None,
        job_status: "running",
        warm: None,
        prestart: None,
        more_jobs_on_machine,
        standbys,
        standby: Default::default(),
        next_standby: None,
    };
    job.binds = job.binds();
    let result = match mode {
        Mode::Fresh => job.fresh().await,
        Mode::Resume(cursor) => job.resume(cursor).await,
    };
    let outcome = match result {
        Ok(outcome) => {
            job.final_line(outcome).await;
            outcome
        }
        Err(JobError::ImagePull(message)) => {
            job.trace.error(&format!("Job failed: {message}")).await;
            Outcome::Failed {
                reason: FailureReason::ImagePullFailure,
                exit_code: None,
            }
        }
        Err(JobError::System(message)) => {
            job.trace
                .error(&format!("Job failed (system failure): {message}"))
                .await;
            system_failure()
        }
    };
    if !keep_containers
        && let Err(err) = cleanup::remove_job(&job.docker, &job.spec.runner, job.spec.job_id).await
    {
        tracing::warn!(job = job.spec.job_id, error = %err, "could not remove the job's containers");
    }
    if let Some(mut prestart) = job.prestart.take() {
        // A failed start only costs the next job its warm start; a stuck engine must not hold
        // back the job's outcome.
        if tokio::time::timeout(PRESTART_WAIT, &mut prestart)
            .await
            .is_err()
        {
            prestart.abort();
            tracing::warn!(
                job = job.spec.job_id,
                "gave up waiting for the next warm container"
            );
        }
    }
    outcome
}

/// How long a job's outcome waits for the next job's warm container to start.
const PRESTART_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

fn system_failure() -> Outcome {
    Outcome::Failed {
        reason: FailureReason::RunnerSystemFailure,
        exit_code: None,
    }
}

impl Job {
    pub(crate) fn plan(&self) -> Vec<Planned> {
        // With a `user`, the sources step runs even without sources: it makes the project
        // directory, which the user may have no right to make.
        let sources = (self.spec.git.strategy != GitStrategy::None
            || self.spec.container_options.user.is_some())
        .then_some(Kind::Sources);
        sources
            .into_iter()
            .chain((0..self.spec.steps.len()).map(Kind::User))
            .enumerate()
            .map(|(index, kind)| Planned {
                index: index as u16,
                kind,
            })
            .collect()
    }

    async fn fresh(&mut self) -> Result<Outcome, JobError> {
        let timeout_ms = u64::try_from(self.spec.timeout.as_millis()).unwrap_or(u64::MAX);
        self.deadline_ms = now_ms().saturating_add(timeout_ms);
        let machine = match &self.endpoint.machine {
            Some(name) => format!(" on machine {name}"),
            None => String::new(),
        };
        self.trace
            .say(format!(
                "\x1b[1;mRunning with drover {}{machine}\x1b[0;m\n",
                env!("CARGO_PKG_VERSION")
            ))
            .await;
        for warning in &self.spec.warnings {
            self.trace.warn(warning).await;
        }
        for warning in script::variable_warnings(&self.spec) {
            self.trace.warn(&warning).await;
        }
        self.trace
            .section("Preparing the \"docker\" executor")
            .await;
        let deadline = instant_at(self.deadline_ms);
        // Its own receiver: `prepare` borrows the job. A cancel seen here is seen again (and
        // ignored) by the step loop, which is never reached after it.
        let (mut control, mut open) = (self.control.clone(), true);
        let interrupted = tokio::select! {
            prepared = self.prepare() => { prepared?; None }
            control = next_control(&mut control, &mut open, Control::Run) => Some(Some(control)),
            () = tokio::time::sleep_until(deadline) => Some(None),
        };
        // Nothing of the job ran yet: a cancel, an abort or the deadline ends it here.
        match interrupted {
            None => self.run_steps(BTreeMap::new(), None).await,
            Some(Some(Control::Abort(reason))) => Ok(Outcome::Failed {
                reason,
                exit_code: None,
            }),
            Some(Some(_)) => Ok(Outcome::Canceled),
            Some(None) => Ok(timed_out()),
        }
    }

    async fn resume(&mut self, cursor: Option<LogCursor>) -> Result<Outcome, JobError> {
        let claimed = warm::claimed(&self.spec.runner, self.spec.job_id);
        if cleanup::exists(&self.docker, &claimed).await? {
            return self.resume_warm(claimed, cursor).await;
        }
        // By job and by the label the job started under (the caller keeps it across upgrades).
        let job_id = self.spec.job_id.to_string();
        let filter = labels::filter(&[
            (labels::RUNNER, Some(&self.spec.runner)),
            (labels::JOB, Some(&job_id)),
            (labels::ROLE, Some(labels::ROLE_STEP)),
        ]);
        let options = ListContainersOptions {
            all: true,
            filters: Some(filter),
            ..Default::default()
        };
        let mut existing = BTreeMap::new();
        for container in self.docker.list_containers(Some(options)).await? {
            let label = |key| container.labels.as_ref().and_then(|l| l.get(key)).cloned();
            let index = label(labels::STEP_INDEX).and_then(|i| i.parse::<u16>().ok());
            if let Some(deadline) = label(labels::DEADLINE).and_then(|d| d.parse().ok()) {
                self.deadline_ms = deadline;
            }
            if let Some(index) = index {
                existing.insert(index, Adopted::Container(Box::new(container)));
            }
        }
        if existing.is_empty() {
            return Err(JobError::System(
                "the job's containers are gone (the machine was removed or cleaned up while drover \
                 was not running)"
                    .to_string(),
            ));
        }
        // Said at the end, not here: a line here would cut into a line the job is writing (and
        // into a secret being masked across the restart).
        self.resumed = true;
        self.prestart_next();
        self.run_steps(existing, cursor).await
    }

    /// Starts a warm container for the next job like this one on the machine (once per job; in
    /// the background, awaited before the outcome).
    pub(crate) fn prestart_next(&mut self) {
        if !self.options.warm || !self.more_jobs_on_machine || self.prestart.is_some() {
            return;
        }
        let (docker, endpoint, spec, standbys) = (
            self.docker.clone(),
            self.endpoint.clone(),
            self.spec.clone(),
            self.standbys.clone(),
        );
        self.prestart = Some(tokio::spawn(async move {
            if let Err(err) = warm::prestart(&docker, &endpoint, &spec, false, &standbys).await {
                tracing::debug!(error = %err, "could not start a warm build container");
            }
        }));
    }

    /// Re-attaches to a job that runs by exec in its claimed warm container.
    async fn resume_warm(
        &mut self,
        claimed: String,
        cursor: Option<LogCursor>,
    ) -> Result<Outcome, JobError> {
        self.warm = Some(claimed.clone());
        let inspect = self
            .docker
            .inspect_container(&claimed, None::<InspectContainerOptions>)
            .await?;
        if inspect.state.and_then(|s| s.running) != Some(true) {
            return Err(JobError::System(format!(
                "the job's build container {claimed} stopped while drover was not running"
            )));
        }
        // Its mounts are the job's (its fresh caches, if it has them, in place of kept volumes).
        if let Some(binds) = inspect.host_config.and_then(|h| h.binds) {
            self.binds = binds;
        }
        let existing: BTreeMap<u16, Adopted> = self
            .exec_records()
            .await?
            .into_iter()
            .map(|(index, record)| (index, Adopted::Exec(record)))
            .collect();
        if existing.is_empty() {
            return Err(JobError::System(
                "none of the job's steps started in its build container".to_string(),
            ));
        }
        self.resumed = true;
        self.prestart_next();
        self.run_steps(existing, cursor).await
    }

    /// Images, volumes, network and services: everything before the first step.
    async fn prepare(&mut self) -> Result<(), JobError> {
        // A new attempt of a job id starts clean: nothing of an earlier attempt may be adopted.
        cleanup::remove_job(&self.docker, &self.spec.runner, self.spec.job_id).await?;
        let spec = self.spec.clone();
        self.trace
            .say(format!(
                "Using Docker executor with image {} ...\n",
                spec.image.name
            ))
            .await;
        let pull = |policies| Pull {
            policies,
            credentials: &spec.credentials,
            mirrors: &spec.registry_mirrors,
        };
        ensure_image(
            &self.docker,
            &spec.image.name,
            pull(&spec.image.pull_policy),
            &mut self.trace,
        )
        .await?;
        if let (Some(helper), GitStrategy::Fetch | GitStrategy::Clone) =
            (&spec.helper_image, spec.git.strategy)
        {
            ensure_image(
                &self.docker,
                helper,
                pull(&HELPER_PULL_POLICY),
                &mut self.trace,
            )
            .await?;
        }
        for service in &spec.services {
            ensure_image(
                &self.docker,
                &service.image.name,
                pull(&service.image.pull_policy),
                &mut self.trace,
            )
            .await?;
        }
        // Whether it may take a warm container's fresh caches in place of its kept volumes.
        let last_with_caches_absent = self.options.warm
            && !self.more_jobs_on_machine
            && !spec.kept_volumes.is_empty()
            && warm::none_exist(&self.docker, &spec.kept_volumes).await?;
        self.create_volumes().await?;
        if self.endpoint.network.is_none() {
            self.create_network().await?;
        }
        services::start(self).await?;
        let mut fresh_caches = false;
        if self.options.warm
            && let Some(claimed) = warm::claim(
                &self.docker,
                &self.endpoint,
                &self.spec,
                last_with_caches_absent,
                &self.standbys,
            )
            .await?
        {
            self.warm = Some(claimed.name);
            self.standby = std::sync::Mutex::new(claimed.standby);
            if let Some(binds) = claimed.fresh_binds {
                // Caches and artifacts move through containers with the same mounts.
                self.binds = binds;
                fresh_caches = true;
            }
        }
        // A container with fresh caches has them in place of the project's kept volumes, which
        // did not exist: they are not made just to be removed with the machine.
        if !fresh_caches {
            let machine = self.endpoint.machine.as_deref();
            warm::create_kept_volumes(&self.docker, &spec.runner, machine, &spec.kept_volumes)
                .await?;
        }
        if self.options.warm {
            // No warm container fits: one of its own costs more than a step container (its
            // start, a check, an exec) but spares a container per later step, so it pays from
            // two steps on.
            if self.warm.is_none() && self.plan().len() >= 2 {
                self.warm = match warm::start_own(&self.docker, &self.endpoint, &spec).await {
                    Ok(own) => own,
                    Err(err) => {
                        tracing::debug!(error = %err, "no build container of its own; a container per step");
                        None
                    }
                };
            }
            let plan = self.plan();
            self.upload_exec_files(&plan).await?;
        }
        Ok(())
    }

    /// The builds volume (the machine's, or one for this job) and the `volumes` mounts.
    fn binds(&self) -> Vec<String> {
        let builds = self
            .endpoint
            .builds_volume
            .clone()
            .unwrap_or_else(|| self.names.builds_volume());
        let mut binds = vec![format!("{builds}:{}", self.spec.builds_dir)];
        for (i, volume) in self.spec.volumes.iter().enumerate() {
            if volume.contains(':') {
                binds.push(volume.clone());
            } else {
                binds.push(format!("{}:{volume}", self.names.volume(i)));
            }
        }
        binds
    }

    async fn create_volumes(&mut self) -> Result<(), JobError> {
        let mut names = Vec::new();
        if self.endpoint.builds_volume.is_none() {
            names.push(self.names.builds_volume());
        }
        for (i, volume) in self.spec.volumes.iter().enumerate() {
            if !volume.contains(':') {
                names.push(self.names.volume(i));
            }
        }
        for name in names {
            let options = VolumeCreateOptions {
                name: Some(name),
                labels: Some(self.labels(labels::ROLE_BUILDS)),
                ..Default::default()
            };
            self.docker.create_volume(options).await?;
        }
        Ok(())
    }

    async fn create_network(&mut self) -> Result<(), JobError> {
        let request = NetworkCreateRequest {
            name: self.network.clone(),
            driver: Some("bridge".to_string()),
            labels: Some(self.labels(labels::ROLE_NETWORK)),
            ..Default::default()
        };
        self.docker.create_network(request).await?;
        Ok(())
    }

    /// Runs the plan. `existing` holds the step containers found after a restart, by step index;
    /// `cursor` says how much of their output was already consumed.
    async fn run_steps(
        &mut self,
        existing: BTreeMap<u16, Adopted>,
        cursor: Option<LogCursor>,
    ) -> Result<Outcome, JobError> {
        let plan = self.plan();
        let last_existing = existing.keys().next_back().copied();
        let mut outcome = Outcome::Success;
        for planned in plan {
            let adopted = existing.get(&planned.index);
            if adopted.is_none() && last_existing.is_some_and(|last| planned.index < last) {
                return Err(JobError::System(format!(
                    "the container of step {} is gone while later steps exist",
                    step_label(&planned, &self.spec)
                )));
            }
            // A cancel or an abort that came between steps.
            match *self.control.borrow_and_update() {
                Control::Abort(reason) => {
                    return Ok(Outcome::Failed {
                        reason,
                        exit_code: None,
                    });
                }
                Control::Cancel if outcome == Outcome::Success => outcome = Outcome::Canceled,
                _ => {}
            }
            let (when, allow_failure, bound_by_job) = match planned.kind {
                Kind::Sources => (When::OnSuccess, false, true),
                Kind::User(i) => {
                    let step = &self.spec.steps[i];
                    (step.when, step.allow_failure, step.name == StepName::Script)
                }
            };
            if bound_by_job && outcome == Outcome::Success && now_ms() >= self.deadline_ms {
                outcome = timed_out();
            }
            let runs = when.fits(outcome == Outcome::Success);
            if !runs && adopted.is_none() {
                continue;
            }
            // `restore_cache`, then `download_artifacts`: after the sources, before the script;
            // once, on a fresh start of the first user step.
            if matches!(planned.kind, Kind::User(0))
                && adopted.is_none()
                && outcome == Outcome::Success
            {
                self.restore_caches().await?;
            }
            if matches!(planned.kind, Kind::User(0))
                && adopted.is_none()
                && outcome == Outcome::Success
            {
                let mut control = self.control.clone();
                let deadline = instant_at(self.deadline_ms);
                let failed = tokio::select! {
                    result = self.download_dependencies() => result?,
                    reason = aborted(&mut control) => {
                        return Ok(Outcome::Failed {
                            reason,
                            exit_code: None,
                        });
                    }
                    () = tokio::time::sleep_until(deadline) => Some(timed_out()),
                };
                if let Some(failed) = failed {
                    outcome = failed;
                    continue;
                }
            }
            let skip = match cursor {
                Some(c) if c.step > planned.index => u64::MAX,
                Some(c) if c.step == planned.index => c.messages,
                _ => 0,
            };
            self.job_status = match (planned.kind, outcome) {
                (Kind::User(i), outcome) if self.spec.steps[i].name == StepName::AfterScript => {
                    match outcome {
                        Outcome::Success => "success",
                        Outcome::Canceled => "canceled",
                        Outcome::Failed { .. } => "failed",
                    }
                }
                _ => "running",
            };
            let end = self.run_step(planned, adopted, skip, bound_by_job).await?;
            let label = step_label(&planned, &self.spec);
            match end {
                StepEnd::Exited(0) => {}
                StepEnd::Exited(code) if allow_failure => {
                    self.trace
                        .warn(&format!("{label} failed with exit code {code}"))
                        .await;
                }
                StepEnd::Exited(code) => {
                    if outcome == Outcome::Success {
                        outcome = Outcome::Failed {
                            reason: FailureReason::ScriptFailure,
                            exit_code: Some(code),
                        };
                    }
                }
                StepEnd::TimedOut if allow_failure => {
                    self.trace.warn(&format!("{label} timed out")).await;
                }
                StepEnd::TimedOut => {
                    if outcome == Outcome::Success {
                        outcome = timed_out();
                    }
                }
                StepEnd::Canceled => outcome = Outcome::Canceled,
                StepEnd::Aborted(reason) => {
                    return Ok(Outcome::Failed {
                        reason,
                        exit_code: None,
                    });
                }
            }
            // Without sources there is nothing for the user's steps to work on.
            if matches!(planned.kind, Kind::Sources) && outcome != Outcome::Success {
                break;
            }
        }
        // `archive_cache`, then the uploads: past the job's deadline, as GitLab Runner's; only an
        // abort cuts them short.
        let mut control = self.control.clone();
        tokio::select! {
            result = async {
                self.save_caches(outcome).await?;
                self.upload_artifacts(outcome).await
            } => result,
            reason = aborted(&mut control) => Ok(Outcome::Failed {
                reason,
                exit_code: None,
            }),
        }
    }

    async fn final_line(&mut self, outcome: Outcome) {
        if self.resumed {
            self.trace
                .warn("drover restarted while this job ran and re-attached to it")
                .await;
        }
        match outcome {
            Outcome::Success => self.trace.say("\x1b[32;1mJob succeeded\x1b[0;m\n").await,
            Outcome::Canceled => self.trace.error("Job failed: canceled").await,
            Outcome::Failed {
                reason: FailureReason::ScriptFailure,
                exit_code,
            } => {
                let code = exit_code.map_or("unknown".to_string(), |c| c.to_string());
                self.trace
                    .error(&format!("Job failed: exit code {code}"))
                    .await;
            }
            Outcome::Failed {
                reason: FailureReason::JobExecutionTimeout,
                ..
            } => {
                let secs = self.step_timeout_hit.unwrap_or(self.spec.timeout).as_secs();
                self.trace
                    .error(&format!(
                        "Job failed: execution took longer than {secs} seconds"
                    ))
                    .await;
            }
            Outcome::Failed { reason, .. } => {
                self.trace
                    .error(&format!("Job failed: {}", reason.as_str()))
                    .await;
            }
        }
    }
}

fn timed_out() -> Outcome {
    Outcome::Failed {
        reason: FailureReason::JobExecutionTimeout,
        exit_code: None,
    }
}

/// Resolves when the job is aborted (a cancel is left to the step loop); never if nobody can
/// steer the job anymore.
async fn aborted(control: &mut watch::Receiver<Control>) -> FailureReason {
    let (mut open, mut handled) = (true, Control::Run);
    loop {
        match next_control(control, &mut open, handled).await {
            Control::Abort(reason) => return reason,
            other => handled = other,
        }
    }
}
