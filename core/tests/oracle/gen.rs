//! The oracle's configs, drawn from eight numbers: one or two runners, docker+machine pools
//! ([`config`]) or runners with job slots ([`slots_config`]), small enough that limits,
//! MaxGrowthRate, MaxBuilds, `max_instances` and `concurrent` bind often.

use std::time::Duration;

use drover_core::{Config, Executor, Period, PolicyValues, RunnerConfig, SlotExtra, SlotPolicy};

const ZONES: [&str; 4] = ["Europe/Berlin", "America/New_York", "Asia/Kolkata", "UTC"];
const PERIODS: [&str; 5] = [
    "* * 9-17 * * mon-fri *",
    "* 0-29 * * * * *",
    "* * 0-3 * * * *",
    "* * * * * sat,sun *",
    "0-29 * * * * * *",
];

/// A config of one or two pool runners drawn from eight numbers, small enough that limits,
/// MaxGrowthRate, MaxBuilds and `concurrent` bind often.
pub fn config(n: [u32; 8]) -> Config {
    let mut c = Config::new(1 + n[0] % 6);
    c.check_interval = Duration::from_secs(u64::from(1 + n[1] % 5));
    c.reconcile_interval = None;
    c.drain_machines_on_shutdown = n[1].is_multiple_of(2);
    c.seed = u64::from(n[3]);
    for i in 0..1 + (n[2] % 2) as usize {
        let (k, l) = (n[4 + 2 * i], n[5 + 2 * i]);
        c.runners.push(runner(i, k, l));
    }
    c
}

fn runner(i: usize, k: u32, l: u32) -> RunnerConfig {
    let mut r = RunnerConfig::pool(&format!("r{i}"), k % 4, l % 7);
    r.short_token = format!("key{i}{}", k % 3);
    r.request_concurrency = 1 + (k >> 2) % 3;
    let p = r.policy_mut().expect("a pool");
    p.max_builds = (k >> 4) % 4;
    p.max_growth_rate = (k >> 6) % 3;
    p.max_removal_attempts = 1 + (k >> 8) % 5;
    p.base.idle_time_ms = u64::from((l >> 3) % 4) * 60_000;
    if (l >> 5).is_multiple_of(3) {
        p.base.idle_scale_factor = 0.5;
        p.base.idle_count_min = (l >> 7) % 3;
    }
    // Zero to three periods, each in its own zone; the last matching one wins.
    for j in 0..(l >> 9) % 4 {
        let pick = (l >> (11 + 2 * j)) as usize;
        let values = PolicyValues {
            idle_count: (pick as u32 >> 3) % 5,
            idle_count_min: (pick as u32 >> 5) % 2,
            idle_scale_factor: if pick.is_multiple_of(7) { 1.0 } else { 0.0 },
            idle_time_ms: u64::from((pick as u32 >> 6) % 3) * 30_000,
        };
        let period = Period::new(
            &[PERIODS[pick % PERIODS.len()]],
            ZONES[(pick >> 2) % ZONES.len()],
            values,
        )
        .expect("the generator's periods parse");
        p.periods.push(period);
    }
    r
}

/// [`config`] with each pool runner given one to four job slots per machine, a `max_instances`,
/// and policies with and without `preemptive_mode` and a capped `scale_factor`.
pub fn slots_config(n: [u32; 8]) -> Config {
    let mut c = config(n);
    for (i, r) in c.runners.iter_mut().enumerate() {
        let Executor::Pool(pool) = &r.executor else {
            continue;
        };
        let m = n[4 + 2 * i].rotate_left(11) ^ n[5 + 2 * i].rotate_left(19);
        let extra = |bits: u32| SlotExtra {
            scale_factor_limit: bits % 3,
            preemptive: (bits >> 2).is_multiple_of(2),
        };
        let mut pool = pool.clone();
        pool.base.idle_count_min = 0;
        let extras = (0..pool.periods.len() as u32)
            .map(|j| extra(m >> (8 + 3 * j)))
            .collect();
        r.executor = Executor::Slots(SlotPolicy {
            slots: 1 + m % 4,
            max_machines: (m >> 2) % 6,
            pool,
            base_extra: extra(m >> 5),
            extras,
        });
    }
    c
}
