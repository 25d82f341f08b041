//! The journal format: round trips, torn tails, damage, versions, snapshots and compaction.

use std::path::Path;
use std::time::Duration;

use drover_core::testkit::World;
use drover_core::{Config, Event, RunnerConfig, RunnerId, Signal, Timestamp};
use drover_journal::{FORMAT_VERSION, Frame, Header, JournalError, Writer, read, recover, replay};

const T0: Timestamp = Timestamp(1_767_571_200_000);

fn config() -> Config {
    let mut r = RunnerConfig::pool("linux", 2, 6);
    r.policy_mut().unwrap().max_builds = 3;
    r.policy_mut().unwrap().base.idle_time_ms = 300_000;
    Config::new(4).with_runner(r)
}

/// Runs a small day through the world and journals every input, write-ahead, with a snapshot every
/// `snapshot_every` events.
fn record(path: &Path, snapshot_every: u64) -> World {
    let mut w = World::new(config(), T0);
    w.record = true;
    let header = Header {
        created_at: T0,
        drover_version: "test".into(),
        config: config(),
    };
    let mut writer = Writer::create(path, &header, false).unwrap();
    w.handle(Event::Tick);
    for i in 0..40u64 {
        w.submit(RunnerId(0), Duration::from_secs(30 + (i * 37) % 400));
        w.advance(Duration::from_secs(20 + (i * 13) % 90));
    }
    w.advance(Duration::from_secs(3600));
    w.handle(Event::Signal(Signal::Graceful));
    w.advance(Duration::from_secs(600));
    // Re-derive what the world fed the core and journal it, as the daemon does before each step.
    let mut core = drover_core::Core::new(config(), T0);
    for (i, r) in w.records.iter().enumerate() {
        writer
            .append_event(core.state().seq(), r.now, &r.event, core.digest())
            .unwrap();
        let step = core.handle(r.now, r.event.clone());
        assert_eq!(step.commands, r.commands);
        if (i as u64 + 1).is_multiple_of(snapshot_every) {
            writer.append_snapshot(&core).unwrap();
        }
    }
    w
}

#[test]
fn round_trip_and_verified_replay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("day.journal");
    let world = record(&path, 50);
    let journal = read(&path).unwrap();
    assert_eq!(journal.format, FORMAT_VERSION);
    assert!(journal.torn_tail.is_none());
    let events = journal
        .frames
        .iter()
        .filter(|(_, f)| matches!(f, Frame::Event { .. }))
        .count();
    assert_eq!(events, world.records.len());
    let mut steps = 0;
    let replayed = replay(&journal, |_| steps += 1).unwrap();
    assert!(
        replayed.divergences.is_empty(),
        "{:?}",
        replayed.divergences
    );
    assert_eq!(steps, events);
    assert_eq!(
        replayed.digests_checked as usize,
        events + journal.frames.len() - events
    );
    assert_eq!(replayed.core.digest(), world.core.digest());
    assert_eq!(
        replayed.summary.events_by_kind.get("signal_graceful"),
        Some(&1)
    );
    assert_eq!(replayed.summary.commands_by_kind.get("exit"), Some(&1));
    // Recovery from the last snapshot reaches the same state.
    assert_eq!(recover(&journal).unwrap().digest(), world.core.digest());
}

#[test]
fn torn_tails_are_truncated_at_every_cut_point() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("day.journal");
    record(&path, 1000);
    let bytes = std::fs::read(&path).unwrap();
    let full = read(&path).unwrap();
    let (last_offset, _) = full.frames.last().unwrap().clone();
    let cut_path = dir.path().join("cut.journal");
    for cut in (last_offset as usize + 1)..bytes.len() {
        std::fs::write(&cut_path, &bytes[..cut]).unwrap();
        let j = read(&cut_path).unwrap();
        assert_eq!(j.frames.len(), full.frames.len() - 1, "cut at {cut}");
        assert_eq!(j.torn_tail.map(|t| t.offset), Some(last_offset));
        // Opening for append truncates the tail; appending the lost frame again restores the journal.
        let (mut w, j2) = Writer::open(&cut_path, false).unwrap();
        assert_eq!(j2.valid_len, last_offset);
        let Frame::Event {
            seq,
            now,
            event,
            digest_before,
        } = &full.frames.last().unwrap().1
        else {
            panic!()
        };
        w.append_event(*seq, *now, event, *digest_before).unwrap();
        drop(w);
        assert_eq!(std::fs::read(&cut_path).unwrap(), bytes, "cut at {cut}");
    }
}

#[test]
fn damage_in_the_middle_is_reported_with_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("day.journal");
    record(&path, 1000);
    let journal = read(&path).unwrap();
    let (offset, _) = journal.frames[10];
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[offset as usize + 12] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    match read(&path) {
        Err(JournalError::Corrupt { offset: o, .. }) => assert_eq!(o, offset),
        other => panic!("expected corruption at {offset}, got {other:?}"),
    }
    let err = Writer::open(&path, false).err().unwrap().to_string();
    assert!(err.contains(&format!("byte offset {offset}")), "{err}");
    // Nothing was truncated.
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

#[test]
fn newer_formats_and_foreign_files_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("day.journal");
    record(&path, 1000);
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[8..10].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let err = read(&path).unwrap_err().to_string();
    assert!(
        err.contains(&format!("journal format {}", FORMAT_VERSION + 1)),
        "{err}"
    );
    assert!(err.contains("use a newer drover"), "{err}");
    std::fs::write(&path, b"[[runners]]\nname = \"x\"\n").unwrap();
    assert!(matches!(read(&path), Err(JournalError::NotAJournal { .. })));
}

#[test]
fn compaction_keeps_the_state_and_drops_history() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("day.journal");
    let world = record(&path, 1000);
    let journal = read(&path).unwrap();
    let before = std::fs::metadata(&path).unwrap().len();
    let core = recover(&journal).unwrap();
    let mut w = Writer::compact(&path, &core, "test", false).unwrap();
    let after = std::fs::metadata(&path).unwrap().len();
    assert!(after < before / 2, "{after} vs {before}");
    // Appends continue after the snapshot, and a verified replay starts from it.
    let mut core2 = core.clone();
    let ev = Event::Tick;
    let now = core2.state().now().after(Duration::from_secs(1));
    w.append_event(core2.state().seq(), now, &ev, core2.digest())
        .unwrap();
    let _ = core2.handle(now, ev);
    let j = read(&path).unwrap();
    let r = replay(&j, |_| {}).unwrap();
    assert!(r.divergences.is_empty());
    assert_eq!(r.core.digest(), core2.digest());
    assert_eq!(recover(&j).unwrap().digest(), core2.digest());
    let _ = world;
}

#[test]
fn a_replay_that_diverges_says_where() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("day.journal");
    record(&path, 1000);
    let mut journal = read(&path).unwrap();
    // Pretend the recording core had been in another state before the 20th event.
    if let Frame::Event { digest_before, .. } = &mut journal.frames[20].1 {
        *digest_before ^= 1;
    }
    let r = replay(&journal, |_| {}).unwrap();
    assert_eq!(r.divergences.len(), 1);
    assert_eq!(r.divergences[0].offset, journal.frames[20].0);
}

/// Format 3's event, an empty answer with how long it was held, journals and replays like any.
#[test]
fn held_answers_journal_and_replay() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("held.journal");
    let header = Header {
        created_at: T0,
        drover_version: "test".into(),
        config: config(),
    };
    let mut writer = Writer::create(&path, &header, false).unwrap();
    let mut core = drover_core::Core::new(config(), T0);
    let events = [
        (T0, Event::Tick),
        (
            T0.after(Duration::from_secs(50)),
            Event::JobRequestAnswered {
                runner: RunnerId(0),
                held_ms: 50_000,
                long_poll: false,
            },
        ),
        (
            T0.after(Duration::from_secs(51)),
            Event::JobRequestAnswered {
                runner: RunnerId(0),
                held_ms: 20,
                long_poll: true,
            },
        ),
    ];
    for (now, event) in &events {
        writer
            .append_event(core.state().seq(), *now, event, core.digest())
            .unwrap();
        let _ = core.handle(*now, event.clone());
    }
    writer.append_snapshot(&core).unwrap();
    drop(writer);
    let journal = read(&path).unwrap();
    let replayed = replay(&journal, |_| {}).unwrap();
    assert!(
        replayed.divergences.is_empty(),
        "{:?}",
        replayed.divergences
    );
    assert_eq!(replayed.core.digest(), core.digest());
    let read_back: Vec<&Event> = journal
        .frames
        .iter()
        .filter_map(|(_, f)| match f {
            Frame::Event { event, .. } => Some(event),
            _ => None,
        })
        .collect();
    assert_eq!(read_back, events.iter().map(|(_, e)| e).collect::<Vec<_>>());
}
