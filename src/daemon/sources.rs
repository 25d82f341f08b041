//! How a job gets its sources, from GitLab Runner's `GIT_*` variables (job variables over the
//! runner's `environment`), and where they go: the project directory's path.

use drover_docker::{GitSpec, GitStrategy, SubmoduleStrategy, Submodules};
use drover_gitlab::api::JobResponse;

/// A variable's value: the job's variables win over the runner's `environment`, later over
/// earlier (as GitLab Runner reads `GIT_*`).
pub struct Lookup<'a> {
    job: &'a JobResponse,
    environment: &'a [(String, String)],
}

impl<'a> Lookup<'a> {
    pub fn new(job: &'a JobResponse, environment: &'a [(String, String)]) -> Lookup<'a> {
        Lookup { job, environment }
    }

    pub fn get(&self, key: &str) -> Option<&'a str> {
        let job = self.job.variables.iter().rev().find(|v| v.key == key);
        match job {
            Some(v) => Some(v.value.as_str()),
            None => self
                .environment
                .iter()
                .rev()
                .find(|(k, _)| k == key)
                .map(|(_, v)| v.as_str()),
        }
    }

    /// GitLab's flag lists: the default when unset or empty, nothing for `none`.
    fn flags(&self, key: &str, default: &str) -> Vec<String> {
        let value = self.get(key).filter(|v| !v.is_empty()).unwrap_or(default);
        match value {
            "none" => Vec::new(),
            v => v.split_whitespace().map(str::to_string).collect(),
        }
    }
}

/// `GIT_STRATEGY`: `fetch` when the project allows it and the job says nothing, else `clone`;
/// an unknown value falls back to that default with a warning, as in GitLab Runner.
pub fn strategy(job: &JobResponse, vars: &Lookup, warnings: &mut Vec<String>) -> GitStrategy {
    let default = match job.allow_git_fetch {
        true => GitStrategy::Fetch,
        false => GitStrategy::Clone,
    };
    match vars.get("GIT_STRATEGY").unwrap_or("") {
        "none" => GitStrategy::None,
        "empty" => GitStrategy::Empty,
        "fetch" => GitStrategy::Fetch,
        "clone" => GitStrategy::Clone,
        "" => default,
        other => {
            warnings.push(format!(
                "GIT_STRATEGY {other:?} is not one of clone, fetch, none, empty: using {}",
                match default {
                    GitStrategy::Fetch => "fetch",
                    _ => "clone",
                }
            ));
            default
        }
    }
}

/// The sources step's settings. `Err`: a setting GitLab Runner refuses too (the job fails).
pub fn git_spec(
    job: &JobResponse,
    vars: &Lookup,
    strategy: GitStrategy,
) -> Result<GitSpec, String> {
    if matches!(strategy, GitStrategy::None | GitStrategy::Empty) {
        return Ok(GitSpec {
            strategy,
            ..GitSpec::none()
        });
    }
    let number = |key: &str, default: u32| -> Result<u32, String> {
        match vars.get(key).filter(|v| !v.is_empty()) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|_| format!("{key} must be a number of commits, not {v:?}")),
        }
    };
    let depth = number("GIT_DEPTH", job.git_info.depth)?;
    let submodule_strategy = match vars.get("GIT_SUBMODULE_STRATEGY").unwrap_or("") {
        "" | "none" => SubmoduleStrategy::None,
        "normal" => SubmoduleStrategy::Normal,
        "recursive" => SubmoduleStrategy::Recursive,
        other => {
            return Err(format!(
                "invalid GIT_SUBMODULE_STRATEGY {other:?} (none, normal or recursive)"
            ));
        }
    };
    // Go's ParseBool falsehoods; anything else keeps the default.
    let checkout = !matches!(
        vars.get("GIT_CHECKOUT").map(str::trim),
        Some("false" | "0" | "f" | "F" | "FALSE" | "False")
    );
    Ok(GitSpec {
        strategy,
        repo_url: job.git_info.repo_url.clone(),
        sha: job.git_info.sha.clone(),
        ref_name: job.git_info.git_ref.clone(),
        refspecs: job.git_info.refspecs.clone(),
        depth,
        fetch_flags: vars.flags("GIT_FETCH_EXTRA_FLAGS", "--prune --quiet"),
        checkout,
        clean_flags: vars.flags("GIT_CLEAN_FLAGS", "-ffdx"),
        submodules: Submodules {
            strategy: submodule_strategy,
            depth: number("GIT_SUBMODULE_DEPTH", job.git_info.depth)?,
            update_flags: vars.flags("GIT_SUBMODULE_UPDATE_FLAGS", ""),
            paths: vars.flags("GIT_SUBMODULE_PATHS", ""),
        },
    })
}

/// `<builds_dir>/<path of the repository URL without .git>`, as GitLab Runner lays projects out
/// (`https://h/gitlab/acme/widget.git` → `/builds/gitlab/acme/widget`); `project-<id>` when the
/// URL has no usable path; `-empty` appended for `GIT_STRATEGY=empty`.
pub fn project_dir(builds_dir: &str, job: &JobResponse, strategy: GitStrategy) -> String {
    let url = &job.git_info.repo_url;
    let path = url
        .split_once("://")
        .map(|(_, rest)| rest.find('/').map_or("", |i| &rest[i..]))
        .map(|p| p.split(['?', '#']).next().unwrap_or(p))
        .map(|p| p.trim_matches('/').trim_end_matches(".git").to_string())
        .filter(|p| !p.is_empty() && p.split('/').all(|s| !s.is_empty() && s != ".." && s != "."));
    let slug = path.unwrap_or_else(|| format!("project-{}", job.job_info.project_id));
    let suffix = match strategy {
        GitStrategy::Empty => "-empty",
        _ => "",
    };
    format!("{}/{slug}{suffix}", builds_dir.trim_end_matches('/'))
}

/// What a job asks of its sources and environment that drover does not do: each is a trace
/// warning.
pub fn unsupported(job: &JobResponse, vars: &Lookup) -> Vec<String> {
    let mut warnings = Vec::new();
    if let Some(hook) = job.hooks.iter().find(|h| !h.script.is_empty()) {
        warnings.push(format!(
            "the job's {} hook is not run: drover does not support get-sources hooks",
            hook.name
        ));
    }
    if vars
        .get("CI_DEBUG_TRACE")
        .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
    {
        warnings.push(
            "CI_DEBUG_TRACE is not supported by drover: the trace shows no shell tracing"
                .to_string(),
        );
    }
    let mentions = |name: &str| {
        job.steps
            .iter()
            .any(|s| s.script.iter().any(|line| line.contains(name)))
    };
    if mentions("GITLAB_ENV") {
        warnings.push(
            "GITLAB_ENV is not set by drover: variables written to it do not reach later steps"
                .to_string(),
        );
    }
    let set = |key: &str| vars.get(key).is_some_and(|v| !v.is_empty());
    if set("GIT_CLONE_PATH") {
        warnings.push(
            "GIT_CLONE_PATH is not supported by drover: the sources are in $CI_PROJECT_DIR"
                .to_string(),
        );
    }
    if vars
        .get("GIT_SUBMODULE_FORCE_HTTPS")
        .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1")
    {
        warnings.push(
            "GIT_SUBMODULE_FORCE_HTTPS is not supported by drover: submodule URLs are used as written"
                .to_string(),
        );
    }
    if vars
        .get("GET_SOURCES_ATTEMPTS")
        .is_some_and(|v| v.trim() != "1" && !v.is_empty())
    {
        warnings.push(
            "GET_SOURCES_ATTEMPTS is not supported by drover: the sources are fetched once"
                .to_string(),
        );
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(vars: &[(&str, &str)]) -> JobResponse {
        let mut job = JobResponse::default();
        job.git_info.repo_url = "https://gitlab-ci-token:tok@gitlab.local/acme/widget.git".into();
        job.git_info.depth = 20;
        job.job_info.project_id = 42;
        job.variables = vars
            .iter()
            .map(|(k, v)| drover_gitlab::api::Variable {
                key: k.to_string(),
                value: v.to_string(),
                ..Default::default()
            })
            .collect();
        job
    }

    fn spec_of(vars: &[(&str, &str)], env: &[(String, String)]) -> Result<GitSpec, String> {
        let job = job(vars);
        let lookup = Lookup::new(&job, env);
        let strategy = strategy(&job, &lookup, &mut Vec::new());
        git_spec(&job, &lookup, strategy)
    }

    #[test]
    fn defaults_are_gitlab_runners() {
        let git = spec_of(&[], &[]).unwrap();
        assert_eq!(git.strategy, GitStrategy::Clone);
        assert_eq!((git.depth, git.submodules.depth), (20, 20));
        assert_eq!(git.fetch_flags, vec!["--prune", "--quiet"]);
        assert_eq!(git.clean_flags, vec!["-ffdx"]);
        assert!(git.checkout);
        assert_eq!(git.submodules.strategy, SubmoduleStrategy::None);
    }

    #[test]
    fn job_variables_win_over_the_runner_environment() {
        let env = vec![
            ("GIT_STRATEGY".to_string(), "fetch".to_string()),
            ("GIT_CLEAN_FLAGS".to_string(), "-fdx".to_string()),
        ];
        let git = spec_of(&[("GIT_CLEAN_FLAGS", "none")], &env).unwrap();
        assert_eq!(git.strategy, GitStrategy::Fetch);
        assert!(git.clean_flags.is_empty(), "`none`: no clean");
        let git = spec_of(
            &[
                ("GIT_CHECKOUT", "false"),
                ("GIT_FETCH_EXTRA_FLAGS", "--no-tags"),
                ("GIT_DEPTH", "3"),
                ("GIT_SUBMODULE_STRATEGY", "recursive"),
                ("GIT_SUBMODULE_DEPTH", "1"),
                ("GIT_SUBMODULE_UPDATE_FLAGS", "--jobs 4"),
                ("GIT_SUBMODULE_PATHS", "libs/a libs/b"),
            ],
            &env,
        )
        .unwrap();
        assert!(!git.checkout);
        assert_eq!(git.fetch_flags, vec!["--no-tags"]);
        assert_eq!(git.clean_flags, vec!["-fdx"]);
        assert_eq!((git.depth, git.submodules.depth), (3, 1));
        assert_eq!(
            git.submodules,
            Submodules {
                strategy: SubmoduleStrategy::Recursive,
                depth: 1,
                update_flags: vec!["--jobs".into(), "4".into()],
                paths: vec!["libs/a".into(), "libs/b".into()],
            }
        );
    }

    #[test]
    fn bad_values_warn_or_fail_as_gitlab_runner() {
        let job = job(&[("GIT_STRATEGY", "shallow")]);
        let mut warnings = Vec::new();
        let lookup = Lookup::new(&job, &[]);
        assert_eq!(strategy(&job, &lookup, &mut warnings), GitStrategy::Clone);
        assert!(warnings[0].contains("\"shallow\""), "{warnings:?}");
        let err = spec_of(&[("GIT_SUBMODULE_STRATEGY", "all")], &[]).unwrap_err();
        assert!(err.contains("GIT_SUBMODULE_STRATEGY"), "{err}");
        assert!(spec_of(&[("GIT_DEPTH", "deep")], &[]).is_err());
        let git = spec_of(&[("GIT_STRATEGY", "empty")], &[]).unwrap();
        assert_eq!(git.strategy, GitStrategy::Empty);
    }

    #[test]
    fn the_project_dir_is_the_repository_path() {
        let mut j = job(&[]);
        assert_eq!(
            project_dir("/builds/", &j, GitStrategy::Fetch),
            "/builds/acme/widget"
        );
        assert_eq!(
            project_dir("/builds", &j, GitStrategy::Empty),
            "/builds/acme/widget-empty"
        );
        j.git_info.repo_url = "https://h.example/gitlab/acme/widget.git".into();
        assert_eq!(
            project_dir("/builds", &j, GitStrategy::Clone),
            "/builds/gitlab/acme/widget"
        );
        for bad in ["", "not a url", "https://h.example", "file:///../x.git"] {
            j.git_info.repo_url = bad.into();
            assert_eq!(
                project_dir("/builds", &j, GitStrategy::Clone),
                "/builds/project-42",
                "{bad:?}"
            );
        }
    }

    #[test]
    fn unsupported_settings_are_named() {
        let j = job(&[
            ("GIT_CLONE_PATH", "/builds/x"),
            ("GIT_SUBMODULE_FORCE_HTTPS", "true"),
            ("GET_SOURCES_ATTEMPTS", "3"),
        ]);
        let warnings = unsupported(&j, &Lookup::new(&j, &[]));
        assert_eq!(warnings.len(), 3, "{warnings:?}");
        let plain = job(&[]);
        assert!(unsupported(&plain, &Lookup::new(&plain, &[])).is_empty());
        let mut uses = job(&[("CI_DEBUG_TRACE", "true")]);
        uses.steps.push(drover_gitlab::api::Step {
            name: "after_script".into(),
            script: vec!["echo DEPLOY=1 >> $GITLAB_ENV".into()],
            ..Default::default()
        });
        uses.hooks.push(drover_gitlab::api::Hook {
            name: "pre_get_sources_script".into(),
            script: vec!["echo hi".into()],
        });
        let warnings = unsupported(&uses, &Lookup::new(&uses, &[])).join("\n");
        for expected in [
            "CI_DEBUG_TRACE",
            "GITLAB_ENV is not set",
            "pre_get_sources_script",
        ] {
            assert!(warnings.contains(expected), "{warnings}");
        }
    }
}
