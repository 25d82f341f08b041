//! The daemon's state directory: the journal, the lock, the status file, and one folder per job in
//! flight (its payload, its stored trace and how far it got), all private to the daemon's user.
//!
//! ```text
//! <state dir>/journal          the core's inputs (drover-journal)
//! <state dir>/lock             held while a daemon runs; holds its pid
//! <state dir>/status.json      what `drover status` shows
//! <state dir>/jobs/<id>/job.json       the job payload (secrets: mode 0600)
//! <state dir>/jobs/<id>/trace          the redacted trace stored so far
//! <state dir>/jobs/<id>/rejected.txt   why the job's payload is unusable (a job failed unrun)
//! <state dir>/jobs/<id>/events.jsonl   the job's lifecycle journal (see `jobs::journal`; 0600:
//!                                      its redaction checkpoints may hold pieces of secrets)
//! <state dir>/jobs/<id>/progress.json  an older drover's record of the job: read once, upgraded
//!                                      into the journal
//! <state dir>/runners/<hex name>.toml  the config file as it was when that runner was last
//!                                      applied (0600: it holds tokens)
//! ```
//!
//! This module owns the layout and the lock; [`job_files`] a job's payload and stored trace,
//! [`job_record`] reading a job's lifecycle record (and upgrading an older drover's), and
//! [`runner_configs`] the kept copies of the config file.

mod job_files;
mod job_record;
mod runner_configs;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

/// A job's lifecycle journal, in its folder.
pub const JOURNAL_FILE: &str = "events.jsonl";

impl StateDir {
    /// The state directory at `root`, created (private) if it is not there.
    pub fn open(root: &Path) -> anyhow::Result<StateDir> {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root.join("jobs"))
            .with_context(|| format!("creating the state directory {}", root.display()))?;
        Ok(Self::at(root))
    }

    /// The state directory at `root`, to look at: nothing is created.
    pub fn at(root: &Path) -> StateDir {
        StateDir {
            root: root.to_path_buf(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn journal(&self) -> PathBuf {
        self.root.join("journal")
    }

    pub fn status_file(&self) -> PathBuf {
        self.root.join("status.json")
    }

    pub fn lock_file(&self) -> PathBuf {
        self.root.join("lock")
    }

    /// Takes the daemon lock, or says which process holds it.
    pub fn lock(&self) -> anyhow::Result<File> {
        let path = self.lock_file();
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        if file.try_lock().is_err() {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            anyhow::bail!(
                "another drover (pid {}) is running with the state directory {}; stop it first or \
                 use another --state-dir",
                pid.trim(),
                self.root.display()
            );
        }
        file.set_len(0)?;
        write!(file, "{}", std::process::id())?;
        Ok(file)
    }

    fn job_dir(&self, job: u64) -> PathBuf {
        self.root.join("jobs").join(job.to_string())
    }

    pub(in crate::daemon) fn job_file(&self, job: u64, name: &str) -> PathBuf {
        self.job_dir(job).join(name)
    }

    /// Jobs with a folder.
    pub fn jobs(&self) -> Vec<u64> {
        let Ok(entries) = fs::read_dir(self.root.join("jobs")) else {
            return Vec::new();
        };
        let mut ids: Vec<u64> = entries
            .flatten()
            .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
            .collect();
        ids.sort_unstable();
        ids
    }
}
