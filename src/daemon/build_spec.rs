//! GitLab's job payload plus the runner's `[runners.docker]` settings → the executor's [`BuildSpec`].

use std::time::Duration;

use drover_docker::{
    BuildSpec, ContainerOptions, GitSpec, GitStrategy, ImageSpec, PullPolicy, RegistryCredential,
    ServiceSpec, Shell, StepName, StepSpec, Variable, When,
};
use drover_gitlab::api::{JobResponse, StepWhen, step_name};
use globset::GlobBuilder;

use crate::config::{self, RunnerSettings};

/// Why a job cannot run here; it is reported as failed with the given reason and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Unsupported {
    pub reason: drover_core::FailureReason,
    pub message: String,
}

fn unsupported(message: impl Into<String>) -> Unsupported {
    Unsupported {
        reason: drover_core::FailureReason::RunnerSystemFailure,
        message: message.into(),
    }
}

/// The runner's `[runners.docker] pull_policy`, in order.
pub fn runner_pull_policies(runner: &RunnerSettings) -> Vec<PullPolicy> {
    runner.docker.pull_policy.clone()
}

/// The job's pull policies when allowed, else the runner's; GitLab's default is `always`.
fn pull_policies(job: &[String], runner: &RunnerSettings) -> Result<Vec<PullPolicy>, Unsupported> {
    let runner_default = runner_pull_policies(runner);
    if job.is_empty() {
        return Ok(runner_default);
    }
    let mut out = Vec::new();
    for p in job {
        let Some(parsed) = config::PullPolicy::parse(p) else {
            return Err(Unsupported {
                reason: drover_core::FailureReason::RunnerConfigurationError,
                message: format!(
                    "unknown pull policy {p:?} (drover knows always, if-not-present, never)"
                ),
            });
        };
        let allowed = if runner.docker.allowed_pull_policies.is_empty() {
            &runner.docker.pull_policy
        } else {
            &runner.docker.allowed_pull_policies
        };
        if !allowed.is_empty() && !allowed.contains(&parsed) {
            return Err(Unsupported {
                reason: drover_core::FailureReason::RunnerConfigurationError,
                message: format!(
                    "pull policy {p:?} is not allowed by this runner (allowed: {})",
                    allowed
                        .iter()
                        .map(|a| a.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        out.push(parsed);
    }
    Ok(out)
}

/// GitLab Runner's `allowed_images` / `allowed_services` (`option`): when the list is not empty, a
/// job's `image` must match one of its patterns, or be one of the runner's own images (`internal`).
/// Patterns are globs as GitLab Runner's (doublestar): `*` and `?` stay within a `/`-separated part,
/// `**` spans parts, `[…]` and `{a,b}` as usual. An invalid pattern matches nothing.
fn check_allowed(
    image: &str,
    option: &str,
    allowed: &[String],
    internal: &[&str],
) -> Result<(), Unsupported> {
    if allowed.is_empty() || internal.contains(&image) {
        return Ok(());
    }
    let matches = |pattern: &String| {
        GlobBuilder::new(pattern)
            .literal_separator(true)
            .build()
            .is_ok_and(|glob| glob.compile_matcher().is_match(image))
    };
    if allowed.iter().any(matches) {
        return Ok(());
    }
    let list: Vec<String> = allowed.iter().map(|p| format!("{p:?}")).collect();
    Err(Unsupported {
        reason: drover_core::FailureReason::RunnerConfigurationError,
        message: format!(
            "the image {image:?} is not allowed by this runner: [runners.docker] {option} = [{}]",
            list.join(", ")
        ),
    })
}

fn step_timeout(seconds: i64, job: Duration) -> Duration {
    u64::try_from(seconds)
        .ok()
        .filter(|s| *s > 0)
        .map_or(job, Duration::from_secs)
}

/// Maps a job onto the executor's terms. `runner_short` names the runner's objects on the engine.
pub fn build_spec(
    job: &JobResponse,
    runner: &RunnerSettings,
    runner_short: &str,
    registry_mirrors: &[String],
) -> Result<BuildSpec, Unsupported> {
    if !job.run.is_empty() {
        return Err(unsupported(
            "this job uses `run:` (step-runner steps), which drover does not support",
        ));
    }
    if let Some(kind) = job.image.executor_opts.other.keys().next() {
        return Err(unsupported(format!(
            "unsupported image executor_opts key {kind:?}"
        )));
    }
    let timeout = job.timeout();
    let image_name = if job.image.name.is_empty() {
        runner.docker.image.clone().ok_or_else(|| Unsupported {
            reason: drover_core::FailureReason::RunnerConfigurationError,
            message: "the job names no image and the runner has no [runners.docker] image".into(),
        })?
    } else {
        let default_image: Vec<&str> = runner.docker.image.iter().map(String::as_str).collect();
        check_allowed(
            &job.image.name,
            "allowed_images",
            &runner.docker.allowed_images,
            &default_image,
        )?;
        job.image.name.clone()
    };
    let image = ImageSpec {
        name: image_name,
        entrypoint: (!job.image.entrypoint.is_empty()).then(|| job.image.entrypoint.clone()),
        pull_policy: pull_policies(&job.image.pull_policy, runner)?,
    };

    let builds_dir = runner
        .builds_dir
        .clone()
        .unwrap_or_else(|| "/builds".to_string());
    let project_path = if job.job_info.project_full_path.is_empty() {
        format!("project-{}", job.job_info.project_id)
    } else {
        job.job_info.project_full_path.clone()
    };
    let project_dir = format!("{}/{}", builds_dir.trim_end_matches('/'), project_path);

    // The runner's environment first, then drover's own, then the job's: later keys win.
    let mut variables: Vec<Variable> = runner
        .environment
        .iter()
        .map(|(k, v)| Variable::new(k.clone(), v.clone()))
        .collect();
    for (k, v) in [
        ("CI_BUILDS_DIR", builds_dir.clone()),
        ("CI_PROJECT_DIR", project_dir.clone()),
        ("CI_RUNNER_SHORT_TOKEN", runner_short.to_string()),
        (
            "CI_RUNNER_VERSION",
            format!("drover {}", env!("CARGO_PKG_VERSION")),
        ),
        (
            "CI_RUNNER_EXECUTABLE_ARCH",
            format!("{}/{}", std::env::consts::OS, std::env::consts::ARCH),
        ),
        ("CI_DISPOSABLE_ENVIRONMENT", "true".to_string()),
        ("CI_SERVER", "yes".to_string()),
    ] {
        variables.push(Variable::new(k, v));
    }
    variables.extend(job.variables.iter().map(|v| Variable {
        key: v.key.clone(),
        value: v.value.clone(),
        file: v.file,
        public: v.public && !v.masked,
    }));

    let mut steps = Vec::new();
    for step in &job.steps {
        let name = match step.name.as_str() {
            step_name::SCRIPT => StepName::Script,
            step_name::AFTER_SCRIPT => StepName::AfterScript,
            other => {
                return Err(unsupported(format!(
                    "drover does not support the {other:?} step"
                )));
            }
        };
        let mut script = step.script.clone();
        if name == StepName::Script {
            if let Some(pre) = &runner.hooks.pre_build_script {
                script.insert(0, pre.clone());
            }
            if let Some(post) = &runner.hooks.post_build_script {
                script.push(post.clone());
            }
        }
        let when = match step.when {
            StepWhen::OnSuccess => When::OnSuccess,
            StepWhen::OnFailure => When::OnFailure,
            StepWhen::Always => When::Always,
            StepWhen::Unknown => {
                return Err(unsupported(format!(
                    "unknown `when` in step {:?}",
                    step.name
                )));
            }
        };
        steps.push(StepSpec {
            name,
            script,
            timeout: step_timeout(step.timeout, timeout),
            when,
            // GitLab: after_script never changes the job's result, whatever the payload says.
            allow_failure: step.allow_failure || name == StepName::AfterScript,
        });
    }
    if !steps.iter().any(|s| s.name == StepName::Script) {
        return Err(unsupported("the job has no script step"));
    }

    let mut services: Vec<ServiceSpec> = runner
        .docker
        .services
        .iter()
        .map(|s| ServiceSpec {
            image: ImageSpec {
                name: s.name.clone(),
                entrypoint: (!s.entrypoint.is_empty()).then(|| s.entrypoint.clone()),
                pull_policy: runner_pull_policies(runner),
            },
            aliases: s.aliases.clone(),
            command: (!s.command.is_empty()).then(|| s.command.clone()),
            variables: s
                .environment
                .iter()
                .map(|(k, v)| Variable::new(k.clone(), v.clone()))
                .collect(),
        })
        .collect();
    let runner_services: Vec<&str> = runner
        .docker
        .services
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    for (i, s) in job.services.iter().enumerate() {
        if s.name.trim().is_empty() {
            return Err(unsupported(format!(
                "service {} of the job (`services[{i}]`, alias {:?}) names no image",
                i + 1,
                s.alias
            )));
        }
        check_allowed(
            &s.name,
            "allowed_services",
            &runner.docker.allowed_services,
            &runner_services,
        )?;
        services.push(ServiceSpec {
            image: ImageSpec {
                name: s.name.clone(),
                entrypoint: (!s.entrypoint.is_empty()).then(|| s.entrypoint.clone()),
                pull_policy: pull_policies(&s.pull_policy, runner)?,
            },
            aliases: s.aliases().into_iter().map(str::to_string).collect(),
            command: (!s.command.is_empty()).then(|| s.command.clone()),
            variables: s
                .variables
                .iter()
                .map(|v| Variable::new(v.key.clone(), v.value.clone()))
                .collect(),
        });
    }

    let strategy = match job.variable("GIT_STRATEGY") {
        Some("none") | Some("empty") => GitStrategy::None,
        Some("fetch") => GitStrategy::Fetch,
        Some("clone") => GitStrategy::Clone,
        _ if job.allow_git_fetch => GitStrategy::Fetch,
        _ => GitStrategy::Clone,
    };
    let depth = job
        .variable("GIT_DEPTH")
        .and_then(|d| d.parse().ok())
        .unwrap_or(job.git_info.depth);
    let git = if strategy == GitStrategy::None {
        GitSpec::none()
    } else {
        GitSpec {
            strategy,
            repo_url: job.git_info.repo_url.clone(),
            sha: job.git_info.sha.clone(),
            ref_name: job.git_info.git_ref.clone(),
            refspecs: job.git_info.refspecs.clone(),
            depth,
        }
    };

    let credentials = job
        .credentials
        .iter()
        .filter(|c| c.kind == "registry")
        .map(|c| RegistryCredential {
            registry: c.url.clone(),
            username: c.username.clone(),
            password: c.password.expose().to_string(),
        })
        .collect();

    let (artifacts, mut warnings) = super::artifacts::specs(job);
    warnings.extend(not_done(job));
    Ok(BuildSpec {
        job_id: job.id,
        runner: runner_short.to_string(),
        image,
        credentials,
        registry_mirrors: registry_mirrors.to_vec(),
        variables,
        steps,
        services,
        git,
        timeout,
        builds_dir,
        project_dir,
        shell: Shell::Sh,
        volumes: runner.docker.volumes.clone(),
        privileged: runner.docker.privileged,
        container_options: container_options(&runner.docker),
        helper_image: runner.docker.helper_image.clone(),
        warnings,
        artifacts,
        dependencies: super::artifacts::dependencies(job),
        // Set by the job's task, which holds the GitLab client.
        transport: Default::default(),
    })
}

/// The `[runners.docker]` keys that shape the job's containers.
fn container_options(docker: &config::DockerSettings) -> ContainerOptions {
    ContainerOptions {
        user: docker.user.clone(),
        cap_add: docker.cap_add.clone(),
        cap_drop: docker.cap_drop.clone(),
        devices: docker.devices.clone(),
        memory: docker.memory,
        // Positive and finite (the config checks it); the cast saturates.
        nano_cpus: docker.cpus.map(|cpus| (cpus * 1e9).round() as u64),
        shm_size: docker.shm_size,
        dns: docker.dns.clone(),
        dns_search: docker.dns_search.clone(),
        extra_hosts: docker.extra_hosts.clone(),
    }
}

/// The parts of a job drover runs without: the job goes on, and its trace says what is missing.
fn not_done(job: &JobResponse) -> Vec<String> {
    let mut warnings = Vec::new();
    if !job.cache.is_empty() {
        warnings.push(
            "this job's `cache:` is neither restored nor saved: drover does not implement caches yet"
                .to_string(),
        );
    }
    warnings
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn fixture_job() -> JobResponse {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/gitlab-api/job-response.json");
        drover_gitlab::api::decode(&std::fs::read(path).unwrap()).unwrap()
    }

    fn runner() -> RunnerSettings {
        runner_with("")
    }

    /// A runner with `docker` (TOML lines) added to its `[runners.docker]`.
    fn runner_with(docker: &str) -> RunnerSettings {
        let text = format!(
            "concurrent = 1\n[[runners]]\nname = \"r\"\nexecutor = \"docker\"\n\
             [runners.docker]\nimage = \"alpine\"\npull_policy = [\"if-not-present\"]\n{docker}"
        );
        config::parse(&text, Path::new("config.toml"))
            .unwrap()
            .runners[0]
            .clone()
    }

    fn with_image(image: &str) -> JobResponse {
        let mut job = fixture_job();
        job.image.name = image.to_string();
        job
    }

    #[test]
    fn allowed_images_are_globs_and_the_default_image_is_always_allowed() {
        let runner = runner_with(
            "allowed_images = [\"ruby:*\", \"my.registry.tld:5000/*/*\", \"mirror.local/**\"]\n",
        );
        for allowed in [
            "ruby:3.3-alpine",
            "my.registry.tld:5000/group/app:1",
            "mirror.local/a/b/c:2",
            "alpine",
        ] {
            let spec = build_spec(&with_image(allowed), &runner, "r", &[]);
            assert_eq!(spec.map(|s| s.image.name), Ok(allowed.to_string()));
        }
        for refused in [
            "ubuntu",
            "ruby/evil:1",
            "my.registry.tld:5000/group/sub/app",
            "alpine:edge",
        ] {
            let err = build_spec(&with_image(refused), &runner, "r", &[]).unwrap_err();
            assert_eq!(
                err.reason,
                drover_core::FailureReason::RunnerConfigurationError,
                "{refused}"
            );
            assert!(
                err.message
                    .contains(&format!("the image {refused:?} is not allowed"))
                    && err.message.contains("allowed_images = [\"ruby:*\", "),
                "{err}"
            );
        }
        // No list: any image.
        assert!(build_spec(&with_image("ubuntu"), &runner_with(""), "r", &[]).is_ok());
    }

    #[test]
    fn container_settings_reach_the_spec() {
        let configured = runner_with(
            "user = \"nobody\"\ncap_add = [\"NET_ADMIN\"]\ncap_drop = [\"CHOWN\"]\n\
             devices = [\"/dev/fuse\"]\nmemory = \"512m\"\ncpus = \"1.5\"\nshm_size = 67108864\n\
             dns = [\"10.0.0.53\"]\ndns_search = [\"corp.local\"]\n\
             extra_hosts = [\"gitlab.local:10.0.0.2\"]\n",
        );
        let spec = build_spec(&fixture_job(), &configured, "r", &[]).unwrap();
        let strings = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            spec.container_options,
            ContainerOptions {
                user: Some("nobody".into()),
                cap_add: strings(&["NET_ADMIN"]),
                cap_drop: strings(&["CHOWN"]),
                devices: strings(&["/dev/fuse"]),
                memory: Some(512 << 20),
                nano_cpus: Some(1_500_000_000),
                shm_size: Some(64 << 20),
                dns: strings(&["10.0.0.53"]),
                dns_search: strings(&["corp.local"]),
                extra_hosts: strings(&["gitlab.local:10.0.0.2"]),
            }
        );
        let plain = build_spec(&fixture_job(), &runner(), "r", &[]).unwrap();
        assert_eq!(plain.container_options, ContainerOptions::default());
    }

    #[test]
    fn allowed_services_bind_the_jobs_services_not_the_runners() {
        let job = fixture_job();
        let names = |spec: BuildSpec| -> Vec<String> {
            spec.services.into_iter().map(|s| s.image.name).collect()
        };
        let runner = runner_with(
            "allowed_services = [\"postgres:*\", \"redis:*\"]\n\
             [[runners.docker.services]]\nname = \"own/sidecar:1\"\n",
        );
        assert_eq!(
            build_spec(&job, &runner, "r", &[]).map(names),
            Ok(vec![
                "own/sidecar:1".to_string(),
                "postgres:16".to_string(),
                "redis:7".to_string()
            ])
        );

        let runner = runner_with("allowed_services = [\"postgres:*\"]\n");
        let err = build_spec(&job, &runner, "r", &[]).unwrap_err();
        assert_eq!(
            err.reason,
            drover_core::FailureReason::RunnerConfigurationError
        );
        assert!(
            err.message.contains("the image \"redis:7\" is not allowed")
                && err.message.contains("allowed_services = [\"postgres:*\"]"),
            "{err}"
        );

        // A job service that is one of the runner's own services is allowed.
        let runner = runner_with(
            "allowed_services = [\"postgres:*\"]\n\
             [[runners.docker.services]]\nname = \"redis:7\"\n",
        );
        assert!(build_spec(&job, &runner, "r", &[]).is_ok());
        // The job's image is not held to allowed_services.
        let runner = runner_with("allowed_services = [\"nothing\"]\n");
        let mut plain = job;
        plain.services.clear();
        assert!(build_spec(&plain, &runner, "r", &[]).is_ok());
    }

    #[test]
    fn a_job_service_without_an_image_is_named_in_the_failure() {
        let mut job = fixture_job();
        job.services.push(Default::default());
        let err = build_spec(&job, &runner(), "r", &[]).unwrap_err();
        assert_eq!(err.reason, drover_core::FailureReason::RunnerSystemFailure);
        assert_eq!(
            err.message,
            "service 3 of the job (`services[2]`, alias \"\") names no image"
        );
    }

    #[test]
    fn after_script_never_changes_the_result_whatever_the_payload_says() {
        let mut job = fixture_job();
        for step in &mut job.steps {
            step.allow_failure = false;
        }
        let spec = build_spec(&job, &runner(), "r", &[]).unwrap();
        let allowed: Vec<(StepName, bool)> = spec
            .steps
            .iter()
            .map(|s| (s.name, s.allow_failure))
            .collect();
        assert_eq!(
            allowed,
            vec![(StepName::Script, false), (StepName::AfterScript, true)]
        );
    }

    #[test]
    fn only_public_variables_are_public_to_services() {
        let job = fixture_job();
        let spec = build_spec(&job, &runner(), "r", &[]).unwrap();
        for v in &job.variables {
            let mapped = spec.variables.iter().rfind(|m| m.key == v.key).unwrap();
            assert_eq!(mapped.public, v.public && !v.masked, "{}", v.key);
        }
        assert!(
            spec.variables.iter().any(|v| !v.public),
            "the fixture has secrets"
        );
        let runners_own = spec.variables.iter().find(|v| v.key == "CI_BUILDS_DIR");
        assert!(runners_own.is_some_and(|v| v.public));
    }

    #[test]
    fn caches_the_job_asks_for_become_trace_warnings_artifacts_reach_the_spec() {
        let job = fixture_job();
        assert!(!job.artifacts.is_empty() && !job.cache.is_empty());
        let spec = build_spec(&job, &runner(), "r", &[]).unwrap();
        let warnings = spec.warnings.join("\n");
        assert_eq!(spec.warnings.len(), 1, "{warnings}");
        assert_eq!(spec.artifacts.len(), 2);
        assert_eq!(spec.dependencies.len(), 1);
        assert!(
            warnings.contains("`cache:` is neither restored nor saved"),
            "{warnings}"
        );

        let mut plain = job;
        plain.artifacts.clear();
        plain.cache.clear();
        plain.dependencies.clear();
        let spec = build_spec(&plain, &runner(), "r", &[]).unwrap();
        assert!(spec.warnings.is_empty(), "{:?}", spec.warnings);
    }
}
