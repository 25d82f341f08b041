//! One map of the runners drover drives, each runner's state in one [`Runner`]: its name and short
//! token (the label logs name it by), its GitLab link, what its jobs share (client, settings), and
//! where its jobs run (a local engine or a machine provider). Also the copies of the config file
//! kept for runners, so that one deleted while drover was down can still be drained.
//!
//! A machine belongs to the provider that made it: after a reload replaced a runner's provider
//! (another `DockerHost`, other `MachineOptions`), the machines the old one made are still listed,
//! run on and removed through it, and the old provider is dropped with the last of them.

use std::collections::BTreeMap;
use std::sync::Arc;

use drover_core::{Core, RunnerId};
use drover_docker::MachineEndpoint;
use drover_providers::MachineProvider;

use super::coordinator::RunnerLink;
use super::jobs::RunnerContext;
use super::short_token;
use super::state_dir::StateDir;
use crate::config::{self, Loaded, RunnerSettings};

/// Where a runner's jobs run.
#[derive(Clone)]
pub enum Place {
    /// A plain `docker` runner: straight on this engine.
    Engine(MachineEndpoint),
    /// A `docker+machine` runner: on machines of this provider.
    Provider(Arc<dyn MachineProvider>),
    /// A `docker+machine` runner without a `[runners.machine]` provider.
    Nowhere,
}

/// Everything one runner needs, built from its settings (see `adapters::build`).
pub struct Runner {
    /// `name/short-token`, how logs name the runner.
    pub label: String,
    pub link: RunnerLink,
    pub context: Arc<RunnerContext>,
    pub place: Place,
}

impl Runner {
    pub fn settings(&self) -> &RunnerSettings {
        &self.context.settings
    }

    pub fn provider(&self) -> Option<Arc<dyn MachineProvider>> {
        match &self.place {
            Place::Provider(p) => Some(p.clone()),
            _ => None,
        }
    }
}

/// How logs name a runner: its name and GitLab's short token (`linux-autoscale/abcd1234`), or
/// the machine key for a runner without a token.
pub fn label(settings: &RunnerSettings, machine_key: &str) -> String {
    let short = short_token::of_runner(settings).unwrap_or_else(|| machine_key.to_string());
    format!("{}/{short}", settings.name)
}

/// How logs name a runner the core knows, with or without adapters.
pub fn core_label(core: &Core, runners: &Runners, id: RunnerId) -> String {
    if let Some(r) = runners.get(id) {
        return r.label.clone();
    }
    core.state()
        .runner(id)
        .map(|r| format!("{}/{}", r.config.name, r.config.short_token))
        .unwrap_or_else(|| format!("unknown/{}", id.0))
}

#[derive(Default)]
pub struct Runners {
    map: BTreeMap<RunnerId, Runner>,
    /// The provider that made each machine, by runner and machine name, while it is not the
    /// runner's current one (or may stop being it: recorded at every creation). A machine not
    /// here belongs to the runner's current provider (one recovered at startup, say).
    makers: BTreeMap<(RunnerId, String), Arc<dyn MachineProvider>>,
}

impl Runners {
    pub fn get(&self, id: RunnerId) -> Option<&Runner> {
        self.map.get(&id)
    }

    pub fn get_mut(&mut self, id: RunnerId) -> Option<&mut Runner> {
        self.map.get_mut(&id)
    }

    pub fn iter(&self) -> impl Iterator<Item = (RunnerId, &Runner)> {
        self.map.iter().map(|(id, r)| (*id, r))
    }

    /// The runner whose name is `name`.
    pub fn named(&self, name: &str) -> Option<&Runner> {
        self.map.values().find(|r| r.context.name == name)
    }

    /// Every provider, current or retired, once each.
    pub fn providers(&self) -> Vec<Arc<dyn MachineProvider>> {
        let current = self.map.values().filter_map(Runner::provider);
        distinct(current.chain(self.makers.values().cloned()))
    }

    /// Records that the runner's current provider makes this machine: its later calls go there
    /// even after a reload replaced the provider.
    pub fn creating(&mut self, id: RunnerId, name: &str) {
        if let Some(provider) = self.get(id).and_then(Runner::provider) {
            self.makers.insert((id, name.to_string()), provider);
        }
    }

    /// The provider of one of the runner's machines: the one that made it, else the current one.
    pub fn provider_of(&self, id: RunnerId, name: &str) -> Option<Arc<dyn MachineProvider>> {
        self.makers
            .get(&(id, name.to_string()))
            .cloned()
            .or_else(|| self.get(id).and_then(Runner::provider))
    }

    /// Every provider that may hold machines of the runner, the current one first, once each:
    /// listing the runner's machines merges their lists.
    pub fn providers_of(&self, id: RunnerId) -> Vec<Arc<dyn MachineProvider>> {
        let current = self.get(id).and_then(Runner::provider);
        let makers = self
            .makers
            .iter()
            .filter(|((r, _), _)| *r == id)
            .map(|(_, p)| p.clone());
        distinct(current.into_iter().chain(makers))
    }

    /// The machine is gone: the provider that made it is dropped with its last machine.
    pub fn removed(&mut self, id: RunnerId, name: &str) {
        self.makers.remove(&(id, name.to_string()));
    }

    /// Forgets the makers of machines `holds` no longer knows of.
    pub fn retain_machines(&mut self, holds: impl Fn(RunnerId, &str) -> bool) {
        self.makers.retain(|(id, name), _| holds(*id, name));
    }

    /// Installs (or replaces, after a reload) a runner's adapters. Job requests in flight stay
    /// with the runner: a later `CancelRequests` still reaches them.
    pub fn install(&mut self, id: RunnerId, runner: Runner) {
        self.replace(id, runner, &[]);
    }

    /// Replaces a runner's adapters after a reload; `machines` are the names of the runner's
    /// machines. When the provider changes, those machines stay with the old one.
    pub fn replace(&mut self, id: RunnerId, mut runner: Runner, machines: &[String]) {
        if let Some(old) = self.map.remove(&id) {
            if let Some(before) = old.provider()
                && !runner.provider().is_some_and(|p| Arc::ptr_eq(&p, &before))
            {
                let mut kept = 0;
                for name in machines {
                    self.makers.entry((id, name.clone())).or_insert_with(|| {
                        kept += 1;
                        before.clone()
                    });
                }
                if kept > 0 {
                    tracing::info!(
                        runner = %runner.label,
                        machines = kept,
                        "the machine provider changed: machines made before stay with the \
                         previous provider until they are removed"
                    );
                }
            }
            runner.link.adopt(old.link);
            keep_slots(&mut runner, &old.context);
        }
        self.map.insert(id, runner);
    }
}

/// The runner's jobs go on counting `CI_CONCURRENT_ID`s where those before the reload left off,
/// so a job started after it never gets the id of one still running.
fn keep_slots(runner: &mut Runner, old: &RunnerContext) {
    match Arc::get_mut(&mut runner.context) {
        Some(context) => context.slots = old.slots.clone(),
        None => {
            let c = &runner.context;
            runner.context = Arc::new(RunnerContext {
                name: c.name.clone(),
                client: c.client.clone(),
                info: c.info.clone(),
                settings: c.settings.clone(),
                short_token: c.short_token.clone(),
                registry_mirrors: c.registry_mirrors.clone(),
                slots: old.slots.clone(),
                tls_ca_file: c.tls_ca_file.clone(),
                system_id: c.system_id.clone(),
            });
        }
    }
}

/// Each provider once, in order of first appearance.
fn distinct(
    providers: impl Iterator<Item = Arc<dyn MachineProvider>>,
) -> Vec<Arc<dyn MachineProvider>> {
    let mut all: Vec<Arc<dyn MachineProvider>> = Vec::new();
    for provider in providers {
        if !all.iter().any(|p| Arc::ptr_eq(p, &provider)) {
            all.push(provider);
        }
    }
    all
}

/// Whether the core still holds machines or jobs of the runner.
pub fn holds_anything(core: &Core, id: RunnerId) -> bool {
    core.state().runner(id).is_some_and(|r| {
        let c = &r.counts;
        c.creating + c.idle + c.busy + c.removing + c.running + c.queued > 0
    })
}

/// The settings a runner deleted from the config file ran with, from the copy kept for it.
pub fn kept_settings(state_dir: &StateDir, name: &str) -> Option<RunnerSettings> {
    let kept = state_dir.load_runner_config(name);
    let settings = kept.as_deref().and_then(|text| {
        let origin = state_dir.root().join("runners");
        match config::parse(text, &origin) {
            Ok(loaded) => loaded.runner(name).cloned(),
            Err(e) => {
                tracing::warn!(
                    runner = name,
                    "the kept copy of its config is unusable:\n{e}"
                );
                None
            }
        }
    });
    if settings.is_none() {
        tracing::error!(
            runner = name,
            "this runner was deleted from the config file while drover was down and none of \
             its settings are kept: its machines and jobs cannot be finished; remove its \
             machines by hand"
        );
    }
    settings
}

/// Keeps a copy of the config file for each runner it defines, and forgets the copies of
/// runners that are gone and hold nothing any more.
pub fn keep_configs(state_dir: &StateDir, loaded: &Loaded, core: &Core) {
    for runner in &loaded.runners {
        if let Err(e) = state_dir.save_runner_config(&runner.name, &loaded.text) {
            let runner = label(runner, "-");
            tracing::warn!(runner = %runner, "keeping a copy of its config failed: {e:#}");
        }
    }
    for name in state_dir.kept_runner_configs() {
        let needed = core.state().runner_id(&name).is_some_and(|id| {
            core.state().runner(id).is_some_and(|r| !r.retired) || holds_anything(core, id)
        });
        if !needed {
            state_dir.forget_runner_config(&name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::sync::Mutex;

    use drover_docker::{EngineConfig, MachineEndpoint};
    use drover_providers::ProviderError;
    use futures_util::FutureExt;
    use futures_util::future::BoxFuture;

    /// A provider whose machines are names in memory: an engine of its own.
    #[derive(Default)]
    struct Fake(Mutex<Vec<String>>);

    impl Fake {
        fn with(names: &[&str]) -> Arc<Fake> {
            Arc::new(Fake(Mutex::new(
                names.iter().map(|n| n.to_string()).collect(),
            )))
        }
        fn names(&self) -> Vec<String> {
            self.0.lock().unwrap().clone()
        }
    }

    fn endpoint() -> MachineEndpoint {
        MachineEndpoint::engine_only(EngineConfig {
            host: None,
            tls: None,
        })
    }

    impl MachineProvider for Fake {
        fn create<'a>(
            &'a self,
            name: &'a str,
        ) -> BoxFuture<'a, Result<MachineEndpoint, ProviderError>> {
            self.0.lock().unwrap().push(name.to_string());
            async { Ok(endpoint()) }.boxed()
        }
        fn remove<'a>(&'a self, name: &'a str) -> BoxFuture<'a, Result<(), ProviderError>> {
            self.0.lock().unwrap().retain(|n| n != name);
            async { Ok(()) }.boxed()
        }
        fn list<'a>(
            &'a self,
            prefix: &'a str,
        ) -> BoxFuture<'a, Result<Vec<String>, ProviderError>> {
            let names = self.names().into_iter().filter(|n| n.starts_with(prefix));
            let names = names.collect();
            async { Ok(names) }.boxed()
        }
        fn endpoint<'a>(
            &'a self,
            _name: &'a str,
        ) -> BoxFuture<'a, Result<MachineEndpoint, ProviderError>> {
            async { Ok(endpoint()) }.boxed()
        }
    }

    fn on(provider: &Arc<Fake>) -> Runner {
        let settings = settings("token = \"glrt-t1_AbCd1234EfGh5678\"\n");
        let config = Path::new("config.toml");
        let (link, context) =
            super::super::adapters::runner_link(&settings, "key", "s_1", config).unwrap();
        Runner {
            label: label(&settings, "key"),
            link,
            context,
            place: Place::Provider(provider.clone()),
        }
    }

    fn is(a: &Arc<dyn MachineProvider>, b: &Arc<Fake>) -> bool {
        let b: Arc<dyn MachineProvider> = b.clone();
        Arc::ptr_eq(a, &b)
    }

    #[test]
    fn a_reload_keeps_the_runners_concurrent_ids() {
        let id = RunnerId(0);
        let provider = Fake::with(&[]);
        let mut runners = Runners::default();
        runners.install(id, on(&provider));
        let before = runners.get(id).unwrap().context.slots.acquire(7);
        assert_eq!(before.id(), 0);
        runners.install(id, on(&provider));
        let after = runners.get(id).unwrap().context.slots.acquire(7);
        assert_eq!(
            after.id(),
            1,
            "the job from before the reload still holds 0"
        );
    }

    #[tokio::test]
    async fn machines_stay_with_the_provider_that_made_them_until_removed() {
        let id = RunnerId(0);
        let old = Fake::with(&["m-idle", "m-busy"]);
        let new = Fake::with(&[]);
        let mut runners = Runners::default();
        runners.install(id, on(&old));
        // A creation dispatched before the reload goes to the old provider, and stays there.
        runners.creating(id, "m-creating");
        let held = ["m-idle", "m-busy", "m-creating"].map(String::from);
        runners.replace(id, on(&new), &held);

        for name in &held {
            let provider = runners.provider_of(id, name).unwrap();
            assert!(is(&provider, &old), "{name} stays with the old provider");
        }
        runners.creating(id, "m-fresh");
        assert!(is(&runners.provider_of(id, "m-fresh").unwrap(), &new));
        assert!(is(&runners.provider_of(id, "m-unknown").unwrap(), &new));
        let listing = runners.providers_of(id);
        assert_eq!(listing.len(), 2);
        assert!(is(&listing[0], &new) && is(&listing[1], &old));
        assert_eq!(runners.providers().len(), 2, "both are shut down at exit");

        // Listing merges the old engine's machines with the new one's.
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        new.create("m-fresh").await.unwrap();
        crate::daemon::machines::Machines::new(tx).list(
            id,
            "r".into(),
            listing,
            7,
            vec!["m-".into()],
        );
        let Some(crate::daemon::Input::Event(drover_core::Event::MachinesListed { names, .. })) =
            rx.recv().await
        else {
            panic!("a list answer");
        };
        assert_eq!(names, ["m-busy", "m-fresh", "m-idle"]);

        for name in &held {
            runners.removed(id, name);
        }
        assert_eq!(runners.providers_of(id).len(), 1);
        assert_eq!(Arc::strong_count(&old), 1, "the old provider is dropped");
    }

    fn settings(token: &str) -> RunnerSettings {
        let text = format!(
            "concurrent = 1\n[[runners]]\nname = \"linux-autoscale\"\n\
             url = \"https://gitlab.example.com\"\n{token}executor = \"docker\"\n"
        );
        let loaded = config::parse(&text, Path::new("config.toml")).unwrap();
        loaded.runners[0].clone()
    }

    #[test]
    fn logs_name_a_runner_by_name_and_gitlabs_short_token() {
        let with_token = settings("token = \"glrt-t1_AbCd1234EfGh5678\"\n");
        assert_eq!(label(&with_token, "key"), "linux-autoscale/AbCd1234E");
        assert_eq!(label(&settings(""), "key"), "linux-autoscale/key");
    }
}
