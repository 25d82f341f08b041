//! The keys of `[runners.autoscaler]` and its sub-sections, as GitLab Runner's docker-autoscaler
//! executor reads them (`AutoscalerConfig` and the AWS plugin's `plugin_config`).

use super::super::keys::{
    BOOL, COUNT, COUNT_OR_UNLIMITED, STRING, Section, ignored, read, section,
};

const DURATION: &str = "a Go duration string such as \"1m\", \"20m0s\" or \"1h30m\"";

/// `[runners.autoscaler]`.
pub static AUTOSCALER: Section = Section {
    header: "[runners.autoscaler]",
    keys: &[
        read(
            "plugin",
            "the fleeting plugin: \"aws\", \"aws:<version>\", \"fleeting-plugin-aws\" or an OCI reference ending in /aws",
        ),
        read(
            "capacity_per_instance",
            "a whole number, at least 1: jobs one instance runs at once",
        ),
        read(
            "max_use_count",
            "a whole number, 0 or more: jobs before an instance is retired (0 = unlimited)",
        ),
        read("max_instances", COUNT_OR_UNLIMITED),
        read("instance_ready_command", STRING),
        read("delete_instances_on_shutdown", BOOL),
        read("reservation_throttling", BOOL),
        read("instance_acquire_timeout", DURATION),
        read("update_interval", DURATION),
        read("update_interval_when_expecting", DURATION),
        read("deletion_retry_interval", DURATION),
        read("shutdown_deletion_interval", DURATION),
        read("shutdown_deletion_retries", COUNT),
        read("failure_threshold", COUNT),
        section("scale_throttle", &SCALE_THROTTLE),
        section("state_storage", &STATE_STORAGE),
        section("plugin_config", &PLUGIN_CONFIG),
        section("connector_config", &CONNECTOR),
        section("policy", &POLICY),
        ignored("log_internal_ip"),
        ignored("log_external_ip"),
        // macOS nesting and Prometheus bucket layouts: nothing drover runs.
        ignored("vm_isolation"),
        ignored("instance_operation_time_buckets"),
        ignored("instance_ready_time_buckets"),
        ignored("instance_life_duration_buckets"),
    ],
};

/// `[runners.autoscaler.scale_throttle]`: a token bucket for instance creation.
pub static SCALE_THROTTLE: Section = Section {
    header: "[runners.autoscaler.scale_throttle]",
    keys: &[
        read(
            "limit",
            "a whole number: instances per second (0 = the default, 100; -1 = no limit)",
        ),
        read("burst", COUNT),
    ],
};

/// `[runners.autoscaler.state_storage]`: accepted, drover always journals.
pub static STATE_STORAGE: Section = Section {
    header: "[runners.autoscaler.state_storage]",
    keys: &[
        read("enabled", BOOL),
        read("dir", STRING),
        read("keep_instance_with_acquisitions", BOOL),
    ],
};

/// `[runners.autoscaler.plugin_config]` of the AWS plugin.
pub static PLUGIN_CONFIG: Section = Section {
    header: "[runners.autoscaler.plugin_config]",
    keys: &[
        read("name", "a string, the Auto Scaling group's name"),
        read("profile", STRING),
        read("config_file", STRING),
        read("credentials_file", STRING),
    ],
};

/// `[runners.autoscaler.connector_config]`.
pub static CONNECTOR: Section = Section {
    header: "[runners.autoscaler.connector_config]",
    keys: &[
        read("os", "\"linux\""),
        read("arch", "\"amd64\" or \"arm64\""),
        read("protocol", "\"ssh\""),
        read("protocol_port", "a port number, 1 to 65535"),
        read("username", STRING),
        read("password", STRING),
        read("key_path", "a string, the path of a private key file"),
        read("use_static_credentials", BOOL),
        read("keepalive", DURATION),
        read("timeout", DURATION),
        read("use_external_addr", BOOL),
    ],
};

/// `[[runners.autoscaler.policy]]`.
pub static POLICY: Section = Section {
    header: "[[runners.autoscaler.policy]]",
    keys: &[
        read(
            "periods",
            "a list of 5-field cron expressions, e.g. [\"* 8-18 * * mon-fri\"]",
        ),
        read(
            "timezone",
            "an IANA time-zone name such as \"Europe/Berlin\", \"UTC\" or \"Local\"",
        ),
        read(
            "idle_count",
            "a whole number, 0 or more: idle job slots to keep",
        ),
        read("idle_time", DURATION),
        read(
            "scale_factor",
            "a number, 0.0 or more: idle slots per slot in use",
        ),
        read("scale_factor_limit", COUNT),
        read("preemptive_mode", BOOL),
    ],
};
