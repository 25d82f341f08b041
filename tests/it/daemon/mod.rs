//! `drover run` end to end: the real binary against the fake GitLab and the real Docker engine.
//!
//! Every test runs its own daemon with its own runner (short token, machine prefix), so the tests
//! run in parallel without seeing each other's machines. See `harness.rs`.

#[cfg(feature = "aws")]
mod aws;
mod cache;
mod faults;
mod harness;
mod jobs;
mod kill9;
mod ops;
mod payloads;
mod pipeline;
mod polling;
mod pool;
mod recovery;
mod registry;
mod signals;
mod sim_to_real;
