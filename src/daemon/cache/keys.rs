//! Cache keys and object names exactly as GitLab Runner makes them, so that a bucket filled by
//! GitLab Runner serves drover and the other way round.

use drover_gitlab::api::JobResponse;

/// `$VAR` and `${VAR}` from the job's variables (the last of a name wins, as in the shell).
pub fn expand(value: &str, job: &JobResponse) -> String {
    drover_docker::expand::expand(value, |name| {
        job.variables
            .iter()
            .rev()
            .find(|v| v.key == name)
            .map(|v| v.value.as_str())
    })
}

/// GitLab Runner's key sanitising: `%2F` and `\` are `/`, `%2E` is `.`, the path is cleaned as if
/// under a root (so `..` cannot climb out of the project's prefix), trailing whitespace goes.
/// `None`: nothing is left.
pub fn sanitize(key: &str) -> Option<String> {
    let decoded = key
        .replace("%2F", "/")
        .replace("%2f", "/")
        .replace("%2E", ".")
        .replace("%2e", ".")
        .replace('\\', "/");
    let mut parts: Vec<&str> = Vec::new();
    for part in decoded.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            _ => parts.push(part),
        }
    }
    while let Some(last) = parts.pop() {
        let trimmed = last.trim_end();
        if !trimmed.is_empty() {
            parts.push(trimmed);
            break;
        }
    }
    (!parts.is_empty()).then(|| parts.join("/"))
}

/// The keys of one `cache:` entry in the order they are tried: the key, each of `fallback_keys`,
/// then `CACHE_FALLBACK_KEY` (refused when it names a protected cache), sanitised, without
/// repeats. The first is the key the entry saves to. `notes` collects what the trace should say.
pub fn keys(
    key: &str,
    fallback_keys: &[String],
    job: &JobResponse,
    notes: &mut Vec<String>,
) -> Vec<String> {
    let raw = if key.is_empty() {
        format!("{}/{}", job.job_info.name, job.git_info.git_ref)
    } else {
        key.to_string()
    };
    let mut out: Vec<String> = Vec::new();
    let push = |raw: &str, out: &mut Vec<String>, notes: &mut Vec<String>| {
        let expanded = expand(raw, job);
        match sanitize(&expanded) {
            Some(clean) => {
                if clean != expanded {
                    notes.push(format!("cache key {expanded:?} sanitized to {clean:?}"));
                }
                if !out.contains(&clean) {
                    out.push(clean);
                }
            }
            None => notes.push(format!(
                "cache key {expanded:?} is empty once sanitized: skipped"
            )),
        }
    };
    push(&raw, &mut out, notes);
    if out.is_empty() {
        // Without its own key an entry neither restores nor saves.
        return out;
    }
    for fallback in fallback_keys {
        push(fallback, &mut out, notes);
    }
    if let Some(fallback) = job.variable("CACHE_FALLBACK_KEY").filter(|k| !k.is_empty()) {
        // Checked on the key as it will be signed: `main-protected/`, `main-protected/x/..` or
        // `$K` would otherwise reach a protected branch's cache from any branch.
        let raw_protected = |k: &str| {
            k.trim_end_matches(['.', ' ', '\t', '\n', '\r'])
                .ends_with("-protected")
        };
        let signed = sanitize(&expand(fallback, job));
        if raw_protected(fallback) || signed.as_deref().is_some_and(raw_protected) {
            notes.push(format!(
                "CACHE_FALLBACK_KEY {fallback:?} is not allowed to end in \"-protected\": not used"
            ));
        } else {
            push(fallback, &mut out, notes);
        }
    }
    out
}

/// The object of `key`: `[<Path>/][runner/<short token>/]project/<id>/<key>`.
pub fn object_name(
    path: &str,
    shared: bool,
    short_token: &str,
    project_id: u64,
    key: &str,
) -> String {
    let mut name = String::new();
    if !path.is_empty() {
        name.push_str(path);
        name.push('/');
    }
    if !shared {
        name.push_str(&format!("runner/{short_token}/"));
    }
    name.push_str(&format!("project/{project_id}/{key}"));
    name
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_gitlab::api::Variable;

    fn job(vars: &[(&str, &str)]) -> JobResponse {
        let mut job = JobResponse::default();
        job.job_info.name = "rspec".into();
        job.git_info.git_ref = "main".into();
        job.variables = vars
            .iter()
            .map(|(k, v)| Variable {
                key: k.to_string(),
                value: v.to_string(),
                ..Variable::default()
            })
            .collect();
        job
    }

    #[test]
    fn object_names_with_and_without_sharing() {
        let key = "gems-main-protected";
        assert_eq!(
            object_name("", false, "6sYkQxW9b", 42, key),
            "runner/6sYkQxW9b/project/42/gems-main-protected"
        );
        assert_eq!(
            object_name("ci", false, "6sYkQxW9b", 42, key),
            "ci/runner/6sYkQxW9b/project/42/gems-main-protected"
        );
        assert_eq!(
            object_name("ci/sub", true, "6sYkQxW9b", 42, key),
            "ci/sub/project/42/gems-main-protected"
        );
    }

    #[test]
    fn keys_are_expanded_sanitized_and_cannot_climb_out() {
        assert_eq!(sanitize("a%2Fb%2e%2Ec"), Some("a/b..c".into()));
        assert_eq!(sanitize("..\\..\\etc/passwd"), Some("etc/passwd".into()));
        assert_eq!(sanitize("../../"), None);
        assert_eq!(sanitize("key  /  "), Some("key".into()));
        assert_eq!(sanitize("./a//b/./c"), Some("a/b/c".into()));
        let j = job(&[("CI_COMMIT_REF_SLUG", "feat-x"), ("OS", "linux")]);
        assert_eq!(
            expand("gems-$CI_COMMIT_REF_SLUG-${OS}-$NOPE.$", &j),
            "gems-feat-x-linux-.$"
        );
    }

    #[test]
    fn fallbacks_come_in_order_and_protected_fallback_keys_are_refused() {
        let mut notes = Vec::new();
        let j = job(&[("CACHE_FALLBACK_KEY", "global-protected")]);
        let keys_ = keys(
            "gems-main-protected",
            &[
                "gems-default-protected".into(),
                "gems-main-protected".into(),
            ],
            &j,
            &mut notes,
        );
        assert_eq!(keys_, ["gems-main-protected", "gems-default-protected"]);
        assert!(
            notes[0].contains("is not allowed to end in \"-protected\""),
            "{notes:?}"
        );

        let mut notes = Vec::new();
        let j = job(&[("CACHE_FALLBACK_KEY", "global-non_protected")]);
        assert_eq!(
            keys("", &[], &j, &mut notes),
            ["rspec/main", "global-non_protected"]
        );
        assert!(notes.is_empty(), "{notes:?}");

        // What is signed is checked, not what was written.
        for sneaky in ["global-protected/", "global-protected/x/..", "$K"] {
            let mut notes = Vec::new();
            let j = job(&[("CACHE_FALLBACK_KEY", sneaky), ("K", "global-protected")]);
            assert_eq!(keys("own", &[], &j, &mut notes), ["own"], "{sneaky}");
            assert!(notes.iter().any(|n| n.contains("not allowed")), "{notes:?}");
        }

        let mut notes = Vec::new();
        assert!(keys("$EMPTY", &["x".into()], &job(&[]), &mut notes).is_empty());
        assert!(notes[0].contains("empty once sanitized"), "{notes:?}");
    }
}
