//! Every command in README.md's shell blocks runs as written.
//!
//! Commands are run by `sh` in a scratch directory (with the repository's `fixtures/` linked in),
//! with this build's `drover` first on `PATH`; `cargo run --release --` stands for that same
//! binary. A command that cannot run here is listed in [`SKIPPED`] with the reason; a new command
//! that is in neither list fails the test, so the README cannot grow an unchecked one.

use std::path::Path;
use std::process::Command;

/// Commands not run here, by prefix, and why.
const SKIPPED: &[(&str, &str)] = &[
    (".ci/run", "the whole CI, which runs this test"),
    (
        "drover register -c /etc/drover/config.toml",
        "needs a live GitLab to register with",
    ),
    (
        "drover check-config -c /etc/drover/config.toml",
        "checks the file `drover register` writes from a live GitLab",
    ),
    (
        "drover run -c /etc/drover/config.toml",
        "needs a live GitLab (the daemon is tested against the fake one in tests/it/daemon)",
    ),
    (
        "drover status -c /etc/drover/config.toml",
        "asks the daemon the previous command runs",
    ),
    (
        "sudo -u drover drover register",
        "needs a live GitLab and the installed package",
    ),
    (
        "sudo systemctl enable --now drover",
        "needs systemd as init and a live GitLab",
    ),
    (
        "cargo install cargo-deb",
        "installs system-wide; .ci/run builds, installs and checks the package",
    ),
    ("cargo deb", "run by .ci/run (packaging)"),
    ("sudo dpkg -i", "run by .ci/run (packaging)"),
    (
        "drover replay /var/lib/drover/",
        "reads a production daemon's journal; the next command replays the committed one",
    ),
    (
        "cargo test --test it -- sim_to_real",
        "a test of this suite (daemon::sim_to_real)",
    ),
    (
        "cargo install cargo-mutants",
        "mutation testing takes hours; run on demand",
    ),
    (
        "PROPTEST_CASES=32 cargo mutants",
        "mutation testing takes hours; run on demand",
    ),
    (
        "cargo bench",
        "benchmarks take minutes and measure, not check",
    ),
    (
        "cargo run --release -p drover-sim --example throughput",
        "a benchmark of 10 M jobs",
    ),
    (
        "cargo run --release -p drover-sim --example autoscalers",
        "a benchmark of 10 M jobs",
    ),
    (
        "sh benches/warm-dispatch.sh",
        "a benchmark: times engine calls and job starts on the Docker engine for minutes",
    ),
    (
        "sh benches/aws-build-time.sh",
        "a benchmark: two release builds from scratch, minutes each",
    ),
    (
        "sh tools/kill9-trials.sh",
        "a measurement: 40 trials of drover killed -9 mid-job on the Docker engine, about 15 minutes",
    ),
    (
        "sh benches/simpy/run.sh",
        "a benchmark: installs SimPy from PyPI and times both simulators for minutes",
    ),
];

/// The commands of README.md's `sh` blocks: comment lines dropped, `\` continuations joined.
fn readme_commands(readme: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut in_block = false;
    let mut pending = String::new();
    for line in readme.lines() {
        let trimmed = line.trim();
        if let Some(language) = trimmed.strip_prefix("```") {
            in_block = !in_block && matches!(language, "sh" | "bash" | "shell" | "console");
            continue;
        }
        if !in_block || trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                pending.push_str(part);
                pending.push(' ');
            }
            None => {
                pending.push_str(trimmed);
                commands.push(std::mem::take(&mut pending));
            }
        }
    }
    commands
}

#[test]
fn every_readme_command_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md reads");
    let commands = readme_commands(&readme);
    assert!(commands.len() >= 10, "{commands:#?}");

    let scratch = tempfile::tempdir().expect("a temp dir");
    let bin = scratch.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_drover"), bin.join("drover")).unwrap();
    let work = scratch.path().join("work");
    std::fs::create_dir(&work).unwrap();
    std::os::unix::fs::symlink(root.join("fixtures"), work.join("fixtures")).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let mut ran = 0;
    let mut used = vec![false; SKIPPED.len()];
    for command in &commands {
        if let Some(i) = SKIPPED.iter().position(|(p, _)| command.starts_with(p)) {
            used[i] = true;
            println!("skipped ({}): {command}", SKIPPED[i].1);
            continue;
        }
        let runnable = command
            .strip_prefix("cargo run --release -- ")
            .map(|rest| format!("drover {rest}"))
            .unwrap_or_else(|| command.clone());
        assert!(
            runnable.starts_with("drover "),
            "README command neither run here nor skipped with a reason: {command}"
        );
        println!("running: {command}");
        let out = Command::new("sh")
            .args(["-c", &runnable])
            .current_dir(&work)
            .env("PATH", &path)
            .env_remove("CONFIG_FILE")
            .output()
            .expect("sh runs");
        assert!(
            out.status.success(),
            "README command failed ({}): {command}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        ran += 1;
    }
    // The simulate examples (two) and the replay of the committed journal.
    assert!(ran >= 4, "only {ran} README commands ran");
    // A skip whose command left the README would hide nothing and say nothing: it goes too.
    let stale: Vec<&str> = SKIPPED
        .iter()
        .zip(&used)
        .filter(|(_, used)| !**used)
        .map(|((prefix, _), _)| *prefix)
        .collect();
    assert!(
        stale.is_empty(),
        "SKIPPED entries no README command starts with: {stale:?}"
    );
    assert!(
        work.join("sweep.svg").exists(),
        "the sweep example draws its plot"
    );
}
