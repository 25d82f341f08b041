//! Machine providers, one per pool runner: create, remove and list by name, answered as events.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use drover_core::{CreationFailure, Event, MachineId, RunnerId};
use drover_docker::MachineEndpoint;
use drover_providers::MachineProvider;
use tokio::sync::mpsc::UnboundedSender;

use super::Input;

pub struct Machines {
    providers: BTreeMap<RunnerId, Arc<dyn MachineProvider>>,
    inputs: UnboundedSender<Input>,
    /// Each runner's last creation error (providers mask credentials in them), written before the
    /// failure's event is sent: a job the core fails for it gets it in its trace.
    creation_errors: Arc<Mutex<BTreeMap<RunnerId, String>>>,
}

impl Machines {
    pub fn new(inputs: UnboundedSender<Input>) -> Machines {
        Machines {
            providers: BTreeMap::new(),
            inputs,
            creation_errors: Arc::default(),
        }
    }

    /// The runner's last creation error, if any.
    pub fn creation_error(&self, runner: RunnerId) -> Option<String> {
        let errors = self
            .creation_errors
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        errors.get(&runner).cloned()
    }

    fn record_creation_error(
        errors: &Mutex<BTreeMap<RunnerId, String>>,
        runner: RunnerId,
        error: String,
    ) {
        let mut errors = errors.lock().unwrap_or_else(|e| e.into_inner());
        errors.insert(runner, error);
    }

    pub fn set(&mut self, runner: RunnerId, provider: Arc<dyn MachineProvider>) {
        self.providers.insert(runner, provider);
    }

    pub fn provider(&self, runner: RunnerId) -> Option<Arc<dyn MachineProvider>> {
        self.providers.get(&runner).cloned()
    }

    fn missing(&self, runner: RunnerId) -> bool {
        if self.providers.contains_key(&runner) {
            return false;
        }
        tracing::error!(runner = runner.0, "no machine provider for this runner");
        true
    }

    pub fn create(&self, runner: RunnerId, machine: MachineId, name: String) {
        if self.missing(runner) {
            let error = "no machine provider is configured for this runner".to_string();
            Self::record_creation_error(&self.creation_errors, runner, error);
            let _ = self.inputs.send(Input::Event(Event::MachineCreationFailed {
                machine,
                failure: CreationFailure::Fatal,
            }));
            return;
        }
        let provider = self.providers[&runner].clone();
        let inputs = self.inputs.clone();
        let errors = self.creation_errors.clone();
        tokio::spawn(async move {
            tracing::info!(machine = %name, "creating machine");
            let event = match provider.create(&name).await {
                Ok(_) => Event::MachineCreated { machine },
                Err(e) => {
                    tracing::warn!(machine = %name, "creating the machine failed: {e}");
                    let failure = e.creation_failure();
                    let error = format!("creating machine {name} failed: {e}");
                    Self::record_creation_error(&errors, runner, error);
                    Event::MachineCreationFailed { machine, failure }
                }
            };
            let _ = inputs.send(Input::Event(event));
        });
    }

    pub fn remove(&self, runner: RunnerId, machine: MachineId, name: String, reason: &'static str) {
        if self.missing(runner) {
            let _ = self
                .inputs
                .send(Input::Event(Event::MachineRemovalFailed { machine }));
            return;
        }
        let provider = self.providers[&runner].clone();
        let inputs = self.inputs.clone();
        tokio::spawn(async move {
            tracing::info!(machine = %name, reason, "removing machine");
            let event = match provider.remove(&name).await {
                Ok(()) => Event::MachineRemoved { machine },
                Err(e) => {
                    tracing::warn!(machine = %name, "removing the machine failed: {e}");
                    Event::MachineRemovalFailed { machine }
                }
            };
            let _ = inputs.send(Input::Event(event));
        });
    }

    /// Lists the machines under every prefix and answers with all their names at once.
    pub fn list(&self, runner: RunnerId, request: u64, prefixes: Vec<String>) {
        let Some(provider) = self.providers.get(&runner).cloned() else {
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
                        tracing::warn!(runner = runner.0, "listing machines failed: {e}");
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
