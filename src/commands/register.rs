//! `drover register`: register a runner with GitLab and add it to config.toml.
//!
//! A runner authentication token (`glrt-`, created in GitLab's UI or API) is checked with
//! `POST /runners/verify`; a legacy registration token registers a new runner with
//! `POST /runners`. Flags and environment variables are GitLab Runner's.

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, bail};
use drover_gitlab::api::{RegisterRunnerRequest, VerifyRunnerRequest};
use drover_gitlab::{Secret, mask};

use super::connect;
use crate::config::edit::{ConfigFile, NewRunner};
use crate::daemon::adapters::runner_info;
use crate::exit;

/// The executors drover runs.
const EXECUTORS: [&str; 2] = ["docker+machine", "docker"];

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub config: crate::paths::ConfigArg,

    /// Take every value from flags and environment variables; never prompt.
    #[arg(short = 'n', long, env = "REGISTER_NON_INTERACTIVE")]
    pub non_interactive: bool,

    /// GitLab instance URL, e.g. https://gitlab.com/
    #[arg(short = 'u', long, env = "CI_SERVER_URL", value_name = "URL")]
    pub url: Option<String>,

    /// Runner authentication token (glrt-...) of a runner created in GitLab's UI or API.
    #[arg(
        short = 't',
        long,
        env = "CI_SERVER_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub token: Option<String>,

    /// Legacy registration token: registers a new runner.
    #[arg(
        short = 'r',
        long,
        env = "REGISTRATION_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub registration_token: Option<String>,

    /// Runner name [default: the host name].
    #[arg(
        long,
        visible_alias = "description",
        env = "RUNNER_NAME",
        value_name = "NAME"
    )]
    pub name: Option<String>,

    /// docker+machine (an autoscaled pool of machines) or docker.
    #[arg(long, env = "RUNNER_EXECUTOR", value_name = "EXECUTOR")]
    pub executor: Option<String>,

    /// Default image for jobs that name none.
    #[arg(long, env = "DOCKER_IMAGE", value_name = "IMAGE")]
    pub docker_image: Option<String>,

    /// Maximum number of jobs this runner handles at once (0: no limit).
    #[arg(long, env = "RUNNER_LIMIT", value_name = "N")]
    pub limit: Option<u32>,

    /// Comma-separated tags (registration token only).
    #[arg(long, env = "RUNNER_TAG_LIST", value_name = "TAGS")]
    pub tag_list: Option<String>,

    /// Run jobs without tags (registration token only).
    #[arg(long, env = "REGISTER_RUN_UNTAGGED", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub run_untagged: Option<bool>,

    /// Lock the runner to its current projects (registration token only).
    #[arg(long, env = "REGISTER_LOCKED", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub locked: Option<bool>,

    /// not_protected or ref_protected (registration token only).
    #[arg(long, env = "REGISTER_ACCESS_LEVEL", value_parser = ["not_protected", "ref_protected"], value_name = "LEVEL")]
    pub access_level: Option<String>,

    /// Maximum job timeout in seconds (registration token only).
    #[arg(long, env = "REGISTER_MAXIMUM_TIMEOUT", value_name = "SECONDS")]
    pub maximum_timeout: Option<u64>,

    /// Register the runner paused (registration token only).
    #[arg(long, env = "REGISTER_PAUSED", num_args = 0..=1, require_equals = true, default_missing_value = "true", value_name = "BOOL")]
    pub paused: Option<bool>,

    /// Free-form note for GitLab administrators (registration token only).
    #[arg(long, env = "REGISTER_MAINTENANCE_NOTE", value_name = "NOTE")]
    pub maintenance_note: Option<String>,

    /// PEM file of the CA that signed GitLab's certificate.
    #[arg(
        long = "tls-ca-file",
        env = "CI_SERVER_TLS_CA_FILE",
        value_name = "FILE"
    )]
    pub tls_ca_file: Option<PathBuf>,

    /// Keep the runner in GitLab even if writing config.toml fails.
    #[arg(long, env = "REGISTER_LEAVE_RUNNER")]
    pub leave_runner: bool,
}

/// Everything register needs, after flags, environment and prompts.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Answers {
    url: String,
    token: Token,
    name: String,
    executor: String,
    docker_image: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// `glrt-`: verify.
    Authentication(String),
    /// Legacy: `POST /runners`.
    Registration(String),
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config_path = args.config.path();
    let interactive = !args.non_interactive && std::io::stdin().is_terminal();
    let answers = if interactive {
        let stdin = std::io::stdin();
        let mut prompter = Prompter {
            input: stdin.lock(),
            output: std::io::stdout(),
        };
        answers(&args, Some(&mut prompter))?
    } else {
        answers(
            &args,
            None::<&mut Prompter<std::io::StdinLock<'_>, std::io::Stdout>>,
        )?
    };
    check_token_kind_flags(&args, &answers.token)?;
    // Relative to where register runs; written absolute, so the daemon and the other commands,
    // which resolve relative paths against the config's directory, read the same file.
    let tls_ca_file = args
        .tls_ca_file
        .as_deref()
        .map(std::path::absolute)
        .transpose()
        .context("resolving --tls-ca-file")?;

    let client = connect::client(&answers.url, tls_ca_file.as_deref())?;
    let runtime = connect::runtime()?;
    let system_id = crate::files::system_id(&config_path)?;
    let info = runner_info(&answers.executor);

    let (id, token, expires, registered_here) = match &answers.token {
        Token::Authentication(token) => {
            let request = VerifyRunnerRequest {
                info: Some(info),
                token: Secret::new(token.as_str()),
                system_id: system_id.clone(),
            };
            let verified = runtime
                .block_on(client.verify_runner(&request))
                .map_err(|e| exit::with_code(exit::COORDINATOR, e))?;
            let Some(verified) = verified.filter(|v| v.id != 0) else {
                return Err(exit::with_code(
                    exit::COORDINATOR,
                    anyhow::anyhow!(
                        "{} accepted the token but did not confirm the runner; this GitLab is too old \
                         for runner authentication tokens: use --registration-token",
                        answers.url
                    ),
                ));
            };
            let confirmed = if verified.token.is_empty() {
                token.clone()
            } else {
                verified.token.expose().to_owned()
            };
            (verified.id, confirmed, verified.token_expires_at, false)
        }
        Token::Registration(token) => {
            let request = RegisterRunnerRequest {
                description: answers.name.clone(),
                maintenance_note: args.maintenance_note.clone().unwrap_or_default(),
                tag_list: args.tag_list.clone().unwrap_or_default(),
                run_untagged: args.run_untagged,
                locked: args.locked,
                access_level: args.access_level.clone().unwrap_or_default(),
                maximum_timeout: args.maximum_timeout.unwrap_or(0),
                paused: args.paused,
                info,
                token: Secret::new(token.as_str()),
            };
            let registered = runtime
                .block_on(client.register_runner(&request))
                .map_err(|e| exit::with_code(exit::COORDINATOR, e))?;
            (
                registered.id,
                registered.token.expose().to_owned(),
                registered.token_expires_at,
                true,
            )
        }
    };

    let saved = (|| -> anyhow::Result<()> {
        let mut file = ConfigFile::load_or_new(&config_path)?;
        if file.runners().iter().any(|r| r.token == token) {
            bail!(
                "{} already has a runner with token {}; nothing added",
                config_path.display(),
                mask::masked_token(&token)
            );
        }
        let new = NewRunner {
            name: answers.name.clone(),
            url: answers.url.clone(),
            id,
            token: token.clone(),
            token_expires_at: expires.clone(),
            executor: answers.executor.clone(),
            limit: args.limit,
            docker_image: answers.docker_image.clone(),
            tls_ca_file: tls_ca_file.clone(),
        };
        file.add_runner(&new, chrono::Utc::now())?;
        file.save()
    })();
    if let Err(error) = saved {
        if registered_here && !args.leave_runner {
            // Do not leave a runner in GitLab that no config knows about.
            let undo = runtime.block_on(client.unregister_runner(&Secret::new(token.as_str())));
            if let Err(e) = undo {
                eprintln!("warning: could not remove the new runner from GitLab again: {e}");
            }
        }
        return Err(error);
    }

    println!(
        "Runner registered successfully: name={} id={} token={} executor={}",
        answers.name,
        id,
        mask::masked_token(&token),
        answers.executor
    );
    println!("Configuration saved in {}", config_path.display());
    println!("Start it with: drover run -c {}", config_path.display());
    Ok(ExitCode::SUCCESS)
}

/// Settings a runner created in the UI keeps in GitLab: they cannot be set at registration.
fn check_token_kind_flags(args: &Args, token: &Token) -> anyhow::Result<()> {
    if matches!(token, Token::Registration(_)) {
        return Ok(());
    }
    let given: Vec<&str> = [
        ("--tag-list", args.tag_list.is_some()),
        ("--run-untagged", args.run_untagged.is_some()),
        ("--locked", args.locked.is_some()),
        ("--access-level", args.access_level.is_some()),
        ("--maximum-timeout", args.maximum_timeout.is_some()),
        ("--paused", args.paused.is_some()),
        ("--maintenance-note", args.maintenance_note.is_some()),
    ]
    .into_iter()
    .filter_map(|(flag, set)| set.then_some(flag))
    .collect();
    if !given.is_empty() {
        return Err(exit::with_code(
            exit::CONFIG,
            anyhow::anyhow!(
                "{} cannot be set when registering with a runner authentication token (glrt-): \
                 change them on the runner's page in GitLab",
                given.join(", ")
            ),
        ));
    }
    Ok(())
}

/// Fills the answers from flags and environment, asking through `prompter` for what is missing
/// (non-interactive without a prompter: missing values are errors).
fn answers<R: BufRead, W: Write>(
    args: &Args,
    mut prompter: Option<&mut Prompter<R, W>>,
) -> anyhow::Result<Answers> {
    let missing = |what: &str, flag: &str, env: &str| {
        exit::with_code(
            exit::CONFIG,
            anyhow::anyhow!(
                "{what} is required: pass {flag} (or set {env}), or run without --non-interactive in a terminal"
            ),
        )
    };
    let url = match (&args.url, prompter.as_deref_mut()) {
        (Some(url), _) => url.clone(),
        (None, Some(p)) => p.ask(
            "Enter the GitLab instance URL (for example, https://gitlab.com/):",
            None,
        )?,
        (None, None) => return Err(missing("the GitLab URL", "--url", "CI_SERVER_URL")),
    };
    drover_gitlab::normalize_url(&url).map_err(|e| exit::with_code(exit::CONFIG, e))?;

    let token = match (
        &args.token,
        &args.registration_token,
        prompter.as_deref_mut(),
    ) {
        (Some(_), Some(_), _) => {
            return Err(exit::with_code(
                exit::CONFIG,
                anyhow::anyhow!("give either --token (glrt-) or --registration-token, not both"),
            ));
        }
        (Some(t), None, _) => Token::Authentication(t.clone()),
        (None, Some(t), _) if t.starts_with("glrt-") => {
            return Err(exit::with_code(
                exit::CONFIG,
                anyhow::anyhow!(
                    "that is a runner authentication token (glrt-); pass it with --token"
                ),
            ));
        }
        (None, Some(t), _) => Token::Registration(t.clone()),
        (None, None, Some(p)) => {
            let t = p.ask(
                "Enter the runner authentication token (glrt-...) or a registration token:",
                None,
            )?;
            if t.starts_with("glrt-") {
                Token::Authentication(t)
            } else {
                Token::Registration(t)
            }
        }
        (None, None, None) => {
            return Err(missing(
                "a token",
                "--token (glrt-) or --registration-token",
                "CI_SERVER_TOKEN or REGISTRATION_TOKEN",
            ));
        }
    };

    let default_name = hostname();
    let name = match (&args.name, prompter.as_deref_mut()) {
        (Some(name), _) => name.clone(),
        (None, Some(p)) => p.ask("Enter a name for the runner:", Some(&default_name))?,
        (None, None) => default_name,
    };

    let executor = match (&args.executor, prompter.as_deref_mut()) {
        (Some(e), _) => e.clone(),
        (None, Some(p)) => loop {
            let e = p.ask(
                &format!("Enter an executor: {}:", EXECUTORS.join(", ")),
                None,
            )?;
            if EXECUTORS.contains(&e.as_str()) {
                break e;
            }
            p.say(&format!(
                "drover runs the executors {}",
                EXECUTORS.join(" and ")
            ))?;
        },
        (None, None) => return Err(missing("the executor", "--executor", "RUNNER_EXECUTOR")),
    };
    if !EXECUTORS.contains(&executor.as_str()) {
        return Err(exit::with_code(
            exit::CONFIG,
            anyhow::anyhow!(
                "executor {executor:?} is not supported: drover runs {}",
                EXECUTORS.join(" and ")
            ),
        ));
    }

    let docker_image = match (&args.docker_image, prompter) {
        (Some(image), _) => image.clone(),
        (None, Some(p)) => p.ask(
            "Enter the default Docker image (for example, ruby:3.3):",
            None,
        )?,
        (None, None) => {
            return Err(missing(
                "the default Docker image",
                "--docker-image",
                "DOCKER_IMAGE",
            ));
        }
    };
    Ok(Answers {
        url,
        token,
        name,
        executor,
        docker_image: Some(docker_image),
    })
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok().filter(|h| !h.is_empty()))
        .unwrap_or_else(|| "drover".into())
}

/// Questions on a terminal, one line per answer.
struct Prompter<R, W> {
    input: R,
    output: W,
}

impl<R: BufRead, W: Write> Prompter<R, W> {
    /// Asks until an answer is given (or `default` is taken on an empty line).
    fn ask(&mut self, question: &str, default: Option<&str>) -> anyhow::Result<String> {
        loop {
            match default {
                Some(d) => write!(self.output, "{question} [{d}]\n> ")?,
                None => write!(self.output, "{question}\n> ")?,
            }
            self.output.flush()?;
            let mut line = String::new();
            if self
                .input
                .read_line(&mut line)
                .context("reading the answer")?
                == 0
            {
                bail!("no answer to {question:?}: input ended");
            }
            let answer = line.trim();
            if !answer.is_empty() {
                return Ok(answer.to_owned());
            }
            if let Some(d) = default {
                return Ok(d.to_owned());
            }
        }
    }

    fn say(&mut self, text: &str) -> anyhow::Result<()> {
        writeln!(self.output, "{text}")?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn args(argv: &[&str]) -> Args {
        Cli::try_parse_from(std::iter::once("register").chain(argv.iter().copied()))
            .unwrap()
            .args
    }

    fn prompted(argv: &[&str], input: &str) -> (anyhow::Result<Answers>, String) {
        let mut p = Prompter {
            input: std::io::Cursor::new(input.as_bytes().to_vec()),
            output: Vec::new(),
        };
        let result = answers(&args(argv), Some(&mut p));
        (result, String::from_utf8(p.output).unwrap())
    }

    #[test]
    fn prompts_for_what_is_missing_like_gitlab_runner() {
        let (answers, shown) = prompted(
            &["--name", "ci-07"],
            "https://gitlab.example.com/\nglrt-abc\nshell\ndocker+machine\nalpine:3.20\n",
        );
        let answers = answers.unwrap();
        assert_eq!(answers.url, "https://gitlab.example.com/");
        assert_eq!(answers.token, Token::Authentication("glrt-abc".into()));
        assert_eq!(answers.name, "ci-07");
        assert_eq!(answers.executor, "docker+machine");
        assert_eq!(answers.docker_image.as_deref(), Some("alpine:3.20"));
        assert!(shown.contains("Enter the GitLab instance URL"), "{shown}");
        assert!(
            shown.contains("drover runs the executors docker+machine and docker"),
            "{shown}"
        );
        assert!(
            !shown.contains("Enter a name"),
            "given names are not asked: {shown}"
        );
    }

    #[test]
    fn a_registration_token_and_a_default_name_from_prompts() {
        let (answers, shown) = prompted(&[], "http://h\n\nGR1348941x\n\ndocker\n\nbusybox\n");
        let answers = answers.unwrap();
        assert_eq!(answers.token, Token::Registration("GR1348941x".into()));
        assert_eq!(answers.name, hostname(), "an empty line takes the default");
        assert!(
            shown
                .matches("Enter the runner authentication token")
                .count()
                == 2,
            "re-asked: {shown}"
        );
    }

    #[test]
    fn input_that_ends_early_is_an_error() {
        let (answers, _) = prompted(&[], "http://h\n");
        assert!(format!("{:#}", answers.unwrap_err()).contains("input ended"));
    }

    #[test]
    fn non_interactive_needs_every_value() {
        let err =
            answers::<std::io::Empty, Vec<u8>>(&args(&["--url", "http://h"]), None).unwrap_err();
        assert!(
            format!("{err:#}").contains("--token (glrt-) or --registration-token"),
            "{err:#}"
        );
        let err = answers::<std::io::Empty, Vec<u8>>(
            &args(&[
                "--url",
                "http://h",
                "--token",
                "glrt-x",
                "--executor",
                "shell",
                "--docker-image",
                "a",
            ]),
            None,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("not supported"), "{err:#}");
        let err = answers::<std::io::Empty, Vec<u8>>(
            &args(&["--url", "http://h", "--registration-token", "glrt-x"]),
            None,
        )
        .unwrap_err();
        assert!(
            format!("{err:#}").contains("pass it with --token"),
            "{err:#}"
        );
    }

    #[test]
    fn ui_settings_are_refused_with_a_glrt_token() {
        let a = args(&["--tag-list", "a,b", "--locked=false"]);
        let err = check_token_kind_flags(&a, &Token::Authentication("glrt-x".into())).unwrap_err();
        assert!(
            format!("{err:#}").contains("--tag-list, --locked cannot be set"),
            "{err:#}"
        );
        assert!(check_token_kind_flags(&a, &Token::Registration("GR".into())).is_ok());
        assert_eq!(a.locked, Some(false));
        assert_eq!(args(&["--locked"]).locked, Some(true));
    }
}
