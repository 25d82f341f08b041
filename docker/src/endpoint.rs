//! Where a job runs: a machine's Docker engine and the sandbox objects its jobs attach to. Machine
//! providers (the `drover-providers` crate) make these; the executor runs jobs on them.

use crate::engine::EngineConfig;

/// Where a machine's jobs run: its Docker engine, and the sandbox objects jobs attach to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MachineEndpoint {
    /// The machine's name; `None` for jobs of runners without machines (the plain `docker`
    /// executor), which run on `engine` directly.
    pub machine: Option<String>,
    pub engine: EngineConfig,
    /// A network the machine's jobs and services join; `None`: each job gets its own.
    pub network: Option<String>,
    /// A volume the machine's jobs build in (kept across the machine's jobs, so `GIT_STRATEGY=fetch`
    /// reuses the working copy); `None`: each job gets its own.
    pub builds_volume: Option<String>,
}

impl MachineEndpoint {
    /// Jobs straight on an engine, without a machine (`executor = "docker"`).
    pub fn engine_only(engine: EngineConfig) -> MachineEndpoint {
        MachineEndpoint {
            machine: None,
            engine,
            network: None,
            builds_volume: None,
        }
    }
}
