//! Machine names: GitLab's `runner-<key>-` prefix and `MachineName` pattern, with a reproducible suffix.

use crate::config::RunnerConfig;
use crate::ids::MachineId;
use crate::time::Timestamp;

/// `runner-<short token>-` + `MachineName` with `%s` → `<unix seconds>-<8 hex digits>`, as GitLab names
/// machines. The hex digits come from the configured seed, so names are reproducible in replays.
pub fn machine_name(runner: &RunnerConfig, seed: u64, id: MachineId, now: Timestamp) -> String {
    let pattern = runner.policy().map_or("%s", |p| p.machine_name.as_str());
    let suffix = format!("{}-{:08x}", now.0 / 1000, splitmix64(seed ^ id.0) as u32);
    format!(
        "{}{}",
        runner.machine_prefix(),
        pattern.replacen("%s", &suffix, 1)
    )
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}
