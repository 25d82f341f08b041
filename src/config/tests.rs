//! Loading real files: the GitLab fixtures, every key drover reads, defaults, names, warnings.
//! The rendered error messages are snapshot-tested through the CLI in `tests/it/config.rs`.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use drover_core::Executor;

use super::diagnostic::WarningKind;
use super::*;

const GITLAB_FULL: &str = include_str!("../../fixtures/config/good/gitlab-full.toml");
const SEED: &str = include_str!("../../fixtures/config/good/seed-digitalocean.toml");
const EVERY_KEY: &str = include_str!("../../fixtures/config/good/every-key.toml");

fn berlin() -> LocalZone {
    LocalZone::Named("Europe/Berlin".into())
}

fn load_str(text: &str) -> Loaded {
    match parse_with_zone(text, Path::new("test.toml"), &berlin()) {
        Ok(loaded) => loaded,
        Err(e) => panic!("expected a valid config:\n{e}"),
    }
}

fn errors(text: &str) -> Vec<Diagnostic> {
    match parse_with_zone(text, Path::new("test.toml"), &berlin()) {
        Ok(_) => panic!("expected errors"),
        Err(ConfigError::Invalid { diagnostics, .. }) => diagnostics,
        Err(e) => panic!("expected Invalid, got {e}"),
    }
}

fn kinds(loaded: &Loaded) -> Vec<WarningKind> {
    loaded.warnings.iter().map(|w| w.kind).collect()
}

fn pool(loaded: &Loaded, i: usize) -> &drover_core::MachinePolicy {
    loaded.core.runners[i]
        .policy()
        .expect("a docker+machine runner")
}

#[test]
fn gitlab_full_loads_with_its_values() {
    let l = load_str(GITLAB_FULL);
    assert_eq!(l.core.concurrent, 40);
    assert_eq!(l.core.check_interval, Duration::from_secs(3));
    assert_eq!(l.core.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(l.core.seed, 0);
    assert_eq!(l.global.listen_address.as_deref(), Some("127.0.0.1:9252"));
    assert_eq!(l.global.log_level, Some(LogLevel::Info));
    assert_eq!(l.global.log_format, Some(LogFormat::Json));

    let names: Vec<&str> = l.core.runners.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(names, ["autoscale-linux", "small-docker"]);
    let linux = &l.core.runners[0];
    assert_eq!((linux.limit, linux.request_concurrency), (30, 4));
    // Machines are keyed by installation, URL and name, not by the token (which rotates).
    assert_eq!(
        linux.short_token,
        drover_core::config::machine_key(
            "",
            &l.runners[0].url.clone().unwrap_or_default(),
            "autoscale-linux"
        )
    );
    let p = pool(&l, 0);
    assert_eq!(p.base.idle_count, 4);
    assert_eq!(p.base.idle_count_min, 1);
    assert_eq!(p.base.idle_scale_factor, 0.5);
    assert_eq!(p.base.idle_time_ms, 1_800_000);
    assert_eq!(
        (p.max_builds, p.max_growth_rate, p.max_removal_attempts),
        (10, 5, 30)
    );
    assert_eq!(p.machine_name, "ci-%s");
    assert_eq!(p.periods.len(), 2);
    assert_eq!(p.periods[0].timezone().name(), "Europe/Berlin");
    assert_eq!(p.periods[0].exprs()[0].source(), "* * 9-17 * * mon-fri *");
    assert_eq!(
        (
            p.periods[0].values.idle_count,
            p.periods[0].values.idle_time_ms
        ),
        (10, 3_600_000)
    );
    assert_eq!(p.periods[1].timezone().name(), "UTC");
    assert_eq!(
        (
            p.periods[1].values.idle_count,
            p.periods[1].values.idle_time_ms
        ),
        (0, 300_000)
    );
    assert_eq!(l.core.runners[1].executor, Executor::Direct);
    assert_eq!(l.core.runners[1].limit, 4);

    let s = &l.runners[0];
    assert_eq!(
        s.require_registered().unwrap(),
        (
            "https://gitlab.example.com/",
            &drover_gitlab::Secret::new("glrt-EXAMPLEEXAMPLEEXAMPLE")
        )
    );
    assert_eq!(s.executor, ExecutorKind::DockerMachine);
    assert_eq!(s.output_limit_kb, 8192);
    assert_eq!(
        s.environment[1],
        ("FF_NETWORK_PER_BUILD".to_string(), "1".to_string())
    );
    assert_eq!(s.docker.image.as_deref(), Some("alpine:3.20"));
    assert_eq!(s.docker.pull_policy, [PullPolicy::IfNotPresent]);
    assert_eq!(s.docker.volumes, ["/cache"]);
    let m = s.machine.as_ref().unwrap();
    assert_eq!(m.provider, Provider::DockerMachine);
    assert_eq!(m.machine_driver.as_deref(), Some("amazonec2"));
    assert_eq!(m.machine_options.len(), 4);
    assert_eq!(m.registry_mirrors, ["http://10.0.0.5:6000"]);

    let docker = &l.runners[1];
    assert_eq!(docker.executor, ExecutorKind::Docker);
    assert!(docker.machine.is_none());
    assert_eq!(docker.docker.image.as_deref(), Some("busybox:latest"));
    assert_eq!(
        docker.docker.pull_policy,
        [PullPolicy::Always],
        "GitLab's default"
    );
    assert_eq!(
        l.runner("small-docker").map(|r| r.executor),
        Some(ExecutorKind::Docker)
    );
    assert_eq!(l.core.runners[1].request_concurrency, 1);
}

#[test]
fn one_warning_names_every_ignored_key_with_its_line() {
    let l = load_str(GITLAB_FULL);
    assert_eq!(kinds(&l), [WarningKind::IgnoredKeys]);
    let keys: Vec<(&str, usize)> = l.warnings[0]
        .keys
        .iter()
        .map(|k| (k.path.as_str(), k.line))
        .collect();
    assert_eq!(
        keys,
        [
            ("session_server", 10),
            ("runners[0].custom_build_dir", 25),
            ("runners[0].docker.tls_verify", 27)
        ]
    );
    assert_eq!(
        l.warnings[0].to_string(),
        "3 keys GitLab Runner knows have no effect in drover and are ignored: session_server \
         (line 10), runners[0].custom_build_dir (line 25), runners[0].docker.tls_verify (line 27)"
    );
}

#[test]
fn the_seed_example_loads_unregistered() {
    let l = load_str(SEED);
    assert_eq!(l.core.concurrent, 20);
    let r = &l.core.runners[0];
    assert_eq!((r.name.as_str(), r.limit), ("runner-1", 20));
    let p = pool(&l, 0);
    assert_eq!(p.base.idle_count, 5);
    assert_eq!(p.machine_name, "auto-scale-runners-%s.my.domain.com");
    assert_eq!(
        l.runners[0].machine.as_ref().unwrap().provider,
        Provider::DockerMachine
    );
    // Its flat S3 keys are no longer read by GitLab Runner either: no distributed cache.
    assert_eq!(
        kinds(&l),
        [
            WarningKind::Deprecated,
            WarningKind::UnnamedRunner,
            WarningKind::NoEffect
        ]
    );
    assert!(l.runners[0].cache.is_none());
    assert_eq!(
        l.warnings[1].keys[0].line, 5,
        "points at the [[runners]] header"
    );

    let err = l.require_registered().unwrap_err();
    assert_eq!(
        err.to_string(),
        "runner \"runner-1\" in test.toml has no `url` and no `token`: it is not registered with \
         GitLab\n  = hint: run `drover register -c test.toml` first, or add the runner's `url` and \
         `token` to its [[runners]] entry"
    );
    assert!(load_str(GITLAB_FULL).require_registered().is_ok());
}

#[test]
fn every_key_fixture_covers_the_schema_and_loads() {
    // The fixture sets every key the schema says drover reads; loading it proves the typed layer
    // reads each of them (it denies unknown fields).
    let mut doc = toml::de::DeTable::parse(EVERY_KEY).unwrap();
    let walk = schema::walk(EVERY_KEY, doc.get_mut());
    assert!(walk.errors.is_empty() && walk.ignored.is_empty() && walk.deprecated.is_empty());
    let seen: BTreeSet<*const schema::Key> = walk
        .values
        .iter()
        .map(|v| v.key as *const schema::Key)
        .collect();
    let sections = [
        &schema::GLOBAL,
        &schema::GLOBAL_MACHINE,
        &schema::SHUTDOWN_DRAIN,
        &schema::RUNNER,
        &schema::MACHINE,
        &schema::PERIOD,
        &schema::DOCKER,
        &schema::SERVICE,
        &schema::CACHE,
        &schema::CACHE_S3,
        &autoscaler::schema::AUTOSCALER,
        &autoscaler::schema::SCALE_THROTTLE,
        &autoscaler::schema::STATE_STORAGE,
        &autoscaler::schema::PLUGIN_CONFIG,
        &autoscaler::schema::CONNECTOR,
        &autoscaler::schema::POLICY,
    ];
    for section in sections {
        for key in section.keys {
            if matches!(
                key.rule,
                schema::Rule::Read { .. } | schema::Rule::Section(_)
            ) {
                assert!(
                    seen.contains(&(key as *const _)),
                    "every-key.toml lacks {} in {}",
                    key.name,
                    section.header
                );
            }
        }
    }

    let l = load_str(EVERY_KEY);
    // The one warning: drover always journals, so state_storage has no effect.
    let paths: Vec<&str> = l
        .warnings
        .iter()
        .flat_map(|w| w.keys.iter().map(|k| k.path.as_str()))
        .collect();
    assert_eq!(
        paths,
        ["runners[2].autoscaler.state_storage"],
        "{:?}",
        l.warnings
    );
    let a = &l.autoscalers[0].autoscaler;
    assert_eq!(a.plugin, "fleeting-plugin-aws:0.4.0");
    assert_eq!(
        (a.capacity_per_instance, a.max_use_count, a.max_instances),
        (4, 100, 20)
    );
    assert!(!a.reservation_throttling);
    assert_eq!(a.intervals.shutdown_deletion_retries, 5);
    assert_eq!(a.intervals.failure_threshold, 2);
    assert_eq!(a.aws.config_file.as_deref(), Some("/etc/drover/aws/config"));
    assert!(a.connector.password.is_none(), "an empty password is none");
    assert!(!a.policies[0].preemptive_mode);
    let g = &l.global;
    assert_eq!(
        (
            l.core.concurrent,
            l.core.check_interval,
            l.core.shutdown_timeout
        ),
        (8, Duration::from_secs(5), Duration::from_secs(60))
    );
    assert_eq!(
        (g.log_level, g.log_format),
        (Some(LogLevel::Debug), Some(LogFormat::Json))
    );
    assert!(l.core.drain_machines_on_shutdown);
    let s = &l.runners[0];
    assert_eq!(s.tls_ca_file.as_deref(), Some("/etc/drover/ca.pem"));
    assert_eq!(s.builds_dir.as_deref(), Some("/builds"));
    assert_eq!(
        s.hooks.post_build_script.as_deref(),
        Some("echo post-build")
    );
    assert_eq!(s.environment[1], ("EMPTY".to_string(), String::new()));
    assert_eq!(
        l.core.runners[0].short_token,
        drover_core::config::machine_key(
            "",
            s.url.as_deref().unwrap_or_default(),
            &l.core.runners[0].name
        ),
        "the machine key does not depend on the token"
    );
    let d = &s.docker;
    assert_eq!(
        d.pull_policy,
        [PullPolicy::IfNotPresent],
        "a single string is a list of one"
    );
    assert_eq!(
        d.allowed_pull_policies,
        [PullPolicy::IfNotPresent, PullPolicy::Always]
    );
    assert_eq!(
        (d.memory, d.cpus, d.shm_size),
        (Some(2 << 30), Some(1.5), Some(256 << 20))
    );
    assert!(d.privileged);
    assert_eq!(d.services[0].aliases, ["db", "postgres"]);
    assert_eq!(
        d.services[0].environment,
        [("POSTGRES_PASSWORD".to_string(), "ci".to_string())]
    );
    let m = s.machine.as_ref().unwrap();
    assert_eq!(m.machine_options_with_name, ["google-tags=%s"]);
    assert_eq!(
        m.docker_machine_path.as_deref(),
        Some("/usr/local/bin/docker-machine")
    );
    let p = pool(&l, 0);
    assert_eq!(
        (p.max_removal_attempts, p.base.idle_scale_factor),
        (5, 0.25)
    );
    assert_eq!(p.periods[0].values.idle_scale_factor, 0.5);

    let sandboxes = l.runners[1].machine.as_ref().unwrap();
    assert_eq!(sandboxes.provider, Provider::Docker);
    assert_eq!(
        sandboxes.docker_host.as_deref(),
        Some("unix:///var/run/docker.sock")
    );
    assert_eq!(
        pool(&l, 1).machine_name,
        "%s",
        "the docker provider needs no MachineName"
    );
}

#[test]
fn gitlab_defaults_apply() {
    let l = load_str(
        r#"
concurrent = 2
check_interval = 0
shutdown_timeout = 0
[[runners]]
  name = "a"
  executor = "docker+machine"
  request_concurrency = 0
  output_limit = 0
  [runners.machine]
    MachineName = "m-%s"
    MaxRemovalAttempts = 0
"#,
    );
    assert_eq!(l.core.check_interval, Duration::from_secs(3));
    assert_eq!(l.core.shutdown_timeout, Duration::from_secs(30));
    assert_eq!(l.core.runners[0].request_concurrency, 1);
    assert_eq!(l.core.runners[0].limit, 0, "0 = unlimited");
    assert_eq!(l.runners[0].output_limit_kb, 4096);
    assert_eq!(pool(&l, 0).max_removal_attempts, 30);
    assert!(!l.core.drain_machines_on_shutdown);
    assert_eq!(l.global.log_level, None);
}

#[test]
fn local_time_zone_is_resolved_before_the_core_sees_it() {
    let text = r#"
concurrent = 1
[[runners]]
  name = "a"
  executor = "docker+machine"
  [runners.machine]
    [[runners.machine.autoscaling]]
      Periods = ["* * 9-17 * * * *"]
    [[runners.machine.autoscaling]]
      Periods = ["* * * * * sat *"]
      Timezone = "Local"
"#;
    let l = load_str(text);
    let zones: Vec<&str> = pool(&l, 0)
        .periods
        .iter()
        .map(|p| p.timezone().name())
        .collect();
    assert_eq!(zones, ["Europe/Berlin", "Europe/Berlin"]);
    assert!(l.warnings.is_empty());

    let unknown = LocalZone::Unknown {
        reason: "TZ=\"CET-1CEST\" is not an IANA zone name".into(),
    };
    let l = parse_with_zone(text, Path::new("t.toml"), &unknown).unwrap();
    assert_eq!(pool(&l, 0).periods[0].timezone().name(), "UTC");
    assert_eq!(kinds(&l), [WarningKind::LocalTimezone]);
    assert_eq!(
        l.warnings[0].keys[0].path,
        "runners[0].machine.autoscaling[0]"
    );
    assert!(
        l.warnings[0].to_string().contains("CET-1CEST"),
        "{}",
        l.warnings[0]
    );
}

#[test]
fn short_cron_expressions_warn_but_load() {
    let l = load_str(
        r#"
concurrent = 1
[[runners]]
  name = "a"
  executor = "docker+machine"
  [runners.machine]
    [[runners.machine.autoscaling]]
      Periods = ["* 9-17 * * mon-fri", "* 9-17 * * sat *"]
      Timezone = "UTC"
"#,
    );
    assert_eq!(kinds(&l), [WarningKind::ShortCron, WarningKind::ShortCron]);
    assert_eq!(
        l.warnings[0].keys[0].path,
        "runners[0].machine.autoscaling[0].Periods"
    );
    assert!(
        l.warnings[0]
            .diagnostic
            .hint
            .as_deref()
            .unwrap()
            .contains("\"* * 9-17 * * mon-fri *\"")
    );
    assert!(
        l.warnings[1]
            .diagnostic
            .message
            .contains("read as \"0 * 9-17 * * sat *\"")
    );
    assert_eq!(pool(&l, 0).periods[0].exprs()[0].field_count(), 5);
}

#[test]
fn unnamed_runners_get_unique_derived_names() {
    let l = load_str(
        r#"
concurrent = 1
[[runners]]
  token = "glrt-t1_6sYkQxW9bN3pLmZr7cVd"
  executor = "docker"
[[runners]]
  name = "runner-3"
  executor = "docker"
[[runners]]
  executor = "docker"
[[runners]]
  name = ""
  token = "glrt-t1_6sYkQxW9bN3pLmZr7cVd"
  executor = "docker"
"#,
    );
    let names: Vec<&str> = l.core.runners.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "runner-6sykqxw9b",
            "runner-3",
            "runner-3-2",
            "runner-6sykqxw9b-2"
        ]
    );
    assert_eq!(kinds(&l), [WarningKind::UnnamedRunner; 3]);
    assert!(l.core.validate().is_ok());
}

#[test]
fn machine_keys_follow_the_installation_not_the_token() {
    let text = |token: &str| {
        format!(
            r#"
concurrent = 1
[[runners]]
  name = "linux"
  url = "https://gitlab.example.com"
  token = "{token}"
  executor = "docker"
[[runners]]
  url = "https://gitlab.example.com"
  token = "{token}"
  executor = "docker"
"#
        )
    };
    let keys = |token: &str, system_id: &str| -> Vec<String> {
        let loaded = parse_for(&text(token), Path::new("t.toml"), &berlin(), system_id)
            .unwrap_or_else(|e| panic!("{e}"));
        loaded
            .core
            .runners
            .into_iter()
            .map(|r| r.short_token)
            .collect()
    };
    let a = keys("glrt-t1_6sYkQxW9bN3pLmZr7cVd", "r_AAAAAAAAAAAA");
    let url = "https://gitlab.example.com";
    assert_eq!(
        a,
        [
            drover_core::config::machine_key("r_AAAAAAAAAAAA", url, "linux"),
            drover_core::config::machine_key("r_AAAAAAAAAAAA", url, "#1"),
        ]
    );
    // A rotated token keeps both keys, the unnamed runner's too (its derived name changes).
    assert_eq!(a, keys("glrt-t1_rotatedXXXXXXXXXX", "r_AAAAAAAAAAAA"));
    // Another installation of the same runners (another system id) keys its machines apart.
    let b = keys("glrt-t1_6sYkQxW9bN3pLmZr7cVd", "r_BBBBBBBBBBBB");
    assert!(a.iter().all(|k| !b.contains(k)), "{a:?} {b:?}");

    // `load` reads the system id kept beside the file.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, text("glrt-t1_6sYkQxW9bN3pLmZr7cVd")).unwrap();
    let id = crate::files::system_id(&path).unwrap();
    let loaded = load(&path).unwrap();
    assert_eq!(
        loaded.core.runners[0].short_token,
        drover_core::config::machine_key(&id, url, "linux")
    );
}

#[test]
fn settings_without_effect_warn() {
    let l = load_str(
        r#"
concurrent = 1
[[runners]]
  name = "direct"
  executor = "docker"
  [runners.machine]
    IdleCount = 3
[[runners]]
  name = "sandboxes"
  executor = "docker+machine"
  [runners.machine]
    Provider = "docker"
    MachineDriver = "amazonec2"
[[runners]]
  name = "vms"
  executor = "docker+machine"
  [runners.machine]
    MachineDriver = "amazonec2"
    MachineName = "vm-%s"
    DockerHost = "tcp://10.0.0.2:2376"
"#,
    );
    assert_eq!(kinds(&l), [WarningKind::NoEffect; 3]);
    let lines: Vec<usize> = l.warnings.iter().map(|w| w.keys[0].line).collect();
    assert_eq!(lines, [6, 13, 20]);
    assert_eq!(
        l.runners[2].machine.as_ref().unwrap().provider,
        Provider::DockerMachine
    );
}

#[test]
fn docker_machine_path_is_absolute_or_a_program_name() {
    let config = |path: &str| {
        format!(
            "concurrent = 1\n[[runners]]\n  executor = \"docker+machine\"\n  \
             [runners.machine]\n    MachineDriver = \"amazonec2\"\n    \
             MachineName = \"vm-%s\"\n    DockerMachinePath = {path:?}\n"
        )
    };
    let path = |text: &str| {
        load_str(text).runners[0]
            .machine
            .as_ref()
            .unwrap()
            .docker_machine_path
            .clone()
    };
    assert_eq!(
        path(&config("/opt/dm/docker-machine")).as_deref(),
        Some("/opt/dm/docker-machine")
    );
    assert_eq!(
        path(&config("docker-machine-gitlab")).as_deref(),
        Some("docker-machine-gitlab")
    );
    assert_eq!(path(&config("")), None);
    let errors = errors(&config("bin/docker-machine"));
    assert_eq!(errors.len(), 1);
    assert_eq!(
        errors[0].message,
        "runner \"runner-1\": DockerMachinePath must be an absolute path or a program name"
    );
}

#[test]
fn an_idle_count_above_the_limit_warns() {
    let l = load_str(
        r#"
concurrent = 1
[[runners]]
  name = "a"
  executor = "docker+machine"
  limit = 4
  [runners.machine]
    IdleCount = 2
    [[runners.machine.autoscaling]]
      Periods = ["* * 9-17 * * * *"]
      Timezone = "UTC"
      IdleCount = 6
"#,
    );
    assert_eq!(kinds(&l), [WarningKind::NoEffect]);
    assert_eq!(
        l.warnings[0].diagnostic.message,
        "runner \"a\": IdleCount 6 is above limit 4, so it is never reached"
    );
    assert!(
        load_str(&GITLAB_FULL.replace("limit = 30", "limit = 0"))
            .warnings
            .len()
            == 1
    );
}

#[test]
fn keys_drover_does_not_act_on_are_named_in_the_warning() {
    let l = load_str(
        r#"
concurrent = 1
[machine.shutdown_drain]
  enabled = true
  concurrency = 2
  max_retries = 4
  retry_backoff = "10s"
[[runners]]
  name = "a"
  executor = "docker"
  pre_get_sources_script = "echo pre"
  post_get_sources_script = "echo post"
  [runners.docker]
    tls_verify = true
    network_mode = "bridge"
    volume_keep = true
"#,
    );
    assert_eq!(kinds(&l), [WarningKind::IgnoredKeys]);
    let keys: Vec<&str> = l.warnings[0].keys.iter().map(|k| k.path.as_str()).collect();
    assert_eq!(
        keys,
        [
            "machine.shutdown_drain.concurrency",
            "machine.shutdown_drain.max_retries",
            "machine.shutdown_drain.retry_backoff",
            "runners[0].pre_get_sources_script",
            "runners[0].post_get_sources_script",
            "runners[0].docker.tls_verify",
            "runners[0].docker.network_mode",
            "runners[0].docker.volume_keep",
        ]
    );
    assert!(l.core.drain_machines_on_shutdown, "`enabled` is still read");
}

#[test]
fn keys_under_ignored_sections_are_not_checked() {
    let l = load_str(
        r#"
concurrent = 1
[session_server]
  anything = "goes"
[[runners]]
  name = "a"
  executor = "docker"
  [runners.kubernetes.pod_labels]
    team = "ci"
  [runners.cache.gcs]
    BucketName = ["not", "a", "string"]
"#,
    );
    assert_eq!(kinds(&l), [WarningKind::IgnoredKeys]);
    let keys: Vec<&str> = l.warnings[0].keys.iter().map(|k| k.path.as_str()).collect();
    assert_eq!(
        keys,
        [
            "session_server",
            "runners[0].kubernetes",
            "runners[0].cache.gcs"
        ]
    );
}

#[test]
fn typos_in_owned_sections_are_errors_with_suggestions() {
    let e = errors("concurrent = 1\nconcurent = 2\n[drover]\nx = 1\n");
    assert_eq!(e.len(), 2);
    assert_eq!(e[0].message, "unknown key `concurent` at the top level");
    assert_eq!(e[0].hint.as_deref(), Some("did you mean `concurrent`?"));
    assert_eq!(
        e[0].location.as_ref().map(|l| (l.line, l.column)),
        Some((2, 1))
    );
    assert_eq!(e[1].message, "unknown key `drover` at the top level");
    assert!(
        e[1].hint
            .as_deref()
            .unwrap()
            .starts_with("drover reads these keys at the top level: `concurrent`")
    );

    let e = errors(
        "concurrent = 1\n[[runners]]\nname = \"a\"\nexecutor = \"docker\"\n[runners.machine]\nidlecount = 1\n",
    );
    assert_eq!(
        e[0].hint.as_deref(),
        Some("did you mean `IdleCount`? keys are case-sensitive")
    );
}

#[test]
fn wrong_types_point_at_the_value() {
    let e = errors("concurrent = \"4\"\n");
    assert_eq!(e[0].message, "wrong value for `concurrent`");
    assert_eq!(
        e[0].location.as_ref().map(|l| (l.line, l.column)),
        Some((1, 14))
    );
    assert!(
        e[0].hint
            .as_deref()
            .unwrap()
            .starts_with("`concurrent` takes a whole number, at least 1")
    );

    // Written by `drover register` and not used, but still GitLab Runner's types.
    for (key, value) in [("id", "\"7\""), ("token_expires_at", "\"never\"")] {
        let e = errors(&format!(
            "concurrent = 1\n[[runners]]\nname = \"a\"\nexecutor = \"docker\"\n{key} = {value}\n"
        ));
        assert_eq!(e[0].message, format!("wrong value for `runners[0].{key}`"));
    }

    let e = errors("concurrent = 1\n[machine.shutdown_drain]\nenabled = \"yes\"\n");
    assert_eq!(
        e[0].message,
        "wrong value for `machine.shutdown_drain.enabled`"
    );

    let e = errors(
        "concurrent = 1\n[[runners]]\nname = \"a\"\nexecutor = \"docker\"\n\
         [[runners.docker.services]]\nalias = \"db\"\n",
    );
    assert_eq!(
        e[0].message,
        "`runners[0].docker.services` entry has no `name`, which it needs"
    );
    assert_eq!(e[0].location.as_ref().map(|l| l.line), Some(5));
    assert_eq!(
        e[0].hint.as_deref(),
        Some("add `name = ...`: it takes a string, the service image")
    );
}

#[test]
fn semantic_errors_are_all_reported_in_file_order() {
    let e = errors(
        r#"
concurrent = 0
[[runners]]
  name = "a"
  url = "gitlab.example.com"
  executor = "shell"
[[runners]]
  name = "b"
  executor = "docker+machine"
  [runners.machine]
    Provider = "dokcer"
    [[runners.machine.autoscaling]]
      Periods = ["* * * * * * * *"]
      Timezone = "Mars/Olympus"
"#,
    );
    let messages: Vec<&str> = e.iter().map(|d| d.message.as_str()).collect();
    assert_eq!(
        messages,
        [
            "`concurrent` must be at least 1",
            "runner \"a\": url \"gitlab.example.com\" is not an http(s) URL",
            "runner \"a\": executor \"shell\" is not supported",
            "runner \"b\": unknown Provider \"dokcer\"",
            "runner \"b\": invalid cron expression in Periods",
            "runner \"b\": unknown time zone \"Mars/Olympus\"",
        ]
    );
    assert_eq!(e[3].hint.as_deref(), Some("did you mean \"docker\"?"));
    assert_eq!(
        e[4].label.as_deref(),
        Some("expected 7 fields (sec min hour dom month dow year), found 8")
    );
}

#[test]
fn runners_need_an_executor() {
    let e = errors("concurrent = 1\n[[runners]]\n  name = \"a\"\n");
    assert_eq!(e[0].message, "runner \"a\" has no `executor`");
    assert_eq!(e[0].location.as_ref().map(|l| l.line), Some(2));
}

#[test]
fn read_errors_name_the_file() {
    let err = load(Path::new("/nonexistent/drover.toml")).unwrap_err();
    let text = err.to_string();
    assert!(
        text.starts_with("cannot read config file /nonexistent/drover.toml: "),
        "{text}"
    );
    assert!(
        text.contains("hint: check the path, or pass the file with `-c FILE`"),
        "{text}"
    );
}

#[test]
fn a_loaded_file_keeps_its_mtime_from_before_the_read() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "concurrent = 1\n").unwrap();
    let first = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    let file = std::fs::File::options().write(true).open(&path).unwrap();
    file.set_modified(first).unwrap();
    let loaded = load(&path).unwrap();
    assert_eq!(loaded.mtime, Some(first));
    // An edit after the read: the daemon sees another time and reloads.
    file.set_modified(first + std::time::Duration::from_secs(1))
        .unwrap();
    assert_ne!(mtime(&path), loaded.mtime);
    assert_eq!(load_str("concurrent = 1\n").mtime, None);
}
