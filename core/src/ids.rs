//! Identifiers. Machine ids are allocated by the core; job ids are GitLab's.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A job, identified by the coordinator's job id.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct JobId(pub u64);

/// A machine, allocated by the core (a counter) before the provider is asked to create it.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct MachineId(pub u64);

/// A `[[runners]]` entry. Stable across config reloads: the core matches runners by name.
#[derive(
    Copy, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct RunnerId(pub u16);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "job {}", self.0)
    }
}

impl fmt::Display for MachineId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "machine #{}", self.0)
    }
}

impl fmt::Display for RunnerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "runner #{}", self.0)
    }
}

impl RunnerId {
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}
