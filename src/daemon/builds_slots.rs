//! Builds volumes on cloud instances (`docker-autoscaler`), which run up to
//! `capacity_per_instance` jobs at once. Two jobs on one instance must not share a working copy,
//! and a later job should find one to fetch into (`GIT_STRATEGY=fetch`), as GitLab Runner keeps a
//! builds directory per concurrent slot: each job takes the lowest slot free on its instance and
//! builds in that slot's volume, `<machine>-builds-<slot>`. The volumes go with the instance.
//!
//! The slot is kept in the job's folder of the state directory until the folder goes (the job's
//! end is journaled and reported), so a job re-attached after a restart builds in the same
//! volume, and a job started after the restart does not take a slot a resumed job still holds.
//! It is never given back when the job's task is dropped: drover exiting (even cleanly) with the
//! job still running must not free a slot whose volume the job's containers still use.

use std::sync::Mutex;

use drover_docker::MachineEndpoint;

use super::state_dir::StateDir;

/// The file in a job's folder: `<machine>\n<slot>`.
const SLOT_FILE: &str = "builds-slot";

/// Taking a slot (read the others' files, write one's own) is one step across the process.
static TAKING: Mutex<()> = Mutex::new(());

/// A job's slot on its machine: held while the job's folder exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BuildsSlot {
    pub index: u32,
}

/// Gives a job on a cloud instance the builds volume of its slot there: the slot it held before
/// a restart, else the lowest one free on the instance. An endpoint without a machine is left as
/// it is (its jobs get volumes of their own).
pub fn take(endpoint: &mut MachineEndpoint, state_dir: &StateDir, job: u64) -> Option<BuildsSlot> {
    let machine = endpoint.machine.clone()?;
    let volume = endpoint
        .builds_volume
        .clone()
        .unwrap_or_else(|| format!("{machine}-builds"));
    let _taking = TAKING.lock().unwrap_or_else(|e| e.into_inner());
    let index = match held(state_dir, job) {
        Some((on, index)) if on == machine => index,
        _ => {
            let taken: Vec<u32> = state_dir
                .jobs()
                .into_iter()
                .filter(|other| *other != job)
                .filter_map(|other| held(state_dir, other))
                .filter(|(on, _)| *on == machine)
                .map(|(_, index)| index)
                .collect();
            let index = (0..).find(|i| !taken.contains(i)).unwrap_or(0);
            let path = state_dir.job_file(job, SLOT_FILE);
            if let Err(e) =
                crate::files::write_private(&path, format!("{machine}\n{index}").as_bytes())
            {
                // Unrecorded, the slot could be handed out again: build in a volume no other
                // job can be given instead (without a later job's working copy to fetch into).
                tracing::warn!(job, "keeping the job's builds slot failed: {e:#}");
                endpoint.builds_volume = Some(format!("{volume}-job-{job}"));
                return None;
            }
            index
        }
    };
    endpoint.builds_volume = Some(format!("{volume}-{index}"));
    Some(BuildsSlot { index })
}

/// The machine and slot a job holds, from its folder.
fn held(state_dir: &StateDir, job: u64) -> Option<(String, u32)> {
    let text = std::fs::read_to_string(state_dir.job_file(job, SLOT_FILE)).ok()?;
    let (machine, index) = text.split_once('\n')?;
    Some((machine.to_string(), index.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_docker::EngineConfig;

    fn on(machine: &str) -> MachineEndpoint {
        MachineEndpoint {
            machine: Some(machine.into()),
            engine: EngineConfig::default(),
            network: None,
            builds_volume: None,
        }
    }

    fn job_dir(state: &StateDir, job: u64) {
        std::fs::create_dir_all(state.job_file(job, "x").parent().unwrap()).unwrap();
    }

    #[test]
    fn concurrent_jobs_on_one_instance_get_volumes_of_their_own() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        for job in 1..=4 {
            job_dir(&state, job);
        }
        let (mut a, mut b, mut c) = (on("m1"), on("m1"), on("m2"));
        take(&mut a, &state, 1).unwrap();
        let sb = take(&mut b, &state, 2).unwrap();
        let _sc = take(&mut c, &state, 3).unwrap();
        assert_eq!(a.builds_volume.as_deref(), Some("m1-builds-0"));
        assert_eq!(b.builds_volume.as_deref(), Some("m1-builds-1"));
        assert_eq!(
            c.builds_volume.as_deref(),
            Some("m2-builds-0"),
            "another instance"
        );

        // A restart: job 2 re-attaches into its volume whichever job asks first.
        let mut again = on("m1");
        let kept = take(&mut again, &state, 2).unwrap();
        assert_eq!(again.builds_volume.as_deref(), Some("m1-builds-1"));
        assert_eq!(kept, sb);
        let mut busy = on("m1");
        job_dir(&state, 5);
        let _s5 = take(&mut busy, &state, 5).unwrap();
        assert_eq!(
            busy.builds_volume.as_deref(),
            Some("m1-builds-2"),
            "a dropped task gives nothing back while the job's folder is there"
        );
        state.remove_job(5);

        // Slot 0 is given back with its job's folder; the next job reuses its working copy.
        state.remove_job(1);
        let mut d = on("m1");
        let _sd = take(&mut d, &state, 4).unwrap();
        assert_eq!(d.builds_volume.as_deref(), Some("m1-builds-0"));
        state.remove_job(2);
        job_dir(&state, 1);
        let mut e = on("m1");
        let _se = take(&mut e, &state, 1).unwrap();
        assert_eq!(
            e.builds_volume.as_deref(),
            Some("m1-builds-1"),
            "slot 1 was given back"
        );
    }

    #[test]
    fn a_provider_named_volume_is_split_per_slot_and_jobs_without_a_machine_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(dir.path()).unwrap();
        job_dir(&state, 1);
        let mut named = on("m1");
        named.builds_volume = Some("vol".into());
        let _slot = take(&mut named, &state, 1).unwrap();
        assert_eq!(named.builds_volume.as_deref(), Some("vol-0"));
        let mut local = MachineEndpoint::engine_only(EngineConfig::default());
        assert!(take(&mut local, &state, 1).is_none());
        assert_eq!(local.builds_volume, None, "per-job volumes stay per job");
    }
}
