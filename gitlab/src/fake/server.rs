//! The fake's HTTP(S) server: accept loop, routing, faults and Workhorse-style long polling.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;

use super::state::{FaultAction, RecordedRequest, Reply, Request};
use super::{Route, Shared};

/// A CA and a certificate for 127.0.0.1/localhost signed by it.
pub(super) struct TlsMaterial {
    pub ca_pem: String,
    acceptor: TlsAcceptor,
}

impl TlsMaterial {
    pub(super) fn generate() -> std::io::Result<Self> {
        let err = |e: &dyn std::fmt::Display| {
            std::io::Error::other(format!("fake GitLab TLS setup: {e}"))
        };
        let mut ca_params =
            rcgen::CertificateParams::new(Vec::<String>::new()).map_err(|e| err(&e))?;
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "drover fake GitLab CA");
        let ca_key = rcgen::KeyPair::generate().map_err(|e| err(&e))?;
        let ca_cert = ca_params.self_signed(&ca_key).map_err(|e| err(&e))?;
        let issuer = rcgen::Issuer::new(ca_params, ca_key);

        let mut leaf_params =
            rcgen::CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
                .map_err(|e| err(&e))?;
        leaf_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "fake GitLab");
        let leaf_key = rcgen::KeyPair::generate().map_err(|e| err(&e))?;
        let leaf = leaf_params
            .signed_by(&leaf_key, &issuer)
            .map_err(|e| err(&e))?;

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| err(&e))?
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone(), ca_cert.der().clone()], key)
            .map_err(|e| err(&e))?;
        Ok(TlsMaterial {
            ca_pem: ca_cert.pem(),
            acceptor: TlsAcceptor::from(Arc::new(config)),
        })
    }
}

/// Serves until the task is aborted; connections die with it.
pub(super) async fn serve(listener: TcpListener, tls: Option<TlsMaterial>, shared: Arc<Shared>) {
    let acceptor = tls.map(|t| t.acceptor);
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        // Reap finished connections so the set does not grow without bound.
        while connections.try_join_next().is_some() {}
        let shared = shared.clone();
        let acceptor = acceptor.clone();
        connections.spawn(async move {
            let service = service_fn(move |req| handle(shared.clone(), req));
            let builder = hyper::server::conn::http1::Builder::new();
            match acceptor {
                Some(acceptor) => {
                    // A client that rejects the certificate ends the handshake; nothing to serve.
                    if let Ok(tls) = acceptor.accept(stream).await {
                        let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                    }
                }
                None => {
                    let _ = builder
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                }
            }
        });
    }
}

/// Returned by the service to make hyper close the connection without an answer.
#[derive(Debug)]
struct DropConnection;

impl std::fmt::Display for DropConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by an injected fault")
    }
}

impl std::error::Error for DropConnection {}

enum Endpoint {
    Register,
    Verify,
    Unregister,
    UnregisterManager,
    ResetToken,
    JobRequest,
    UpdateJob(u64),
    PatchTrace(u64),
    UploadArtifacts(u64),
    DownloadArtifacts(u64),
    Object(String),
    Unknown,
}

fn route(method: &str, path: &str) -> Endpoint {
    if let Some(object) = path.strip_prefix("/objects/")
        && method == "GET"
    {
        let key = object.split('/').next().unwrap_or_default();
        return Endpoint::Object(key.to_owned());
    }
    let Some(rest) = path.strip_prefix("/api/v4/") else {
        return Endpoint::Unknown;
    };
    let segments: Vec<&str> = rest.split('/').collect();
    match (method, segments.as_slice()) {
        ("POST", ["runners"]) => Endpoint::Register,
        ("DELETE", ["runners"]) => Endpoint::Unregister,
        ("POST", ["runners", "verify"]) => Endpoint::Verify,
        ("DELETE", ["runners", "managers"]) => Endpoint::UnregisterManager,
        ("POST", ["runners", "reset_authentication_token"]) => Endpoint::ResetToken,
        ("POST", ["jobs", "request"]) => Endpoint::JobRequest,
        ("PUT", ["jobs", id]) => id.parse().map_or(Endpoint::Unknown, Endpoint::UpdateJob),
        ("PATCH", ["jobs", id, "trace"]) => {
            id.parse().map_or(Endpoint::Unknown, Endpoint::PatchTrace)
        }
        ("POST", ["jobs", id, "artifacts"]) => id
            .parse()
            .map_or(Endpoint::Unknown, Endpoint::UploadArtifacts),
        ("GET", ["jobs", id, "artifacts"]) => id
            .parse()
            .map_or(Endpoint::Unknown, Endpoint::DownloadArtifacts),
        _ => Endpoint::Unknown,
    }
}

fn fault_route(endpoint: &Endpoint, body: &[u8]) -> Route {
    match endpoint {
        Endpoint::Register => Route::Register,
        Endpoint::Verify => Route::Verify,
        Endpoint::Unregister => Route::Unregister,
        Endpoint::UnregisterManager => Route::UnregisterManager,
        Endpoint::ResetToken => Route::ResetToken,
        Endpoint::JobRequest => Route::JobRequest,
        Endpoint::UpdateJob(_) => {
            let state = serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v["state"].as_str().map(str::to_owned));
            if matches!(state.as_deref(), Some("success" | "failed")) {
                Route::FinalUpdate
            } else {
                Route::JobUpdate
            }
        }
        Endpoint::PatchTrace(_) => Route::TracePatch,
        Endpoint::UploadArtifacts(_) => Route::ArtifactUpload,
        Endpoint::DownloadArtifacts(_) => Route::ArtifactDownload,
        Endpoint::Object(_) => Route::ObjectStorage,
        Endpoint::Unknown => Route::Any,
    }
}

async fn handle(
    shared: Arc<Shared>,
    request: hyper::Request<Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, DropConnection> {
    let (parts, body) = request.into_parts();
    let Ok(body) = body.collect().await.map(|b| b.to_bytes()) else {
        return Err(DropConnection);
    };
    let method = parts.method.as_str().to_owned();
    let path = parts.uri.path().to_owned();
    let query = parts.uri.query().unwrap_or_default().to_owned();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_ascii_lowercase(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let index = {
        let mut state = shared.lock();
        state.record(RecordedRequest {
            at: tokio::time::Instant::now(),
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            headers: headers.clone(),
            body: body.to_vec(),
            status: None,
        })
    };
    shared.changed();
    let endpoint = route(&method, &path);
    let request = Request {
        index,
        method: &method,
        path: &path,
        query: &query,
        headers: &headers,
        body: &body,
    };

    let action = shared.lock().take_fault(fault_route(&endpoint, &body));
    match action {
        Some(FaultAction::Drop) => {
            shared.changed();
            return Err(DropConnection);
        }
        Some(FaultAction::Respond(reply)) => return Ok(finish(&shared, index, reply)),
        // If the client gives up meanwhile, hyper drops this future: the request is never processed.
        Some(FaultAction::Delay(delay)) => tokio::time::sleep(delay).await,
        None => {}
    }

    let reply = match endpoint {
        Endpoint::JobRequest => request_job(&shared, &request).await,
        // Object storage is not GitLab: none of GitLab's headers are expected there.
        Endpoint::Object(key) => shared.lock().object(&request, &key),
        endpoint => {
            let mut state = shared.lock();
            state.check_common(&request);
            match endpoint {
                Endpoint::Register => state.register(&request),
                Endpoint::Verify => state.verify(&request),
                Endpoint::Unregister => state.unregister(&request),
                Endpoint::UnregisterManager => state.unregister_manager(&request),
                Endpoint::ResetToken => state.reset_token(&request),
                Endpoint::UpdateJob(id) => state.update_job(&request, id),
                Endpoint::PatchTrace(id) => state.patch_trace(&request, id),
                Endpoint::UploadArtifacts(id) => state.upload_artifacts(&request, id),
                Endpoint::DownloadArtifacts(id) => state.download_artifacts(&request, id),
                Endpoint::JobRequest | Endpoint::Object(_) | Endpoint::Unknown => {
                    state.unknown_endpoint(&request);
                    Reply::json(404, &serde_json::json!({ "message": "404 Not Found" }))
                }
            }
        }
    };
    Ok(finish(&shared, index, reply))
}

/// `POST /jobs/request`: Workhorse's long poll in front of the Rails handler. With long polling
/// on, every answer says so (`Gitlab-Ci-Builds-Polling: yes`), as Workhorse's do.
async fn request_job(shared: &Shared, request: &Request<'_>) -> Reply {
    let long_poll = shared.lock().options.long_poll;
    let reply = workhorse(shared, request).await;
    if long_poll.is_zero() {
        reply
    } else {
        reply.header("Gitlab-Ci-Builds-Polling", "yes")
    }
}

async fn workhorse(shared: &Shared, request: &Request<'_>) -> Reply {
    let body: serde_json::Value = serde_json::from_slice(request.body).unwrap_or_default();
    let (held_version, long_poll) = {
        let state = shared.lock();
        (state.queue_version(&body), state.options.long_poll)
    };
    let last_update = body["last_update"].as_str().unwrap_or_default();
    if let Some(version) = held_version
        && version == last_update
        && !long_poll.is_zero()
    {
        // Held until the queue changes or the poll times out: either way a bare 204 without
        // X-GitLab-Last-Update, and Rails is never asked.
        let mut changes = shared.changes.subscribe();
        let deadline = tokio::time::Instant::now() + long_poll;
        let _held = Held::new(shared);
        loop {
            changes.borrow_and_update();
            let current = shared.lock().queue_version(&body);
            if current.as_deref() != Some(version.as_str()) {
                break;
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => {}
                _ => break,
            }
        }
        let mut state = shared.lock();
        state.check_common(request);
        return Reply::new(204);
    }
    let mut state = shared.lock();
    state.check_common(request);
    state.request_job(request)
}

/// Counts a held job request for [`super::FakeGitlab::held_requests`] while it lives, including
/// when the client gives up and the request's future is dropped.
struct Held<'a>(&'a Shared);

impl<'a> Held<'a> {
    fn new(shared: &'a Shared) -> Self {
        shared.held.fetch_add(1, Ordering::SeqCst);
        shared.changed();
        Held(shared)
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        self.0.held.fetch_sub(1, Ordering::SeqCst);
        self.0.changed();
    }
}

fn finish(shared: &Shared, index: usize, reply: Reply) -> hyper::Response<Full<Bytes>> {
    shared.lock().answered(index, Some(reply.status));
    shared.changed();
    let mut response = hyper::Response::builder().status(reply.status);
    for (name, value) in &reply.headers {
        response = response.header(name, value);
    }
    response
        .body(Full::new(Bytes::from(reply.body)))
        .unwrap_or_else(|_| {
            let mut fallback = hyper::Response::new(Full::new(Bytes::new()));
            *fallback.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
            fallback
        })
}
