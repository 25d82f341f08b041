//! The context every section parser writes its problems into ([`Ctx`]), and the small checks
//! they share ([`key_values`]). It depends on no section parser, so `build` and the sections
//! (`cache`, `docker`, `machine`) can all use it.

use std::ops::Range;

use toml::Spanned;

use super::diagnostic::{Diagnostic, KeyRef, Location, Warning, WarningKind};
use super::timezone::LocalZone;

/// Collects problems while building.
pub struct Ctx<'a> {
    pub text: &'a str,
    pub local: &'a LocalZone,
    pub errors: Vec<Diagnostic>,
    pub warnings: Vec<Warning>,
    /// The installation's system id, part of every runner's machine key; empty when unknown.
    pub system_id: String,
    /// The first period that needed `Local`, for the warning if it cannot be resolved.
    pub(super) local_zone_used: Option<(String, Range<usize>)>,
}

impl<'a> Ctx<'a> {
    pub fn new(text: &'a str, local: &'a LocalZone) -> Ctx<'a> {
        Ctx {
            text,
            local,
            errors: Vec::new(),
            warnings: Vec::new(),
            system_id: String::new(),
            local_zone_used: None,
        }
    }

    pub fn error(&mut self, diagnostic: Diagnostic) {
        self.errors.push(diagnostic);
    }

    /// A diagnostic pointing at `span`, to pass to [`Ctx::error`] or [`Ctx::warn_at`]. A table's
    /// span covers all its lines; the diagnostic shows only the first, its header.
    pub fn diag(&self, span: Range<usize>, message: impl Into<String>) -> Diagnostic {
        Diagnostic::new(message).at(self.text, span)
    }

    /// A warning about the key at `span`, named `path`.
    pub fn warn_at(&mut self, kind: WarningKind, path: String, span: Range<usize>, d: Diagnostic) {
        let d = d.at(self.text, span.clone());
        let line = Location::of(self.text, span).line;
        self.warnings.push(Warning {
            kind,
            keys: vec![KeyRef { path, line }],
            diagnostic: d,
        });
    }

    pub fn line(&self, span: Range<usize>) -> usize {
        Location::of(self.text, span).line
    }

    /// The IANA name for `Local`, remembering where it was needed in case it is unknown.
    pub fn local_zone(&mut self, path: &str, span: Range<usize>) -> String {
        self.local_zone_used
            .get_or_insert_with(|| (path.to_string(), span));
        self.local.name().to_string()
    }
}

/// `KEY=value` entries (`environment`), each checked for its `=`.
pub fn key_values(
    entries: &[Spanned<String>],
    path: &str,
    ctx: &mut Ctx<'_>,
) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for e in entries {
        match e.get_ref().split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => out.push((k.to_string(), v.to_string())),
            _ => {
                ctx.error(
                    ctx.diag(
                        e.span(),
                        format!("`{path}` entry {:?} is not KEY=value", e.get_ref()),
                    )
                    .hint("write each variable as \"NAME=value\", e.g. \"DOCKER_DRIVER=overlay2\""),
                );
            }
        }
    }
    out
}
