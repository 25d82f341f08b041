//! A `docker-autoscaler` runner as the core schedules it: [`core_runner`] maps
//! `[runners.autoscaler]` onto a slot runner ([`drover_core::SlotPolicy`]), keeping GitLab
//! Runner's semantics: `capacity_per_instance` slots per machine, `max_use_count` jobs per
//! machine, `max_instances` machines, `limit` jobs, and the `[[…policy]]` blocks (in job slots;
//! the last matching one wins) as the core's periods.

use drover_core::config::machine_key;
use drover_core::period::{Period, PeriodError, PolicyValues};
use drover_core::{Executor, MachinePolicy, RunnerConfig, SlotExtra, SlotPolicy};

use super::settings::{AutoscalerPolicy, AutoscalerSettings};

/// The `MachineName` of autoscaler machines: the core names every machine
/// `runner-<key>-<MachineName>`; the provider tags each instance with its name.
pub const MACHINE_NAME: &str = "asg-%s";

/// Removal attempts before an instance is given up and reported (as docker+machine's default
/// `MaxRemovalAttempts`; GitLab retries every `deletion_retry_interval`).
const MAX_REMOVAL_ATTEMPTS: u32 = 30;

/// The core's runner for a `docker-autoscaler` runner. `key_name` is what its machine key is made
/// of besides the installation's system id and URL (its name, or `#<n>`), as for docker+machine.
#[allow(clippy::too_many_arguments)]
pub fn core_runner(
    name: &str,
    key_name: &str,
    system_id: &str,
    url: Option<&str>,
    limit: u32,
    request_concurrency: u32,
    a: &AutoscalerSettings,
) -> Result<RunnerConfig, PeriodError> {
    Ok(RunnerConfig {
        name: name.to_string(),
        short_token: machine_key(system_id, url.unwrap_or(""), key_name),
        limit,
        request_concurrency: request_concurrency.max(1),
        executor: Executor::Slots(slot_policy(a)?),
    })
}

/// `[runners.autoscaler]` as the core's slot policy. Outside every policy block (GitLab Runner's
/// zero policy): no idle slots, jobs requested on demand.
pub fn slot_policy(a: &AutoscalerSettings) -> Result<SlotPolicy, PeriodError> {
    let periods = a
        .policies
        .iter()
        .map(period)
        .collect::<Result<Vec<_>, _>>()?;
    let extras = a
        .policies
        .iter()
        .map(|p| SlotExtra {
            scale_factor_limit: p.scale_factor_limit,
            preemptive: p.preemptive_mode,
        })
        .collect();
    Ok(SlotPolicy {
        slots: a.capacity_per_instance.max(1),
        max_machines: a.max_instances,
        pool: MachinePolicy {
            base: PolicyValues::default(),
            max_builds: a.max_use_count,
            // taskscaler throttles creations per second (`scale_throttle`), not how many are
            // under way: the provider paces its requests.
            max_growth_rate: 0,
            max_removal_attempts: MAX_REMOVAL_ATTEMPTS,
            machine_name: MACHINE_NAME.to_string(),
            periods,
        },
        base_extra: SlotExtra::default(),
        extras,
    })
}

/// One policy block as a core period. Policy periods are 5-field unix cron, active for every
/// second of each minute they match; the core reads 5 fields as cronexpr does (second 0 only), so
/// each expression gets an explicit `*` seconds field and year.
fn period(p: &AutoscalerPolicy) -> Result<Period, PeriodError> {
    let exprs: Vec<String> = p
        .periods
        .iter()
        .map(|e| format!("* {} *", e.trim()))
        .collect();
    let values = PolicyValues {
        idle_count: p.idle_count,
        idle_count_min: 0,
        idle_scale_factor: p.scale_factor,
        idle_time_ms: u64::try_from(p.idle_time.as_millis()).unwrap_or(u64::MAX),
    };
    Period::new(&exprs, &p.timezone, values)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use drover_core::period::active_period;
    use drover_core::{Executor, SlotExtra, Timestamp};

    use crate::config::{Loaded, LocalZone, parse_with_zone};

    const AWS: &str = include_str!("../../../fixtures/config/good/docker-autoscaler-aws.toml");

    fn load(text: &str) -> Loaded {
        let zone = LocalZone::Named("Europe/Berlin".into());
        match parse_with_zone(text, Path::new("test.toml"), &zone) {
            Ok(loaded) => loaded,
            Err(e) => panic!("expected a valid config:\n{e}"),
        }
    }

    #[test]
    fn the_operator_fixture_maps_to_a_slot_runner() {
        let l = load(AWS);
        let a = &l.autoscalers[0];
        let core = &a.core;
        assert_eq!(core.name, a.name);
        assert_eq!((core.limit, core.request_concurrency), (20, 1));
        let Executor::Slots(sp) = &core.executor else {
            panic!("a slot runner: {:?}", core.executor);
        };
        assert_eq!((sp.slots, sp.max_machines), (2, 10));
        assert_eq!(sp.pool.max_builds, 20, "max_use_count");
        assert_eq!(sp.machine_slots(), 2);
        // Outside every policy: GitLab's zero policy.
        assert_eq!(sp.pool.base.idle_count, 0);
        assert_eq!(sp.base_extra, SlotExtra::default());
        // Both policies, in file order, in job slots.
        let p = &sp.pool.periods;
        assert_eq!(p.len(), 2);
        assert_eq!(
            (p[0].values.idle_count, p[0].values.idle_time_ms),
            (5, 1_200_000)
        );
        assert_eq!(
            (p[1].values.idle_count, p[1].values.idle_scale_factor),
            (10, 0.5)
        );
        assert_eq!(
            sp.extras,
            vec![
                SlotExtra {
                    scale_factor_limit: 0,
                    preemptive: true
                },
                SlotExtra {
                    scale_factor_limit: 8,
                    preemptive: true
                },
            ]
        );
        // The machine key is made as docker+machine's: installation, URL and name.
        assert_eq!(core.short_token.len(), 9);
        // Last match wins, every second of a matching minute: Monday 2026-01-05 10:00:30 in
        // Berlin (09:00:30 UTC) is office hours; 20:00:30 is not.
        let office = Timestamp(1_767_603_630_000);
        assert_eq!(active_period(p, office), Some(1));
        assert_eq!(
            active_period(p, Timestamp(office.0 + 10 * 3_600_000)),
            Some(0)
        );
    }

    #[test]
    fn defaults_are_gitlabs() {
        let l = load(
            "concurrent = 2\n[[runners]]\nname = \"asg\"\nexecutor = \"docker-autoscaler\"\n\
             [runners.autoscaler]\nplugin = \"aws\"\n\
             [runners.autoscaler.plugin_config]\nname = \"ci-asg\"\n",
        );
        let Executor::Slots(sp) = &l.autoscalers[0].core.executor else {
            panic!("a slot runner");
        };
        // One job per instance, no cap on instances or uses, no idle slots, on demand.
        assert_eq!((sp.slots, sp.max_machines, sp.pool.max_builds), (1, 0, 0));
        assert_eq!(sp.pool.periods.len(), 1);
        assert_eq!(sp.pool.periods[0].values.idle_count, 0);
        assert!(!sp.extra(Some(0)).preemptive);
        assert_eq!(l.scheduled_with_autoscalers().runners.len(), 1);
    }
}
