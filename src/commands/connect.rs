//! What the one-shot commands (`register`, `verify`, `unregister`) need to talk to GitLab: a
//! client for a runner's URL and a small runtime for their few HTTP calls.

use std::path::Path;

use anyhow::Context;
use drover_gitlab::{Client, ClientConfig};

/// A client for a runner's GitLab.
pub fn client(url: &str, tls_ca_file: Option<&Path>) -> anyhow::Result<Client> {
    let mut config = ClientConfig::new(url, crate::daemon::adapters::identity());
    config.tls_ca_file = tls_ca_file.map(Path::to_path_buf);
    Client::new(config).map_err(|e| crate::exit::with_code(crate::exit::CONFIG, e))
}

/// A current-thread runtime for a command's few HTTP calls.
pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}
