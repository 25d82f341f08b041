//! The core's digest, for replay checks, and its snapshots.
//!
//! Version 2 (this one) hashes the live state only: the config, the per-runner scheduling state,
//! the counters, and every machine and job record. Lazy indexes (the idle and queue deques, the
//! deadline queues, early-wake bounds) are left out: they are derived from the records, so a change
//! in how they are kept does not make an old journal read as diverging. It is incremental: machine
//! and job records carry their own hashes, summed as they change ([`crate::index::IdMap`]), and the
//! config's hash is kept until a reload, so a digest costs O(runners), not a pass over the fleet.
//!
//! Version 1 ([`Core::digest_v1`]), what journals of format 1 hold, hashed the whole serialized core;
//! it is kept so those journals still replay and verify.

use serde::Serialize;

use crate::scheduler::Core;

/// The digest [`Core::digest`] computes. A journal's format version says which one it holds.
pub const DIGEST_VERSION: u32 = 2;

/// xxh3 of a value's bincode encoding, without allocating a copy of it.
pub(crate) fn hash_of<T: Serialize + ?Sized>(value: &T) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    feed(&mut hasher, value);
    hasher.digest()
}

fn feed<T: Serialize + ?Sized>(hasher: &mut xxhash_rust::xxh3::Xxh3, value: &T) {
    // Encoding into the hasher directly never fails: the writer takes every byte.
    let _ = bincode::serde::encode_into_std_write(
        value,
        &mut HashWriter(hasher),
        bincode::config::standard(),
    );
}

impl Core {
    /// A stable hash of the live state (digest version [`DIGEST_VERSION`]), for replay checks.
    /// O(runners): machine and job records are hashed as they change.
    pub fn digest(&self) -> u64 {
        self.digest_with(self.state.machines.digest(), self.state.jobs.digest())
    }

    /// [`Core::digest`] recomputed from every record: equal to it, or the running sums are wrong.
    pub fn digest_from_scratch(&self) -> u64 {
        self.digest_with(
            self.state.machines.digest_from_scratch(),
            self.state.jobs.digest_from_scratch(),
        )
    }

    fn digest_with(&self, machines: u64, jobs: u64) -> u64 {
        let s = &self.state;
        let mut h = xxhash_rust::xxh3::Xxh3::new();
        feed(&mut h, &DIGEST_VERSION);
        feed(&mut h, &self.config_digest());
        feed(
            &mut h,
            &(
                s.now,
                s.seq,
                s.next_machine,
                s.next_list_at,
                s.shutdown,
                s.exited,
                &s.totals,
                &s.stats,
                &s.anomalies.by_kind,
            ),
        );
        for r in &s.runners {
            feed(
                &mut h,
                &(
                    r.retired,
                    &r.counts,
                    r.next_poll_at,
                    r.create_failures,
                    r.create_blocked_until,
                    r.front_failures,
                    &r.policy.values,
                    r.policy.period,
                ),
            );
        }
        feed(
            &mut h,
            &(s.machines.len() as u64, machines, s.jobs.len() as u64, jobs),
        );
        h.digest()
    }

    /// The hash of the config and of every runner's config (a retired runner keeps its own),
    /// computed once per reload.
    fn config_digest(&self) -> u64 {
        *self.config_digest.get_or_init(|| {
            let runners: Vec<_> = self.state.runners.iter().map(|r| &r.config).collect();
            hash_of(&(&self.config, runners))
        })
    }

    /// The digest of format-1 journals: xxh3 of the whole serialized core, indexes included.
    pub fn digest_v1(&self) -> u64 {
        hash_of(self)
    }
}

struct HashWriter<'a>(&'a mut xxhash_rust::xxh3::Xxh3);

impl std::io::Write for HashWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Encodes a core for a snapshot.
pub fn encode_snapshot(core: &Core) -> Result<Vec<u8>, bincode::error::EncodeError> {
    bincode::serde::encode_to_vec(core, bincode::config::standard())
}

/// Decodes a core from a snapshot.
pub fn decode_snapshot(bytes: &[u8]) -> Result<Core, bincode::error::DecodeError> {
    bincode::serde::decode_from_slice(bytes, bincode::config::standard()).map(|(core, _)| core)
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
