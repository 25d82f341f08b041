//! Reading a journal: frames, torn tails and damage.

use std::path::Path;

use crate::JournalError;
use crate::format::{FORMAT_VERSION, FRAME_HEAD, Frame, Header, MAGIC, MAX_FRAME};

/// A journal read into memory.
#[derive(Clone, Debug)]
pub struct Journal {
    pub header: Header,
    pub format: u16,
    /// Every frame after the header, with its byte offset.
    pub frames: Vec<(u64, Frame)>,
    /// The end of the last intact frame.
    pub valid_len: u64,
    /// A torn last frame (a crash mid-write), if any: everything from `offset` on is garbage.
    pub torn_tail: Option<TornTail>,
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct TornTail {
    pub offset: u64,
    pub len: u64,
}

const PREAMBLE: usize = MAGIC.len() + 2;

/// Reads a whole journal. A torn tail is reported in [`Journal::torn_tail`], not as an error.
pub fn read(path: &Path) -> Result<Journal, JournalError> {
    let bytes = std::fs::read(path).map_err(|source| JournalError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse(&bytes, path)
}

pub(crate) fn parse(bytes: &[u8], path: &Path) -> Result<Journal, JournalError> {
    if bytes.len() < PREAMBLE || &bytes[..MAGIC.len()] != MAGIC {
        return Err(JournalError::NotAJournal {
            path: path.to_path_buf(),
        });
    }
    let format = u16::from_le_bytes([bytes[8], bytes[9]]);
    if format > FORMAT_VERSION {
        return Err(JournalError::NewerFormat {
            path: path.to_path_buf(),
            found: format,
            supported: FORMAT_VERSION,
        });
    }
    let mut offset = PREAMBLE;
    let mut frames = Vec::new();
    let mut torn_tail = None;
    while offset < bytes.len() {
        match frame_at(bytes, offset) {
            Ok((frame, next)) => {
                frames.push((offset as u64, frame));
                offset = next;
            }
            Err(reason) => {
                if let Some(intact) = next_intact_frame(bytes, offset + 1) {
                    return Err(JournalError::Corrupt {
                        path: path.to_path_buf(),
                        offset: offset as u64,
                        reason: format!("{reason} (an intact frame follows at offset {intact})"),
                    });
                }
                torn_tail = Some(TornTail {
                    offset: offset as u64,
                    len: (bytes.len() - offset) as u64,
                });
                break;
            }
        }
    }
    let valid_len = torn_tail.map_or(bytes.len() as u64, |t| t.offset);
    let mut frames = frames.into_iter();
    let header = match frames.next() {
        Some((_, Frame::Header(h))) => h,
        Some((offset, _)) => {
            return Err(JournalError::MissingHeader {
                path: path.to_path_buf(),
                offset,
            });
        }
        // A crash before the header was complete: nothing was ever journaled.
        None => {
            return Err(JournalError::MissingHeader {
                path: path.to_path_buf(),
                offset: PREAMBLE as u64,
            });
        }
    };
    Ok(Journal {
        header,
        format,
        frames: frames.collect(),
        valid_len,
        torn_tail,
    })
}

/// Decodes the frame at `offset`, returning it and the offset after it.
fn frame_at(bytes: &[u8], offset: usize) -> Result<(Frame, usize), String> {
    let head = bytes
        .get(offset..offset + FRAME_HEAD)
        .ok_or("truncated frame header")?;
    let len = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
    let crc = u32::from_le_bytes([head[4], head[5], head[6], head[7]]);
    if len > MAX_FRAME {
        return Err(format!("frame length {len} is implausible"));
    }
    let start = offset + FRAME_HEAD;
    let payload = bytes
        .get(start..start + len as usize)
        .ok_or("frame runs past the end of the file")?;
    if crc32fast::hash(payload) != crc {
        return Err("checksum mismatch".to_string());
    }
    let (frame, used) =
        bincode::serde::decode_from_slice::<Frame, _>(payload, bincode::config::standard())
            .map_err(|e| format!("undecodable frame: {e}"))?;
    if used != payload.len() {
        return Err("frame has trailing bytes".to_string());
    }
    Ok((frame, start + len as usize))
}

/// Whether an intact frame starts anywhere at or after `from` (damage in the middle rather than a torn
/// tail). Only runs when something is already wrong.
fn next_intact_frame(bytes: &[u8], from: usize) -> Option<usize> {
    (from..bytes.len().saturating_sub(FRAME_HEAD)).find(|&o| frame_at(bytes, o).is_ok())
}
