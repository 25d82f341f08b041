//! The docker-machine provider against a fake `docker-machine` (no cloud, no VM, no Docker engine
//! needed): command lines, adoption, failures and their kinds, removal, listing, endpoints, and
//! per-name serialisation.

mod conformance;

use std::future::Future;
use std::time::{Duration, Instant};

use drover_docker::{EngineConfig, TlsFiles};
use drover_providers::{
    DockerMachineConfig, DockerMachineProvider, FakeCall, FakeDockerMachine, MachineProvider,
    ProviderErrorKind,
};

const PREFIX: &str = "runner-abc123xyz-";

struct World {
    fake: FakeDockerMachine,
    _dir: tempfile::TempDir,
}

fn world() -> World {
    let dir = tempfile::tempdir().expect("a temp dir");
    let fake = FakeDockerMachine::install(dir.path()).expect("installing the fake docker-machine");
    World { fake, _dir: dir }
}

impl World {
    fn provider(&self, options: &[&str]) -> DockerMachineProvider {
        self.provider_with(self.fake.config("fakecloud", options))
    }

    fn provider_with(&self, config: DockerMachineConfig) -> DockerMachineProvider {
        DockerMachineProvider::new(config).expect("the provider sets up")
    }

    /// The commands run so far, without their global flags and machine names, e.g. `["stop"]`.
    fn commands(&self) -> Vec<String> {
        self.fake
            .calls()
            .into_iter()
            .filter_map(|call| match call {
                FakeCall::Start(args) => args.into_iter().find(|a| !a.starts_with('-')),
                FakeCall::End { .. } => None,
            })
            .collect()
    }
}

fn name(n: u32) -> String {
    format!("{PREFIX}auto-{n}")
}

/// The flag drover puts before every command unless the operator wants crash reports.
fn global_flags() -> Vec<String> {
    match std::env::var_os("MACHINE_BUGSNAG_API_TOKEN") {
        Some(_) => vec![],
        None => vec!["--bugsnag-api-token=no-report".to_string()],
    }
}

/// Polls `condition` until it holds; fails the test after 30 s.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "{what} did not happen within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Whether `future` is still pending after one poll.
async fn is_pending<F: Future + Unpin>(future: &mut F) -> bool {
    futures_util::poll!(future).is_pending()
}

#[tokio::test]
async fn create_runs_docker_machine_with_gitlab_runners_command_line() {
    let w = world();
    let mut config = w.fake.config(
        "fakecloud",
        &[
            "fakecloud-region=eu-west-1",
            "engine-registry-mirror=http://10.0.0.5:6000",
            "fakecloud-use-private-address=true",
            "fakecloud-request-spot-instance",
        ],
    );
    config.options_with_name = vec!["fakecloud-tags=ci,%s".to_string()];
    let p = w.provider_with(config);
    let m = name(1);

    let endpoint = p.create(&m).await.expect("the machine is created");

    let mut expected = global_flags();
    expected.extend(
        [
            "create",
            "--driver",
            "fakecloud",
            "--fakecloud-region=eu-west-1",
            "--engine-registry-mirror=http://10.0.0.5:6000",
            "--fakecloud-use-private-address=true",
            "--fakecloud-request-spot-instance",
            &format!("--fakecloud-tags=ci,{m}"),
            &m,
        ]
        .map(String::from),
    );
    assert_eq!(w.fake.started("create", &m), vec![expected]);
    assert_eq!(w.fake.state(&m).as_deref(), Some("Running"));

    let dir = w.fake.storage.join("machines").join(&m);
    let ip = std::fs::read_to_string(dir.join("ip")).unwrap();
    assert_eq!(endpoint.machine.as_deref(), Some(m.as_str()));
    assert_eq!(
        endpoint.engine,
        EngineConfig {
            host: Some(format!("tcp://{}:2376", ip.trim())),
            tls: Some(TlsFiles::from_dir(&dir)),
        }
    );
    assert_eq!(endpoint.network, None, "each job gets its own network");
    assert_eq!(endpoint.builds_volume, Some(format!("{m}-builds")));
    assert_eq!(p.endpoint(&m).await.unwrap(), endpoint);
}

#[tokio::test]
async fn a_running_machine_is_adopted_not_created_again() {
    let w = world();
    let p = w.provider(&[]);
    let m = name(2);
    let first = p.create(&m).await.unwrap();
    let again = p.create(&m).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(w.fake.started("create", &m).len(), 1, "{:?}", w.commands());
    assert_eq!(w.commands(), ["create", "config", "status", "config"]);

    // A second provider (drover restarted) adopts it too.
    let restarted = w.provider(&[]);
    assert_eq!(restarted.create(&m).await.unwrap(), first);
    assert_eq!(w.fake.started("create", &m).len(), 1);
}

#[tokio::test]
async fn a_machine_that_does_not_run_is_replaced() {
    let w = world();
    let p = w.provider(&[]);
    let m = name(3);
    p.create(&m).await.unwrap();
    w.fake.set_state(&m, "Stopped");
    assert_eq!(
        p.endpoint(&m).await.unwrap_err().kind,
        ProviderErrorKind::Retryable,
        "a stopped machine exists but cannot be reached"
    );

    p.create(&m).await.expect("replaced");
    assert_eq!(w.fake.state(&m).as_deref(), Some("Running"));
    assert_eq!(
        w.commands(),
        [
            "create", "config", "config", "status", "stop", "rm", "create", "config"
        ]
    );
}

#[tokio::test]
async fn creation_failures_are_classified_and_their_leftovers_removable() {
    let w = world();
    let p = w.provider(&[]);
    let cases = [
        (
            "Error creating machine: Error in driver during machine creation: Error launching \
             instance: InstanceLimitExceeded: You have requested more instances (20) than your \
             current instance limit of 20 allows",
            ProviderErrorKind::Quota,
        ),
        (
            "Error creating machine: Error in driver during machine creation: AuthFailure: AWS \
             was not able to validate the provided access credentials",
            ProviderErrorKind::Fatal,
        ),
        (
            "Error creating machine: Error in driver during machine creation: Error launching \
             instance: InternalError: An internal error has occurred",
            ProviderErrorKind::Retryable,
        ),
    ];
    for (i, (message, kind)) in cases.into_iter().enumerate() {
        let m = name(10 + i as u32);
        w.fake.fail_creations(message);
        let err = p.create(&m).await.unwrap_err();
        assert_eq!(err.kind, kind, "{err}");
        assert!(err.to_string().contains(&m), "names the machine: {err}");
        assert!(err.message.contains("exit code 1"), "{err}");
        let last_words = message.rsplit(": ").next().unwrap();
        assert!(err.message.contains(last_words), "{err}");

        // What the failed creation left behind is listed, and removed by name.
        assert_eq!(w.fake.state(&m).as_deref(), Some("Error"));
        assert_eq!(p.list(PREFIX).await.unwrap(), vec![m.clone()]);
        p.remove(&m)
            .await
            .expect("the half-created machine is removed");
        assert!(p.list(PREFIX).await.unwrap().is_empty());
    }
    w.fake.heal_creations();
    p.create(&name(20)).await.expect("creations work again");
}

#[tokio::test]
async fn command_lines_docker_machine_refuses_are_fatal() {
    let w = world();
    let m = name(4);
    let unknown_driver = w.provider_with(w.fake.config("fakeclod", &[]));
    let err = unknown_driver.create(&m).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Fatal, "{err}");
    assert!(
        err.message.contains("Driver \"fakeclod\" not found"),
        "{err}"
    );
    assert!(
        err.message.contains("MachineOptions"),
        "says what to check: {err}"
    );
    assert!(w.fake.machines().is_empty(), "nothing was made");
    unknown_driver
        .remove(&m)
        .await
        .expect("nothing to remove is fine");

    let unknown_option = w.provider(&["amazonec2-region=eu-west-1"]);
    let err = unknown_option.create(&m).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Fatal, "{err}");
    assert!(
        err.message
            .contains("flag provided but not defined: --amazonec2-region"),
        "{err}"
    );
}

#[tokio::test]
async fn secrets_stay_out_of_error_messages() {
    let w = world();
    let p = w.provider(&["fakecloud-access-token=tok-5ecr3t-value"]);
    w.fake
        .fail_creations("Error: token tok-5ecr3t-value rejected: AuthFailure");
    let err = p.create(&name(5)).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Fatal, "{err}");
    assert!(!err.to_string().contains("tok-5ecr3t-value"), "{err}");
    assert!(err.message.contains("token *** rejected"), "{err}");
    // The option itself reached docker-machine unmasked.
    let args = &w.fake.started("create", &name(5))[0];
    assert!(args.contains(&"--fakecloud-access-token=tok-5ecr3t-value".to_string()));
}

#[tokio::test]
async fn a_hanging_creation_is_killed_after_its_timeout() {
    let w = world();
    let mut config = w.fake.config("fakecloud", &[]);
    config.timeouts.create = Duration::from_millis(500);
    let p = w.provider_with(config);
    let m = name(6);
    w.fake.hang_creations(true);
    let err = p.create(&m).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Retryable, "{err}");
    // That the hanging process group is killed is tested in cli.rs
    // (`a_timeout_kills_the_whole_process_group`).
    assert!(err.message.contains("no answer within 500ms"), "{err}");
    w.fake.hang_creations(false);
    assert_eq!(p.list(PREFIX).await.unwrap(), vec![m.clone()]);
    p.remove(&m).await.expect("the leftover is removed");
    assert!(w.fake.machines().is_empty());
}

#[tokio::test]
async fn removing_an_absent_machine_is_ok_and_runs_nothing() {
    let w = world();
    let p = w.provider(&[]);
    p.remove(&name(7)).await.expect("absent is removed");
    assert!(w.commands().is_empty(), "{:?}", w.commands());
}

#[tokio::test]
async fn removal_stops_then_removes_and_reports_failures() {
    let w = world();
    let p = w.provider(&[]);
    let m = name(8);
    p.create(&m).await.unwrap();
    w.fake.fail_removals(1);
    let err = p.remove(&m).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Retryable, "{err}");
    assert!(err.message.contains("fake cloud API unavailable"), "{err}");
    assert_eq!(
        p.list(PREFIX).await.unwrap(),
        vec![m.clone()],
        "still there after a failed removal"
    );
    assert_eq!(
        w.fake.started("rm", &m).len(),
        1,
        "no retry inside the provider: the core retries with backoff"
    );

    p.remove(&m).await.expect("the second attempt works");
    assert!(w.fake.machines().is_empty());
    let mut expected = global_flags();
    expected.extend(["rm", "-y", &m].map(String::from));
    assert_eq!(w.fake.started("rm", &m)[1], expected);
    assert_eq!(
        w.commands(),
        ["create", "config", "stop", "rm", "stop", "rm"]
    );
}

#[tokio::test]
async fn list_returns_the_machines_with_the_prefix_complete_or_not() {
    let w = world();
    let p = w.provider(&[]);
    assert!(
        p.list(PREFIX).await.unwrap().is_empty(),
        "no storage yet is an empty list"
    );
    p.create(&name(31)).await.unwrap();
    p.create(&name(30)).await.unwrap();
    p.create("runner-other-auto-1").await.unwrap();
    let machines = w.fake.storage.join("machines");
    std::fs::create_dir_all(machines.join(name(32))).unwrap(); // no config.json yet
    std::fs::create_dir_all(machines.join(format!(".{PREFIX}hidden"))).unwrap();
    std::fs::write(machines.join(format!("{PREFIX}a-file")), "").unwrap();

    assert_eq!(
        p.list(PREFIX).await.unwrap(),
        vec![name(30), name(31), name(32)]
    );
    assert_eq!(
        p.list("runner-other-").await.unwrap(),
        vec!["runner-other-auto-1".to_string()]
    );
    assert!(p.list("runner-nobody-").await.unwrap().is_empty());
}

#[tokio::test]
async fn an_unfinished_directory_is_not_a_machine_but_is_cleaned_up() {
    let w = world();
    let p = w.provider(&[]);
    let m = name(9);
    let dir = w.fake.storage.join("machines").join(&m);
    std::fs::create_dir_all(&dir).unwrap();

    let err = p.endpoint(&m).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::NotFound, "{err}");
    p.remove(&m).await.expect("removed");
    assert!(!dir.exists());
    assert!(
        w.commands().is_empty(),
        "docker-machine knows nothing of it: {:?}",
        w.commands()
    );

    // A creation over such a directory clears it first (docker-machine would say "already exists").
    std::fs::create_dir_all(&dir).unwrap();
    p.create(&m).await.expect("created over the leftover");
    assert_eq!(w.fake.state(&m).as_deref(), Some("Running"));
}

#[tokio::test]
async fn endpoint_of_an_absent_machine_is_not_found() {
    let w = world();
    let p = w.provider(&[]);
    let err = p.endpoint(&name(40)).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::NotFound, "{err}");
    assert!(w.commands().is_empty());
}

#[tokio::test]
async fn remove_during_create_waits_for_the_creation() {
    let w = world();
    let p = w.provider(&[]);
    let m = name(41);
    w.fake.close_create_gate();
    let mut create = Box::pin(p.create(&m));
    // Drive the creation until docker-machine waits at the gate.
    let started = async {
        eventually("the creation reaching the gate", || {
            w.fake.create_started(&m)
        })
        .await
    };
    tokio::select! {
        _ = &mut create => panic!("the creation ended at a closed gate"),
        () = started => {}
    }
    let mut remove = Box::pin(p.remove(&m));
    assert!(is_pending(&mut remove).await, "the removal waits");
    assert!(w.fake.started("stop", &m).is_empty());
    assert!(w.fake.started("rm", &m).is_empty());

    w.fake.open_create_gate();
    let (created, removed) = tokio::join!(create, remove);
    created.expect("the creation finished");
    removed.expect("then the removal ran");
    assert!(w.fake.machines().is_empty());
    let order: Vec<String> = w
        .fake
        .calls()
        .into_iter()
        .map(|c| match c {
            FakeCall::Start(args) => format!(
                "start {}",
                args.iter().find(|a| !a.starts_with('-')).unwrap()
            ),
            FakeCall::End { command, .. } => format!("end {command}"),
        })
        .collect();
    assert_eq!(
        order,
        [
            "start create",
            "end create",
            "start config",
            "end config",
            "start stop",
            "end stop",
            "start rm",
            "end rm"
        ],
        "the removal began after the creation ended"
    );
}

#[tokio::test]
async fn a_program_gone_since_start_up_is_fatal() {
    let w = world();
    let p = w.provider(&[]);
    std::fs::remove_file(&w.fake.program).unwrap();
    let err = p.create(&name(42)).await.unwrap_err();
    assert_eq!(err.kind, ProviderErrorKind::Fatal, "{err}");
    assert!(err.message.contains("cannot run the program"), "{err}");
}

/// What a `kill -9` of drover during a creation leaves in its state directory: the mark of a
/// creation in flight, owned by a process that is gone (this pid, another start time).
fn leave_an_interrupted_creation(state: &std::path::Path, name: &str) {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let started: u64 = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .nth(19)
        .unwrap()
        .parse()
        .unwrap();
    let creating = state.join("creating");
    std::fs::create_dir_all(&creating).unwrap();
    let dead = format!("{}:{}\n", std::process::id(), started + 1);
    std::fs::write(creating.join(name), dead).unwrap();
}

#[tokio::test]
async fn a_creation_cut_short_by_a_crash_goes_to_rm_before_anything_else() {
    let w = world();
    let state = w._dir.path().join("state");
    let provider = || {
        w.provider(&[])
            .with_state_dir(&state)
            .expect("the state directory")
    };
    // A directory without config.json, and one with it (state Error), both of creations a
    // crashed drover had in flight.
    let (debris, half) = (name(50), name(51));
    std::fs::create_dir_all(w.fake.storage.join("machines").join(&debris)).unwrap();
    w.fake.fail_creations("Error creating machine: cut short");
    w.provider(&[]).create(&half).await.unwrap_err();
    w.fake.heal_creations();
    leave_an_interrupted_creation(&state, &debris);
    leave_an_interrupted_creation(&state, &half);
    let before = w.commands().len();

    let p = provider();
    p.create(&debris)
        .await
        .expect("created after the hand-over");
    p.remove(&half).await.expect("removed");
    let commands = w.commands()[before..].to_vec();
    assert_eq!(
        commands,
        ["rm", "create", "config", "stop", "rm"],
        "the debris went to rm -y before its new creation (never adopted, never just deleted)"
    );
    assert_eq!(w.fake.state(&debris).as_deref(), Some("Running"));
    assert_eq!(w.fake.machines(), std::slice::from_ref(&debris));

    // Handed over once: the marks are gone, a restart adopts the new machine.
    let before = w.commands().len();
    provider().create(&debris).await.expect("adopted");
    assert_eq!(w.commands()[before..], ["status", "config"]);
}

#[tokio::test]
async fn providers_sharing_locks_never_work_on_one_name_at_once() {
    // A reload that changes MachineOptions builds a new provider while the old one's creation
    // runs; both share the daemon's lock table.
    let w = world();
    let locks = drover_providers::NameLocks::new();
    let old = w.provider(&["fakecloud-size=s"]).with_locks(locks.clone());
    let new = w.provider(&["fakecloud-size=l"]).with_locks(locks);
    let m = name(52);
    w.fake.close_create_gate();
    let mut create = Box::pin(old.create(&m));
    let started =
        async { eventually("the creation at the gate", || w.fake.create_started(&m)).await };
    tokio::select! {
        _ = &mut create => panic!("the creation ended at a closed gate"),
        () = started => {}
    }
    let mut remove = Box::pin(new.remove(&m));
    assert!(
        is_pending(&mut remove).await,
        "the new provider waits for the old one"
    );
    assert!(w.fake.started("rm", &m).is_empty());
    w.fake.open_create_gate();
    let (created, removed) = tokio::join!(create, remove);
    created.expect("the old provider's creation finished");
    removed.expect("then the new provider removed the machine");
    assert!(w.fake.machines().is_empty());
    let calls = w.fake.calls();
    let at = |wanted: &dyn Fn(&FakeCall) -> bool| calls.iter().position(wanted);
    let create_ended = at(&|c| matches!(c, FakeCall::End { command, .. } if command == "create"));
    let stop_began = at(&|c| matches!(c, FakeCall::Start(args) if args.contains(&"stop".into())));
    assert!(
        create_ended.is_some() && create_ended < stop_began,
        "the removal began after the creation ended: {calls:?}"
    );
}
