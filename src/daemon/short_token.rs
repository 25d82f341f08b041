//! GitLab Runner's short token: the part of a runner token that `CI_RUNNER_SHORT_TOKEN` shows,
//! that names the runner's objects in a non-shared cache and that logs name a runner by. Every
//! use goes through [`of_runner`].
//!
//! It is not `drover_core::config::short_token`: that one is a machine key of earlier drover
//! versions (lower-cased, other prefixes), kept as it was so their machines are still recognised.

/// The GitLab short token of a runner's token, if it has one.
pub fn of_runner(settings: &crate::config::RunnerSettings) -> Option<String> {
    settings
        .token
        .as_ref()
        .map(|t| gitlab_short_token(t.expose()))
}

/// One known prefix removed (`glrt-`, optionally followed by a `t1_`/`t2_`/`t3_` partition; a bare
/// partition; `glrtr-`; `glcbt-`; or `GR` and 7 hex digits), then the first 9 characters, case kept.
pub fn gitlab_short_token(token: &str) -> String {
    let rest = if let Some(rest) = token.strip_prefix("glrt-") {
        strip_partition(rest)
    } else if let Some(rest) = token.strip_prefix("glrtr-") {
        rest
    } else if let Some(rest) = token.strip_prefix("glcbt-") {
        rest
    } else if token.len() > 9
        && token.starts_with("GR")
        && token.as_bytes()[2..9].iter().all(u8::is_ascii_hexdigit)
    {
        // Bytes 2..9 are ASCII, so byte 9 starts a character.
        &token[9..]
    } else {
        strip_partition(token)
    };
    rest.chars().take(9).collect()
}

/// `t1_`, `t2_` or `t3_`: the partition prefix of newer runner tokens.
fn strip_partition(token: &str) -> &str {
    match token.as_bytes() {
        [b't', b'1'..=b'3', b'_', ..] => &token[3..],
        _ => token,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_tokens_as_gitlab_runner_writes_them() {
        for (token, short) in [
            // The worked example of the reference (fixture job 4821).
            ("glrt-t1_6sYkQxW9bN3pLmZr7cVd", "6sYkQxW9b"),
            ("glrt-EXAMPLEEXAMPLE", "EXAMPLEEX"),
            ("glrt-AbCdEfGhIjKl", "AbCdEfGhI"),
            ("glrtr-Xk2mP9qLw4ZsT7vB8nYd", "Xk2mP9qLw"),
            ("glcbt-64_xQz", "64_xQz"),
            ("GR1348941aBcDeFgHiJkLmNoP", "aBcDeFgHi"),
            ("t2_abcdefghijkl", "abcdefghi"),
            ("abc", "abc"),
            // Only one prefix goes: a partition after `glrtr-` stays, and so does `GR…` after `glrt-`.
            ("glrtr-t1_abcdefghij", "t1_abcdef"),
            ("glrt-GR1348941aBcDeFgHiJ", "GR1348941"),
            // Not hex after `GR`, and a character that is not ASCII where the hex would end.
            ("GRxyz4567aBcDeF", "GRxyz4567"),
            ("GR134894é-rest", "GR134894é"),
        ] {
            assert_eq!(gitlab_short_token(token), short, "{token}");
        }
    }
}
