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
}
