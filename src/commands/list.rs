//! `drover list`: the runners in config.toml (no network).

use std::process::ExitCode;

use drover_gitlab::mask;

use crate::config::edit::ConfigFile;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub config: crate::paths::ConfigArg,
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let path = args.config.path();
    let file = ConfigFile::load(&path)?;
    let runners = file.runners();
    eprintln!("Listing configured runners   config={}", path.display());
    if runners.is_empty() {
        println!("No runners in {}", path.display());
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 4]> = runners
        .iter()
        .map(|r| {
            let name = if r.name.is_empty() {
                "(no name)".to_owned()
            } else {
                r.name.clone()
            };
            [
                name,
                r.executor.clone(),
                r.url.clone(),
                mask::masked_token(&r.token),
            ]
        })
        .collect();
    let header = ["NAME", "EXECUTOR", "URL", "TOKEN"].map(String::from);
    let widths: Vec<usize> = (0..4)
        .map(|i| {
            rows.iter()
                .chain([&header])
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in std::iter::once(&header).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
    Ok(ExitCode::SUCCESS)
}
