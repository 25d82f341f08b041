//! The core's snapshots: a whole core, bincode-encoded.

use crate::scheduler::Core;

/// Encodes a core for a snapshot.
pub fn encode_snapshot(core: &Core) -> Result<Vec<u8>, bincode::error::EncodeError> {
    bincode::serde::encode_to_vec(core, bincode::config::standard())
}

/// Decodes a core from a snapshot.
pub fn decode_snapshot(bytes: &[u8]) -> Result<Core, bincode::error::DecodeError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard()).map(|(core, _)| {
        let mut core: Core = core;
        core.state.rebuild_slots();
        core
    })
}

/// Decodes a snapshot written before the state's last field, the runners' unhealthy-request runs
/// (journals of format 3 and older): they end where it begins, and an empty list is one zero
/// byte, which is all such a core would have held.
pub fn decode_snapshot_without_unhealthy_runs(
    bytes: &[u8],
) -> Result<Core, bincode::error::DecodeError> {
    let mut whole = Vec::with_capacity(bytes.len() + 1);
    whole.extend_from_slice(bytes);
    whole.push(0);
    decode_snapshot(&whole)
}

#[cfg(test)]
mod tests {
    use crate::config::{Config, RunnerConfig};
    use crate::event::Event;
    use crate::ids::MachineId;
    use crate::scheduler::Core;
    use crate::time::Timestamp;

    fn warm_core() -> Core {
        let mut core = Core::new(
            Config::new(4).with_runner(RunnerConfig::pool("r", 2, 4)),
            Timestamp(1_767_571_200_000),
        );
        let _ = core.handle(Timestamp(1_767_571_200_000), Event::Tick);
        let _ = core.handle(
            Timestamp(1_767_571_260_000),
            Event::MachineCreated {
                machine: MachineId(1),
            },
        );
        core
    }

    /// A change in a lazy index alone (a stale idle entry) leaves the digest alone; version 1 saw it.
    #[test]
    fn index_only_changes_do_not_change_the_digest() {
        let core = warm_core();
        let mut stale = core.clone();
        stale.state.runners[0]
            .idle
            .push_front((Timestamp(1), MachineId(99)));
        assert_eq!(stale.digest(), core.digest());
        assert_ne!(stale.digest_v1(), core.digest_v1());
    }

    /// Live state does change it, and the running sums match a recount after a snapshot round trip.
    #[test]
    fn live_changes_change_the_digest_and_snapshots_keep_it() {
        let core = warm_core();
        let mut other = core.clone();
        let _ = other.handle(
            Timestamp(1_767_571_270_000),
            Event::MachineCreated {
                machine: MachineId(2),
            },
        );
        assert_ne!(other.digest(), core.digest());
        assert_eq!(other.digest(), other.digest_from_scratch());
        let bytes = super::encode_snapshot(&other).unwrap();
        let decoded = super::decode_snapshot(&bytes).unwrap();
        assert_eq!(decoded.digest(), other.digest());
        assert_eq!(decoded.digest_v1(), other.digest_v1());
    }

    /// A snapshot from before the unhealthy-request runs were kept decodes as one with none.
    #[test]
    fn a_snapshot_without_the_unhealthy_runs_decodes_with_none() {
        let core = warm_core();
        let mut bytes = super::encode_snapshot(&core).unwrap();
        assert_eq!(bytes.pop(), Some(0), "an empty list ends the snapshot");
        assert!(super::decode_snapshot(&bytes).is_err());
        let decoded = super::decode_snapshot_without_unhealthy_runs(&bytes).unwrap();
        assert_eq!(decoded.digest(), core.digest());
        assert!(decoded.state.unhealthy.is_empty());
    }
}
