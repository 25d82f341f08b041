//! What workload and trace files share below both: their error type ([`WorkloadError`], with
//! the place of a mistake) and the parsers of durations and instants.

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use drover_core::Timestamp;

/// Why a workload could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum WorkloadError {
    // The OS error is the source: anyhow's `{:#}` prints it once, after this message.
    #[error("cannot read workload file {path}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Invalid(Box<Invalid>),
}

/// A mistake at a place in a workload or trace file: what, where, and what to do. It carries the
/// file's text so that a caller can show the offending line (the `drover` binary renders it like
/// its config errors); its `Display` is one line, `file:line:column: message`, and the hint.
#[derive(Debug)]
pub struct Invalid {
    pub path: PathBuf,
    pub text: Arc<str>,
    /// The byte range of the offending value in `text`.
    pub span: Range<usize>,
    pub message: String,
    pub hint: Option<String>,
    /// For a key the format does not have: the key and the keys allowed there, so that a caller can
    /// suggest the closest (then `hint` only points at the documentation).
    pub unknown_key: Option<(String, Vec<String>)>,
}

impl Invalid {
    pub(crate) fn new(
        path: &Path,
        text: &str,
        span: Range<usize>,
        message: impl Into<String>,
        hint: Option<&str>,
    ) -> Invalid {
        Invalid {
            path: path.to_path_buf(),
            text: Arc::from(text),
            span,
            message: message.into(),
            hint: hint.map(str::to_string),
            unknown_key: None,
        }
    }

    /// 1-based line and column (in characters) where the offending value starts.
    pub fn line_column(&self) -> (usize, usize) {
        line_column(&self.text, self.span.start)
    }
}

impl std::fmt::Display for Invalid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (line, column) = self.line_column();
        write!(
            f,
            "{}:{line}:{column}: {}",
            self.path.display(),
            self.message
        )?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

impl WorkloadError {
    /// An [`Invalid`] error at `span` of `text`.
    pub(crate) fn at(
        path: &Path,
        text: &str,
        span: Range<usize>,
        message: impl Into<String>,
        hint: Option<&str>,
    ) -> WorkloadError {
        WorkloadError::Invalid(Box::new(Invalid::new(path, text, span, message, hint)))
    }
}

/// 1-based line and column (in characters) of a byte offset (inside a character: of that character).
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

/// A duration as humantime writes it (`90s`, `5m`, `1h30m`, `1.5h` is not accepted), in milliseconds.
pub fn parse_duration_ms(s: &str) -> std::result::Result<u64, String> {
    let d = humantime::parse_duration(s.trim()).map_err(|e| e.to_string())?;
    u64::try_from(d.as_millis()).map_err(|_| "too long".to_string())
}

/// A duration with a unit, or a bare number of seconds (`90`, `1.5`), in milliseconds: what trace
/// columns, sweep values and command-line options take.
pub fn parse_seconds_or_duration_ms(s: &str) -> std::result::Result<u64, String> {
    match s.trim().parse::<f64>() {
        Ok(secs) if secs >= 0.0 && secs.is_finite() => Ok(libm::round(secs * 1000.0) as u64),
        Ok(_) => Err("must be a finite number ≥ 0".into()),
        Err(_) => parse_duration_ms(s),
    }
}

/// An RFC 3339 instant (any offset) as epoch milliseconds; instants before 1970 are refused.
pub fn parse_instant(s: &str) -> std::result::Result<Timestamp, String> {
    let t = chrono::DateTime::parse_from_rfc3339(s.trim()).map_err(|e| e.to_string())?;
    u64::try_from(t.timestamp_millis())
        .map(Timestamp)
        .map_err(|_| "before 1970".to_string())
}
