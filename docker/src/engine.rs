//! How to reach a Docker engine: the local socket, `DOCKER_HOST`, or `tcp://` with TLS certificates.

use std::path::PathBuf;

use bollard::{API_DEFAULT_VERSION, Docker};

/// Seconds a request may wait for the engine's response headers. Streams (logs, pulls) are not bounded
/// by it once they have started.
const REQUEST_TIMEOUT_SECS: u64 = 120;

/// The address of a Docker engine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EngineConfig {
    /// `unix:///path`, `/path`, `tcp://host:port`, `http://…` or `https://…`. `None`: `DOCKER_HOST`
    /// (with `DOCKER_TLS_VERIFY`/`DOCKER_CERT_PATH`) if set, else the local socket.
    pub host: Option<String>,
    /// Client certificates for a TLS engine; required for `https://`, turns `tcp://` into TLS.
    pub tls: Option<TlsFiles>,
}

/// The PEM files of a TLS-protected engine (Docker's `ca.pem`, `cert.pem`, `key.pem`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    /// The three files of a Docker certificate directory (`DOCKER_CERT_PATH`).
    pub fn from_dir(dir: impl Into<PathBuf>) -> TlsFiles {
        let dir = dir.into();
        TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
        }
    }
}

/// Whether the engine answered with one of these HTTP status codes (404: no such object; 409: a
/// conflict, such as a removal already under way; 304: nothing to do).
pub fn is_status(err: &bollard::errors::Error, codes: &[u16]) -> bool {
    matches!(err, bollard::errors::Error::DockerResponseServerError { status_code, .. }
        if codes.contains(status_code))
}

/// The engine could not be reached or spoke an API we cannot use.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(
        "unsupported Docker host {host:?}: use unix:///path/to/docker.sock, tcp://host:port or https://host:port"
    )]
    UnsupportedHost { host: String },
    #[error(
        "Docker host {host}: no live SSH connection; the instance was removed or its provider stopped"
    )]
    NoSshConnection { host: String },
    #[error("Docker host {host}: https:// needs TLS certificates (ca, cert, key)")]
    MissingTls { host: String },
    #[error(
        "cannot connect to the Docker engine at {host}: {source}; is the engine running and reachable?"
    )]
    Connect {
        host: String,
        #[source]
        source: bollard::errors::Error,
    },
}

impl EngineConfig {
    /// The local engine (or `DOCKER_HOST`).
    pub fn local() -> EngineConfig {
        EngineConfig::default()
    }

    /// A human-readable address for messages.
    pub fn describe(&self) -> String {
        match &self.host {
            Some(host) => host.clone(),
            None => std::env::var("DOCKER_HOST")
                .unwrap_or_else(|_| "unix:///var/run/docker.sock".to_string()),
        }
    }

    /// Connects and negotiates the API version down to the engine's.
    pub async fn connect(&self) -> Result<Docker, EngineError> {
        let host = self.describe();
        let docker = self.client()?;
        docker
            .negotiate_version()
            .await
            .map_err(|source| EngineError::Connect { host, source })
    }

    fn client(&self) -> Result<Docker, EngineError> {
        let connect_error = |source| EngineError::Connect {
            host: self.describe(),
            source,
        };
        let Some(host) = self.host.as_deref() else {
            return Docker::connect_with_defaults().map_err(connect_error);
        };
        if host.starts_with(crate::ssh::registry::SCHEME) {
            // An instance's SSH connection, registered by its provider.
            let connection =
                crate::ssh::registry::lookup(host).ok_or_else(|| EngineError::NoSshConnection {
                    host: host.to_string(),
                })?;
            return crate::ssh::docker_over_ssh(connection, REQUEST_TIMEOUT_SECS)
                .map_err(connect_error);
        }
        let version = API_DEFAULT_VERSION;
        if let Some(path) = host
            .strip_prefix("unix://")
            .or(host.starts_with('/').then_some(host))
        {
            return Docker::connect_with_unix(path, REQUEST_TIMEOUT_SECS, version)
                .map_err(connect_error);
        }
        let is_tcp = host.starts_with("tcp://") || host.starts_with("http://");
        match (&self.tls, is_tcp, host.starts_with("https://")) {
            (Some(tls), true, _) | (Some(tls), _, true) => {
                use_ring_for_tls();
                Docker::connect_with_ssl(
                    host,
                    &tls.key,
                    &tls.cert,
                    &tls.ca,
                    REQUEST_TIMEOUT_SECS,
                    version,
                )
                .map_err(connect_error)
            }
            (None, true, _) => {
                let addr = host.replacen("tcp://", "http://", 1);
                Docker::connect_with_http(&addr, REQUEST_TIMEOUT_SECS, version)
                    .map_err(connect_error)
            }
            (None, _, true) => Err(EngineError::MissingTls {
                host: host.to_string(),
            }),
            _ => Err(EngineError::UnsupportedHost {
                host: host.to_string(),
            }),
        }
    }
}

/// bollard builds its TLS config from rustls's process-wide provider. With the AWS SDK in the
/// build, rustls has both ring and aws-lc-rs and cannot pick one on its own; drover's TLS is ring
/// throughout, so ring is installed first (a provider already installed is kept).
fn use_ring_for_tls() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(h: &str) -> EngineConfig {
        EngineConfig {
            host: Some(h.to_string()),
            tls: None,
        }
    }

    #[test]
    fn rejects_unknown_schemes_with_a_hint() {
        let err = host("ftp://example:21").client().unwrap_err();
        assert!(matches!(err, EngineError::UnsupportedHost { .. }));
        assert!(err.to_string().contains("tcp://host:port"), "{err}");
    }

    #[test]
    fn https_without_certificates_is_refused() {
        let err = host("https://engine:2376").client().unwrap_err();
        assert!(matches!(err, EngineError::MissingTls { .. }), "{err}");
    }

    #[test]
    fn tcp_without_tls_is_plain_http() {
        assert!(host("tcp://127.0.0.1:2375").client().is_ok());
    }

    #[test]
    fn tls_files_from_a_cert_dir() {
        let tls = TlsFiles::from_dir("/certs");
        assert_eq!(tls.ca, PathBuf::from("/certs/ca.pem"));
        assert_eq!(tls.key, PathBuf::from("/certs/key.pem"));
    }
}
