//! Machine calls (create, remove, list by prefix) on a runner's provider, each a spawned task
//! answered as an event. Every call carries its provider and names ([`MachineCall`]), built when
//! the core's command is dispatched, so no task reaches back into the daemon's maps.
//!
//! Calls on one machine name are serialised across providers: a reload that replaces a runner's
//! provider (its `MachineOptions` or `DockerHost` changed) lets the old provider's call on a
//! machine finish before the new provider's call on that machine starts.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

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
    /// Each runner's last creation error (providers mask credentials in them), written before the
    /// failure's event is sent: a job the core fails for it gets it in its trace.
    creation_errors: Arc<Mutex<BTreeMap<RunnerId, String>>>,
    locks: NameLocks,
}

impl Machines {
    pub fn new(inputs: UnboundedSender<Input>) -> Machines {
        Machines {
            inputs,
            creation_errors: Arc::default(),
            locks: NameLocks::default(),
        }
    }

    /// The runner's last creation error, if any.
    pub fn creation_error(&self, runner: RunnerId) -> Option<String> {
        lock(&self.creation_errors).get(&runner).cloned()
    }

    pub fn create(&self, call: MachineCall) {
        let MachineCall {
            runner,
            label,
            provider,
            machine,
            name,
        } = call;
        let errors = self.creation_errors.clone();
        let Some(provider) = provider else {
            tracing::error!(runner = %label, "no machine provider for this runner");
            let error = "no machine provider is configured for this runner".to_string();
            lock(&errors).insert(runner, error);
            let _ = self.inputs.send(Input::Event(Event::MachineCreationFailed {
                machine,
                failure: CreationFailure::Fatal,
            }));
            return;
        };
        let inputs = self.inputs.clone();
        let locks = self.locks.clone();
        tokio::spawn(async move {
            let _held = locks.acquire(&name).await;
            tracing::info!(runner = %label, machine = %name, "creating machine");
            let event = match provider.create(&name).await {
                Ok(_) => Event::MachineCreated { machine },
                Err(e) => {
                    tracing::warn!(runner = %label, machine = %name, "creating the machine failed: {e}");
                    let failure = e.creation_failure();
                    let error = format!("creating machine {name} failed: {e}");
                    lock(&errors).insert(runner, error);
                    Event::MachineCreationFailed { machine, failure }
                }
            };
            let _ = inputs.send(Input::Event(event));
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
            let _held = locks.acquire(&name).await;
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

/// One lock per machine name with a call in flight, whichever provider makes the call. An entry
/// lives while some call holds or waits for it.
#[derive(Clone, Default)]
struct NameLocks {
    names: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// Held while a call on one machine runs; the last one out removes the entry.
struct Held {
    locks: NameLocks,
    name: String,
    entry: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl NameLocks {
    async fn acquire(&self, name: &str) -> Held {
        let entry = lock(&self.names)
            .entry(name.to_string())
            .or_default()
            .clone();
        let guard = entry.clone().lock_owned().await;
        Held {
            locks: self.clone(),
            name: name.to_string(),
            entry,
            guard: Some(guard),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.guard.take();
        let mut names = lock(&self.locks.names);
        // The map's reference and this one: nobody else holds or waits for the name. Others
        // clone the entry only under the map's lock, which is held here.
        if Arc::strong_count(&self.entry) == 2 {
            names.remove(&self.name);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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

    #[tokio::test]
    async fn calls_on_one_name_wait_for_each_other_and_leave_no_entry_behind() {
        let locks = NameLocks::default();
        let first = locks.acquire("m-1").await;
        let other = locks.acquire("m-2").await;
        let mut second = Box::pin(locks.acquire("m-1"));
        assert!(
            futures_util::poll!(second.as_mut()).is_pending(),
            "a second call on m-1 waits"
        );
        drop(first);
        let second = second.await;
        drop(second);
        drop(other);
        assert!(lock(&locks.names).is_empty(), "entries are removed");
    }
}
