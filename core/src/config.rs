//! The validated configuration the core runs on. The binary builds it from GitLab's `config.toml`
//! (GitLab's key names live there); the simulator and the tests build it directly.

use serde::{Deserialize, Serialize};
use std::time::Duration;

use crate::period::{Period, PolicyValues};

/// Global settings and every `[[runners]]` entry.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Config {
    /// Job slots across all runners (`concurrent`, ≥ 1).
    pub concurrent: u32,
    /// Pause between job requests of a runner after an empty answer (`check_interval`).
    pub check_interval: Duration,
    /// How long a forceful shutdown waits for aborted jobs (`shutdown_timeout`).
    pub shutdown_timeout: Duration,
    /// After a graceful shutdown, remove every machine instead of leaving them for the next start
    /// (GitLab's `[machine.shutdown_drain] enabled`).
    pub drain_machines_on_shutdown: bool,
    /// How often to list the providers' machines and settle differences; `None` lists only on resume.
    pub reconcile_interval: Option<Duration>,
    /// Seeds machine-name suffixes. The driver draws it once and journals it with the config.
    pub seed: u64,
    pub runners: Vec<RunnerConfig>,
}

/// One `[[runners]]` entry, as far as scheduling is concerned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RunnerConfig {
    /// Unique among the runners; reloads match runners by it.
    pub name: String,
    /// The runner's key in machine names (`runner-<key>-…`) and job-container labels. The binary
    /// derives it from the installation's system id, the runner's URL and its name ([`machine_key`]),
    /// which survive a token rotation and keep two installations apart. Journals written by earlier
    /// drovers hold an earlier key here ([`earlier_keys`]); machines named under it are still
    /// recognised by their names (see [`crate::State::machine_prefixes`]).
    pub short_token: String,
    /// Jobs (and machines of every state) this runner may have; 0 = unlimited (`limit`).
    pub limit: u32,
    /// Job requests in flight at once (`request_concurrency`, ≥ 1).
    pub request_concurrency: u32,
    pub executor: Executor,
}

/// How a runner gets somewhere to run a job.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Executor {
    /// `docker+machine`: an autoscaled pool of machines, one job at a time each.
    Pool(MachinePolicy),
    /// `docker`: jobs run directly on the runner's own engine; no machines to manage.
    Direct,
    /// `docker-autoscaler`: an autoscaled group of machines, each running up to `slots` jobs at once.
    /// (Appended last: journals name the executors above by their position.)
    Slots(SlotPolicy),
}

/// `[runners.autoscaler]` as far as scheduling is concerned. Idle values are in job slots.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SlotPolicy {
    /// Jobs one machine runs at once (`capacity_per_instance`, ≥ 1).
    pub slots: u32,
    /// Machines in every state but stuck removals; 0 = unlimited (`max_instances`). `limit` caps
    /// jobs only.
    pub max_machines: u32,
    /// `base` and `periods` in job slots (`[[runners.autoscaler.policy]]`: `idle_count`,
    /// `idle_time`, `scale_factor` as `idle_scale_factor`; `idle_count_min` is unused), `max_builds`
    /// is `max_use_count`.
    pub pool: MachinePolicy,
    /// `scale_factor_limit` and `preemptive_mode` outside every period.
    pub base_extra: SlotExtra,
    /// The same for each of `pool.periods`, by index.
    pub extras: Vec<SlotExtra>,
}

/// The policy values of `[[runners.autoscaler.policy]]` that docker+machine has no key for.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotExtra {
    /// Cap on the idle slots `scale_factor` asks for; 0 = none.
    pub scale_factor_limit: u32,
    /// Request a job only when a free slot can take it (`preemptive_mode`).
    pub preemptive: bool,
}

impl SlotPolicy {
    /// Slots a new machine brings: `slots`, or fewer if `max_use_count` is lower.
    pub fn machine_slots(&self) -> u32 {
        let slots = self.slots.max(1);
        match self.pool.max_builds {
            0 => slots,
            n => slots.min(n),
        }
    }

    /// The extra values in force with the period of index `period` (none: outside every period).
    pub fn extra(&self, period: Option<usize>) -> SlotExtra {
        period
            .and_then(|i| self.extras.get(i).copied())
            .unwrap_or(self.base_extra)
    }

    /// GitLab's idle capacity in slots with `in_use` slots in use: `idle_count`, or with a
    /// `scale_factor` `max(idle_count, floor(in_use × scale_factor))`, the factor's term capped by
    /// `scale_factor_limit` when it is set.
    pub fn idle_slots(values: &PolicyValues, extra: SlotExtra, in_use: u32) -> u32 {
        if values.idle_scale_factor <= 0.0 {
            return values.idle_count;
        }
        let scaled = (f64::from(in_use) * values.idle_scale_factor).floor();
        let mut scaled = if scaled >= f64::from(u32::MAX) {
            u32::MAX
        } else {
            scaled as u32
        };
        if extra.scale_factor_limit > 0 {
            scaled = scaled.min(extra.scale_factor_limit);
        }
        values.idle_count.max(scaled)
    }
}

/// `[runners.machine]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MachinePolicy {
    /// `IdleCount`, `IdleCountMin`, `IdleScaleFactor`, `IdleTime` outside every period.
    pub base: PolicyValues,
    /// Jobs per machine before it is removed; 0 = unlimited (`MaxBuilds`).
    pub max_builds: u32,
    /// Machines creating at once; 0 = unlimited (`MaxGrowthRate`).
    pub max_growth_rate: u32,
    /// Removal attempts before a machine is given up and reported (`MaxRemovalAttempts`).
    pub max_removal_attempts: u32,
    /// `MachineName`, containing `%s`.
    pub machine_name: String,
    /// `[[runners.machine.autoscaling]]` blocks; the last matching one wins.
    pub periods: Vec<Period>,
}

impl MachinePolicy {
    /// GitLab's defaults with the given idle count.
    pub fn with_idle_count(idle_count: u32) -> MachinePolicy {
        MachinePolicy {
            base: PolicyValues {
                idle_count,
                ..PolicyValues::default()
            },
            max_builds: 0,
            max_growth_rate: 0,
            max_removal_attempts: 30,
            machine_name: "auto-%s".to_string(),
            periods: Vec::new(),
        }
    }
}

/// A semantic error in a [`Config`] built outside the TOML layer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("concurrent must be at least 1")]
    ZeroConcurrent,
    #[error("runner names must be unique: {0:?} appears twice")]
    DuplicateRunner(String),
    #[error("runner {0:?}: MachineName must contain %s")]
    MachineNameWithoutPlaceholder(String),
    #[error("too many runners (at most {max})", max = u16::MAX)]
    TooManyRunners,
}

impl Config {
    /// A config with GitLab's defaults and no runners.
    pub fn new(concurrent: u32) -> Config {
        Config {
            concurrent,
            check_interval: Duration::from_secs(3),
            shutdown_timeout: Duration::from_secs(30),
            drain_machines_on_shutdown: false,
            reconcile_interval: Some(Duration::from_secs(300)),
            seed: 0,
            runners: Vec::new(),
        }
    }

    pub fn with_runner(mut self, runner: RunnerConfig) -> Config {
        self.runners.push(runner);
        self
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.concurrent == 0 {
            return Err(ConfigError::ZeroConcurrent);
        }
        if self.runners.len() > usize::from(u16::MAX) {
            return Err(ConfigError::TooManyRunners);
        }
        let mut names = std::collections::BTreeSet::new();
        for r in &self.runners {
            if !names.insert(r.name.as_str()) {
                return Err(ConfigError::DuplicateRunner(r.name.clone()));
            }
            if let Some(p) = r.policy()
                && !p.machine_name.contains("%s")
            {
                return Err(ConfigError::MachineNameWithoutPlaceholder(r.name.clone()));
            }
        }
        Ok(())
    }
}

impl RunnerConfig {
    /// A `docker+machine` runner with GitLab's defaults and the given idle count and limit.
    pub fn pool(name: &str, idle_count: u32, limit: u32) -> RunnerConfig {
        RunnerConfig {
            name: name.to_string(),
            short_token: short_token("", name),
            limit,
            request_concurrency: 1,
            executor: Executor::Pool(MachinePolicy::with_idle_count(idle_count)),
        }
    }

    /// A `docker-autoscaler` runner with GitLab's defaults: `slots` jobs per machine, `idle_count`
    /// idle slots, `limit` jobs and `max_machines` machines.
    pub fn slots(
        name: &str,
        slots: u32,
        idle_count: u32,
        limit: u32,
        max_machines: u32,
    ) -> RunnerConfig {
        RunnerConfig {
            executor: Executor::Slots(SlotPolicy {
                slots,
                max_machines,
                pool: MachinePolicy::with_idle_count(idle_count),
                base_extra: SlotExtra {
                    scale_factor_limit: 0,
                    preemptive: idle_count > 0,
                },
                extras: Vec::new(),
            }),
            ..RunnerConfig::pool(name, idle_count, limit)
        }
    }

    /// The machine policy of a runner with machines (for `docker-autoscaler`, in job slots).
    pub fn policy(&self) -> Option<&MachinePolicy> {
        match &self.executor {
            Executor::Pool(p) => Some(p),
            Executor::Slots(s) => Some(&s.pool),
            Executor::Direct => None,
        }
    }

    pub fn policy_mut(&mut self) -> Option<&mut MachinePolicy> {
        match &mut self.executor {
            Executor::Pool(p) => Some(p),
            Executor::Slots(s) => Some(&mut s.pool),
            Executor::Direct => None,
        }
    }

    /// The slot policy of a `docker-autoscaler` runner.
    pub fn slot_policy(&self) -> Option<&SlotPolicy> {
        match &self.executor {
            Executor::Slots(s) => Some(s),
            _ => None,
        }
    }

    /// Jobs one machine of this runner runs at once, and the most a machine ever runs
    /// (0 = unlimited): 1 and `MaxBuilds` for docker+machine.
    pub fn machine_capacity(&self) -> (u32, u32) {
        match &self.executor {
            Executor::Pool(p) => (1, p.max_builds),
            Executor::Slots(s) => (s.slots.max(1), s.pool.max_builds),
            Executor::Direct => (1, 0),
        }
    }

    /// The prefix of every machine name of this runner: `runner-<key>-`.
    pub fn machine_prefix(&self) -> String {
        format!("runner-{}-", self.short_token)
    }

    /// Whether this runner, as configured now, would name a machine `name`: the `runner-<key>-`
    /// prefix, then `MachineName` with something non-empty for `%s`. GitLab Runner adopts exactly
    /// the names its filter (`runner-<short token>-` + `MachineName`) matches, so another manager of
    /// the same runner with another `MachineName` keeps its machines. A runner without a pool owns
    /// no machine names.
    pub fn owns_machine(&self, name: &str) -> bool {
        let Some(policy) = self.policy() else {
            return false;
        };
        let Some(rest) = name.strip_prefix(self.machine_prefix().as_str()) else {
            return false;
        };
        let (before, after) = policy
            .machine_name
            .split_once("%s")
            .unwrap_or((policy.machine_name.as_str(), ""));
        rest.len() > before.len() + after.len() && rest.starts_with(before) && rest.ends_with(after)
    }
}

/// A runner's key in machine names and job-container labels: 9 hex digits of a hash of the
/// installation's system id (the `.runner_system_id` beside `config.toml`), the runner's GitLab URL
/// and its name (`#<n>` for the n-th runner without a name). Unlike the short token GitLab Runner
/// names machines by, it survives a token rotation (`reset_token`, token expiry) and
/// re-registering, so a restarted drover still knows its machines; the system id keeps apart two
/// installations, or two managers of one runner (GitLab's runner-manager model), that share a
/// Docker engine or a cloud account with the same runner name and URL.
pub fn machine_key(system_id: &str, url: &str, name: &str) -> String {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(system_id.as_bytes());
    hasher.update(b"\n");
    hasher.update(url.trim_end_matches('/').as_bytes());
    hasher.update(b"\n");
    hasher.update(name.as_bytes());
    format!("{:016x}", hasher.digest())[..9].to_string()
}

/// The keys earlier drovers gave this runner, newest first and without repeats: the hash of URL
/// and name alone (drover 0.2 to 0.x), then GitLab's short token (drover 0.1, as GitLab Runner).
/// Job containers started before an upgrade carry one of them as their label; machines named under
/// them are recognised through the core's records, not by these keys: another installation may
/// use the same ones, so nothing unknown under them is ever removed.
pub fn earlier_keys(url: &str, name: &str, token: &str) -> Vec<String> {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(url.trim_end_matches('/').as_bytes());
    hasher.update(b"\n");
    hasher.update(name.as_bytes());
    let url_and_name = format!("{:016x}", hasher.digest())[..9].to_string();
    let token = short_token(token, name);
    let mut keys = vec![url_and_name];
    if !keys.contains(&token) {
        keys.push(token);
    }
    keys
}

/// The `runner-<key>-` prefix of a machine name made by [`RunnerConfig::machine_prefix`], whatever
/// the key was when it was made.
pub fn prefix_of(machine_name: &str) -> Option<&str> {
    let rest = machine_name.strip_prefix("runner-")?;
    let end = rest.find('-')?;
    Some(&machine_name[.."runner-".len() + end + 1])
}

/// GitLab's short token: the token without its `glrt-`/`glrtr-` prefix and `t<n>_` partition prefix,
/// first 9 characters, lowercased to what a host name allows. Falls back to the runner name for a
/// runner that has no token yet (simulations, `check-config` before registering).
pub fn short_token(token: &str, fallback: &str) -> String {
    let mut t = token;
    for prefix in ["glrtr-", "glrt-"] {
        if let Some(rest) = t.strip_prefix(prefix) {
            t = rest;
            break;
        }
    }
    if let Some((part, rest)) = t.split_once('_')
        && part.len() >= 2
        && part.starts_with('t')
        && part[1..].bytes().all(|b| b.is_ascii_digit())
    {
        t = rest;
    }
    let source = if t.is_empty() { fallback } else { t };
    let cleaned: String = source
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .take(9)
        .collect();
    if cleaned.is_empty() {
        "local".to_string()
    } else {
        cleaned
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_tokens_as_gitlab_writes_them() {
        assert_eq!(short_token("glrt-t1_6sYkQxW9bN3pLmZr7cVd", ""), "6sykqxw9b");
        assert_eq!(short_token("glrt-EXAMPLEEXAMPLEEXAMPLE", ""), "exampleex");
        assert_eq!(short_token("", "autoscale-linux"), "autoscale");
        assert_eq!(short_token("", ""), "local");
    }

    #[test]
    fn machine_keys_depend_on_installation_url_and_name_only() {
        let k = machine_key("r_AAAAAAAAAAAA", "https://gitlab.example.com", "linux");
        assert_eq!(k.len(), 9);
        assert!(k.bytes().all(|b| b.is_ascii_hexdigit()));
        assert_eq!(
            k,
            machine_key("r_AAAAAAAAAAAA", "https://gitlab.example.com/", "linux")
        );
        assert_ne!(
            k,
            machine_key("r_AAAAAAAAAAAA", "https://gitlab.example.com", "linux2")
        );
        assert_ne!(
            k,
            machine_key("r_AAAAAAAAAAAA", "https://other.example.com", "linux")
        );
        assert_ne!(
            k,
            machine_key("r_BBBBBBBBBBBB", "https://gitlab.example.com", "linux"),
            "two installations of one runner keep apart"
        );
    }

    #[test]
    fn earlier_keys_are_the_url_and_name_key_then_the_short_token() {
        let url = "https://gitlab.example.com";
        let keys = earlier_keys(url, "linux", "glrt-t1_6sYkQxW9bN3pLmZr7cVd");
        assert_eq!(keys.len(), 2);
        assert_eq!(keys[1], "6sykqxw9b");
        assert_eq!(keys[0], earlier_keys(url, "linux", "glrt-other")[0]);
        assert_ne!(keys[0], earlier_keys(url, "linux2", "")[0]);
        assert!(!keys.contains(&machine_key("r_AAAAAAAAAAAA", url, "linux")));
    }

    #[test]
    fn a_runner_owns_only_names_its_machine_name_pattern_makes() {
        let mut r = RunnerConfig::pool("a", 1, 1);
        r.short_token = "k1".into();
        r.policy_mut().unwrap().machine_name = "ci-%s-vm".into();
        assert!(r.owns_machine("runner-k1-ci-1767571200-89025cc1-vm"));
        assert!(
            !r.owns_machine("runner-k1-ci--vm"),
            "%s stands for something"
        );
        assert!(!r.owns_machine("runner-k1-other-1767571200-89025cc1"));
        assert!(!r.owns_machine("runner-k1-ci-1767571200-89025cc1"));
        assert!(!r.owns_machine("runner-k2-ci-1767571200-89025cc1-vm"));
        let name = crate::machine_name(&r, 7, crate::MachineId(3), crate::Timestamp(5_000));
        assert!(r.owns_machine(&name), "{name}");
        let mut direct = r.clone();
        direct.executor = Executor::Direct;
        assert!(!direct.owns_machine(&name));
    }

    #[test]
    fn prefixes_of_machine_names() {
        assert_eq!(
            prefix_of("runner-6sykqxw9b-auto-1767571200-89025cc1"),
            Some("runner-6sykqxw9b-")
        );
        assert_eq!(prefix_of("runner-abc"), None);
        assert_eq!(prefix_of("vm-1"), None);
    }

    #[test]
    fn validation() {
        assert_eq!(Config::new(0).validate(), Err(ConfigError::ZeroConcurrent));
        let dup = Config::new(1)
            .with_runner(RunnerConfig::pool("a", 1, 1))
            .with_runner(RunnerConfig::pool("a", 1, 1));
        assert_eq!(
            dup.validate(),
            Err(ConfigError::DuplicateRunner("a".into()))
        );
        let mut r = RunnerConfig::pool("b", 1, 1);
        r.policy_mut().unwrap().machine_name = "fixed".into();
        assert_eq!(
            Config::new(1).with_runner(r).validate(),
            Err(ConfigError::MachineNameWithoutPlaceholder("b".into()))
        );
    }
}
