//! The floor under any simulator of the SimPy workloads (`benches/simpy/`): the same random draws
//! as drover's simulator (ChaCha8 streams, exponential variates by `libm::log`, whole
//! milliseconds) through the cheapest model there is, a first-come-first-served queue on `c`
//! servers by the Kiefer–Wolfowitz recursion: no event queue, no autoscaler, no coordinator.
//!
//! `cargo run --release -p drover-sim --example floor -- warm|ephemeral [JOBS]`
//!
//! No simulator that draws the same variates can run these jobs faster than this; time it from
//! outside (`/usr/bin/time`) beside `--example autoscalers`. For the ephemeral pool it is the
//! warm model with the boot time added to each job's service, which is not the same queue: it only
//! counts the draws (one more exponential per job).

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use drover_sim::dist::exponential;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

fn stream(seed: u64, id: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(id);
    rng
}

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "warm".into());
    let jobs: u64 = args
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    // λ per minute, servers, mean boot (ms): as benches/simpy/*.toml.
    let (rate, servers, boot_ms) = match which.as_str() {
        "warm" => (10.0, 12, None),
        "ephemeral" => (1.0, 4, Some(120_000.0)),
        other => {
            eprintln!("{other:?}: say warm or ephemeral");
            std::process::exit(2);
        }
    };
    let (mut gaps, mut durations, mut boots) = (stream(1, 1), stream(1, 2), stream(1, 4));
    let mean_gap = 60_000.0 / rate;
    // When each server is next free, earliest first.
    let mut free: BinaryHeap<Reverse<u64>> = (0..servers).map(|_| Reverse(0)).collect();
    let (mut t, mut waited) = (0.0f64, 0u64);
    for _ in 0..jobs {
        t += exponential(&mut gaps, mean_gap);
        let at = t.round() as u64;
        let mut service = exponential(&mut durations, 60_000.0).round() as u64;
        if let Some(mean) = boot_ms {
            service += exponential(&mut boots, mean).round() as u64;
        }
        let Some(mut earliest) = free.peek_mut() else {
            return;
        };
        let start = at.max(earliest.0);
        waited += start - at;
        earliest.0 = start + service;
    }
    println!(
        "{which}: {jobs} jobs on {servers} servers, mean wait {:.3} s",
        waited as f64 / jobs as f64 / 1000.0
    );
}
