//! Errors and warnings about a config file, rendered the way compilers do: the message, then
//! `--> file:line:column`, the offending line with a caret underline, and a hint.

use std::fmt::{self, Write as _};
use std::ops::Range;
use std::path::{Path, PathBuf};

/// Where something is in the config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The line's text, without its line break.
    line_text: String,
    /// How many characters the underline covers on that line (at least 1).
    width: usize,
}

impl Location {
    /// The location of the byte range `span` of `text`. A span running over several lines is
    /// underlined to the end of its first line.
    pub fn of(text: &str, span: Range<usize>) -> Location {
        let start = floor_char_boundary(text, span.start.min(text.len()));
        let end = floor_char_boundary(text, span.end.clamp(start, text.len()));
        let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
        let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
        let line_text = text[line_start..line_end]
            .trim_end_matches('\r')
            .to_string();
        let line = text[..start].matches('\n').count() + 1;
        let column = text[line_start..start].chars().count() + 1;
        let width = text[start..end.min(line_end)]
            .trim_end_matches('\r')
            .chars()
            .count()
            .max(1);
        Location {
            line,
            column,
            line_text,
            width,
        }
    }
}

fn floor_char_boundary(text: &str, mut i: usize) -> usize {
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

/// One problem (or remark) about the file: what, where, and what to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The headline: what happened.
    pub message: String,
    /// Where, if the problem has a place in the file.
    pub location: Option<Location>,
    /// A short remark printed after the underline.
    pub label: Option<String>,
    /// Further lines to list, as `(line number, text)`: e.g. every ignored key.
    pub listing: Vec<(usize, String)>,
    /// Context worth knowing.
    pub notes: Vec<String>,
    /// What to do about it.
    pub hint: Option<String>,
}

impl Diagnostic {
    pub fn new(message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            message: message.into(),
            location: None,
            label: None,
            listing: Vec::new(),
            notes: Vec::new(),
            hint: None,
        }
    }

    /// Points the diagnostic at `span` of `text`.
    pub fn at(mut self, text: &str, span: Range<usize>) -> Diagnostic {
        self.location = Some(Location::of(text, span));
        self
    }

    pub fn label(mut self, label: impl Into<String>) -> Diagnostic {
        self.label = Some(label.into());
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Diagnostic {
        self.hint = Some(hint.into());
        self
    }

    pub fn maybe_hint(mut self, hint: Option<String>) -> Diagnostic {
        self.hint = hint.or(self.hint);
        self
    }

    /// Renders the diagnostic after a `severity: ` prefix (empty for none).
    pub fn render(&self, severity: &str, origin: &Path) -> String {
        let mut out = String::new();
        self.render_into(&mut out, severity, origin);
        out
    }

    fn render_into(&self, out: &mut String, severity: &str, origin: &Path) {
        let lines = self
            .location
            .iter()
            .map(|l| l.line)
            .chain(self.listing.iter().map(|l| l.0));
        let gutter = lines.max().unwrap_or(0).to_string().len();
        let pad = " ".repeat(gutter);
        if !severity.is_empty() {
            let _ = write!(out, "{severity}: ");
        }
        out.push_str(&self.message);
        match &self.location {
            Some(loc) => {
                let _ = write!(
                    out,
                    "\n{pad}--> {}:{}:{}",
                    origin.display(),
                    loc.line,
                    loc.column
                );
                let _ = write!(out, "\n{pad} |\n{:>gutter$} | {}", loc.line, loc.line_text);
                let indent: String = loc
                    .line_text
                    .chars()
                    .take(loc.column - 1)
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                let _ = write!(out, "\n{pad} | {indent}{}", "^".repeat(loc.width));
                if let Some(label) = &self.label {
                    let _ = write!(out, " {label}");
                }
            }
            None => {
                let _ = write!(out, "\n{pad}--> {}", origin.display());
            }
        }
        if !self.listing.is_empty() {
            let _ = write!(out, "\n{pad} |");
            for (line, text) in &self.listing {
                let _ = write!(out, "\n{line:>gutter$} | {text}");
            }
        }
        let more = !self.notes.is_empty() || self.hint.is_some();
        if more && (!self.listing.is_empty() || self.location.is_some()) {
            let _ = write!(out, "\n{pad} |");
        }
        for note in &self.notes {
            let _ = write!(out, "\n{pad} = note: {note}");
        }
        if let Some(hint) = &self.hint {
            let _ = write!(out, "\n{pad} = hint: {hint}");
        }
    }
}

/// Why a config file could not be used.
#[derive(Debug)]
pub enum ConfigError {
    /// The file could not be read.
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not a valid config; every problem found is listed.
    Invalid {
        origin: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
    /// A runner lacks the `url` or `token` that `drover run` needs to talk to GitLab.
    NotRegistered {
        origin: PathBuf,
        runner: String,
        missing: &'static str,
    },
    /// A valid runner this build of drover cannot run: built without the AWS provider.
    NotRunnable {
        origin: PathBuf,
        runner: String,
        executor: &'static str,
    },
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigError::Read { path, source } => {
                write!(f, "cannot read config file {}: {source}", path.display())?;
                if source.kind() == std::io::ErrorKind::NotFound {
                    write!(
                        f,
                        "\n  = hint: check the path, or pass the file with `-c FILE` \
                         (or the CONFIG_FILE environment variable)"
                    )?;
                }
                Ok(())
            }
            ConfigError::Invalid {
                origin,
                diagnostics,
            } => {
                let mut out = String::new();
                for (i, d) in diagnostics.iter().enumerate() {
                    if i > 0 {
                        out.push_str("\n\n");
                    }
                    // The caller prints the first `error: `; the others carry their own.
                    d.render_into(&mut out, if i == 0 { "" } else { "error" }, origin);
                }
                if diagnostics.len() > 1 {
                    let _ = write!(
                        out,
                        "\n\n{} errors in {}",
                        diagnostics.len(),
                        origin.display()
                    );
                }
                f.write_str(&out)
            }
            ConfigError::NotRegistered {
                origin,
                runner,
                missing,
            } => {
                let (in_file, register) = if origin.as_os_str().is_empty() {
                    (String::new(), "drover register".to_string())
                } else {
                    let file = origin.display();
                    (format!(" in {file}"), format!("drover register -c {file}"))
                };
                write!(
                    f,
                    "runner {runner:?}{in_file} has no {missing}: it is not registered with \
                     GitLab\n  = hint: run `{register}` first, or add the runner's `url` and \
                     `token` to its [[runners]] entry"
                )
            }
            ConfigError::NotRunnable {
                origin,
                runner,
                executor,
            } => write!(
                f,
                "runner {runner:?} in {} uses executor {executor:?}, but this drover was built \
                 without AWS support (cargo feature `aws`)\n  = hint: build drover with its \
                 default features (`cargo build --release`), or drop `--no-default-features`",
                origin.display()
            ),
        }
    }
}

/// No `source()`: the read error's OS message is already in the text (before the hint), and an
/// error chain printer would print it a second time after the hint.
impl std::error::Error for ConfigError {}

/// What a [`Warning`] is about.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum WarningKind {
    /// Keys GitLab Runner knows that drover accepts without acting on them.
    IgnoredKeys,
    /// Keys GitLab Runner itself no longer honours.
    Deprecated,
    /// A `[[runners]]` entry without a name; drover derived one.
    UnnamedRunner,
    /// A 5- or 6-field cron expression: active only in second 0 of each minute.
    ShortCron,
    /// A period block that can never apply.
    EmptyPeriod,
    /// `Timezone = "Local"` could not be resolved to a named zone; UTC is used.
    LocalTimezone,
    /// A setting that has no effect with the rest of the runner's settings.
    NoEffect,
}

/// A key in the file, for warnings that name keys.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRef {
    /// Dotted path, e.g. `runners[0].machine.OffPeakPeriods`.
    pub path: String,
    /// 1-based line.
    pub line: usize,
}

/// Something worth fixing that does not stop drover.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Warning {
    pub kind: WarningKind,
    /// The keys this warning is about, with their lines.
    pub keys: Vec<KeyRef>,
    pub diagnostic: Diagnostic,
}

impl Warning {
    /// The full warning, with its location, snippet and hint, after `warning: `.
    pub fn render(&self, origin: &Path) -> String {
        self.diagnostic.render("warning", origin)
    }
}

/// One line, for logs: the message and the keys it names with their lines.
impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diagnostic.message)?;
        if !self.keys.is_empty() {
            let keys: Vec<String> = self
                .keys
                .iter()
                .map(|k| format!("{} (line {})", k.path, k.line))
                .collect();
            write!(f, ": {}", keys.join(", "))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locations_count_lines_and_characters() {
        let text = "a = 1\nname = \"héllo\"\nlimit = -1\n";
        let start = text.find("-1").unwrap();
        let loc = Location::of(text, start..start + 2);
        assert_eq!((loc.line, loc.column, loc.width), (3, 9, 2));
        let start = text.find("\"h").unwrap();
        let loc = Location::of(text, start..start + 8);
        assert_eq!((loc.line, loc.column, loc.width), (2, 8, 7));
        assert_eq!(loc.line_text, "name = \"héllo\"");
        // A span past the end is clamped rather than panicking.
        let loc = Location::of(text, 100..200);
        assert_eq!(loc.line, 4);
    }

    #[test]
    fn renders_a_caret_under_the_span() {
        let text = "concurrent = 0\n";
        let d = Diagnostic::new("concurrent must be at least 1")
            .at(text, 13..14)
            .label("no job could ever run")
            .hint("set `concurrent = 1` or more");
        assert_eq!(
            d.render("error", Path::new("c.toml")),
            "error: concurrent must be at least 1\n \
             --> c.toml:1:14\n  |\n\
             1 | concurrent = 0\n  |              ^ no job could ever run\n  |\n  \
             = hint: set `concurrent = 1` or more"
        );
    }
}
