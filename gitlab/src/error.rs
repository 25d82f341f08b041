//! What can go wrong talking to GitLab, phrased so an operator can act on it.

use std::path::PathBuf;
use std::time::Duration;

/// An error from the client. URLs in messages never carry tokens.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    #[error("invalid GitLab URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },

    #[error("cannot read the CA file {path} (tls-ca-file): {source}")]
    CaFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "the CA file {path} (tls-ca-file) holds no usable PEM certificate: {reason}; \
         point tls-ca-file at the PEM file of the CA that signed GitLab's certificate"
    )]
    CaParse { path: PathBuf, reason: String },

    #[error("cannot build the HTTP client: {0}")]
    Build(String),

    #[error(
        "could not connect to {url}: {detail}; check that the URL is right and that GitLab is \
         reachable from this host"
    )]
    Connect { url: String, detail: String },

    #[error(
        "TLS handshake with {url} failed: {detail}; if GitLab's certificate is signed by a \
         private CA, set tls-ca-file (or --tls-ca-file) to that CA's PEM file"
    )]
    Tls { url: String, detail: String },

    #[error("{method} {url} timed out after {}s", timeout.as_secs_f64())]
    Timeout {
        method: String,
        url: String,
        timeout: Duration,
    },

    #[error("{method} {url} failed: {detail}")]
    Transport {
        method: String,
        url: String,
        detail: String,
    },

    #[error("{method} {url}: GitLab answered {status}{}", message_suffix(message))]
    Status {
        method: String,
        url: String,
        status: u16,
        message: String,
    },

    #[error("{method} {url}: GitLab refused the token (403 Forbidden); {hint}")]
    Forbidden {
        method: String,
        url: String,
        hint: &'static str,
    },

    #[error(
        "{url}: runner registration with a registration token is disabled on this GitLab (410 \
         Gone); create the runner in GitLab's UI (or API) and register it with its glrt- token: \
         drover register --token glrt-..."
    )]
    RegistrationDisabled { url: String },

    #[error("{method} {url}: cannot decode GitLab's answer: {detail}")]
    Decode {
        method: String,
        url: String,
        detail: String,
    },
}

fn message_suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

impl Error {
    /// The HTTP status GitLab answered with, if it answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Status { status, .. } => Some(*status),
            Error::Forbidden { .. } => Some(403),
            Error::RegistrationDisabled { .. } => Some(410),
            _ => None,
        }
    }
}
