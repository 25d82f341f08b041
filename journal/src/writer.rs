//! Appending to a journal with write-ahead durability.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use drover_core::{Core, Event, Timestamp};

use crate::JournalError;
use crate::format::{FORMAT_VERSION, Frame, Header, MAGIC, digest_for, encode_frame};
use crate::reader::{Journal, parse};

/// An open journal. Every append is flushed to stable storage before it returns (when `sync` is on),
/// so an event is durable before the core acts on it.
pub struct Writer {
    file: File,
    path: PathBuf,
    buf: Vec<u8>,
    sync: bool,
    events_since_snapshot: u64,
    len: u64,
    /// The file's format: an older journal opened for appending keeps its own digests.
    format: u16,
}

impl Writer {
    /// Creates a new journal (failing if the file exists) holding `header`.
    pub fn create(path: &Path, header: &Header, sync: bool) -> Result<Writer, JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .map_err(io)?;
        let mut w = Writer {
            file,
            path: path.to_path_buf(),
            buf: Vec::new(),
            sync,
            events_since_snapshot: 0,
            len: 0,
            format: FORMAT_VERSION,
        };
        w.buf.extend_from_slice(MAGIC);
        w.buf.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        encode_frame(&Frame::Header(header.clone()), &mut w.buf)?;
        w.flush()?;
        if sync {
            sync_dir(path)?;
        }
        Ok(w)
    }

    /// Opens an existing journal for appending. A torn tail is truncated (see [`Journal::torn_tail`]
    /// in the returned contents to warn about it); any other damage is an error.
    pub fn open(path: &Path, sync: bool) -> Result<(Writer, Journal), JournalError> {
        let io = |source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        };
        let bytes = std::fs::read(path).map_err(io)?;
        let journal = parse(&bytes, path)?;
        let file = OpenOptions::new().write(true).open(path).map_err(io)?;
        if journal.torn_tail.is_some() {
            file.set_len(journal.valid_len).map_err(io)?;
            file.sync_all().map_err(io)?;
        }
        let since = journal
            .frames
            .iter()
            .rev()
            .take_while(|(_, f)| !matches!(f, Frame::Snapshot { .. }))
            .count();
        let mut w = Writer {
            file,
            path: path.to_path_buf(),
            buf: Vec::new(),
            sync,
            events_since_snapshot: since as u64,
            len: journal.valid_len,
            format: journal.format,
        };
        use std::io::Seek;
        w.file
            .seek(std::io::SeekFrom::Start(journal.valid_len))
            .map_err(io)?;
        Ok((w, journal))
    }

    /// The digest this journal records for `core` (see [`digest_for`]): pass it to
    /// [`Writer::append_event`].
    pub fn digest_of(&self, core: &Core) -> u64 {
        digest_for(self.format, core)
    }

    /// Appends an event before the core handles it.
    pub fn append_event(
        &mut self,
        seq: u64,
        now: Timestamp,
        event: &Event,
        digest_before: u64,
    ) -> Result<(), JournalError> {
        encode_frame(
            &Frame::Event {
                seq,
                now,
                event: event.clone(),
                digest_before,
            },
            &mut self.buf,
        )?;
        self.events_since_snapshot += 1;
        self.flush()
    }

    /// Appends a snapshot of the whole core.
    pub fn append_snapshot(&mut self, core: &Core) -> Result<(), JournalError> {
        let frame = snapshot_frame(core, self.format)?;
        encode_frame(&frame, &mut self.buf)?;
        self.events_since_snapshot = 0;
        self.flush()
    }

    /// Events appended since the last snapshot (or since opening, counting the file's own).
    pub fn events_since_snapshot(&self) -> u64 {
        self.events_since_snapshot
    }

    /// Bytes in the file.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn flush(&mut self) -> Result<(), JournalError> {
        let io = |source| JournalError::Io {
            path: self.path.clone(),
            source,
        };
        self.file.write_all(&self.buf).map_err(io)?;
        if self.sync {
            self.file.sync_data().map_err(io)?;
        }
        self.len += self.buf.len() as u64;
        self.buf.clear();
        Ok(())
    }

    /// Replaces the journal at `path` by a new one that starts from a snapshot of `core`: old frames
    /// behind the snapshot are dropped. Written beside it and renamed over it, so a crash leaves one or
    /// the other, never a mix.
    pub fn compact(
        path: &Path,
        core: &Core,
        drover_version: &str,
        sync: bool,
    ) -> Result<Writer, JournalError> {
        let tmp = path.with_extension("compacting");
        let _ = std::fs::remove_file(&tmp);
        let header = Header {
            created_at: core.state().now(),
            drover_version: drover_version.to_string(),
            config: core.config().clone(),
        };
        let mut w = Writer::create(&tmp, &header, sync)?;
        w.append_snapshot(core)?;
        std::fs::rename(&tmp, path).map_err(|source| JournalError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        if sync {
            sync_dir(path)?;
        }
        w.path = path.to_path_buf();
        Ok(w)
    }
}

pub(crate) fn snapshot_frame(core: &Core, format: u16) -> Result<Frame, JournalError> {
    Ok(Frame::Snapshot {
        seq: core.state().seq(),
        now: core.state().now(),
        digest: digest_for(format, core),
        core: drover_core::encode_snapshot(core)?,
    })
}

/// Makes a created or renamed file's directory entry durable.
fn sync_dir(path: &Path) -> Result<(), JournalError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| JournalError::Io {
            path: dir.to_path_buf(),
            source,
        })
}
