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

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use drover_docker::LogCursor;
use drover_gitlab::api::JobResponse;
use drover_gitlab::trace::TraceCheckpoint;
use drover_lifecycle::{Checkpoint, Cursor, Job, Phase, Record, TraceMark};
use serde::{Deserialize, Serialize};

use crate::files::write_private;

#[derive(Clone, Debug)]
pub struct StateDir {
    root: PathBuf,
}

/// What the driver asks of a job's record after a restart (from its lifecycle journal).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// GitLab acknowledged the job (two-phase commit).
    pub accepted: bool,
    /// The runner (by name) the job came for.
    pub runner: Option<String>,
    /// Nothing is left to tell GitLab.
    pub reported: bool,
}

/// How far a job got, as drover before the lifecycle journal recorded it (`progress.json`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct LegacyProgress {
    pub accepted: bool,
    #[serde(default)]
    pub runner: Option<String>,
    pub trace_len: u64,
    pub cursor: Option<LogCursor>,
    pub acked: u64,
    #[serde(default)]
    pub redaction: Option<TraceCheckpoint>,
    pub outcome: Option<drover_core::Outcome>,
    #[serde(default)]
    pub reported: bool,
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

    /// The summary of a job's record the driver decides by; `Err` for a damaged journal.
    pub fn load_progress(&self, job: u64) -> anyhow::Result<Progress> {
        let policy = drover_lifecycle::Policy::DEFAULT;
        let records = self.job_records(job)?;
        let Some(job) = drover_lifecycle::Job::replay(&records, &policy) else {
            return Ok(Progress::default());
        };
        Ok(Progress {
            accepted: job.may_be_accepted(),
            runner: Some(job.runner).filter(|r| !r.is_empty()),
            reported: matches!(job.phase, Phase::Reported { .. }),
        })
    }

    pub(super) fn job_file(&self, job: u64, name: &str) -> PathBuf {
        self.job_dir(job).join(name)
    }

    /// The job's records (a torn last line dropped); a record of an older drover (`progress.json`)
    /// reads as a snapshot of the same job. `Err` for a damaged line before the last: no crash
    /// tears one, and what follows it cannot be trusted to continue it.
    pub fn job_records(&self, job: u64) -> anyhow::Result<Vec<Record>> {
        let path = self.job_file(job, JOURNAL_FILE);
        let Ok(text) = std::fs::read(&path) else {
            return Ok(self
                .load_legacy_progress(job)
                .map(|p| vec![Record::Snapshot(Box::new(upgrade(&p)))])
                .unwrap_or_default());
        };
        let text = text.strip_suffix(b"\n").unwrap_or(&text);
        if text.is_empty() {
            return Ok(Vec::new());
        }
        let lines: Vec<&[u8]> = text.split(|b| *b == b'\n').collect();
        let mut records = Vec::with_capacity(lines.len());
        for (i, line) in lines.iter().enumerate() {
            match serde_json::from_slice(line) {
                Ok(record) => records.push(record),
                Err(_) if i + 1 == lines.len() => {}
                Err(e) => anyhow::bail!("{}: line {} is damaged: {e}", path.display(), i + 1),
            }
        }
        Ok(records)
    }

    /// An older drover's record of the job, if there is one.
    pub fn load_legacy_progress(&self, job: u64) -> Option<LegacyProgress> {
        let bytes = fs::read(self.job_file(job, "progress.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn forget_legacy_progress(&self, job: u64) {
        let _ = fs::remove_file(self.job_file(job, "progress.json"));
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

    fn runner_config_file(&self, name: &str) -> PathBuf {
        let hex: String = name.bytes().map(|b| format!("{b:02x}")).collect();
        self.root.join("runners").join(format!("{hex}.toml"))
    }

    /// Keeps `text`, the config file that defines runner `name`, unless it is already kept.
    pub fn save_runner_config(&self, name: &str, text: &str) -> anyhow::Result<()> {
        let path = self.runner_config_file(name);
        if fs::read_to_string(&path).is_ok_and(|kept| kept == text) {
            return Ok(());
        }
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(self.root.join("runners"))
            .with_context(|| format!("creating {}", self.root.join("runners").display()))?;
        write_private(&path, text.as_bytes())
    }

    /// The config file kept for runner `name`, if any.
    pub fn load_runner_config(&self, name: &str) -> Option<String> {
        fs::read_to_string(self.runner_config_file(name)).ok()
    }

    /// The names of the runners whose config is kept.
    pub fn kept_runner_configs(&self) -> Vec<String> {
        let Ok(entries) = fs::read_dir(self.root.join("runners")) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| {
                let file = e.file_name();
                let hex = file.to_str()?.strip_suffix(".toml")?;
                let bytes = (0..hex.len())
                    .step_by(2)
                    .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
                    .collect::<Option<Vec<u8>>>()?;
                String::from_utf8(bytes).ok()
            })
            .collect();
        names.sort();
        names
    }

    pub fn forget_runner_config(&self, name: &str) {
        let _ = fs::remove_file(self.runner_config_file(name));
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

/// The job an older drover's `progress.json` describes. It did not keep the label the job's
/// containers carry: left empty, it is learnt from the containers (`Event::Labelled`).
fn upgrade(p: &LegacyProgress) -> Job {
    let phase = match (p.accepted, p.outcome, p.reported) {
        (_, Some(outcome), true) => Phase::Reported { outcome },
        // That drover removed the containers before it saved the outcome.
        (_, Some(outcome), false) => Phase::Reporting { outcome },
        // Placed or not, started or not: the containers on its machine decide when it is
        // placed again (a job never placed then starts from scratch).
        (true, None, _) => Phase::Preparing,
        (false, None, _) => Phase::Received { attempts: 0 },
    };
    let cursor = p.cursor.map(|c| Cursor {
        step: c.step,
        messages: c.messages,
    });
    let mut job = Job::new();
    job.phase = if phase == Phase::Preparing && cursor.is_some_and(|c| c.saw_step_output()) {
        Phase::Running
    } else {
        phase
    };
    job.runner = p.runner.clone().unwrap_or_default();
    job.held = true;
    job.trace = TraceMark {
        len: p.trace_len,
        acked: p.acked.min(p.trace_len),
        cursor,
        checkpoint: p
            .redaction
            .as_ref()
            .and_then(|r| serde_json::to_string(r).ok())
            .map(Checkpoint),
    };
    job
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn kept_runner_configs_round_trip_any_name_privately() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        let names = ["docker autoscaler / eu", "ünïcode", "plain"];
        for (i, name) in names.iter().enumerate() {
            state.save_runner_config(name, &format!("# {i}\n")).unwrap();
        }
        let mut expected: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        expected.sort();
        assert_eq!(state.kept_runner_configs(), expected);
        assert_eq!(
            state.load_runner_config("ünïcode").as_deref(),
            Some("# 1\n")
        );
        let file = state.runner_config_file("plain");
        assert_eq!(file.metadata().unwrap().permissions().mode() & 0o777, 0o600);

        state.forget_runner_config("plain");
        assert_eq!(state.load_runner_config("plain"), None);
        assert_eq!(state.kept_runner_configs().len(), 2);
    }

    #[test]
    fn a_job_the_core_failed_while_its_acknowledgement_was_in_flight_counts_as_accepted() {
        use drover_lifecycle::{Event, Record};
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        std::fs::create_dir_all(state.job_dir(7)).unwrap();
        let records = [
            Record::Event(Event::Received {
                runner: "linux".into(),
                label: "runner-abcd".into(),
                held: true,
            }),
            Record::Event(Event::Fail {
                reason: drover_core::FailureReason::RunnerSystemFailure,
                text: "no machine".into(),
            }),
        ];
        let mut text = String::new();
        for record in &records {
            text.push_str(&serde_json::to_string(record).unwrap());
            text.push('\n');
        }
        std::fs::write(state.job_file(7, JOURNAL_FILE), &text).unwrap();
        let progress = state.load_progress(7).unwrap();
        assert!(
            progress.accepted,
            "its acknowledgement may have gone through"
        );
        assert!(!progress.reported);
        assert_eq!(progress.runner.as_deref(), Some("linux"));

        // The core's failure lost in the crash: the acknowledgement may have gone out all the same.
        let received = text.lines().next().unwrap().to_owned() + "\n";
        std::fs::write(state.job_file(7, JOURNAL_FILE), &received).unwrap();
        assert!(state.load_progress(7).unwrap().accepted);

        // GitLab refused it: not ours.
        let refused = Record::Event(Event::AcceptAnswered(
            drover_lifecycle::AcceptAnswer::TakenBack,
        ));
        let text = received + &serde_json::to_string(&refused).unwrap() + "\n";
        std::fs::write(state.job_file(7, JOURNAL_FILE), text).unwrap();
        assert!(!state.load_progress(7).unwrap().accepted);
    }

    #[test]
    fn an_older_record_upgrades_to_the_phase_it_describes() {
        let running = LegacyProgress {
            accepted: true,
            runner: Some("linux".into()),
            trace_len: 90,
            cursor: Some(LogCursor {
                step: 1,
                messages: 4,
            }),
            acked: 120,
            ..LegacyProgress::default()
        };
        let job = upgrade(&running);
        assert_eq!(job.phase, Phase::Running);
        assert_eq!((job.trace.len, job.trace.acked), (90, 90));
        assert_eq!(job.label, "", "learnt from the containers");
        let mut restarted = job.clone();
        assert_eq!(
            restarted.handle(
                drover_lifecycle::Event::Restarted,
                &drover_lifecycle::Policy::DEFAULT
            ),
            Vec::<drover_lifecycle::Action>::new()
        );
        assert_eq!(
            restarted.handle(
                drover_lifecycle::Event::Placed,
                &drover_lifecycle::Policy::DEFAULT
            ),
            [drover_lifecycle::Action::Inspect]
        );

        let ended = LegacyProgress {
            accepted: true,
            outcome: Some(drover_core::Outcome::Success),
            ..LegacyProgress::default()
        };
        assert_eq!(
            upgrade(&ended).phase,
            Phase::Reporting {
                outcome: drover_core::Outcome::Success
            }
        );
        let unaccepted = LegacyProgress::default();
        assert_eq!(upgrade(&unaccepted).phase, Phase::Received { attempts: 0 });
    }
}
