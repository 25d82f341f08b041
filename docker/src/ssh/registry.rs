//! The live SSH connections an [`crate::EngineConfig`] can name: a provider registers each
//! instance's one [`SshConnection`] under an `ssh://user@host:port/<instance>` address and hands
//! that address out as the engine's `host`; every job's [`crate::EngineConfig::connect`] then
//! resolves it to the same connection, so all jobs on an instance share one SSH session.
//!
//! The table holds weak references: the provider owns each connection, and a connection it drops
//! (its instance removed) can no longer be reached through an old address. Two providers may hold
//! a connection to one instance (the one a reload retired, kept for its machines, and its
//! successor): an address keeps every live one, so either provider dropping its own leaves the
//! other's jobs their engine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::connection::SshConnection;

/// The scheme of registered addresses.
pub const SCHEME: &str = "ssh://";

fn table() -> &'static Mutex<HashMap<String, Vec<Weak<SshConnection>>>> {
    static TABLE: OnceLock<Mutex<HashMap<String, Vec<Weak<SshConnection>>>>> = OnceLock::new();
    TABLE.get_or_init(Mutex::default)
}

/// The engine address of `connection` for `instance`:
/// `ssh://<user>@<host:port>/<instance>`; the instance id keeps a reused address apart.
pub fn address(connection: &SshConnection, instance: &str) -> String {
    let t = connection.target();
    format!("{SCHEME}{}@{}/{instance}", t.username, t.address)
}

/// Registers `connection` under `address` (the newest of the live connections registered there)
/// and drops entries whose connection is gone.
pub fn register(address: &str, connection: &Arc<SshConnection>) {
    let mut table = table().lock().unwrap_or_else(|p| p.into_inner());
    for held in table.values_mut() {
        held.retain(|c| c.strong_count() > 0);
    }
    table.retain(|_, held| !held.is_empty());
    let held = table.entry(address.to_string()).or_default();
    let weak = Arc::downgrade(connection);
    held.retain(|c| !c.ptr_eq(&weak));
    held.push(weak);
}

/// The newest live connection registered under `address`.
pub fn lookup(address: &str) -> Option<Arc<SshConnection>> {
    let table = table().lock().unwrap_or_else(|p| p.into_inner());
    table.get(address)?.iter().rev().find_map(Weak::upgrade)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::ssh::{DockerTunnel, HostKeyPolicy, SshTarget, keys};

    fn connection(key: &Arc<russh::keys::PrivateKey>) -> Arc<SshConnection> {
        Arc::new(SshConnection::new(SshTarget {
            address: "127.0.2.9:2222".into(),
            username: "ec2-user".into(),
            key: key.clone(),
            tunnel: DockerTunnel::DialStdio,
            host_key: HostKeyPolicy::TrustFirstUse,
            keepalive: None,
            timeout: Duration::from_secs(1),
        }))
    }

    #[test]
    fn two_providers_connections_to_one_instance_are_both_reachable() {
        let dir = tempfile::tempdir().unwrap();
        let key = Arc::new(keys::manager_key(dir.path()).unwrap());
        let (old, new) = (connection(&key), connection(&key));
        let engine = address(&old, "i-registry-test");
        assert_eq!(address(&new, "i-registry-test"), engine);
        assert!(
            engine.starts_with("ssh://ec2-user@127.0.2.9:2222/"),
            "{engine}"
        );
        register(&engine, &old);
        register(&engine, &new);
        register(&engine, &new);
        assert!(lookup(&engine).is_some_and(|c| Arc::ptr_eq(&c, &new)));
        // The successor drops its connection first: the old provider's jobs still reach theirs.
        drop(new);
        assert!(lookup(&engine).is_some_and(|c| Arc::ptr_eq(&c, &old)));
        drop(old);
        assert!(lookup(&engine).is_none());
    }
}
