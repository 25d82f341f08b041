//! GitLab's job payload plus the runner's `[runners.docker]` settings → the executor's [`BuildSpec`].
//! The `with_*` functions add what is known only when the job runs; `jobs::job_spec` applies them
//! in order.

use std::time::Duration;

use drover_docker::auth;
use drover_docker::{
    BuildSpec, ContainerOptions, ImageSpec, PullPolicy, RegistryCredential, ServiceSpec, Shell,
    StepName, StepSpec, Variable, When,
};
use drover_gitlab::api::{JobResponse, StepWhen, step_name};
use globset::GlobBuilder;

use super::expand::expand;
use super::short_token::gitlab_short_token;
use super::sources;
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
    let builds_dir = runner
        .builds_dir
        .clone()
        .unwrap_or_else(|| "/builds".to_string());
    let mut warnings = Vec::new();
    let lookup = sources::Lookup::new(job, &runner.environment);
    let strategy = sources::strategy(job, &lookup, &mut warnings);
    warnings.extend(sources::unsupported(job, &lookup));
    let git = sources::git_spec(job, &lookup, strategy).map_err(|message| Unsupported {
        // GitLab Runner fails the sources stage on these: the job's own setting.
        reason: drover_core::FailureReason::ScriptFailure,
        message,
    })?;
    let project_dir = sources::project_dir(&builds_dir, job, strategy);

    // The runner's environment first, then drover's own, then the job's: later keys win.
    let mut variables: Vec<Variable> = runner
        .environment
        .iter()
        .map(|(k, v)| Variable::new(k.clone(), v.clone()))
        .collect();
    for (k, v) in [
        ("CI_BUILDS_DIR", builds_dir.clone()),
        ("CI_PROJECT_DIR", project_dir.clone()),
        (
            "CI_RUNNER_SHORT_TOKEN",
            runner.token.as_ref().map_or_else(
                || runner_short.to_string(),
                |t| gitlab_short_token(t.expose()),
            ),
        ),
        (
            "CI_RUNNER_VERSION",
            format!("drover {}", env!("CARGO_PKG_VERSION")),
        ),
        ("CI_RUNNER_EXECUTABLE_ARCH", executable_arch()),
        ("CI_DISPOSABLE_ENVIRONMENT", "true".to_string()),
        ("CI_SERVER", "yes".to_string()),
        ("CI_JOB_TIMEOUT", timeout.as_secs().to_string()),
    ] {
        variables.push(Variable::new(k, v));
    }
    variables.extend(job.variables.iter().map(|v| Variable {
        key: v.key.clone(),
        value: v.value.clone(),
        file: v.file,
        public: v.public && !v.masked,
    }));

    // Names are expanded against the job's variables before anything checks them, as GitLab
    // Runner does (`image: $CI_REGISTRY/group/app:$TAG`).
    let image_name = if job.image.name.is_empty() {
        runner.docker.image.clone().ok_or_else(|| Unsupported {
            reason: drover_core::FailureReason::RunnerConfigurationError,
            message: "the job names no image and the runner has no [runners.docker] image".into(),
        })?
    } else {
        let name = expand(&job.image.name, &variables);
        let default_image: Vec<&str> = runner.docker.image.iter().map(String::as_str).collect();
        check_allowed(
            &name,
            "allowed_images",
            &runner.docker.allowed_images,
            &default_image,
        )?;
        name
    };
    if !job.image.name.is_empty() {
        // Before the job's own variables, which may set it (GitLab Runner's precedence).
        let at = variables.len() - job.variables.len();
        variables.insert(at, Variable::new("CI_JOB_IMAGE", image_name.clone()));
    }
    let image = ImageSpec {
        name: image_name,
        entrypoint: (!job.image.entrypoint.is_empty()).then(|| job.image.entrypoint.clone()),
        pull_policy: pull_policies(&job.image.pull_policy, runner)?,
    };

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

    // A service sees the runner's and drover's variables and the job's public ones, never a
    // masked or protected one; its own come last and are expanded against all of them.
    let internal = variables.len() - job.variables.len();
    let shared: Vec<Variable> = variables[..internal]
        .iter()
        .cloned()
        .chain(
            job.variables
                .iter()
                .filter(|v| v.public && !v.file)
                .map(|v| Variable::new(v.key.clone(), v.value.clone())),
        )
        .collect();
    let service_env = |own: Vec<(String, String)>| -> Vec<Variable> {
        let mut env = shared.clone();
        env.extend(
            own.into_iter()
                .map(|(k, v)| Variable::new(k, expand(&v, &variables))),
        );
        env
    };
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
            variables: service_env(s.environment.clone()),
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
        let name = expand(&s.name, &variables);
        check_allowed(
            &name,
            "allowed_services",
            &runner.docker.allowed_services,
            &runner_services,
        )?;
        services.push(ServiceSpec {
            image: ImageSpec {
                name,
                entrypoint: (!s.entrypoint.is_empty()).then(|| s.entrypoint.clone()),
                pull_policy: pull_policies(&s.pull_policy, runner)?,
            },
            aliases: s
                .aliases()
                .into_iter()
                .map(|alias| expand(alias, &variables))
                .collect(),
            command: (!s.command.is_empty()).then(|| s.command.clone()),
            variables: service_env(
                s.variables
                    .iter()
                    .map(|v| (v.key.clone(), v.value.clone()))
                    .collect(),
            ),
        });
    }

    let credentials = registry_credentials(job, &variables, &mut warnings);

    let (artifacts, artifact_warnings) = super::artifacts::specs(job);
    warnings.extend(artifact_warnings);
    Ok(BuildSpec {
        job_id: job.id,
        runner: runner_short.to_string(),
        // Filled by the daemon, which knows the token.
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
        // Filled by `cache::plan`, which needs the machine the job runs on.
        caches: Vec::new(),
        kept_volumes: Vec::new(),
    })
}

/// The registry credentials of a job, before the runner user's `~/.docker/config.json` (which
/// [`with_home_credentials`] adds): `DOCKER_AUTH_CONFIG` (a job variable, else the runner's
/// `environment`), then the payload's `credentials`. A `DOCKER_AUTH_CONFIG` drover cannot read is
/// a warning in the trace, as GitLab Runner goes on without it.
fn registry_credentials(
    job: &JobResponse,
    variables: &[Variable],
    warnings: &mut Vec<String>,
) -> Vec<RegistryCredential> {
    let mut credentials = Vec::new();
    if let Some(config) = variables
        .iter()
        .rev()
        .find(|v| v.key == "DOCKER_AUTH_CONFIG")
    {
        // Also as a file variable: the value is the config itself.
        match auth::parse_docker_config(&config.value, auth::SOURCE_DOCKER_AUTH_CONFIG) {
            Ok(found) => credentials.extend(found),
            Err(err) => warnings.push(format!("ignoring registry credentials: {err}")),
        }
    }
    credentials.extend(
        job.credentials
            .iter()
            .filter(|c| c.kind == "registry")
            .map(|c| RegistryCredential {
                registry: c.url.clone(),
                username: c.username.clone(),
                password: c.password.expose().to_string(),
                source: auth::SOURCE_JOB_PAYLOAD.to_string(),
            }),
    );
    credentials
}

/// Adds the credentials of the user drover runs as (`~/.docker/config.json`) where GitLab Runner
/// ranks them: after `DOCKER_AUTH_CONFIG`, before the job payload's.
pub fn with_home_credentials(spec: &mut BuildSpec, home: &[RegistryCredential]) {
    let at = spec
        .credentials
        .iter()
        .take_while(|c| c.source == auth::SOURCE_DOCKER_AUTH_CONFIG)
        .count();
    spec.credentials.splice(at..at, home.iter().cloned());
}

/// The credentials in the `~/.docker/config.json` (or `~/.dockercfg`) of the user drover runs as;
/// none without a `HOME`.
pub fn home_registry_credentials() -> Result<Vec<RegistryCredential>, auth::AuthConfigError> {
    match std::env::var_os("HOME") {
        Some(home) if !home.is_empty() => auth::home_credentials(std::path::Path::new(&home)),
        _ => Ok(Vec::new()),
    }
}

/// The runner's own registry credentials, for what it pulls outside a job (a sandbox's default
/// image): `DOCKER_AUTH_CONFIG` in `[[runners]] environment`, then `~/.docker/config.json`.
pub fn runner_credentials(
    runner: &RunnerSettings,
    home: &[RegistryCredential],
) -> Result<Vec<RegistryCredential>, auth::AuthConfigError> {
    let mut credentials = match runner
        .environment
        .iter()
        .rev()
        .find(|(k, _)| k == "DOCKER_AUTH_CONFIG")
    {
        Some((_, config)) => auth::parse_docker_config(config, auth::SOURCE_DOCKER_AUTH_CONFIG)?,
        None => Vec::new(),
    };
    credentials.extend(home.iter().cloned());
    Ok(credentials)
}

/// `CI_RUNNER_EXECUTABLE_ARCH` in Go's terms, as GitLab Runner reports it (`linux/amd64`).
fn executable_arch() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    };
    format!("{}/{arch}", std::env::consts::OS)
}

/// `CI_CONCURRENT_ID` and `CI_CONCURRENT_PROJECT_ID` of a job, known once it runs: before the
/// job's variables, like GitLab Runner's own.
pub fn with_concurrency(spec: &mut BuildSpec, id: u32, project_id: u32) {
    let ids = [
        Variable::new("CI_CONCURRENT_ID", id.to_string()),
        Variable::new("CI_CONCURRENT_PROJECT_ID", project_id.to_string()),
    ];
    spec.variables.splice(0..0, ids.clone());
    for service in &mut spec.services {
        service.variables.splice(0..0, ids.clone());
    }
}

/// `CI_SERVER_TLS_CA_FILE`: a file variable holding the CA chain of `tls-ca-file`, which the
/// sources step also gives git for GitLab's host. Before the job's variables.
pub fn with_tls_ca(spec: &mut BuildSpec, ca: String) {
    let variable = Variable {
        key: "CI_SERVER_TLS_CA_FILE".to_string(),
        value: ca,
        file: true,
        public: true,
    };
    spec.variables.insert(0, variable);
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
    fn artifacts_reach_the_spec_without_warnings() {
        let job = fixture_job();
        assert!(!job.artifacts.is_empty() && !job.cache.is_empty());
        let spec = build_spec(&job, &runner(), "r", &[]).unwrap();
        assert!(spec.warnings.is_empty(), "{:?}", spec.warnings);
        assert_eq!(spec.artifacts.len(), 2);
        assert_eq!(spec.dependencies.len(), 1);

        let mut plain = job;
        plain.artifacts.clear();
        plain.cache.clear();
        plain.dependencies.clear();
        let spec = build_spec(&plain, &runner(), "r", &[]).unwrap();
        assert!(spec.warnings.is_empty(), "{:?}", spec.warnings);
    }

    fn variable(key: &str, value: &str) -> drover_gitlab::api::Variable {
        drover_gitlab::api::Variable {
            key: key.into(),
            value: value.into(),
            public: true,
            ..Default::default()
        }
    }

    #[test]
    fn image_and_service_names_are_expanded_before_the_allowed_lists() {
        let runner = runner_with(
            "allowed_images = [\"registry.local:5000/**\"]\n\
             allowed_services = [\"registry.local:5000/**\"]\n",
        );
        let mut job = with_image("$REGISTRY/app:${TAG}");
        job.variables
            .push(variable("REGISTRY", "registry.local:5000"));
        job.variables.push(variable("TAG", "7"));
        job.services.truncate(1);
        job.services[0].name = "$REGISTRY/db:16".into();
        job.services[0].alias = "db-$TAG".into();
        let spec = build_spec(&job, &runner, "r", &[]).unwrap();
        assert_eq!(spec.image.name, "registry.local:5000/app:7");
        assert_eq!(spec.services[0].image.name, "registry.local:5000/db:16");
        assert_eq!(spec.services[0].aliases, vec!["db-7"]);

        // The check sees the expanded name: a variable cannot smuggle an image past it.
        job.variables.push(variable("REGISTRY", "evil.example"));
        let err = build_spec(&job, &runner, "r", &[]).unwrap_err();
        assert!(
            err.message
                .contains("\"evil.example/app:7\" is not allowed"),
            "{err}"
        );
    }

    /// `DOCKER_AUTH_CONFIG` for `registry` with `user`.
    fn auth_config(registry: &str, user: &str) -> String {
        format!(r#"{{"auths": {{"{registry}": {{"username": "{user}", "password": "pw"}}}}}}"#)
    }

    #[test]
    fn credentials_come_from_docker_auth_config_then_home_then_the_payload() {
        let runner = runner_with("");
        let mut runner_env = runner.clone();
        runner_env.environment.push((
            "DOCKER_AUTH_CONFIG".into(),
            auth_config("runner.local", "from-runner"),
        ));
        let job = fixture_job();
        let sources = |spec: &BuildSpec| -> Vec<(String, String)> {
            spec.credentials
                .iter()
                .map(|c| (c.username.clone(), c.source.clone()))
                .collect()
        };
        let payload = (
            "gitlab-ci-token".to_string(),
            auth::SOURCE_JOB_PAYLOAD.to_string(),
        );

        let spec = build_spec(&job, &runner, "r", &[]).unwrap();
        assert_eq!(sources(&spec), vec![payload.clone()]);

        // The runner's environment, overridden by the job's own variable.
        let spec = build_spec(&job, &runner_env, "r", &[]).unwrap();
        assert_eq!(spec.credentials[0].username, "from-runner");
        let mut own = job.clone();
        own.variables.push(variable(
            "DOCKER_AUTH_CONFIG",
            &auth_config("job.local", "from-job"),
        ));
        let mut spec = build_spec(&own, &runner_env, "r", &[]).unwrap();
        let home = auth::parse_docker_config(
            &auth_config("home.local", "from-home"),
            "/h/.docker/config.json",
        )
        .unwrap();
        with_home_credentials(&mut spec, &home);
        assert_eq!(
            sources(&spec),
            vec![
                ("from-job".to_string(), "$DOCKER_AUTH_CONFIG".to_string()),
                (
                    "from-home".to_string(),
                    "/h/.docker/config.json".to_string()
                ),
                payload,
            ]
        );
        assert!(spec.warnings.iter().all(|w| !w.contains("credentials")));

        // What cannot be read is a warning that shows nothing of the value.
        let mut broken = job;
        broken
            .variables
            .push(variable("DOCKER_AUTH_CONFIG", "{\"auths\": s3cret"));
        let spec = build_spec(&broken, &runner, "r", &[]).unwrap();
        let warning = spec
            .warnings
            .iter()
            .find(|w| w.contains("ignoring registry credentials: $DOCKER_AUTH_CONFIG"))
            .expect("a warning");
        assert!(!warning.contains("s3cret"), "{warning}");
        assert_eq!(spec.credentials.len(), 1, "the payload's still count");

        // A sandbox uses the runner's: its environment, then home.
        let sandbox = runner_credentials(&runner_env, &home).unwrap();
        let users: Vec<&str> = sandbox.iter().map(|c| c.username.as_str()).collect();
        assert_eq!(users, vec!["from-runner", "from-home"]);
    }

    fn value_of<'a>(variables: &'a [Variable], key: &str) -> Option<&'a str> {
        variables
            .iter()
            .rev()
            .find(|v| v.key == key)
            .map(|v| v.value.as_str())
    }

    #[test]
    fn the_runner_sets_gitlab_runners_own_variables() {
        let mut runner = runner();
        runner.token = Some("glrt-t1_6sYkQxW9bN3pLmZr7cVd".to_string().into());
        let mut job = fixture_job();
        job.runner_info.timeout = 1800;
        let mut spec = build_spec(&job, &runner, "6sykqxw9b", &[]).unwrap();
        with_concurrency(&mut spec, 3, 0);
        with_tls_ca(&mut spec, "-----BEGIN CERTIFICATE-----\n".to_string());
        let ca = spec
            .variables
            .iter()
            .find(|v| v.key == "CI_SERVER_TLS_CA_FILE")
            .expect("the CA variable");
        assert!(ca.file && ca.value.starts_with("-----BEGIN"), "{ca:?}");
        let v = &spec.variables;
        assert_eq!(value_of(v, "CI_RUNNER_SHORT_TOKEN"), Some("6sYkQxW9b"));
        assert_eq!(value_of(v, "CI_JOB_TIMEOUT"), Some("1800"));
        assert_eq!(value_of(v, "CI_JOB_IMAGE"), Some("ruby:3.3-alpine"));
        assert_eq!(value_of(v, "CI_PROJECT_DIR"), Some("/builds/acme/widget"));
        assert_eq!(value_of(v, "CI_BUILDS_DIR"), Some("/builds"));
        assert_eq!(value_of(v, "CI_CONCURRENT_ID"), Some("3"));
        assert_eq!(value_of(v, "CI_CONCURRENT_PROJECT_ID"), Some("0"));
        let arch = value_of(v, "CI_RUNNER_EXECUTABLE_ARCH").unwrap();
        assert!(
            ["linux/amd64", "linux/arm64"].contains(&arch) || !arch.contains("x86_64"),
            "{arch}"
        );
        // A job's own value wins over the runner's.
        job.variables.push(variable("CI_JOB_IMAGE", "mine"));
        let spec = build_spec(&job, &runner, "r", &[]).unwrap();
        assert_eq!(value_of(&spec.variables, "CI_JOB_IMAGE"), Some("mine"));
        // No image of its own: no CI_JOB_IMAGE.
        job.image.name.clear();
        job.variables.pop();
        let spec = build_spec(&job, &runner, "r", &[]).unwrap();
        assert_eq!(value_of(&spec.variables, "CI_JOB_IMAGE"), None);
    }

    #[test]
    fn services_get_public_variables_only_and_their_own_expanded() {
        let mut job = fixture_job();
        let mut secret = variable("DEPLOY_KEY", "hush");
        secret.public = false;
        secret.masked = true;
        job.variables.push(secret);
        job.variables.push(variable("DB_NAME", "widget"));
        job.services[0]
            .variables
            .push(drover_gitlab::api::ServiceVariable {
                key: "POSTGRES_DB".into(),
                value: "${DB_NAME}_test".into(),
            });
        let mut runner = runner();
        runner
            .environment
            .push(("RUNNER_WIDE".into(), "yes".into()));
        let spec = build_spec(&job, &runner, "r", &[]).unwrap();
        let db = &spec.services[0].variables;
        assert_eq!(value_of(db, "DB_NAME"), Some("widget"));
        assert_eq!(value_of(db, "POSTGRES_DB"), Some("widget_test"));
        assert_eq!(value_of(db, "RUNNER_WIDE"), Some("yes"));
        assert_eq!(value_of(db, "CI_PROJECT_DIR"), Some("/builds/acme/widget"));
        assert_eq!(value_of(db, "DEPLOY_KEY"), None, "masked: not for services");
        assert_eq!(value_of(&spec.variables, "DEPLOY_KEY"), Some("hush"));
    }

    #[test]
    fn git_settings_and_the_empty_strategy_reach_the_spec() {
        let mut job = fixture_job();
        job.variables.push(variable("GIT_STRATEGY", "empty"));
        let spec = build_spec(&job, &runner(), "r", &[]).unwrap();
        assert_eq!(spec.git.strategy, drover_docker::GitStrategy::Empty);
        assert_eq!(spec.project_dir, "/builds/acme/widget-empty");
        job.variables.pop();
        job.variables
            .push(variable("GIT_SUBMODULE_STRATEGY", "sideways"));
        let err = build_spec(&job, &runner(), "r", &[]).unwrap_err();
        assert_eq!(err.reason, drover_core::FailureReason::ScriptFailure);
        job.variables.pop();
        job.variables
            .push(variable("GIT_CLONE_PATH", "$CI_BUILDS_DIR/x"));
        let spec = build_spec(&job, &runner(), "r", &[]).unwrap();
        assert!(
            spec.warnings.iter().any(|w| w.contains("GIT_CLONE_PATH")),
            "{:?}",
            spec.warnings
        );
    }
}
