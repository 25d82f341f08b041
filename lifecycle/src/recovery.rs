//! The recovery table: what a restarted drover does with a job, by the phase its record ends in.
//! Whatever the phase, the record alone decides (and, for a job that was placed, the labels of
//! the containers on its machine): nothing is run twice, nothing reported twice.

use crate::state::PhaseKind;

/// What a restart does first.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Recovery {
    /// Acknowledge it again: GitLab answers a repeated acknowledgement from the same runner as
    /// the first, and gives an unacknowledged job back to the queue.
    Accept,
    /// Keep it alive at GitLab until the core places it again.
    KeepAliveUntilPlaced,
    /// Once placed again, list its step containers: re-attach to them, or start it if none
    /// exists and no step's output was stored (its script never started).
    InspectWhenPlaced,
    /// Once placed again, remove its containers, then send the final update.
    RemoveContainersWhenPlaced,
    /// The final update may have gone through: ask GitLab before sending it again.
    CheckClosed,
    /// Reported: only the core (or the record) is left to settle.
    Settle,
    /// Given back to GitLab: tell the core again, or drop the record.
    TellDropped,
}

/// One row per phase.
pub const RECOVERY: [(PhaseKind, Recovery); 8] = [
    (PhaseKind::Received, Recovery::Accept),
    (PhaseKind::Accepted, Recovery::KeepAliveUntilPlaced),
    (PhaseKind::Preparing, Recovery::InspectWhenPlaced),
    (PhaseKind::Running, Recovery::InspectWhenPlaced),
    (PhaseKind::Ended, Recovery::RemoveContainersWhenPlaced),
    (PhaseKind::Reporting, Recovery::CheckClosed),
    (PhaseKind::Reported, Recovery::Settle),
    (PhaseKind::Dropped, Recovery::TellDropped),
];

/// The table's row for `phase`.
pub fn recovery(phase: PhaseKind) -> Recovery {
    RECOVERY
        .iter()
        .find(|(p, _)| *p == phase)
        .map(|(_, r)| *r)
        // Unreachable: the table has a row for every phase (a unit test checks it).
        .unwrap_or(Recovery::CheckClosed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_has_exactly_one_row() {
        let all = [
            PhaseKind::Received,
            PhaseKind::Accepted,
            PhaseKind::Preparing,
            PhaseKind::Running,
            PhaseKind::Ended,
            PhaseKind::Reporting,
            PhaseKind::Reported,
            PhaseKind::Dropped,
        ];
        for phase in all {
            let rows = RECOVERY.iter().filter(|(p, _)| *p == phase).count();
            assert_eq!(rows, 1, "{phase:?}");
        }
    }
}
