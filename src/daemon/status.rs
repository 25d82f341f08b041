//! `status.json` in the state directory: what the daemon is doing, for `drover status`.

use drover_core::Core;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    pub version: String,
    pub config: String,
    pub started_at: String,
    pub updated_at: String,
    pub shutdown: String,
    pub runners: Vec<RunnerStatus>,
    pub machines: Vec<MachineStatus>,
    pub jobs: Vec<JobStatus>,
    pub anomalies: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunnerStatus {
    pub name: String,
    pub limit: u32,
    pub idle_count: u32,
    /// Idle machines (docker+machine) or idle job slots (docker-autoscaler) kept now.
    pub idle_target: u32,
    pub period: Option<usize>,
    pub creating: u32,
    pub idle: u32,
    pub busy: u32,
    pub removing: u32,
    pub queued: u32,
    pub running: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MachineStatus {
    pub name: String,
    pub runner: String,
    pub state: String,
    pub jobs_run: u32,
    pub created_at: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobStatus {
    pub id: u64,
    pub runner: String,
    pub state: String,
    pub machine: Option<String>,
    pub since: String,
}

impl Status {
    pub fn of(core: &Core, config: &str, started_at: &str) -> Status {
        let s = core.state();
        let runner_name = |r: drover_core::RunnerId| {
            s.runner(r)
                .map(|r| r.config.name.clone())
                .unwrap_or_default()
        };
        Status {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            config: config.to_string(),
            started_at: started_at.to_string(),
            updated_at: s.now().to_string(),
            shutdown: match s.shutdown() {
                drover_core::state::Shutdown::None => "running".into(),
                drover_core::state::Shutdown::Graceful { .. } => "draining".into(),
                drover_core::state::Shutdown::Forceful { .. } => "stopping".into(),
            },
            runners: s
                .runners()
                .iter()
                .filter(|r| !r.retired)
                .map(|r| RunnerStatus {
                    name: r.config.name.clone(),
                    limit: r.config.limit,
                    idle_count: r.policy().values.idle_count,
                    idle_target: r.idle_target(),
                    period: r.policy().period,
                    creating: r.counts.creating,
                    idle: r.counts.idle,
                    busy: r.counts.busy,
                    removing: r.counts.removing,
                    queued: r.counts.queued,
                    running: r.counts.running,
                })
                .collect(),
            machines: s
                .machines()
                .into_iter()
                .map(|(_, m)| MachineStatus {
                    name: m.name.clone(),
                    runner: runner_name(m.runner),
                    state: m.state.as_str().to_string(),
                    jobs_run: m.used_count,
                    created_at: m.created_at.to_string(),
                })
                .collect(),
            jobs: s
                .jobs()
                .into_iter()
                .map(|(id, j)| {
                    let (state, machine, since) = match j.state {
                        drover_core::state::JobState::Queued { .. } => {
                            ("queued", None, j.received_at)
                        }
                        drover_core::state::JobState::Running {
                            machine,
                            started_at,
                        } => (
                            "running",
                            machine.and_then(|m| s.machine(m)).map(|m| m.name.clone()),
                            started_at,
                        ),
                    };
                    JobStatus {
                        id: id.0,
                        runner: runner_name(j.runner),
                        state: state.into(),
                        machine,
                        since: since.to_string(),
                    }
                })
                .collect(),
            anomalies: s.anomalies().total(),
        }
    }
}
