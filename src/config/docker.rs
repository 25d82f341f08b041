//! `[runners.docker]`: the keys the Docker executor and the docker provider use.

use drover_docker::PullPolicy;
use toml::Spanned;

use super::ctx::{Ctx, key_values};
use super::raw::{OneOrMany, RawDocker};
use super::schema::suggest;
use super::settings::{DockerSettings, ServiceSettings};

/// The settings of a runner without a `[runners.docker]` section.
pub fn defaults() -> DockerSettings {
    DockerSettings {
        pull_policy: vec![PullPolicy::Always],
        ..DockerSettings::default()
    }
}

pub fn settings(raw: RawDocker, index: usize, ctx: &mut Ctx<'_>) -> DockerSettings {
    let path = format!("runners[{index}].docker");
    let mut pull_policy = policies(
        raw.pull_policy.as_ref(),
        &format!("{path}.pull_policy"),
        ctx,
    );
    if pull_policy.is_empty() {
        // GitLab Runner's default.
        pull_policy.push(PullPolicy::Always);
    }
    let allowed_pull_policies = policies(
        raw.allowed_pull_policies.as_ref(),
        &format!("{path}.allowed_pull_policies"),
        ctx,
    );
    let memory = raw.memory.as_ref().filter(|m| !m.get_ref().trim().is_empty()).and_then(|m| {
        let bytes = parse_bytes(m.get_ref());
        if bytes.is_none() {
            ctx.error(
                ctx.diag(m.span(), format!("`{path}.memory` {:?} is not a size", m.get_ref()))
                    .hint("write a number with an optional unit b, k, m or g, e.g. \"512m\" or \"2g\""),
            );
        }
        bytes
    });
    let cpus = raw
        .cpus
        .as_ref()
        .filter(|c| !c.get_ref().trim().is_empty())
        .and_then(|c| {
            let n = c
                .get_ref()
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n > 0.0);
            if n.is_none() {
                ctx.error(
                    ctx.diag(
                        c.span(),
                        format!("`{path}.cpus` {:?} is not a number of CPUs", c.get_ref()),
                    )
                    .hint("write a positive number as a string, e.g. cpus = \"1.5\""),
                );
            }
            n
        });
    let services = raw
        .services
        .into_iter()
        .enumerate()
        .map(|(i, s)| ServiceSettings {
            aliases: s
                .alias
                .unwrap_or_default()
                .split([' ', ','])
                .filter(|a| !a.is_empty())
                .map(String::from)
                .collect(),
            environment: key_values(
                &s.environment,
                &format!("{path}.services[{i}].environment"),
                ctx,
            ),
            name: s.name,
            command: s.command,
            entrypoint: s.entrypoint,
        })
        .collect();
    let non_empty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    DockerSettings {
        image: non_empty(raw.image),
        pull_policy,
        allowed_pull_policies,
        allowed_images: raw.allowed_images,
        allowed_services: raw.allowed_services,
        privileged: raw.privileged,
        volumes: raw.volumes,
        host: non_empty(raw.host),
        tls_cert_path: non_empty(raw.tls_cert_path),
        shm_size: raw.shm_size.map(|c| c.0).filter(|&n| n > 0),
        helper_image: non_empty(raw.helper_image),
        extra_hosts: raw.extra_hosts,
        dns: raw.dns,
        dns_search: raw.dns_search,
        memory,
        cpus,
        cap_add: raw.cap_add,
        cap_drop: raw.cap_drop,
        devices: raw.devices,
        user: non_empty(raw.user),
        services,
        disable_cache: raw.disable_cache,
        cache_dir: raw
            .cache_dir
            .map(|d| d.into_inner().trim().trim_end_matches('/').to_string())
            .filter(|d| !d.is_empty()),
    }
}

fn policies(raw: Option<&Spanned<OneOrMany>>, path: &str, ctx: &mut Ctx<'_>) -> Vec<PullPolicy> {
    let Some(raw) = raw else { return Vec::new() };
    let items: Vec<(String, std::ops::Range<usize>)> = match raw.get_ref() {
        OneOrMany::One(s) => vec![(s.clone(), raw.span())],
        OneOrMany::Many(v) => v.iter().map(|s| (s.get_ref().clone(), s.span())).collect(),
    };
    let mut out = Vec::new();
    for (value, span) in items {
        match PullPolicy::parse(&value) {
            Some(p) => out.push(p),
            None => {
                let known = ["always", "if-not-present", "never"];
                let hint = match suggest(&value, known.into_iter()) {
                    Some(s) => format!("did you mean {s:?}?"),
                    None => "use \"always\", \"if-not-present\" or \"never\"".to_string(),
                };
                ctx.error(
                    ctx.diag(span, format!("`{path}`: unknown pull policy {value:?}"))
                        .hint(hint),
                );
            }
        }
    }
    out
}

/// Docker's memory sizes: a number and an optional unit (b, k, m, g, t; binary multiples).
pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let digits = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (number, unit) = s.split_at(digits);
    let number: f64 = number.parse().ok()?;
    let multiplier: u64 = match unit.trim().trim_end_matches('b') {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        "t" => 1 << 40,
        _ => return None,
    };
    let bytes = number * multiplier as f64;
    (bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64).then_some(bytes as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_docker_writes_them() {
        assert_eq!(parse_bytes("512m"), Some(512 << 20));
        assert_eq!(parse_bytes("2g"), Some(2 << 30));
        assert_eq!(parse_bytes("1.5G"), Some(3 << 29));
        assert_eq!(parse_bytes("4096"), Some(4096));
        assert_eq!(parse_bytes("64kb"), Some(64 << 10));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("5x"), None);
        assert_eq!(parse_bytes(""), None);
    }
}
