//! The core's digest, for replay checks, and its snapshots.
//!
//! Version 2 (this one) hashes the live state only: the config, the per-runner scheduling state
//! (a run of unhealthy job requests only once one has begun), the counters, and every machine and
//! job record. Lazy indexes (the idle and queue deques, the deadline queues, early-wake bounds) are
//! left out: they are derived from the records, so a change in how they are kept does not make an
//! old journal read as diverging. It is incremental: machine and job records carry their own
//! hashes, summed as they change ([`crate::index::IdMap`]), and the config's hash is kept until a
//! reload, so a digest costs O(runners), not a pass over the fleet.
//!
//! Version 1 ([`crate::Core::digest_v1`]), what journals of format 1 hold, hashed the whole serialized core;
//! it is kept so those journals still replay and verify.

use crate::hash::feed;
use crate::state::State;

/// The digest [`crate::Core::digest`] computes. A journal's format version says which one it holds.
pub const DIGEST_VERSION: u32 = 2;

/// The digest of a core's live state, given the hash of its configs and the digests of its machine
/// and job records.
pub(crate) fn state_digest(config_digest: u64, s: &State, machines: u64, jobs: u64) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    feed(&mut h, &DIGEST_VERSION);
    feed(&mut h, &config_digest);
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
    // Only runs that have begun: journals before format 4 never had one, so their digests stand.
    for (i, &n) in s.unhealthy.iter().enumerate() {
        if n > 0 {
            feed(&mut h, &(i as u64, n));
        }
    }
    feed(
        &mut h,
        &(s.machines.len() as u64, machines, s.jobs.len() as u64, jobs),
    );
    h.digest()
}
