//! Which keys of GitLab Runner's `config.toml` drover reads, which it accepts without acting on, and
//! which are typos — section by section.
//!
//! The walk runs on the parsed document before the typed (serde) layer. It removes every key the
//! typed layer does not read, so that layer can deny unknown fields: a key listed as read here but
//! missing from the typed layer fails loudly in the tests instead of being dropped silently.

use std::ops::Range;

use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue};

use super::diagnostic::{Diagnostic, KeyRef, Location};
use super::keys::{
    BOOL, COUNT, COUNT_OR_UNLIMITED, FACTOR, SECONDS, STRING, STRINGS, deprecated, ignored, read,
    section,
};
pub use super::keys::{Key, Rule, Section};

/// The top level of the file.
pub static GLOBAL: Section = Section {
    header: "the top level",
    keys: &[
        read(
            "concurrent",
            "a whole number, at least 1: job slots across all runners",
        ),
        read(
            "check_interval",
            "a whole number of seconds, 0 or more (0 = the default, 3)",
        ),
        read(
            "shutdown_timeout",
            "a whole number of seconds, 0 or more (0 = the default, 30)",
        ),
        read(
            "log_level",
            "one of \"debug\", \"info\", \"warning\", \"error\"",
        ),
        read("log_format", "one of \"runner\", \"text\", \"json\""),
        read(
            "listen_address",
            "a string \"host:port\", e.g. \"127.0.0.1:9252\"",
        ),
        section("runners", &RUNNER),
        section("machine", &GLOBAL_MACHINE),
        ignored("session_server"),
        ignored("labels"),
        ignored("user"),
        ignored("sentry_dsn"),
        ignored("connection_max_age"),
        ignored("experimental"),
    ],
};

/// `[machine]`: global docker+machine settings.
pub static GLOBAL_MACHINE: Section = Section {
    header: "[machine]",
    keys: &[section("shutdown_drain", &SHUTDOWN_DRAIN)],
};

/// `[machine.shutdown_drain]`.
pub static SHUTDOWN_DRAIN: Section = Section {
    header: "[machine.shutdown_drain]",
    keys: &[
        read("enabled", BOOL),
        // Removals during the drain follow drover's usual retries and backoff.
        ignored("concurrency"),
        ignored("max_retries"),
        ignored("retry_backoff"),
    ],
};

/// `[[runners]]`.
pub static RUNNER: Section = Section {
    header: "[[runners]]",
    keys: &[
        read("name", STRING),
        read(
            "url",
            "a string, the GitLab URL, e.g. \"https://gitlab.example.com/\"",
        ),
        // `id` and the token dates: written by `drover register`, checked for their type only.
        read("id", COUNT),
        read("token", STRING),
        read(
            "token_obtained_at",
            "a date-time, e.g. 2026-01-01T00:00:00Z",
        ),
        read("token_expires_at", "a date-time, e.g. 2026-01-01T00:00:00Z"),
        read("tls-ca-file", "a string, the path of a PEM file"),
        read(
            "executor",
            "\"docker+machine\", \"docker\" or \"docker-autoscaler\"",
        ),
        read("limit", COUNT_OR_UNLIMITED),
        read(
            "output_limit",
            "a whole number of kilobytes, 0 or more (0 = the default, 4096)",
        ),
        read(
            "request_concurrency",
            "a whole number, 0 or more (0 = the default, 1)",
        ),
        read("environment", "a list of \"KEY=value\" strings"),
        read("builds_dir", STRING),
        read("pre_build_script", STRING),
        read("post_build_script", STRING),
        section("docker", &DOCKER),
        section("machine", &MACHINE),
        ignored("pre_get_sources_script"),
        ignored("post_get_sources_script"),
        ignored("tls-cert-file"),
        ignored("tls-key-file"),
        ignored("labels"),
        ignored("shell"),
        read(
            "cache_dir",
            "a string, the local cache's directory inside the job, e.g. \"/cache\"",
        ),
        ignored("clone_url"),
        ignored("proxy_exec"),
        ignored("prepare_timeout"),
        ignored("get_sources_timeout"),
        ignored("debug_trace_disabled"),
        ignored("safe_directory_checkout"),
        ignored("clean_git_config"),
        ignored("custom_build_dir"),
        ignored("referees"),
        section("cache", &CACHE),
        ignored("artifact"),
        ignored("feature_flags"),
        ignored("monitoring"),
        ignored("use_slot_cgroups"),
        ignored("slot_cgroup_template"),
        ignored("step_runner_image"),
        ignored("strict_check_interval"),
        ignored("unhealthy_requests_limit"),
        ignored("unhealthy_interval"),
        ignored("job_status_final_update_retry_limit"),
        ignored("experimental"),
        ignored("boot_verify"),
        section("autoscaler", &crate::config::autoscaler::schema::AUTOSCALER),
        // Sections of executors drover does not run; the executor check refuses those runners.
        ignored("instance"),
        ignored("ssh"),
        ignored("parallels"),
        ignored("virtualbox"),
        ignored("kubernetes"),
        ignored("custom"),
        deprecated(
            "pre_clone_script",
            "GitLab Runner renamed it `pre_get_sources_script`, which drover does not run either",
        ),
        deprecated(
            "post_clone_script",
            "GitLab Runner renamed it `post_get_sources_script`, which drover does not run either",
        ),
    ],
};

const OFF_PEAK: &str = "GitLab Runner 14.0 removed the OffPeak settings; write a \
                        [[runners.machine.autoscaling]] block with Periods instead";

/// `[runners.machine]`, plus drover's own `Provider`, `DockerHost` and `DockerMachinePath`.
pub static MACHINE: Section = Section {
    header: "[runners.machine]",
    keys: &[
        read("IdleCount", COUNT),
        read("IdleCountMin", COUNT),
        read("IdleScaleFactor", FACTOR),
        read("IdleTime", SECONDS),
        read("MaxBuilds", COUNT_OR_UNLIMITED),
        read("MaxGrowthRate", COUNT_OR_UNLIMITED),
        read(
            "MaxRemovalAttempts",
            "a whole number, 0 or more (0 = the default, 30)",
        ),
        read(
            "MachineDriver",
            "a string, the docker-machine driver, e.g. \"amazonec2\"",
        ),
        read("MachineName", "a string containing %s, e.g. \"ci-%s\""),
        read(
            "MachineOptions",
            "a list of docker-machine options, e.g. [\"amazonec2-region=eu-west-1\"]",
        ),
        read(
            "MachineOptionsWithName",
            "a list of docker-machine options containing %s",
        ),
        read("Provider", "\"docker\" or \"docker-machine\""),
        read(
            "DockerHost",
            "a Docker engine address, e.g. \"unix:///var/run/docker.sock\"",
        ),
        read(
            "DockerMachinePath",
            "the docker-machine program: an absolute path or a name looked up in PATH",
        ),
        section("autoscaling", &PERIOD),
        deprecated("OffPeakPeriods", OFF_PEAK),
        deprecated("OffPeakTimezone", OFF_PEAK),
        deprecated("OffPeakIdleCount", OFF_PEAK),
        deprecated("OffPeakIdleTime", OFF_PEAK),
    ],
};

/// `[[runners.machine.autoscaling]]`.
pub static PERIOD: Section = Section {
    header: "[[runners.machine.autoscaling]]",
    keys: &[
        read(
            "Periods",
            "a list of cron expressions with seconds and year, e.g. [\"* * 9-17 * * mon-fri *\"]",
        ),
        read(
            "Timezone",
            "an IANA time-zone name such as \"Europe/Berlin\", \"UTC\" or \"Local\"",
        ),
        read("IdleCount", COUNT),
        read("IdleCountMin", COUNT),
        read("IdleScaleFactor", FACTOR),
        read("IdleTime", SECONDS),
    ],
};

/// `[runners.docker]`: the keys the Docker executor and provider use; the rest of GitLab
/// Runner's Docker keys are accepted and ignored.
pub static DOCKER: Section = Section {
    header: "[runners.docker]",
    keys: &[
        read("image", STRING),
        read(
            "pull_policy",
            "\"always\", \"if-not-present\", \"never\", or a list of them",
        ),
        read(
            "allowed_pull_policies",
            "a list of \"always\", \"if-not-present\", \"never\"",
        ),
        read("allowed_images", STRINGS),
        read("allowed_services", STRINGS),
        read("privileged", BOOL),
        read("volumes", STRINGS),
        read(
            "host",
            "a Docker engine address, e.g. \"tcp://10.0.0.2:2376\"",
        ),
        read("tls_cert_path", STRING),
        read("shm_size", "a whole number of bytes, 0 or more"),
        read("helper_image", STRING),
        read("extra_hosts", STRINGS),
        read("dns", STRINGS),
        read("dns_search", STRINGS),
        read("memory", "a size such as \"512m\" or \"2g\""),
        read("cpus", "a number of CPUs as a string, e.g. \"1.5\""),
        read("cap_add", STRINGS),
        read("cap_drop", STRINGS),
        read("devices", STRINGS),
        read("user", STRING),
        section("services", &SERVICE),
        ignored("tls_verify"),
        ignored("network_mode"),
        read("disable_cache", BOOL),
        ignored("hostname"),
        ignored("runtime"),
        ignored("memory_swap"),
        ignored("memory_reservation"),
        ignored("cgroup_parent"),
        ignored("cpuset_cpus"),
        ignored("cpuset_mems"),
        ignored("cpu_shares"),
        ignored("services_privileged"),
        ignored("disable_entrypoint_overwrite"),
        ignored("allowed_users"),
        ignored("group_add"),
        ignored("userns_mode"),
        ignored("oom_kill_disable"),
        ignored("oom_score_adjust"),
        ignored("security_opt"),
        ignored("services_security_opt"),
        ignored("device_cgroup_rules"),
        ignored("gpus"),
        ignored("services_devices"),
        ignored("volume_keep"),
        ignored("volume_driver"),
        ignored("volume_driver_ops"),
        read(
            "cache_dir",
            "a string, a directory on the machine, e.g. \"/srv/cache\"",
        ),
        ignored("volumes_from"),
        ignored("pid_mode"),
        ignored("ipcmode"),
        ignored("mac_address"),
        ignored("links"),
        ignored("services_limit"),
        ignored("service_memory"),
        ignored("service_memory_swap"),
        ignored("service_memory_reservation"),
        ignored("service_cgroup_parent"),
        ignored("service_slot_cgroup_template"),
        ignored("service_cpuset_cpus"),
        ignored("service_cpus"),
        ignored("service_cpu_shares"),
        ignored("service_gpus"),
        ignored("wait_for_services_timeout"),
        ignored("allowed_privileged_images"),
        ignored("allowed_privileged_services"),
        ignored("isolation"),
        ignored("tmpfs"),
        ignored("services_tmpfs"),
        ignored("sysctls"),
        ignored("helper_image_flavor"),
        ignored("container_labels"),
        ignored("ulimit"),
        ignored("network_mtu"),
        ignored("log_options"),
        ignored("enable_ipv6"),
    ],
};

const FLAT_S3: &str = "GitLab Runner reads the S3 keys only in a [runners.cache.s3] section: move \
                       them there";

/// `[runners.cache]`: the distributed cache.
pub static CACHE: Section = Section {
    header: "[runners.cache]",
    keys: &[
        read(
            "Type",
            "\"s3\" (drover supports S3 and S3-compatible servers only)",
        ),
        read("Path", "a string, a prefix for the cache objects' names"),
        read("Shared", BOOL),
        read(
            "MaxUploadedArchiveSize",
            "a whole number of bytes, 0 or more (0 = unlimited)",
        ),
        section("s3", &CACHE_S3),
        // Backends drover does not support: `Type` says so when it names them.
        ignored("gcs"),
        ignored("azure"),
        deprecated("ServerAddress", FLAT_S3),
        deprecated("AccessKey", FLAT_S3),
        deprecated("SecretKey", FLAT_S3),
        deprecated("BucketName", FLAT_S3),
        deprecated("BucketLocation", FLAT_S3),
        deprecated("Insecure", FLAT_S3),
    ],
};

/// `[runners.cache.s3]`.
pub static CACHE_S3: Section = Section {
    header: "[runners.cache.s3]",
    keys: &[
        read(
            "ServerAddress",
            "a string \"host[:port]\", e.g. \"minio.example.com:9000\" (empty: AWS S3)",
        ),
        read("AccessKey", STRING),
        read("SecretKey", STRING),
        read("SessionToken", STRING),
        read("BucketName", STRING),
        read(
            "BucketLocation",
            "a string, the bucket's region, e.g. \"eu-west-1\"",
        ),
        read("Insecure", BOOL),
        read("AuthenticationType", "\"access-key\" or \"iam\""),
        read("PathStyle", BOOL),
        ignored("ServerSideEncryption"),
        ignored("ServerSideEncryptionKeyID"),
        ignored("DualStack"),
        ignored("Accelerate"),
        ignored("RoleARN"),
        ignored("UploadRoleARN"),
        ignored("AssumeRoleMaxConcurrency"),
        ignored("DisableAssumeRoleCredentialsCaching"),
    ],
};

/// `[[runners.docker.services]]`.
pub static SERVICE: Section = Section {
    header: "[[runners.docker.services]]",
    keys: &[
        read("name", "a string, the service image"),
        read("alias", "a string of aliases separated by spaces or commas"),
        read("command", STRINGS),
        read("entrypoint", STRINGS),
        read("environment", "a list of \"KEY=value\" strings"),
        ignored("suspend_data_path"),
    ],
};

/// A value drover reads, for pointing type errors at their key.
#[derive(Clone, Debug)]
pub struct ReadValue {
    pub path: String,
    pub key: &'static Key,
    pub span: Range<usize>,
}

/// What the walk found.
#[derive(Debug, Default)]
pub struct Walk {
    /// Misspelled or unknown keys in sections drover owns.
    pub errors: Vec<Diagnostic>,
    /// Keys accepted and ignored, in file order.
    pub ignored: Vec<KeyRef>,
    /// Keys GitLab Runner no longer honours, with what replaced them.
    pub deprecated: Vec<(KeyRef, &'static str)>,
    /// Every value drover reads.
    pub values: Vec<ReadValue>,
}

impl Walk {
    /// The innermost read value whose span contains `span`.
    pub fn value_at(&self, span: &Range<usize>) -> Option<&ReadValue> {
        self.values
            .iter()
            .filter(|v| v.span.start <= span.start && span.end <= v.span.end)
            .min_by_key(|v| v.span.end - v.span.start)
    }
}

/// Walks the document from the top, removing every key the typed layer does not read.
pub fn walk(text: &str, root: &mut DeTable<'_>) -> Walk {
    let mut out = Walk::default();
    walk_table(text, root, &GLOBAL, "", &mut out);
    out.ignored.sort_by_key(|k| k.line);
    out.deprecated.sort_by_key(|(k, _)| k.line);
    out
}

fn walk_table(
    text: &str,
    table: &mut DeTable<'_>,
    section: &'static Section,
    prefix: &str,
    out: &mut Walk,
) {
    let line = |span: Range<usize>| Location::of(text, span).line;
    let mut remove = Vec::new();
    for (key, value) in table.iter_mut() {
        let name: &str = key.get_ref();
        let path = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}.{name}")
        };
        match section.key(name) {
            Some(
                k @ Key {
                    rule: Rule::Read { .. },
                    ..
                },
            ) => {
                out.values.push(ReadValue {
                    path,
                    key: k,
                    span: value.span(),
                });
            }
            Some(
                k @ Key {
                    rule: Rule::Section(sub),
                    ..
                },
            ) => {
                out.values.push(ReadValue {
                    path: path.clone(),
                    key: k,
                    span: value.span(),
                });
                match value.get_mut() {
                    DeValue::Table(t) => walk_table(text, t, sub, &path, out),
                    DeValue::Array(items) => {
                        for (i, item) in items.iter_mut().enumerate() {
                            if let DeValue::Table(t) = item.get_mut() {
                                walk_table(text, t, sub, &format!("{path}[{i}]"), out);
                            }
                        }
                    }
                    // A wrong type is the typed layer's to report.
                    _ => {}
                }
            }
            Some(Key {
                rule: Rule::Ignored,
                ..
            }) => {
                out.ignored.push(KeyRef {
                    path,
                    line: line(key.span()),
                });
                remove.push(key.clone());
            }
            Some(Key {
                rule: Rule::Deprecated { hint },
                ..
            }) => {
                out.deprecated.push((
                    KeyRef {
                        path,
                        line: line(key.span()),
                    },
                    hint,
                ));
                remove.push(key.clone());
            }
            None => {
                out.errors.push(unknown_key(text, key, section, &path));
                remove.push(key.clone());
            }
        }
    }
    for key in remove {
        table.remove(&key);
    }
}

fn unknown_key(
    text: &str,
    key: &Spanned<DeString<'_>>,
    section: &Section,
    path: &str,
) -> Diagnostic {
    let name: &str = key.get_ref();
    let where_ = if section.header == GLOBAL.header {
        "at the top level".to_string()
    } else {
        format!("in {}", section.header)
    };
    let diagnostic = Diagnostic::new(format!("unknown key `{name}` {where_}"))
        .at(text, key.span())
        .label(format!(
            "`{path}` is not a key drover or GitLab Runner knows"
        ));
    match suggest(name, section.keys.iter().map(|k| k.name)) {
        Some(best) if best.eq_ignore_ascii_case(name) => {
            diagnostic.hint(format!("did you mean `{best}`? keys are case-sensitive"))
        }
        Some(best) => diagnostic.hint(format!("did you mean `{best}`?")),
        None => {
            let known: Vec<String> = section.read_keys().map(|k| format!("`{k}`")).collect();
            diagnostic.hint(format!(
                "drover reads these keys {where_}: {}",
                known.join(", ")
            ))
        }
    }
}

/// The candidate closest to `name`, if it is close enough to be a likely typo.
pub fn suggest<'a>(name: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let lower = name.to_ascii_lowercase();
    candidates
        .map(|c| (strsim::jaro_winkler(&lower, &c.to_ascii_lowercase()), c))
        .filter(|(score, _)| *score >= 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggestions_catch_typos_and_case() {
        let keys = MACHINE.keys.iter().map(|k| k.name);
        assert_eq!(suggest("IdelCount", keys.clone()), Some("IdleCount"));
        assert_eq!(suggest("idlecount", keys.clone()), Some("IdleCount"));
        assert_eq!(suggest("MaxBuild", keys.clone()), Some("MaxBuilds"));
        assert_eq!(suggest("banana", keys), None);
        assert_eq!(
            suggest("limmit", RUNNER.keys.iter().map(|k| k.name)),
            Some("limit")
        );
    }

    #[test]
    fn every_section_lists_each_key_once() {
        for section in [
            &GLOBAL,
            &GLOBAL_MACHINE,
            &SHUTDOWN_DRAIN,
            &RUNNER,
            &MACHINE,
            &PERIOD,
            &DOCKER,
            &SERVICE,
            &CACHE,
            &CACHE_S3,
            &crate::config::autoscaler::schema::AUTOSCALER,
            &crate::config::autoscaler::schema::SCALE_THROTTLE,
            &crate::config::autoscaler::schema::STATE_STORAGE,
            &crate::config::autoscaler::schema::PLUGIN_CONFIG,
            &crate::config::autoscaler::schema::CONNECTOR,
            &crate::config::autoscaler::schema::POLICY,
        ] {
            let mut names: Vec<&str> = section.keys.iter().map(|k| k.name).collect();
            names.sort_unstable();
            let before = names.len();
            names.dedup();
            assert_eq!(before, names.len(), "duplicate key in {}", section.header);
        }
    }
}
