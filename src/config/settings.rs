//! The daemon's own settings: what `config.toml` says beyond the scheduling core's
//! [`drover_core::Config`] — how to reach GitLab, how to run jobs in Docker, where machines live.

use std::fmt;

use drover_gitlab::Secret;

use super::cache::CacheSettings;
use super::diagnostic::ConfigError;

/// Global settings (the top level of `config.toml`) beyond the scheduling values (`concurrent`,
/// `check_interval`, `shutdown_timeout`, `[machine.shutdown_drain] enabled`), which are in the
/// core's [`drover_core::Config`].
#[derive(Clone, Debug, PartialEq)]
pub struct GlobalSettings {
    /// Prometheus metrics address (`listen_address`, `host:port`); `None` serves no metrics.
    pub listen_address: Option<String>,
    /// `log_level`; `None` when the file does not say.
    pub log_level: Option<LogLevel>,
    /// `log_format`; `None` when the file does not say.
    pub log_format: Option<LogFormat>,
}

/// `log_level`, with GitLab Runner's names mapped onto tracing's levels.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LogLevel {
    /// `panic`, `fatal` or `error`.
    Error,
    /// `warning` or `warn`.
    Warn,
    Info,
    Debug,
    Trace,
}

impl LogLevel {
    pub fn parse(s: &str) -> Option<LogLevel> {
        Some(match s.to_ascii_lowercase().as_str() {
            "panic" | "fatal" | "error" => LogLevel::Error,
            "warning" | "warn" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            _ => return None,
        })
    }

    /// The name tracing's filters understand.
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

/// `log_format`: GitLab Runner's `runner` and `text` are both human-readable text.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

impl LogFormat {
    pub fn parse(s: &str) -> Option<LogFormat> {
        match s.to_ascii_lowercase().as_str() {
            "runner" | "text" => Some(LogFormat::Text),
            "json" => Some(LogFormat::Json),
            _ => None,
        }
    }
}

/// One `[[runners]]` entry, as far as the daemon is concerned. `{:?}` masks the token and the
/// values of `environment` (they often hold credentials).
#[derive(Clone, PartialEq)]
pub struct RunnerSettings {
    /// Unique; the same as the core's runner name. Derived when the file has none.
    pub name: String,
    /// The GitLab URL (`url`); `None` until registered.
    pub url: Option<String>,
    /// The runner authentication token (`token`); `None` until registered.
    pub token: Option<Secret>,
    /// A PEM file of CA certificates to trust for GitLab (`tls-ca-file`).
    pub tls_ca_file: Option<String>,
    pub executor: ExecutorKind,
    /// Maximum job log size in KiB (`output_limit`, default 4096).
    pub output_limit_kb: u32,
    /// `KEY=value` variables added to every job (`environment`).
    pub environment: Vec<(String, String)>,
    /// Where builds are checked out inside the job container (`builds_dir`).
    pub builds_dir: Option<String>,
    /// Shell snippets run around the job's script (`pre_build_script`, `post_build_script`).
    pub hooks: Hooks,
    pub docker: DockerSettings,
    /// `[runners.machine]`, for `docker+machine` runners.
    pub machine: Option<MachineSettings>,
    /// `[runners.cache]` with `Type = "s3"`; `None`: caches stay on the machine.
    pub cache: Option<CacheSettings>,
    /// `cache_dir`: where the local cache's archives live inside the job (default `/cache`).
    pub cache_dir: String,
    /// `[runners.autoscaler]`, for `docker-autoscaler` runners.
    pub autoscaler: Option<Box<super::autoscaler::settings::AutoscalerSettings>>,
}

impl fmt::Debug for RunnerSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let environment: Vec<String> = self
            .environment
            .iter()
            .map(|(k, _)| format!("{k}=***"))
            .collect();
        f.debug_struct("RunnerSettings")
            .field("name", &self.name)
            .field("url", &self.url)
            .field("token", &self.token)
            .field("tls_ca_file", &self.tls_ca_file)
            .field("executor", &self.executor)
            .field("output_limit_kb", &self.output_limit_kb)
            .field("environment", &environment)
            .field("builds_dir", &self.builds_dir)
            .field("hooks", &self.hooks)
            .field("docker", &self.docker)
            .field("machine", &self.machine)
            .field("cache", &self.cache)
            .field("cache_dir", &self.cache_dir)
            .field("autoscaler", &self.autoscaler)
            .finish()
    }
}

impl RunnerSettings {
    /// The GitLab URL and token, or an error telling the operator to register the runner first.
    /// [`super::Loaded::require_registered`] checks every runner and names the file.
    pub fn require_registered(&self) -> Result<(&str, &Secret), ConfigError> {
        self.registered()
            .map_err(|missing| ConfigError::NotRegistered {
                origin: std::path::PathBuf::new(),
                runner: self.name.clone(),
                missing,
            })
    }

    /// Whether a `[runners.docker] volumes` entry holds `cache_dir`, so that the local cache
    /// outlives the job's containers (GitLab Runner's `register` writes `volumes = ["/cache"]`).
    pub fn local_cache_kept(&self) -> bool {
        self.docker
            .volumes
            .iter()
            .any(|v| volume_target(v) == Some(self.cache_dir.as_str()))
    }

    pub(super) fn registered(&self) -> Result<(&str, &Secret), &'static str> {
        match (self.url.as_deref(), self.token.as_ref()) {
            (Some(url), Some(token)) => Ok((url, token)),
            (None, None) => Err("`url` and no `token`"),
            (None, Some(_)) => Err("`url`"),
            (Some(_), None) => Err("`token`"),
        }
    }
}

/// The path inside the container of a `volumes` entry: `/dst`, `src:/dst` or `src:/dst:mode`.
pub fn volume_target(volume: &str) -> Option<&str> {
    let mut parts = volume.split(':');
    let first = parts.next()?;
    let target = parts.next().unwrap_or(first);
    let target = target.trim_end_matches('/');
    target.starts_with('/').then_some(target)
}

/// `executor`.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ExecutorKind {
    /// `docker+machine`: jobs run on machines of an autoscaled pool.
    DockerMachine,
    /// `docker`: jobs run on the runner's own Docker engine.
    Docker,
    /// `docker-autoscaler`: jobs run on instances of a cloud instance group, over SSH.
    DockerAutoscaler,
}

impl ExecutorKind {
    /// The name as written in `config.toml`.
    pub fn as_str(self) -> &'static str {
        match self {
            ExecutorKind::DockerMachine => "docker+machine",
            ExecutorKind::Docker => "docker",
            ExecutorKind::DockerAutoscaler => "docker-autoscaler",
        }
    }
}

/// Shell snippets GitLab Runner runs around each job's script.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hooks {
    pub pre_build_script: Option<String>,
    pub post_build_script: Option<String>,
}

/// `[runners.docker]`, the keys drover uses. Defaults are GitLab Runner's.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct DockerSettings {
    /// Default job image (`image`).
    pub image: Option<String>,
    /// `pull_policy`, never empty: `[Always]` when not set, as GitLab Runner does.
    pub pull_policy: Vec<PullPolicy>,
    /// Policies a job may ask for (`allowed_pull_policies`); empty means only `pull_policy`.
    pub allowed_pull_policies: Vec<PullPolicy>,
    pub allowed_images: Vec<String>,
    pub allowed_services: Vec<String>,
    pub privileged: bool,
    pub volumes: Vec<String>,
    /// The Docker engine for `docker` runners (`host`); `None` = local engine or `DOCKER_HOST`.
    pub host: Option<String>,
    pub tls_cert_path: Option<String>,
    /// `/dev/shm` size in bytes (`shm_size`); `None` = the engine's default.
    pub shm_size: Option<u64>,
    pub helper_image: Option<String>,
    pub extra_hosts: Vec<String>,
    pub dns: Vec<String>,
    pub dns_search: Vec<String>,
    /// Memory limit of the job container in bytes (`memory`, e.g. `"512m"`).
    pub memory: Option<u64>,
    /// CPUs of the job container (`cpus`, e.g. `"1.5"`).
    pub cpus: Option<f64>,
    pub cap_add: Vec<String>,
    pub cap_drop: Vec<String>,
    pub devices: Vec<String>,
    pub user: Option<String>,
    /// Services started with every job (`[[runners.docker.services]]`).
    pub services: Vec<ServiceSettings>,
    /// `disable_cache`: container-only `volumes` live as long as the job instead of being kept
    /// per project on the machine.
    pub disable_cache: bool,
    /// `cache_dir`: a host directory that holds the kept volumes instead of Docker volumes.
    pub cache_dir: Option<String>,
}

/// `pull_policy` values: the executor's own type, so the settings reach it unconverted.
pub use drover_docker::PullPolicy;

/// One `[[runners.docker.services]]` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSettings {
    /// The service image.
    pub name: String,
    /// Network aliases (`alias`, split on spaces and commas).
    pub aliases: Vec<String>,
    pub command: Vec<String>,
    pub entrypoint: Vec<String>,
    pub environment: Vec<(String, String)>,
}

/// Where a `docker+machine` runner's machines come from (drover's `Provider` key).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Provider {
    /// Sandboxes on a Docker engine: the local one, `DOCKER_HOST`, or `DockerHost`.
    Docker,
    /// Virtual machines through the `docker-machine` command (`MachineDriver`, `MachineOptions`).
    DockerMachine,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Docker => "docker",
            Provider::DockerMachine => "docker-machine",
        }
    }
}

/// `[runners.machine]`, beyond the scheduling values the core holds. `{:?}` masks option values
/// that look like credentials (`digitalocean-access-token=...`).
#[derive(Clone, PartialEq, Eq)]
pub struct MachineSettings {
    /// `Provider`: `docker-machine` when `MachineDriver` is set, else `docker`.
    pub provider: Provider,
    /// `DockerHost`, for the `docker` provider; `None` = local engine or `DOCKER_HOST`.
    pub docker_host: Option<String>,
    /// `MachineDriver`, for the `docker-machine` provider.
    pub machine_driver: Option<String>,
    /// drover's `DockerMachinePath`: the docker-machine program, an absolute path or a name looked
    /// up in `PATH`; `None` = `docker-machine` from `PATH`.
    pub docker_machine_path: Option<String>,
    /// `MachineName`, containing `%s`.
    pub machine_name: String,
    /// `MachineOptions`, passed to `docker-machine create` as `--<option>`.
    pub machine_options: Vec<String>,
    /// `MachineOptionsWithName`, with `%s` standing for the machine's name.
    pub machine_options_with_name: Vec<String>,
    /// Pull-through registry mirrors, from `engine-registry-mirror=` machine options.
    pub registry_mirrors: Vec<String>,
}

impl fmt::Debug for MachineSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mask = |v: &[String]| v.iter().map(|o| mask_option(o)).collect::<Vec<_>>();
        f.debug_struct("MachineSettings")
            .field("provider", &self.provider)
            .field("docker_host", &self.docker_host)
            .field("machine_driver", &self.machine_driver)
            .field("docker_machine_path", &self.docker_machine_path)
            .field("machine_name", &self.machine_name)
            .field("machine_options", &mask(&self.machine_options))
            .field(
                "machine_options_with_name",
                &mask(&self.machine_options_with_name),
            )
            .field("registry_mirrors", &self.registry_mirrors)
            .finish()
    }
}

/// A docker-machine option safe to show: the value of a credential-like option is masked (the
/// provider's rule, so logs and `check-config` agree).
pub use drover_providers::mask_option;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let token = Secret::new("glrt-EXAMPLEEXAMPLEEXAMPLE");
        assert_eq!(format!("{token:?}"), "\"glrt-EXAMPLEE[MASKED]\"");
        assert_eq!(token.expose(), "glrt-EXAMPLEEXAMPLEEXAMPLE");
        let short = Secret::new("ab");
        assert!(!short.masked().contains("ab"), "{}", short.masked());
        assert!(!format!("{short:?}").contains("ab"), "{short:?}");
    }

    #[test]
    fn debug_output_masks_credentials() {
        let mut r = runner(Some("https://g.example"), Some("glrt-SECRETSECRET"));
        r.environment = vec![("AWS_SECRET_ACCESS_KEY".into(), "hunter2".into())];
        r.machine = Some(MachineSettings {
            provider: Provider::DockerMachine,
            docker_host: None,
            machine_driver: Some("digitalocean".into()),
            docker_machine_path: None,
            machine_name: "ci-%s".into(),
            machine_options: vec![
                "digitalocean-access-token=MY_DIGITAL_OCEAN_TOKEN".into(),
                "digitalocean-region=nyc2".into(),
            ],
            machine_options_with_name: vec![],
            registry_mirrors: vec![],
        });
        let debug = format!("{r:?}");
        for secret in ["SECRETSECRET", "hunter2", "MY_DIGITAL_OCEAN_TOKEN"] {
            assert!(!debug.contains(secret), "{secret} leaked: {debug}");
        }
        assert!(debug.contains("AWS_SECRET_ACCESS_KEY=***"), "{debug}");
        assert!(debug.contains("digitalocean-region=nyc2"), "{debug}");
    }

    fn runner(url: Option<&str>, token: Option<&str>) -> RunnerSettings {
        RunnerSettings {
            name: "seed".into(),
            url: url.map(String::from),
            token: token.map(Secret::new),
            tls_ca_file: None,
            executor: ExecutorKind::Docker,
            output_limit_kb: 4096,
            environment: Vec::new(),
            builds_dir: None,
            hooks: Hooks::default(),
            docker: DockerSettings::default(),
            machine: None,
            cache: None,
            cache_dir: "/cache".into(),
            autoscaler: None,
        }
    }

    #[test]
    fn run_refuses_unregistered_runners() {
        let err = runner(None, None).require_registered().unwrap_err();
        assert_eq!(
            err.to_string(),
            "runner \"seed\" has no `url` and no `token`: it is not registered with GitLab\n  \
             = hint: run `drover register` first, or add the runner's `url` and `token` to its \
             [[runners]] entry"
        );
        let err = runner(Some("https://gitlab.example.com"), None)
            .require_registered()
            .unwrap_err();
        assert!(err.to_string().contains("has no `token`"), "{err}");
        let ok = runner(Some("https://g.example"), Some("glrt-x"));
        assert_eq!(
            ok.require_registered().unwrap(),
            ("https://g.example", &Secret::new("glrt-x"))
        );
    }
}
