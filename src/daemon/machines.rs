//! Machine calls (create, remove, list by prefix) on a runner's provider, each a spawned task
//! answered as an event. Every call carries its provider and names ([`MachineCall`]), built when
//! the core's command is dispatched, so no task reaches back into the daemon's maps.
//!
//! Calls on one machine name are serialised here, across providers: a reload that replaces a
//! runner's provider (its `MachineOptions` or `DockerHost` changed) lets the old provider's call on
//! a machine finish before the new provider's call on that machine starts. The table is the
//! daemon's own, not the one a provider serialises its own calls with (a shared one would make a
//! provider wait for the lock its caller holds).

use std::collections::BTreeMap;
use std::sync::Arc;

use drover_core::{CreationFailure, Event, MachineId, RunnerId};
use drover_docker::MachineEndpoint;
use drover_providers::{MachineProvider, NameLocks};
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
}

pub struct Machines {
    inputs: UnboundedSender<Input>,
    /// Each runner's last creation error, from [`Input::CreationFailed`].
    creation_errors: BTreeMap<RunnerId, String>,
    /// Per machine name, across all providers.
    locks: NameLocks,
}

impl Machines {
    pub fn new(inputs: UnboundedSender<Input>) -> Machines {
        Machines {
            inputs,
            creation_errors: BTreeMap::new(),
            locks: NameLocks::default(),
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
        let locks = self.locks.clone();
        tokio::spawn(async move {
            let _held = locks.lock(&name).await;
            tracing::info!(runner = %label, machine = %name, "creating machine");
            let input = match provider.create(&name).await {
                Ok(_) => Input::Event(Event::MachineCreated { machine }),
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
        let locks = self.locks.clone();
        tokio::spawn(async move {
            let _held = locks.lock(&name).await;
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

    /// Lists the machines under every prefix and answers with all their names at once.
    pub fn list(
        &self,
        runner: RunnerId,
        label: String,
        provider: Option<Arc<dyn MachineProvider>>,
        request: u64,
        prefixes: Vec<String>,
    ) {
        let Some(provider) = provider else {
            return;
        };
        let inputs = self.inputs.clone();
        tokio::spawn(async move {
            let mut names = std::collections::BTreeSet::new();
            for prefix in &prefixes {
                match provider.list(prefix).await {
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
    },
    Engine(MachineEndpoint),
    /// Nowhere: the job fails with `runner_system_failure` and this message.
    Unavailable(String),
}

impl Placement {
    pub async fn endpoint(&self) -> Result<MachineEndpoint, String> {
        match self {
            Placement::Machine { provider, name } => {
                provider.endpoint(name).await.map_err(|e| e.to_string())
            }
            Placement::Engine(endpoint) => Ok(endpoint.clone()),
            Placement::Unavailable(why) => Err(why.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_docker::EngineConfig;
    use drover_providers::ProviderError;
    use futures_util::FutureExt;
    use futures_util::future::BoxFuture;
    use std::sync::Mutex;
    use tokio::sync::Semaphore;

    fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A provider that writes down when its calls start and end; `create` waits for a permit.
    struct Recording {
        who: &'static str,
        log: Arc<Mutex<Vec<String>>>,
        gate: Arc<Semaphore>,
    }

    impl Recording {
        fn note(&self, what: &str) {
            lock(&self.log).push(format!("{} {what}", self.who));
        }
    }

    impl MachineProvider for Recording {
        fn create<'a>(
            &'a self,
            _: &'a str,
        ) -> BoxFuture<'a, Result<MachineEndpoint, ProviderError>> {
            async move {
                self.note("create starts");
                let _permit = self.gate.acquire().await;
                self.note("create ends");
                Ok(MachineEndpoint::engine_only(EngineConfig {
                    host: None,
                    tls: None,
                }))
            }
            .boxed()
        }

        fn remove<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
            async move {
                self.note("remove starts");
                Ok(())
            }
            .boxed()
        }

        fn list<'a>(&'a self, _: &'a str) -> BoxFuture<'a, Result<Vec<String>, ProviderError>> {
            async { Ok(Vec::new()) }.boxed()
        }

        fn endpoint<'a>(
            &'a self,
            _: &'a str,
        ) -> BoxFuture<'a, Result<MachineEndpoint, ProviderError>> {
            async { Ok(MachineEndpoint::engine_only(EngineConfig::default())) }.boxed()
        }
    }

    fn call(provider: &Arc<Recording>, machine: u64) -> MachineCall {
        MachineCall {
            runner: RunnerId(0),
            label: "r/abc".into(),
            provider: Some(provider.clone()),
            machine: MachineId(machine),
            name: "m-1".into(),
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_replaced_provider_finishes_its_call_on_a_machine_before_the_new_one_starts() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let machines = Machines::new(tx);
        let log = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(Semaphore::new(0));
        let old = Arc::new(Recording {
            who: "old",
            log: log.clone(),
            gate: gate.clone(),
        });
        let new = Arc::new(Recording {
            who: "new",
            log: log.clone(),
            gate: gate.clone(),
        });
        machines.create(call(&old, 1));
        // The reload swapped the provider; the core removes the same machine through the new one.
        machines.remove(call(&new, 1), "test");
        // On this one thread, every task runs as far as it can while the test yields.
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        assert_eq!(*lock(&log), ["old create starts"], "the removal waits");
        gate.add_permits(1);
        let mut events = Vec::new();
        while events.len() < 2 {
            match rx.recv().await {
                Some(Input::Event(e)) => events.push(e),
                _ => panic!("the machines' inputs ended"),
            }
        }
        assert_eq!(
            *lock(&log),
            ["old create starts", "old create ends", "new remove starts"]
        );
        assert!(
            matches!(events[1], Event::MachineRemoved { .. }),
            "{events:?}"
        );
    }
}
