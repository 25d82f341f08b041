//! A job's journal: `jobs/<id>/events.jsonl` in the state directory, one lifecycle record
//! ([`Record`]) per line, appended and synced before the record's actions are carried out.
//!
//! Why a file per job of JSON lines rather than frames in the core's journal: a job's record lives
//! and dies with the job's folder (payload, stored trace), so finishing a job is one `rm -r` and no
//! compaction of a shared file; the core's journal replays the core bit for bit and should not
//! carry trace offsets every second. JSON, because the record outlives drover versions (an
//! upgrade reads the previous format; new fields come with defaults) and an operator can read it.
//! A crash mid-append leaves a torn last line, which fails to parse and is dropped: the event it
//! held had no action carried out yet. A damaged line before the last is no crash's doing: the
//! journal is refused (and left as it is for an operator), never read past. A failed append is
//! cut back to the last whole line and tried once more; if that fails too the caller must not act
//! on the event. The journal is compacted into one snapshot line now and then; a job's record
//! stays small whatever its length.

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
    /// The file's length after its last whole line: a failed write is cut back to it.
    len: u64,
    /// Tests: writes to tear (half written, then an error).
    #[cfg(test)]
    torn_writes: u32,
}

impl JobJournal {
    /// Opens the job's journal (made from an older drover's record if that is all there is);
    /// returns it with the records it holds.
    pub fn open(state_dir: &StateDir, job: u64) -> anyhow::Result<(JobJournal, Vec<Record>)> {
        let records = state_dir.job_records(job)?;
        let path = state_dir.job_file(job, FILE);
        // Rewritten whole: a torn tail goes, and an upgraded record gets its journal.
        let text = lines(&records)?;
        write_private(&path, &text)?;
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
            len: text.len() as u64,
            #[cfg(test)]
            torn_writes: 0,
        };
        Ok((journal, records))
    }

    /// Appends `event` durably; `job` is the job it leads to, kept as a snapshot now and then.
    /// `Err`: the event is not in the journal (nor any fragment of it).
    pub fn append(&mut self, event: &Event, job: &Job) -> anyhow::Result<()> {
        if self.appended >= COMPACT_AFTER {
            self.compact(job)?;
        }
        let mut line = serde_json::to_vec(&Record::Event(event.clone()))?;
        line.push(b'\n');
        if let Err(e) = self.write(&line) {
            tracing::warn!(job = self.job, "journaling an event failed, once more: {e}");
            let retried = self.file.set_len(self.len).and_then(|()| self.write(&line));
            if let Err(e) = retried {
                // Leave no fragment for a later line to be glued to.
                let _ = self.file.set_len(self.len);
                return Err(e).context("journaling an event failed twice");
            }
        }
        self.len += line.len() as u64;
        self.appended += 1;
        Ok(())
    }

    fn write(&mut self, line: &[u8]) -> std::io::Result<()> {
        #[cfg(test)]
        if self.torn_writes > 0 {
            self.torn_writes -= 1;
            self.file.write_all(&line[..line.len() / 2])?;
            return Err(std::io::Error::other("disk full"));
        }
        self.file.write_all(line)?;
        self.file.sync_data()
    }

    /// Rewrites the journal as one snapshot of `job` (the state before the event that follows).
    /// A failed rewrite keeps the journal as it was, and appends go on there; `Err` only when the
    /// journal cannot be opened again.
    fn compact(&mut self, job: &Job) -> anyhow::Result<()> {
        let snapshot = lines(&[Record::Snapshot(Box::new(job.clone()))])?;
        let path = self.state_dir.job_file(self.job, FILE);
        let written = write_private(&path, &snapshot);
        // Whether or not the rename happened, appends go to the file now at `path`.
        self.file = OpenOptions::new()
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {} again", path.display()))?;
        self.len = self.file.metadata()?.len();
        match written {
            Ok(()) => self.appended = 1,
            Err(e) => tracing::warn!(job = self.job, "compacting the journal failed: {e:#}"),
        }
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

    fn journal() -> (tempfile::TempDir, StateDir, JobJournal) {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        std::fs::create_dir_all(dir.path().join("jobs/7")).unwrap();
        let (journal, _) = JobJournal::open(&state, 7).unwrap();
        (dir, state, journal)
    }

    fn acked(offset: u64) -> Event {
        Event::TraceAcked { offset }
    }

    #[test]
    fn a_torn_append_is_cut_back_and_written_again() {
        let (_dir, state, mut journal) = journal();
        let job = Job::new();
        journal.append(&acked(1), &job).unwrap();
        journal.torn_writes = 1;
        journal.append(&acked(2), &job).unwrap();
        journal.append(&acked(3), &job).unwrap();
        let events: Vec<Record> = [1, 2, 3].map(|o| Record::Event(acked(o))).into();
        assert_eq!(state.job_records(7).unwrap(), events);
    }

    #[test]
    fn an_append_failing_twice_leaves_no_fragment() {
        let (_dir, state, mut journal) = journal();
        let job = Job::new();
        journal.append(&acked(1), &job).unwrap();
        journal.torn_writes = 2;
        assert!(journal.append(&acked(2), &job).is_err());
        journal.append(&acked(3), &job).unwrap();
        let events: Vec<Record> = [1, 3].map(|o| Record::Event(acked(o))).into();
        assert_eq!(state.job_records(7).unwrap(), events);
    }

    #[test]
    fn a_damaged_line_before_the_last_is_refused_and_kept() {
        let (_dir, state, mut journal) = journal();
        let job = Job::new();
        journal.append(&acked(1), &job).unwrap();
        let path = state.job_file(7, FILE);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"event\":{\"trace_st\n").unwrap();
        // Forgiven as the last line (a crash tears only that one); not once a line follows it.
        assert_eq!(state.job_records(7).unwrap().len(), 1);
        file.write_all(&lines(&[Record::Event(acked(2))]).unwrap())
            .unwrap();
        drop(journal);
        let damaged = std::fs::read(&path).unwrap();
        assert!(JobJournal::open(&state, 7).is_err());
        assert!(state.job_records(7).is_err());
        assert_eq!(std::fs::read(&path).unwrap(), damaged, "left as it was");
    }
}
