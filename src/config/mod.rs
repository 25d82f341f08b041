//! `config.toml`: GitLab Runner's format, parsed into drover's validated configs.
//!
//! [`load`] (or [`parse`]) reads the file in three layers:
//! 1. the TOML document, with the byte span of every key and value;
//! 2. a walk over the document with the key lists of [`schema`], section by section;
//! 3. the typed raw layer ([`raw`], GitLab Runner's key names), then validation into the core's
//!    [`drover_core::Config`] plus the daemon's [`GlobalSettings`] and [`RunnerSettings`].
//!
//! Every error carries the file, line and column, the offending line with a caret, and a hint.
//!
//! # Which keys drover reads
//!
//! Sections drover owns: the top level, `[[runners]]`, `[runners.machine]`,
//! `[[runners.machine.autoscaling]]`, `[runners.docker]`, `[[runners.docker.services]]`,
//! `[runners.cache]`, `[runners.cache.s3]`, `[machine.shutdown_drain]`, `[runners.autoscaler]` and
//! its sections ([`autoscaler`] lists their keys). In those, a key that is
//! neither read nor a known GitLab Runner key
//! is an error with a "did you mean" hint (`IdelCount` → `IdleCount`). Keys are case-sensitive.
//!
//! | section | read and acted on |
//! |---|---|
//! | top level | `concurrent` (required, ≥ 1), `check_interval`, `shutdown_timeout`, `log_level`, `log_format`, `listen_address` |
//! | `[machine.shutdown_drain]` | `enabled` |
//! | `[[runners]]` | `name`, `url`, `token`, `tls-ca-file`, `executor`, `limit`, `output_limit`, `request_concurrency`, `environment`, `builds_dir`, `cache_dir`, `pre_build_script`, `post_build_script` |
//! | `[runners.machine]` | `IdleCount`, `IdleCountMin`, `IdleScaleFactor`, `IdleTime`, `MaxBuilds`, `MaxGrowthRate`, `MaxRemovalAttempts`, `MachineDriver`, `MachineName`, `MachineOptions`, `MachineOptionsWithName`, and drover's own `Provider`, `DockerHost` and `DockerMachinePath` |
//! | `[[runners.machine.autoscaling]]` | `Periods`, `Timezone`, `IdleCount`, `IdleCountMin`, `IdleScaleFactor`, `IdleTime` |
//! | `[runners.docker]` | `image`, `pull_policy`, `allowed_pull_policies`, `allowed_images`, `allowed_services`, `privileged`, `volumes`, `host`, `tls_cert_path`, `shm_size`, `helper_image`, `extra_hosts`, `dns`, `dns_search`, `memory`, `cpus`, `cap_add`, `cap_drop`, `devices`, `user`, `disable_cache`, `cache_dir` |
//! | `[runners.cache]` | `Type` (`s3` only; `gcs` and `azure` warn), `Path`, `Shared`, `MaxUploadedArchiveSize` |
//! | `[runners.cache.s3]` | `ServerAddress`, `AccessKey`, `SecretKey`, `SessionToken`, `BucketName`, `BucketLocation`, `Insecure`, `AuthenticationType`, `PathStyle` |
//! | `[[runners.docker.services]]` | `name`, `alias`, `command`, `entrypoint`, `environment` |
//!
//! Accepted and ignored, named in one warning: at the top level `session_server`, `labels`,
//! `user`, `sentry_dsn`, `connection_max_age`, `experimental`; in `[machine.shutdown_drain]`
//! `concurrency`, `max_retries`, `retry_backoff`; in `[[runners]]` `pre_get_sources_script`,
//! `post_get_sources_script`, `tls-cert-file`, `tls-key-file`, `labels`, `shell`,
//! `clone_url`, `custom_build_dir`, `feature_flags`, `referees`, `artifact`,
//! `monitoring`, timeouts and other executors' sections (`kubernetes`, `custom`,
//! `ssh`, ...); the rest of GitLab Runner's `[runners.docker]` keys (`tls_verify`,
//! `network_mode`, ...); in `[runners.cache]` the `gcs` and `azure` sections; in
//! `[runners.cache.s3]` `ServerSideEncryption*`, `DualStack`, `Accelerate`, `RoleARN`, ....
//! Everything under an ignored key is ignored with it.
//! `id`, `token_obtained_at` and `token_expires_at`, which `drover register` writes as GitLab
//! Runner does, are checked for their type and otherwise unused.
//! Deprecated, with a warning: `OffPeak*` (removed in GitLab Runner 14.0), `pre_clone_script`,
//! `post_clone_script`, S3 keys written directly in `[runners.cache]`.
//!
//! # Defaults and rules
//!
//! GitLab Runner's: `check_interval` 0 → 3 s, `shutdown_timeout` 0 → 30 s, `limit` 0 = unlimited,
//! `request_concurrency` at least 1, `output_limit` 0 → 4096 KiB, `MaxBuilds`/`MaxGrowthRate`
//! 0 = unlimited, `MaxRemovalAttempts` 0 → 30, `IdleTime` in whole seconds, `IdleScaleFactor` a
//! float (`1` is refused, as GitLab Runner does), `Timezone` empty or `Local` → the local zone
//! resolved here to an IANA name (`TZ`, then the system setting; UTC with a warning if neither
//! names one). Periods with 5 or 6 cron fields get a warning: GitLab Runner prepends a `0`
//! seconds field, so they are active only in second 0 of each minute.
//! `executor` must be `docker+machine`, `docker` or `docker-autoscaler`; the last is validated
//! into [`Loaded::autoscalers`], each with its core runner (slots per machine; see
//! [`autoscaler::core_runner`]), which `drover run` does not schedule yet. `Provider` defaults to `docker-machine` when
//! `MachineDriver` is set, else `docker`. A runner without a name gets `runner-<short token>` (or
//! `runner-<n>`) and a warning; two runners with one name are an error.

pub mod autoscaler;
mod build;
mod cache;
mod ctx;
mod diagnostic;
mod docker;
pub mod edit;
mod keys;
mod machine;
mod raw;
mod schema;
mod settings;
mod timezone;
mod values;

use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::de::{DeTable, DeValue};

pub use autoscaler::{AutoscalerPolicy, AutoscalerRunner};
pub use cache::{S3Credentials, S3Settings};
pub use diagnostic::{ConfigError, Diagnostic, Warning};
pub use schema::suggest;
pub use settings::{
    DockerSettings, ExecutorKind, GlobalSettings, LogFormat, LogLevel, Provider, PullPolicy,
    RunnerSettings,
};
pub use timezone::LocalZone;

/// A valid config file, ready for the core and the daemon.
#[derive(Clone, Debug)]
pub struct Loaded {
    /// The file it came from (as given), for messages.
    pub origin: PathBuf,
    /// The scheduling config. `seed` is 0: the daemon draws its own.
    pub core: drover_core::Config,
    pub global: GlobalSettings,
    /// One per `[[runners]]` entry the core schedules, in the order and with the names of
    /// `core.runners`.
    pub runners: Vec<RunnerSettings>,
    /// `executor = "docker-autoscaler"` runners, in file order, each with the slot runner the core
    /// schedules for it (`core`). `drover run` refuses them until the AWS provider is wired
    /// ([`Loaded::require_runnable`]); `check-config` shows them and `simulate` plans them.
    pub autoscalers: Vec<AutoscalerRunner>,
    /// Ignored and deprecated keys, derived names, suspicious periods; each names its keys and lines.
    pub warnings: Vec<Warning>,
    /// The text it was parsed from: the daemon keeps a copy per runner, so that a runner deleted
    /// from the file while drover was down can still have its machines removed.
    pub text: String,
    /// The file's modification time, taken before it was read (`None` for text not read from a
    /// file): the daemon reloads when the file's differs, so an edit made while drover was
    /// reading the file or starting up is applied.
    pub mtime: Option<std::time::SystemTime>,
}

impl Loaded {
    /// Every runner's URL and token are there, or an error naming the first runner without them
    /// and telling the operator to run `drover register`. `drover run` calls this; `check-config`
    /// and `simulate` do not need registered runners.
    pub fn require_registered(&self) -> Result<(), ConfigError> {
        for runner in &self.runners {
            if let Err(missing) = runner.registered() {
                return Err(ConfigError::NotRegistered {
                    origin: self.origin.clone(),
                    runner: runner.name.clone(),
                    missing,
                });
            }
        }
        Ok(())
    }

    /// Every runner can be run by this build of drover, or an error naming the first one that
    /// cannot: a `docker-autoscaler` runner needs the AWS provider, which a build without the
    /// cargo feature `aws` leaves out. `drover run` calls this before anything else, so such a
    /// config never starts a daemon that would silently leave the runner idle.
    pub fn require_runnable(&self) -> Result<(), ConfigError> {
        self.runnable_with(cfg!(feature = "aws"))
    }

    /// [`Loaded::require_runnable`] for a build with (`aws`) or without the AWS provider.
    pub fn runnable_with(&self, aws: bool) -> Result<(), ConfigError> {
        match self.autoscalers.first() {
            Some(_) if aws => Ok(()),
            Some(a) => Err(ConfigError::NotRunnable {
                origin: self.origin.clone(),
                runner: a.name.clone(),
                executor: "docker-autoscaler",
            }),
            None => Ok(()),
        }
    }

    /// The core's config with the `docker-autoscaler` runners scheduled too (after the others),
    /// as slot runners: what `drover simulate` plans.
    pub fn scheduled_with_autoscalers(&self) -> drover_core::Config {
        let mut core = self.core.clone();
        core.runners
            .extend(self.autoscalers.iter().map(|a| a.core.clone()));
        core
    }

    /// What `drover run` and its reloads run: a config this build can run
    /// ([`Loaded::require_runnable`]) with every runner registered, its `docker-autoscaler`
    /// runners scheduled ([`Loaded::schedule_autoscalers`]).
    pub fn runnable(mut self) -> Result<Loaded, ConfigError> {
        self.require_runnable()?;
        self.schedule_autoscalers();
        self.require_registered()?;
        Ok(self)
    }

    /// Hands the `docker-autoscaler` runners to the core and the daemon like the others (after
    /// them, as [`Loaded::scheduled_with_autoscalers`] orders them): what `drover run` and its
    /// reloads schedule, once [`Loaded::require_runnable`] passed.
    pub fn schedule_autoscalers(&mut self) {
        for a in std::mem::take(&mut self.autoscalers) {
            self.core.runners.push(a.core);
            self.runners.push(a.settings);
        }
    }

    /// The daemon settings of the runner the core knows as `name`, `docker-autoscaler` runners
    /// included.
    pub fn runner(&self, name: &str) -> Option<&RunnerSettings> {
        self.runners
            .iter()
            .chain(self.autoscalers.iter().map(|a| &a.settings))
            .find(|r| r.name == name)
    }
}

/// Reads, parses and validates a config file. Machine keys include the system id kept beside it
/// (`drover run` makes it before loading); without one (a config never run) they are computed
/// from an empty id, and a malformed one is reported by `drover run`.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let before = mtime(path);
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let system_id = crate::files::read_system_id(path).ok().flatten();
    let mut loaded = parse_for(
        &text,
        path,
        &LocalZone::detect(),
        system_id.as_deref().unwrap_or(""),
    )?;
    loaded.mtime = before;
    Ok(loaded)
}

/// The file's modification time, if it can be read.
pub fn mtime(path: &Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// Parses and validates config text; `origin` names it in messages. `Local` time zones resolve
/// to the process's zone.
pub fn parse(text: &str, origin: &Path) -> Result<Loaded, ConfigError> {
    parse_with_zone(text, origin, &LocalZone::detect())
}

/// [`parse`] with the zone `Local` stands for given, for reproducible results.
pub fn parse_with_zone(
    text: &str,
    origin: &Path,
    local: &LocalZone,
) -> Result<Loaded, ConfigError> {
    parse_for(text, origin, local, "")
}

/// [`parse_with_zone`] for the installation with this system id (see
/// [`drover_core::config::machine_key`]).
pub fn parse_for(
    text: &str,
    origin: &Path,
    local: &LocalZone,
    system_id: &str,
) -> Result<Loaded, ConfigError> {
    let invalid = |diagnostics| ConfigError::Invalid {
        origin: origin.to_path_buf(),
        diagnostics,
    };
    let mut doc = DeTable::parse(text).map_err(|e| invalid(vec![syntax_error(text, &e)]))?;
    let walk = schema::walk(text, doc.get_mut());
    let mut errors = walk.errors.clone();
    let raw = typed(text, &walk, doc, &mut errors);
    let Some(raw) = raw.filter(|_| errors.is_empty()) else {
        errors.sort_by_key(|d| d.location.as_ref().map(|l| (l.line, l.column)));
        return Err(invalid(errors));
    };
    let mut ctx = ctx::Ctx::new(text, local);
    ctx.system_id = system_id.to_string();
    match build::build(raw, &walk, &mut ctx) {
        Some(built) => Ok(Loaded {
            origin: origin.to_path_buf(),
            core: built.core,
            global: built.global,
            runners: built.runners,
            autoscalers: built.autoscalers,
            warnings: ctx.warnings,
            text: text.to_string(),
            mtime: None,
        }),
        None => {
            let mut errors = ctx.errors;
            errors.sort_by_key(|d| d.location.as_ref().map(|l| (l.line, l.column)));
            Err(invalid(errors))
        }
    }
}

/// The most type errors reported at once (each costs a deserialisation of the document).
const MAX_TYPE_ERRORS: usize = 32;

/// The typed layer. Serde stops at the first wrong value; to report every one at once, the value
/// is taken out of the document and the rest is read again, until it reads or an error cannot be
/// taken out (a missing key, or one left missing by taking out a wrong value: not reported, as
/// the operator wrote it).
fn typed(
    text: &str,
    walk: &schema::Walk,
    mut doc: toml::Spanned<DeTable<'_>>,
    errors: &mut Vec<Diagnostic>,
) -> Option<raw::RawConfig> {
    let mut taken: Vec<std::ops::Range<usize>> = Vec::new();
    for _ in 0..MAX_TYPE_ERRORS {
        let e = match raw::RawConfig::deserialize(toml::de::Deserializer::from(doc.clone())) {
            Ok(raw) => return Some(raw),
            Err(e) => e,
        };
        let span = e.span();
        let missing = missing_field(&one_line(e.message())).is_some();
        if missing
            && let Some(span) = &span
            && taken
                .iter()
                .any(|t| span.start <= t.start && t.end <= span.end)
        {
            return None;
        }
        errors.push(type_error(text, walk, &e));
        match span {
            Some(span) if !missing && take_value(doc.get_mut(), &span) => taken.push(span),
            _ => return None,
        }
    }
    None
}

/// Removes the entry whose value is at `span` (for a value inside an array, the array's entry).
/// Every table is searched: the spans of `[[array]]` tables do not cover their contents.
fn take_value(table: &mut DeTable<'_>, span: &std::ops::Range<usize>) -> bool {
    let holder = table
        .iter()
        .find(|(_, v)| {
            v.span() == *span
                || matches!(v.get_ref(), DeValue::Array(items)
                    if items.iter().any(|i| i.span() == *span && !matches!(i.get_ref(), DeValue::Table(_))))
        })
        .map(|(k, _)| k.clone());
    if let Some(key) = holder {
        return table.remove(&key).is_some();
    }
    table.iter_mut().any(|(_, v)| match v.get_mut() {
        DeValue::Table(t) => take_value(t, span),
        DeValue::Array(items) => items.iter_mut().any(|item| match item.get_mut() {
            DeValue::Table(t) => take_value(t, span),
            _ => false,
        }),
        _ => false,
    })
}

fn syntax_error(text: &str, e: &toml::de::Error) -> Diagnostic {
    let d = Diagnostic::new("this is not valid TOML").label(one_line(e.message()));
    match e.span() {
        Some(span) => d.at(text, span),
        None => d,
    }
}

/// A type error from the raw layer, pointed at the key whose value is wrong.
fn type_error(text: &str, walk: &schema::Walk, e: &toml::de::Error) -> Diagnostic {
    let message = one_line(e.message());
    let Some(span) = e.span() else {
        return Diagnostic::new(message);
    };
    let value = walk.value_at(&span);
    if let Some(field) = missing_field(&message) {
        // The span is the table that lacks the field.
        let (path, expect) = match value.map(|v| (v, v.key.rule)) {
            Some((v, schema::Rule::Section(s))) => {
                let expect = s
                    .keys
                    .iter()
                    .find(|k| k.name == field)
                    .and_then(|k| match k.rule {
                        schema::Rule::Read { expect } => Some(expect),
                        _ => None,
                    });
                (v.path.clone(), expect)
            }
            _ => ("this table".to_string(), None),
        };
        let hint = match expect {
            Some(expect) => format!("add `{field} = ...`: it takes {expect}"),
            None => format!("add `{field} = ...`"),
        };
        return Diagnostic::new(format!("`{path}` entry has no `{field}`, which it needs"))
            .at(text, span)
            .hint(hint);
    }
    let d = match value {
        Some(v) => Diagnostic::new(format!("wrong value for `{}`", v.path))
            .at(text, span)
            .label(message),
        None => Diagnostic::new(message).at(text, span),
    };
    let hint = value.and_then(|v| match v.key.rule {
        schema::Rule::Read { expect } => Some(format!("`{}` takes {expect}", v.key.name)),
        schema::Rule::Section(s) => Some(format!(
            "`{}` is a section: write it as {}",
            v.key.name, s.header
        )),
        _ => None,
    });
    d.maybe_hint(hint)
}

/// The field serde's "missing field `x`" message names.
fn missing_field(message: &str) -> Option<&str> {
    message.strip_prefix("missing field `")?.split('`').next()
}

fn one_line(message: &str) -> String {
    message.trim().replace('\n', "; ")
}

#[cfg(test)]
mod tests;
