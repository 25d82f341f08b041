//! drover's discrete-event simulator: "with this config.toml and this traffic, how long do jobs wait
//! and what does the fleet cost?"
//!
//! The real [`drover_core::Core`] is driven through the same `Event`/`Command` types as in
//! production; the simulator plays the world around it (the coordinator's job queue, the machine
//! provider, the executor) in virtual time. One seed determines everything: the same inputs and seed
//! give the same report, byte for byte, outside its `perf` block.
//!
//! ```
//! use std::{path::Path, sync::Arc};
//! use drover_core::{Config, RunnerConfig};
//! use drover_sim::{RunOptions, Scenario, Workload, run};
//!
//! let workload = Workload::parse(
//!     "jobs = 500\n[arrivals]\nkind = \"poisson\"\nrate_per_min = 2.0\n\
//!      [duration]\nkind = \"exponential\"\nmean = \"5m\"\n",
//!     Path::new("example.toml"),
//! ).unwrap();
//! let config = Config::new(20).with_runner(RunnerConfig::pool("linux", 2, 20));
//! let scenario = Scenario::new(config, Arc::new(workload), None).unwrap();
//! let result = run(&scenario, &RunOptions::default()).unwrap();
//! assert_eq!(result.report.jobs, 500);
//! ```

mod arrivals;
pub mod dispatch;
pub mod dist;
mod engine;
pub mod overload;
mod parse;
pub mod plot;
mod queue;
mod recorded;
pub mod replicate;
pub mod report;
mod routing;
pub mod stats;
pub mod sweep;
mod trace;
mod units;
pub mod workload;

pub use engine::{
    NoObserver, Observer, RunOptions, RunResult, STOP_DELAY_MS, Scenario, run, run_observed,
};
pub use recorded::{RecordedError, Recorder};
pub use report::Report;
pub use stats::SeriesPoint;
pub use workload::{Workload, WorkloadError};

use drover_core::Timestamp;

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("invalid config: {0}")]
    Config(#[from] drover_core::ConfigError),
    #[error("the config has no [[runners]] to simulate")]
    NoRunners,
    #[error("runner {name:?} is not in the config; it has {}", list(known))]
    UnknownRunner { name: String, known: Vec<String> },
    #[error(
        "{at}: [shares] names runner {name:?}, which the config does not have (it has {})",
        list(known)
    )]
    UnknownShare {
        at: String,
        name: String,
        known: Vec<String>,
    },
    #[error(
        "{at}: the trace names runner {name:?}, which the config does not have (it has {})",
        list(known)
    )]
    UnknownTraceRunner {
        at: String,
        name: String,
        known: Vec<String>,
    },
    #[error(
        "the config has several runners ({}) and {what}: say where jobs go\n  \
         hint: pick one with --runner NAME, or add [shares] to the workload (runner name = weight)",
        list(known)
    )]
    NeedRouting { what: String, known: Vec<String> },
    #[error(
        "[shares] gives no jobs to the simulated runner(s) {}; give them a weight above 0",
        list(runners)
    )]
    NoTraffic { runners: Vec<String> },
    #[error(
        "the scheduling core kept asking to be woken at {at} without time passing; this is a bug in drover"
    )]
    Stalled { at: Timestamp },
    #[error(transparent)]
    Sweep(#[from] sweep::SweepError),
    #[error("interrupted before any run finished")]
    Interrupted,
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        return "none".into();
    }
    names
        .iter()
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ")
}
