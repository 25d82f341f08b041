//! `drover replay` on the committed journal and on damaged copies of it.

use std::path::{Path, PathBuf};
use std::process::Command;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/journals/two-runners-day.journal")
}

fn replay(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_drover"))
        .arg("replay")
        .args(args)
        .output()
        .expect("drover runs")
}

#[test]
fn the_recorded_journal_replays_to_its_digests() {
    let out = replay(&[fixture().to_str().unwrap(), "--check-invariants", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["divergences"].as_array().map(Vec::len), Some(0));
    assert_eq!(v["invariant_violation"], serde_json::Value::Null);
    let frames = v["events"].as_u64().unwrap() + v["snapshots"].as_u64().unwrap();
    assert_eq!(
        v["digests_checked"].as_u64(),
        Some(frames),
        "every event and snapshot was checked"
    );
    let stats = &v["stats"];
    assert!(stats["jobs_received"].as_u64().unwrap() > 50);
    assert_eq!(
        stats["jobs_received"], stats["jobs_finished"],
        "no job was lost"
    );
    assert_eq!(
        v["commands_by_kind"]["exit"], 1,
        "the recording ends in a graceful exit"
    );
    assert_eq!(
        v["runners"],
        serde_json::json!(["autoscale-linux", "on-demand"])
    );
}

#[test]
fn events_are_listed_before_the_text_summary_and_refused_with_json() {
    let out = replay(&[fixture().to_str().unwrap(), "--events"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let (events, summary) = text
        .split_once("journal ")
        .expect("the summary follows the events");
    let lines: Vec<&str> = events.lines().collect();
    let json = replay(&[fixture().to_str().unwrap(), "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(
        Some(lines.len() as u64),
        v["events"].as_u64(),
        "one line per event"
    );
    assert!(
        lines[0].starts_with("2026-01-05T06:00:00.000Z tick ") && lines[0].contains("-> "),
        "{}",
        lines[0]
    );
    assert!(summary.contains("0 divergences"), "{summary}");

    // The JSON summary is one document: events would break it.
    let out = replay(&[fixture().to_str().unwrap(), "--events", "--json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot be used with"), "{err}");
}

#[test]
fn damage_in_the_middle_fails_with_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged.journal");
    let mut bytes = std::fs::read(fixture()).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0xff;
    std::fs::write(&path, &bytes).unwrap();
    let out = replay(&[path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is corrupt at byte offset"), "{err}");
    assert!(err.contains("intact frames follow"), "{err}");
}

#[test]
fn a_torn_tail_is_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("torn.journal");
    let bytes = std::fs::read(fixture()).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 7]).unwrap();
    let out = replay(&[path.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ends in a torn frame"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("0 divergences"));
}

#[test]
fn a_newer_format_is_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("future.journal");
    let mut bytes = std::fs::read(fixture()).unwrap();
    bytes[8..10].copy_from_slice(&999u16.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let out = replay(&[path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(3));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("journal format 999") && err.contains("use a newer drover"),
        "{err}"
    );
}
