use super::*;
use std::path::Path;

use drover_docker::{StepName, Variable, auth};

fn fixture_job() -> JobResponse {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/gitlab-api/job-response.json");
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
    let spec = build_spec(&job, &runner, "r", &[]).expect("the runner's own service is allowed");
    assert!(
        spec.services.iter().any(|s| s.image.name == "redis:7"),
        "the job's service runs"
    );
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
