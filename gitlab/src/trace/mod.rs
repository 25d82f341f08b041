//! The job log: redaction, size limit and checksum ([`TraceBuffer`]), and its incremental upload
//! with the final update ([`TraceUploader`]).

mod mask;
mod upload;

use std::sync::{Arc, Mutex, MutexGuard};

pub use upload::{
    FinalOutcome, JobResult, RemoteState, TickOutcome, TraceUploader, UploaderConfig,
};

use serde::{Deserialize, Serialize};

use crate::api::{JobOutput, JobResponse};
use crate::mask::TOKEN_PREFIXES;

/// GitLab Runner's default `output_limit`: 4096 KB.
pub const DEFAULT_OUTPUT_LIMIT_KB: u64 = 4096;

/// What to redact and how much to keep.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceOptions {
    /// Bytes to store before the log is cut (`output_limit` × 1024).
    pub limit_bytes: u64,
    /// Exact values replaced by `[MASKED]`.
    pub phrases: Vec<String>,
    /// Token prefixes whose tokens become `<prefix>[MASKED]`.
    pub token_prefixes: Vec<String>,
}

impl TraceOptions {
    /// For a job: its masked variables and job token, GitLab's token prefixes plus the job's
    /// `features.token_mask_prefixes`, and the runner's `output_limit` in KB (`None` or 0: 4096).
    pub fn for_job(job: &JobResponse, output_limit_kb: Option<u64>) -> Self {
        let mut token_prefixes: Vec<String> =
            TOKEN_PREFIXES.iter().map(|p| p.to_string()).collect();
        token_prefixes.extend(job.features.token_mask_prefixes.iter().cloned());
        let kb = output_limit_kb
            .filter(|k| *k > 0)
            .unwrap_or(DEFAULT_OUTPUT_LIMIT_KB);
        TraceOptions {
            limit_bytes: kb.saturating_mul(1024),
            phrases: job.masked_values(),
            token_prefixes,
        }
    }
}

/// The message GitLab Runner appends when the log reaches its limit.
pub fn limit_exceeded_message(limit_bytes: u64) -> String {
    format!(
        "\n\x1b[33;1mJob's log exceeded limit of {limit_bytes} bytes.\n\
         Job execution will continue but no more output will be collected.\x1b[0;m\n"
    )
}

/// The bytes a [`TraceBuffer`]'s redaction holds back (see [`TraceBuffer::checkpoint`]).
/// Serializable; `{:?}` shows sizes only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceCheckpoint {
    redactor: mask::RedactorState,
}

/// A [`TraceCheckpoint`] from a buffer with other token prefixes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the trace checkpoint belongs to a job with other token prefixes")]
pub struct CheckpointMismatch;

/// The stored job log. Writes are redacted on the way in; what is stored is final (only the
/// redaction tail is held back until [`TraceBuffer::finish`]).
#[derive(Debug, Clone)]
pub struct TraceBuffer {
    redactor: mask::Redactor,
    limit: u64,
    limit_reached: bool,
    data: Vec<u8>,
    crc: crc32fast::Hasher,
    finished: bool,
    /// Bytes an uploader may send (`None`: all); see [`TraceBuffer::limit_uploads_to`].
    upload_limit: Option<u64>,
}

impl TraceBuffer {
    pub fn new(options: &TraceOptions) -> Self {
        TraceBuffer {
            redactor: mask::Redactor::new(&options.phrases, &options.token_prefixes),
            limit: options.limit_bytes,
            limit_reached: false,
            data: Vec::new(),
            crc: crc32fast::Hasher::new(),
            finished: false,
            upload_limit: None,
        }
    }

    /// A buffer that continues a log persisted before a restart. `stored` must be bytes this
    /// buffer type produced (already redacted); its checksum and size are recomputed. What the
    /// redaction held back at that point is lost unless [`TraceBuffer::restore`] follows.
    pub fn resume(options: &TraceOptions, stored: Vec<u8>) -> Self {
        let mut buffer = TraceBuffer::new(options);
        buffer.crc.update(&stored);
        buffer.limit_reached = stored.len() as u64 >= buffer.limit;
        buffer.data = stored;
        buffer
    }

    /// Continues the redaction from `checkpoint`, taken together with the `stored` bytes this
    /// buffer was resumed with (call it before any write): a secret split across the restart is
    /// still masked and no byte held back is lost. A checkpoint of a buffer with other token
    /// prefixes is refused and nothing changes.
    pub fn restore(&mut self, checkpoint: &TraceCheckpoint) -> Result<(), CheckpointMismatch> {
        if self.redactor.restore(&checkpoint.redactor) {
            Ok(())
        } else {
            Err(CheckpointMismatch)
        }
    }

    /// What redaction holds back right now. Persist it in the same write as [`TraceBuffer::bytes`]
    /// to resume exactly with [`TraceBuffer::restore`]. It may hold the start of a secret: store
    /// it as privately as the job payload.
    pub fn checkpoint(&self) -> TraceCheckpoint {
        TraceCheckpoint {
            redactor: self.redactor.state(),
        }
    }

    /// Appends output of the job. After [`TraceBuffer::finish`] or past the limit it is dropped.
    pub fn write(&mut self, chunk: &[u8]) {
        if self.finished || self.limit_reached {
            return;
        }
        let mut redacted = Vec::with_capacity(chunk.len());
        self.redactor.push(chunk, &mut redacted);
        self.store(&redacted);
    }

    /// Flushes what redaction held back; no more writes are taken.
    pub fn finish(&mut self) {
        if self.finished {
            return;
        }
        if !self.limit_reached {
            let mut redacted = Vec::new();
            self.redactor.finish(&mut redacted);
            self.store(&redacted);
        }
        self.finished = true;
    }

    fn store(&mut self, bytes: &[u8]) {
        if bytes.is_empty() || self.limit_reached {
            return;
        }
        let capacity = self.limit.saturating_sub(self.data.len() as u64);
        if (bytes.len() as u64) < capacity {
            self.append(bytes);
            return;
        }
        // As GitLab Runner: keep what fits (without splitting a UTF-8 character), then the notice.
        let cut = utf8_safe_cut(bytes, capacity as usize);
        self.append(&bytes[..cut]);
        self.append(limit_exceeded_message(self.limit).as_bytes());
        self.limit_reached = true;
    }

    fn append(&mut self, bytes: &[u8]) {
        self.crc.update(bytes);
        self.data.extend_from_slice(bytes);
    }

    /// Holds uploads back to the first `len` bytes, for an owner that stores the trace itself:
    /// GitLab then never holds bytes a crash could take from the owner's copy, and a resumed
    /// upload always continues the owner's copy. Raise it as bytes are stored;
    /// [`TraceUploader::finish`] lifts it (store the finished trace before calling it).
    pub fn limit_uploads_to(&mut self, len: u64) {
        self.upload_limit = Some(len);
    }

    /// The bytes an uploader may send now: all of them, or up to the upload limit.
    pub fn uploadable(&self) -> u64 {
        self.upload_limit.map_or(self.len(), |l| l.min(self.len()))
    }

    fn lift_upload_limit(&mut self) {
        self.upload_limit = None;
    }

    /// Bytes stored.
    pub fn len(&self) -> u64 {
        self.data.len() as u64
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Everything stored.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// Up to `max` stored bytes from `offset`.
    pub fn slice(&self, offset: u64, max: usize) -> &[u8] {
        let start = (offset as usize).min(self.data.len());
        let end = start.saturating_add(max).min(self.data.len());
        &self.data[start..end]
    }

    /// `crc32:%08x` (IEEE) of everything stored.
    pub fn checksum(&self) -> String {
        format!("crc32:{:08x}", self.crc.clone().finalize())
    }

    /// `output` for a job update.
    pub fn output(&self) -> JobOutput {
        JobOutput {
            checksum: self.checksum(),
            bytesize: self.len(),
        }
    }

    pub fn limit_reached(&self) -> bool {
        self.limit_reached
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }
}

/// The largest cut ≤ `capacity` that does not split a multi-byte UTF-8 character.
fn utf8_safe_cut(bytes: &[u8], capacity: usize) -> usize {
    let mut cut = capacity.min(bytes.len());
    // At most 3 continuation bytes can precede a cut inside a character.
    for _ in 0..4 {
        if cut == 0 || cut == bytes.len() || (bytes[cut] & 0xC0) != 0x80 {
            break;
        }
        cut -= 1;
    }
    cut
}

/// A [`TraceBuffer`] shared between the executor (writing) and the uploader (reading).
#[derive(Debug, Clone)]
pub struct SharedTrace(Arc<Mutex<TraceBuffer>>);

impl SharedTrace {
    pub fn new(buffer: TraceBuffer) -> Self {
        SharedTrace(Arc::new(Mutex::new(buffer)))
    }

    /// Locks the buffer. A writer that panicked mid-write leaves it consistent (every method
    /// completes its update before returning), so a poisoned lock is recovered.
    pub fn lock(&self) -> MutexGuard<'_, TraceBuffer> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn write(&self, chunk: &[u8]) {
        self.lock().write(chunk);
    }

    pub fn finish(&self) {
        self.lock().finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(limit: u64, phrases: &[&str]) -> TraceOptions {
        TraceOptions {
            limit_bytes: limit,
            phrases: phrases.iter().map(|s| s.to_string()).collect(),
            token_prefixes: TOKEN_PREFIXES.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn checksum_and_size_cover_stored_bytes() {
        let mut b = TraceBuffer::new(&options(1 << 20, &[]));
        b.write(b"hello ");
        b.write(b"world\n");
        b.finish();
        assert_eq!(b.bytes(), b"hello world\n");
        assert_eq!(b.len(), 12);
        assert_eq!(
            b.checksum(),
            format!("crc32:{:08x}", crc32fast::hash(b"hello world\n"))
        );
        b.write(b"late");
        assert_eq!(b.len(), 12, "writes after finish are dropped");
    }

    #[test]
    fn limit_cuts_and_appends_gitlabs_message_once() {
        let mut b = TraceBuffer::new(&options(10, &[]));
        b.write(b"12345");
        b.write(b"67890abc");
        b.write(b"more");
        b.finish();
        let expected = format!("1234567890{}", limit_exceeded_message(10));
        assert_eq!(String::from_utf8(b.bytes().to_vec()).unwrap(), expected);
        assert!(expected.contains(
            "Job's log exceeded limit of 10 bytes.\nJob execution will continue but no more output will be collected."
        ));
        assert!(b.limit_reached());
        assert_eq!(
            b.checksum(),
            format!("crc32:{:08x}", crc32fast::hash(expected.as_bytes()))
        );
    }

    #[test]
    fn limit_never_splits_a_character() {
        let mut b = TraceBuffer::new(&options(4, &[]));
        b.write("ab€".as_bytes()); // 'a' 'b' then 3 bytes: the cut at 4 would split '€'
        assert!(
            b.bytes().starts_with(b"ab\n"),
            "{:?}",
            String::from_utf8_lossy(b.bytes())
        );
    }

    #[test]
    fn a_checkpoint_resumes_redaction_exactly_at_every_split() {
        let opts = options(1 << 20, &["s3cr3t-value", "s3cr3t-value-long"]);
        let input =
            "a s3cr3t-value b s3cr3t-value-long c glrt-AbC_d.e f \u{20ac} s3cr3t-valu".as_bytes();
        let mut whole = TraceBuffer::new(&opts);
        whole.write(input);
        whole.finish();
        for split in 0..=input.len() {
            let mut first = TraceBuffer::new(&opts);
            first.write(&input[..split]);
            let json = serde_json::to_string(&first.checkpoint()).unwrap();
            let checkpoint: TraceCheckpoint = serde_json::from_str(&json).unwrap();
            let mut resumed = TraceBuffer::resume(&opts, first.bytes().to_vec());
            resumed.restore(&checkpoint).unwrap();
            resumed.write(&input[split..]);
            resumed.finish();
            assert_eq!(
                String::from_utf8_lossy(resumed.bytes()),
                String::from_utf8_lossy(whole.bytes()),
                "split at {split}"
            );
            assert_eq!(resumed.checksum(), whole.checksum(), "split at {split}");
        }
        let text = String::from_utf8_lossy(whole.bytes()).into_owned();
        assert_eq!(
            text,
            "a [MASKED] b [MASKED] c glrt-[MASKED] f \u{20ac} s3cr3t-valu"
        );
    }

    #[test]
    fn a_checkpoint_never_shows_what_it_holds_and_fits_only_its_own_options() {
        let opts = options(1 << 20, &["s3cr3t-value"]);
        let mut b = TraceBuffer::new(&opts);
        b.write(b"x s3cr3t-");
        let checkpoint = b.checkpoint();
        assert!(!format!("{checkpoint:?}").contains("s3cr3t"));
        let other = TraceOptions {
            token_prefixes: vec!["zz-".into()],
            ..opts.clone()
        };
        let mut resumed = TraceBuffer::resume(&other, b.bytes().to_vec());
        assert_eq!(resumed.restore(&checkpoint), Err(CheckpointMismatch));
    }

    #[test]
    fn resume_continues_checksum_and_limit() {
        let opts = options(1 << 20, &["secret-value"]);
        let mut whole = TraceBuffer::new(&opts);
        whole.write(b"first part\n");
        let stored = whole.bytes().to_vec();
        whole.write(b"second secret-value\n");
        whole.finish();

        let mut resumed = TraceBuffer::resume(&opts, stored);
        resumed.write(b"second secret-value\n");
        resumed.finish();
        assert_eq!(resumed.bytes(), whole.bytes());
        assert_eq!(resumed.checksum(), whole.checksum());
        assert!(!String::from_utf8_lossy(resumed.bytes()).contains("secret-value"));
    }
}
