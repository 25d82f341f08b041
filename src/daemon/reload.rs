//! A reload's slow half, run as a task off the event loop: reading the config file and building
//! the adapters of every runner whose settings changed (a GitLab client, a provider that may
//! connect to an engine). The result comes back on the reload channel; the loop then journals the
//! reload, hands it to the core and installs the adapters, all without waiting.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use drover_core::RunnerId;
use tokio::sync::mpsc::UnboundedSender;

use super::adapters;
use super::jobs::RunnerContext;
use super::runners::{self, Place, Runner, Runners};
use crate::config::{self, Loaded};

/// A config file read and the adapters it needs, ready to apply.
pub struct Prepared {
    pub loaded: Loaded,
    /// New adapters by runner name; a runner whose settings did not change keeps its own.
    pub runners: Vec<(String, Runner)>,
}

/// What the task needs of the runners as they are: their settings, to see what changed, and
/// where their jobs run, to keep a provider a change does not touch.
pub struct Current {
    runners: Vec<(Arc<RunnerContext>, Place)>,
}

impl Current {
    pub fn of(runners: &Runners) -> Current {
        Current {
            runners: runners
                .iter()
                .map(|(_, r)| (r.context.clone(), r.place.clone()))
                .collect(),
        }
    }

    fn get(&self, name: &str) -> Option<(&crate::config::RunnerSettings, &Place)> {
        self.runners
            .iter()
            .find(|(c, _)| c.name == name)
            .map(|(c, p)| (&c.settings, p))
    }
}

/// Starts preparing a reload of `config_path`; the answer is `None` when the file cannot be used
/// (logged; the running config stays).
pub fn spawn(
    config_path: PathBuf,
    system_id: String,
    current: Current,
    done: UnboundedSender<Option<Prepared>>,
) {
    tokio::spawn(async move {
        let prepared = prepare(&config_path, &system_id, &current).await;
        let _ = done.send(prepared);
    });
}

async fn prepare(config_path: &Path, system_id: &str, current: &Current) -> Option<Prepared> {
    let loaded = match config::load(config_path).and_then(|l| l.require_registered().map(|()| l)) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(
                "the config file changed but cannot be used; keeping the running config:\n{e}"
            );
            return None;
        }
    };
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let mut changed = Vec::new();
    for (settings, core) in loaded.runners.iter().zip(&loaded.core.runners) {
        let previous = current.get(&settings.name);
        if previous.is_some_and(|(p, _)| p == settings) {
            continue;
        }
        let built = adapters::build(
            settings,
            &core.short_token,
            system_id,
            config_path,
            previous,
        )
        .await;
        match built {
            Ok(runner) => changed.push((settings.name.clone(), runner)),
            Err(e) => tracing::error!(
                runner = %runners::label(settings, &core.short_token),
                "applying the reloaded settings failed: {e:#}"
            ),
        }
    }
    Some(Prepared {
        loaded,
        runners: changed,
    })
}

/// Installs the prepared adapters of the runners the core now knows by these names.
pub fn install(
    prepared: Vec<(String, Runner)>,
    ids: impl Fn(&str) -> Option<RunnerId>,
    runners: &mut Runners,
) {
    for (name, runner) in prepared {
        if let Some(id) = ids(&name) {
            runners.install(id, runner);
        }
    }
}
