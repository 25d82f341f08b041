//! HTTPS: verification is on by default, and a custom CA file (tls-ca-file) is honoured.

use drover_gitlab::api::VerifyRunnerRequest;
use drover_gitlab::fake::{FakeGitlab, FakeOptions};
use drover_gitlab::{Client, ClientConfig, Error, Secret};

use crate::common::*;

#[tokio::test]
async fn an_untrusted_certificate_fails_with_advice_and_a_ca_file_fixes_it() {
    let fake = FakeGitlab::start(FakeOptions {
        tls: true,
        ..FakeOptions::default()
    })
    .await
    .unwrap();
    assert!(fake.url().starts_with("https://127.0.0.1:"));
    let token = Secret::new(fake.create_runner_token());
    let request = VerifyRunnerRequest {
        info: Some(info(false)),
        token,
        system_id: SYSTEM_ID.into(),
    };

    let untrusted = Client::new(ClientConfig::new(fake.url(), identity())).unwrap();
    let err = untrusted.verify_runner(&request).await.unwrap_err();
    assert!(matches!(err, Error::Tls { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("tls-ca-file") && message.contains(fake.url()),
        "{message}"
    );

    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, fake.ca_pem().unwrap()).unwrap();
    let mut config = ClientConfig::new(fake.url(), identity());
    config.tls_ca_file = Some(ca);
    let trusted = Client::new(config).unwrap();
    let verified = trusted
        .verify_runner(&request)
        .await
        .expect("verified over HTTPS")
        .expect("details");
    assert_eq!(verified.token, request.token);
    assert_no_violations(&fake);
}

#[test]
fn a_bad_ca_file_is_reported_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.pem");
    let mut config = ClientConfig::new("https://gitlab.example.com", identity());
    config.tls_ca_file = Some(missing.clone());
    let err = Client::new(config.clone()).unwrap_err();
    assert!(
        matches!(err, Error::CaFile { .. }) && err.to_string().contains("missing.pem"),
        "{err}"
    );

    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not a certificate").unwrap();
    config.tls_ca_file = Some(garbage);
    let err = Client::new(config).unwrap_err();
    assert!(matches!(err, Error::CaParse { .. }), "{err}");
}

#[tokio::test]
async fn an_unreachable_url_says_so() {
    // A port nothing listens on: bind, learn the port, close.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let client = client(&format!("http://127.0.0.1:{port}"));
    let err = client
        .verify_runner(&VerifyRunnerRequest {
            info: None,
            token: Secret::new("glrt-x"),
            system_id: String::new(),
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&format!(
            "could not connect to http://127.0.0.1:{port}/api/v4/runners/verify"
        )),
        "{err}"
    );
}
