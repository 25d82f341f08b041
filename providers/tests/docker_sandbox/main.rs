//! The `docker` provider against the real Docker engine. Without an engine these tests say
//! "SKIPPED" on stderr, except in CI (`CI` set), where they fail.

mod conformance;
mod provider;
mod support;
