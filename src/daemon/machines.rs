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
use drover_docker::MachineEndpoint;
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
