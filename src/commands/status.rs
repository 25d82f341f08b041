//! `drover status`: whether the daemon for a config is running, with its machines and jobs.

use std::path::PathBuf;
use std::process::ExitCode;

use crate::daemon::state_dir::StateDir;
use crate::daemon::status::Status;
use crate::exit;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub config: crate::paths::ConfigArg,
    /// The daemon's state directory, if `drover run` was given one
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Print the status as JSON
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = args.config.path();
    let dir = args
        .state_dir
        .unwrap_or_else(|| crate::paths::default_state_dir(&config));
    let state = StateDir::at(&dir);
    let running = match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(state.lock_file())
    {
        // The daemon holds the lock while it runs.
        Ok(file) => file.try_lock().is_err(),
        Err(_) => false,
    };
    let status: Option<Status> = std::fs::read(state.status_file())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if args.json {
        let json = serde_json::json!({ "running": running, "state_dir": dir, "status": status });
        println!("{}", serde_json::to_string_pretty(&json)?);
    } else if !running {
        println!(
            "drover is not running for {} (state directory {})",
            config.display(),
            dir.display()
        );
        if let Some(s) = &status {
            println!(
                "last seen at {}: {} machines, {} jobs held",
                s.updated_at,
                s.machines.len(),
                s.jobs.len()
            );
        }
    } else {
        print_status(&config, status.as_ref());
    }
    Ok(if running {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(exit::NOT_RUNNING)
    })
}

fn print_status(config: &std::path::Path, status: Option<&Status>) {
    let Some(s) = status else {
        println!(
            "drover is running for {} (no status written yet)",
            config.display()
        );
        return;
    };
    println!(
        "drover {} is running (pid {}) for {}, since {}; {} (as of {})",
        s.version, s.pid, s.config, s.started_at, s.shutdown, s.updated_at
    );
    for r in &s.runners {
        let period = r.period.map_or(String::new(), |p| format!(", period #{p}"));
        println!(
            "runner {}: {} creating, {} idle, {} busy, {} removing; {} running, {} queued jobs \
             (idle target {}, IdleCount {}{period}, limit {})",
            r.name,
            r.creating,
            r.idle,
            r.busy,
            r.removing,
            r.running,
            r.queued,
            r.idle_target,
            r.idle_count,
            if r.limit == 0 {
                "unlimited".to_string()
            } else {
                r.limit.to_string()
            },
        );
    }
    if !s.machines.is_empty() {
        println!("machines:");
        for m in &s.machines {
            println!(
                "  {:<60} {:<9} {} job(s) run, runner {}",
                m.name, m.state, m.jobs_run, m.runner
            );
        }
    }
    if !s.jobs.is_empty() {
        println!("jobs:");
        for j in &s.jobs {
            let on = j.machine.as_deref().unwrap_or("-");
            println!(
                "  {:<10} {:<8} since {} on {on} (runner {})",
                j.id, j.state, j.since, j.runner
            );
        }
    }
    if s.anomalies > 0 {
        println!("anomalies: {} (see the log)", s.anomalies);
    }
}
