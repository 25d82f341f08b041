//! The labels drover puts on everything it creates in an engine. Reconciliation and cleanup find
//! containers, networks and volumes by these labels alone, never by name patterns.

use std::collections::HashMap;

/// Present on every object drover creates; its value is the runner's short token.
pub const RUNNER: &str = "drover.runner";
/// The machine (sandbox) an object belongs to.
pub const MACHINE: &str = "drover.machine";
/// The job an object belongs to (GitLab's job id).
pub const JOB: &str = "drover.job";
/// What the object is for: see the `ROLE_*` values.
pub const ROLE: &str = "drover.role";
/// On step containers: the step's name (`get_sources`, `script`, `after_script`).
pub const STEP: &str = "drover.step";
/// On step containers: the step's position in the job's plan.
pub const STEP_INDEX: &str = "drover.step.index";
/// On step containers: the job's deadline as Unix epoch milliseconds, so a resumed job keeps it.
pub const DEADLINE: &str = "drover.job.deadline";

pub const ROLE_ANCHOR: &str = "anchor";
pub const ROLE_STEP: &str = "step";
pub const ROLE_SERVICE: &str = "service";
pub const ROLE_NETWORK: &str = "network";
pub const ROLE_BUILDS: &str = "builds";
/// The container that serves the engine's archive endpoints for artifact transfers (never started).
pub const ROLE_TRANSFER: &str = "transfer";
/// The local cache's volumes: no job label, so they outlive the job (they go with the machine).
pub const ROLE_CACHE: &str = "cache";

/// A label filter for the engine's list endpoints: every `key=value` (or bare `key`) must match.
pub fn filter(pairs: &[(&str, Option<&str>)]) -> HashMap<String, Vec<String>> {
    let labels = pairs
        .iter()
        .map(|(key, value)| match value {
            Some(value) => format!("{key}={value}"),
            None => (*key).to_string(),
        })
        .collect();
    HashMap::from([("label".to_string(), labels)])
}

/// Docker object names allow `[a-zA-Z0-9][a-zA-Z0-9_.-]*`; anything else becomes `-`.
pub(crate) fn sanitize(name: &str) -> String {
    let cleaned: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    match cleaned.chars().next() {
        Some(c) if c.is_ascii_alphanumeric() => cleaned,
        _ => format!("x{cleaned}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filter_builds_label_expressions() {
        let f = filter(&[(RUNNER, Some("abc")), (MACHINE, None)]);
        assert_eq!(
            f["label"],
            vec![
                "drover.runner=abc".to_string(),
                "drover.machine".to_string()
            ]
        );
    }

    #[test]
    fn sanitize_keeps_valid_names_and_fixes_others() {
        assert_eq!(sanitize("runner-ab12-auto-1"), "runner-ab12-auto-1");
        assert_eq!(sanitize("my runner/1"), "my-runner-1");
        assert_eq!(sanitize("-x"), "x-x");
        assert_eq!(sanitize(""), "x");
    }
}
