//! Commands to adapters: each command is handed over with everything its task needs (the runner's
//! link, its provider, the machine's name, where a job runs), resolved at dispatch time.

use drover_core::{Command, FailCause, MachineId, RunnerId};

use super::Driver;
use crate::config::ExecutorKind;
use crate::daemon::coordinator;
use crate::daemon::jobs::JobCommand;
use crate::daemon::machines::{MachineCall, Placement, Warmup};
use crate::daemon::runners::Place;

impl Driver {
    pub(super) fn execute_all(&mut self, commands: Vec<Command>) {
        for command in commands {
            self.execute(command);
        }
    }

    /// Hands a command to its adapter with everything its task needs.
    fn execute(&mut self, command: Command) {
        // A runner whose adapters are not built yet: its commands wait for them.
        let Some(command) = self.late.hold(command) else {
            return;
        };
        match command {
            Command::RequestJob { runner } => {
                let link = self.runners.get_mut(runner).map(|r| &mut r.link);
                coordinator::request(runner, link, &self.inputs);
            }
            Command::CancelRequests { runner } => {
                if let Some(r) = self.runners.get_mut(runner) {
                    r.link.cancel();
                }
            }
            Command::CreateMachine {
                machine,
                runner,
                name,
            } => {
                self.runners.creating(runner, &name);
                let mut call = self.machine_call(runner, machine, name);
                call.warmup = self.warmup(runner, &call.name);
                self.machines.create(call);
            }
            Command::RemoveMachine {
                machine,
                runner,
                name,
                reason,
            } => {
                let call = self.machine_call(runner, machine, name);
                self.machines.remove(call, reason.as_str());
            }
            Command::ListMachines {
                runner,
                request,
                prefixes,
            } => {
                let providers = self.runners.providers_of(runner);
                let label = self.label(runner);
                self.machines
                    .list(runner, label, providers, request, prefixes);
            }
            Command::RunJob {
                job,
                runner,
                machine,
            } => {
                let placement = self.placement(runner, machine);
                self.jobs.command(job, JobCommand::Run(placement));
            }
            Command::ResumeJob {
                job,
                runner,
                machine,
            } => {
                let placement = self.placement(runner, machine);
                self.jobs.command(job, JobCommand::Resume(placement));
            }
            Command::CancelJob { job } => self.jobs.command(job, JobCommand::Cancel),
            Command::AbortJob { job, reason } => self.jobs.command(job, JobCommand::Abort(reason)),
            Command::FailJob {
                job,
                runner,
                reason,
                cause,
            } => {
                if self.jobs.holds(job) {
                    let detail = match cause {
                        FailCause::CreationFailed => self.machines.creation_error(runner),
                        _ => None,
                    };
                    self.jobs.command(job, JobCommand::Fail(reason, detail));
                    self.jobs.release(job);
                } else {
                    tracing::error!(
                        runner = %self.label(runner),
                        job = job.0,
                        "cannot report a job drover holds no payload for"
                    );
                }
            }
            Command::Exit { clean } => self.exit = Some(clean),
        }
    }

    fn machine_call(&self, runner: RunnerId, machine: MachineId, name: String) -> MachineCall {
        MachineCall {
            runner,
            label: self.label(runner),
            provider: self.runners.provider_of(runner, &name),
            machine,
            name,
            warmup: None,
        }
    }

    /// A new machine's first warm build container: docker+machine runners only (a
    /// docker-autoscaler instance's jobs each build in their slot's volume, which no container
    /// made before the job has).
    fn warmup(&self, runner: RunnerId, name: &str) -> Option<Warmup> {
        let r = self.runners.get(runner)?;
        let first_job_is_last = first_job_is_last(self.ledger.core().state(), runner);
        (r.settings().executor == ExecutorKind::DockerMachine).then(|| {
            self.jobs
                .warmup(r.context.clone(), name.to_string(), first_job_is_last)
        })
    }

    /// Where a job runs, resolved now: the task gets the provider that made the machine and its
    /// name.
    fn placement(&self, runner: RunnerId, machine: Option<MachineId>) -> Placement {
        let place = self.runners.get(runner).map(|r| &r.place);
        match (machine, place) {
            (None, Some(Place::Engine(endpoint))) => Placement::Engine(endpoint.clone()),
            (None, _) => Placement::Unavailable(format!(
                "runner {} has no Docker engine configured",
                self.label(runner)
            )),
            (Some(m), _) => {
                let state = self.ledger.core().state();
                let name = state.machine(m).map(|m| m.name.clone());
                let last_job = last_job(state, runner, m);
                let provider = name
                    .as_deref()
                    .and_then(|n| self.runners.provider_of(runner, n));
                match (provider, name) {
                    (Some(provider), Some(name)) => Placement::Machine {
                        provider,
                        name,
                        id: m,
                        last_job,
                    },
                    (_, Some(name)) => Placement::Unavailable(format!(
                        "runner {} has no machine provider for machine {name}",
                        self.label(runner)
                    )),
                    (_, None) => Placement::Unavailable(format!("machine #{} is gone", m.0)),
                }
            }
        }
    }
}

/// Whether the job the machine `m` just started is its last: the core removes it after this job
/// (`MaxBuilds` reached; the start is counted already).
fn last_job(state: &drover_core::State, runner: RunnerId, m: MachineId) -> bool {
    let max_builds = max_builds(state, runner);
    state
        .machine(m)
        .is_some_and(|m| max_builds > 0 && m.used_count >= max_builds)
}

/// Whether a new machine of the runner will take one job only (`MaxBuilds 1`), as
/// [`last_job`] will find when it takes it.
fn first_job_is_last(state: &drover_core::State, runner: RunnerId) -> bool {
    max_builds(state, runner) == 1
}

/// The runner's `MaxBuilds` as the core applies it (0: no limit).
fn max_builds(state: &drover_core::State, runner: RunnerId) -> u32 {
    state
        .runners()
        .get(runner.index())
        .and_then(|r| r.config.policy())
        .map_or(0, |p| p.max_builds)
}

#[cfg(test)]
mod tests {
    use drover_core::{Command, Config, Core, Event, JobId, JobInfo, RunnerConfig, Timestamp};

    use super::*;

    /// The machine's runs, job after job, with `MaxBuilds = max_builds`: whether each was its last.
    fn last_jobs(max_builds: u32, jobs: u64) -> Vec<bool> {
        let mut runner = RunnerConfig::pool("r", 0, 1);
        if let Some(p) = runner.policy_mut() {
            p.max_builds = max_builds;
        }
        let mut core = Core::new(Config::new(4).with_runner(runner), Timestamp(0));
        let r = RunnerId(0);
        let info = JobInfo {
            timeout_ms: 3_600_000,
            queued_ms: 0,
        };
        let mut seen = Vec::new();
        let mut foreseen = std::collections::BTreeMap::new();
        let mut checked = 0;
        let mut now = 1;
        for j in 0..jobs {
            now += 1;
            let mut commands = core
                .handle(
                    Timestamp(now),
                    Event::JobReceived {
                        runner: r,
                        job: JobId(j),
                        info,
                    },
                )
                .commands;
            if let Some(machine) = commands.iter().find_map(|c| match c {
                Command::CreateMachine { machine, .. } => Some(*machine),
                _ => None,
            }) {
                foreseen.insert(machine, first_job_is_last(core.state(), r));
                commands = core
                    .handle(Timestamp(now), Event::MachineCreated { machine })
                    .commands;
            }
            for c in commands {
                if let Command::RunJob {
                    machine: Some(m), ..
                } = c
                {
                    let last = last_job(core.state(), r, m);
                    // What the machine's warm container was made for, at its creation.
                    if let Some(first_is_last) = foreseen.remove(&m) {
                        assert_eq!(first_is_last, last, "job {j}, max_builds {max_builds}");
                        checked += 1;
                    }
                    seen.push(last);
                }
            }
            let finished = Event::JobFinished {
                job: JobId(j),
                outcome: drover_core::Outcome::Success,
            };
            for c in core.handle(Timestamp(now), finished).commands {
                if let Command::RemoveMachine { machine, .. } = c {
                    let _ = core.handle(Timestamp(now), Event::MachineRemoved { machine });
                }
            }
        }
        assert!(checked > 0, "no machine's first job was seen");
        seen
    }

    /// Also: a new machine's warm container is made for a last job exactly when its first job
    /// turns out to be its last.
    #[test]
    fn a_job_is_its_machines_last_when_max_builds_is_reached() {
        assert_eq!(last_jobs(1, 3), [true, true, true]);
        assert_eq!(last_jobs(2, 4), [false, true, false, true]);
        assert_eq!(last_jobs(0, 3), [false, false, false]);
    }
}
