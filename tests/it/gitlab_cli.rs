//! `drover register | list | verify | unregister` against the fake GitLab, through the binary.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use drover_gitlab::fake::{FakeGitlab, FakeOptions};

/// What a run of the binary produced.
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl std::fmt::Debug for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit {}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs drover with a clean environment (GitLab CI's own CI_SERVER_URL etc. must not leak in).
async fn drover(home: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    drover_in(None, home, args, env).await
}

/// [`drover`] in the working directory `cwd`, if given.
async fn drover_in(cwd: Option<&Path>, home: &Path, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_drover"));
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    command
        .args(args)
        .env_clear()
        .env("HOME", home)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    for (k, v) in env {
        command.env(k, v);
    }
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("drover did not finish within 60 s")
        .expect("drover runs");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn config_in(dir: &Path) -> PathBuf {
    dir.join("etc").join("drover").join("config.toml")
}

fn toml_of(path: &Path) -> toml::Value {
    toml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn runner_names(path: &Path) -> Vec<String> {
    toml_of(path)
        .get("runners")
        .and_then(|r| r.as_array())
        .map(|a| {
            a.iter()
                .map(|r| r["name"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

fn assert_no_violations(fake: &FakeGitlab) {
    let v = fake.violations();
    assert!(v.is_empty(), "protocol violations: {v:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_list_verify_delete_and_unregister() {
    let fake = FakeGitlab::start(FakeOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let config = config_in(home);
    let config_arg = config.to_str().unwrap();

    // 1. A runner created in GitLab's UI (glrt- token): verified, and its manager recorded.
    let glrt = fake.create_runner_token();
    let run = drover(
        home,
        &[
            "register",
            "-c",
            config_arg,
            "--non-interactive",
            "--url",
            fake.url(),
            "--token",
            &glrt,
            "--executor",
            "docker+machine",
            "--docker-image",
            "alpine:3.20",
            "--name",
            "ui-runner",
            "--limit",
            "4",
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        !run.stdout.contains(&glrt) && !run.stderr.contains(&glrt),
        "the token is never printed: {run:?}"
    );
    assert!(run.stdout.contains("glrt-"), "{run:?}");
    let mode = std::fs::metadata(&config).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "config.toml holds tokens");
    let system_id =
        std::fs::read_to_string(config.parent().unwrap().join(".runner_system_id")).unwrap();
    let system_id = system_id.trim();
    assert!(
        system_id.starts_with("r_") && system_id.len() == 14,
        "{system_id}"
    );
    let runner = fake.runner(&glrt).unwrap();
    assert_eq!(
        runner
            .managers
            .iter()
            .map(|m| m.system_id.as_str())
            .collect::<Vec<_>>(),
        [system_id]
    );
    // The manager is described as the daemon describes it (what it runs, not just the protocol).
    let manager = &runner.managers[0];
    assert_eq!(manager.executor, "docker+machine");
    assert!(
        manager.features.two_phase_job_commit
            && manager.features.image
            && manager.features.masking
            && manager.features.cancel_gracefully
            && manager.features.artifacts
            && manager.features.upload_multiple_artifacts
            && manager.features.artifacts_exclude,
        "{:?}",
        manager.features
    );
    let toml = toml_of(&config);
    let entry = &toml["runners"][0];
    assert_eq!(entry["token"].as_str(), Some(glrt.as_str()));
    assert_eq!(entry["url"].as_str(), Some(fake.url()));
    assert_eq!(entry["id"].as_integer(), Some(runner.id as i64));
    assert_eq!(entry["executor"].as_str(), Some("docker+machine"));
    assert_eq!(entry["limit"].as_integer(), Some(4));
    assert_eq!(entry["docker"]["image"].as_str(), Some("alpine:3.20"));
    assert_eq!(entry["machine"]["IdleCount"].as_integer(), Some(0));
    assert_eq!(entry["machine"]["MachineName"].as_str(), Some("drover-%s"));
    assert!(entry["token_obtained_at"].as_datetime().is_some());
    assert_eq!(toml["concurrent"].as_integer(), Some(1));

    // The operator edits the file by hand.
    let edited = format!(
        "# Operator's note: do not touch the autoscaler.\n{}",
        std::fs::read_to_string(&config).unwrap()
    )
    .replace(
        "concurrent = 1",
        "concurrent = 8 # raised for the release week",
    );
    std::fs::write(&config, &edited).unwrap();

    // 2. A legacy registration token: a new glrtr- runner, with its settings sent to GitLab.
    let run = drover(
        home,
        &[
            "register",
            "-c",
            config_arg,
            "-n",
            "--url",
            &format!("{}/", fake.url()),
            "--registration-token",
            &fake.registration_token(),
            "--executor",
            "docker",
            "--docker-image",
            "busybox",
            "--name",
            "legacy-runner",
            "--tag-list",
            "a,b",
            "--locked=false",
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.starts_with(&edited),
        "the operator's text is kept verbatim:\n{text}"
    );
    assert_eq!(runner_names(&config), ["ui-runner", "legacy-runner"]);
    let legacy_token = toml_of(&config)["runners"][1]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(legacy_token.starts_with("glrtr-"));
    let legacy = fake.runner(&legacy_token).unwrap();
    assert_eq!(
        (
            legacy.tags.clone(),
            legacy.locked,
            legacy.description.as_str()
        ),
        (
            vec!["a".to_string(), "b".to_string()],
            Some(false),
            "legacy-runner"
        )
    );
    assert!(
        toml_of(&config)["runners"][1].get("machine").is_none(),
        "no machine table for plain docker"
    );

    // 3. list: no network, tokens masked.
    let requests_before = fake.requests().len();
    let run = drover(home, &["list", "-c", config_arg], &[]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        fake.requests().len(),
        requests_before,
        "list does not talk to GitLab"
    );
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{run:?}");
    assert!(
        lines[0].starts_with("NAME") && lines[0].contains("EXECUTOR") && lines[0].contains("TOKEN")
    );
    assert!(
        lines[1].starts_with("ui-runner")
            && lines[1].contains("docker+machine")
            && lines[1].contains(fake.url())
    );
    assert!(lines[2].starts_with("legacy-runner") && lines[2].contains("glrtr-"));
    assert!(
        !run.stdout.contains(&glrt) && !run.stdout.contains(&legacy_token),
        "{run:?}"
    );

    // 4. verify: both valid.
    let run = drover(home, &["verify", "-c", config_arg], &[]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stdout.matches("is valid").count(), 2, "{run:?}");

    // 5. GitLab forgets the legacy runner: verify reports it and fails, without touching the file.
    fake.delete_runner(&legacy_token);
    let run = drover(home, &["verify", "-c", config_arg], &[]).await;
    assert_eq!(run.code, 4, "{run:?}");
    assert!(
        run.stdout.contains("is removed") && run.stdout.contains("name=legacy-runner"),
        "{run:?}"
    );
    assert!(run.stderr.contains("--delete"), "{run:?}");
    assert_eq!(runner_names(&config), ["ui-runner", "legacy-runner"]);

    // 6. verify --delete removes it, keeping the comments.
    let run = drover(home, &["verify", "-c", config_arg, "--delete"], &[]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(runner_names(&config), ["ui-runner"]);
    let text = std::fs::read_to_string(&config).unwrap();
    assert!(
        text.contains("# Operator's note") && text.contains("# raised for the release week"),
        "{text}"
    );
    assert_eq!(
        std::fs::metadata(&config).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // 7. unregister: a glrt- runner loses this host's manager; the runner stays in GitLab.
    let run = drover(
        home,
        &["unregister", "-c", config_arg, "--name", "ui-runner"],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(runner_names(&config).is_empty());
    let runner = fake
        .runner(&glrt)
        .expect("the runner itself stays in GitLab");
    assert!(runner.managers.is_empty());
    let deletes = fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "DELETE")
        .collect::<Vec<_>>();
    assert_eq!(deletes.len(), 1);
    assert_eq!(deletes[0].path, "/api/v4/runners/managers");
    assert_eq!(deletes[0].json().unwrap()["system_id"], system_id);

    let run = drover(home, &["list", "-c", config_arg], &[]).await;
    assert!(run.stdout.contains("No runners"), "{run:?}");
    assert_no_violations(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn environment_variables_work_like_gitlab_runners() {
    let fake = FakeGitlab::start(FakeOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let glrt = fake.create_runner_token();
    let run = drover(
        dir.path(),
        &["register", "-c", config.to_str().unwrap()],
        &[
            ("REGISTER_NON_INTERACTIVE", "true"),
            ("CI_SERVER_URL", fake.url()),
            ("CI_SERVER_TOKEN", &glrt),
            ("RUNNER_NAME", "from-env"),
            ("RUNNER_EXECUTOR", "docker"),
            ("DOCKER_IMAGE", "alpine:3.20"),
            ("RUNNER_LIMIT", "2"),
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let toml = toml_of(&config);
    assert_eq!(toml["runners"][0]["name"].as_str(), Some("from-env"));
    assert_eq!(toml["runners"][0]["limit"].as_integer(), Some(2));

    // The same token twice is refused, and the file is left alone.
    let before = std::fs::read_to_string(&config).unwrap();
    let run = drover(
        dir.path(),
        &["register", "-c", config.to_str().unwrap()],
        &[
            ("REGISTER_NON_INTERACTIVE", "true"),
            ("CI_SERVER_URL", fake.url()),
            ("CI_SERVER_TOKEN", &glrt),
            ("RUNNER_EXECUTOR", "docker"),
            ("DOCKER_IMAGE", "alpine:3.20"),
        ],
    )
    .await;
    assert_ne!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("already has a runner"), "{run:?}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), before);
    assert_no_violations(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_say_what_to_do() {
    let fake = FakeGitlab::start(FakeOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path();
    let config = config_in(home);
    let config_arg = config.to_str().unwrap();
    let register = |url: String, token_flag: &'static str, token: String| {
        let config_arg = config_arg.to_owned();
        async move {
            drover(
                home,
                &[
                    "register",
                    "-c",
                    &config_arg,
                    "-n",
                    "--url",
                    &url,
                    token_flag,
                    &token,
                    "--executor",
                    "docker",
                    "--docker-image",
                    "alpine",
                ],
                &[],
            )
            .await
        }
    };

    // Unreachable URL.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let run = register(
        format!("http://127.0.0.1:{port}"),
        "--token",
        "glrt-whatever".into(),
    )
    .await;
    assert_eq!(run.code, 4, "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "could not connect to http://127.0.0.1:{port}/api/v4/runners/verify"
        )),
        "{run:?}"
    );

    // Bad token.
    let run = register(fake.url().into(), "--token", "glrt-not-a-real-token".into()).await;
    assert_eq!(run.code, 4, "{run:?}");
    assert!(
        run.stderr
            .contains("GitLab refused the token (403 Forbidden)"),
        "{run:?}"
    );
    assert!(
        !run.stderr.contains("glrt-not-a-real-token"),
        "tokens are not echoed: {run:?}"
    );

    // Registration disabled.
    fake.set_registration_enabled(false);
    let run = register(
        fake.url().into(),
        "--registration-token",
        fake.registration_token(),
    )
    .await;
    assert_eq!(run.code, 4, "{run:?}");
    assert!(
        run.stderr.contains("410 Gone") && run.stderr.contains("--token glrt-"),
        "{run:?}"
    );
    assert!(
        !config.exists(),
        "nothing is written when registration fails"
    );

    // Missing values without a terminal.
    let run = drover(
        home,
        &["register", "-c", config_arg, "--non-interactive"],
        &[],
    )
    .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("--url") && run.stderr.contains("CI_SERVER_URL"),
        "{run:?}"
    );

    // No config file.
    let run = drover(home, &["list", "-c", config_arg], &[]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("does not exist") && run.stderr.contains("drover register"),
        "{run:?}"
    );
    assert_no_violations(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_needs_the_ca_file_and_it_is_written_to_the_config() {
    let fake = FakeGitlab::start(FakeOptions {
        tls: true,
        ..FakeOptions::default()
    })
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let config_arg = config.to_str().unwrap();
    let glrt = fake.create_runner_token();
    let args = |extra: &'static [&'static str]| {
        let mut v: Vec<String> = [
            "register",
            "-c",
            config_arg,
            "-n",
            "--url",
            fake.url(),
            "--token",
            &glrt,
            "--executor",
            "docker",
            "--docker-image",
            "alpine",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    let plain = args(&[]);
    let run = drover(
        dir.path(),
        &plain.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    )
    .await;
    assert_eq!(run.code, 4, "{run:?}");
    assert!(
        run.stderr.contains("TLS") && run.stderr.contains("tls-ca-file"),
        "{run:?}"
    );

    // A relative --tls-ca-file is taken from where register runs, and written absolute.
    let ca = dir.path().join("gitlab-ca.pem");
    std::fs::write(&ca, fake.ca_pem().unwrap()).unwrap();
    let mut with_ca = args(&[]);
    with_ca.extend(["--tls-ca-file".to_string(), "gitlab-ca.pem".to_string()]);
    let run = drover_in(
        Some(dir.path()),
        dir.path(),
        &with_ca.iter().map(String::as_str).collect::<Vec<_>>(),
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(
        toml_of(&config)["runners"][0]["tls-ca-file"].as_str(),
        Some(ca.to_str().unwrap())
    );

    // verify uses it too, from any working directory.
    let run = drover(dir.path(), &["verify", "-c", config_arg], &[]).await;
    assert_eq!(run.code, 0, "{run:?}");

    // A relative tls-ca-file in the file is relative to the config's directory, as for the
    // daemon, not to the working directory.
    std::fs::write(
        config.parent().unwrap().join("beside.pem"),
        fake.ca_pem().unwrap(),
    )
    .unwrap();
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("tls-ca-file = \"{}\"", ca.display()),
        "tls-ca-file = \"beside.pem\"",
    );
    assert!(text.contains("beside.pem"), "{text}");
    std::fs::write(&config, text).unwrap();
    let run = drover_in(
        Some(dir.path()),
        dir.path(),
        &["verify", "-c", config_arg],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert_no_violations(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregister_keeps_what_gitlab_did_not_confirm() {
    let fake = FakeGitlab::start(FakeOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let config_arg = config.to_str().unwrap();
    for name in ["one", "two"] {
        let run = drover(
            dir.path(),
            &[
                "register",
                "-c",
                config_arg,
                "-n",
                "--url",
                fake.url(),
                "--registration-token",
                &fake.registration_token(),
                "--executor",
                "docker",
                "--docker-image",
                "alpine",
                "--name",
                name,
            ],
            &[],
        )
        .await;
        assert_eq!(run.code, 0, "{run:?}");
    }
    let first_token = toml_of(&config)["runners"][0]["token"]
        .as_str()
        .unwrap()
        .to_owned();
    fake.delete_runner(&first_token);

    let run = drover(
        dir.path(),
        &["unregister", "-c", config_arg, "--all-runners"],
        &[],
    )
    .await;
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stderr.contains("drover verify --delete"), "{run:?}");
    assert_eq!(
        runner_names(&config),
        ["one"],
        "the refused runner stays, the other is gone"
    );
    assert!(fake.runners().is_empty());

    // --url/--token also works for a runner that is not in the file.
    let stray = fake.create_runner_token();
    let run = drover(
        dir.path(),
        &[
            "unregister",
            "-c",
            config_arg,
            "--url",
            fake.url(),
            "--token",
            &stray,
        ],
        &[],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("not in"), "{run:?}");
    let last = fake.requests().pop().unwrap();
    assert_eq!(
        (last.method.as_str(), last.path.as_str()),
        ("DELETE", "/api/v4/runners/managers")
    );
    assert!(
        fake.runner(&stray).is_some(),
        "a glrt- runner stays in GitLab; only this host's manager goes"
    );

    let run = drover(dir.path(), &["unregister", "-c", config_arg], &[]).await;
    assert_eq!(
        run.code, 2,
        "clap requires one of --name, --url, --all-runners: {run:?}"
    );
    assert_no_violations(&fake);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unregister_without_a_system_id_never_deletes_a_runner_created_in_gitlab() {
    let fake = FakeGitlab::start(FakeOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config_in(dir.path());
    let config_arg = config.to_str().unwrap();
    let glrt = fake.create_runner_token();
    // A config copied to a fresh host: the runner's entry, but no .runner_system_id beside it.
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(
        &config,
        format!(
            "concurrent = 1\n[[runners]]\n  name = \"shared\"\n  url = \"{}\"\n  token = \"{glrt}\"\n  \
             executor = \"docker\"\n",
            fake.url()
        ),
    )
    .unwrap();
    let before = std::fs::read_to_string(&config).unwrap();

    let by_name = ["unregister", "-c", config_arg, "--name", "shared"];
    let by_url = [
        "unregister",
        "-c",
        config_arg,
        "--url",
        fake.url(),
        "--token",
        &glrt,
    ];
    for args in [&by_name[..], &by_url[..]] {
        let run = drover(dir.path(), args, &[]).await;
        assert_eq!(run.code, 2, "a config error: {run:?}");
        assert!(
            run.stderr.contains("no .runner_system_id beside")
                && run
                    .stderr
                    .contains("cannot tell which runner manager is this host's")
                && run.stderr.contains("shared"),
            "{run:?}"
        );
        assert!(!run.stderr.contains(&glrt), "{run:?}");
    }
    assert!(
        fake.runner(&glrt).is_some(),
        "the runner stays in GitLab for its other hosts"
    );
    assert!(
        fake.requests().iter().all(|r| r.method != "DELETE"),
        "nothing was asked of GitLab: {:?}",
        fake.requests()
    );
    assert_eq!(std::fs::read_to_string(&config).unwrap(), before);
    assert!(!config.parent().unwrap().join(".runner_system_id").exists());
    assert_no_violations(&fake);
}
