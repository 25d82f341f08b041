//! The committed journal fixture is exactly what this recorder writes: a format change that would
//! break old journals shows up here, and so does a change in the core's decisions (a journal replays
//! only under a core that decides as the one that wrote it). Regenerate it with
//! `DROVER_BLESS=1 cargo test -p drover-journal --test fixture`, bumping `FORMAT_VERSION` if the
//! format changed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use drover_core::testkit::World;
use drover_core::{Config, Event, RunnerConfig, RunnerId, Signal, Timestamp};
use drover_journal::{Header, Writer};

/// A morning of two runners: an autoscaled pool whose office-hours period starts at 09:00 Berlin, with
/// MaxBuilds and MaxGrowthRate, and an on-demand pool whose limit a reload lowers; then a graceful
/// shutdown.
fn record(path: &Path) {
    let t0 = Timestamp(1_767_592_800_000); // Monday 2026-01-05 06:00 UTC
    let mut linux = RunnerConfig::pool("autoscale-linux", 2, 12);
    linux.short_token = "exampleex".into();
    linux.request_concurrency = 2;
    let p = linux.policy_mut().unwrap();
    p.max_builds = 5;
    p.max_growth_rate = 3;
    p.base.idle_time_ms = 600_000;
    p.periods.push(
        drover_core::Period::new(
            &["* * 9-17 * * mon-fri *"],
            "Europe/Berlin",
            drover_core::PolicyValues {
                idle_count: 6,
                idle_time_ms: 1_800_000,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let mut burst = RunnerConfig::pool("on-demand", 0, 4);
    burst.short_token = "ondemand0".into();
    let mut config = Config::new(16).with_runner(linux).with_runner(burst);
    config.seed = 42;
    let mut w = World::new(config.clone(), t0);
    w.record = true;
    w.boot = Duration::from_secs(75);
    w.handle(Event::Tick);
    let mut minute = 0u64;
    while minute < 5 * 60 {
        let busy_hours = minute >= 2 * 60;
        let every = if busy_hours { 3 } else { 20 };
        if minute.is_multiple_of(every) {
            let runner = RunnerId(u16::from(minute.is_multiple_of(every * 4)));
            w.submit(runner, Duration::from_secs(60 + (minute * 37) % 900));
        }
        if minute == 3 * 60 {
            let mut reloaded = w.core.config().clone();
            reloaded.runners[1].limit = 2;
            w.handle(Event::Signal(Signal::Reload(Box::new(reloaded))));
        }
        w.advance(Duration::from_secs(60));
        minute += 1;
    }
    w.handle(Event::Signal(Signal::Graceful));
    w.advance(Duration::from_secs(3600));
    assert_eq!(w.exited, Some(true));
    assert_eq!(
        w.core.state().anomalies().total(),
        0,
        "the recorded world is a sensible one"
    );

    let _ = std::fs::remove_file(path);
    let header = Header {
        created_at: t0,
        drover_version: "0.1.0".into(),
        config: config.clone(),
    };
    let mut writer = Writer::create(path, &header, false).unwrap();
    let mut core = drover_core::Core::new(config, t0);
    for (i, r) in w.records.iter().enumerate() {
        writer
            .append_event(core.state().seq(), r.now, &r.event, core.digest())
            .unwrap();
        let step = core.handle(r.now, r.event.clone());
        assert_eq!(step.commands, r.commands);
        if (i + 1) % 500 == 0 {
            writer.append_snapshot(&core).unwrap();
        }
    }
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/journals/two-runners-day.journal")
}

#[test]
fn committed_fixture_is_what_the_recorder_writes() {
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh.journal");
    record(&fresh);
    if std::env::var_os("DROVER_BLESS").is_some() {
        assert!(
            std::env::var_os("CI").is_none(),
            "DROVER_BLESS is set in CI: the fixture must be regenerated and committed by a developer"
        );
        std::fs::copy(&fresh, fixture()).unwrap();
        eprintln!("blessed {}", fixture().display());
        return;
    }
    let committed =
        std::fs::read(fixture()).expect("fixtures/journals/two-runners-day.journal is committed");
    assert!(
        std::fs::read(&fresh).unwrap() == committed,
        "the recorder no longer writes the committed fixture byte for byte: the journal format changed \
         (bump FORMAT_VERSION) or the core decides differently; regenerate with DROVER_BLESS=1"
    );
}

/// A journal written by drover 0.1 (format 1, whose digests hash the whole serialized core, lazy
/// indexes included) still replays after the digest changed: every digest it holds is checked with
/// the digest of its own format, and its snapshots decode.
#[test]
fn a_format_1_journal_still_replays_and_recovers() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fixtures/journals/two-runners-day-format1.journal");
    let journal = drover_journal::read(&path).expect("the format-1 fixture is committed");
    assert_eq!(journal.format, 1);
    let replay = drover_journal::replay(&journal, |_| {}).expect("it replays");
    assert_eq!(replay.divergences, Vec::new());
    assert!(
        replay.summary.snapshots > 0,
        "its snapshots are checked too"
    );
    assert_eq!(
        replay.digests_checked,
        replay.summary.events + replay.summary.snapshots
    );
    let stats = replay.core.state().stats();
    assert!(stats.jobs_received > 50);
    assert_eq!(stats.jobs_received, stats.jobs_finished);
    // Recovery starts from its last snapshot and lands on the same state.
    let recovered = drover_journal::recover(&journal).expect("it recovers");
    assert_eq!(recovered.digest(), replay.core.digest());
}

/// The fixture of the same day written in an older `format`.
fn old_fixture(format: u16) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../fixtures/journals/two-runners-day-format{format}.journal"
    ))
}

/// Reads the day's journal of an older `format` and checks that it replays digest for digest
/// (its snapshots too) and that recovery from its last snapshot lands on the replayed state,
/// which it returns.
fn replays_and_recovers(format: u16) -> drover_core::Core {
    let journal = drover_journal::read(&old_fixture(format)).expect("the fixture is committed");
    assert_eq!(journal.format, format);
    let replay = drover_journal::replay(&journal, |_| {}).expect("it replays");
    assert_eq!(replay.divergences, Vec::new());
    assert!(replay.summary.snapshots > 0);
    assert_eq!(
        replay.digests_checked,
        replay.summary.events + replay.summary.snapshots
    );
    let recovered = drover_journal::recover(&journal).expect("its snapshots decode");
    assert_eq!(recovered.digest(), replay.core.digest());
    recovered
}

/// A journal written in format 2 (before `JobRequestAnswered` was appended to the events) still
/// decodes, replays digest for digest and recovers from its snapshots.
#[test]
fn a_format_2_journal_still_replays_and_recovers() {
    replays_and_recovers(2);
    // The same day in format 3 differs only in its version.
    let format3 = std::fs::read(old_fixture(3)).expect("committed");
    let old = std::fs::read(old_fixture(2)).expect("committed");
    assert_eq!(format3.len(), old.len());
    let differing: Vec<usize> = (0..old.len()).filter(|&i| old[i] != format3[i]).collect();
    assert_eq!(differing, vec![8], "only the format's low byte");
}

/// A journal written in format 3 (before the core kept runs of unhealthy job requests, whose
/// snapshots end before them) still replays digest for digest and recovers from its last
/// snapshot, to the state the current format's journal of the same day recovers to.
#[test]
fn a_format_3_journal_still_replays_and_recovers() {
    let recovered = replays_and_recovers(3);
    let current = drover_journal::read(&fixture()).expect("committed");
    assert_eq!(current.format, drover_journal::FORMAT_VERSION);
    let current = drover_journal::recover(&current).expect("it recovers");
    assert_eq!(
        recovered.digest(),
        current.digest(),
        "the same day, the same state"
    );
}
