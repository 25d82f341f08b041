//! `drover unregister`: unregister runners from GitLab and remove them from config.toml.
//!
//! A runner created in GitLab's UI (`glrt-` token) keeps existing there: only this host's
//! manager of it is removed (`DELETE /runners/managers` with the `.runner_system_id` beside the
//! config), as GitLab Runner does; without that file drover refuses rather than guess. A runner
//! registered with a registration token is deleted (`DELETE /runners`). An entry is removed from
//! the file only once GitLab confirmed (or already had forgotten the manager).

use std::process::ExitCode;

use drover_gitlab::{Secret, mask};

use super::connect;
use crate::config::edit::{self, ConfigFile, RunnerEntry};
use crate::exit;

#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["name", "url", "all_runners"])))]
pub struct Args {
    #[command(flatten)]
    pub config: crate::paths::ConfigArg,

    /// The runner with this name.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,

    /// The runner with this GitLab URL and --token.
    #[arg(short = 'u', long, value_name = "URL", requires = "token")]
    pub url: Option<String>,

    /// The token of the runner given by --url.
    #[arg(
        short = 't',
        long,
        value_name = "TOKEN",
        requires = "url",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// Every runner in the file.
    #[arg(long)]
    pub all_runners: bool,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let path = args.config.path();
    let by_url = args.url.as_ref().zip(args.token.as_ref());
    let mut file = match (ConfigFile::load(&path), by_url) {
        (Ok(file), _) => Some(file),
        // A runner given by URL and token can be unregistered without a config file.
        (Err(_), Some(_)) if !path.exists() => None,
        (Err(e), _) => return Err(e),
    };
    let entries = file.as_ref().map(ConfigFile::runners).unwrap_or_default();
    let selected: Vec<RunnerEntry> = match (&args.name, by_url) {
        (Some(name), _) => {
            let found: Vec<_> = entries.into_iter().filter(|r| r.name == *name).collect();
            if found.is_empty() {
                return Err(exit::with_code(
                    exit::CONFIG,
                    anyhow::anyhow!("no runner named {name:?} in {}", path.display()),
                ));
            }
            found
        }
        (None, Some((url, token))) => {
            let found: Vec<_> = entries
                .into_iter()
                .filter(|r| r.token == *token && edit::same_url(&r.url, url))
                .collect();
            if found.is_empty() {
                println!(
                    "The runner is not in {}; unregistering it from GitLab only",
                    path.display()
                );
                vec![RunnerEntry {
                    index: None,
                    name: String::new(),
                    url: url.clone(),
                    token: token.clone(),
                    executor: String::new(),
                    tls_ca_file: None,
                }]
            } else {
                found
            }
        }
        (None, None) => entries,
    };
    if selected.is_empty() {
        println!("No runners in {}", path.display());
        return Ok(ExitCode::SUCCESS);
    }

    let system_id = crate::files::read_system_id(&path)?;
    let created_in_gitlab: Vec<&RunnerEntry> = selected
        .iter()
        .filter(|r| is_created_in_gitlab(&r.token))
        .collect();
    if system_id.is_none() && !created_in_gitlab.is_empty() {
        return Err(no_system_id(&path, &created_in_gitlab));
    }
    let runtime = connect::runtime()?;
    let mut removed = Vec::new();
    let mut failures = Vec::new();
    for runner in &selected {
        let who = format!(
            "name={} url={} token={}",
            runner.name,
            runner.url,
            mask::masked_token(&runner.token)
        );
        let token = Secret::new(runner.token.as_str());
        let result =
            connect::client(&runner.url, runner.tls_ca_file.as_deref()).and_then(|client| {
                let outcome = match (is_created_in_gitlab(&runner.token), &system_id) {
                    (false, _) => runtime.block_on(client.unregister_runner(&token)),
                    (true, Some(system_id)) => {
                        match runtime.block_on(client.unregister_manager(&token, system_id)) {
                            // GitLab had already forgotten this host's manager: nothing left to undo.
                            Err(e) if e.status() == Some(404) => Ok(()),
                            other => other,
                        }
                    }
                    // Refused before any call (never `DELETE /runners` for a glrt- token).
                    (true, None) => return Err(no_system_id(&path, &[runner])),
                };
                outcome.map_err(|e| exit::with_code(exit::COORDINATOR, e))
            });
        match result {
            Ok(()) => {
                println!("Unregistering runner from GitLab succeeded   {who}");
                removed.extend(runner.index);
            }
            Err(e) => {
                println!("Unregistering runner from GitLab failed      {who}\n    {e:#}");
                failures.push(e);
            }
        }
    }

    if let Some(file) = file.as_mut()
        && !removed.is_empty()
    {
        file.remove_runners(&removed);
        file.save()?;
        println!("Updated {}", path.display());
    }
    match failures.len() {
        0 => Ok(ExitCode::SUCCESS),
        n => Err(exit::with_code(
            exit::COORDINATOR,
            anyhow::anyhow!(
                "{n} runner(s) could not be unregistered and stay in {}; if GitLab no longer knows them, \
                 remove them with: drover verify --delete -c {}",
                path.display(),
                path.display()
            ),
        )),
    }
}

/// A runner created in GitLab's UI or API: its token says so (GitLab Runner's rule).
fn is_created_in_gitlab(token: &str) -> bool {
    token.starts_with("glrt-")
}

/// A `glrt-` runner is shared by all the hosts that run it; each host only removes its own
/// manager, named by the system id. Without that id there is no telling which manager is this
/// host's, and `DELETE /runners` would delete the runner for every host: refuse instead.
fn no_system_id(config: &std::path::Path, runners: &[&RunnerEntry]) -> anyhow::Error {
    let names: Vec<String> = runners
        .iter()
        .map(|r| {
            if r.name.is_empty() {
                mask::masked_token(&r.token)
            } else {
                r.name.clone()
            }
        })
        .collect();
    exit::with_code(
        exit::CONFIG,
        anyhow::anyhow!(
            "no .runner_system_id beside {}: cannot tell which runner manager is this host's; \
             nothing was unregistered (created in GitLab: {}). Put back the .runner_system_id \
             this host registered with and try again, or remove this host's manager on the \
             runner's page in GitLab and then its entry from {} by hand",
            config.display(),
            names.join(", "),
            config.display()
        ),
    )
}
