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
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;
use std::sync::mpsc::{SendError, Sender, channel};

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
    SPAWNER.send(request)?;
    answer
        .await
        .map_err(|_| io::Error::other("the spawner thread dropped the command"))?
}

/// The one spawner of the process.
static SPAWNER: Spawner = Spawner {
    queue: Mutex::new(None),
    spawn: |command| command.spawn(),
};

/// The spawner thread's queue. The thread catches a panic of a spawn (that spawn fails, the
/// thread lives on: its children's parent-death signal fires when it exits), and should it end
/// anyway, the next spawn starts a new one.
struct Spawner {
    queue: Mutex<Option<Sender<Request>>>,
    spawn: fn(&mut Command) -> io::Result<Child>,
}

impl Spawner {
    fn send(&self, request: Request) -> io::Result<()> {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let request = match queue.as_ref() {
            Some(q) => match q.send(request) {
                Ok(()) => return Ok(()),
                Err(SendError(request)) => {
                    tracing::error!("the process spawner thread was gone; starting a new one");
                    request
                }
            },
            None => request,
        };
        let sender = self.start()?;
        *queue = Some(sender.clone());
        sender
            .send(request)
            .map_err(|_| io::Error::other("the spawner thread is gone"))
    }

    fn start(&self) -> io::Result<Sender<Request>> {
        let (sender, requests) = channel::<Request>();
        let spawn = self.spawn;
        std::thread::Builder::new()
            .name("drover-spawner".to_string())
            .spawn(move || {
                for mut request in requests {
                    let _runtime = request.runtime.enter();
                    let spawned = catch_unwind(AssertUnwindSafe(|| spawn(&mut request.command)))
                        .unwrap_or_else(|_| Err(io::Error::other("starting the command panicked")));
                    let _ = request.reply.send(spawned);
                }
            })?;
        Ok(sender)
    }
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

    /// A spawner of its own whose spawns panic for `panic-please`.
    fn panicky() -> Spawner {
        Spawner {
            queue: Mutex::new(None),
            spawn: |command| {
                if command.as_std().get_program() == "panic-please" {
                    panic!("a spawn panics");
                }
                command.spawn()
            },
        }
    }

    async fn spawn_on(spawner: &Spawner, command: Command) -> io::Result<Child> {
        let (reply, answer) = oneshot::channel();
        spawner.send(Request {
            command,
            runtime: Handle::current(),
            reply,
        })?;
        answer.await.map_err(|_| io::Error::other("dropped"))?
    }

    #[tokio::test]
    async fn a_panicking_spawn_fails_alone_and_the_spawner_lives_on() {
        let spawner = panicky();
        let err = spawn_on(&spawner, Command::new("panic-please"))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("panicked"), "{err}");
        let mut command = Command::new("sh");
        command.args(["-c", "exit 3"]);
        let mut child = spawn_on(&spawner, command).await.unwrap();
        assert_eq!(child.wait().await.unwrap().code(), Some(3));
    }

    #[tokio::test]
    async fn a_spawner_thread_that_is_gone_is_replaced() {
        let spawner = panicky();
        // A thread that ended: its queue has no receiver any more.
        let (gone, requests) = channel::<Request>();
        drop(requests);
        *spawner.queue.lock().unwrap() = Some(gone);
        let mut command = Command::new("sh");
        command.args(["-c", "exit 4"]);
        let mut child = spawn_on(&spawner, command).await.unwrap();
        assert_eq!(child.wait().await.unwrap().code(), Some(4));
    }

    #[tokio::test]
    async fn a_program_that_cannot_be_run_is_an_error() {
        let err = spawn(Command::new("/nonexistent/program"))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }
}
