//! `drover replay JOURNAL`: re-run a journal through the scheduling core, verify its digests, and
//! summarise what happened, job waits included (measured as `drover simulate` reports them).

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use drover_core::{Command, Event, JobId, Timestamp};
use drover_journal::{Summary, command_kind};
use drover_sim::report::{WaitSeconds, human_secs};
use drover_sim::stats::round3;

use crate::exit;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The journal file (in a daemon's state directory: `journal`)
    #[arg(value_name = "JOURNAL")]
    pub journal: PathBuf,
    /// Also check every invariant of the core after every step
    #[arg(long)]
    pub check_invariants: bool,
    /// Print every event and the commands it produced, one line each, before the summary
    /// (text only: the JSON summary is a single document)
    #[arg(long, conflicts_with = "json")]
    pub events: bool,
    /// How to print the summary (as `drover simulate --format`)
    #[arg(long, value_enum, default_value_t = super::simulate::Format::Table)]
    pub format: super::simulate::Format,
    /// The same as --format json
    #[arg(long, hide = true)]
    pub json: bool,
}

pub fn run(mut args: Args) -> anyhow::Result<ExitCode> {
    if args.format == super::simulate::Format::Json {
        if args.events {
            anyhow::bail!("--events prints text: it cannot be combined with --format json");
        }
        args.json = true;
    }
    let journal =
        drover_journal::read(&args.journal).map_err(|e| exit::with_code(exit::JOURNAL, e))?;
    let mut violation = None;
    // Events are streamed as they are replayed: a long journal is not held in memory twice.
    let mut events = args
        .events
        .then(|| std::io::BufWriter::new(std::io::stdout().lock()));
    let mut stdout_closed = false;
    let mut waits = Waits::default();
    let replay = drover_journal::replay(&journal, |r| {
        waits.observe(r.now, r.event, &r.step.commands);
        if args.check_invariants
            && violation.is_none()
            && let Err(v) = r
                .core
                .check_invariants()
                .and_then(|()| r.core.check_step(r.event, r.step))
        {
            violation = Some(format!("{v} (frame at offset {})", r.offset));
        }
        if let Some(out) = &mut events {
            let cmds: Vec<String> = r.step.commands.iter().map(describe).collect();
            let line = writeln!(
                out,
                "{} {:<24} -> {}",
                r.now,
                r.event.kind(),
                cmds.join(", ")
            );
            if line.is_err() {
                // The reader went away (`| head`): stop printing, finish the replay for its verdict.
                events = None;
                stdout_closed = true;
            }
        }
    })
    .map_err(|e| exit::with_code(exit::JOURNAL, e))?;
    if let Some(mut out) = events {
        stdout_closed = out.flush().is_err();
    }
    let stats = replay.core.state().stats();
    let wait_seconds = waits.seconds();
    let anomalies = replay.core.state().anomalies();
    if stdout_closed {
        // Nobody reads the summary; the exit code below still tells the verdict.
    } else if args.json {
        let json = serde_json::json!({
            "journal": args.journal,
            "format": journal.format,
            "drover_version": journal.header.drover_version,
            "runners": journal.header.config.runners.iter().map(|r| &r.name).collect::<Vec<_>>(),
            "first": replay.summary.first.map(|t| t.to_string()),
            "last": replay.summary.last.map(|t| t.to_string()),
            "events": replay.summary.events,
            "events_by_kind": replay.summary.events_by_kind,
            "commands_by_kind": replay.summary.commands_by_kind,
            "snapshots": replay.summary.snapshots,
            "stats": stats,
            "wait_seconds": wait_seconds,
            "anomalies": anomalies.by_kind.iter().map(|(k, n)| (k.as_str(), n)).collect::<std::collections::BTreeMap<_, _>>(),
            "digests_checked": replay.digests_checked,
            "divergences": replay.divergences.iter().map(|d| serde_json::json!({
                "offset": d.offset, "seq": d.seq, "what": d.what,
                "recorded": format!("{:016x}", d.recorded), "replayed": format!("{:016x}", d.replayed),
            })).collect::<Vec<_>>(),
            "torn_tail": journal.torn_tail.map(|t| serde_json::json!({"offset": t.offset, "bytes": t.len})),
            "invariant_violation": violation,
        });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        print_summary(&args, &journal, &replay.summary, stats, anomalies);
        match &wait_seconds {
            Some(w) => println!(
                "waits (arrival in GitLab's queue to start): mean {}, p50 {}, p90 {}, p95 {}, \
                 p99 {}, max {}",
                human_secs(w.mean),
                human_secs(w.p50),
                human_secs(w.p90),
                human_secs(w.p95),
                human_secs(w.p99),
                human_secs(w.max)
            ),
            None => println!("waits: no job started"),
        }
        println!(
            "digests: {} verified, {} divergence{}",
            replay.digests_checked,
            replay.divergences.len(),
            if replay.divergences.len() == 1 {
                ""
            } else {
                "s"
            }
        );
        for d in replay.divergences.iter().take(5) {
            println!(
                "  at byte offset {} (event {}): {} recorded {:016x}, replayed {:016x}",
                d.offset, d.seq, d.what, d.recorded, d.replayed
            );
        }
        if args.check_invariants {
            match &violation {
                None => println!("invariants: held after every step"),
                Some(v) => println!("invariants: {v}"),
            }
        }
    }
    if let Some(t) = journal.torn_tail {
        eprintln!(
            "warning: {} ends in a torn frame at byte offset {} ({} bytes): a crash mid-write; \
             `drover run` truncates it on its next start",
            args.journal.display(),
            t.offset,
            t.len
        );
    }
    if !replay.divergences.is_empty() {
        return Err(exit::with_code(
            exit::JOURNAL,
            anyhow::anyhow!(
                "the replay diverged from the recording {} time(s), first at byte offset {}: this \
                 drover does not schedule as the one that wrote the journal",
                replay.divergences.len(),
                replay.divergences[0].offset
            ),
        ));
    }
    if let Some(v) = violation {
        return Err(exit::with_code(
            exit::JOURNAL,
            anyhow::anyhow!("invariant violated during replay: {v}"),
        ));
    }
    Ok(ExitCode::SUCCESS)
}

fn print_summary(
    args: &Args,
    journal: &drover_journal::Journal,
    summary: &Summary,
    stats: &drover_core::state::Stats,
    anomalies: &drover_core::state::Anomalies,
) {
    let cfg = &journal.header.config;
    println!(
        "journal {} (format {}, written by drover {})",
        args.journal.display(),
        journal.format,
        journal.header.drover_version
    );
    let names: Vec<&str> = cfg.runners.iter().map(|r| r.name.as_str()).collect();
    println!(
        "config: concurrent {}, runners: {}",
        cfg.concurrent,
        names.join(", ")
    );
    if let (Some(first), Some(last)) = (summary.first, summary.last) {
        let span = last.since(first);
        println!(
            "span: {first} .. {last} ({})",
            humantime::format_duration(std::time::Duration::from_secs(span.as_secs()))
        );
    }
    println!(
        "events: {} in {} frames, {} snapshot(s)",
        summary.events,
        journal.frames.len(),
        summary.snapshots
    );
    println!("  {}", join_counts(&summary.events_by_kind));
    println!("commands:");
    println!("  {}", join_counts(&summary.commands_by_kind));
    println!(
        "jobs: {} received, {} started, {} finished, {} failed before starting",
        stats.jobs_received, stats.jobs_started, stats.jobs_finished, stats.jobs_failed_unstarted
    );
    println!(
        "machines: {} requested, {} created, {} creation failures, {} removed, {} removal failures, \
         {} lost, {} orphans removed, {} abandoned",
        stats.machines_requested,
        stats.machines_created,
        stats.creation_failures,
        stats.machines_removed,
        stats.removal_failures,
        stats.machines_lost,
        stats.orphans_found,
        stats.machines_abandoned
    );
    if anomalies.by_kind.is_empty() {
        println!("anomalies: none");
    } else {
        println!("anomalies:");
        for (kind, n) in &anomalies.by_kind {
            println!("  {n} x {}", kind.as_str());
        }
    }
}

/// Each job's wait, as the simulator measures it: from its arrival in GitLab's queue (received
/// minus GitLab's `time_in_queue_seconds`) to the core's `RunJob`.
#[derive(Default)]
struct Waits {
    arrivals: std::collections::BTreeMap<JobId, Timestamp>,
    seconds: Vec<f64>,
}

impl Waits {
    fn observe(&mut self, now: Timestamp, event: &Event, commands: &[Command]) {
        if let Event::JobReceived { job, info, .. } = event {
            self.arrivals
                .insert(*job, Timestamp(now.0.saturating_sub(info.queued_ms)));
        }
        for command in commands {
            if let Command::RunJob { job, .. } = command
                && let Some(arrival) = self.arrivals.remove(job)
            {
                self.seconds
                    .push(now.0.saturating_sub(arrival.0) as f64 / 1000.0);
            }
        }
    }

    /// Mean and nearest-rank percentiles; `None` when no job started.
    fn seconds(mut self) -> Option<WaitSeconds> {
        if self.seconds.is_empty() {
            return None;
        }
        self.seconds.sort_by(f64::total_cmp);
        let s = &self.seconds;
        let at = |p: f64| s[((p * s.len() as f64).ceil() as usize).clamp(1, s.len()) - 1];
        Some(WaitSeconds {
            mean: round3(s.iter().sum::<f64>() / s.len() as f64),
            p50: round3(at(0.50)),
            p90: round3(at(0.90)),
            p95: round3(at(0.95)),
            p99: round3(at(0.99)),
            max: round3(s[s.len() - 1]),
        })
    }
}

fn join_counts(m: &std::collections::BTreeMap<&'static str, u64>) -> String {
    if m.is_empty() {
        return "none".to_string();
    }
    m.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One command, short.
fn describe(c: &Command) -> String {
    match c {
        Command::RequestJob { runner } => format!("request_job(runner {})", runner.0),
        Command::CancelRequests { runner } => format!("cancel_requests(runner {})", runner.0),
        Command::CreateMachine { name, .. } => format!("create_machine({name})"),
        Command::RemoveMachine { name, reason, .. } => {
            format!("remove_machine({name}, {})", reason.as_str())
        }
        Command::RunJob { job, machine, .. } => format!(
            "run_job({}, {})",
            job.0,
            machine.map_or("local".into(), |m| m.0.to_string())
        ),
        Command::ResumeJob { job, .. } => format!("resume_job({})", job.0),
        Command::CancelJob { job } => format!("cancel_job({})", job.0),
        Command::AbortJob { job, .. } => format!("abort_job({})", job.0),
        Command::FailJob { job, reason, .. } => format!("fail_job({}, {})", job.0, reason.as_str()),
        Command::ListMachines { runner, .. } => format!("list_machines(runner {})", runner.0),
        c @ Command::Exit { .. } => command_kind(c).to_string(),
    }
}
