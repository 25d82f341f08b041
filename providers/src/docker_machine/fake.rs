//! A fake `docker-machine` for tests (cargo feature `testing`): a shell script that keeps machines as
//! directories in its storage, as docker-machine does, answers the commands the provider runs
//! (create/rm/config/status/stop) like it, and fails on request. See the script's header for its
//! control files.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::DockerMachineConfig;

const SCRIPT: &str = include_str!("fake-docker-machine.sh");

/// A fake docker-machine installed in a directory of the test's.
#[derive(Clone, Debug)]
pub struct FakeDockerMachine {
    /// The program (`<dir>/bin/docker-machine`).
    pub program: PathBuf,
    /// Its storage (`<dir>/storage`): pass it as `MACHINE_STORAGE_PATH` or
    /// [`DockerMachineConfig::storage_path`].
    pub storage: PathBuf,
}

/// One line of the fake's call log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FakeCall {
    /// A call began, with all its arguments (global flags first).
    Start(Vec<String>),
    /// A call ended.
    End {
        command: String,
        machine: String,
        exit_code: i32,
    },
}

impl FakeDockerMachine {
    /// Writes the program into `dir/bin` and makes sure it can be run.
    pub fn install(dir: &Path) -> io::Result<FakeDockerMachine> {
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin)?;
        let program = bin.join("docker-machine");
        std::fs::write(&program, SCRIPT)?;
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755))?;
        let fake = FakeDockerMachine {
            program,
            storage: dir.join("storage"),
        };
        std::fs::create_dir_all(fake.control())?;
        fake.wait_until_runnable()?;
        Ok(fake)
    }

    /// Another thread of the test process may have forked while the program was open for writing;
    /// until that child execs, running the program fails with "text file busy".
    fn wait_until_runnable(&self) -> io::Result<()> {
        let started = std::time::Instant::now();
        loop {
            let probe = Command::new(&self.program)
                .arg("version")
                .env("MACHINE_STORAGE_PATH", &self.storage)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
            match probe {
                Err(e)
                    if e.kind() == io::ErrorKind::ExecutableFileBusy
                        && started.elapsed().as_secs() < 10 =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(5))
                }
                Err(e) => return Err(e),
                Ok(_) => break,
            }
        }
        // The probe is not a call of the code under test.
        match std::fs::remove_file(self.control().join("calls.log")) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Provider settings that use this fake.
    pub fn config(&self, driver: &str, options: &[&str]) -> DockerMachineConfig {
        let mut config = DockerMachineConfig::new(
            driver,
            options.iter().map(|o| o.to_string()).collect(),
            Vec::new(),
        );
        config.program = self.program.clone();
        config.storage_path = Some(self.storage.clone());
        config
    }

    fn control(&self) -> PathBuf {
        self.storage.join("fake")
    }

    fn machine_dir(&self, name: &str) -> PathBuf {
        self.storage.join("machines").join(name)
    }

    fn switch(&self, file: &str, on: bool, content: &str) {
        let path = self.control().join(file);
        let result = match on {
            true => std::fs::write(&path, content),
            false => std::fs::remove_file(&path).or_else(|e| match e.kind() {
                io::ErrorKind::NotFound => Ok(()),
                _ => Err(e),
            }),
        };
        if let Err(e) = result {
            panic!("fake docker-machine: setting {}: {e}", path.display());
        }
    }

    /// Creations fail with `message` on stderr, leaving a half-created machine (state `Error`).
    pub fn fail_creations(&self, message: &str) {
        self.switch("create-fail", true, &format!("{message}\n"));
    }

    /// Creations succeed again.
    pub fn heal_creations(&self) {
        self.switch("create-fail", false, "");
    }

    /// Creations leave a half-created machine and never end.
    pub fn hang_creations(&self, hang: bool) {
        self.switch("create-hang", hang, "");
    }

    /// While closed, creations wait after saving their config; [`Self::create_started`] says
    /// when one is waiting.
    pub fn close_create_gate(&self) {
        self.switch("create-gate", true, "");
    }

    pub fn open_create_gate(&self) {
        self.switch("create-gate", false, "");
    }

    /// Whether a creation of `name` reached the closed gate.
    pub fn create_started(&self, name: &str) -> bool {
        self.control()
            .join(format!("create-started-{name}"))
            .exists()
    }

    /// While slow, creations wait (after saving their config) with a helper process they started,
    /// as docker-machine waits for the cloud with its driver plugin running;
    /// [`Self::slow_creations_in_flight`] names them.
    pub fn slow_creations(&self, slow: bool) {
        self.switch("create-slow", slow, "");
    }

    /// The creations that reached the slow part: each machine with the pids of the
    /// `docker-machine create` process and of the helper it started.
    pub fn slow_creations_in_flight(&self) -> Vec<(String, i32, i32)> {
        let Ok(entries) = std::fs::read_dir(self.control()) else {
            return Vec::new();
        };
        let mut found: Vec<(String, i32, i32)> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                let file = e.file_name().into_string().ok()?;
                let name = file.strip_prefix("create-pids-")?.to_string();
                let text = std::fs::read_to_string(e.path()).ok()?;
                let (create, helper) = text.trim().split_once(' ')?;
                Some((name, create.parse().ok()?, helper.parse().ok()?))
            })
            .collect();
        found.sort();
        found
    }

    /// The next `count` removals fail.
    pub fn fail_removals(&self, count: u32) {
        self.switch("rm-fail", true, &count.to_string());
    }

    /// The machines in the storage (complete or not), sorted.
    pub fn machines(&self) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(self.storage.join("machines")) else {
            return Vec::new();
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        names
    }

    /// A machine's state (`Running`, `Stopped`, `Error`); `None` when it has none.
    pub fn state(&self, name: &str) -> Option<String> {
        std::fs::read_to_string(self.machine_dir(name).join("state"))
            .ok()
            .map(|s| s.trim().to_string())
    }

    /// Sets a machine's state, as if its VM had stopped or broken.
    pub fn set_state(&self, name: &str, state: &str) {
        let path = self.machine_dir(name).join("state");
        std::fs::write(&path, format!("{state}\n"))
            .unwrap_or_else(|e| panic!("fake docker-machine: writing {}: {e}", path.display()));
    }

    /// Every call so far, in order.
    pub fn calls(&self) -> Vec<FakeCall> {
        let log = std::fs::read_to_string(self.control().join("calls.log")).unwrap_or_default();
        log.lines()
            .filter_map(|line| {
                let mut fields = line.split('\t');
                match fields.next()? {
                    "start" => Some(FakeCall::Start(fields.map(str::to_string).collect())),
                    "end" => Some(FakeCall::End {
                        command: fields.next()?.to_string(),
                        machine: fields.next()?.to_string(),
                        exit_code: fields.next()?.parse().ok()?,
                    }),
                    _ => None,
                }
            })
            .collect()
    }

    /// The calls of `command` on `machine` that began, each with all its arguments.
    pub fn started(&self, command: &str, machine: &str) -> Vec<Vec<String>> {
        self.calls()
            .into_iter()
            .filter_map(|call| match call {
                FakeCall::Start(args)
                    if args.iter().find(|a| !a.starts_with('-')) == Some(&command.to_string())
                        && args.last().map(String::as_str) == Some(machine) =>
                {
                    Some(args)
                }
                _ => None,
            })
            .collect()
    }
}
