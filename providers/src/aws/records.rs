//! Which instance each machine name is, kept in the state directory so a restarted drover adopts
//! its instances instead of deleting them: one small JSON file per name, replaced whole (a
//! temporary file of its own, synced, renamed, the directory synced). A name's file is only
//! written under that name's lock, so providers sharing a [`crate::NameLocks`] table never race
//! on it.
//!
//! A name is first **pending** (recorded before the group's capacity is raised, so a crash
//! between the two leaves a name that `list` reports and `remove` settles), then **bound** to an
//! instance id, then **ready** once the instance passed its readiness checks.

use std::io;
use std::path::{Path, PathBuf};

use drover_docker::files::{remove_durably, write_private};
use serde::{Deserialize, Serialize};

/// The version of the record files this drover writes.
const VERSION: u32 = 1;
const SUFFIX: &str = ".json";

/// What is known of one name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Record {
    /// Capacity is being (or was) asked for this name; no instance is bound yet.
    Pending,
    /// The name is this instance; `ready` once its readiness checks passed.
    Bound { instance: String, ready: bool },
}

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    #[serde(flatten)]
    record: Record,
}

/// The records of one group in one directory.
pub struct Records {
    dir: PathBuf,
}

impl Records {
    /// The records under `state_dir` for `group` (the directory is made if missing).
    pub fn open(state_dir: &Path, group: &str) -> io::Result<Records> {
        let dir = state_dir.join("aws-instances").join(file_safe(group));
        std::fs::create_dir_all(&dir)?;
        Ok(Records { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn read(&self, name: &str) -> io::Result<Option<Record>> {
        let path = self.path(name)?;
        match std::fs::read(&path) {
            Ok(bytes) => parse(&path, &bytes).map(Some),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub fn write(&self, name: &str, record: &Record) -> io::Result<()> {
        let file = File {
            version: VERSION,
            record: record.clone(),
        };
        let bytes = serde_json::to_vec(&file).map_err(io::Error::other)?;
        write_private(&self.path(name)?, &bytes)
    }

    pub fn remove(&self, name: &str) -> io::Result<()> {
        remove_durably(&self.path(name)?)
    }

    /// Every name with its record, sorted by name.
    pub fn list(&self) -> io::Result<Vec<(String, Record)>> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let file_name = entry.file_name();
            let Some(name) = file_name
                .to_str()
                .filter(|n| !n.starts_with('.'))
                .and_then(|n| n.strip_suffix(SUFFIX))
            else {
                continue; // a temporary file, or not ours
            };
            match std::fs::read(entry.path()) {
                Ok(bytes) => out.push((name.to_string(), parse(&entry.path(), &bytes)?)),
                // Removed since the directory was read.
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    fn path(&self, name: &str) -> io::Result<PathBuf> {
        if name.is_empty()
            || name.starts_with('.')
            || name.contains(['/', '\0'])
            || name.len() > 200
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{name:?} cannot be a machine name"),
            ));
        }
        Ok(self.dir.join(format!("{name}{SUFFIX}")))
    }
}

fn parse(path: &Path, bytes: &[u8]) -> io::Result<Record> {
    let file: File = serde_json::from_slice(bytes).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: not a drover instance record: {e}", path.display()),
        )
    })?;
    if file.version != VERSION {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "{}: record version {} is newer than this drover's ({VERSION})",
                path.display(),
                file.version
            ),
        ));
    }
    Ok(file.record)
}

/// A group name as a directory name: group names may hold `/`. A name that had to be changed
/// gets a stable hash of the raw name appended, so `ci/group` and `ci_group` differ.
fn file_safe(group: &str) -> String {
    let safe = sanitised(group);
    if safe == group {
        safe
    } else {
        format!("{safe}-{:08x}", fnv1a(group.as_bytes()) as u32)
    }
}

/// FNV-1a (64 bit): stable across builds and platforms, unlike std's hasher.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

fn sanitised(group: &str) -> String {
    group
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '-' | '_' | '.' => c,
            _ => '_',
        })
        .collect::<String>()
        .trim_start_matches('.')
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_list_in_name_order() {
        let dir = tempfile::tempdir().unwrap();
        let records = Records::open(dir.path(), "ci/group").unwrap();
        let dir_name = records.dir().file_name().unwrap().to_str().unwrap();
        assert!(dir_name.starts_with("ci_group-"), "{dir_name}");
        assert_eq!(records.read("m1").unwrap(), None);
        records.write("m2", &Record::Pending).unwrap();
        let bound = Record::Bound {
            instance: "i-1".into(),
            ready: true,
        };
        records.write("m1", &bound).unwrap();
        // A stray temporary file is not a record.
        std::fs::write(records.dir().join(".m3.json.tmp-1-1"), "{").unwrap();
        assert_eq!(
            records.list().unwrap(),
            [
                ("m1".to_string(), bound.clone()),
                ("m2".into(), Record::Pending)
            ]
        );
        // Another provider over the same directory reads the same.
        let again = Records::open(dir.path(), "ci/group").unwrap();
        assert_eq!(again.read("m1").unwrap(), Some(bound));
        again.remove("m1").unwrap();
        again.remove("m1").unwrap();
        assert_eq!(records.read("m1").unwrap(), None);
        assert!(records.write("../x", &Record::Pending).is_err());
    }

    #[test]
    fn group_names_that_sanitise_alike_get_their_own_directories() {
        let dir = tempfile::tempdir().unwrap();
        let slash = Records::open(dir.path(), "ci/group").unwrap();
        let underscore = Records::open(dir.path(), "ci_group").unwrap();
        assert_ne!(slash.dir(), underscore.dir());
        assert!(underscore.dir().ends_with("aws-instances/ci_group"));
        // Stable, whichever was opened first: the same raw name opens the same directory again.
        for (group, opened) in [("ci/group", &slash), ("ci_group", &underscore)] {
            assert_eq!(
                Records::open(dir.path(), group).unwrap().dir(),
                opened.dir()
            );
        }
    }

    #[test]
    fn the_file_format_is_versioned() {
        let dir = tempfile::tempdir().unwrap();
        let records = Records::open(dir.path(), "g").unwrap();
        records
            .write(
                "m",
                &Record::Bound {
                    instance: "i-0abc".into(),
                    ready: false,
                },
            )
            .unwrap();
        let text = std::fs::read_to_string(records.dir().join("m.json")).unwrap();
        assert_eq!(
            text,
            r#"{"version":1,"state":"bound","instance":"i-0abc","ready":false}"#
        );
        std::fs::write(
            records.dir().join("n.json"),
            r#"{"version":2,"state":"pending"}"#,
        )
        .unwrap();
        let err = records.read("n").unwrap_err();
        assert!(err.to_string().contains("newer"), "{err}");
    }
}
