//! The runner's [`ContainerOptions`] in the engine's terms.

use bollard::models::{DeviceMapping, HostConfig};

use super::spec::ContainerOptions;

/// Limits, capabilities, devices, DNS, extra hosts and `/dev/shm` of a step container.
pub(crate) fn for_step(options: &ContainerOptions, host: &mut HostConfig) {
    for_service(options, host);
    host.cap_add = non_empty(&options.cap_add);
    host.cap_drop = non_empty(&options.cap_drop);
    host.devices =
        (!options.devices.is_empty()).then(|| options.devices.iter().map(|d| device(d)).collect());
    host.memory = options.memory.map(saturating_i64);
    host.nano_cpus = options.nano_cpus.map(saturating_i64);
}

/// DNS, extra hosts and `/dev/shm` of a service container.
pub(crate) fn for_service(options: &ContainerOptions, host: &mut HostConfig) {
    host.dns = non_empty(&options.dns);
    host.dns_search = non_empty(&options.dns_search);
    host.extra_hosts = non_empty(&options.extra_hosts);
    host.shm_size = options.shm_size.map(saturating_i64);
}

fn non_empty(list: &[String]) -> Option<Vec<String>> {
    (!list.is_empty()).then(|| list.to_vec())
}

fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `host[:container][:permissions]`, read as the docker CLI's `--device` does: a second part made
/// of `r`, `w` and `m` only is the permissions; the default is `rwm` at the same path.
fn device(spec: &str) -> DeviceMapping {
    let parts: Vec<&str> = spec.split(':').collect();
    let is_permissions =
        |p: &str| !p.is_empty() && p.len() <= 3 && p.chars().all(|c| "rwm".contains(c));
    let (host, container, permissions) = match parts.as_slice() {
        [host, perms] if is_permissions(perms) => (*host, *host, *perms),
        [host, container] => (*host, *container, "rwm"),
        [host, container, perms, ..] => (*host, *container, *perms),
        _ => (spec, spec, "rwm"),
    };
    DeviceMapping {
        path_on_host: Some(host.to_string()),
        path_in_container: Some(container.to_string()),
        cgroup_permissions: Some(permissions.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapping(spec: &str) -> (String, String, String) {
        let d = device(spec);
        (
            d.path_on_host.unwrap(),
            d.path_in_container.unwrap(),
            d.cgroup_permissions.unwrap(),
        )
    }

    #[test]
    fn devices_as_the_docker_cli_reads_them() {
        let m = |a: &str, b: &str, c: &str| (a.to_string(), b.to_string(), c.to_string());
        assert_eq!(mapping("/dev/fuse"), m("/dev/fuse", "/dev/fuse", "rwm"));
        assert_eq!(mapping("/dev/sdc:r"), m("/dev/sdc", "/dev/sdc", "r"));
        assert_eq!(
            mapping("/dev/sdc:/dev/xvdc"),
            m("/dev/sdc", "/dev/xvdc", "rwm")
        );
        assert_eq!(
            mapping("/dev/sdc:/dev/xvdc:rw"),
            m("/dev/sdc", "/dev/xvdc", "rw")
        );
    }

    #[test]
    fn services_get_only_network_settings_and_shm() {
        let options = ContainerOptions {
            user: Some("nobody".into()),
            cap_add: vec!["NET_ADMIN".into()],
            devices: vec!["/dev/fuse".into()],
            memory: Some(1 << 30),
            nano_cpus: Some(1_500_000_000),
            shm_size: Some(1 << 26),
            dns: vec!["10.0.0.53".into()],
            extra_hosts: vec!["h:10.0.0.1".into()],
            ..Default::default()
        };
        let mut service = HostConfig::default();
        for_service(&options, &mut service);
        assert_eq!(service.dns, Some(vec!["10.0.0.53".to_string()]));
        assert_eq!(service.extra_hosts, Some(vec!["h:10.0.0.1".to_string()]));
        assert_eq!(service.shm_size, Some(1 << 26));
        assert_eq!((service.memory, service.nano_cpus), (None, None));
        assert_eq!((service.cap_add, service.devices), (None, None));
        assert_eq!(service.dns_search, None, "empty lists are left unset");

        let mut step = HostConfig::default();
        for_step(&options, &mut step);
        assert_eq!(step.memory, Some(1 << 30));
        assert_eq!(step.nano_cpus, Some(1_500_000_000));
        assert_eq!(step.cap_add, Some(vec!["NET_ADMIN".to_string()]));
        assert_eq!(step.devices.map(|d| d.len()), Some(1));
        assert_eq!(step.dns, service.dns);
    }
}
