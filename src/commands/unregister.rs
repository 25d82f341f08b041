//! `drover unregister`: unregister runners from GitLab and remove them from config.toml.
//!
//! A runner created in GitLab's UI (`glrt-` token) keeps existing there: only this host's
//! manager of it is removed (`DELETE /runners/managers`). A runner registered with a
//! registration token is deleted (`DELETE /runners`). An entry is removed from the file only
//! once GitLab confirmed (or already had forgotten the manager).

use std::process::ExitCode;

use drover_gitlab::{Secret, mask};

use super::runner_entries::{self, ConfigFile, RunnerEntry};
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
                .filter(|r| r.token == *token && runner_entries::same_url(&r.url, url))
                .collect();
            if found.is_empty() {
                println!(
                    "The runner is not in {}; unregistering it from GitLab only",
                    path.display()
                );
                vec![RunnerEntry {
                    index: usize::MAX,
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

    let system_id = runner_entries::read_system_id(&path)?;
    let runtime = runner_entries::runtime()?;
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
            runner_entries::client(&runner.url, runner.tls_ca_file.as_deref()).and_then(|client| {
                let outcome = match (&system_id, runner.token.starts_with("glrt-")) {
                    (Some(system_id), true) => {
                        match runtime.block_on(client.unregister_manager(&token, system_id)) {
                            // GitLab had already forgotten this host's manager: nothing left to undo.
                            Err(e) if e.status() == Some(404) => Ok(()),
                            other => other,
                        }
                    }
                    _ => runtime.block_on(client.unregister_runner(&token)),
                };
                outcome.map_err(|e| exit::with_code(exit::COORDINATOR, e))
            });
        match result {
            Ok(()) => {
                println!("Unregistering runner from GitLab succeeded   {who}");
                removed.push(runner.index);
            }
            Err(e) => {
                println!("Unregistering runner from GitLab failed      {who}\n    {e:#}");
                failures.push(e);
            }
        }
    }

    if let Some(file) = file.as_mut() {
        let in_file: Vec<usize> = removed
            .iter()
            .copied()
            .filter(|i| *i != usize::MAX)
            .collect();
        if !in_file.is_empty() {
            file.remove_runners(&in_file);
            file.save()?;
            println!("Updated {}", path.display());
        }
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
