//! drover's journal: the inputs of the scheduling core, durably, so a day can be replayed exactly.
//!
//! File layout: an 8-byte magic, a little-endian `u16` format version, then frames. A frame is a
//! little-endian `u32` payload length, the payload's IEEE CRC-32, and the payload: one bincode-encoded
//! [`Frame`]. The first frame is always a [`Frame::Header`] holding the config in force; then come
//! events (inputs only: commands are re-derived on replay) and, now and then, snapshots of the whole
//! core so that recovery does not replay from the beginning of time.
//!
//! A crash mid-write leaves a torn last frame: it is detected and truncated, never fatal. Damage
//! followed by intact frames is not a crash: it is reported with its offset and nothing is truncated.

mod format;
mod reader;
mod replay;
mod writer;

pub use format::{FORMAT_VERSION, Frame, Header, MAGIC, digest_for};
pub use reader::{Journal, TornTail, read};
pub use replay::{Divergence, Replay, Replayed, Summary, command_kind, recover, replay};
pub use writer::Writer;

use std::path::PathBuf;

/// Why a journal could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a drover journal (bad magic); journals start with {magic:?}", magic = String::from_utf8_lossy(MAGIC))]
    NotAJournal { path: PathBuf },
    #[error(
        "{path} was written in journal format {found}, newer than the {supported} this drover reads; \
         use a newer drover to replay it"
    )]
    NewerFormat {
        path: PathBuf,
        found: u16,
        supported: u16,
    },
    #[error(
        "{path} is corrupt at byte offset {offset}: {reason}; intact frames follow, so this is not a torn \
         write — keep the file for inspection and move it aside to start afresh"
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        reason: String,
    },
    #[error("{path}: the first frame at offset {offset} is not a header")]
    MissingHeader { path: PathBuf, offset: u64 },
    #[error("encoding a journal frame failed: {0}")]
    Encode(#[from] bincode::error::EncodeError),
    #[error("decoding the snapshot at offset {offset} failed: {reason}")]
    Snapshot { offset: u64, reason: String },
}
