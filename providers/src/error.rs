//! Why a provider call failed, in the terms the scheduling core acts on.

use std::fmt;

use drover_core::CreationFailure;

/// Why a provider call failed, which decides what the core does next.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ProviderErrorKind {
    /// Worth retrying soon (engine unreachable, a timeout, a registry hiccup).
    Retryable,
    /// Out of capacity (quota, disk): back off longer.
    Quota,
    /// Will not work without an operator (bad image, a foreign object with our name).
    Fatal,
    /// The machine does not exist (from [`crate::MachineProvider::endpoint`]).
    NotFound,
}

/// A failed provider call on one machine.
#[derive(Debug, thiserror::Error)]
pub struct ProviderError {
    pub machine: String,
    pub kind: ProviderErrorKind,
    pub message: String,
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "machine {}: {}", self.machine, self.message)
    }
}

impl ProviderError {
    pub fn new(
        machine: &str,
        kind: ProviderErrorKind,
        message: impl Into<String>,
    ) -> ProviderError {
        ProviderError {
            machine: machine.to_string(),
            kind,
            message: message.into(),
        }
    }

    /// The core's view of a failed creation.
    pub fn creation_failure(&self) -> CreationFailure {
        match self.kind {
            ProviderErrorKind::Retryable | ProviderErrorKind::NotFound => {
                CreationFailure::Retryable
            }
            ProviderErrorKind::Quota => CreationFailure::Quota,
            ProviderErrorKind::Fatal => CreationFailure::Fatal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_kinds_map_to_creation_failures() {
        let e = |kind| ProviderError::new("m", kind, "x").creation_failure();
        assert_eq!(e(ProviderErrorKind::Retryable), CreationFailure::Retryable);
        assert_eq!(e(ProviderErrorKind::Quota), CreationFailure::Quota);
        assert_eq!(e(ProviderErrorKind::Fatal), CreationFailure::Fatal);
        assert_eq!(e(ProviderErrorKind::NotFound), CreationFailure::Retryable);
        assert_eq!(
            ProviderError::new("m1", ProviderErrorKind::Fatal, "bad").to_string(),
            "machine m1: bad"
        );
    }
}
