//! `drover run`: the daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::config::{LogFormat, LogLevel};
use crate::daemon::{RunOptions, run as run_daemon};
use crate::exit;

#[derive(clap::Args, Debug)]
#[command(
    after_help = "Signals: SIGQUIT drains gracefully (running jobs finish, then exit 0); SIGTERM or \
SIGINT abort jobs and exit within shutdown_timeout (a second one exits at once); SIGHUP or a changed \
config file reloads the config live."
)]
pub struct Args {
    #[command(flatten)]
    pub config: crate::paths::ConfigArg,
    /// Where the journal and jobs in flight are kept [default: .drover-state/<config name> beside the config]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = args.config.path();
    let load = |config: &std::path::Path| -> anyhow::Result<crate::config::Loaded> {
        crate::config::load(config)
            .and_then(crate::config::Loaded::runnable)
            .map_err(|e| exit::with_code(exit::CONFIG, e))
    };
    let mut loaded = load(&config)?;
    // Every machine key includes the system id, from the first start on: a config run for the
    // first time gets one now (only once it is known to be runnable, so a refused file leaves
    // nothing behind) and is read again with it.
    let has_id = crate::files::read_system_id(&config)
        .map_err(|e| exit::with_code(exit::CONFIG, e))?
        .is_some();
    if !has_id {
        crate::files::system_id(&config).map_err(|e| exit::with_code(exit::CONFIG, e))?;
        loaded = load(&config)?;
    }
    init_logging(loaded.global.log_format, loaded.global.log_level);
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let state_dir = args
        .state_dir
        .unwrap_or_else(|| crate::paths::default_state_dir(&config));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(run_daemon(RunOptions { config, state_dir }, loaded))
}

/// Logs with `tracing`: human-readable by default, JSON with `log_format = "json"`; `RUST_LOG`
/// overrides `log_level`.
fn init_logging(format: Option<LogFormat>, level: Option<LogLevel>) {
    use tracing_subscriber::EnvFilter;
    let default = level.map_or("info", |l| l.as_str());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // Colours only for a person at a terminal, not in files and journals.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    match format {
        Some(LogFormat::Json) => builder.json().init(),
        _ => builder.init(),
    }
}
