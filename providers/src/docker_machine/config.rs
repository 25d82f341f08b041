//! The docker-machine provider's settings: the program, its storage, the driver and its options,
//! the commands' timeouts, and what makes them unusable on this host.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::output::mask_option;

/// The program GitLab Runner runs: `docker-machine`, looked up in `PATH`.
const DEFAULT_PROGRAM: &str = "docker-machine";

/// How long each docker-machine command may take before its process group is killed.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct DockerMachineTimeouts {
    /// `create` (GitLab Runner: 1 h). A creation cut short is reported retryable; what it left is
    /// removed by the `remove` the core sends after a failed creation.
    pub create: Duration,
    /// `stop` before `rm` (1 min); a stop that fails or times out does not stop the removal.
    pub stop: Duration,
    /// `rm` (GitLab Runner: 1 h).
    pub remove: Duration,
    /// `status` and `config` (1 min).
    pub query: Duration,
}

impl Default for DockerMachineTimeouts {
    fn default() -> DockerMachineTimeouts {
        DockerMachineTimeouts {
            create: Duration::from_secs(3600),
            stop: Duration::from_secs(60),
            remove: Duration::from_secs(3600),
            query: Duration::from_secs(60),
        }
    }
}

/// The settings of a runner's `docker-machine` provider. `{:?}` masks option values that look like
/// credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct DockerMachineConfig {
    /// The docker-machine program: a path, or a name looked up in `PATH`.
    pub program: PathBuf,
    /// docker-machine's storage directory. `None`: `MACHINE_STORAGE_PATH`, else
    /// `~/.docker/machine`, as docker-machine itself decides. drover passes the directory it uses to
    /// every command (`MACHINE_STORAGE_PATH`), so both always agree.
    pub storage_path: Option<PathBuf>,
    /// `MachineDriver`.
    pub driver: String,
    /// `MachineOptions`: `key=value` or `key`.
    pub options: Vec<String>,
    /// `MachineOptionsWithName`: options in which `%s` stands for the machine's name.
    pub options_with_name: Vec<String>,
    pub timeouts: DockerMachineTimeouts,
}

impl DockerMachineConfig {
    /// The settings for `driver` and its options, with docker-machine from `PATH`, its default
    /// storage and GitLab Runner's timeouts.
    pub fn new(
        driver: impl Into<String>,
        options: Vec<String>,
        options_with_name: Vec<String>,
    ) -> DockerMachineConfig {
        DockerMachineConfig {
            program: PathBuf::from(DEFAULT_PROGRAM),
            storage_path: None,
            driver: driver.into(),
            options,
            options_with_name,
            timeouts: DockerMachineTimeouts::default(),
        }
    }
}

impl fmt::Debug for DockerMachineConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mask = |v: &[String]| v.iter().map(|o| mask_option(o)).collect::<Vec<_>>();
        f.debug_struct("DockerMachineConfig")
            .field("program", &self.program)
            .field("storage_path", &self.storage_path)
            .field("driver", &self.driver)
            .field("options", &mask(&self.options))
            .field("options_with_name", &mask(&self.options_with_name))
            .field("timeouts", &self.timeouts)
            .finish()
    }
}

/// The provider cannot work on this host as configured.
#[derive(Debug, thiserror::Error)]
pub enum DockerMachineSetupError {
    #[error(
        "the docker-machine program {program:?} is not in PATH; install docker-machine (GitLab \
         maintains a fork) or set `DockerMachinePath` in [runners.machine] to its full path"
    )]
    NotInPath { program: String },
    #[error(
        "the docker-machine program {}: {reason}; check `DockerMachinePath` in [runners.machine]",
        path.display()
    )]
    NotExecutable { path: PathBuf, reason: String },
    #[error(
        "cannot tell where docker-machine keeps its machines: neither MACHINE_STORAGE_PATH nor HOME \
         is set; set MACHINE_STORAGE_PATH in drover's environment"
    )]
    NoStoragePath,
    #[error("`MachineDriver` is empty; name the docker-machine driver, e.g. \"amazonec2\"")]
    NoDriver,
}

/// docker-machine's storage directory when none is configured: `MACHINE_STORAGE_PATH`, else
/// `$HOME/.docker/machine` (docker-machine's own rule).
pub(super) fn default_storage_path() -> Option<PathBuf> {
    let non_empty = |name| std::env::var_os(name).filter(|v: &std::ffi::OsString| !v.is_empty());
    non_empty("MACHINE_STORAGE_PATH")
        .map(PathBuf::from)
        .or_else(|| non_empty("HOME").map(|home| Path::new(&home).join(".docker/machine")))
}

/// The program's full path: as given when it contains a `/`, else the first match in `PATH`.
pub(super) fn resolve_program(program: &Path) -> Result<PathBuf, DockerMachineSetupError> {
    let executable = |path: &Path| match std::fs::metadata(path) {
        Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(()),
        Ok(m) if m.is_file() => Err("not executable".to_string()),
        Ok(_) => Err("not a file".to_string()),
        Err(e) => Err(e.to_string()),
    };
    if program.components().count() > 1 || program.is_absolute() {
        return executable(program)
            .map(|()| program.to_path_buf())
            .map_err(|reason| DockerMachineSetupError::NotExecutable {
                path: program.to_path_buf(),
                reason,
            });
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .filter(|dir| !dir.as_os_str().is_empty())
        .map(|dir| dir.join(program))
        .find(|candidate| executable(candidate).is_ok())
        .ok_or_else(|| DockerMachineSetupError::NotInPath {
            program: program.as_os_str().to_string_lossy().into_owned(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_name_is_found_in_path() {
        let p = resolve_program(Path::new("sh")).unwrap();
        assert!(p.is_absolute() && p.ends_with("sh"), "{p:?}");
    }

    #[test]
    fn debug_masks_credentials() {
        let config = DockerMachineConfig::new(
            "digitalocean",
            vec![
                "digitalocean-access-token=s3cr3t-t0ken".into(),
                "digitalocean-region=fra1".into(),
            ],
            vec![],
        );
        let shown = format!("{config:?}");
        assert!(!shown.contains("s3cr3t-t0ken"), "{shown}");
        assert!(shown.contains("digitalocean-access-token=***"), "{shown}");
        assert!(shown.contains("digitalocean-region=fra1"), "{shown}");
    }
}
