//! Creations in flight, marked in drover's state directory (`creating/<name>`, holding the drover
//! process and the boot it runs in) from before `docker-machine create` starts until it ends. A mark whose drover is dead
//! is a creation a crash cut short: docker-machine may have asked the cloud for a VM already, and
//! only `docker-machine rm -y` (the driver) can delete it, so the provider hands the machine to
//! it before anything else is done with that name.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::children::records::{ProcessId, another_boot, boot_id};

pub(super) struct Creations {
    dir: PathBuf,
    me: ProcessId,
}

impl Creations {
    pub fn open(dir: &Path) -> io::Result<Creations> {
        fs::create_dir_all(dir)?;
        Ok(Creations {
            dir: dir.to_path_buf(),
            me: ProcessId::current()?,
        })
    }

    /// Marks `name` as being created by this process.
    pub fn begin(&self, name: &str) -> io::Result<()> {
        let partial = self.dir.join(format!(".{name}.partial"));
        fs::write(&partial, format!("{}\n{}\n", self.me, boot_id()))?;
        fs::rename(&partial, self.dir.join(name))
    }

    /// The creation of `name` ended (or its leftovers were handed to `rm -y`).
    pub fn end(&self, name: &str) -> io::Result<()> {
        match fs::remove_file(self.dir.join(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Whether a drover that is gone was creating `name` when it stopped.
    pub fn interrupted(&self, name: &str) -> bool {
        let Ok(text) = fs::read_to_string(self.dir.join(name)) else {
            return false;
        };
        let mut lines = text.lines();
        let owner = ProcessId::parse(lines.next().unwrap_or_default().trim());
        match owner {
            // A mark of an earlier boot: its drover died with that boot, whatever runs under its
            // pid now.
            Some(_) if another_boot(lines.next().map(str::trim)) => true,
            Some(owner) => owner != self.me && !owner.alive(),
            // Unreadable: written by a drover that died mid-write, before its `create` began.
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_creations_of_a_dead_drover_are_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let creations = Creations::open(dir.path()).unwrap();
        assert!(!creations.interrupted("m1"), "no mark");
        creations.begin("m1").unwrap();
        assert!(!creations.interrupted("m1"), "this process is creating it");
        let gone = ProcessId {
            started: creations.me.started + 1,
            ..creations.me
        };
        fs::write(dir.path().join("m2"), format!("{gone}\n")).unwrap();
        assert!(creations.interrupted("m2"));
        creations.end("m2").unwrap();
        assert!(!creations.interrupted("m2"));
        creations.end("m2").unwrap();
    }
}
