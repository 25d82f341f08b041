//! Reading a job's lifecycle record (`jobs/<id>/events.jsonl`, written by `jobs::journal`): its
//! records, the summary start-up decides by, and the upgrade of an older drover's
//! `progress.json` into the same record.

use std::fs;

use drover_docker::LogCursor;
use drover_gitlab::trace::TraceCheckpoint;
use drover_lifecycle::{Checkpoint, Cursor, Job, Phase, Record, TraceMark};
use serde::{Deserialize, Serialize};

use super::{JOURNAL_FILE, StateDir};

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

impl StateDir {
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
