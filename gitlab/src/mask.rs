//! How tokens appear in logs, errors and listings: never whole.

use serde::{Deserialize, Serialize};

/// Token prefixes GitLab issues: personal access tokens, runner authentication tokens (created in
/// the UI, and registered with a registration token) and CI job tokens.
pub const TOKEN_PREFIXES: [&str; 4] = ["glpat-", "glrt-", "glrtr-", "glcbt-"];

/// The replacement text GitLab uses for a masked value.
pub const MASKED: &str = "[MASKED]";

/// The prefix of `token` if it has a known GitLab prefix.
fn known_prefix(token: &str) -> &str {
    TOKEN_PREFIXES
        .iter()
        .filter(|p| token.starts_with(**p))
        .max_by_key(|p| p.len())
        .copied()
        .unwrap_or("")
}

/// What a masked token shows after its prefix: the first 8 characters, as GitLab shows a runner
/// token in its UI and job logs (unlike `drover_core::config::short_token`, which names machines).
fn masked_stem(token: &str) -> &str {
    let rest = &token[known_prefix(token).len()..];
    let end = rest.char_indices().nth(8).map_or(rest.len(), |(i, _)| i);
    &rest[..end]
}

/// A token as it may be shown: prefix and short form, then `[MASKED]`,
/// e.g. `glrt-t1_6sYkQ[MASKED]`. A value too short for its short form to leave most of it hidden
/// shows only its prefix. Empty stays empty so a missing token is visible as such.
pub fn masked_token(token: &str) -> String {
    if token.is_empty() {
        return String::new();
    }
    let prefix = known_prefix(token);
    let short = if token[prefix.len()..].chars().count() > 16 {
        masked_stem(token)
    } else {
        ""
    };
    format!("{prefix}{short}{MASKED}")
}

/// A secret string (runner or job token, password). `Debug` shows it masked, there is no
/// `Display`, and the value is only reachable through [`Secret::expose`], so it cannot slip into
/// a log line by accident. Serializes as the plain string.
#[derive(Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret value, for the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The masked form, for logs and listings.
    pub fn masked(&self) -> String {
        masked_token(&self.0)
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.masked())
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Self {
        Secret(value.into())
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Self {
        Secret(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_keep_prefix_and_stem_only() {
        let t = "glrt-t1_6sYkQxW9bN3pLmZr7cVd";
        assert_eq!(masked_stem(t), "t1_6sYkQ");
        assert_eq!(masked_token(t), "glrt-t1_6sYkQ[MASKED]");
        assert_eq!(
            masked_token("glrtr-Xk2mP9qLw4ZsT7vB8nYd"),
            "glrtr-Xk2mP9qL[MASKED]"
        );
        assert_eq!(
            masked_token("GR1348941aBcDeFgHiJkLmNoPqRsT"),
            "GR134894[MASKED]"
        );
        assert_eq!(masked_token("abc"), "[MASKED]");
        assert_eq!(masked_token("glrt-0123456789"), "glrt-[MASKED]");
        assert_eq!(masked_token(""), "");
    }

    #[test]
    fn secret_debug_never_shows_the_value() {
        let s = Secret::new("glcbt-64_xQz3vLmT7bN2pWdR8sYk");
        let shown = format!("{s:?}");
        assert!(!shown.contains("xQz3vLmT7bN2pWdR8sYk"), "{shown}");
        assert_eq!(s.expose(), "glcbt-64_xQz3vLmT7bN2pWdR8sYk");
        assert_eq!(
            serde_json::to_string(&s).unwrap(),
            "\"glcbt-64_xQz3vLmT7bN2pWdR8sYk\""
        );
    }
}
