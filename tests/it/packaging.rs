//! The Debian package's parts: the systemd unit (checked by `systemd-analyze verify`), the conffile
//! and cargo-deb's metadata in Cargo.toml.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn unit() -> String {
    std::fs::read_to_string(root().join("packaging/drover.service")).expect("the unit file")
}

/// The value of `key=` in the unit (the last one wins, as in systemd).
fn setting(unit: &str, key: &str) -> Option<String> {
    unit.lines()
        .rev()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_string)
}

#[test]
fn the_unit_drains_on_stop_and_runs_as_drover() {
    let unit = unit();
    assert_eq!(setting(&unit, "KillSignal").as_deref(), Some("SIGQUIT"));
    assert_eq!(setting(&unit, "KillMode").as_deref(), Some("mixed"));
    assert_eq!(setting(&unit, "User").as_deref(), Some("drover"));
    assert_eq!(
        setting(&unit, "SupplementaryGroups").as_deref(),
        Some("docker")
    );
    let exec = setting(&unit, "ExecStart").unwrap();
    assert!(
        exec.starts_with(
            "/usr/bin/drover run -c /etc/drover/config.toml --state-dir /var/lib/drover"
        ),
        "{exec}"
    );
    // TimeoutStopSec at least the shipped config's shutdown_timeout (GitLab's default, 30 s).
    let stop = humantime::parse_duration(&setting(&unit, "TimeoutStopSec").unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_drover"))
        .args(["check-config", "-c", "packaging/config.toml"])
        .current_dir(root())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shutdown = text
        .split("shutdown_timeout ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| humantime::parse_duration(s).ok())
        .unwrap_or_else(|| panic!("no shutdown_timeout in: {text}"));
    assert!(
        shutdown >= Duration::from_secs(30) && stop >= shutdown,
        "{stop:?} < {shutdown:?}"
    );
}

#[test]
fn systemd_accepts_the_unit() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("CI").is_none(),
            "systemd-analyze is missing: install systemd to check the unit"
        );
        eprintln!("skipped: no systemd-analyze");
        return;
    }
    // The unit as installed, but starting the binary under test (verify checks that it exists).
    let dir = std::env::temp_dir().join(format!("drover-it-unit-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("drover.service");
    std::fs::write(
        &path,
        unit().replace("/usr/bin/drover", env!("CARGO_BIN_EXE_drover")),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .unwrap();
    let errors = String::from_utf8_lossy(&out.stderr);
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(out.status.success() && errors.trim().is_empty(), "{errors}");
}

#[test]
fn cargo_deb_ships_the_unit_and_keeps_the_config() {
    let manifest: toml::Table = std::fs::read_to_string(root().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    let deb = &manifest["package"]["metadata"]["deb"];
    assert_eq!(
        deb["conf-files"],
        toml::Value::Array(vec!["/etc/drover/config.toml".into()])
    );
    let assets = deb["assets"].as_array().unwrap();
    for (from, to) in [
        (
            "packaging/drover.service",
            "lib/systemd/system/drover.service",
        ),
        ("packaging/config.toml", "etc/drover/config.toml"),
        ("target/release/drover", "usr/bin/"),
    ] {
        assert!(
            assets
                .iter()
                .any(|a| a[0].as_str() == Some(from) && a[1].as_str() == Some(to)),
            "{from} → {to} missing from {assets:?}"
        );
        assert!(
            from.starts_with("target/") || root().join(from).exists(),
            "{from}"
        );
    }
    assert_eq!(
        manifest["workspace"]["package"]["license"].as_str(),
        Some("Apache-2.0")
    );
    let license = std::fs::read_to_string(root().join("LICENSE")).unwrap();
    assert!(license.contains("Apache License") && license.contains("Version 2.0"));
}
