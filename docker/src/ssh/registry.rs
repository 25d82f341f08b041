//! The live SSH connections an [`crate::EngineConfig`] can name: a provider registers each
//! instance's one [`SshConnection`] under an `ssh://user@host:port/<instance>` address and hands
//! that address out as the engine's `host`; every job's [`crate::EngineConfig::connect`] then
//! resolves it to the same connection, so all jobs on an instance share one SSH session.
//!
//! The table holds weak references: the provider owns each connection, and a connection it drops
//! (its instance removed) can no longer be reached through an old address.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use super::connection::SshConnection;

/// The scheme of registered addresses.
pub const SCHEME: &str = "ssh://";

fn table() -> &'static Mutex<HashMap<String, Weak<SshConnection>>> {
    static TABLE: OnceLock<Mutex<HashMap<String, Weak<SshConnection>>>> = OnceLock::new();
    TABLE.get_or_init(Mutex::default)
}

/// The engine address of `connection` for `instance`:
/// `ssh://<user>@<host:port>/<instance>`; the instance id keeps a reused address apart.
pub fn address(connection: &SshConnection, instance: &str) -> String {
    let t = connection.target();
    format!("{SCHEME}{}@{}/{instance}", t.username, t.address)
}

/// Registers `connection` under `address` (replacing a connection registered there before) and
/// drops entries whose connection is gone.
pub fn register(address: &str, connection: &Arc<SshConnection>) {
    let mut table = table().lock().unwrap_or_else(|p| p.into_inner());
    table.retain(|_, c| c.strong_count() > 0);
    table.insert(address.to_string(), Arc::downgrade(connection));
}

/// The live connection registered under `address`.
pub fn lookup(address: &str) -> Option<Arc<SshConnection>> {
    let table = table().lock().unwrap_or_else(|p| p.into_inner());
    table.get(address).and_then(Weak::upgrade)
}
