//! Prints the simulator's throughput on a steady Poisson workload with a 500-machine limit:
//! `cargo run --release -p drover-sim --example throughput -- [JOBS]`.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use drover_core::{Config, RunnerConfig};
use drover_sim::{RunOptions, Scenario, Workload, run};

fn main() {
    let jobs: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let text = format!(
        "jobs = {jobs}\nseed = 1\n[arrivals]\nkind = \"poisson\"\nrate_per_min = 80.0\n\
         [duration]\nkind = \"exponential\"\nmean = \"5m\"\n[boot]\nkind = \"constant\"\nvalue = \"90s\"\n"
    );
    let workload = Workload::parse(&text, Path::new("steady.toml")).expect("valid workload");
    let mut runner = RunnerConfig::pool("steady", 20, 500);
    if let Some(p) = runner.policy_mut() {
        p.base.idle_time_ms = 600_000;
    }
    let config = Config::new(500).with_runner(runner);
    let scenario = Scenario::new(config, Arc::new(workload), None).expect("valid scenario");
    // The simulator reads no clock: the example times the run.
    let wall = Instant::now();
    let mut result = run(&scenario, &RunOptions::default()).expect("run");
    let secs = wall.elapsed().as_secs_f64();
    let perf = &mut result.report.perf;
    perf.wall_seconds = secs;
    perf.events_per_second = perf.events as f64 / secs;
    print!("{}", result.report.table());
}
