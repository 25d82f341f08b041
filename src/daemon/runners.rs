//! One map of the runners drover drives, each runner's state in one [`Runner`]: its name and short
//! token (the label logs name it by), its GitLab link, what its jobs share (client, settings), and
//! where its jobs run (a local engine or a machine provider). Also the copies of the config file
//! kept for runners, so that one deleted while drover was down can still be drained.

use std::collections::BTreeMap;
use std::sync::Arc;

use drover_core::{Core, RunnerId};
use drover_docker::MachineEndpoint;
use drover_providers::MachineProvider;

use super::coordinator::RunnerLink;
use super::jobs::RunnerContext;
use super::short_token::gitlab_short_token;
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
    let short = settings.token.as_ref().map_or_else(
        || machine_key.to_string(),
        |t| gitlab_short_token(t.expose()),
    );
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

    /// Every runner's provider, once each.
    pub fn providers(&self) -> Vec<Arc<dyn MachineProvider>> {
        let mut all: Vec<Arc<dyn MachineProvider>> = Vec::new();
        for provider in self.map.values().filter_map(Runner::provider) {
            if !all.iter().any(|p| Arc::ptr_eq(p, &provider)) {
                all.push(provider);
            }
        }
        all
    }

    /// Installs (or replaces, after a reload) a runner's adapters. Job requests in flight stay
    /// with the runner: a later `CancelRequests` still reaches them.
    pub fn install(&mut self, id: RunnerId, mut runner: Runner) {
        if let Some(old) = self.map.remove(&id) {
            runner.link.adopt_requests(old.link);
        }
        self.map.insert(id, runner);
    }
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
