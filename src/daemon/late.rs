//! Runners whose adapters could not be built at start-up (their Docker engine or machine provider
//! did not answer): drover runs without them while a task retries building them with a doubling
//! backoff. Meanwhile every command for such a runner and its recovered jobs wait here, so its job
//! requests, machines and jobs wait too while the other runners work. Once built, the runner's
//! stray job containers are swept, and the loop installs it and carries out what waited, in
//! order. A reload that adds a runner it cannot build puts it here too; a reload that builds a
//! waiting runner ends its retries and sweeps its strays the same way.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::Duration;

use drover_core::{Command, RunnerId, doubling};
use drover_docker::Executor;
use drover_gitlab::api::JobResponse;
use tokio::sync::mpsc::{self, UnboundedReceiver, UnboundedSender};
use tokio::task::AbortHandle;

use super::adapters::{self, Site};
use super::runners::Runner;
use super::strays;
use crate::config::RunnerSettings;

/// The first wait before building a runner's adapters again, doubled after each failure up to
/// [`LONGEST`].
const FIRST: Duration = Duration::from_secs(1);
const LONGEST: Duration = Duration::from_secs(60);

/// A runner's adapters, built at last.
pub struct Built {
    pub id: RunnerId,
    pub runner: Runner,
}

/// What waited for a runner whose adapters are now installed, to carry out in this order.
#[derive(Default)]
pub struct Released {
    /// Jobs the core holds, recovered at start-up: each gets its task.
    pub jobs: Vec<JobResponse>,
    /// Jobs whose failure report a crash cut short (see `startup.rs`), with why they failed.
    pub interrupted: Vec<(JobResponse, Option<String>)>,
    pub commands: Vec<Command>,
}

struct Waiting {
    name: String,
    retry: AbortHandle,
    held: Released,
}

pub struct Late {
    waiting: BTreeMap<RunnerId, Waiting>,
    built_tx: UnboundedSender<Built>,
    /// Runners built by their retry task, for the loop to install.
    pub built: UnboundedReceiver<Built>,
}

impl Default for Late {
    fn default() -> Self {
        let (built_tx, built) = mpsc::unbounded_channel();
        Late {
            waiting: BTreeMap::new(),
            built_tx,
            built,
        }
    }
}

/// What the retry task of a runner needs.
pub struct Retry {
    pub settings: RunnerSettings,
    pub short: String,
    pub label: String,
    pub site: Site,
    /// The runner's stray job containers, swept once it is built and before anything of it runs.
    pub strays: strays::Plan,
    pub executor: Executor,
}

impl Late {
    /// The runner's adapters could not be built (`error`), at start-up or by a reload that added
    /// it: it waits, and a task tries again.
    pub fn start(&mut self, id: RunnerId, retry: Retry, error: &anyhow::Error) {
        tracing::error!(
            runner = %retry.label,
            "cannot build the runner's adapters: {error:#}; drover runs without it: its job \
             requests, machines and jobs wait while drover tries again (first in {FIRST:?}, \
             then at doubling intervals up to {LONGEST:?})"
        );
        let name = retry.settings.name.clone();
        let tx = self.built_tx.clone();
        let task = tokio::spawn(async move {
            let Retry {
                settings,
                short,
                label,
                site,
                strays,
                executor,
            } = retry;
            let build = || adapters::build(&settings, &short, &site, None);
            let runner = retried(&label, FIRST, LONGEST, build, tokio::time::sleep).await;
            strays::sweep(vec![(strays, runner.provider())], &executor).await;
            let _ = tx.send(Built { id, runner });
        });
        // A runner already waiting (a reload changed its settings) keeps what waits for it; only
        // its retries start over, with the new settings.
        let held = match self.waiting.remove(&id) {
            Some(previous) => {
                previous.retry.abort();
                previous.held
            }
            None => Released::default(),
        };
        self.waiting.insert(
            id,
            Waiting {
                name,
                retry: task.abort_handle(),
                held,
            },
        );
    }

    /// A reload built a waiting runner's adapters: its retries end, its stray job containers are
    /// swept as after a retry, and then it comes back on [`Late::built`] to be installed.
    pub fn built_by_reload(
        &mut self,
        id: RunnerId,
        runner: Runner,
        strays: strays::Plan,
        executor: Executor,
    ) {
        let Some(w) = self.waiting.get_mut(&id) else {
            return;
        };
        w.retry.abort();
        let tx = self.built_tx.clone();
        let task = tokio::spawn(async move {
            strays::sweep(vec![(strays, runner.provider())], &executor).await;
            let _ = tx.send(Built { id, runner });
        });
        w.retry = task.abort_handle();
    }

    pub fn is_waiting(&self, id: RunnerId) -> bool {
        self.waiting.contains_key(&id)
    }

    /// The waiting runner named `name`.
    pub fn named(&self, name: &str) -> Option<RunnerId> {
        self.waiting
            .iter()
            .find(|(_, w)| w.name == name)
            .map(|(id, _)| *id)
    }

    /// A recovered job of a waiting runner: its task starts once the runner is built.
    pub fn hold_job(&mut self, id: RunnerId, job: JobResponse) {
        if let Some(w) = self.waiting.get_mut(&id) {
            w.held.jobs.push(job);
        }
    }

    /// A job of a waiting runner whose failure report a crash cut short.
    pub fn hold_interrupted(&mut self, id: RunnerId, job: JobResponse, why: Option<String>) {
        if let Some(w) = self.waiting.get_mut(&id) {
            w.held.interrupted.push((job, why));
        }
    }

    /// Keeps a command that concerns a waiting runner (or one of its waiting jobs); gives back
    /// any other.
    pub fn hold(&mut self, command: Command) -> Option<Command> {
        let id = match &command {
            Command::RequestJob { runner }
            | Command::CancelRequests { runner }
            | Command::CreateMachine { runner, .. }
            | Command::RemoveMachine { runner, .. }
            | Command::ListMachines { runner, .. }
            | Command::RunJob { runner, .. }
            | Command::ResumeJob { runner, .. }
            | Command::FailJob { runner, .. } => Some(*runner),
            Command::CancelJob { job } | Command::AbortJob { job, .. } => self
                .waiting
                .iter()
                .find(|(_, w)| w.held.jobs.iter().any(|j| j.id == job.0))
                .map(|(id, _)| *id),
            Command::Exit { .. } => None,
        };
        match id.and_then(|id| self.waiting.get_mut(&id)) {
            Some(w) => {
                w.held.commands.push(command);
                None
            }
            None => Some(command),
        }
    }

    /// The runner is installed: its retries end, and what waited for it is handed back.
    pub fn release(&mut self, id: RunnerId) -> Option<Released> {
        let w = self.waiting.remove(&id)?;
        w.retry.abort();
        Some(w.held)
    }

    /// The waiting runners `installed` says have adapters now (a reload built them).
    pub fn installed(&self, installed: impl Fn(RunnerId) -> bool) -> Vec<RunnerId> {
        self.waiting
            .keys()
            .copied()
            .filter(|id| installed(*id))
            .collect()
    }
}

/// Calls `build` until it succeeds, waiting (`wait`) `first` before the first call and twice as
/// long before each next one, at most `longest`.
async fn retried<T, F, Fut, W, WFut>(
    label: &str,
    first: Duration,
    longest: Duration,
    mut build: F,
    mut wait: W,
) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<T>>,
    W: FnMut(Duration) -> WFut,
    WFut: Future<Output = ()>,
{
    let mut attempt = 0;
    loop {
        wait(doubling(first, attempt, longest)).await;
        attempt += 1;
        match build().await {
            Ok(built) => {
                tracing::info!(
                    runner = %label,
                    attempt,
                    "built the runner's adapters: its job requests, machines and jobs go on"
                );
                return built;
            }
            Err(e) => tracing::warn!(
                runner = %label,
                attempt,
                next_in = ?doubling(first, attempt, longest),
                "still cannot build the runner's adapters: {e:#}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_core::{JobId, MachineId};

    #[tokio::test]
    async fn building_is_retried_at_doubling_intervals_up_to_the_longest() {
        let waits = std::sync::Mutex::new(Vec::new());
        let mut calls = 0;
        let built = retried(
            "r/key",
            FIRST,
            Duration::from_secs(4),
            || {
                calls += 1;
                let n = calls;
                async move {
                    match n {
                        1..=4 => Err(anyhow::anyhow!("the engine does not answer")),
                        _ => Ok(n),
                    }
                }
            },
            |d| {
                waits.lock().unwrap().push(d.as_secs());
                std::future::ready(())
            },
        )
        .await;
        assert_eq!(built, 5, "built at the fifth attempt");
        assert_eq!(*waits.lock().unwrap(), [1, 2, 4, 4, 4]);
    }

    fn waiting_on(late: &mut Late, id: RunnerId, name: &str) {
        let task = tokio::spawn(std::future::pending::<()>());
        late.waiting.insert(
            id,
            Waiting {
                name: name.into(),
                retry: task.abort_handle(),
                held: Released::default(),
            },
        );
    }

    #[tokio::test]
    async fn commands_of_a_waiting_runner_wait_in_order_and_others_pass() {
        let (down, up) = (RunnerId(1), RunnerId(0));
        let mut late = Late::default();
        waiting_on(&mut late, down, "down");
        assert_eq!(late.named("down"), Some(down));
        assert_eq!(late.named("up"), None);
        late.hold_job(
            down,
            JobResponse {
                id: 42,
                ..Default::default()
            },
        );

        let pass = Command::RequestJob { runner: up };
        assert_eq!(late.hold(pass.clone()), Some(pass));
        assert!(late.hold(Command::Exit { clean: true }).is_some());
        let other_job = Command::CancelJob { job: JobId(7) };
        assert_eq!(late.hold(other_job.clone()), Some(other_job));

        let held = [
            Command::RequestJob { runner: down },
            Command::CreateMachine {
                machine: MachineId(3),
                runner: down,
                name: "m-3".into(),
            },
            Command::CancelJob { job: JobId(42) },
        ];
        for command in held.clone() {
            assert_eq!(late.hold(command), None, "it waits");
        }
        assert_eq!(late.installed(|id| id == up), Vec::<RunnerId>::new());
        assert_eq!(late.installed(|id| id == down), [down]);

        let released = late.release(down).expect("it waited");
        assert_eq!(released.commands, held, "in the order they came");
        assert_eq!(released.jobs.len(), 1);
        assert!(!late.is_waiting(down));
        let after = Command::RequestJob { runner: down };
        assert_eq!(
            late.hold(after.clone()),
            Some(after),
            "installed: no more waiting"
        );
    }
}
