//! Child processes that die with drover, on two nets:
//!
//! 1. **At once**: [`spawn`] starts each child in a process group of its own with the parent-death
//!    signal set to `SIGKILL` (`prctl(PR_SET_PDEATHSIG)`), so a `kill -9` of drover kills it too.
//!    Linux sends that signal when the *thread* that forked the child exits, not the process, and
//!    tokio's blocking-pool threads exit when idle; so every child is forked by one thread that
//!    lives as long as the process (`drover-spawner`), never by a pool thread.
//! 2. **At the next start**: the parent-death signal reaches the child alone, not what the child
//!    started (docker-machine's driver plugins, ssh). So each child's pid and start time are
//!    written to a [`records::Records`] directory while it runs; at start-up [`records::Records::sweep`]
//!    kills the process groups of records a dead drover left behind.

pub mod records;

use std::io;
use std::sync::Mutex;
use std::sync::mpsc::{Sender, channel};

use rustix::process::{Signal, getpid, getppid, set_parent_process_death_signal};
use tokio::process::{Child, Command};
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// A spawn the spawner thread carries out: the command, the runtime whose reactor the child's
/// pipes and exit status belong to, and where to send the child.
struct Request {
    command: Command,
    runtime: Handle,
    reply: oneshot::Sender<io::Result<Child>>,
}

/// Starts `command` in a process group of its own (its id is the child's pid), set to be killed
/// when drover dies. Must be called within a tokio runtime.
pub async fn spawn(mut command: Command) -> io::Result<Child> {
    command.process_group(0);
    let parent = getpid();
    // SAFETY: the closure runs between fork and exec; it only makes two system calls (prctl and
    // getppid), which are async-signal-safe, and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            set_parent_process_death_signal(Some(Signal::KILL))?;
            // drover died before the signal was set: nobody would kill this child.
            if getppid() != Some(parent) {
                return Err(io::Error::other("drover exited while starting the command"));
            }
            Ok(())
        });
    }
    let (reply, answer) = oneshot::channel();
    let request = Request {
        command,
        runtime: Handle::current(),
        reply,
    };
    spawner()?
        .send(request)
        .map_err(|_| io::Error::other("the spawner thread is gone"))?;
    answer
        .await
        .map_err(|_| io::Error::other("the spawner thread dropped the command"))?
}

/// The spawner thread's queue, starting the thread on first use. It never ends: the queue's
/// sender lives in a static.
fn spawner() -> io::Result<Sender<Request>> {
    static SPAWNER: Mutex<Option<Sender<Request>>> = Mutex::new(None);
    let mut spawner = SPAWNER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(sender) = spawner.as_ref() {
        return Ok(sender.clone());
    }
    let (sender, requests) = channel::<Request>();
    std::thread::Builder::new()
        .name("drover-spawner".to_string())
        .spawn(move || {
            for mut request in requests {
                let _runtime = request.runtime.enter();
                let _ = request.reply.send(request.command.spawn());
            }
        })?;
    *spawner = Some(sender.clone());
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_child_leads_its_own_process_group() {
        let mut command = Command::new("sh");
        command.args(["-c", "exit 7"]);
        let mut child = spawn(command).await.unwrap();
        let pid = child.id().unwrap() as i32;
        let pgid = rustix::process::getpgid(rustix::process::Pid::from_raw(pid))
            .map(|p| p.as_raw_nonzero().get());
        let status = child.wait().await.unwrap();
        assert_eq!(status.code(), Some(7));
        // Read before the wait reaped it; a zombie keeps its group.
        assert_eq!(pgid.ok(), Some(pid));
    }

    #[tokio::test]
    async fn a_program_that_cannot_be_run_is_an_error() {
        let err = spawn(Command::new("/nonexistent/program"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
