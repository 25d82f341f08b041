//! A job's journal: `jobs/<id>/events.jsonl` in the state directory, one lifecycle record
//! ([`Record`]) per line, appended and synced before the record's actions are carried out.
//!
//! Why a file per job of JSON lines rather than frames in the core's journal: a job's record lives
//! and dies with the job's folder (payload, stored trace), so finishing a job is one `rm -r` and no
//! compaction of a shared file; the core's journal replays the core bit for bit and should not
//! carry trace offsets every second. JSON, because the record outlives drover versions (an
//! upgrade reads the previous format; new fields come with defaults) and an operator can read it.
//! A crash mid-append leaves a torn last line, which fails to parse and is dropped: the event it
//! held had no action carried out yet. The journal is compacted into one snapshot line now and
//! then; a job's record stays small whatever its length.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use anyhow::Context;
use drover_lifecycle::{Event, Job, Record};

use crate::daemon::state_dir::StateDir;
use crate::files::write_private;

use crate::daemon::state_dir::JOURNAL_FILE as FILE;
/// Records appended before the journal is rewritten as one snapshot.
const COMPACT_AFTER: usize = 512;

pub struct JobJournal {
    state_dir: StateDir,
    job: u64,
    file: File,
    appended: usize,
}

impl JobJournal {
    /// Opens the job's journal (made from an older drover's record if that is all there is);
    /// returns it with the records it holds.
    pub fn open(state_dir: &StateDir, job: u64) -> anyhow::Result<(JobJournal, Vec<Record>)> {
        let records = state_dir.job_records(job);
        let path = state_dir.job_file(job, FILE);
        // Rewritten whole: a torn tail goes, and an upgraded record gets its journal.
        write_private(&path, &lines(&records)?)?;
        state_dir.forget_legacy_progress(job);
        let file = OpenOptions::new()
            .append(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let journal = JobJournal {
            state_dir: state_dir.clone(),
            job,
            file,
            appended: records.len(),
        };
        Ok((journal, records))
    }

    /// Appends `event` durably; `job` is the job it leads to, kept as a snapshot now and then.
    pub fn append(&mut self, event: &Event, job: &Job) -> anyhow::Result<()> {
        if self.appended >= COMPACT_AFTER {
            let snapshot = [Record::Snapshot(Box::new(job.clone()))];
            let path = self.state_dir.job_file(self.job, FILE);
            write_private(&path, &lines(&snapshot)?)?;
            self.file = OpenOptions::new().append(true).open(&path)?;
            // The state before `event`, which follows it.
            self.appended = 1;
        }
        let mut line = serde_json::to_vec(&Record::Event(event.clone()))?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.sync_data()?;
        self.appended += 1;
        Ok(())
    }
}

fn lines(records: &[Record]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    for record in records {
        out.extend(serde_json::to_vec(record)?);
        out.push(b'\n');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_lifecycle::{Cursor, Policy};

    #[test]
    fn a_journal_replays_across_a_torn_line_and_a_compaction() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        std::fs::create_dir_all(dir.path().join("jobs/7")).unwrap();
        let policy = Policy::DEFAULT;
        let (mut journal, records) = JobJournal::open(&state, 7).unwrap();
        assert!(records.is_empty());
        let mut job = Job::new();
        let received = Event::Received {
            runner: "r".into(),
            label: "l".into(),
            held: true,
        };
        let mut events = vec![received];
        for len in 1..=(COMPACT_AFTER as u64 + 20) {
            events.push(Event::TraceAcked { offset: 0 });
            events.push(Event::TraceStored {
                len,
                cursor: Cursor::default(),
                checkpoint: None,
            });
        }
        for event in &events {
            journal.append(event, &job).unwrap();
            let _ = job.handle(event.clone(), &policy);
        }
        // A crash mid-append.
        let path = state.job_file(7, FILE);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"event\":{\"trace_st").unwrap();

        let (_, records) = JobJournal::open(&state, 7).unwrap();
        assert!(records.len() < events.len(), "compacted");
        let replayed = Job::replay(&records, &policy).unwrap();
        assert_eq!(replayed, job);
        assert_eq!(replayed.trace.len, COMPACT_AFTER as u64 + 20);
    }
}
