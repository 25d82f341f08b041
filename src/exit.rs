//! Named exit codes.

use std::process::ExitCode;

/// Success.
pub const OK: u8 = 0;
/// A failure not covered below.
pub const FAILURE: u8 = 1;
/// The config file is missing or invalid.
pub const CONFIG: u8 = 2;
/// A journal is corrupt, from a newer drover, or does not replay to its recorded digests.
pub const JOURNAL: u8 = 3;
/// GitLab refused or could not be reached.
pub const COORDINATOR: u8 = 4;
/// `drover status`: no daemon is running for this config.
pub const NOT_RUNNING: u8 = 5;
/// A simulation sweep found no configuration meeting the SLO.
pub const SLO_NOT_MET: u8 = 6;
/// `drover simulate` was interrupted (Ctrl-C); what finished was printed.
pub const INTERRUPTED: u8 = 130;

/// An error that knows its exit code; anything else exits with [`FAILURE`].
#[derive(Debug)]
pub struct Coded {
    pub code: u8,
    pub error: anyhow::Error,
}

impl std::fmt::Display for Coded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.error)
    }
}

impl std::error::Error for Coded {}

/// Wraps an error with an exit code.
pub fn with_code(code: u8, error: impl Into<anyhow::Error>) -> anyhow::Error {
    anyhow::Error::new(Coded {
        code,
        error: error.into(),
    })
}

pub fn code_for(err: &anyhow::Error) -> ExitCode {
    let code = err
        .chain()
        .find_map(|e| e.downcast_ref::<Coded>())
        .map_or(FAILURE, |c| c.code);
    ExitCode::from(code)
}
