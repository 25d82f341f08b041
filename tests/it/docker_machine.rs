//! `drover run` with `Provider = "docker-machine"`: the real binary against the fake GitLab and a
//! fake `docker-machine` (no cloud, no VM, no Docker engine needed). Jobs are not run: the executor
//! cannot reach a fake VM's engine. What is checked: a GitLab Runner config with `MachineDriver`
//! starts, keeps `IdleCount` machines made with the configured options, removes a leftover machine
//! of its prefix, adopts its machines after `kill -9`, drains on SIGQUIT, and keeps option secrets
//! out of its log.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use drover_gitlab::fake::{FakeGitlab, FakeOptions};
use drover_providers::{FakeCall, FakeDockerMachine};
use tokio::process::{Child, Command};

const PATIENCE: Duration = Duration::from_secs(60);
const SECRET: &str = "fake-cloud-s3cr3t-value";

/// Polls `check` until it holds, printing drover's log if it never does.
async fn eventually(what: &str, log: &Path, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        if Instant::now() > deadline {
            let log = std::fs::read_to_string(log).unwrap_or_default();
            panic!("{what}: not reached within {PATIENCE:?}; drover's log:\n{log}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn signal(child: &Child, name: &str) {
    let pid = child.id().expect("drover runs").to_string();
    let status = std::process::Command::new("kill")
        .args(["-s", name, &pid])
        .status()
        .expect("running kill");
    assert!(status.success(), "kill -s {name} {pid} failed");
}

#[tokio::test]
async fn a_docker_machine_runner_keeps_its_idle_machines_and_drains() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let dm = FakeDockerMachine::install(dir.path()).expect("the fake docker-machine installs");
    let gitlab = FakeGitlab::start(FakeOptions {
        token_seed: u64::from(std::process::id()) << 8 | 0x5d,
        long_poll: Duration::from_secs(2),
        ..FakeOptions::default()
    })
    .await
    .expect("the fake GitLab starts");
    let token = gitlab.create_runner_token();
    // This installation's system id, kept beside the config: part of the machine key.
    let system_id = "r_vmsTESTvms01";
    std::fs::write(
        dir.path().join(".runner_system_id"),
        format!("{system_id}\n"),
    )
    .unwrap();
    let prefix = format!(
        "runner-{}-",
        drover_core::config::machine_key(system_id, gitlab.url(), "vms")
    );

    // A machine of this runner that no journal knows (left by an earlier installation).
    let orphan = format!("{prefix}vm-orphan");
    let orphan_dir = dm.storage.join("machines").join(&orphan);
    std::fs::create_dir_all(&orphan_dir).unwrap();
    std::fs::write(orphan_dir.join("config.json"), "{}").unwrap();
    std::fs::write(orphan_dir.join("state"), "Running\n").unwrap();

    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"concurrent = 2
check_interval = 1
shutdown_timeout = 30
listen_address = "127.0.0.1:0"

[machine.shutdown_drain]
  enabled = true

[[runners]]
  name = "vms"
  url = "{url}"
  token = "{token}"
  executor = "docker+machine"
  limit = 3
  [runners.docker]
    image = "alpine:3.20"
  [runners.machine]
    IdleCount = 2
    IdleTime = 600
    MachineDriver = "fakecloud"
    MachineName = "vm-%s"
    MachineOptions = [
      "fakecloud-region=eu-west-1",
      "engine-registry-mirror=http://10.0.0.5:6000",
      "fakecloud-access-token={SECRET}",
    ]
    MachineOptionsWithName = ["fakecloud-tags=ci,%s"]
    DockerMachinePath = "{program}"
"#,
            url = gitlab.url(),
            program = dm.program.display(),
        ),
    )
    .unwrap();

    let state = dir.path().join("state");
    let start = |log: &Path| {
        Command::new(env!("CARGO_BIN_EXE_drover"))
            .arg("run")
            .arg("-c")
            .arg(&config)
            .arg("--state-dir")
            .arg(&state)
            .env("RUST_LOG", "info,drover=debug,drover_providers=debug")
            .env("MACHINE_STORAGE_PATH", &dm.storage)
            .env_remove("CONFIG_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("drover starts")
    };
    let log = dir.path().join("drover.log");
    let mut drover = start(&log);

    // Two idle machines, made with the runner's options; the orphan removed.
    let running = |dm: &FakeDockerMachine| {
        dm.machines()
            .into_iter()
            .filter(|m| m.starts_with(&prefix) && dm.state(m).as_deref() == Some("Running"))
            .collect::<Vec<_>>()
    };
    eventually("two running machines and no orphan", &log, || {
        running(&dm).len() == 2 && !orphan_dir.exists()
    })
    .await;
    let machines = running(&dm);
    for machine in &machines {
        assert!(
            machine.starts_with(&format!("{prefix}vm-")),
            "named after MachineName: {machine}"
        );
        let created = dm.started("create", machine);
        assert_eq!(created.len(), 1, "{machine} was created once");
        let args = &created[0];
        let create_at = args.iter().position(|a| a == "create").unwrap();
        assert_eq!(
            args[create_at..],
            [
                "create".to_string(),
                "--driver".to_string(),
                "fakecloud".to_string(),
                "--fakecloud-region=eu-west-1".to_string(),
                "--engine-registry-mirror=http://10.0.0.5:6000".to_string(),
                format!("--fakecloud-access-token={SECRET}"),
                format!("--fakecloud-tags=ci,{machine}"),
                machine.clone(),
            ]
        );
    }
    assert_eq!(dm.started("rm", &orphan).len(), 1, "the orphan was removed");

    // kill -9 and a restart: the journal's machines are adopted, not created again (their engines
    // cannot be reached, so the search for stray job containers gives up on them quickly).
    drover.kill().await.expect("kill -9");
    let first_log = log;
    let log = dir.path().join("drover-restarted.log");
    let mut drover = start(&log);
    eventually("the restarted drover is running", &log, || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("drover is running"))
    })
    .await;
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("recovered the scheduling core"), "{text}");

    // SIGQUIT with the shutdown drain: every machine is removed, then drover exits 0.
    signal(&drover, "QUIT");
    let status = tokio::time::timeout(PATIENCE, drover.wait())
        .await
        .expect("drover exits after SIGQUIT")
        .expect("waiting for drover");
    // Both runs' logs, in order.
    let text =
        std::fs::read_to_string(&first_log).unwrap() + &std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(0), "drover's log:\n{text}");
    assert!(
        dm.machines().iter().all(|m| !m.starts_with(&prefix)),
        "machines left after the drain: {:?}\n{text}",
        dm.machines()
    );
    let created = dm.calls().into_iter().filter(|c| {
        matches!(c, FakeCall::End { command, machine, .. }
            if command == "create" && machine.starts_with(&prefix))
    });
    assert_eq!(
        created.count(),
        2,
        "the restart created machines again:\n{text}"
    );
    for machine in &machines {
        let removed = dm.calls().into_iter().any(|c| {
            matches!(c, FakeCall::End { command, machine: m, exit_code: 0 }
                if command == "rm" && &m == machine)
        });
        assert!(removed, "{machine} was removed with docker-machine rm");
    }

    assert!(
        text.contains("machines come from docker-machine"),
        "the provider says where machines come from:\n{text}"
    );
    assert!(
        text.contains("fakecloud-access-token=***"),
        "the create command line is logged, masked:\n{text}"
    );
    assert!(!text.contains(SECRET), "an option's secret reached the log");
    assert!(!text.contains(&token), "the runner token reached the log");
    assert!(gitlab.violations().is_empty(), "{:?}", gitlab.violations());
}

/// Whether a process runs (a zombie does not: it is only waiting to be reaped).
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        let state = stat.rsplit(')').next().unwrap_or("").trim_start();
        !(state.starts_with('Z') || state.starts_with('X'))
    })
}

#[tokio::test]
async fn a_creation_cut_short_by_kill_9_dies_with_drover_and_goes_to_rm_before_it_is_made_again() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let dm = FakeDockerMachine::install(dir.path()).expect("the fake docker-machine installs");
    let gitlab = FakeGitlab::start(FakeOptions {
        token_seed: u64::from(std::process::id()) << 8 | 0x9c,
        long_poll: Duration::from_secs(2),
        ..FakeOptions::default()
    })
    .await
    .expect("the fake GitLab starts");
    let token = gitlab.create_runner_token();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            r#"concurrent = 1
check_interval = 1
listen_address = "127.0.0.1:0"

[[runners]]
  name = "slow-vms"
  url = "{url}"
  token = "{token}"
  executor = "docker+machine"
  limit = 1
  [runners.docker]
    image = "alpine:3.20"
  [runners.machine]
    IdleCount = 1
    IdleTime = 600
    MachineDriver = "fakecloud"
    MachineName = "vm-%s"
    DockerMachinePath = "{program}"
"#,
            url = gitlab.url(),
            program = dm.program.display(),
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    let start = |log: &Path| {
        Command::new(env!("CARGO_BIN_EXE_drover"))
            .arg("run")
            .arg("-c")
            .arg(&config)
            .arg("--state-dir")
            .arg(&state)
            .env("RUST_LOG", "info,drover=debug,drover_providers=debug")
            .env("MACHINE_STORAGE_PATH", &dm.storage)
            .env_remove("CONFIG_FILE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("drover starts")
    };

    // A creation that waits for its "cloud", its driver plugin running beside it.
    dm.slow_creations(true);
    let log = dir.path().join("drover.log");
    let mut drover = start(&log);
    eventually("a creation in flight", &log, || {
        !dm.slow_creations_in_flight().is_empty()
    })
    .await;
    let (machine, create, plugin) = dm.slow_creations_in_flight().remove(0);
    drover.kill().await.expect("kill -9");

    // (a) The docker-machine process dies with drover (its parent-death signal)...
    eventually(
        "the docker-machine create process dies with drover",
        &log,
        || !alive(create),
    )
    .await;
    // ... and what it started, out of that signal's reach, is ended by the next drover from
    // the record of the process group.
    assert!(alive(plugin), "nothing else killed the driver plugin");
    dm.slow_creations(false);
    let log = dir.path().join("drover-restarted.log");
    let _drover = start(&log);
    eventually("the restarted drover ends the plugin", &log, || {
        !alive(plugin)
    })
    .await;

    // (b) The half-made machine goes to `docker-machine rm -y` before it is created again.
    eventually("the machine is made again", &log, || {
        dm.state(&machine).as_deref() == Some("Running")
    })
    .await;
    let calls: Vec<Vec<String>> = dm
        .calls()
        .into_iter()
        .filter_map(|call| match call {
            FakeCall::Start(args) if args.last() == Some(&machine) => Some(args),
            _ => None,
        })
        .collect();
    let position = |command: &str| {
        calls
            .iter()
            .enumerate()
            .filter(|(_, args)| args.iter().any(|a| a == command))
            .map(|(i, _)| i)
            .collect::<Vec<_>>()
    };
    let (creates, removals) = (position("create"), position("rm"));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(creates.len(), 2, "{calls:?}\n{text}");
    assert!(
        removals
            .iter()
            .any(|&rm| creates[0] < rm && rm < creates[1] && calls[rm].contains(&"-y".into())),
        "no `rm -y {machine}` between the two creations: {calls:?}\n{text}"
    );
    assert!(
        text.contains("handing it to docker-machine rm -y"),
        "the log says why: {text}"
    );
    assert!(gitlab.violations().is_empty(), "{:?}", gitlab.violations());
}

/// SIGTERM with a creation in flight: drover exits without waiting for it, and on its way out the
/// provider's shutdown ends the `docker-machine create` and the driver plugin it started (no
/// restart needed), keeping the creation's mark so the next drover hands the machine to `rm -y`.
#[tokio::test]
async fn a_forceful_exit_ends_docker_machine_children_and_keeps_the_creation_mark() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let dm = FakeDockerMachine::install(dir.path()).expect("the fake docker-machine installs");
    let gitlab = FakeGitlab::start(FakeOptions {
        token_seed: u64::from(std::process::id()) << 8 | 0x7e,
        long_poll: Duration::from_secs(2),
        ..FakeOptions::default()
    })
    .await
    .expect("the fake GitLab starts");
    let token = gitlab.create_runner_token();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "concurrent = 1\ncheck_interval = 1\nshutdown_timeout = 30\n\n[[runners]]\n\
             \x20 name = \"ending-vms\"\n  url = \"{url}\"\n  token = \"{token}\"\n\
             \x20 executor = \"docker+machine\"\n  limit = 1\n  [runners.docker]\n\
             \x20   image = \"alpine:3.20\"\n  [runners.machine]\n    IdleCount = 1\n\
             \x20   IdleTime = 600\n    MachineDriver = \"fakecloud\"\n\
             \x20   MachineName = \"vm-%s\"\n    DockerMachinePath = \"{program}\"\n",
            url = gitlab.url(),
            program = dm.program.display(),
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    let log = dir.path().join("drover.log");
    dm.slow_creations(true);
    let mut drover = Command::new(env!("CARGO_BIN_EXE_drover"))
        .arg("run")
        .arg("-c")
        .arg(&config)
        .arg("--state-dir")
        .arg(&state)
        .env("RUST_LOG", "info,drover=debug,drover_providers=debug")
        .env("MACHINE_STORAGE_PATH", &dm.storage)
        .env_remove("CONFIG_FILE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("drover starts");
    eventually("a creation in flight", &log, || {
        !dm.slow_creations_in_flight().is_empty()
    })
    .await;
    let (machine, create, plugin) = dm.slow_creations_in_flight().remove(0);

    signal(&drover, "TERM");
    let status = tokio::time::timeout(PATIENCE, drover.wait())
        .await
        .expect("drover exits without waiting for the creation")
        .expect("waiting for drover");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        status.code().is_some(),
        "drover exited by itself: {status:?}\n{text}"
    );
    // Ended by drover on its way out, not by the parent-death signal (the plugin is out of its
    // reach) nor by a later drover.
    eventually("the create process ended", &log, || !alive(create)).await;
    eventually("the driver plugin ended", &log, || !alive(plugin)).await;
    assert!(text.contains("ending docker-machine"), "{text}");
    assert!(
        state
            .join("docker-machine")
            .join("creating")
            .join(&machine)
            .exists(),
        "the cut-short creation stays marked for `rm -y`\n{text}"
    );
}
