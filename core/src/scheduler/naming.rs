//! Machine names: GitLab's `runner-<key>-` prefix and `MachineName` pattern, with a reproducible suffix.

use crate::config::RunnerConfig;
use crate::ids::MachineId;
use crate::time::Timestamp;

/// `runner-<short token>-` + `MachineName` with `%s` → `<unix seconds>-<8 hex digits>`, as GitLab names
/// machines. The hex digits come from the configured seed, so names are reproducible in replays.
pub fn machine_name(runner: &RunnerConfig, seed: u64, id: MachineId, now: Timestamp) -> String {
    let pattern = runner.policy().map_or("%s", |p| p.machine_name.as_str());
    // Written into one buffer: an ephemeral pool names a machine per job.
    let mut name = String::with_capacity(8 + runner.short_token.len() + pattern.len() + 24);
    name.push_str("runner-");
    name.push_str(&runner.short_token);
    name.push('-');
    // A byte search: `split_once` builds a substring searcher per call.
    let (before, after) = match pattern.as_bytes().windows(2).position(|w| w == b"%s") {
        Some(at) => (&pattern[..at], &pattern[at + 2..]),
        None => (pattern, ""),
    };
    name.push_str(before);
    if before.len() < pattern.len() {
        push_decimal(&mut name, now.0 / 1000);
        name.push('-');
        // By hand, not `write!`: formatting showed in the profile of an ephemeral pool (a name
        // per job).
        let hex = splitmix64(seed ^ id.0) as u32;
        let mut digits = [0u8; 8];
        for (i, d) in digits.iter_mut().enumerate() {
            *d = b"0123456789abcdef"[((hex >> ((7 - i) * 4)) & 0xf) as usize];
        }
        name.push_str(std::str::from_utf8(&digits).unwrap_or_default());
    }
    name.push_str(after);
    name
}

/// `n` in decimal, as `{}` writes it.
fn push_decimal(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&digits[at..]).unwrap_or_default());
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffixes_are_written_as_format_writes_them() {
        let runner = RunnerConfig::pool("linux", 0, 4);
        for (seed, id, ms) in [
            (0, 0, 0),
            (7, 3, 999),
            (u64::MAX, 12, u64::MAX),
            (1, 2, 10_000),
        ] {
            let name = machine_name(&runner, seed, MachineId(id), Timestamp(ms));
            let want = format!("{}-{:08x}", ms / 1000, splitmix64(seed ^ id) as u32);
            assert!(name.ends_with(&format!("-{want}")), "{name} {want}");
        }
    }

    #[test]
    fn names_follow_the_machine_name_pattern() {
        let mut runner = RunnerConfig::pool("linux", 0, 4);
        runner.short_token = "abcd1234".into();
        let now = Timestamp(1_767_571_234_567);
        let suffix = format!("1767571234-{:08x}", splitmix64(7 ^ 3) as u32);
        for (pattern, want) in [
            ("auto-%s.example.com", format!("auto-{suffix}.example.com")),
            ("%s", suffix.clone()),
            ("m-%s-%s", format!("m-{suffix}-%s")),
            ("no-placeholder", "no-placeholder".to_string()),
        ] {
            if let Some(p) = runner.policy_mut() {
                p.machine_name = pattern.into();
            }
            let name = machine_name(&runner, 7, MachineId(3), now);
            assert_eq!(name, format!("runner-abcd1234-{want}"), "{pattern}");
            assert!(
                runner.owns_machine(&name) || !pattern.contains("%s"),
                "{name}"
            );
        }
    }
}
