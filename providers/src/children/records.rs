//! Which child processes run, written down so that the next drover can end what a crashed one
//! left running. One file per running child, `<dir>/<key>`, holding the drover process and the
//! child (each a pid and a start time, so a reused pid is never mistaken for them) and the boot
//! they ran in (start times count from boot); the file goes when the child is done with. Records
//! whose drover is dead are leftovers: [`Records::sweep`] kills their children's process groups
//! and deletes them; records of an earlier boot are deleted, their processes died with it.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rustix::process::{Pid, Signal, kill_process};

/// A process, told apart from a later one with the same pid by its start time (clock ticks since
/// boot, field 22 of `/proc/<pid>/stat`).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct ProcessId {
    pub pid: i32,
    pub started: u64,
}

/// This boot's id (`/proc/sys/kernel/random/boot_id`); empty where the kernel does not say.
/// Process start times count from boot, so a pid and start time name a process in one boot only.
pub fn boot_id() -> &'static str {
    static BOOT: OnceLock<String> = OnceLock::new();
    BOOT.get_or_init(|| {
        fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|t| t.trim().to_string())
            .unwrap_or_default()
    })
}

/// Whether a boot id written down names another boot than this one (an unknown one does not).
pub fn another_boot(boot: Option<&str>) -> bool {
    boot.is_some_and(|b| !b.is_empty() && !boot_id().is_empty() && b != boot_id())
}

/// What `/proc/<pid>/stat` says of a process.
struct Stat {
    group: i32,
    started: u64,
    zombie: bool,
}

fn stat(pid: i32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold anything, so the fields are counted after its `)`.
    let fields: Vec<&str> = text
        .get(text.rfind(')')? + 1..)?
        .split_whitespace()
        .collect();
    Some(Stat {
        zombie: matches!(fields.first(), Some(&"Z" | &"X")),
        group: fields.get(2)?.parse().ok()?,
        started: fields.get(19)?.parse().ok()?,
    })
}

impl ProcessId {
    /// This process.
    pub fn current() -> io::Result<ProcessId> {
        let pid = rustix::process::getpid().as_raw_nonzero().get();
        ProcessId::of(pid).ok_or_else(|| io::Error::other("cannot read /proc/self/stat"))
    }

    /// The process with this pid now, if there is one.
    pub fn of(pid: i32) -> Option<ProcessId> {
        stat(pid).map(|s| ProcessId {
            pid,
            started: s.started,
        })
    }

    /// Whether this very process still runs (a zombie does not).
    pub fn alive(&self) -> bool {
        stat(self.pid).is_some_and(|s| s.started == self.started && !s.zombie)
    }

    /// The `pid:started` form [`Display`](std::fmt::Display) writes.
    pub(crate) fn parse(text: &str) -> Option<ProcessId> {
        let (pid, started) = text.split_once(':')?;
        Some(ProcessId {
            pid: pid.parse().ok()?,
            started: started.parse().ok()?,
        })
    }
}

impl std::fmt::Display for ProcessId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.pid, self.started)
    }
}

/// A record of a running child.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub key: String,
    /// The drover process that started the child.
    pub owner: ProcessId,
    /// The child, leader of its own process group.
    pub child: ProcessId,
    /// What the child was doing (for logs), e.g. `create runner-abc-vm-1`.
    pub what: String,
    /// The boot both ran in; `None` in a record written before drover kept it.
    pub boot: Option<String>,
}

/// The records of one directory, written by this process.
#[derive(Debug)]
pub struct Records {
    dir: PathBuf,
    me: ProcessId,
}

/// Deletes its record when the child is done with (exited, or killed with its group).
#[must_use]
pub struct RecordGuard {
    path: PathBuf,
}

impl Drop for RecordGuard {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}

impl Records {
    /// The records in `dir` (created if missing), written as this process.
    pub fn open(dir: &Path) -> io::Result<Records> {
        fs::create_dir_all(dir)?;
        Ok(Records {
            dir: dir.to_path_buf(),
            me: ProcessId::current()?,
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Records that `child` runs under `key` (a file name) until the guard is dropped.
    pub fn write(&self, key: &str, child: ProcessId, what: &str) -> io::Result<RecordGuard> {
        let path = self.dir.join(key);
        let what = what.replace('\n', " ");
        let text = format!("{}\n{}\n{}\n{}\n", self.me, child, what, boot_id());
        // Written whole or not at all: a crash mid-write must not leave half a record.
        let partial = self.dir.join(format!(".{key}.partial"));
        fs::write(&partial, text)?;
        fs::rename(&partial, &path)?;
        Ok(RecordGuard { path })
    }

    /// Every record in the directory.
    pub fn list(&self) -> io::Result<Vec<Record>> {
        let mut records = Vec::new();
        for entry in fs::read_dir(&self.dir)? {
            let entry = entry?;
            let Some(key) = entry.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if key.starts_with('.') {
                continue;
            }
            let Ok(text) = fs::read_to_string(entry.path()) else {
                continue;
            };
            let mut lines = text.lines();
            let (Some(owner), Some(child)) = (
                lines.next().and_then(ProcessId::parse),
                lines.next().and_then(ProcessId::parse),
            ) else {
                continue;
            };
            records.push(Record {
                key,
                owner,
                child,
                what: lines.next().unwrap_or_default().to_string(),
                boot: lines.next().map(str::to_string),
            });
        }
        records.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(records)
    }

    /// Ends what dead drover processes left: for each record whose owner no longer runs, kills
    /// every process still in the child's process group (the child and what it started, told
    /// apart from later processes by their start times) and deletes the record. A record of an
    /// earlier boot is deleted without killing anything: its processes died with that boot, and
    /// its pids and start times may name processes of this one. Records of live processes (this
    /// one) stay. Returns the records swept.
    pub fn sweep(&self) -> io::Result<Vec<Record>> {
        let mut swept = Vec::new();
        for record in self.list()? {
            let earlier_boot = another_boot(record.boot.as_deref());
            if !earlier_boot && (record.owner == self.me || record.owner.alive()) {
                continue;
            }
            let killed = if earlier_boot {
                0
            } else {
                kill_group(record.child)
            };
            if killed > 0 {
                tracing::warn!(
                    what = %record.what,
                    processes = killed,
                    "killed what an earlier drover left running"
                );
            }
            match fs::remove_file(self.dir.join(&record.key)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
            swept.push(record);
        }
        Ok(swept)
    }
}

/// The processes of the group `leader` led that started no earlier than the leader (so not
/// those of a later group that reuses the id), zombies left out. None at all if a process with
/// the leader's pid runs with another start time: the id was reused, and a group with that id is
/// someone else's (or will be).
fn members(leader: ProcessId) -> Vec<i32> {
    if stat(leader.pid).is_some_and(|s| s.started != leader.started) {
        return Vec::new();
    }
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut members = Vec::new();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Some(s) = stat(pid) else { continue };
        if s.group == leader.pid && s.started >= leader.started && !s.zombie {
            members.push(pid);
        }
    }
    members
}

/// Whether the group `leader` led still has a process (see [`members`]): only then may it be
/// killed by its id.
pub fn group_alive(leader: ProcessId) -> bool {
    !members(leader).is_empty()
}

/// Kills each process of the group `leader` led (see [`members`]); the leader itself may be gone
/// already. Returns how many were signalled.
fn kill_group(leader: ProcessId) -> usize {
    let mut killed = 0;
    for pid in members(leader) {
        if let Some(pid) = Pid::from_raw(pid)
            && kill_process(pid, Signal::KILL).is_ok()
        {
            killed += 1;
        }
    }
    killed
}

#[cfg(test)]
mod tests {
    use std::process::{Command, Stdio};

    use super::*;

    /// A `sh` in a group of its own that starts a `sleep` (its "driver plugin") and waits.
    fn group_with_a_grandchild(dir: &Path) -> (std::process::Child, i32) {
        use std::os::unix::process::CommandExt;
        let pid_file = dir.join("grandchild");
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "sleep 300 & echo $! > {}; wait",
                pid_file.display()
            ))
            .process_group(0)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        // The test waits for the shell to write the file: an observable state, not a delay.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let grandchild = loop {
            if let Some(pid) = fs::read_to_string(&pid_file)
                .ok()
                .and_then(|t| t.trim().parse().ok())
            {
                break pid;
            }
            assert!(std::time::Instant::now() < deadline, "no grandchild");
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        (child, grandchild)
    }

    fn eventually_dead(pid: ProcessId) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while pid.alive() {
            assert!(
                std::time::Instant::now() < deadline,
                "{pid} outlived the sweep"
            );
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }

    #[test]
    fn a_sweep_kills_the_groups_a_dead_drover_left_and_keeps_live_records() {
        let dir = tempfile::tempdir().unwrap();
        let records = Records::open(&dir.path().join("children")).unwrap();
        let (mut child, grandchild) = group_with_a_grandchild(dir.path());
        let child_id = ProcessId::of(child.id() as i32).unwrap();
        let grandchild_id = ProcessId::of(grandchild).unwrap();

        // A record of this process: kept, and its child left alone.
        let mine = records.write("mine", child_id, "create m1").unwrap();
        assert!(records.sweep().unwrap().is_empty());
        assert!(child_id.alive() && grandchild_id.alive());
        drop(mine);
        assert!(records.list().unwrap().is_empty(), "the guard deletes it");

        // The same child recorded by a drover that is gone (this pid, another start time).
        let dead = ProcessId {
            started: records.me.started + 1,
            ..records.me
        };
        let text = format!("{dead}\n{child_id}\ncreate m1\n");
        fs::write(records.dir().join("m1"), text).unwrap();
        let swept = records.sweep().unwrap();
        assert_eq!(swept.len(), 1);
        assert_eq!(swept[0].what, "create m1");
        assert_eq!(swept[0].child, child_id);
        let _ = child.wait();
        eventually_dead(grandchild_id);
        assert!(records.list().unwrap().is_empty(), "the record is deleted");
    }

    /// A record of `child` left by a drover that is gone, written as drover writes them.
    fn leftover(records: &Records, key: &str, child: ProcessId, boot: &str) {
        let dead = ProcessId {
            started: records.me.started + 1,
            ..records.me
        };
        let text = format!("{dead}\n{child}\ncreate {key}\n{boot}\n");
        fs::write(records.dir().join(key), text).unwrap();
    }

    #[test]
    fn a_group_whose_leader_pid_was_reused_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let records = Records::open(&dir.path().join("children")).unwrap();
        let (mut child, grandchild) = group_with_a_grandchild(dir.path());
        let child_id = ProcessId::of(child.id() as i32).unwrap();
        let grandchild_id = ProcessId::of(grandchild).unwrap();
        // The recorded leader started before the group that now has its id: another process.
        let earlier = ProcessId {
            started: child_id.started - 1,
            ..child_id
        };
        assert!(!group_alive(earlier));
        assert!(group_alive(child_id));
        leftover(&records, "m1", earlier, boot_id());
        let swept = records.sweep().unwrap();
        assert_eq!(swept.len(), 1, "the record goes");
        assert!(child_id.alive() && grandchild_id.alive(), "nothing killed");
        let _ = child.kill();
        let _ = child.wait();
        let _ = kill_process(Pid::from_raw(grandchild).unwrap(), Signal::KILL);
    }

    #[test]
    fn records_of_an_earlier_boot_are_deleted_without_killing() {
        let dir = tempfile::tempdir().unwrap();
        let records = Records::open(&dir.path().join("children")).unwrap();
        let (mut child, grandchild) = group_with_a_grandchild(dir.path());
        let child_id = ProcessId::of(child.id() as i32).unwrap();
        let grandchild_id = ProcessId::of(grandchild).unwrap();
        assert!(!boot_id().is_empty(), "Linux names its boot");
        // Even a record naming this very process as its owner: pids repeat across boots.
        let text = format!("{}\n{child_id}\ncreate m1\nanother-boot\n", records.me);
        fs::write(records.dir().join("m1"), text).unwrap();
        let swept = records.sweep().unwrap();
        assert_eq!(swept.len(), 1);
        assert_eq!(swept[0].boot.as_deref(), Some("another-boot"));
        assert!(records.list().unwrap().is_empty());
        assert!(child_id.alive() && grandchild_id.alive(), "nothing killed");
        let _ = child.kill();
        let _ = child.wait();
        let _ = kill_process(Pid::from_raw(grandchild).unwrap(), Signal::KILL);
    }

    #[test]
    fn records_name_their_boot() {
        let dir = tempfile::tempdir().unwrap();
        let records = Records::open(&dir.path().join("children")).unwrap();
        let me = records.me;
        let _guard = records.write("m1", me, "create m1").unwrap();
        let listed = records.list().unwrap();
        assert_eq!(listed[0].boot.as_deref(), Some(boot_id()));
        assert!(!another_boot(listed[0].boot.as_deref()));
    }

    #[test]
    fn processes_are_told_apart_by_start_time() {
        let me = ProcessId::current().unwrap();
        assert!(me.alive());
        assert_eq!(ProcessId::parse(&me.to_string()), Some(me));
        let later = ProcessId {
            started: me.started + 1,
            ..me
        };
        assert!(!later.alive(), "same pid, other start: another process");
        assert_eq!(ProcessId::parse("12"), None);
    }
}
