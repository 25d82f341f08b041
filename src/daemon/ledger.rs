//! The scheduling core behind its journal: every event is appended before the core handles it
//! (write-ahead), so a restart replays exactly what the core saw; snapshots and compaction keep
//! that replay short. The clock is read here and nowhere else in the daemon.

use anyhow::Context;
use drover_core::{Command, Core, Event, Timestamp};
use drover_journal::Writer;

use super::clock::Clock;
use super::metrics::Metrics;

/// A snapshot every this many events bounds the work of a restart.
const SNAPSHOT_EVERY: u64 = 2_000;
/// The journal is rewritten from a snapshot when it grows past this.
const COMPACT_AT_BYTES: u64 = 64 << 20;

pub struct Ledger {
    core: Core,
    journal: Writer,
    clock: Clock,
    metrics: Metrics,
}

/// What the core decided for one event.
pub struct Decided {
    pub commands: Vec<Command>,
    pub wake_at: Option<Timestamp>,
}

impl Ledger {
    pub fn new(core: Core, journal: Writer, metrics: Metrics) -> Ledger {
        let clock = Clock::new(core.state().now());
        Ledger {
            core,
            journal,
            clock,
            metrics,
        }
    }

    pub fn core(&self) -> &Core {
        &self.core
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn now(&mut self) -> Timestamp {
        self.clock.now()
    }

    /// How long until `t`, from the last reading of the clock.
    pub fn until(&self, t: Timestamp) -> std::time::Duration {
        self.clock.until(t)
    }

    /// Journals an event and hands it to the core.
    pub fn record(&mut self, event: Event) -> anyhow::Result<Decided> {
        let now = self.clock.now();
        self.journal
            .append_event(
                self.core.state().seq(),
                now,
                &event,
                self.journal.digest_of(&self.core),
            )
            .context("appending to the journal (without it drover cannot continue safely)")?;
        self.metrics.before(&self.core, now, &event);
        let step = self.core.handle(now, event);
        self.metrics.after(&self.core, now, &step.commands);
        if self.journal.events_since_snapshot() >= SNAPSHOT_EVERY {
            if self.journal.len() > COMPACT_AT_BYTES {
                self.compact()?;
            } else {
                self.journal.append_snapshot(&self.core)?;
            }
        }
        Ok(Decided {
            commands: step.commands,
            wake_at: step.wake_at,
        })
    }

    /// Rewrites the journal as one snapshot of the core.
    pub fn compact(&mut self) -> anyhow::Result<()> {
        let path = self.journal.path().to_path_buf();
        self.journal = Writer::compact(&path, &self.core, env!("CARGO_PKG_VERSION"), true)
            .map_err(|e| crate::exit::with_code(crate::exit::JOURNAL, e))?;
        Ok(())
    }

    /// At exit: a snapshot, so the next start replays nothing.
    pub fn close(&mut self) {
        if let Err(e) = self.journal.append_snapshot(&self.core) {
            tracing::error!("writing the final snapshot failed: {e}");
        }
    }
}
