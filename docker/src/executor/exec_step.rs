//! A step run by `exec` in the job's claimed warm container (see `warm`).
//!
//! # Crash safety
//!
//! An exec's output stream and exit code die with the drover process that attached to it, so the
//! step keeps its own record in the container, under `/.drover/run/<step index>/`:
//! - the wrapper ([`WRAPPER`]) claims the step by `mkdir` of that directory: a second wrapper for
//!   the same step (a restarted drover racing a start the crashed one had sent) finds it and
//!   exits without running anything, so a step never runs twice;
//! - the step's output (stdout and stderr, merged) goes through `tee` into `out`, byte for byte
//!   what the live stream carries: the cursor of an exec step counts **bytes** of `out` (a
//!   container step's counts log messages);
//! - its exit code is written to `code` (atomically, after `out` is complete); `pid` and `started`
//!   tell whether the wrapper still runs and when the step's own timeout began.
//!
//! After a restart the job re-attaches with the [`READER`]: it sends `out` from the persisted
//! cursor on, follows it while the wrapper runs, and reports the exit code at the end. The job's
//! deadline is in `/.drover/deadline`. The engine keeps draining an exec's output when the client
//! that attached to it is gone, so a step is never held up by a dead drover.
//!
//! Between steps, everything a step left running is killed (`kill -9 -1` spares only PID 1, the
//! container's holder), as a step container's end would. Unlike step containers, the steps of a
//! job share the container's filesystem outside the builds volume; the container is the job's
//! alone and is removed after it.

use std::time::Duration;

use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::time::Instant;

use super::Control;
use super::context::{
    ExecRecord, Job, JobError, Kind, Planned, instant_at, later, next_control, now_ms,
};
use super::patience::Patience;
use super::script::{self, FileEntry};
use super::standby::{self, Output, Standby};
use super::step::{StepEnd, header};
use super::warm::RUN_DIR;
use crate::trace::LogCursor;

/// How long after a step's start the next job's warm container is started if the step has not
/// printed anything by then.
const PRESTART_AFTER: Duration = Duration::from_millis(300);

/// Runs a step's script `$2` (read from stdin, `$5` bytes, unless it was uploaded; never an
/// argument: an exec's arguments are visible to the engine's API and in the container's `ps`)
/// with the shell `$3`,
/// keeping its record under the path prefix `$1`; `$4` is the job's deadline. Shell builtins
/// only up to the step's start: each program started here would delay the script's first byte.
/// The claim is `set -C` (noclobber), an exclusive create. The step runs in a process group of
/// its own (`setsid`), killed when its shell ends: what it left running would hold the output
/// pipe open, and dies with the step, as in a step container.
const WRAPPER: &str = r#"R=$1
set -C
{ : > "$R.claim"; } 2>/dev/null || { echo drover-claimed >&2; exit 199; }
set +C
echo $$ > "$R.pid"
kill -9 -1 2>/dev/null
[ -e /.drover/run/deadline ] || echo "$4" > /.drover/run/deadline
if [ -n "$5" ]; then cat > "$2"; [ "$(wc -c < "$2")" -eq "$5" ] || { echo drover-short-script >&2; exit 198; }; fi
{ setsid "$3" "$2" </dev/null & p=$!; echo $p > "$R.spid"; wait $p; echo $? > "$R.code.tmp"; kill -9 -$p 2>/dev/null; } 2>&1 | (trap '' PIPE; exec tee "$R.out")
c=$(cat "$R.code.tmp") && mv "$R.code.tmp" "$R.code" && echo "drover-exit $c" >&2
"#;

/// Sends the output of the step recorded under `$1` from byte `$2` on, while its wrapper runs;
/// then its exit code (none: the step was killed).
const READER: &str = r#"R=$1; n=$2; w=0
while :; do
  fin=0
  if [ -e "$R.code" ]; then fin=1
  else
    p=$(cat "$R.pid" 2>/dev/null)
    if [ -n "$p" ]; then
      s=$(cut -d' ' -f3 "/proc/$p/stat" 2>/dev/null)
      if [ -z "$s" ] || [ "$s" = Z ]; then fin=1; fi
    else
      w=$((w+1)); if [ $w -gt 5 ]; then fin=1; fi
    fi
  fi
  s=$(($(wc -c < "$R.out" 2>/dev/null || echo 0)))
  if [ "$s" -gt "$n" ]; then tail -c +$((n+1)) "$R.out" | head -c $((s-n)); n=$s; fi
  if [ $fin = 1 ]; then break; fi
  sleep 1
done
if [ -e "$R.code" ]; then echo "drover-exit $(cat "$R.code")" >&2; else echo drover-killed >&2; fi
"#;

/// The job's deadline and the steps on record: `<deadline ms>` then `step <i> <started> <code|->`.
const LIST: &str = r#"cat /.drover/run/deadline 2>/dev/null; echo
for f in /.drover/run/*.claim; do
  [ -e "$f" ] || continue
  R=${f%.claim}
  echo "step ${R##*/} $(stat -c %Y "$f" 2>/dev/null || echo 0) $(cat "$R.code" 2>/dev/null || echo -)"
done
"#;

/// A script longer than this is uploaded rather than passed to the wrapper (Linux limits one
/// argument to 128 KiB).
const ARGUMENT_MAX: usize = 64 * 1024;

/// The exit code of a step killed with SIGKILL.
const SIGKILLED: i32 = 128 + 9;

/// The path prefix of a step's record.
fn record_path(index: u16) -> String {
    format!("{RUN_DIR}/{index}")
}

fn script_path(index: u16) -> String {
    format!("{RUN_DIR}/{index}.sh")
}

/// What the wrapper or the reader said on stderr.
enum Marker {
    Exit(i32),
    Killed,
    /// Another wrapper holds the step.
    Claimed,
    /// The script came short on stdin (the connection to the engine broke): nothing ran.
    ShortScript,
}

/// The last marker in a piece of the wrapper's stderr (which may also hold a tool's complaint).
fn marker(message: &[u8]) -> Option<Marker> {
    let text = String::from_utf8_lossy(message);
    text.lines().rev().find_map(|line| {
        let line = line.trim();
        if let Some(code) = line.strip_prefix("drover-exit ") {
            return Some(Marker::Exit(code.trim().parse().unwrap_or(-1)));
        }
        match line {
            "drover-killed" => Some(Marker::Killed),
            "drover-claimed" => Some(Marker::Claimed),
            "drover-short-script" => Some(Marker::ShortScript),
            _ => None,
        }
    })
}

impl Job {
    fn step_script(&self, planned: &Planned) -> String {
        match planned.kind {
            Kind::Sources => script::get_sources(&self.spec, &self.spec.image.name),
            Kind::User(i) => script::user_step(&self.spec, &self.spec.steps[i]),
        }
    }

    /// A standby for the step and the request that runs it there, if the step can take one: one
    /// run as the step's user, with only variables the shell can export (see `standby`). The
    /// claimed container's own standby first, else the one started while the step before ran; a
    /// step that cannot take one leaves it to a later step.
    async fn standby_request(
        &mut self,
        args: &[String; 5],
        env: &[String],
        script: Option<&[u8]>,
        user: Option<&str>,
    ) -> Option<(Standby, Vec<u8>)> {
        // The wrapper reads no script from its input: the request writes it.
        let mut args = args.clone();
        args[4].clear();
        let request = standby::request(WRAPPER, &args, env, script)?;
        let first = self.standby.get_mut().ok()?;
        if first.as_ref().is_some_and(|s| s.runs_as(user)) {
            return Some((first.take()?, request));
        }
        if self
            .next_standby
            .as_ref()
            .is_some_and(|(runs_as, _)| runs_as.as_deref() == user)
        {
            let (_, started) = self.next_standby.take()?;
            return Some((started.await.ok()??, request));
        }
        None
    }

    /// The user a step runs as: the job's `user` for its own steps, the container's (`None`)
    /// for the sources.
    fn step_user(&self, kind: Kind) -> Option<String> {
        match kind {
            Kind::User(_) => self.spec.container_options.user.clone(),
            Kind::Sources => None,
        }
    }

    /// Starts the standby of the next step in the claimed container, as that step's user, if
    /// none waits yet and its variables can go in a request. Called once the step runs: its
    /// wrapper begins by killing what the step before left running, which would take a standby
    /// along.
    fn start_next_standby(&mut self, container: &str, step: u16) {
        let waiting = self.standby.get_mut().map_or(true, |s| s.is_some());
        let Some(next) = self.plan().into_iter().find(|p| p.index > step) else {
            return;
        };
        let user = self.step_user(next.kind);
        // One waiting for another user is of no use to the steps left: it is dropped (and
        // exits: its input closes).
        if waiting
            || self
                .next_standby
                .as_ref()
                .is_some_and(|(runs_as, _)| *runs_as == user)
            || !standby::can_export(&self.environment())
        {
            return;
        }
        let (docker, container, runs_as) =
            (self.docker.clone(), container.to_string(), user.clone());
        let started = tokio::spawn(async move {
            standby::start(&docker, &container, runs_as.as_deref())
                .await
                .inspect_err(|err| tracing::debug!(error = %err, "could not start a standby exec"))
                .ok()
                .flatten()
        });
        self.next_standby = Some((user, started));
    }

    /// Whether the job's files go into the claimed container by the archive API (slow on a
    /// running container) instead of with each step: only with file variables or a long script.
    fn uploads_files(&self, plan: &[Planned]) -> bool {
        self.spec.variables.iter().any(|v| v.file)
            || plan
                .iter()
                .any(|p| self.step_script(p).len() > ARGUMENT_MAX)
    }

    /// Every step's script and the file variables, into the claimed container before the first
    /// step, when the steps cannot bring them along.
    pub(crate) async fn upload_exec_files(&mut self, plan: &[Planned]) -> Result<(), JobError> {
        let Some(container) = self.warm.clone() else {
            return Ok(());
        };
        if !self.uploads_files(plan) {
            return Ok(());
        }
        let mut files: Vec<FileEntry> = plan
            .iter()
            .map(|planned| FileEntry {
                path: script_path(planned.index),
                content: self.step_script(planned).into_bytes(),
                mode: 0o755,
            })
            .collect();
        files.extend(self.file_variables());
        self.upload(&container, &files).await
    }

    /// The steps on record in the claimed container, and the job's deadline.
    pub(crate) async fn exec_records(
        &mut self,
    ) -> Result<std::collections::BTreeMap<u16, ExecRecord>, JobError> {
        let container = self.warm.clone().unwrap_or_default();
        let text = self.exec_collect(&container, LIST, &[], Some("0")).await?;
        let mut lines = text.lines();
        if let Some(deadline) = lines.next().and_then(|l| l.trim().parse().ok()) {
            self.deadline_ms = deadline;
        }
        let mut records = std::collections::BTreeMap::new();
        for line in lines {
            let parts: Vec<&str> = line.split_whitespace().collect();
            if let ["step", index, started, code] = parts.as_slice()
                && let Ok(index) = index.parse::<u16>()
            {
                let record = ExecRecord {
                    started_s: started.parse().unwrap_or(0),
                    code: code.parse().ok(),
                };
                records.insert(index, record);
            }
        }
        Ok(records)
    }

    /// Runs (or, after a restart, re-attaches to) one step by exec; also returns the step's own
    /// deadline.
    pub(crate) async fn run_exec_step(
        &mut self,
        planned: Planned,
        record: Option<ExecRecord>,
        skip: u64,
        timeout: Duration,
        bound_by_job: bool,
    ) -> Result<(StepEnd, Instant), JobError> {
        let container = self.warm.clone().unwrap_or_default();
        let dir = record_path(planned.index);
        let (started, output, from) = match record {
            Some(record) => {
                let age = now_ms().saturating_sub(record.started_s.saturating_mul(1000));
                let started = Instant::now()
                    .checked_sub(Duration::from_millis(age))
                    .unwrap_or_else(Instant::now);
                match record.code {
                    // Its output was delivered already: only its end matters.
                    Some(code) if skip == u64::MAX => {
                        return Ok((StepEnd::Exited(code), later(started, timeout)));
                    }
                    _ => {
                        let from = skip.min(i64::MAX as u64);
                        (started, self.reader(&container, &dir, from).await?, from)
                    }
                }
            }
            None => {
                self.trace.section(header(&planned, &self.spec)).await;
                let user = self.step_user(planned.kind);
                let mut env = self.environment();
                env.push(format!("CI_JOB_STATUS={}", self.job_status));
                let (length, stdin) = match self.uploads_files(&self.plan()) {
                    true => (String::new(), None),
                    false => {
                        let text = self.step_script(&planned).into_bytes();
                        (text.len().to_string(), Some(text))
                    }
                };
                let args = [
                    dir.clone(),
                    script_path(planned.index),
                    self.spec.shell.program().to_string(),
                    self.deadline_ms.to_string(),
                    length,
                ];
                // The script comes in the standby's request, not on the wrapper's input. A
                // request that did not get through runs nothing, or, if it did after all,
                // the step's claim keeps the exec below from running it again.
                let sent = match self
                    .standby_request(&args, &env, stdin.as_deref(), user.as_deref())
                    .await
                {
                    Some((standby, request)) => standby
                        .run(request)
                        .await
                        .inspect_err(|err| tracing::debug!(error = %err, "standby exec failed"))
                        .ok(),
                    None => None,
                };
                let output = match sent {
                    Some(output) => output,
                    None => {
                        self.exec_stream(&container, WRAPPER, &args, user.as_deref(), env, stdin)
                            .await?
                    }
                };
                // The next job's warm container starts once this step shows its first byte
                // (`follow_exec`): started now, it would compete with the step's start-up for
                // the engine and the CPU and delay that byte.
                (Instant::now(), output, 0)
            }
        };
        let own = later(started, timeout);
        let deadline = match bound_by_job {
            true => own.min(instant_at(self.deadline_ms)),
            false => own,
        };
        let end = self
            .follow_exec(
                &container,
                &dir,
                planned.index,
                output,
                from,
                skip,
                deadline,
                bound_by_job,
            )
            .await?;
        Ok((end, own))
    }

    /// Streams the step's output (bytes before `delivered` were sent already), enforcing the
    /// deadline and the job's control, until the step's end is known.
    #[allow(clippy::too_many_arguments)]
    async fn follow_exec(
        &mut self,
        container: &str,
        dir: &str,
        step: u16,
        mut output: Output,
        mut offset: u64,
        skip: u64,
        deadline: Instant,
        cancelable: bool,
    ) -> Result<StepEnd, JobError> {
        let mut delivered = skip;
        let mut interruption = None;
        let mut handled = Control::Run;
        let mut kill_at: Option<Instant> = None;
        let mut reattaches = 0u32;
        let mut patience = Patience::default();
        // A step that prints nothing for a while still gets the next warm container and the
        // next step's standby going.
        let mut running_at = Some(later(Instant::now(), PRESTART_AFTER));
        loop {
            let mut end = None;
            loop {
                tokio::select! {
                    item = output.next() => match item {
                        Some(Ok(LogOutput::StdOut { message })) => {
                            if running_at.take().is_some() {
                                self.prestart_next();
                                self.start_next_standby(container, step);
                            }
                            let len = message.len() as u64;
                            if offset + len > delivered {
                                let from = delivered.saturating_sub(offset) as usize;
                                delivered = offset + len;
                                let cursor = LogCursor { step, messages: delivered };
                                self.trace.output(message.slice(from..), cursor).await;
                            }
                            offset += len;
                        }
                        Some(Ok(LogOutput::StdErr { message })) => {
                            if let Some(m) = marker(&message) {
                                end = Some(m);
                            }
                        }
                        Some(Ok(_)) => {}
                        Some(Err(err)) => {
                            tracing::debug!(container, error = %err, "exec stream broke");
                            break;
                        }
                        None => break,
                    },
                    () = tokio::time::sleep_until(running_at.unwrap_or_else(Instant::now)),
                        if running_at.is_some() => {
                        running_at = None;
                        self.prestart_next();
                        self.start_next_standby(container, step);
                    }
                    () = tokio::time::sleep_until(deadline), if interruption.is_none() => {
                        self.kill_all(container).await?;
                        interruption = Some(StepEnd::TimedOut);
                    }
                    () = tokio::time::sleep_until(kill_at.unwrap_or_else(Instant::now)),
                        if kill_at.is_some() => {
                        kill_at = None;
                        self.kill_all(container).await?;
                    }
                    control = next_control(&mut self.control, &mut self.control_open, handled) => {
                        handled = control;
                        match control {
                            Control::Abort(reason) => {
                                self.kill_all(container).await?;
                                return Ok(StepEnd::Aborted(reason));
                            }
                            Control::Cancel if cancelable && interruption.is_none() => {
                                self.trace.warn("the job was canceled: stopping the script").await;
                                let term = format!("kill -TERM \"$(cat {dir}.spid)\" 2>/dev/null");
                                self.exec_collect(container, &term, &[], Some("0")).await?;
                                kill_at = Some(later(Instant::now(), self.options.stop_timeout));
                                interruption = Some(StepEnd::Canceled);
                            }
                            _ => {}
                        }
                    }
                }
            }
            self.prestart_next();
            let code = match end {
                Some(Marker::Exit(code)) => code,
                Some(Marker::Killed) => SIGKILLED,
                // Not the script's failure: drover's delivery of it failed.
                Some(Marker::ShortScript) => {
                    return Err(JobError::System(
                        "the step's script reached the build container incomplete (the \
                         connection to the engine broke); nothing of it ran"
                            .into(),
                    ));
                }
                // The step's wrapper died with everything else: drover killed it.
                None if interruption.is_some() => SIGKILLED,
                // The stream ended early, or another wrapper holds the step: read its record.
                Some(Marker::Claimed) | None => {
                    reattaches += 1;
                    if reattaches > 1 {
                        let pause = Duration::from_millis(200) * reattaches.min(10);
                        tokio::time::sleep(pause).await;
                    }
                    let from = delivered.min(i64::MAX as u64);
                    // While the engine is silent, an empty stream: the next round asks again.
                    output = self
                        .reopen(container, dir, from, &mut patience)
                        .await?
                        .unwrap_or_else(|| futures_util::stream::empty().boxed());
                    offset = from;
                    continue;
                }
            };
            return Ok(match interruption {
                Some(end) => end,
                None if code == SIGKILLED && Instant::now() >= deadline => StepEnd::TimedOut,
                None => StepEnd::Exited(code),
            });
        }
    }

    async fn reader(&self, container: &str, dir: &str, from: u64) -> Result<Output, JobError> {
        let args = [dir.to_string(), from.to_string()];
        self.exec_stream(container, READER, &args, Some("0"), Vec::new(), None)
            .await
    }

    /// Kills every process of the container but its holder (PID 1).
    async fn kill_all(&self, container: &str) -> Result<(), JobError> {
        self.exec_collect(container, "kill -9 -1", &[], Some("0"))
            .await
            .map(|_| ())
    }

    /// Reads the step's record again from byte `from`, once its build container is known to
    /// run; `None` while the engine gives no answer and [`Patience`] bears it.
    async fn reopen(
        &self,
        container: &str,
        dir: &str,
        from: u64,
        patience: &mut Patience,
    ) -> Result<Option<Output>, JobError> {
        let inspect = match self
            .docker
            .inspect_container(
                container,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
        {
            Ok(inspect) => inspect,
            Err(err) if patience.bears(&err) => {
                tracing::debug!(container, error = %err, "the engine does not answer");
                return Ok(None);
            }
            Err(err) => return Err(err.into()),
        };
        patience.answered();
        if inspect.state.and_then(|s| s.running) != Some(true) {
            return Err(JobError::System(format!(
                "the job's build container {container} stopped"
            )));
        }
        self.reader(container, dir, from).await.map(Some)
    }

    /// Starts `sh -c script sh args...` in `container`, attached to its output; `stdin` is
    /// written to its standard input, which is then closed.
    async fn exec_stream(
        &self,
        container: &str,
        script: &str,
        args: &[String],
        user: Option<&str>,
        env: Vec<String>,
        stdin: Option<Vec<u8>>,
    ) -> Result<Output, JobError> {
        let mut cmd = vec![
            "sh".to_string(),
            "-c".to_string(),
            script.to_string(),
            "sh".to_string(),
        ];
        cmd.extend(args.iter().cloned());
        let options = CreateExecOptions {
            cmd: Some(cmd),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            attach_stdin: Some(stdin.is_some()),
            user: user.map(str::to_string),
            env: (!env.is_empty()).then_some(env),
            ..Default::default()
        };
        let exec = self.docker.create_exec(container, options).await?;
        match self.docker.start_exec(&exec.id, None).await? {
            StartExecResults::Attached { output, mut input } => {
                if let Some(bytes) = stdin {
                    use tokio::io::AsyncWriteExt;
                    let written = async {
                        input.write_all(&bytes).await?;
                        input.shutdown().await
                    };
                    written
                        .await
                        .map_err(|e| JobError::System(format!("sending the step's script: {e}")))?;
                }
                Ok(output)
            }
            StartExecResults::Detached => Err(JobError::System(
                "the engine started an exec detached".to_string(),
            )),
        }
    }

    /// Runs a short script in `container` to its end; its stdout.
    async fn exec_collect(
        &self,
        container: &str,
        script: &str,
        args: &[String],
        user: Option<&str>,
    ) -> Result<String, JobError> {
        let mut output = self
            .exec_stream(container, script, args, user, Vec::new(), None)
            .await?;
        let mut text = Vec::new();
        while let Some(item) = output.next().await {
            if let LogOutput::StdOut { message } = item? {
                text.extend_from_slice(&message);
            }
        }
        Ok(String::from_utf8_lossy(&text).into_owned())
    }

    async fn upload(&self, container: &str, files: &[FileEntry]) -> Result<(), JobError> {
        let tar = script::archive(files)
            .map_err(|e| JobError::System(format!("building the step's files: {e}")))?;
        let options = bollard::query_parameters::UploadToContainerOptions {
            path: "/".to_string(),
            ..Default::default()
        };
        self.docker
            .upload_to_container(
                container,
                Some(options),
                bollard::body_full(Bytes::from(tar)),
            )
            .await?;
        Ok(())
    }
}

/// Whether the claimed container `name` holds a started step (or cannot tell: it is not running,
/// which a re-attachment reports).
pub(crate) async fn has_started_steps(
    docker: &bollard::Docker,
    name: &str,
) -> Result<bool, bollard::errors::Error> {
    let inspect = match docker
        .inspect_container(
            name,
            None::<bollard::query_parameters::InspectContainerOptions>,
        )
        .await
    {
        Ok(inspect) => inspect,
        Err(err) if crate::engine::is_status(&err, &[404]) => return Ok(false),
        Err(err) => return Err(err),
    };
    if inspect.state.and_then(|s| s.running) != Some(true) {
        return Ok(true);
    }
    let options = CreateExecOptions {
        cmd: Some(vec!["ls".to_string(), RUN_DIR.to_string()]),
        attach_stdout: Some(true),
        user: Some("0".to_string()),
        ..Default::default()
    };
    let exec = docker.create_exec(name, options).await?;
    let mut listed = Vec::new();
    if let StartExecResults::Attached { mut output, .. } = docker.start_exec(&exec.id, None).await?
    {
        while let Some(item) = output.next().await {
            listed.extend_from_slice(&item?.into_bytes());
        }
    }
    // Only a claim marks a started step: the steps' scripts may be uploaded before the first.
    Ok(String::from_utf8_lossy(&listed)
        .lines()
        .any(|name| name.trim().ends_with(".claim")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_of_the_wrapper_and_the_reader() {
        assert!(matches!(marker(b"drover-exit 3\n"), Some(Marker::Exit(3))));
        assert!(matches!(marker(b"drover-killed\n"), Some(Marker::Killed)));
        assert!(matches!(marker(b"drover-claimed\n"), Some(Marker::Claimed)));
        assert!(matches!(
            marker(b"drover-short-script\n"),
            Some(Marker::ShortScript)
        ));
        assert!(marker(b"tee: write error\n").is_none());
        assert!(matches!(
            marker(b"tee: write error\ndrover-exit 0\n"),
            Some(Marker::Exit(0))
        ));
    }
}
