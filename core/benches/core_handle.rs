//! `Core::handle` on a steady mix of events: a job finishes, its machine takes the next queued job, a
//! new job arrives — with a fleet of busy machines, a backlog of queued jobs and a machine creating for
//! each of them. The cost per event must not grow with the fleet.

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use drover_core::{
    Command, Config, Core, Event, JobId, JobInfo, Outcome, RunnerConfig, RunnerId, Timestamp,
};

const R: RunnerId = RunnerId(0);

struct Steady {
    core: Core,
    now: Timestamp,
    running: VecDeque<JobId>,
    next_job: u64,
}

fn info() -> JobInfo {
    JobInfo {
        timeout_ms: 3_600_000,
        queued_ms: 0,
    }
}

impl Steady {
    /// An on-demand pool under load: `machines` busy machines, `queued` received jobs waiting, and as
    /// many machines creating for them. Every event in the cycle is one the daemon could really see.
    fn new(machines: u64, queued: u64) -> Steady {
        let mut config = Config::new(u32::MAX);
        config.reconcile_interval = None;
        let config = config.with_runner(RunnerConfig::pool("bench", 0, 0));
        let mut core = Core::new(config, Timestamp(0));
        let now = Timestamp(1);
        let _ = core.handle(now, Event::Tick);
        let mut running = VecDeque::new();
        for j in 0..machines + queued {
            let step = core.handle(
                now,
                Event::JobReceived {
                    runner: R,
                    job: JobId(j),
                    info: info(),
                },
            );
            for c in step.commands {
                if let Command::CreateMachine { machine, .. } = c
                    && j < machines
                {
                    let step = core.handle(now, Event::MachineCreated { machine });
                    running.extend(step.commands.iter().filter_map(|c| match c {
                        Command::RunJob { job, .. } => Some(*job),
                        _ => None,
                    }));
                }
            }
        }
        assert_eq!(running.len() as u64, machines);
        assert_eq!(u64::from(core.state().totals().queued), queued);
        assert_eq!(core.state().totals().in_flight, 1);
        Steady {
            core,
            now,
            running,
            next_job: machines + queued,
        }
    }

    /// One job finishes (its machine takes the next queued job) and a new job arrives: two events.
    fn cycle(&mut self) {
        self.now = self.now.after(Duration::from_millis(1));
        let Some(job) = self.running.pop_front() else {
            return;
        };
        let step = self.core.handle(
            self.now,
            Event::JobFinished {
                job,
                outcome: Outcome::Success,
            },
        );
        for c in &step.commands {
            if let Command::RunJob { job, .. } = c {
                self.running.push_back(*job);
            }
        }
        black_box(&step);
        let job = JobId(self.next_job);
        self.next_job += 1;
        let step = self.core.handle(
            self.now,
            Event::JobReceived {
                runner: R,
                job,
                info: info(),
            },
        );
        black_box(&step);
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("core_handle");
    group.throughput(Throughput::Elements(2));
    for machines in [100u64, 1_000, 10_000] {
        let mut steady = Steady::new(machines, 10_000);
        group.bench_with_input(
            BenchmarkId::new("steady_mix_10k_queued", machines),
            &machines,
            |b, _| b.iter(|| steady.cycle()),
        );
        assert!(
            steady.core.state().anomalies().total() == 0,
            "the bench fed only sensible events: {:?}",
            steady.core.state().anomalies().by_kind
        );
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
