//! `drover check-config` on the fixtures: rendered errors compared with their snapshots
//! (`fixtures/config/bad/*.stderr`), the policy table across DST changes, exit codes.
//!
//! After an intended change to a message, rewrite the snapshots with `DROVER_BLESS=1 cargo test`
//! and review the diff.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const CONFIG_EXIT: i32 = 2;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Runs the drover binary from the repository root, so paths in messages are relative.
fn drover(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(args)
        .current_dir(root())
        .env_remove("CONFIG_FILE")
        .env("TZ", "UTC")
        .output()
        .expect("run the drover binary")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn fixtures(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .expect("fixture directory")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    files.sort();
    files
}

/// Compares `actual` with the snapshot file, or rewrites it when `DROVER_BLESS` is set.
fn assert_snapshot(snapshot: &Path, actual: &str) -> Result<(), String> {
    if std::env::var_os("DROVER_BLESS").is_some() {
        // Blessing in CI would make every snapshot test pass whatever the output.
        assert!(
            std::env::var_os("CI").is_none(),
            "DROVER_BLESS is for a developer's machine, not CI"
        );
        std::fs::write(snapshot, actual).expect("write snapshot");
        return Ok(());
    }
    let expected = std::fs::read_to_string(snapshot).map_err(|e| {
        format!(
            "{}: {e} (create it with DROVER_BLESS=1)",
            snapshot.display()
        )
    })?;
    if expected == actual {
        Ok(())
    } else {
        Err(format!(
            "{} differs.\n--- expected\n{expected}\n--- actual\n{actual}\n---",
            snapshot.display()
        ))
    }
}

#[test]
fn bad_configs_render_their_snapshot_errors() {
    let bad = fixtures("fixtures/config/bad");
    assert!(bad.len() >= 15, "the bad fixtures are missing");
    let mut failures = Vec::new();
    for file in &bad {
        let relative = file.strip_prefix(root()).expect("under the root");
        let out = drover(&["check-config", relative.to_str().expect("utf-8 path")]);
        if out.status.code() != Some(CONFIG_EXIT) {
            failures.push(format!(
                "{}: exit {:?}, wanted {CONFIG_EXIT}",
                relative.display(),
                out.status.code()
            ));
        }
        if !out.stdout.is_empty() {
            failures.push(format!(
                "{}: printed to stdout:\n{}",
                relative.display(),
                text(&out.stdout)
            ));
        }
        if let Err(e) = assert_snapshot(&file.with_extension("stderr"), &text(&out.stderr)) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn messages_say_where_and_what_to_do() {
    // Spot checks of what the snapshots must keep saying, independent of their exact layout.
    let cases = [
        (
            "machine-name-without-placeholder",
            ":9:19",
            "MachineName must contain `%s`",
        ),
        (
            "concurrent-zero",
            ":1:14",
            "`concurrent` must be at least 1",
        ),
        (
            "bad-cron",
            ":10:44",
            "^^^^^^^^^^^^^^^^ Hours must be less than",
        ),
        (
            "unknown-timezone",
            ":11:18",
            "did you mean \"Europe/Berlin\"?",
        ),
        (
            "idle-scale-factor-integer",
            ":8:23",
            "`IdleScaleFactor = 1.0`",
        ),
        (
            "limit-not-a-number",
            ":6:11",
            "invalid type: string \"ten\"",
        ),
        (
            "negative-idle-count",
            ":7:17",
            "invalid value: integer `-1`",
        ),
        (
            "misspelled-machine-key",
            ":7:5",
            "did you mean `IdleCount`?",
        ),
        ("misspelled-runner-key", ":6:3", "did you mean `limit`?"),
        (
            "unsupported-executor",
            ":5:14",
            "drover supports \"docker+machine\"",
        ),
    ];
    for (name, position, needle) in cases {
        let path = format!("fixtures/config/bad/{name}.toml");
        let stderr = text(&drover(&["check-config", &path]).stderr);
        assert!(stderr.starts_with("error: "), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("--> {path}{position}\n")),
            "{name}: no {position} in\n{stderr}"
        );
        assert!(
            stderr.contains(needle),
            "{name}: no {needle:?} in\n{stderr}"
        );
        assert!(stderr.contains("= hint: "), "{name}: no hint in\n{stderr}");
    }
}

#[test]
fn good_configs_pass() {
    for file in fixtures("fixtures/config/good") {
        let out = drover(&[
            "check-config",
            file.to_str().expect("utf-8 path"),
            "--at",
            "2026-03-27T00:00:00Z",
        ]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}:\n{}",
            file.display(),
            text(&out.stderr)
        );
        assert!(
            text(&out.stdout).contains(": valid, "),
            "{}",
            file.display()
        );
        assert!(
            !text(&out.stderr).contains("error"),
            "{}: {}",
            file.display(),
            text(&out.stderr)
        );
    }
}

#[test]
fn policy_table_follows_the_spring_dst_change() {
    // Berlin moves to summer time on Sunday 2026-03-29: office hours (09-18 local) start at
    // 08:00 UTC on Friday and at 07:00 UTC on Monday.
    let out = drover(&[
        "check-config",
        "fixtures/config/good/gitlab-full.toml",
        "--at",
        "2026-03-27T00:00:00Z",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let expected_rows = [
        "Fri 2026-03-27 00:00:00  Fri 2026-03-27 01:00:00 CET   base               4             1              0.5       30m",
        "Fri 2026-03-27 08:00:00  Fri 2026-03-27 09:00:00 CET   period 1          10             0                0        1h",
        "Fri 2026-03-27 17:00:00  Fri 2026-03-27 18:00:00 CET   base               4             1              0.5       30m",
        "Sat 2026-03-28 00:00:00  Sat 2026-03-28 00:00:00 UTC   period 2           0             0                0        5m",
        "Mon 2026-03-30 00:00:00  Mon 2026-03-30 00:00:00 UTC   base               4             1              0.5       30m",
        "Mon 2026-03-30 07:00:00  Mon 2026-03-30 09:00:00 CEST  period 1          10             0                0        1h",
        "Mon 2026-03-30 16:00:00  Mon 2026-03-30 18:00:00 CEST  base               4             1              0.5       30m",
    ];
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("    ") && l.contains(" 2026-"))
        .map(str::trim)
        .collect();
    assert_eq!(&rows[..expected_rows.len()], expected_rows);
    // Tuesday to Thursday repeat Monday; nothing past the 7 days.
    assert_eq!(rows.len(), 13, "{stdout}");
    assert!(
        rows.last().unwrap().starts_with("Thu 2026-04-02 16:00:00"),
        "{stdout}"
    );
    assert_snapshot(
        &root().join("fixtures/config/good/gitlab-full.check-config.stdout"),
        &stdout,
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn policy_table_follows_the_autumn_dst_change() {
    // Back to CET on Sunday 2026-10-25: 09:00 local is 07:00 UTC on Friday, 08:00 UTC on Monday.
    let out = drover(&[
        "check-config",
        "-c",
        "fixtures/config/good/gitlab-full.toml",
        "--at",
        "2026-10-23T06:00:00Z",
        "--days",
        "4",
    ]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("in force from 2026-10-23 06:00:00 UTC for 4 days:"),
        "{stdout}"
    );
    let starts: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("period 1"))
        .map(|l| l.trim().split("  ").next().unwrap_or(""))
        .collect();
    assert_eq!(
        starts,
        ["Fri 2026-10-23 07:00:00", "Mon 2026-10-26 08:00:00"],
        "{stdout}"
    );
}

#[test]
fn warnings_name_the_ignored_keys() {
    let out = drover(&[
        "check-config",
        "fixtures/config/good/gitlab-full.toml",
        "--at",
        "2026-03-27T00:00:00Z",
    ]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.starts_with("warning: 3 keys GitLab Runner knows have no effect"),
        "{stderr}"
    );
    for line in [
        "10 | session_server",
        "25 | runners[0].custom_build_dir",
        "27 | runners[0].docker.tls_verify",
    ] {
        assert!(stderr.contains(line), "no {line:?} in\n{stderr}");
    }
    let out = drover(&[
        "check-config",
        "fixtures/config/good/deprecated-offpeak.toml",
    ]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("GitLab Runner 14.0 removed the OffPeak settings"),
        "{stderr}"
    );
    assert!(
        stderr.contains("11 | runners[0].machine.OffPeakPeriods"),
        "{stderr}"
    );
    let out = drover(&[
        "check-config",
        "fixtures/config/good/five-field-cron.toml",
        "--at",
        "2026-03-27T00:00:00Z",
    ]);
    // Active in second 0 of each minute only: the table would flip twice a minute, so it stops.
    assert!(
        text(&out.stdout).contains("    … more changes follow; the list stops after 60\n"),
        "{}",
        text(&out.stdout)
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("active only in second 0 of each minute"),
        "{stderr}"
    );
    assert!(
        stderr.contains("--> fixtures/config/good/five-field-cron.toml:13:18"),
        "{stderr}"
    );
}

#[test]
fn cache_sections_are_read_and_unsupported_backends_said() {
    let out = drover(&["check-config", "fixtures/config/good/s3-cache.toml"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for line in [
        "  cache: s3 bucket runner-cache at http://minio.example.com:9000 (eu-west-1), Path ci\n",
        "  cache: local, kept per project on the machine\n",
    ] {
        assert!(stdout.contains(line), "no {line:?} in\n{stdout}");
    }
    let all = stdout + &text(&out.stderr);
    assert!(!all.contains("CACHESECRETKEYEXAMPLE"), "{all}");

    // The autoscaling guide's Minio example: flat S3 keys GitLab Runner no longer reads.
    let out = drover(&[
        "check-config",
        "fixtures/config/good/seed-digitalocean.toml",
    ]);
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("GitLab Runner reads the S3 keys only in a [runners.cache.s3] section")
            && stderr.contains("runners[0].cache.SecretKey")
            && stderr.contains("`Type = \"s3\"` without a [runners.cache.s3] section"),
        "{stderr}"
    );
    assert!(!stderr.contains("SECRET_KEY\""), "{stderr}");

    let dir = tempfile::tempdir().unwrap();
    let gcs = dir.path().join("gcs.toml");
    std::fs::write(
        &gcs,
        "concurrent = 1\n[[runners]]\nname = \"g\"\nexecutor = \"docker\"\n\
         [runners.cache]\nType = \"gcs\"\n[runners.cache.gcs]\nBucketName = \"b\"\n",
    )
    .unwrap();
    let out = drover(&["check-config", gcs.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("drover has no gcs cache: jobs keep their caches on the machine"),
        "{stderr}"
    );
    assert!(
        text(&out.stdout).contains("cache: local, not kept across jobs (no volume at /cache)"),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn secrets_stay_out_of_the_report() {
    let out = drover(&["check-config", "fixtures/config/good/gitlab-full.toml"]);
    let all = text(&out.stdout) + &text(&out.stderr);
    assert!(all.contains("token glrt-EXAMPLEE[MASKED]"), "{all}");
    for secret in [
        "EXAMPLEEXAMPLEEXAMPLE",
        "SECONDRUNNERTOKEN",
        "SECRETEXAMPLE",
        "AKIAEXAMPLE",
    ] {
        assert!(!all.contains(secret), "{secret} leaked:\n{all}");
    }
}

#[test]
fn file_arguments_and_failures() {
    let missing = drover(&["check-config", "fixtures/config/none.toml"]);
    assert_eq!(missing.status.code(), Some(CONFIG_EXIT));
    let stderr = text(&missing.stderr);
    assert!(
        stderr.starts_with("error: cannot read config file fixtures/config/none.toml: "),
        "{stderr}"
    );
    assert!(stderr.contains("hint: check the path"), "{stderr}");
    // The OS's reason once, not again after the hint; `run` reads the file the same way.
    assert_eq!(stderr.matches("os error 2").count(), 1, "{stderr}");
    let run = drover(&["run", "--config", "fixtures/config/none.toml"]);
    let run_stderr = text(&run.stderr);
    assert_eq!(run.status.code(), Some(CONFIG_EXIT), "{run_stderr}");
    assert_eq!(run_stderr.matches("os error 2").count(), 1, "{run_stderr}");

    let both = drover(&[
        "check-config",
        "fixtures/config/good/gitlab-full.toml",
        "-c",
        "other.toml",
    ]);
    assert_eq!(both.status.code(), Some(CONFIG_EXIT));
    assert!(
        text(&both.stderr).contains("two config files given"),
        "{}",
        text(&both.stderr)
    );

    let same = drover(&[
        "check-config",
        "fixtures/config/good/seed-digitalocean.toml",
        "-c",
        "fixtures/config/good/seed-digitalocean.toml",
    ]);
    assert_eq!(same.status.code(), Some(0), "{}", text(&same.stderr));

    let bad_at = drover(&[
        "check-config",
        "fixtures/config/good/gitlab-full.toml",
        "--at",
        "yesterday",
    ]);
    assert_eq!(bad_at.status.code(), Some(2));
    assert!(
        text(&bad_at.stderr).contains("RFC 3339"),
        "{}",
        text(&bad_at.stderr)
    );

    let unregistered = drover(&[
        "check-config",
        "fixtures/config/good/seed-digitalocean.toml",
    ]);
    assert!(
        text(&unregistered.stdout).contains(
            "not registered: `drover run` needs its url and token; run `drover register -c fixtures/config/good/seed-digitalocean.toml`"
        ),
        "{}",
        text(&unregistered.stdout)
    );
}

#[test]
fn cron_last_nearest_and_nth_days_are_read_as_gitlab_does() {
    // The last Friday of March 2026 is the 27th: 18:00 in Berlin (CET) is 17:00 UTC.
    let out = drover(&[
        "check-config",
        "fixtures/config/good/last-friday.toml",
        "--at",
        "2026-03-27T00:00:00Z",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("L, W and # are evaluated by drover as GitLab's cronexpr defines them"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Fri 2026-03-27 17:00:00  Fri 2026-03-27 18:00:00 CET   period 1"),
        "{stdout}"
    );
}

#[test]
fn docker_autoscaler_is_shown_by_check_config() {
    let fixture = "fixtures/config/good/docker-autoscaler-aws.toml";
    let out = drover(&["check-config", fixture]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    for line in [
        "runner \"docker autoscaler example\": executor docker-autoscaler: AWS Auto Scaling group \"my-docker-asg\" (plugin \"aws:latest\")",
        "capacity_per_instance 2, max_use_count 20, max_instances 10",
        "scale throttle: 10 instances/s, burst 5",
        "2. \"* 8-18 * * mon-fri\" in Europe/Berlin: idle_count 10 slots (5 idle instances at rest), idle_time 30m, scale_factor 0.5 (limit 8), preemptive on",
        "planned scaling: 2 job slots per new instance, at most 10 instances (20 jobs at once)",
    ] {
        assert!(stdout.contains(line), "no {line:?} in\n{stdout}");
    }
    assert!(!stdout.contains("glrt-EXAMPLEAUTOSCALER000"), "{stdout}");
    let stderr = text(&out.stderr);
    assert!(stderr.contains("drover always journals"), "{stderr}");

    // A drover built without AWS support (`--no-default-features`): `drover run` stops before
    // doing anything, no state directory, no daemon. With it, the daemon runs the runner
    // (`daemon::aws`).
    if !cfg!(feature = "aws") {
        refused_without_aws(fixture);
    }

    // `drover simulate` plans it: capacity_per_instance jobs per machine.
    let out = drover(&[
        "simulate",
        "-c",
        fixture,
        "--workload",
        "fixtures/workloads/steady-day.toml",
        "--no-plan",
        "--replications",
        "2",
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("docker-autoscaler, capacity_per_instance 2, max_instances 10"),
        "{stdout}"
    );
}

/// `drover run` of a docker-autoscaler config by a drover built without the `aws` feature.
fn refused_without_aws(fixture: &str) {
    let state = tempfile::tempdir().expect("temp dir");
    let state_dir = state.path().join("state");
    let out = drover(&[
        "run",
        "-c",
        fixture,
        "--state-dir",
        state_dir.to_str().expect("utf-8 path"),
    ]);
    assert_eq!(
        out.status.code(),
        Some(CONFIG_EXIT),
        "{}",
        text(&out.stderr)
    );
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(
            "uses executor \"docker-autoscaler\", but this drover was built without AWS support"
        ),
        "{stderr}"
    );
    assert!(!state_dir.exists(), "run created its state before refusing");
    assert!(
        !std::path::Path::new("fixtures/config/good/.runner_system_id").exists(),
        "run wrote a system id beside a config it refused"
    );
}
