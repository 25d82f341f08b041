//! Machine calls (create, remove, list by prefix) on a runner's provider, each a spawned task
//! answered as an event. Every call carries its provider and names ([`MachineCall`]), built when
//! the core's command is dispatched, so no task reaches back into the daemon's maps.
//!
//! Calls on one machine name never overlap, across providers too: every provider built for one
//! state directory shares a table of per-name locks (`adapters::provider`), so after a reload that
//! replaced a runner's provider (its `MachineOptions` or `DockerHost` changed) the new provider's
//! call on a machine waits for the old provider's call in flight on it.

use std::collections::BTreeMap;
use std::sync::Arc;

use drover_core::{CreationFailure, Event, MachineId, RunnerId};
use drover_docker::{BuildSpec, Executor, MachineEndpoint};
use drover_providers::MachineProvider;
use tokio::sync::mpsc::UnboundedSender;

use super::Input;

/// One call on one machine, with all its executor needs.
pub struct MachineCall {
    pub runner: RunnerId,
    /// How logs name the runner.
    pub label: String,
    /// `None`: the runner has no provider; the call fails at once.
    pub provider: Option<Arc<dyn MachineProvider>>,
    pub machine: MachineId,
    pub name: String,
    /// A creation's warm build container, started before the machine is reported ready.
    pub warmup: Option<Warmup>,
}

/// A new machine's first warm build container (see `drover_docker`'s warm containers), for jobs
/// with its runner's defaults: started before the machine is reported ready, so its first job
/// runs its steps by exec too, and no removal can race the start. A machine that cannot have one
/// (no builds volume and network of its own, an image that is absent or has an entrypoint) is
/// ready as it is, and so is one whose start fails.
pub struct Warmup {
    pub executor: Executor,
    /// The spec of a job with the runner's defaults; `None`: the runner's settings make none.
    pub spec: Box<dyn FnOnce() -> Option<BuildSpec> + Send>,
    /// The machine's first job is its last (`MaxBuilds 1`): the container gets fresh caches, so
    /// that a job of any project runs warm with `"/cache"` in `volumes`.
    pub first_job_is_last: bool,
}

impl Warmup {
    async fn start(self, endpoint: &MachineEndpoint, label: &str) {
        let Some(spec) = (self.spec)() else { return };
        let started = match self.first_job_is_last {
            true => self.executor.prestart_for_last_job(endpoint, &spec).await,
            false => self.executor.prestart(endpoint, &spec).await,
        };
        match started {
            Ok(started) => {
                tracing::debug!(runner = %label, machine = ?endpoint.machine, started, "warm build container");
            }
            Err(e) => {
                tracing::info!(runner = %label, machine = ?endpoint.machine, "no warm build container: {e}");
            }
        }
    }
}

pub struct Machines {
    inputs: UnboundedSender<Input>,
    /// Each runner's last creation error, from [`Input::CreationFailed`].
    creation_errors: BTreeMap<RunnerId, String>,
}

impl Machines {
    pub fn new(inputs: UnboundedSender<Input>) -> Machines {
        Machines {
            inputs,
            creation_errors: BTreeMap::new(),
        }
    }

    /// The runner's last creation error, if any.
    pub fn creation_error(&self, runner: RunnerId) -> Option<String> {
        self.creation_errors.get(&runner).cloned()
    }

    pub fn record_creation_error(&mut self, runner: RunnerId, error: String) {
        self.creation_errors.insert(runner, error);
    }

    pub fn create(&self, call: MachineCall) {
        let MachineCall {
            runner,
            label,
            provider,
            machine,
            name,
            warmup,
        } = call;
        let Some(provider) = provider else {
            tracing::error!(runner = %label, "no machine provider for this runner");
            let _ = self.inputs.send(Input::CreationFailed {
                runner,
                machine,
                failure: CreationFailure::Fatal,
                error: "no machine provider is configured for this runner".to_string(),
            });
            return;
        };
        let inputs = self.inputs.clone();
        tokio::spawn(async move {
            tracing::info!(runner = %label, machine = %name, "creating machine");
            let input = match provider.create(&name).await {
                Ok(endpoint) => {
                    if let Some(warmup) = warmup {
                        warmup.start(&endpoint, &label).await;
                    }
                    Input::Event(Event::MachineCreated { machine })
                }
                Err(e) => {
                    tracing::warn!(runner = %label, machine = %name, "creating the machine failed: {e}");
                    Input::CreationFailed {
                        runner,
                        machine,
                        failure: e.creation_failure(),
                        error: format!("creating machine {name} failed: {e}"),
                    }
                }
            };
            let _ = inputs.send(input);
        });
    }

    pub fn remove(&self, call: MachineCall, reason: &'static str) {
        let MachineCall {
            label,
            provider,
            machine,
            name,
            ..
        } = call;
        let Some(provider) = provider else {
            tracing::error!(runner = %label, "no machine provider for this runner");
            let _ = self
                .inputs
                .send(Input::Event(Event::MachineRemovalFailed { machine }));
            return;
        };
        let inputs = self.inputs.clone();
        tokio::spawn(async move {
            tracing::info!(runner = %label, machine = %name, reason, "removing machine");
            let event = match provider.remove(&name).await {
                Ok(()) => Event::MachineRemoved { machine },
                Err(e) => {
                    tracing::warn!(runner = %label, machine = %name, "removing the machine failed: {e}");
                    Event::MachineRemovalFailed { machine }
                }
            };
            let _ = inputs.send(Input::Event(event));
        });
    }

    /// Lists the machines under every prefix on every provider of the runner (its current one
    /// and those that made machines before a reload replaced them) and answers with all their
    /// names at once.
    pub fn list(
        &self,
        runner: RunnerId,
        label: String,
        providers: Vec<Arc<dyn MachineProvider>>,
        request: u64,
        prefixes: Vec<String>,
    ) {
        if providers.is_empty() {
            return;
        }
        let inputs = self.inputs.clone();
        tokio::spawn(async move {
            let mut names = std::collections::BTreeSet::new();
            let mut calls = Vec::new();
            for provider in &providers {
                for prefix in &prefixes {
                    calls.push((provider.clone(), prefix.clone()));
                }
            }
            for (provider, prefix) in calls {
                match provider.list(&prefix).await {
                    Ok(found) => names.extend(found),
                    // Without a whole answer there is nothing to settle; the next list will.
                    Err(e) => {
                        tracing::warn!(runner = %label, "listing machines failed: {e}");
                        return;
                    }
                }
            }
            let _ = inputs.send(Input::Event(Event::MachinesListed {
                runner,
                request,
                names: names.into_iter().collect(),
            }));
        });
    }
}

/// Where a job runs: a machine of a provider, or straight on an engine.
#[derive(Clone)]
pub enum Placement {
    Machine {
        provider: Arc<dyn MachineProvider>,
        name: String,
        /// The core's id of the machine, to tell it the machine is lost.
        id: MachineId,
        /// The machine's last job (`MaxBuilds` reached): no warm container for a next one.
        last_job: bool,
    },
    Engine(MachineEndpoint),
    /// Nowhere: the job fails with `runner_system_failure` and this message.
    Unavailable(String),
}

/// Why a job's machine cannot be reached.
#[derive(Debug)]
pub struct Unreachable {
    /// The machine is gone for good: no machine for the job, or the provider has none by its
    /// name. Nothing of the job can be left on it.
    pub gone: bool,
    pub message: String,
}

impl std::fmt::Display for Unreachable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Placement {
    pub async fn endpoint(&self) -> Result<MachineEndpoint, Unreachable> {
        match self {
            Placement::Machine { provider, name, .. } => {
                provider.endpoint(name).await.map_err(|e| Unreachable {
                    gone: e.kind == drover_providers::ProviderErrorKind::NotFound,
                    message: e.to_string(),
                })
            }
            Placement::Engine(endpoint) => Ok(endpoint.clone()),
            Placement::Unavailable(why) => Err(Unreachable {
                gone: true,
                message: why.clone(),
            }),
        }
    }

    /// Whether the job is its machine's last (it is removed after it).
    pub fn last_job(&self) -> bool {
        matches!(self, Placement::Machine { last_job: true, .. })
    }

    /// The core's id of the job's machine; `None` without one.
    pub fn machine_id(&self) -> Option<MachineId> {
        match self {
            Placement::Machine { id, .. } => Some(*id),
            Placement::Engine(_) | Placement::Unavailable(_) => None,
        }
    }

    /// After a run that failed for the system (or a machine that could not be reached): the
    /// machine's id and the provider's word if the machine is gone for good (an instance
    /// terminated behind drover's back, a VM deleted by hand), so that the job's trace says so and
    /// the core replaces the machine now rather than at its next reconciliation. Asked once,
    /// within `PATIENCE`: a machine that does not answer is not called gone.
    pub async fn gone(&self) -> Option<(MachineId, String)> {
        const PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);
        let id = self.machine_id()?;
        match tokio::time::timeout(PATIENCE, self.endpoint()).await {
            Ok(Err(e)) if e.gone => Some((id, e.message)),
            _ => None,
        }
    }

    /// The endpoint, asked again after a provider's error as `policy` says: a passing error does
    /// not lose the job's machine. No machine at all (`Unavailable`) fails at once.
    pub async fn endpoint_retried(
        &self,
        policy: &drover_lifecycle::Policy,
    ) -> Result<MachineEndpoint, Unreachable> {
        let unavailable = matches!(self, Placement::Unavailable(_));
        let (endpoint, _) = super::retry::at_endpoint_backoff(
            policy,
            Some(policy.endpoint_attempts),
            || self.endpoint(),
            |_| unavailable,
            |attempt, e| {
                tracing::warn!("reaching the job's machine failed (attempt {attempt}): {e}");
            },
        )
        .await;
        endpoint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    use drover_docker::EngineConfig;
    use drover_providers::{ProviderError, ProviderErrorKind};
    use futures_util::FutureExt;
    use futures_util::future::BoxFuture;

    /// Fails `endpoint` the first `failures` times.
    struct Flaky {
        failures: u32,
        calls: AtomicU32,
    }

    impl MachineProvider for Flaky {
        fn create<'a>(
            &'a self,
            _: &'a str,
        ) -> BoxFuture<'a, Result<MachineEndpoint, ProviderError>> {
            unreachable!()
        }
        fn remove<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
            unreachable!()
        }
        fn list<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<String>, ProviderError>> {
            unreachable!()
        }
        fn endpoint<'a>(
            &'a self,
            name: &'a str,
        ) -> BoxFuture<'a, Result<MachineEndpoint, ProviderError>> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            let result = match call < self.failures {
                true => Err(ProviderError::new(
                    name,
                    ProviderErrorKind::Retryable,
                    "heartbeat missed",
                )),
                false => Ok(MachineEndpoint::engine_only(EngineConfig {
                    host: Some("tcp://127.0.0.1:2376".into()),
                    tls: None,
                })),
            };
            async move { result }.boxed()
        }
    }

    fn placement(failures: u32) -> (Placement, Arc<Flaky>) {
        let flaky = Arc::new(Flaky {
            failures,
            calls: AtomicU32::new(0),
        });
        let placement = Placement::Machine {
            provider: flaky.clone(),
            name: "runner-abcd-1".into(),
            id: MachineId(1),
            last_job: false,
        };
        (placement, flaky)
    }

    const QUICK: drover_lifecycle::Policy = drover_lifecycle::Policy {
        endpoint_first_wait: std::time::Duration::ZERO,
        ..drover_lifecycle::Policy::DEFAULT
    };

    #[tokio::test]
    async fn a_passing_provider_error_does_not_lose_the_machine() {
        let (placement, flaky) = placement(QUICK.endpoint_attempts - 1);
        assert!(placement.endpoint_retried(&QUICK).await.is_ok());
        assert_eq!(flaky.calls.load(Ordering::SeqCst), QUICK.endpoint_attempts);
    }

    #[tokio::test]
    async fn a_machine_failing_every_attempt_is_lost() {
        let (placement, flaky) = placement(u32::MAX);
        let err = placement.endpoint_retried(&QUICK).await.unwrap_err();
        assert!(err.message.contains("heartbeat missed"), "{err}");
        assert!(!err.gone, "a failing provider is no gone machine");
        assert_eq!(flaky.calls.load(Ordering::SeqCst), QUICK.endpoint_attempts);
    }

    #[tokio::test]
    async fn no_machine_at_all_fails_at_once() {
        let placement = Placement::Unavailable("machine #3 is gone".into());
        let err = placement.endpoint_retried(&QUICK).await.unwrap_err();
        assert_eq!(err.message, "machine #3 is gone");
        assert!(err.gone);
    }
}
