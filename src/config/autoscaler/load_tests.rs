//! `[runners.autoscaler]` read from whole files: the operator fixture's values, GitLab Runner's
//! defaults, and the errors with their places.

use std::path::Path;
use std::time::Duration;

use crate::config::{ConfigError, Diagnostic, Loaded, LocalZone, parse_with_zone};

const AWS: &str = include_str!("../../../fixtures/config/good/docker-autoscaler-aws.toml");

fn berlin() -> LocalZone {
    LocalZone::Named("Europe/Berlin".into())
}

fn load(text: &str) -> Loaded {
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

fn minimal(extra: &str) -> String {
    format!(
        "concurrent = 2\n[[runners]]\nname = \"asg\"\nexecutor = \"docker-autoscaler\"\n\
         [runners.autoscaler]\nplugin = \"aws\"\n{extra}\n\
         [runners.autoscaler.plugin_config]\nname = \"ci-asg\"\n"
    )
}

#[test]
fn the_operator_fixture_loads_with_its_values() {
    let l = load(AWS);
    // Kept out of the scheduled runners until `drover run` has the AWS provider (`core` holds
    // its slot runner).
    assert!(l.core.runners.is_empty() && l.runners.is_empty());
    assert_eq!(l.autoscalers.len(), 1);
    let r = &l.autoscalers[0];
    assert_eq!(r.name, "docker autoscaler example");
    assert_eq!(r.url.as_deref(), Some("https://gitlab.example.com"));
    assert_eq!(r.limit, 20);
    assert_eq!(r.docker.image.as_deref(), Some("busybox:latest"));
    let a = &r.autoscaler;
    assert_eq!(a.plugin, "aws:latest");
    assert_eq!(
        (a.capacity_per_instance, a.max_use_count, a.max_instances),
        (2, 20, 10)
    );
    assert_eq!(
        a.instance_ready_command.as_deref(),
        Some("cloud-init status --wait")
    );
    assert!(a.delete_instances_on_shutdown);
    assert_eq!(a.intervals.update_interval, Duration::from_secs(30));
    assert_eq!(
        a.intervals.instance_acquire_timeout,
        Duration::from_secs(600)
    );
    // Not in the file: GitLab Runner's defaults.
    assert_eq!(a.intervals.deletion_retry_interval, Duration::from_secs(60));
    assert_eq!(a.intervals.shutdown_deletion_retries, 3);
    assert_eq!(a.intervals.failure_threshold, 3);
    assert_eq!(a.scale_throttle.per_second, Some(10));
    assert_eq!(a.scale_throttle.burst, 5);
    assert_eq!(a.aws.group, "my-docker-asg");
    assert_eq!(a.aws.profile.as_deref(), Some("default"));
    assert_eq!(
        a.aws.credentials_file.as_deref(),
        Some("/home/user/.aws/credentials")
    );
    assert_eq!(a.connector.username.as_deref(), Some("ec2-user"));
    assert!(a.connector.use_external_addr);
    assert_eq!(a.connector.port, 22);
    assert_eq!(a.policies.len(), 2);
    let (always, office) = (&a.policies[0], &a.policies[1]);
    assert_eq!(always.periods, ["* * * * *"]);
    assert_eq!(always.timezone, "Europe/Berlin", "Local resolves");
    assert_eq!(always.idle_count, 5);
    assert_eq!(always.idle_time, Duration::from_secs(1200));
    assert!(always.preemptive_mode, "idle_count > 0 turns it on");
    assert_eq!(office.periods, ["* 8-18 * * mon-fri"]);
    assert_eq!(office.timezone, "Europe/Berlin");
    assert_eq!(
        (
            office.idle_count,
            office.scale_factor,
            office.scale_factor_limit
        ),
        (10, 0.5, 8)
    );
    // state_storage is accepted and said to have no effect.
    assert!(
        l.warnings
            .iter()
            .any(|w| w.keys.iter().any(|k| k.path.ends_with("state_storage")))
    );
}

#[test]
fn gitlab_defaults_fill_what_the_file_leaves_out() {
    let l = load(&minimal(""));
    let a = &l.autoscalers[0].autoscaler;
    assert_eq!(
        (a.capacity_per_instance, a.max_use_count, a.max_instances),
        (1, 0, 0)
    );
    assert!(!a.delete_instances_on_shutdown && a.reservation_throttling);
    assert_eq!(a.intervals, crate::config::autoscaler::Intervals::default());
    assert_eq!(
        a.intervals.instance_acquire_timeout,
        Duration::from_secs(900)
    );
    assert_eq!(
        a.intervals.update_interval_when_expecting,
        Duration::from_secs(2)
    );
    assert_eq!(
        a.intervals.shutdown_deletion_interval,
        Duration::from_secs(10)
    );
    // limit 0 → 100/s; burst: max_instances, else the limit.
    assert_eq!(
        (a.scale_throttle.per_second, a.scale_throttle.burst),
        (Some(100), 100)
    );
    assert_eq!(a.policies.len(), 1);
    assert_eq!(a.policies[0].periods, ["* * * * *"]);
    assert_eq!(a.policies[0].idle_count, 0);
    assert!(!a.policies[0].preemptive_mode);
    assert_eq!(a.connector.port, 22);
    assert!(a.connector.key_path.is_none() && !a.connector.use_static_credentials);

    let l = load(&minimal(
        "max_instances = 7\n[runners.autoscaler.scale_throttle]\nlimit = -1",
    ));
    let t = l.autoscalers[0].autoscaler.scale_throttle;
    assert_eq!((t.per_second, t.burst), (None, 7));
    // Go's TOML reads an integer duration as nanoseconds.
    let l = load(&minimal("update_interval = 5000000000"));
    assert_eq!(
        l.autoscalers[0].autoscaler.intervals.update_interval,
        Duration::from_secs(5)
    );
}

#[test]
fn connector_and_policy_keys_are_read() {
    let l = load(&minimal(
        "[runners.autoscaler.connector_config]\nusername = \"admin\"\nprotocol = \"ssh\"\n\
         protocol_port = 2222\nkey_path = \"/etc/drover/id_ed25519\"\nuse_static_credentials = true\n\
         keepalive = \"30s\"\ntimeout = \"1m\"\nos = \"linux\"\narch = \"arm64\"\npassword = \"hunter2\"\n\
         [[runners.autoscaler.policy]]\nidle_count = 0\npreemptive_mode = true\n\
         timezone = \"UTC\"\nperiods = [\"*/5 * * * *\"]",
    ));
    let a = &l.autoscalers[0].autoscaler;
    let c = &a.connector;
    assert_eq!(c.username.as_deref(), Some("admin"));
    assert_eq!(c.port, 2222);
    assert_eq!(c.key_path.as_deref(), Some("/etc/drover/id_ed25519"));
    assert!(c.use_static_credentials);
    assert_eq!(c.keepalive, Some(Duration::from_secs(30)));
    assert_eq!(c.timeout, Some(Duration::from_secs(60)));
    assert_eq!(c.arch.as_deref(), Some("arm64"));
    assert!(
        !format!("{c:?}").contains("hunter2"),
        "the password is masked"
    );
    let p = &a.policies[0];
    assert!(p.preemptive_mode, "explicit preemptive_mode wins");
    assert_eq!(
        (p.timezone.as_str(), p.periods[0].as_str()),
        ("UTC", "*/5 * * * *")
    );
}

#[test]
fn mistakes_are_errors_at_their_place() {
    let text = minimal("capacity_per_instance = 0");
    let e = errors(&text);
    assert_eq!(e.len(), 1);
    assert!(
        e[0].message
            .contains("capacity_per_instance must be at least 1")
    );
    assert_eq!(e[0].location.as_ref().map(|l| l.line), Some(7));

    let e = errors(&minimal(
        "[runners.autoscaler.connector_config]\nprotocol = \"winrm\"",
    ));
    assert!(
        e[0].message.contains("\"winrm\" is not supported"),
        "{}",
        e[0].message
    );

    let e = errors(&minimal(
        "[[runners.autoscaler.policy]]\ntimezone = \"Europe/Berlni\"",
    ));
    assert!(e[0].message.contains("unknown time zone"));

    let text = "concurrent = 1\n[[runners]]\nname = \"a\"\nexecutor = \"docker-autoscaler\"\n\
                [runners.autoscaler]\nplugin = \"aws\"\n";
    let e = errors(text);
    assert!(
        e[0].message
            .contains("needs [runners.autoscaler.plugin_config]"),
        "{}",
        e[0].message
    );

    let text = "concurrent = 1\n[[runners]]\nname = \"a\"\nexecutor = \"docker-autoscaler\"\n";
    let e = errors(text);
    assert!(e[0].message.contains("has no [runners.autoscaler] section"));

    let e = errors(&minimal(
        "[runners.autoscaler.connector_config]\nuse_static_credentials = true",
    ));
    assert!(
        e[0].message
            .contains("use_static_credentials without key_path")
    );
}

#[test]
fn a_build_without_aws_refuses_what_check_config_accepts() {
    let l = load(AWS);
    let err = l.runnable_with(false).unwrap_err().to_string();
    assert!(err.contains("\"docker autoscaler example\""), "{err}");
    assert!(err.contains("built without AWS support"), "{err}");
    assert!(l.runnable_with(true).is_ok());
    // A config without such a runner runs.
    let l = load("concurrent = 1\n[[runners]]\nname = \"d\"\nexecutor = \"docker\"\n");
    assert!(l.require_runnable().is_ok());
    // An autoscaler section under another executor has no effect and says so.
    let l = load(
        "concurrent = 1\n[[runners]]\nname = \"d\"\nexecutor = \"docker\"\n[runners.autoscaler]\nplugin = \"aws\"\n",
    );
    assert!(
        l.warnings
            .iter()
            .any(|w| w.diagnostic.message.contains("has no effect"))
    );
}
