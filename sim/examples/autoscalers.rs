//! The two autoscalers of the SimPy comparison (`benches/simpy/`), built in code, for profiling the
//! simulator without the binary: `cargo run --release -p drover-sim --example autoscalers -- warm|ephemeral [JOBS]`.
//! Prints the jobs, the mean wait and the events; time it from outside (`perf stat`, `time`).

use std::path::Path;
use std::sync::Arc;

use drover_core::{Config, RunnerConfig};
use drover_sim::{RunOptions, Scenario, Workload, run};

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "warm".into());
    let jobs: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    // The same parameters as benches/simpy/*.toml.
    let (rate, boot, limit, idle, max_builds) = match which.as_str() {
        "warm" => (10.0, "kind = \"constant\"\nvalue = \"0s\"", 12, 12, 0),
        "ephemeral" => (1.0, "kind = \"exponential\"\nmean = \"2m\"", 4, 0, 1),
        other => {
            eprintln!("{other:?}: say warm or ephemeral");
            std::process::exit(2);
        }
    };
    let text = format!(
        "jobs = {jobs}\nseed = 1\n[arrivals]\nkind = \"poisson\"\nrate_per_min = {rate}\n\
         [duration]\nkind = \"exponential\"\nmean = \"1m\"\n[boot]\n{boot}\n\
         [removal]\nkind = \"constant\"\nvalue = \"0s\"\n"
    );
    let workload = Workload::parse(&text, Path::new("autoscaler.toml")).expect("valid workload");
    let mut runner = RunnerConfig::pool(&which, idle, limit);
    if let Some(p) = runner.policy_mut() {
        p.max_builds = max_builds;
        p.base.idle_time_ms = 86_400_000;
    }
    let config = Config::new(limit).with_runner(runner);
    let scenario = Scenario::new(config, Arc::new(workload), None).expect("valid scenario");
    let report = run(&scenario, &RunOptions::default()).expect("run").report;
    println!(
        "{which}: {} jobs, mean wait {:.3} s, {} events",
        report.jobs, report.wait_seconds.mean, report.perf.events
    );
}
