//! bollard over an [`SshConnection`]: each Docker request is one HTTP/1.1 exchange on a fresh
//! channel of the instance's one SSH session (upgrades, as `attach` uses, pass through).

use std::sync::Arc;

use bollard::{BollardRequest, ClientVersion, Docker};
use hyper::header::{HOST, HeaderValue};
use hyper_util::rt::TokioIo;

use super::connection::SshConnection;

/// The host name Docker sees, as GitLab Runner's tunnel uses: nothing resolves it.
const TUNNEL_HOST: &str = "internal.tunnel.invalid";

/// A bollard client whose requests go over `connection`, speaking API 1.41 (Docker 20.10) until
/// `negotiate_version` says more. `timeout_secs` bounds each request (bollard's own timeout).
pub fn docker_over_ssh(
    connection: Arc<SshConnection>,
    timeout_secs: u64,
) -> Result<Docker, bollard::errors::Error> {
    let transport = move |request: BollardRequest| {
        let connection = connection.clone();
        async move {
            let stream = connection
                .docker_stream()
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.with_upgrades().await {
                    tracing::debug!("docker over ssh: connection ended: {e}");
                }
            });
            let (mut parts, body) = request.into_parts();
            // Origin form on the wire; the address part means nothing on the far side.
            if let Some(path) = parts.uri.path_and_query().cloned() {
                parts.uri = path
                    .as_str()
                    .parse()
                    .map_err(|e: hyper::http::uri::InvalidUri| std::io::Error::other(e))?;
            }
            parts
                .headers
                .insert(HOST, HeaderValue::from_static(TUNNEL_HOST));
            Ok(sender
                .send_request(BollardRequest::from_parts(parts, body))
                .await?)
        }
    };
    let version = ClientVersion {
        major_version: 1,
        minor_version: 41,
    };
    // The address is only a label: every request goes through the transport.
    Docker::connect_with_custom_transport(
        transport,
        Some(format!("http://{TUNNEL_HOST}")),
        timeout_secs,
        &version,
    )
}
