//! Running one docker-machine command: its own process group that dies with drover
//! ([`crate::children`]), recorded while it runs, a deadline, output read line by line (logged at
//! debug, masked) and kept for error messages. [`Cli::shutdown`] ends every running command:
//! `SIGTERM` to its process group, `SIGKILL` to what is left after a grace period.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustix::process::{Pid, Signal, kill_process_group};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::Instant;

use super::output::Scrubber;
use crate::children::{self, records::ProcessId, records::Records};

/// Lines kept per stream: enough for any error docker-machine prints, bounded for chatty creations.
const KEPT_LINES: usize = 200;
/// How long to keep reading after the program exited, for output a child of it still holds open.
const DRAIN_GRACE: Duration = Duration::from_secs(5);
/// How long a command may take to end after `SIGTERM` at shutdown before its group is killed.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// How to run docker-machine.
pub(super) struct Cli {
    program: PathBuf,
    storage: PathBuf,
    scrubber: Scrubber,
    drain_grace: Duration,
    /// Where each running command is recorded, so the next drover can end what a crash left.
    records: Option<Arc<Records>>,
    /// Whether the provider shuts down, and how many commands run.
    life: watch::Sender<Life>,
    stop_grace: Duration,
}

#[derive(Clone, Copy, Debug, Default)]
struct Life {
    stopping: bool,
    running: usize,
}

/// A command that ran to its end.
#[derive(Debug)]
pub(super) struct Finished {
    status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    pub fn success(&self) -> bool {
        self.status.success()
    }

    /// `exit code N`, or the signal that ended it.
    pub fn exit(&self) -> String {
        match self.status.code() {
            Some(code) => format!("exit code {code}"),
            None => self.status.to_string(),
        }
    }

    /// stdout and stderr together, for classifying a failure.
    pub fn all_output(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// The last lines docker-machine printed on stderr (else stdout), on one line: what went wrong.
    pub fn summary(&self) -> String {
        let text = match self.stderr.trim().is_empty() {
            true => &self.stdout,
            false => &self.stderr,
        };
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        match lines.len() {
            0 => "no output".to_string(),
            n => lines[n.saturating_sub(3)..].join(" / "),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub(super) enum CliError {
    #[error("cannot run the program: {0}")]
    Spawn(std::io::Error),
    #[error("no answer within {}; the command was killed", humantime::format_duration(*.0))]
    TimedOut(Duration),
    #[error("waiting for the program: {0}")]
    Wait(std::io::Error),
    #[error("drover is shutting down; the command was ended")]
    ShutDown,
}

impl Cli {
    pub fn new(program: PathBuf, storage: PathBuf, scrubber: Scrubber) -> Cli {
        Cli {
            program,
            storage,
            scrubber,
            drain_grace: DRAIN_GRACE,
            records: None,
            life: watch::Sender::new(Life::default()),
            stop_grace: STOP_GRACE,
        }
    }

    /// Ends every running command (`SIGTERM` to its process group, then `SIGKILL` after a grace
    /// period) and waits until they have ended; later commands fail at once.
    pub async fn shutdown(&self) {
        self.life.send_modify(|l| l.stopping = true);
        let mut life = self.life.subscribe();
        let _ = life.wait_for(|l| l.running == 0).await;
    }

    /// Records every command in `records` while it runs.
    pub fn set_records(&mut self, records: Arc<Records>) {
        self.records = Some(records);
    }

    /// The command line as it may be shown: credential-like option values masked.
    pub fn display(&self, args: &[String]) -> String {
        let shown: Vec<String> = args.iter().map(|a| self.scrubber.scrub(a)).collect();
        format!("{} {}", self.program.display(), shown.join(" "))
    }

    /// Runs `docker-machine <args>`, killing its process group after `timeout`.
    pub async fn run(
        &self,
        machine: &str,
        args: &[String],
        timeout: Duration,
    ) -> Result<Finished, CliError> {
        let mut command = Command::new(&self.program);
        // As GitLab Runner does: no crash reports to docker-machine's authors unless asked for.
        if std::env::var_os("MACHINE_BUGSNAG_API_TOKEN").is_none() {
            command.arg("--bugsnag-api-token=no-report");
        }
        command
            .args(args)
            .env("MACHINE_STORAGE_PATH", &self.storage)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let op = args.first().map(String::as_str).unwrap_or("");
        let mut life = self.life.subscribe();
        let _running = Running::enter(&self.life).ok_or(CliError::ShutDown)?;
        tracing::debug!(machine, command = %self.display(args), "running docker-machine");
        let mut child = children::spawn(command).await.map_err(CliError::Spawn)?;
        let mut group = GroupGuard(child.id().and_then(|id| ProcessId::of(id as i32)));
        // Dropped before `group`: a record never outlives the wait for its process group.
        let _record = self.record(machine, op, child.id());
        let mut stdout = Lines::new(child.stdout.take());
        let mut stderr = Lines::new(child.stderr.take());

        let deadline = Instant::now() + timeout;
        let mut status = None;
        let mut drain_until = deadline;
        loop {
            if status.is_some() && stdout.done() && stderr.done() {
                group.disarm();
                break;
            }
            tokio::select! {
                line = stdout.next(), if !stdout.done() => {
                    if let Some(line) = line {
                        self.log(machine, op, "stdout", &line);
                    }
                }
                line = stderr.next(), if !stderr.done() => {
                    if let Some(line) = line {
                        self.log(machine, op, "stderr", &line);
                    }
                }
                exited = child.wait(), if status.is_none() => {
                    status = Some(exited.map_err(CliError::Wait)?);
                    drain_until = deadline.min(Instant::now() + self.drain_grace);
                }
                () = stopping(&mut life), if status.is_none() => {
                    // `group` kills what is left of the process group on the way out.
                    self.stop(machine, op, &mut child, group.0).await;
                    return Err(CliError::ShutDown);
                }
                () = tokio::time::sleep_until(drain_until) => {
                    if status.is_none() {
                        // `group` kills the process group on the way out.
                        return Err(CliError::TimedOut(timeout));
                    }
                    // Exited, but something it started still holds its output open: stop that.
                    break;
                }
            }
        }
        let status = status.ok_or(CliError::TimedOut(timeout))?;
        Ok(Finished {
            status,
            stdout: self.scrubber.scrub(&stdout.text()),
            stderr: self.scrubber.scrub(&stderr.text()),
        })
    }

    /// Asks a command's process group to end (docker-machine and its driver plugins may clean
    /// up), and waits a grace period for the command to exit.
    async fn stop(&self, machine: &str, op: &str, child: &mut Child, group: Option<ProcessId>) {
        tracing::info!(
            machine,
            command = op,
            "drover is shutting down: ending docker-machine"
        );
        if let Some(pid) = group.and_then(|g| Pid::from_raw(g.pid)) {
            let _ = kill_process_group(pid, Signal::TERM);
        }
        if tokio::time::timeout(self.stop_grace, child.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                machine,
                command = op,
                "docker-machine did not end within {:?} of SIGTERM; killing it",
                self.stop_grace
            );
        }
    }

    /// Records the running command; a record that cannot be written is logged (the child still
    /// dies with drover, only the second net is missing).
    fn record(
        &self,
        machine: &str,
        op: &str,
        pid: Option<u32>,
    ) -> Option<children::records::RecordGuard> {
        let records = self.records.as_ref()?;
        let child = ProcessId::of(pid? as i32)?;
        records
            .write(machine, child, &format!("{op} {machine}"))
            .inspect_err(|e| {
                tracing::warn!(
                    machine,
                    dir = %records.dir().display(),
                    "cannot record the docker-machine process: {e}"
                )
            })
            .ok()
    }

    fn log(&self, machine: &str, op: &str, stream: &str, line: &str) {
        tracing::debug!(
            machine,
            command = op,
            stream,
            "docker-machine: {}",
            self.scrubber.scrub(line)
        );
    }
}

/// Resolves once the provider shuts down.
async fn stopping(life: &mut watch::Receiver<Life>) {
    let _ = life.wait_for(|l| l.stopping).await;
}

/// Counts a running command while it lives; refused once the provider shuts down.
struct Running<'a>(&'a watch::Sender<Life>);

impl<'a> Running<'a> {
    fn enter(life: &'a watch::Sender<Life>) -> Option<Running<'a>> {
        let mut entered = false;
        life.send_if_modified(|l| {
            entered = !l.stopping;
            l.running += usize::from(entered);
            entered
        });
        entered.then(|| Running(life))
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|l| l.running -= 1);
    }
}

/// Kills the process group of a command that did not finish (on timeout, or when the call is
/// dropped), with whatever docker-machine started: driver plugins, ssh.
struct GroupGuard(Option<ProcessId>);

impl GroupGuard {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(leader) = self.0.take() {
            // On a timeout the leader is not reaped yet (tokio reaps after `kill_on_drop`, which
            // runs after this), so the id cannot have been reused. After the drain grace the
            // leader is reaped: the group is killed by its id only while it still has members of
            // its own (they keep the id from being reused). ESRCH (all gone meanwhile) is fine.
            if children::records::group_alive(leader)
                && let Some(pid) = Pid::from_raw(leader.pid)
            {
                let _ = kill_process_group(pid, Signal::KILL);
            }
        }
    }
}

/// One output stream, read line by line (cancel-safe: a partial line stays in `partial`).
struct Lines<R> {
    reader: Option<BufReader<R>>,
    partial: Vec<u8>,
    kept: VecDeque<String>,
}

impl<R: AsyncRead + Unpin> Lines<R> {
    fn new(stream: Option<R>) -> Lines<R> {
        Lines {
            reader: stream.map(BufReader::new),
            partial: Vec::new(),
            kept: VecDeque::new(),
        }
    }

    fn done(&self) -> bool {
        self.reader.is_none()
    }

    /// The next line; `None` at the end of the stream (which is then done) or for an empty line.
    async fn next(&mut self) -> Option<String> {
        let reader = self.reader.as_mut()?;
        let read = reader.read_until(b'\n', &mut self.partial).await;
        if matches!(read, Ok(0) | Err(_)) {
            self.reader = None;
            if self.partial.is_empty() {
                return None;
            }
        }
        let line = String::from_utf8_lossy(&self.partial)
            .trim_end_matches(['\n', '\r'])
            .to_string();
        self.partial.clear();
        if self.kept.len() == KEPT_LINES {
            self.kept.pop_front();
        }
        self.kept.push_back(line.clone());
        (!line.is_empty()).then_some(line)
    }

    fn text(&self) -> String {
        self.kept
            .iter()
            .map(|l| format!("{l}\n"))
            .collect::<String>()
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use super::*;

    /// A stand-in program: drops the `--bugsnag-api-token` flag, then runs its first argument as
    /// a shell script (with the rest as `$1`...).
    fn program(dir: &Path) -> PathBuf {
        let path = dir.join("program");
        let script = "#!/bin/sh\ncase \"$1\" in --bugsnag-api-token=*) shift ;; esac\n\
                      script=\"$1\"; shift\neval \"$script\"\n";
        std::fs::write(&path, script).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn cli(dir: &Path) -> Cli {
        Cli::new(
            program(dir),
            dir.join("storage"),
            Scrubber::new(["digitalocean-access-token=hunter22".to_string()].iter()),
        )
    }

    /// Runs `script`; retries while the freshly written program is "text file busy" (another test
    /// thread forked while it was being written).
    async fn run(cli: &Cli, script: &str, timeout: Duration) -> Result<Finished, CliError> {
        loop {
            match cli.run("m1", &[script.to_string()], timeout).await {
                Err(CliError::Spawn(e)) if e.kind() == std::io::ErrorKind::ExecutableFileBusy => {
                    tokio::time::sleep(Duration::from_millis(10)).await
                }
                other => return other,
            }
        }
    }

    fn alive(pid: &str) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|stat| !stat.contains(") Z "))
    }

    #[tokio::test]
    async fn output_exit_code_and_storage_reach_the_caller() {
        let dir = tempfile::tempdir().unwrap();
        let cli = cli(dir.path());
        let f = run(
            &cli,
            "echo \"storage=$MACHINE_STORAGE_PATH\"; printf 'no newline'; \
             echo 'bad: token hunter22' >&2; exit 3",
            Duration::from_secs(30),
        )
        .await
        .unwrap();
        assert!(!f.success());
        assert_eq!(f.exit(), "exit code 3");
        let storage = dir.path().join("storage");
        assert_eq!(
            f.stdout,
            format!("storage={}\nno newline\n", storage.display())
        );
        assert_eq!(f.stderr, "bad: token ***\n", "secrets are masked");
        assert_eq!(f.summary(), "bad: token ***");
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_process_group() {
        let dir = tempfile::tempdir().unwrap();
        let cli = cli(dir.path());
        let pid_file = dir.path().join("pid");
        let script = format!(
            "sleep 300 & echo $! > {}; echo started; wait",
            pid_file.display()
        );
        let err = run(&cli, &script, Duration::from_millis(500))
            .await
            .unwrap_err();
        assert!(matches!(err, CliError::TimedOut(_)), "{err}");
        assert!(err.to_string().contains("500ms"), "{err}");
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let pid = pid.trim();
        // SIGKILL is delivered at once, but the process may take a moment to die.
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(pid) {
            assert!(
                Instant::now() < deadline,
                "the background child {pid} outlived the timeout"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn output_held_open_by_a_leftover_child_does_not_block() {
        let dir = tempfile::tempdir().unwrap();
        let mut cli = cli(dir.path());
        cli.drain_grace = Duration::from_millis(100);
        let pid_file = dir.path().join("pid");
        // The background sleep inherits stdout and keeps it open after sh exits.
        let script = format!("sleep 300 & echo $! > {}; echo done", pid_file.display());
        let f = run(&cli, &script, Duration::from_secs(60)).await.unwrap();
        assert!(f.success());
        assert_eq!(f.stdout, "done\n");
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(pid.trim()) {
            assert!(
                Instant::now() < deadline,
                "the leftover child was not stopped"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn shutdown_ends_running_commands_with_sigterm_and_refuses_new_ones() {
        let dir = tempfile::tempdir().unwrap();
        let cli = Arc::new(cli(dir.path()));
        let (pid_file, ended) = (dir.path().join("pid"), dir.path().join("ended"));
        // The command cleans up on SIGTERM; its background child is in its process group.
        let script = format!(
            "trap 'echo cleaned > {ended}; exit 0' TERM; sleep 300 & echo $! > {pid}.tmp; \
             mv {pid}.tmp {pid}; wait",
            ended = ended.display(),
            pid = pid_file.display()
        );
        let running = tokio::spawn({
            let cli = cli.clone();
            async move { run(&cli, &script, Duration::from_secs(600)).await }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while !pid_file.exists() {
            assert!(Instant::now() < deadline, "the command did not start");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::timeout(Duration::from_secs(30), cli.shutdown())
            .await
            .expect("shutdown waits for the running command only");
        let err = running.await.unwrap().unwrap_err();
        assert!(matches!(err, CliError::ShutDown), "{err}");
        assert_eq!(
            std::fs::read_to_string(&ended).unwrap(),
            "cleaned\n",
            "the command had its chance to clean up"
        );
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while alive(pid.trim()) {
            assert!(
                Instant::now() < deadline,
                "the command's child outlived the shutdown"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let later = run(&cli, "echo never > later", Duration::from_secs(5)).await;
        assert!(matches!(later, Err(CliError::ShutDown)), "{later:?}");
    }

    #[tokio::test]
    async fn a_command_deaf_to_sigterm_is_killed_after_the_grace() {
        let dir = tempfile::tempdir().unwrap();
        let mut cli = cli(dir.path());
        cli.stop_grace = Duration::from_millis(200);
        let cli = Arc::new(cli);
        let started = dir.path().join("started");
        let script = format!(
            "trap '' TERM; echo > {started}; while true; do sleep 1; done",
            started = started.display()
        );
        let running = tokio::spawn({
            let cli = cli.clone();
            async move { run(&cli, &script, Duration::from_secs(600)).await }
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while !started.exists() {
            assert!(Instant::now() < deadline, "the command did not start");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::timeout(Duration::from_secs(30), cli.shutdown())
            .await
            .expect("the deaf command is killed");
        let err = running.await.unwrap().unwrap_err();
        assert!(matches!(err, CliError::ShutDown), "{err}");
    }

    #[tokio::test]
    async fn a_missing_program_is_a_spawn_error() {
        let cli = Cli::new(
            PathBuf::from("/nonexistent/docker-machine"),
            PathBuf::from("/tmp"),
            Scrubber::default(),
        );
        let err = cli
            .run("m1", &["ls".to_string()], Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, CliError::Spawn(e) if e.kind() == std::io::ErrorKind::NotFound),
            "{err}"
        );
    }

    #[test]
    fn summaries_take_the_last_lines_of_stderr() {
        let finished = |stdout: &str, stderr: &str| Finished {
            status: std::os::unix::process::ExitStatusExt::from_raw(256),
            stdout: stdout.to_string(),
            stderr: stderr.to_string(),
        };
        let f = finished("Creating machine...\n", "a\n\nb\nc\nd\n");
        assert_eq!(f.summary(), "b / c / d");
        assert_eq!(f.exit(), "exit code 1");
        assert!(!f.success());
        assert_eq!(finished("only out\n", " \n").summary(), "only out");
        assert_eq!(finished("", "").summary(), "no output");
    }

    #[test]
    fn timeouts_read_naturally() {
        let message = |d| CliError::TimedOut(d).to_string();
        assert_eq!(
            message(Duration::from_secs(3600)),
            "no answer within 1h; the command was killed"
        );
        assert!(message(Duration::from_secs(90)).contains("within 1m 30s;"));
        assert!(message(Duration::from_millis(300)).contains("within 300ms;"));
    }

    #[test]
    fn the_command_line_is_shown_masked() {
        let dir = tempfile::tempdir().unwrap();
        let cli = cli(dir.path());
        let shown = cli.display(&[
            "create".into(),
            "--digitalocean-access-token=hunter22".into(),
        ]);
        assert!(
            shown.ends_with("program create --digitalocean-access-token=***"),
            "{shown}"
        );
    }
}
