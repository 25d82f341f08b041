//! Simulator throughput on a steady Poisson workload with a 500-machine limit, and the share of it
//! spent in the scheduling core (the same event stream replayed through `Core::handle` alone).
//!
//! `cargo bench -p drover-sim --bench sim_throughput`

use std::path::Path;
use std::sync::Arc;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use drover_core::{Config, Core, Event, RunnerConfig, Step, Timestamp};
use drover_sim::{Observer, RunOptions, Scenario, Workload, run, run_observed};

const JOBS: u64 = 100_000;

/// 80 jobs/min of 5 min on average: about 400 busy machines of a 500-machine limit, 20 kept idle.
fn steady() -> Scenario {
    let text = format!(
        "jobs = {JOBS}\nseed = 1\n[arrivals]\nkind = \"poisson\"\nrate_per_min = 80.0\n\
         [duration]\nkind = \"exponential\"\nmean = \"5m\"\n[boot]\nkind = \"constant\"\nvalue = \"90s\"\n"
    );
    let workload = Workload::parse(&text, Path::new("steady.toml")).expect("valid workload");
    let mut runner = RunnerConfig::pool("steady", 20, 500);
    if let Some(p) = runner.policy_mut() {
        p.base.idle_time_ms = 600_000;
    }
    Scenario::new(
        Config::new(500).with_runner(runner),
        Arc::new(workload),
        None,
    )
    .expect("valid scenario")
}

/// Records every event the core is handed.
struct Recorder(Vec<(Timestamp, Event)>);

impl Observer for Recorder {
    fn on_step(&mut self, now: Timestamp, event: &Event, _: &Step, _: &Core) {
        self.0.push((now, event.clone()));
    }
}

fn bench(c: &mut Criterion) {
    let scenario = steady();
    let events = run(&scenario, &RunOptions::default())
        .expect("run")
        .report
        .perf
        .events;

    let mut group = c.benchmark_group("steady_poisson_500");
    group.sample_size(10);
    group.throughput(Throughput::Elements(events));
    group.bench_function("simulate", |b| {
        b.iter(|| run(&scenario, &RunOptions::default()).expect("run"))
    });

    let mut recorder = Recorder(Vec::new());
    run_observed(&scenario, &RunOptions::default(), &mut recorder).expect("run");
    let stream = recorder.0;
    let start = stream.first().map_or(Timestamp::ZERO, |e| e.0);
    group.bench_function("core_only", |b| {
        b.iter_batched(
            || stream.clone(),
            |stream| {
                let mut core = Core::new(scenario.config.clone(), start);
                for (now, event) in stream {
                    let _ = core.handle(now, event);
                }
                core
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
