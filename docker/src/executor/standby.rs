//! Standby execs: the shell a step in a warm container runs in, started before the step, so that
//! starting the step costs a write instead of an exec.
//!
//! Creating and starting an exec is most of a warm job's dispatch (tens of milliseconds on the
//! engine, before the step's first byte). When [`super::warm::prestart`] has made a machine's warm
//! container ready, it starts one exec in it that waits on its standard input ([`STANDBY`]) and
//! keeps the attached exec here, by container id (which a claim's rename keeps). The job that
//! claims the container takes it and writes its first step's request: the arguments, variables
//! and script of the step, then the step wrapper of `exec_step`, as one shell program ending in
//! [`REQUEST_END`]; closing the input starts it. From there on the step is an exec step like any
//! other: the same wrapper, records and re-attachment. While a step runs, the job starts the
//! standby of its next step in the same container (`exec_step`), so every step of a warm job
//! starts with a write.
//!
//! A standby says [`ACK`] on its stderr when it has read a complete request, just before it runs
//! it. A request whose standby ends without saying so ran nothing (something killed the standby
//! while it waited: a step's script, or the kill that ends a step that timed out), and the step
//! starts an exec instead; if it did run after all, the step's claim keeps the exec from running it
//! twice.
//!
//! A standby runs nothing until it has a complete request: a drover that stops or crashes before
//! it wrote one closes the exec's input, and the standby exits. A standby nobody claims ends with
//! its container. A standby runs as a user: the container's for the first, the next step's for
//! the others (a job's `user` runs its own steps but not the sources step). Only a step run as
//! its standby's user, with no variable that must go through the environment (names a shell
//! cannot export), takes it; other steps start an exec and leave it to a later step.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Mutex;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::exec::{CreateExecOptions, StartExecResults};
use futures_util::FutureExt;
use futures_util::StreamExt;
use tokio::io::{AsyncWrite, AsyncWriteExt};

use super::script::{is_shell_name, quote};

/// The standby's program: reads a request to its end, runs it only if complete (its last line is
/// [`REQUEST_END`]); the request removes its file first (it holds the job's variables).
const STANDBY: &str = r##"f=/.drover/run/standby.$$
cat > "$f" || exit 0
[ "$(tail -n 1 "$f")" = "#drover-request-end" ] || { rm -f "$f"; exit 0; }
echo drover-standby-run >&2
. "$f"
"##;

/// What a standby says on its stderr before it runs a complete request.
const ACK: &[u8] = b"drover-standby-run\n";

/// How long a standby that was sent a request may take to say it runs it; then the step starts
/// an exec (which its claim keeps from running the step twice).
const ACK_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The last line of a complete request.
const REQUEST_END: &str = "#drover-request-end";

/// The line that ends the here-document carrying a step's script (a script holding it is not
/// carried).
const SCRIPT_END: &str = "DROVER_STEP_SCRIPT_END_5f0c7a91e2d84b36";

/// Standbys waiting in more warm containers than this are not kept (each holds a connection).
const MAX_WAITING: usize = 4096;

/// The output of an exec, as bollard streams it.
pub(crate) type Output = futures_util::stream::BoxStream<
    'static,
    Result<bollard::container::LogOutput, bollard::errors::Error>,
>;

/// An exec waiting for its request.
pub(crate) struct Standby {
    output: Output,
    input: Pin<Box<dyn AsyncWrite + Send>>,
    /// The user it runs as (`None`: the container's own), as a step's `user` is given.
    user: Option<String>,
}

impl Standby {
    /// Whether a step run as `user` can take it.
    pub(crate) fn runs_as(&self, user: Option<&str>) -> bool {
        self.user.as_deref() == user
    }

    /// Still waiting: it has printed nothing and its stream is open (a standby says nothing
    /// before its request; an ended or broken stream, or any output, means it is gone).
    fn waiting(&mut self) -> bool {
        self.output.next().now_or_never().is_none()
    }

    /// Sends the request and closes the input: the step starts. Returns its output once the
    /// standby said it runs the request; an error if it ended (or kept silent) instead.
    pub(crate) async fn run(mut self, request: Vec<u8>) -> std::io::Result<Output> {
        self.input.write_all(&request).await?;
        self.input.shutdown().await?;
        let ack = tokio::time::timeout(ACK_WAIT, self.output.next()).await;
        let gone = |what: &str| std::io::Error::other(format!("the standby exec {what}"));
        match ack {
            Err(_) => Err(gone("did not answer its request")),
            Ok(None) => Err(gone("ended before it ran its request")),
            Ok(Some(Err(err))) => Err(std::io::Error::other(err)),
            Ok(Some(Ok(LogOutput::StdErr { message }))) if message.starts_with(ACK) => {
                // Whatever came with the acknowledgement is the step's.
                let rest = message.slice(ACK.len()..);
                Ok(match rest.is_empty() {
                    true => self.output,
                    false => futures_util::stream::once(async move {
                        Ok(LogOutput::StdErr { message: rest })
                    })
                    .chain(self.output)
                    .boxed(),
                })
            }
            // Never before its acknowledgement: the step's, then.
            Ok(Some(Ok(first))) => Ok(futures_util::stream::once(async move { Ok(first) })
                .chain(self.output)
                .boxed()),
        }
    }
}

/// Standbys by the id of their warm container. Shared by every job of an executor.
#[derive(Default)]
pub(crate) struct Standbys(Mutex<HashMap<String, Standby>>);

impl std::fmt::Debug for Standbys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let waiting = self.0.lock().map_or(0, |m| m.len());
        f.debug_struct("Standbys")
            .field("waiting", &waiting)
            .finish()
    }
}

impl Standbys {
    /// Whether a standby waits in the container `id`.
    pub(crate) fn has(&self, id: &str) -> bool {
        self.0.lock().is_ok_and(|mut m| match m.get_mut(id) {
            Some(standby) => standby.waiting(),
            None => false,
        })
    }

    /// Keeps `standby` for the container `id`, dropping those whose container is gone.
    pub(crate) fn put(&self, id: String, standby: Standby) {
        let Ok(mut map) = self.0.lock() else { return };
        map.retain(|_, s| s.waiting());
        if map.len() < MAX_WAITING {
            map.insert(id, standby);
        }
    }

    /// The standby of the container `id`, if one still waits there.
    pub(crate) fn take(&self, id: &str) -> Option<Standby> {
        let mut standby = self.0.lock().ok()?.remove(id)?;
        standby.waiting().then_some(standby)
    }
}

/// Starts a standby in the running container `container`, as `user` (`None`: its default user).
pub(crate) async fn start(
    docker: &Docker,
    container: &str,
    user: Option<&str>,
) -> Result<Option<Standby>, bollard::errors::Error> {
    let options = CreateExecOptions {
        cmd: Some(vec![
            "sh".to_string(),
            "-c".to_string(),
            STANDBY.to_string(),
        ]),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        attach_stdin: Some(true),
        user: user.map(str::to_string),
        ..Default::default()
    };
    let exec = docker.create_exec(container, options).await?;
    Ok(match docker.start_exec(&exec.id, None).await? {
        StartExecResults::Attached { output, input } => Some(Standby {
            output,
            input,
            user: user.map(str::to_string),
        }),
        StartExecResults::Detached => None,
    })
}

/// Whether a request can carry these variables (`NAME=value`): only names a shell can export.
pub(crate) fn can_export(exports: &[String]) -> bool {
    exports.iter().all(|e| {
        e.split_once('=')
            .is_some_and(|(name, _)| is_shell_name(name))
    })
}

/// The request that runs `wrapper` with `args` (the wrapper's `$1`…), the `exports` (variables
/// the shell can export, `NAME=value`) and, unless it is in the container already, `script`
/// written to the script path `args[1]`. `None` when a standby cannot carry it: a name the
/// shell cannot export, or a script holding the line that ends it.
pub(crate) fn request(
    wrapper: &str,
    args: &[String],
    exports: &[String],
    script: Option<&[u8]>,
) -> Option<Vec<u8>> {
    let mut text = String::from("rm -f \"$f\"\nset --");
    for arg in args {
        text.push(' ');
        text.push_str(&quote(arg));
    }
    text.push('\n');
    if !can_export(exports) {
        return None;
    }
    for (name, value) in exports.iter().filter_map(|e| e.split_once('=')) {
        text.push_str(&format!("export {name}={}\n", quote(value)));
    }
    let mut request = text.into_bytes();
    if let (Some(script), Some(path)) = (script, args.get(1)) {
        if script
            .split(|b| *b == b'\n')
            .any(|line| line == SCRIPT_END.as_bytes())
        {
            return None;
        }
        // A here-document takes the script byte for byte, plus the newline before its end.
        request.extend_from_slice(format!("cat > {} <<'{SCRIPT_END}'\n", quote(path)).as_bytes());
        request.extend_from_slice(script);
        if !script.ends_with(b"\n") {
            request.push(b'\n');
        }
        request.extend_from_slice(format!("{SCRIPT_END}\n").as_bytes());
    }
    request.extend_from_slice(wrapper.as_bytes());
    if !wrapper.ends_with('\n') {
        request.push(b'\n');
    }
    request.extend_from_slice(REQUEST_END.as_bytes());
    request.push(b'\n');
    Some(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_quote_arguments_and_values_and_carry_the_script_verbatim() {
        let args = [
            "/.drover/run/0".to_string(),
            "/.drover/run/0.sh".to_string(),
        ];
        let exports = [
            "CI_JOB_STATUS=running".to_string(),
            "A=it's $HOME".to_string(),
        ];
        let script = b"echo 'hi'\nexit 3";
        let request = request("WRAP", &args, &exports, Some(script)).expect("carried");
        let text = String::from_utf8(request).expect("utf-8");
        let end = SCRIPT_END;
        assert_eq!(
            text,
            format!(
                "rm -f \"$f\"\nset -- '/.drover/run/0' '/.drover/run/0.sh'\n\
                 export CI_JOB_STATUS='running'\nexport A='it'\\''s $HOME'\n\
                 cat > '/.drover/run/0.sh' <<'{end}'\necho 'hi'\nexit 3\n{end}\nWRAP\n\
                 #drover-request-end\n"
            )
        );
    }

    #[test]
    fn the_standby_runs_only_what_ends_as_a_request_ends() {
        let last = STANDBY
            .lines()
            .find(|l| l.contains("tail -n 1"))
            .expect("the completeness check");
        assert!(last.contains(&format!("\"{REQUEST_END}\"")), "{last}");
    }

    #[test]
    fn what_a_standby_cannot_carry_is_refused() {
        let args = ["a".to_string(), "b".to_string()];
        assert!(request("W", &args, &["FOO.BAR=1".to_string()], None).is_none());
        assert!(request("W", &args, &["NOVALUE".to_string()], None).is_none());
        let holds_end = format!("echo a\n{SCRIPT_END}\necho b\n");
        assert!(request("W", &args, &[], Some(holds_end.as_bytes())).is_none());
        assert!(request("W", &args, &["OK=1".to_string()], Some(b"echo\n")).is_some());
    }
}
