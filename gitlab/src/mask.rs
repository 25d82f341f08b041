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

/// GitLab's short form of a runner token: the first 8 characters after the prefix. GitLab shows
/// it in its UI and job logs, so it identifies a runner without revealing the token.
pub fn short_token(token: &str) -> &str {
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
        short_token(token)
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
    fn masks_keep_prefix_and_short_token_only() {
        let t = "glrt-t1_6sYkQxW9bN3pLmZr7cVd";
        assert_eq!(short_token(t), "t1_6sYkQ");
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
