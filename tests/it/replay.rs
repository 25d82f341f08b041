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
