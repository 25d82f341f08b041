//! drover-docker against the real Docker engine. Without an engine these tests say "SKIPPED" on
//! stderr, except in CI (`CI` set), where they fail.

mod archive;
mod artifacts;
mod containers;
mod environment;
mod git;
mod jobs;
mod registry;
mod resume;
mod services;
mod support;
mod warm;
