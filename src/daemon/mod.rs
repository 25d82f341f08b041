//! The production driver: `drover run`.
//!
//! One `select!` loop turns coordinator answers, executor and provider results, the core's timer,
//! signals and config-file changes into events; each event is journaled, then handled by the core,
//! then its commands are carried out as tasks whose results come back as events. The driver is the
//! only place that reads the clock.

pub mod adapters;
mod artifacts;
mod build_spec;
mod cache;
mod clock;
mod concurrency;
mod coordinator;
mod driver;
mod expand;
mod jobs;
mod machines;
mod metrics;
mod short_token;
mod signals;
mod sources;
pub mod state_dir;
pub mod status;

use drover_core::{Event, RunnerId};
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
}
