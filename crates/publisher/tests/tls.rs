//! GLI over TLS (rustls) with a self-signed certificate made in the test, and the errors of
//! loading PEM files.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice
)] // test code

mod common;

use common::*;
use ivrstate_model::AgentStatus;
use ivrstate_publisher::xml::{LoginStatus, Message};
use ivrstate_publisher::{HubConfig, MonitorInfo, TlsConfig, TlsError};
use rustls::pki_types::ServerName;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// A self-signed certificate for `localhost` written as PEM files; returns (dir, cert, key, der).
fn self_signed() -> (
    tempfile::TempDir,
    PathBuf,
    PathBuf,
    rustls::pki_types::CertificateDer<'static>,
) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    (dir, cert, key, ck.cert.der().clone())
}

fn connector(trusted: rustls::pki_types::CertificateDer<'static>) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trusted).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

#[tokio::test]
async fn a_tls_client_logs_in_and_is_answered() {
    let (_dir, cert, key, der) = self_signed();
    let tls = TlsConfig::from_pem_files(&cert, &key).unwrap();
    let srv = start_with(HubConfig::default(), true, Fake::two_ivrs(), Some(tls)).await;

    let tcp = TcpStream::connect(srv.addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let stream = with_deadline(connector(der).connect(name, tcp))
        .await
        .unwrap();
    let mut c = Client::over(stream);
    let resp = c.login("7", "IVR_1", false).await;
    assert_eq!(status_of(&resp), Some(LoginStatus::Ok));
    assert_eq!(resp.call_id, "7");
    c.send(
        "7",
        Message::AgentQuery {
            req_id: "1".into(),
            port: "01".into(),
        },
    )
    .await;
    assert_eq!(
        c.msg().await.msg,
        Message::MonitorInfo {
            req_id: Some("1".into()),
            info: MonitorInfo::Agent {
                port: "01".into(),
                status: AgentStatus::Ready
            }
        }
    );
    // Pushes go over TLS too.
    srv.hub
        .publish(&[agent("IVR_1", "01", AgentStatus::NotReady)]);
    assert!(matches!(
        c.msg().await.msg,
        Message::MonitorInfo { req_id: None, .. }
    ));
}

#[tokio::test]
async fn a_plain_client_on_a_tls_port_is_closed_and_others_are_unaffected() {
    let (_dir, cert, key, der) = self_signed();
    let tls = TlsConfig::from_pem_files(&cert, &key).unwrap();
    let srv = start_with(HubConfig::default(), true, Fake::two_ivrs(), Some(tls)).await;

    let mut plain = Client::connect(srv.addr).await;
    plain
        .s
        .write_all(&[0, 0, 0, 2, 2, 0]) // a GLI keep-alive is not a ClientHello
        .await
        .unwrap();
    // The server answers with a TLS alert at most, never a GLI frame, and closes.
    with_deadline(async {
        let mut buf = [0u8; 256];
        loop {
            match tokio::io::AsyncReadExt::read(&mut plain.s, &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;

    let tcp = TcpStream::connect(srv.addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    let mut good = Client::over(
        with_deadline(connector(der).connect(name, tcp))
            .await
            .unwrap(),
    );
    assert_eq!(
        status_of(&good.login("1", "IVR_2", false).await),
        Some(LoginStatus::Ok)
    );
}

fn err(cert: &Path, key: &Path) -> TlsError {
    TlsConfig::from_pem_files(cert, key).unwrap_err()
}

#[test]
fn pem_errors_name_the_file() {
    let (dir, cert, key, _) = self_signed();
    let missing = dir.path().join("missing.pem");

    let e = err(&missing, &key);
    assert!(matches!(e, TlsError::Read { .. }));
    assert!(e.to_string().contains("missing.pem"), "{e}");

    let e = err(&cert, &missing);
    assert!(e.to_string().contains("missing.pem"), "{e}");

    // A key where the certificate should be, and the other way round.
    let e = err(&key, &key);
    assert!(
        matches!(e, TlsError::NoCertificate { ref path } if path == &key),
        "{e}"
    );
    assert!(e.to_string().contains("key.pem"), "{e}");
    let e = err(&cert, &cert);
    assert!(
        matches!(e, TlsError::NoKey { ref path } if path == &cert),
        "{e}"
    );

    // Not PEM at all.
    let junk = dir.path().join("junk.pem");
    std::fs::write(
        &junk,
        "-----BEGIN CERTIFICATE-----\n%%%%\n-----END CERTIFICATE-----\n",
    )
    .unwrap();
    let e = err(&junk, &key);
    assert!(e.to_string().contains("junk.pem"), "{e}");

    // A key that does not match the certificate.
    let (_dir2, _, other_key, _) = self_signed();
    let e = err(&cert, &other_key);
    assert!(matches!(e, TlsError::Config { .. }), "{e}");
    assert!(e.to_string().contains("cert.pem"), "{e}");
}
