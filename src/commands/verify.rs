//! `drover verify`: check that GitLab still knows the runners in config.toml.
//!
//! Each runner is checked with `POST /runners/verify`. A runner GitLab refuses (403) is
//! reported invalid and, with `--delete`, removed from the file; a runner that could not be
//! checked (GitLab unreachable) is never removed. Exits 0 when every runner left in the file is
//! valid, and with the coordinator exit code otherwise.

use std::process::ExitCode;

use drover_gitlab::api::VerifyRunnerRequest;
use drover_gitlab::{Error, Secret, mask};

use super::connect;
use crate::config::edit::ConfigFile;
use crate::daemon::adapters::runner_info;
use crate::exit;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub config: crate::paths::ConfigArg,

    /// Remove the runners GitLab no longer knows from config.toml.
    #[arg(long)]
    pub delete: bool,

    /// Only the runner with this name.
    #[arg(long, value_name = "NAME")]
    pub name: Option<String>,
}

enum Verdict {
    Valid,
    Invalid(String),
    Unknown(String),
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let path = args.config.path();
    let mut file = ConfigFile::load(&path)?;
    let runners: Vec<_> = file
        .runners()
        .into_iter()
        .filter(|r| args.name.as_ref().is_none_or(|n| *n == r.name))
        .collect();
    if runners.is_empty() {
        match &args.name {
            Some(name) => {
                return Err(exit::with_code(
                    exit::CONFIG,
                    anyhow::anyhow!("no runner named {name:?} in {}", path.display()),
                ));
            }
            None => {
                println!("No runners in {}", path.display());
                return Ok(ExitCode::SUCCESS);
            }
        }
    }
    let system_id = crate::files::read_system_id(&path)?.unwrap_or_default();
    let runtime = connect::runtime()?;

    let mut invalid = Vec::new();
    let mut unknown = 0;
    for runner in &runners {
        let verdict = if runner.token.is_empty() {
            Verdict::Invalid("it has no token".into())
        } else {
            match connect::client(&runner.url, runner.tls_ca_file.as_deref()) {
                Err(e) => Verdict::Unknown(format!("{e:#}")),
                Ok(client) => {
                    let request = VerifyRunnerRequest {
                        info: Some(runner_info(&runner.executor)),
                        token: Secret::new(runner.token.as_str()),
                        system_id: system_id.clone(),
                    };
                    match runtime.block_on(client.verify_runner(&request)) {
                        Ok(_) => Verdict::Valid,
                        Err(e @ Error::Forbidden { .. }) => Verdict::Invalid(e.to_string()),
                        Err(e) => Verdict::Unknown(e.to_string()),
                    }
                }
            }
        };
        let who = format!(
            "name={} url={} token={}",
            runner.name,
            runner.url,
            mask::masked_token(&runner.token)
        );
        match verdict {
            Verdict::Valid => println!("Verifying runner... is valid      {who}"),
            Verdict::Invalid(why) => {
                println!("Verifying runner... is removed    {who}\n    {why}");
                invalid.extend(runner.index);
            }
            Verdict::Unknown(why) => {
                println!("Verifying runner... not checked   {who}\n    {why}");
                unknown += 1;
            }
        }
    }

    if args.delete && !invalid.is_empty() {
        file.remove_runners(&invalid);
        file.save()?;
        println!(
            "Removed {} runner(s) from {}",
            invalid.len(),
            path.display()
        );
        invalid.clear();
    }
    if !invalid.is_empty() || unknown > 0 {
        let mut problems = Vec::new();
        if !invalid.is_empty() {
            problems.push(format!(
                "{} runner(s) are no longer known to GitLab (remove them with --delete)",
                invalid.len()
            ));
        }
        if unknown > 0 {
            problems.push(format!("{unknown} runner(s) could not be checked"));
        }
        return Err(exit::with_code(
            exit::COORDINATOR,
            anyhow::anyhow!("{}", problems.join("; ")),
        ));
    }
    Ok(ExitCode::SUCCESS)
}
