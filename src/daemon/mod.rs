//! The production driver: `drover run`. Read in this order:
//!
//! - [`driver`]: the event loop. One `select!` turns task results, the core's timer, signals and
//!   config-file changes into events; each is journaled and handled by the core ([`ledger`]), and
//!   its commands are dispatched as spawned tasks that carry all they need.
//! - [`startup`]: recovery from the journal before the loop runs; [`late`] holds what concerns a
//!   runner whose engine did not answer at start.
//! - [`runners`]: each runner's state in one place, built by [`adapters`]; [`reload`] builds new
//!   ones off the loop.
//! - The adapters the commands go to: [`coordinator`] (job requests), [`machines`] (providers),
//!   [`jobs`] (one task per job: accept, run through the executor, trace, report), with
//!   [`build_spec`], [`cache`], [`artifacts`] and [`sources`] turning a payload into a build.
//!
//! `docs/architecture.md` shows a job's way through these modules.

pub mod adapters;
mod artifacts;
mod aws_provider;
mod build_spec;
mod builds_slots;
mod cache;
mod clock;
mod concurrency;
mod coordinator;
mod driver;
mod expand;
mod jobs;
mod late;
mod ledger;
mod machines;
mod metrics;
mod reload;
mod retry;
mod runners;
mod short_token;
mod signals;
mod sources;
mod startup;
pub mod state_dir;
pub mod status;
mod strays;

use drover_core::{CreationFailure, Event, MachineId, RunnerId};
use drover_gitlab::api::{JobResponse, UndecodableJob};

pub use driver::{RunOptions, run};

/// What adapters hand the driver.
pub enum Input {
    Event(Event),
    /// A job from GitLab: its payload is stored before the event is journaled.
    Job {
        runner: RunnerId,
        job: Box<JobResponse>,
    },
    /// A job whose payload drover cannot use: it is accepted and failed, never run, and the core
    /// hears of an answer without a job.
    Undecodable {
        runner: RunnerId,
        job: Box<UndecodableJob>,
    },
    /// An answer that names no job: logged and dropped; the core hears of an empty answer.
    Unusable {
        runner: RunnerId,
        message: String,
    },
    /// A machine's creation failed. The error (providers mask credentials in it) is kept as the
    /// runner's last before the core hears of the failure: a job the core fails for it gets it in
    /// its trace.
    CreationFailed {
        runner: RunnerId,
        machine: MachineId,
        failure: CreationFailure,
        error: String,
    },
}
