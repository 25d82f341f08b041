//! drover: an autoscaling CI job runner for GitLab.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod commands;
mod config;
mod daemon;
mod exit;
mod files;
mod paths;

/// An autoscaling CI job runner for GitLab, with a deterministic scheduling core that can be
/// simulated, journaled and replayed.
#[derive(Parser)]
#[command(
    name = "drover",
    version,
    propagate_version = true,
    max_term_width = 110
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: poll GitLab, keep the machine pool warm, run jobs in Docker.
    Run(commands::run::Args),
    /// Simulate a config against a workload: job waits, fleet cost, and sweeps for capacity planning.
    Simulate(commands::simulate::Args),
    /// Validate a config.toml and show each runner's autoscaling policy over the next 7 days.
    CheckConfig(commands::check_config::Args),
    /// Replay a journal through the scheduling core, verify its digests and summarise it.
    Replay(commands::replay::Args),
    /// Register a runner with GitLab and add it to config.toml.
    Register(commands::register::Args),
    /// Check that the runners in config.toml are still known to GitLab.
    Verify(commands::verify::Args),
    /// Unregister runners from GitLab and remove them from config.toml.
    Unregister(commands::unregister::Args),
    /// List the runners in config.toml.
    List(commands::list::Args),
    /// Say whether the daemon for a config is running, with its machines and jobs.
    Status(commands::status::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => commands::run::run(args),
        Command::Simulate(args) => commands::simulate::run(args),
        Command::CheckConfig(args) => commands::check_config::run(args),
        Command::Replay(args) => commands::replay::run(args),
        Command::Register(args) => commands::register::run(args),
        Command::Verify(args) => commands::verify::run(args),
        Command::Unregister(args) => commands::unregister::run(args),
        Command::List(args) => commands::list::run(args),
        Command::Status(args) => commands::status::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err:#}");
            exit::code_for(&err)
        }
    }
}
