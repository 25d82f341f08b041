//! Stopping a job request: it gives up while GitLab has not answered. Against a raw loopback
//! server that holds the request like a long poll.

use drover_gitlab::{RequestOutcome, Secret};
use tokio::io::AsyncReadExt;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::common::*;

/// Accepts one request and reads it until its head ends, then tells `heard`.
async fn accept_request(
    listener: &TcpListener,
    heard: oneshot::Sender<()>,
) -> tokio::net::TcpStream {
    let (mut socket, _) = listener.accept().await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = socket.read(&mut buf).await.unwrap();
        assert!(n > 0, "the client hung up before its request was whole");
        seen.extend_from_slice(&buf[..n]);
    }
    let _ = heard.send(());
    socket
}

fn request() -> drover_gitlab::api::JobRequest {
    job_request(&Secret::new("glrt-cancel".to_string()), false, "")
}

#[tokio::test]
async fn a_stop_before_gitlab_answers_is_no_job() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let (heard_tx, heard) = oneshot::channel();
    let server = tokio::spawn(async move {
        // Holds the request like a long poll, never answering.
        let mut socket = accept_request(&listener, heard_tx).await;
        let mut buf = [0u8; 64];
        while socket.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    });
    let client = client(&url);
    let stop = async {
        let _ = heard.await;
    };
    let outcome = client.request_job_until(&request(), stop).await;
    assert!(
        matches!(
            outcome,
            RequestOutcome::NoJob {
                last_update: None,
                long_polling: false
            }
        ),
        "{outcome:?}"
    );
    server.await.unwrap();
}
