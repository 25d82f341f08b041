//! The hash of one machine or job record, as the digest sums it: xxh3 of bincode's standard
//! encoding of `(id, record)`, written field by field into a reused buffer.
//!
//! The daemon settles (hashes) every record an event changed, after every event, so this runs a
//! few times per event. Going through serde costs several times the hash itself; writing the same
//! bytes directly does not. The bytes must stay exactly bincode's: journals hold digests of them.
//! `encodes_like_bincode` checks every variant against the serde encoding, so a field added to a
//! record without adding it here fails the tests.

use crate::command::RemoveReason;
use crate::ids::{JobId, MachineId};
use crate::index::RecordHash;
use crate::state::{Job, JobState, Machine, MachineState};

/// Bincode's standard encoding (little-endian, variable-length integers).
struct Enc<'a>(&'a mut Vec<u8>);

impl<'a> Enc<'a> {
    fn new(buf: &'a mut Vec<u8>) -> Enc<'a> {
        buf.clear();
        Enc(buf)
    }

    #[inline(always)]
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b);
    }

    /// An unsigned integer of any width: below 251 one byte, else a marker byte (251, 252, 253
    /// for 2, 4, 8 bytes) and the value little-endian in the narrowest of those that holds it.
    #[inline(always)]
    fn uint(&mut self, v: u64) {
        if v < 251 {
            self.0.push(v as u8);
        } else if v <= u64::from(u16::MAX) {
            self.0.push(251);
            self.bytes(&(v as u16).to_le_bytes());
        } else if v <= u64::from(u32::MAX) {
            self.0.push(252);
            self.bytes(&(v as u32).to_le_bytes());
        } else {
            self.0.push(253);
            self.bytes(&v.to_le_bytes());
        }
    }

    #[inline(always)]
    fn bool(&mut self, b: bool) {
        self.0.push(u8::from(b));
    }

    #[inline(always)]
    fn option(&mut self, v: Option<u64>) {
        match v {
            None => self.0.push(0),
            Some(v) => {
                self.0.push(1);
                self.uint(v);
            }
        }
    }

    #[inline(always)]
    fn str(&mut self, s: &str) {
        self.uint(s.len() as u64);
        self.bytes(s.as_bytes());
    }

    fn hash(&self) -> u64 {
        xxhash_rust::xxh3::xxh3_64(self.0)
    }
}

/// A variant's index, as serde numbers it (declaration order).
fn remove_reason_index(r: RemoveReason) -> u64 {
    match r {
        RemoveReason::TooManyBuilds => 0,
        RemoveReason::TooManyMachines => 1,
        RemoveReason::TooManyIdle => 2,
        RemoveReason::CreationFailed => 3,
        RemoveReason::Lost => 4,
        RemoveReason::Orphan => 5,
        RemoveReason::RunnerRemoved => 6,
        RemoveReason::Shutdown => 7,
        RemoveReason::ConfigChanged => 8,
    }
}

impl RecordHash<MachineId> for Machine {
    fn record_hash(&self, key: &MachineId, scratch: &mut Vec<u8>) -> u64 {
        let mut e = Enc::new(scratch);
        e.uint(key.0);
        e.uint(u64::from(self.runner.0));
        e.str(&self.name);
        match self.state {
            MachineState::Creating => e.uint(0),
            MachineState::Idle => e.uint(1),
            MachineState::Busy(job) => {
                e.uint(2);
                e.uint(job.0);
            }
            MachineState::Removing => e.uint(3),
            MachineState::Shared(k) => {
                e.uint(4);
                e.uint(u64::from(k));
            }
        }
        e.uint(u64::from(self.used_count));
        e.uint(self.created_at.0);
        e.uint(self.last_used.0);
        e.uint(self.changed_seq);
        e.uint(u64::from(self.removal_attempts));
        e.option(self.remove_reason.map(remove_reason_index));
        e.option(self.retry_at.map(|t| t.0));
        e.hash()
    }
}

impl RecordHash<JobId> for Job {
    fn record_hash(&self, key: &JobId, scratch: &mut Vec<u8>) -> u64 {
        let mut e = Enc::new(scratch);
        e.uint(key.0);
        e.uint(u64::from(self.runner.0));
        e.uint(self.info.timeout_ms);
        e.uint(self.info.queued_ms);
        e.uint(self.received_at.0);
        e.uint(self.enqueued);
        match self.state {
            JobState::Queued { deadline } => {
                e.uint(0);
                e.uint(deadline.0);
            }
            JobState::Running {
                machine,
                started_at,
            } => {
                e.uint(1);
                e.option(machine.map(|m| m.0));
                e.uint(started_at.0);
            }
        }
        e.bool(self.cancel_requested);
        e.bool(self.aborted);
        e.hash()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::JobInfo;
    use crate::ids::RunnerId;
    use crate::time::Timestamp;
    use proptest::prelude::*;

    const REASONS: [RemoveReason; 9] = [
        RemoveReason::TooManyBuilds,
        RemoveReason::TooManyMachines,
        RemoveReason::TooManyIdle,
        RemoveReason::CreationFailed,
        RemoveReason::Lost,
        RemoveReason::Orphan,
        RemoveReason::RunnerRemoved,
        RemoveReason::Shutdown,
        RemoveReason::ConfigChanged,
    ];

    /// Integers around every width boundary of the variable-length encoding.
    fn int() -> impl Strategy<Value = u64> {
        prop_oneof![
            0u64..300,
            Just(250u64),
            Just(251u64),
            65_530u64..65_540,
            Just(u64::from(u32::MAX)),
            Just(u64::from(u32::MAX) + 1),
            any::<u64>(),
        ]
    }

    fn machine() -> impl Strategy<Value = (u64, Machine)> {
        (
            (
                int(),
                any::<u16>(),
                "[a-z0-9.-]{0,300}",
                0usize..5,
                int(),
                int(),
            ),
            (int(), int(), int(), int(), int()),
            (proptest::option::of(0usize..9), proptest::option::of(int())),
        )
            .prop_map(
                |(
                    (id, runner, name, state, job, used),
                    (c, l, seq, attempts, k),
                    (reason, retry),
                )| {
                    let state = match state {
                        0 => MachineState::Creating,
                        1 => MachineState::Idle,
                        2 => MachineState::Busy(JobId(job)),
                        3 => MachineState::Removing,
                        _ => MachineState::Shared(k as u32),
                    };
                    let m = Machine {
                        runner: RunnerId(runner),
                        name,
                        state,
                        used_count: used as u32,
                        created_at: Timestamp(c),
                        last_used: Timestamp(l),
                        changed_seq: seq,
                        removal_attempts: attempts as u32,
                        remove_reason: reason.map(|i| REASONS[i]),
                        retry_at: retry.map(Timestamp),
                    };
                    (id, m)
                },
            )
    }

    fn job() -> impl Strategy<Value = (u64, Job)> {
        (
            (int(), any::<u16>(), int(), int(), int(), int()),
            (any::<bool>(), proptest::option::of(int()), int()),
            (any::<bool>(), any::<bool>()),
        )
            .prop_map(
                |((id, runner, timeout, queued, received, enqueued), (running, m, t), (c, a))| {
                    let state = if running {
                        JobState::Running {
                            machine: m.map(MachineId),
                            started_at: Timestamp(t),
                        }
                    } else {
                        JobState::Queued {
                            deadline: Timestamp(t),
                        }
                    };
                    let j = Job {
                        runner: RunnerId(runner),
                        info: JobInfo {
                            timeout_ms: timeout,
                            queued_ms: queued,
                        },
                        received_at: Timestamp(received),
                        enqueued,
                        state,
                        cancel_requested: c,
                        aborted: a,
                    };
                    (id, j)
                },
            )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn encodes_like_bincode((id, m) in machine(), (jid, j) in job()) {
            let mut scratch = Vec::new();
            prop_assert_eq!(m.record_hash(&MachineId(id), &mut scratch), crate::hash::hash_of(&(MachineId(id), &m)));
            prop_assert_eq!(j.record_hash(&JobId(jid), &mut scratch), crate::hash::hash_of(&(JobId(jid), &j)));
        }
    }
}
