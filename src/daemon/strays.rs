//! Stray job containers: those of jobs the core no longer holds (a job finished and forgotten
//! before a crash cut its cleanup short). [`plan`] decides, from the core's state alone, where a
//! runner's stray containers can be and under which labels; [`sweep`] only carries it out. A plan
//! is plain data, so it can be made at start-up and carried out later, for a runner whose engine
//! only answers after start-up (see `late.rs`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use drover_core::state::MachineState;
use drover_core::{Core, RunnerId};
use drover_docker::{EngineConfig, Executor, MachineEndpoint};
use drover_providers::MachineProvider;

use super::adapters;
use crate::config::{ExecutorKind, Provider, RunnerSettings};

/// How long a sweep waits for one engine (or one machine's address).
const DEADLINE: Duration = Duration::from_secs(15);

/// Where one runner's stray job containers can be, and how to tell them.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// How logs name the runner.
    pub label: String,
    /// The `drover.runner` labels its job containers can carry.
    pub keys: Vec<String>,
    pub engines: Engines,
    /// The jobs the core holds: their containers are no strays.
    pub held: BTreeSet<u64>,
}

/// The engines a runner's job containers can be on.
#[derive(Clone, Debug, PartialEq)]
pub enum Engines {
    /// One engine: a plain `docker` runner's, or the engine the `docker` provider's sandboxes
    /// share.
    One(MachineEndpoint),
    /// Each live docker-machine VM's or cloud instance's own engine, by machine name (removed machines took their
    /// containers with them).
    Machines(Vec<String>),
    None,
}

/// The sweep of a runner, from its settings and what the core holds; `key` is the runner's
/// current machine key.
///
/// On a docker-machine VM, which only this runner uses, every key the runner had counts (its
/// machines named under an earlier key keep jobs labelled with it); on an engine other
/// installations may share (a plain `docker` runner, the `docker` provider's sandboxes), only the
/// current key, which includes this installation's id: an earlier key may be another
/// installation's too.
pub fn plan(core: &Core, id: RunnerId, settings: &RunnerSettings, key: &str, label: &str) -> Plan {
    let state = core.state();
    let engines = match (&settings.executor, &settings.machine) {
        (ExecutorKind::Docker, _) => Engines::One(adapters::local_engine(settings)),
        (ExecutorKind::DockerMachine, None) => Engines::None,
        (ExecutorKind::DockerMachine, Some(m)) if m.provider == Provider::Docker => {
            Engines::One(MachineEndpoint::engine_only(EngineConfig {
                host: m.docker_host.clone(),
                tls: None,
            }))
        }
        (ExecutorKind::DockerMachine, Some(_)) | (ExecutorKind::DockerAutoscaler, _) => {
            Engines::Machines(
                state
                    .machines()
                    .iter()
                    .filter(|(_, m)| {
                        m.runner == id
                            && matches!(
                                m.state,
                                MachineState::Idle
                                    | MachineState::Busy(_)
                                    | MachineState::Shared(_)
                            )
                    })
                    .map(|(_, m)| m.name.clone())
                    .collect(),
            )
        }
    };
    let mut keys = vec![key.to_string()];
    if matches!(engines, Engines::Machines(_)) {
        for earlier in state.runner_keys(id) {
            if !keys.contains(&earlier) {
                keys.push(earlier);
            }
        }
    }
    let held = state.jobs().into_iter().map(|(job, _)| job.0).collect();
    Plan {
        label: label.to_string(),
        keys,
        engines,
        held,
    }
}

impl Plan {
    /// The jobs found on an engine whose containers are strays.
    pub fn strays(&self, found: &[u64]) -> Vec<u64> {
        found
            .iter()
            .copied()
            .filter(|job| !self.held.contains(job))
            .collect()
    }
}

/// Carries out sweeps, the engines all at once and each within a deadline, so a dead VM delays
/// start-up by seconds, not by a connection timeout per machine. `provider` gives a plan's
/// machines' engines.
pub async fn sweep(plans: Vec<(Plan, Option<Arc<dyn MachineProvider>>)>, executor: &Executor) {
    let mut scans = Vec::new();
    for (plan, provider) in &plans {
        for endpoint in engines(plan, provider.as_deref()).await {
            scans.push(async move {
                let scan = clean_engine(plan, executor, &endpoint);
                if tokio::time::timeout(DEADLINE, scan).await.is_err() {
                    tracing::warn!(
                        runner = %plan.label,
                        engine = %endpoint.engine.describe(),
                        "gave up looking for stray job containers: the engine did not answer"
                    );
                }
            });
        }
    }
    futures_util::future::join_all(scans).await;
}

async fn clean_engine(plan: &Plan, executor: &Executor, on: &MachineEndpoint) {
    for key in &plan.keys {
        let found = match executor.list_jobs(&on.engine, key).await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::warn!(runner = %plan.label, "listing job containers failed: {e}");
                return;
            }
        };
        for job in plan.strays(&found) {
            tracing::info!(
                runner = %plan.label,
                job,
                "removing the containers of a job drover no longer holds"
            );
            if let Err(e) = executor.cleanup(on, key, job).await {
                tracing::warn!(runner = %plan.label, job, "removing stray job containers failed: {e}");
            }
        }
    }
}

/// The plan's engines, one endpoint per engine.
async fn engines(plan: &Plan, provider: Option<&dyn MachineProvider>) -> Vec<MachineEndpoint> {
    let names = match (&plan.engines, provider) {
        (Engines::One(endpoint), _) => return vec![endpoint.clone()],
        (Engines::Machines(names), Some(_)) => names,
        (Engines::Machines(_), None) | (Engines::None, _) => return Vec::new(),
    };
    let Some(provider) = provider else {
        return Vec::new();
    };
    let lookups = names.iter().map(|name| async move {
        match tokio::time::timeout(DEADLINE, provider.endpoint(name)).await {
            Ok(Ok(endpoint)) => Some(endpoint),
            Ok(Err(e)) => {
                tracing::debug!(machine = %name, "no engine to clean: {e}");
                None
            }
            Err(_) => None,
        }
    });
    let mut endpoints: Vec<MachineEndpoint> = Vec::new();
    for endpoint in futures_util::future::join_all(lookups)
        .await
        .into_iter()
        .flatten()
    {
        if !endpoints
            .iter()
            .any(|known| known.engine == endpoint.engine)
        {
            endpoints.push(endpoint);
        }
    }
    endpoints
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    use drover_core::{Event, JobId, JobInfo, Timestamp};

    const T0: Timestamp = Timestamp(1_767_571_200_000);

    fn settings(executor: &str, machine: &str) -> RunnerSettings {
        let text = format!(
            "concurrent = 2\n[[runners]]\nname = \"r\"\nurl = \"https://gitlab.example.com\"\n\
             token = \"glrt-x\"\nexecutor = \"{executor}\"\n{machine}"
        );
        let loaded = crate::config::parse(&text, Path::new("config.toml")).unwrap();
        loaded.runners[0].clone()
    }

    /// A core that knows one runner, `r`.
    fn core() -> Core {
        let text = "concurrent = 2\n[[runners]]\nname = \"r\"\nurl = \"https://gitlab.example.com\"\n\
                    token = \"glrt-x\"\nexecutor = \"docker\"\n";
        let config = crate::config::parse(text, Path::new("config.toml"))
            .unwrap()
            .core;
        Core::new(config, T0)
    }

    #[test]
    fn a_plain_docker_runner_sweeps_its_engine_under_its_current_key_only() {
        let s = settings(
            "docker",
            "[runners.docker]\nhost = \"tcp://127.0.0.1:2375\"\n",
        );
        let core = core();
        let plan = plan(&core, RunnerId(0), &s, "key", "r/key");
        assert_eq!(plan.keys, ["key"]);
        let Engines::One(endpoint) = &plan.engines else {
            panic!("{plan:?}");
        };
        assert_eq!(
            endpoint.engine.host.as_deref(),
            Some("tcp://127.0.0.1:2375")
        );
    }

    #[test]
    fn sandboxes_share_one_engine_and_docker_machine_vms_each_have_their_own() {
        let sandboxes = settings(
            "docker+machine",
            "[runners.machine]\nProvider = \"docker\"\nDockerHost = \"unix:///other.sock\"\n\
             MachineName = \"m-%s\"\n",
        );
        let core = core();
        let plan_s = plan(&core, RunnerId(0), &sandboxes, "key", "r/key");
        let Engines::One(endpoint) = &plan_s.engines else {
            panic!("{plan_s:?}");
        };
        assert_eq!(endpoint.engine.host.as_deref(), Some("unix:///other.sock"));
        assert_eq!(
            plan_s.keys,
            ["key"],
            "a shared engine: the current key only"
        );

        let vms = settings(
            "docker+machine",
            "[runners.machine]\nMachineName = \"m-%s\"\nMachineDriver = \"fakecloud\"\n",
        );
        let plan_v = plan(&core, RunnerId(0), &vms, "key", "r/key");
        assert_eq!(plan_v.engines, Engines::Machines(Vec::new()));
        assert_eq!(plan_v.keys[0], "key");

        let mut none = settings("docker+machine", "");
        none.machine = None;
        assert_eq!(
            plan(&core, RunnerId(0), &none, "key", "r/key").engines,
            Engines::None
        );
    }

    #[test]
    fn only_jobs_the_core_does_not_hold_are_strays() {
        let s = settings("docker", "");
        let mut core = core();
        let info = JobInfo {
            timeout_ms: 3_600_000,
            queued_ms: 0,
        };
        let _ = core.handle(
            T0,
            Event::JobReceived {
                runner: RunnerId(0),
                job: JobId(7),
                info,
            },
        );
        let plan = plan(&core, RunnerId(0), &s, "key", "r/key");
        assert_eq!(plan.strays(&[3, 7, 9]), [3, 9]);
        assert!(plan.strays(&[7]).is_empty());
    }
}
