//! How long a running step rides out an engine that gives no answer at all (an instance's SSH
//! server restarting, a network blip) before its job fails for the system: one rule for both ways
//! of running a step, a container per step (`step.rs`) and `exec` in a warm container
//! (`exec_step.rs`). The step itself runs on meanwhile; only drover's view of it is cut.

use std::time::Duration;

use tokio::time::Instant;

/// How long the engine may stay silent.
pub(crate) const UNREACHABLE_PATIENCE: Duration = Duration::from_secs(15);

/// A running step's count of its engine's silence.
#[derive(Debug, Default)]
pub(crate) struct Patience {
    silent_since: Option<Instant>,
}

impl Patience {
    /// The engine answered.
    pub(crate) fn answered(&mut self) {
        self.silent_since = None;
    }

    /// Whether to try again after `err`: it is no answer at all (an error status is an answer,
    /// and final), and the engine has been silent for less than [`UNREACHABLE_PATIENCE`].
    pub(crate) fn bears(&mut self, err: &bollard::errors::Error) -> bool {
        if matches!(
            err,
            bollard::errors::Error::DockerResponseServerError { .. }
        ) {
            self.answered();
            return false;
        }
        self.silent_since.get_or_insert_with(Instant::now).elapsed() < UNREACHABLE_PATIENCE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn silence_is_borne_for_a_while_and_an_error_status_never() {
        let mut p = Patience::default();
        let silent = bollard::errors::Error::RequestTimeoutError;
        assert!(p.bears(&silent));
        tokio::time::advance(UNREACHABLE_PATIENCE - Duration::from_millis(1)).await;
        assert!(p.bears(&silent), "still within the patience");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(!p.bears(&silent), "silent too long");
        p.answered();
        assert!(p.bears(&silent), "an answer starts the count again");
        let status = bollard::errors::Error::DockerResponseServerError {
            status_code: 500,
            message: "boom".into(),
        };
        assert!(!p.bears(&status));
    }
}
