//! Replaying a journal through the core: verification (`drover replay`) and recovery (`drover run`).

use std::collections::BTreeMap;

use drover_core::{Command, Core, Event, Step, Timestamp};

use crate::JournalError;
use crate::format::{Frame, digest_for};
use crate::reader::Journal;

/// The first place a replay disagreed with what was recorded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Divergence {
    /// Byte offset of the frame.
    pub offset: u64,
    /// Events handled before it.
    pub seq: u64,
    pub what: &'static str,
    pub recorded: u64,
    pub replayed: u64,
}

/// What a journal contained, for `drover replay`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Summary {
    pub events: u64,
    pub events_by_kind: BTreeMap<&'static str, u64>,
    pub commands_by_kind: BTreeMap<&'static str, u64>,
    pub snapshots: u64,
    pub first: Option<Timestamp>,
    pub last: Option<Timestamp>,
}

/// The outcome of a verified replay.
pub struct Replay {
    pub core: Core,
    pub summary: Summary,
    /// Digests compared (one per event, one per snapshot that could be checked).
    pub digests_checked: u64,
    pub divergences: Vec<Divergence>,
}

/// One replayed event, as [`replay`] shows it to its caller.
pub struct Replayed<'a> {
    /// Byte offset of the event's frame.
    pub offset: u64,
    pub now: Timestamp,
    pub event: &'a Event,
    /// What the core made of it.
    pub step: &'a Step,
    /// The core just after handling it (for invariant checks).
    pub core: &'a Core,
}

/// Replays every frame from the beginning, checking each recorded digest against the replayed core.
/// `on_step` sees every event with the commands it produced (the simulator rebuilds traffic with it)
/// and the core after it.
pub fn replay(
    journal: &Journal,
    mut on_step: impl FnMut(Replayed<'_>),
) -> Result<Replay, JournalError> {
    let header = &journal.header;
    let mut core = Core::new(header.config.clone(), header.created_at);
    let mut summary = Summary::default();
    let mut divergences = Vec::new();
    let mut digests_checked = 0;
    for (offset, frame) in &journal.frames {
        match frame {
            Frame::Header(_) => {}
            Frame::Snapshot {
                seq,
                digest,
                core: bytes,
                ..
            } => {
                summary.snapshots += 1;
                if *seq == core.state().seq() && *seq > 0 {
                    digests_checked += 1;
                    let replayed = digest_for(journal.format, &core);
                    if replayed != *digest {
                        divergences.push(Divergence {
                            offset: *offset,
                            seq: *seq,
                            what: "snapshot digest",
                            recorded: *digest,
                            replayed,
                        });
                    }
                } else {
                    // A compacted journal starts from a snapshot: continue from it.
                    core = decode(bytes, *offset, journal.format)?;
                }
            }
            Frame::Event {
                seq,
                now,
                event,
                digest_before,
            } => {
                if *seq != core.state().seq() {
                    divergences.push(Divergence {
                        offset: *offset,
                        seq: *seq,
                        what: "event sequence",
                        recorded: *seq,
                        replayed: core.state().seq(),
                    });
                }
                digests_checked += 1;
                let replayed = digest_for(journal.format, &core);
                if replayed != *digest_before {
                    divergences.push(Divergence {
                        offset: *offset,
                        seq: *seq,
                        what: "digest before event",
                        recorded: *digest_before,
                        replayed,
                    });
                }
                summary.events += 1;
                *summary.events_by_kind.entry(event.kind()).or_default() += 1;
                summary.first.get_or_insert(*now);
                summary.last = Some(*now);
                let step = core.handle(*now, event.clone());
                for c in &step.commands {
                    *summary.commands_by_kind.entry(command_kind(c)).or_default() += 1;
                }
                on_step(Replayed {
                    offset: *offset,
                    now: *now,
                    event,
                    step: &step,
                    core: &core,
                });
            }
        }
    }
    Ok(Replay {
        core,
        summary,
        digests_checked,
        divergences,
    })
}

/// Rebuilds the core for a restart: from the last snapshot, then the events after it. The commands of
/// replayed events are dropped: what was in flight is re-issued by handling `Event::Resumed`.
pub fn recover(journal: &Journal) -> Result<Core, JournalError> {
    let header = &journal.header;
    let last_snapshot =
        journal
            .frames
            .iter()
            .enumerate()
            .rev()
            .find_map(|(i, (offset, f))| match f {
                Frame::Snapshot { core: bytes, .. } => Some((i, *offset, bytes)),
                _ => None,
            });
    let (mut core, rest) = match last_snapshot {
        Some((i, offset, bytes)) => (
            decode(bytes, offset, journal.format)?,
            &journal.frames[i + 1..],
        ),
        None => (
            Core::new(header.config.clone(), header.created_at),
            &journal.frames[..],
        ),
    };
    for (_, frame) in rest {
        if let Frame::Event { now, event, .. } = frame {
            let _ = core.handle(*now, event.clone());
        }
    }
    Ok(core)
}

fn decode(bytes: &[u8], offset: u64, format: u16) -> Result<Core, JournalError> {
    let decoded = if format <= 3 {
        drover_core::decode_snapshot_without_unhealthy_runs(bytes)
    } else {
        drover_core::decode_snapshot(bytes)
    };
    decoded.map_err(|e| JournalError::Snapshot {
        offset,
        reason: e.to_string(),
    })
}

/// A short, stable name for a command.
pub fn command_kind(c: &Command) -> &'static str {
    match c {
        Command::RequestJob { .. } => "request_job",
        Command::CancelRequests { .. } => "cancel_requests",
        Command::CreateMachine { .. } => "create_machine",
        Command::RemoveMachine { .. } => "remove_machine",
        Command::RunJob { .. } => "run_job",
        Command::ResumeJob { .. } => "resume_job",
        Command::CancelJob { .. } => "cancel_job",
        Command::AbortJob { .. } => "abort_job",
        Command::FailJob { .. } => "fail_job",
        Command::ListMachines { .. } => "list_machines",
        Command::Exit { .. } => "exit",
    }
}
