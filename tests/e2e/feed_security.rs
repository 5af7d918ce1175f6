//! The feed's guards end to end: with a token or a client CA, connections that do not prove who
//! they are append nothing while a good one beside them is served; a feed that anyone could
//! reach is refused at start.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice
)] // test code

use ivrstate_tests::{Ivrstate, Running, DEADLINE};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;

const TOKEN: &str = "feed-token-0123456789abcdef";

fn ivrstate() -> Ivrstate {
    Ivrstate::new(env!("CARGO_BIN_EXE_ivrstate"))
}

/// One NDJSON event, told apart from the others by its source seq.
fn event(source_seq: u64) -> String {
    format!(
        "{{\"time\":\"2015-08-17T08:00:{:02}.000000Z\",\"recorded\":\"2015-08-17T08:00:00.000000Z\",\"event\":{{\"TLib\":{{\"tserver\":\"TS_A\",\"source_seq\":{source_seq},\"kind\":\"LinkConnected\"}}}}}}\n",
        source_seq % 60
    )
}

fn serve(t: &Ivrstate, extra: &[&str]) -> (Running, SocketAddr) {
    let mut running = t.serve(extra);
    let feed = running.addr("feed");
    (running, feed)
}

/// Sends `text` and returns everything the server answers until it closes or the deadline.
fn exchange<S: Read + Write>(mut stream: S, text: &str) -> String {
    let _ = stream.write_all(text.as_bytes());
    let _ = stream.flush();
    let mut answer = String::new();
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return answer,
            Ok(_) => {
                answer.push_str(&line);
                // One ack is all a good connection here waits for.
                if line.contains("committed") {
                    return answer;
                }
            }
        }
    }
}

fn tcp(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s
}

/// The source seqs of the stored events that came through the feed (the `SocketClosed` that
/// serve records when the good connection closes has none).
fn stored(t: &Ivrstate) -> Vec<u64> {
    ivrstate_tests::exported_events(t)
        .iter()
        .filter_map(|e| e["event"]["TLib"]["source_seq"].as_u64())
        .collect()
}

#[test]
fn without_the_token_a_connection_appends_nothing_and_the_good_one_beside_it_is_served() {
    let t = ivrstate();
    let tokens = t.path("tokens");
    std::fs::write(&tokens, format!("recorder {TOKEN}\n")).unwrap();
    let tokens_s = tokens.display().to_string();
    let (running, feed) = serve(&t, &["--feed-token-file", &tokens_s]);

    // Opened first, authenticated, and kept open while the others come and go.
    let mut good = tcp(feed);
    good.write_all(format!("AUTH {TOKEN}\n").as_bytes())
        .unwrap();
    let unauthenticated = exchange(tcp(feed), &event(2));
    let wrong = exchange(
        tcp(feed),
        &format!("AUTH not-the-token-0123456789\n{}", event(3)),
    );
    let lowercase = exchange(tcp(feed), &format!("auth {TOKEN}\n{}", event(4)));
    let answer = exchange(&mut good, &event(1));
    assert_eq!(answer, "{\"committed\":1}\n");
    for (what, answer) in [
        ("no AUTH", unauthenticated),
        ("a wrong token", wrong),
        ("a malformed AUTH", lowercase),
    ] {
        assert_eq!(answer, "", "{what}: closed without an answer");
    }
    drop(good);
    assert!(running.terminate().success());
    assert_eq!(stored(&t), vec![1]);
}

/// A CA, and certificates it signed for the server and a client.
struct Pki {
    ca: rcgen::Certificate,
    ca_key: rcgen::KeyPair,
}

impl Pki {
    fn new() -> Pki {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "feed CA");
        let ca = params.self_signed(&ca_key).unwrap();
        Pki { ca, ca_key }
    }

    fn issue(
        &self,
        name: &str,
        usage: rcgen::ExtendedKeyUsagePurpose,
    ) -> (rcgen::Certificate, rcgen::KeyPair) {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        (params.signed_by(&key, &self.ca, &self.ca_key).unwrap(), key)
    }
}

fn tls_client(
    addr: SocketAddr,
    ca: &rcgen::Certificate,
    client: Option<(&rcgen::Certificate, &rcgen::KeyPair)>,
) -> rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.der().clone()).unwrap();
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots);
    let config = match client {
        None => builder.with_no_client_auth(),
        Some((cert, key)) => builder
            .with_client_auth_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap(),
    };
    let conn =
        rustls::ClientConnection::new(Arc::new(config), ServerName::try_from("localhost").unwrap())
            .unwrap();
    rustls::StreamOwned::new(conn, tcp(addr))
}

#[test]
fn with_a_client_ca_only_certificates_it_signed_may_write() {
    use rcgen::ExtendedKeyUsagePurpose::{ClientAuth, ServerAuth};
    let t = ivrstate();
    let pki = Pki::new();
    let (server, server_key) = pki.issue("ivrstate", ServerAuth);
    let (client, client_key) = pki.issue("recorder-1", ClientAuth);
    // Same name, but signed by a CA the server does not trust.
    let other = Pki::new();
    let (stranger, stranger_key) = other.issue("recorder-1", ClientAuth);
    let files = [
        ("ca.pem", pki.ca.pem()),
        ("cert.pem", server.pem()),
        ("key.pem", server_key.serialize_pem()),
    ];
    for (name, pem) in &files {
        std::fs::write(t.path(name), pem).unwrap();
    }
    let p = |name: &str| t.path(name).display().to_string();
    let (running, feed) = serve(
        &t,
        &[
            "--feed-tls-cert",
            &p("cert.pem"),
            "--feed-tls-key",
            &p("key.pem"),
            "--feed-client-ca",
            &p("ca.pem"),
        ],
    );

    let mut good = tls_client(feed, &pki.ca, Some((&client, &client_key)));
    good.write_all(b"\n").unwrap();
    let strange = exchange(
        tls_client(feed, &pki.ca, Some((&stranger, &stranger_key))),
        &event(2),
    );
    let anonymous = exchange(tls_client(feed, &pki.ca, None), &event(3));
    let plain = exchange(tcp(feed), &event(4));
    assert_eq!(exchange(&mut good, &event(1)), "{\"committed\":1}\n");
    for (what, answer) in [
        ("a certificate of another CA", strange),
        ("no certificate", anonymous),
        ("no TLS", plain),
    ] {
        assert!(!answer.contains("committed"), "{what}: {answer}");
    }
    drop(good);
    assert!(running.terminate().success());
    assert_eq!(stored(&t), vec![1]);
}

#[test]
fn a_feed_reachable_from_other_machines_needs_a_guard_or_an_explicit_insecure() {
    let t = ivrstate();
    let out = t.run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--feed-listen",
        "0.0.0.0:0",
    ]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    for needed in [
        "0.0.0.0:0",
        "--feed-token-file",
        "--feed-client-ca",
        "--feed-insecure",
    ] {
        assert!(stderr.contains(needed), "{needed}: {stderr}");
    }
    assert!(!t.db().exists(), "nothing was started");

    let mut running = t.spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--feed-listen",
        "0.0.0.0:0",
        "--feed-insecure",
    ]);
    // It starts: the feed is announced (what it then does is the other tests' business).
    running.addr("feed");
    running.kill();
}
