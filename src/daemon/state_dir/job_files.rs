//! A job's folder: its payload (`job.json`, private: it holds secrets), why it was rejected, and
//! its stored trace, which the job's record vouches for up to a length.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};

use anyhow::Context;
use drover_gitlab::api::JobResponse;

use super::StateDir;
use crate::files::write_private;

impl StateDir {
    pub fn save_job(&self, job: &JobResponse) -> anyhow::Result<()> {
        let dir = self.job_dir(job.id);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        write_private(&dir.join("job.json"), &serde_json::to_vec(job)?)
    }

    pub fn load_job(&self, job: u64) -> anyhow::Result<JobResponse> {
        let path = self.job_dir(job).join("job.json");
        let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        drover_gitlab::api::decode(&bytes).with_context(|| format!("decoding {}", path.display()))
    }

    /// Notes why a job's payload cannot be used: its failure report says so, even after a crash.
    pub fn save_rejection(&self, job: u64, why: &str) -> anyhow::Result<()> {
        write_private(&self.job_dir(job).join("rejected.txt"), why.as_bytes())
    }

    pub fn load_rejection(&self, job: u64) -> Option<String> {
        fs::read_to_string(self.job_dir(job).join("rejected.txt")).ok()
    }

    /// The stored trace, cut to the `len` bytes the job's record vouches for.
    pub fn load_trace(&self, job: u64, len: u64) -> Vec<u8> {
        let mut bytes = fs::read(self.job_dir(job).join("trace")).unwrap_or_default();
        bytes.truncate(len as usize);
        bytes
    }

    /// Replaces the stored trace from `from` on with `bytes` (everything before stays).
    pub fn store_trace(&self, job: u64, from: u64, bytes: &[u8]) -> anyhow::Result<()> {
        let path = self.job_dir(job).join("trace");
        let created = !path.exists();
        let mut file = OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)?;
        if created {
            // The file's name must survive a crash as its bytes do: the journal vouches for them.
            crate::files::sync_dir(&self.job_dir(job));
        }
        file.set_len(from)?;
        use std::io::Seek;
        file.seek(std::io::SeekFrom::Start(from))?;
        file.write_all(bytes)?;
        file.sync_data()?;
        Ok(())
    }

    pub fn remove_job(&self, job: u64) {
        let _ = fs::remove_dir_all(self.job_dir(job));
    }
}
