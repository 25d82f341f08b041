//! The `docker-machine` provider: a machine is a virtual machine made by the `docker-machine`
//! command from the runner's `MachineDriver` and `MachineOptions`, as GitLab Runner makes them, so an
//! existing `config.toml` keeps working.
//!
//! - **create**: `docker-machine create --driver <driver> --<option>… <name>`. Each option is passed
//!   as GitLab Runner passes it, `--` plus the option verbatim (`amazonec2-region=eu-west-1` →
//!   `--amazonec2-region=eu-west-1`), so boolean options written `key=true` keep working.
//!   Idempotent by name: a machine that exists and runs is adopted; one that exists but does not
//!   run (a creation that failed, a stopped VM) is removed and created afresh, because a
//!   half-made VM is cheaper to replace than to diagnose. A machine whose creation was in flight
//!   when drover died ([`interrupted`]) is never adopted: it goes to `docker-machine rm -y` first,
//!   so the driver deletes whatever VM that creation had started.
//! - **remove**: nothing to do when the storage has no such machine (what `docker-machine inspect`
//!   would read); a directory without `config.json` (no VM was ever asked for) is deleted directly,
//!   since docker-machine can neither use nor remove it; otherwise `stop` (errors ignored: the VM
//!   may be broken) then `rm -y`. A failure is returned, not retried here: the core retries with
//!   backoff.
//! - **list**: the directories of docker-machine's storage (`machines/<name>`), as GitLab Runner
//!   lists them, so half-created machines are found and removed too.
//! - **endpoint**: `docker-machine config <name>`, which also checks that the engine answers: the
//!   VM's `tcp://ip:2376` and its TLS client certificates.
//!
//! Every docker-machine process runs in a process group of its own that dies with drover
//! ([`crate::children`]): a timeout (or a dropped call) kills the group, `shutdown` ends every
//! group (`SIGTERM`, then `SIGKILL`), with the driver plugins
//! and ssh clients docker-machine started, and a Ctrl-C at drover's terminal does not cut a
//! creation short behind the core's back. With a state directory ([`DockerMachineProvider::with_state_dir`])
//! each process is recorded while it runs, and what a dead drover left running is killed when the
//! provider starts. Calls on one name are serialised (across the providers sharing a
//! [`NameLocks`]); bounding how many run at once is the core's job (`MaxGrowthRate`).

mod cli;
mod config;
#[cfg(feature = "testing")]
pub mod fake;
mod interrupted;
mod output;
mod storage;

use std::ffi::OsStr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use drover_docker::{EngineConfig, MachineEndpoint};

use crate::children::records::Records;
use crate::{MachineProvider, NameLocks, ProviderError, ProviderErrorKind};
use cli::{Cli, CliError, Finished};
pub use config::{DockerMachineConfig, DockerMachineSetupError, DockerMachineTimeouts};
use config::{default_storage_path, resolve_program};
use interrupted::Creations;
pub use output::mask_option;
use output::{Scrubber, classify, does_not_exist, parse_config};
use storage::{Storage, Stored};

/// Virtual machines through the `docker-machine` command.
pub struct DockerMachineProvider {
    config: DockerMachineConfig,
    storage: Storage,
    cli: Cli,
    locks: NameLocks,
    /// Creations in flight, marked in the state directory; `None` without one.
    creations: Option<Creations>,
}

impl DockerMachineProvider {
    /// Checks that the program can be run and the storage directory is known; runs no command.
    pub fn new(
        mut config: DockerMachineConfig,
    ) -> Result<DockerMachineProvider, DockerMachineSetupError> {
        if config.driver.trim().is_empty() {
            return Err(DockerMachineSetupError::NoDriver);
        }
        config.program = resolve_program(&config.program)?;
        let storage = match &config.storage_path {
            Some(path) => path.clone(),
            None => default_storage_path().ok_or(DockerMachineSetupError::NoStoragePath)?,
        };
        config.storage_path = Some(storage.clone());
        let scrubber = Scrubber::new(config.options.iter().chain(&config.options_with_name));
        Ok(DockerMachineProvider {
            storage: Storage::new(&storage),
            cli: Cli::new(config.program.clone(), storage, scrubber),
            config,
            locks: NameLocks::new(),
            creations: None,
        })
    }

    /// Serialises calls on a name with every provider that shares `locks` (see [`NameLocks`]).
    pub fn with_locks(mut self, locks: NameLocks) -> DockerMachineProvider {
        self.locks = locks;
        self
    }

    /// Keeps crash records in `dir` (drover's state directory for docker-machine): each running
    /// docker-machine process (`children/`) and each creation in flight (`creating/`). Kills at
    /// once what a dead drover left running there; its cut-short creations go to
    /// `docker-machine rm -y` when their names are next created or removed.
    pub fn with_state_dir(mut self, dir: &Path) -> std::io::Result<DockerMachineProvider> {
        let records = Records::open(&dir.join("children"))?;
        for record in records.sweep()? {
            tracing::warn!(
                what = %record.what,
                "a docker-machine command of an earlier drover was still recorded as running; \
                 its processes are ended"
            );
        }
        self.cli.set_records(Arc::new(records));
        self.creations = Some(Creations::open(&dir.join("creating"))?);
        Ok(self)
    }

    /// The settings in force, with the program's full path and the storage directory resolved.
    pub fn config(&self) -> &DockerMachineConfig {
        &self.config
    }

    /// The arguments of `docker-machine create` for `name`.
    fn create_args(&self, name: &str) -> Vec<String> {
        let mut args = vec![
            "create".to_string(),
            "--driver".to_string(),
            self.config.driver.clone(),
        ];
        let named = self
            .config
            .options_with_name
            .iter()
            .map(|o| o.replace("%s", name));
        for option in self.config.options.iter().cloned().chain(named) {
            // GitLab Runner prepends `--` to what the operator wrote; tolerate dashes written too.
            let option = option.trim().trim_start_matches('-');
            if !option.is_empty() {
                args.push(format!("--{option}"));
            }
        }
        args.push(name.to_string());
        args
    }

    /// Runs one docker-machine command on `name`.
    async fn run(
        &self,
        name: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<Finished, ProviderError> {
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        self.cli
            .run(name, &args, timeout)
            .await
            .map_err(|e| cli_error(name, &args[0], e))
    }

    async fn create_locked(&self, name: &str) -> Result<MachineEndpoint, ProviderError> {
        self.settle_interrupted(name).await?;
        match self.storage.stored(name).await? {
            Stored::Absent => {}
            Stored::Debris => self.storage.remove_dir(name).await?,
            Stored::Present => {
                if let Some(endpoint) = self.adopt(name).await? {
                    return Ok(endpoint);
                }
                self.remove_locked(name).await.map_err(|e| {
                    ProviderError::new(
                        name,
                        ProviderErrorKind::Retryable,
                        format!(
                            "a machine of this name exists but does not run, and removing it \
                             failed: {}",
                            e.message
                        ),
                    )
                })?;
            }
        }
        let args = self.create_args(name);
        self.mark_creation(name, true)?;
        let finished = self.cli.run(name, &args, self.config.timeouts.create).await;
        // Ended, or killed with its process group: nothing of it runs on. One ended by drover's
        // shutdown keeps its mark, so the next drover hands what it started to `rm -y`.
        if !matches!(finished, Err(CliError::ShutDown)) {
            self.mark_creation(name, false)?;
        }
        let finished = finished.map_err(|e| cli_error(name, "create", e))?;
        if !finished.success() {
            let kind = classify(&finished.all_output());
            let hint = match kind {
                ProviderErrorKind::Fatal => {
                    "; check MachineDriver and MachineOptions in [runners.machine] and the \
                     driver's credentials"
                }
                ProviderErrorKind::Quota => "; the cloud refuses more machines for now",
                _ => "",
            };
            return Err(ProviderError::new(
                name,
                kind,
                format!(
                    "docker-machine create failed ({}): {}{hint}",
                    finished.exit(),
                    finished.summary()
                ),
            ));
        }
        self.endpoint_locked(name).await.map_err(|e| {
            ProviderError::new(
                name,
                ProviderErrorKind::Retryable,
                format!("docker-machine created the machine, but {}", e.message),
            )
        })
    }

    /// Hands a machine whose creation a dead drover left in flight to `docker-machine rm -y`
    /// (whatever the storage holds: the VM may exist before its config says so), then forgets
    /// the mark. A directory docker-machine cannot remove (no `config.json`) is deleted after it
    /// tried. A failure keeps the mark: the next call on the name tries again.
    async fn settle_interrupted(&self, name: &str) -> Result<(), ProviderError> {
        let Some(creations) = &self.creations else {
            return Ok(());
        };
        if !creations.interrupted(name) {
            return Ok(());
        }
        tracing::warn!(
            machine = name,
            "the machine's creation was in flight when drover stopped; handing it to \
             docker-machine rm -y, so the driver deletes what it had started"
        );
        match self.storage.stored(name).await? {
            Stored::Absent => {}
            Stored::Present => self.remove_present(name).await?,
            Stored::Debris => {
                let finished = self
                    .run(name, &["rm", "-y", name], self.config.timeouts.remove)
                    .await?;
                if !finished.success() {
                    tracing::warn!(
                        machine = name,
                        "docker-machine cannot remove a machine without its config ({}); \
                         deleting the directory",
                        finished.summary()
                    );
                }
                self.storage.remove_dir(name).await?;
            }
        }
        self.mark_creation(name, false)
    }

    /// Marks (or unmarks) a creation of `name` in flight, when there is a state directory.
    fn mark_creation(&self, name: &str, in_flight: bool) -> Result<(), ProviderError> {
        let Some(creations) = &self.creations else {
            return Ok(());
        };
        let marked = match in_flight {
            true => creations.begin(name),
            false => creations.end(name),
        };
        marked.map_err(|e| {
            ProviderError::new(
                name,
                ProviderErrorKind::Retryable,
                format!("recording the creation in drover's state directory: {e}"),
            )
        })
    }

    /// The endpoint of an existing machine that runs; `None` when it does not run.
    async fn adopt(&self, name: &str) -> Result<Option<MachineEndpoint>, ProviderError> {
        let status = self
            .run(name, &["status", name], self.config.timeouts.query)
            .await?;
        let state = status.stdout.trim();
        if status.success() && state == "Running" {
            match self.endpoint_locked(name).await {
                Ok(endpoint) => {
                    tracing::info!(machine = name, "adopting the existing machine");
                    return Ok(Some(endpoint));
                }
                Err(e) => tracing::warn!(
                    machine = name,
                    "the existing machine runs but cannot be reached ({}); replacing it",
                    e.message
                ),
            }
        } else {
            tracing::warn!(
                machine = name,
                state = if status.success() { state } else { "unknown" },
                "the existing machine does not run (its creation was cut short?); replacing it"
            );
        }
        Ok(None)
    }

    async fn remove_locked(&self, name: &str) -> Result<(), ProviderError> {
        self.settle_interrupted(name).await?;
        match self.storage.stored(name).await? {
            Stored::Absent => Ok(()),
            Stored::Debris => self.storage.remove_dir(name).await,
            Stored::Present => self.remove_present(name).await,
        }
    }

    /// `stop` (errors ignored: the VM may be broken), then `rm -y`.
    async fn remove_present(&self, name: &str) -> Result<(), ProviderError> {
        match self
            .run(name, &["stop", name], self.config.timeouts.stop)
            .await
        {
            Ok(f) if f.success() => {}
            Ok(f) => tracing::debug!(machine = name, "docker-machine stop: {}", f.summary()),
            Err(e) => tracing::debug!(machine = name, "docker-machine stop: {}", e.message),
        }
        let finished = self
            .run(name, &["rm", "-y", name], self.config.timeouts.remove)
            .await?;
        if finished.success() || does_not_exist(&finished.stderr) {
            return Ok(());
        }
        Err(ProviderError::new(
            name,
            ProviderErrorKind::Retryable,
            format!(
                "docker-machine rm failed ({}): {}",
                finished.exit(),
                finished.summary()
            ),
        ))
    }

    async fn endpoint_locked(&self, name: &str) -> Result<MachineEndpoint, ProviderError> {
        if self.storage.stored(name).await? != Stored::Present {
            return Err(ProviderError::new(
                name,
                ProviderErrorKind::NotFound,
                "docker-machine has no such machine (or its creation did not get far)",
            ));
        }
        let finished = self
            .run(name, &["config", name], self.config.timeouts.query)
            .await?;
        if !finished.success() {
            let kind = match does_not_exist(&finished.stderr) {
                true => ProviderErrorKind::NotFound,
                false => ProviderErrorKind::Retryable,
            };
            return Err(ProviderError::new(
                name,
                kind,
                format!(
                    "docker-machine config failed ({}): {}; the machine's Docker engine cannot be \
                     reached",
                    finished.exit(),
                    finished.summary()
                ),
            ));
        }
        let (host, tls) = parse_config(&finished.stdout).ok_or_else(|| {
            ProviderError::new(
                name,
                ProviderErrorKind::Retryable,
                format!(
                    "docker-machine config printed no `-H=<engine address>`: {:?}",
                    finished.stdout.trim()
                ),
            )
        })?;
        Ok(MachineEndpoint {
            machine: Some(name.to_string()),
            engine: EngineConfig {
                host: Some(host),
                tls,
            },
            // Each job gets a network of its own; the builds volume stays on the VM across its
            // jobs (the engine makes it on first use), so `GIT_STRATEGY=fetch` reuses the checkout.
            network: None,
            builds_volume: Some(format!("{name}-builds")),
        })
    }
}

impl MachineProvider for DockerMachineProvider {
    fn create<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<MachineEndpoint, ProviderError>> {
        async move {
            check_name(name)?;
            let _guard = self.locks.lock(name).await;
            self.create_locked(name).await
        }
        .boxed()
    }

    fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
        async move {
            check_name(name)?;
            let _guard = self.locks.lock(name).await;
            tracing::debug!(machine = name, "removing the machine with docker-machine");
            self.remove_locked(name).await
        }
        .boxed()
    }

    fn list<'a>(&'a self, prefix: &'a str) -> BoxFuture<'a, Result<Vec<String>, ProviderError>> {
        self.storage.list(prefix).boxed()
    }

    fn endpoint<'a>(
        &'a self,
        name: &'a str,
    ) -> BoxFuture<'a, Result<MachineEndpoint, ProviderError>> {
        async move {
            check_name(name)?;
            let _guard = self.locks.lock(name).await;
            self.endpoint_locked(name).await
        }
        .boxed()
    }

    /// Ends every docker-machine command still running (see [`Cli::shutdown`]); a creation it
    /// cuts short keeps its mark, so the next drover hands the machine to `rm -y`.
    fn shutdown(&self) -> BoxFuture<'_, ()> {
        self.cli.shutdown().boxed()
    }
}

/// Names become paths in docker-machine's storage and arguments on its command line.
fn check_name(name: &str) -> Result<(), ProviderError> {
    let bad = name.is_empty() || name.starts_with(['-', '.']) || name.contains(['/', '\0']);
    match bad {
        false => Ok(()),
        true => Err(ProviderError::new(
            name,
            ProviderErrorKind::Fatal,
            "not a valid docker-machine name (letters, digits, `-` and `.`, not first)",
        )),
    }
}

fn cli_error(name: &str, command: impl AsRef<OsStr>, err: CliError) -> ProviderError {
    let command = command.as_ref().to_string_lossy();
    let kind = match &err {
        // The program vanished since start-up: nothing works until an operator reinstalls it.
        CliError::Spawn(e) if e.kind() == std::io::ErrorKind::NotFound => ProviderErrorKind::Fatal,
        _ => ProviderErrorKind::Retryable,
    };
    ProviderError::new(name, kind, format!("docker-machine {command}: {err}"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::PathBuf;

    use super::*;

    fn provider(options: &[&str], with_name: &[&str]) -> DockerMachineProvider {
        let mut config = DockerMachineConfig::new(
            "amazonec2",
            options.iter().map(|o| o.to_string()).collect(),
            with_name.iter().map(|o| o.to_string()).collect(),
        );
        config.program = PathBuf::from("/bin/sh");
        config.storage_path = Some(PathBuf::from("/nonexistent/storage"));
        DockerMachineProvider::new(config).unwrap()
    }

    #[test]
    fn create_arguments_follow_gitlab_runner() {
        let p = provider(
            &[
                "amazonec2-region=eu-west-1",
                "amazonec2-use-private-address=true",
                "engine-registry-mirror=http://10.0.0.5:6000",
                "amazonec2-request-spot-instance",
                "--engine-label=written-with-dashes",
                "  ",
            ],
            &["amazonec2-tags=runner,%s"],
        );
        assert_eq!(
            p.create_args("runner-abc-auto-1"),
            [
                "create",
                "--driver",
                "amazonec2",
                "--amazonec2-region=eu-west-1",
                "--amazonec2-use-private-address=true",
                "--engine-registry-mirror=http://10.0.0.5:6000",
                "--amazonec2-request-spot-instance",
                "--engine-label=written-with-dashes",
                "--amazonec2-tags=runner,runner-abc-auto-1",
                "runner-abc-auto-1",
            ]
        );
    }

    #[test]
    fn setup_errors_say_what_to_do() {
        let mut config = DockerMachineConfig::new("amazonec2", vec![], vec![]);
        config.program = PathBuf::from("drover-no-such-docker-machine");
        let err = DockerMachineProvider::new(config.clone()).err().unwrap();
        assert!(matches!(err, DockerMachineSetupError::NotInPath { .. }));
        assert!(err.to_string().contains("DockerMachinePath"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("docker-machine");
        std::fs::write(&plain, "").unwrap();
        std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
        config.program = plain;
        let err = DockerMachineProvider::new(config.clone()).err().unwrap();
        assert!(err.to_string().contains("not executable"), "{err}");
        config.program = dir.path().to_path_buf();
        let err = DockerMachineProvider::new(config.clone()).err().unwrap();
        assert!(err.to_string().contains("not a file"), "{err}");

        config.program = PathBuf::from("/bin/sh");
        config.driver = " ".to_string();
        let err = DockerMachineProvider::new(config).err().unwrap();
        assert!(matches!(err, DockerMachineSetupError::NoDriver), "{err}");
    }

    #[test]
    fn names_that_are_not_plain_names_are_refused() {
        for bad in ["", "-rf", "../x", "a/b", ".hidden"] {
            let err = check_name(bad).unwrap_err();
            assert_eq!(err.kind, ProviderErrorKind::Fatal, "{bad:?}");
        }
        assert!(check_name("runner-abc-auto-1.example").is_ok());
    }
}
