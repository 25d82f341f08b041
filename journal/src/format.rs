//! What a journal file holds.

use drover_core::{Config, Core, Event, Timestamp};
use serde::{Deserialize, Serialize};

/// The first bytes of every journal.
pub const MAGIC: &[u8; 8] = b"DROVERJ\0";

/// The format this build writes and the newest it reads. Bump it on any change to [`Frame`], to the
/// serialized core or to the core's digest.
///
/// - 1: digests are [`Core::digest_v1`] (the whole serialized core).
/// - 2: digests are [`Core::digest`] (version [`drover_core::DIGEST_VERSION`]: live state only).
/// - 3: events may be [`drover_core::Event::JobRequestAnswered`] (appended to the event enum, so
///   format-2 frames decode unchanged); digests as in 2.
/// - 4: events may be [`drover_core::Event::JobRequestUnhealthy`] (appended); snapshots end with
///   the runners' unhealthy-request runs, which older snapshots lack
///   ([`drover_core::decode_snapshot_without_unhealthy_runs`]); digests as in 2 (a run is hashed
///   only once it has begun, and never began before).
pub const FORMAT_VERSION: u16 = 4;

/// The digest a journal of `format` records for `core`: older journals replay and verify with the
/// digest they were written with.
pub fn digest_for(format: u16, core: &Core) -> u64 {
    if format <= 1 {
        core.digest_v1()
    } else {
        core.digest()
    }
}

/// Length prefix + CRC-32.
pub(crate) const FRAME_HEAD: usize = 8;

/// No frame is larger; a length beyond it is damage, not data.
pub(crate) const MAX_FRAME: u32 = 512 << 20;

/// The journal's opening frame.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// The instant the core was created; `Core::new(config, created_at)` starts the replay.
    pub created_at: Timestamp,
    /// The drover version that wrote it, for humans.
    pub drover_version: String,
    /// The config in force at `created_at` (reloads are events).
    pub config: Config,
}

/// One record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Frame {
    Header(Header),
    /// An input of the core. `seq` is the number of events handled before it and `digest_before` the
    /// core's digest just before it: replay checks both to find the first step that diverges.
    Event {
        seq: u64,
        now: Timestamp,
        event: Event,
        digest_before: u64,
    },
    /// The whole core (`drover_core::encode_snapshot`) after `seq` events; its digest for verification.
    Snapshot {
        seq: u64,
        now: Timestamp,
        digest: u64,
        core: Vec<u8>,
    },
}

pub(crate) fn encode_frame(
    frame: &Frame,
    out: &mut Vec<u8>,
) -> Result<(), bincode::error::EncodeError> {
    let start = out.len();
    out.extend_from_slice(&[0; FRAME_HEAD]);
    bincode::serde::encode_into_std_write(frame, out, bincode::config::standard())?;
    let payload = &out[start + FRAME_HEAD..];
    let len = u32::try_from(payload.len()).unwrap_or(u32::MAX);
    let crc = crc32fast::hash(payload);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    Ok(())
}
