//! A reload's slow half, run as a task off the event loop: reading the config file and building
//! the adapters of every runner whose settings changed (a GitLab client, a provider that may
//! connect to an engine). The result comes back on the reload channel; the loop then journals the
//! reload, hands it to the core and installs the adapters, all without waiting.

use std::sync::Arc;

use drover_core::RunnerId;
use tokio::sync::mpsc::UnboundedSender;

use super::adapters::{self, Site};
use super::jobs::RunnerContext;
use super::runners::{self, Place, Runner, Runners};
use crate::config::{self, Loaded};

/// A config file read and the adapters it needs, ready to apply.
pub struct Prepared {
    pub loaded: Loaded,
    /// New adapters by runner name; a runner whose settings did not change keeps its own.
    pub runners: Vec<(String, Runner)>,
    /// Runners without adapters (added by this reload, or still waiting since start-up) whose
    /// adapters could not be built: they wait in `late.rs` while drover tries again.
    pub unbuilt: Vec<Unbuilt>,
}

/// A runner whose adapters the reload could not build, and why.
pub struct Unbuilt {
    pub settings: crate::config::RunnerSettings,
    pub short: String,
    pub error: anyhow::Error,
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

/// Starts preparing a reload of the site's config file; the answer is `None` when the file cannot be used
/// (logged; the running config stays).
pub fn spawn(site: Site, current: Current, done: UnboundedSender<Option<Prepared>>) {
    tokio::spawn(async move {
        let prepared = prepare(&site, &current).await;
        let _ = done.send(prepared);
    });
}

async fn prepare(site: &Site, current: &Current) -> Option<Prepared> {
    let loaded = match config::load(&site.config_path).and_then(config::Loaded::runnable) {
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
    let mut unbuilt = Vec::new();
    for (settings, core) in loaded.runners.iter().zip(&loaded.core.runners) {
        let previous = current.get(&settings.name);
        if previous.is_some_and(|(p, _)| p == settings) {
            continue;
        }
        let built = adapters::build(settings, &core.short_token, site, previous).await;
        match built {
            Ok(runner) => changed.push((settings.name.clone(), runner)),
            // A runner with adapters keeps them and its old settings' provider.
            Err(e) if previous.is_some() => tracing::error!(
                runner = %runners::label(settings, &core.short_token),
                "applying the reloaded settings failed: {e:#}"
            ),
            Err(error) => unbuilt.push(Unbuilt {
                settings: settings.clone(),
                short: core.short_token.clone(),
                error,
            }),
        }
    }
    Some(Prepared {
        loaded,
        runners: changed,
        unbuilt,
    })
}

/// Installs the prepared adapters of the runners the core now knows by these names; `machines`
/// names a runner's machines, which stay with the provider that made them.
pub fn install(
    prepared: Vec<(String, Runner)>,
    ids: impl Fn(&str) -> Option<RunnerId>,
    machines: impl Fn(RunnerId) -> Vec<String>,
    runners: &mut Runners,
) {
    for (name, runner) in prepared {
        if let Some(id) = ids(&name) {
            runners.replace(id, runner, &machines(id));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RUNNER: &str = "[[runners]]\nname = \"{name}\"\nurl = \"https://gitlab.example.com\"\n\
                          token = \"glrt-{name}-token\"\nexecutor = \"docker\"\noutput_limit = {limit}\n";

    fn config(runners: &[(&str, u32)]) -> String {
        let mut text = "concurrent = 2\n".to_string();
        for (name, limit) in runners {
            text.push_str(
                &RUNNER
                    .replace("{name}", name)
                    .replace("{limit}", &limit.to_string()),
            );
        }
        text
    }

    fn site(dir: &std::path::Path) -> Site {
        Site {
            system_id: "s_1".into(),
            config_path: dir.join("config.toml"),
            state_dir: dir.join("state"),
        }
    }

    async fn runners_of(site: &Site) -> Runners {
        let loaded = config::load(&site.config_path).expect("a valid config");
        let mut runners = Runners::default();
        for (i, (settings, core)) in loaded.runners.iter().zip(&loaded.core.runners).enumerate() {
            let runner = adapters::build(settings, &core.short_token, site, None)
                .await
                .expect("adapters");
            runners.install(RunnerId(i as u16), runner);
        }
        runners
    }

    #[tokio::test]
    async fn only_runners_whose_settings_changed_get_new_adapters() {
        let dir = tempfile::tempdir().unwrap();
        let site = site(dir.path());
        let path = &site.config_path;
        std::fs::write(path, config(&[("a", 4096), ("b", 4096)])).unwrap();
        let current = Current::of(&runners_of(&site).await);

        std::fs::write(path, config(&[("a", 4096), ("b", 8192), ("c", 4096)])).unwrap();
        let prepared = prepare(&site, &current).await.expect("usable");
        let names: Vec<&str> = prepared.runners.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["b", "c"], "a is unchanged");
        let (_, b) = &prepared.runners[0];
        assert_eq!(b.settings().output_limit_kb, 8192);
        assert!(b.label.starts_with("b/"), "{}", b.label);
        assert_eq!(prepared.loaded.runners.len(), 3);
    }

    #[tokio::test]
    async fn an_unusable_file_keeps_the_running_config() {
        let dir = tempfile::tempdir().unwrap();
        let site = site(dir.path());
        std::fs::write(&site.config_path, config(&[("a", 4096)])).unwrap();
        let current = Current::of(&runners_of(&site).await);
        std::fs::write(&site.config_path, "concurrent = \"many\"\n").unwrap();
        assert!(prepare(&site, &current).await.is_none());
    }
}
