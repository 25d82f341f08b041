//! drover's scheduling core: a pure, deterministic state machine.
//!
//! Events go in, commands come out. The core does no I/O, reads no clock, spawns no threads and draws
//! no OS randomness; time is an argument of every call and iteration order is deterministic. The same
//! core is driven by the production daemon, the discrete-event simulator and the property tests, and a
//! journal of its inputs replays to the same states, digest for digest.
//!
//! # The run loop
//!
//! ```
//! use drover_core::{Command, Config, Core, Event, RunnerConfig, Timestamp};
//!
//! let config = Config::new(4).with_runner(RunnerConfig::pool("linux", 2, 10));
//! let mut core = Core::new(config, Timestamp(0));
//! // 1. Hand the core an event with the current time (at start, a Tick).
//! let step = core.handle(Timestamp(0), Event::Tick);
//! // 2. Carry out every command; each result comes back later as an event.
//! let creates = step.commands.iter().filter(|c| matches!(c, Command::CreateMachine { .. })).count();
//! assert_eq!(creates, 2); // IdleCount = 2: two warm machines
//! // 3. Sleep until `step.wake_at` or the next event, whichever comes first, then go to 1.
//! ```
//!
//! Journal the event before handling it; commands are re-derived on replay.

mod command;
pub mod config;
mod digest;
mod event;
mod hash;
mod ids;
mod index;
mod invariants;
pub mod period;
mod queues;
mod record_bytes;
mod scale;
mod scale_slots;
mod scheduler;
mod slots;
mod snapshot;
pub mod state;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;
mod time;

pub use command::{Command, FailCause, RemoveReason, Step};
pub use config::{
    Config, ConfigError, Executor, MachinePolicy, RunnerConfig, SlotExtra, SlotPolicy,
};
pub use digest::DIGEST_VERSION;
pub use event::{CreationFailure, Event, FailureReason, JobInfo, Outcome, Signal};
pub use ids::{JobId, MachineId, RunnerId};
pub use invariants::Violation;
pub use period::{Period, PeriodError, PolicyValues};
pub use scheduler::{
    Core, DEFAULT_JOB_TIMEOUT, PREPARE_ATTEMPTS, RequestEnd, UNHEALTHY_LIMIT, creation_backoff,
    machine_name, removal_backoff, request_pause, unhealthy_backoff,
};
pub use snapshot::{decode_snapshot, decode_snapshot_without_unhealthy_runs, encode_snapshot};
pub use state::State;
pub use time::{Timestamp, doubling, earliest, millis};
