//! Who may reach the cluster: `--cluster-creds` and `--cluster-tls-ca`, passed to the NATS
//! client by every command that takes `--cluster`, and the refusal of a cluster URL past this
//! machine without them. The refusal needs no NATS; the rest runs against a real `nats-server`
//! (tests/src/nats.rs) configured with TLS, and with an operator whose accounts and users are
//! JWTs signed here.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::string_slice
)] // test code

use ivrstate_tests::nats::{nats_server_or_skip, NatsCluster};
use ivrstate_tests::{assert_clean_failure, repo_root, wait_for, Ivrstate};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;

fn ivrstate() -> Ivrstate {
    Ivrstate::new(env!("CARGO_BIN_EXE_ivrstate"))
}

fn example(name: &str) -> String {
    repo_root()
        .join("examples")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn a_cluster_url_past_this_machine_needs_credentials_and_tls_or_an_explicit_insecure() {
    let t = ivrstate();
    let creds = t.path("user.creds");
    std::fs::write(&creds, "not read: the refusal comes first").unwrap();
    let creds_s = creds.display().to_string();
    let log = example("ts_sip.log");
    let cfg = example("ivr.toml");
    let remote = "nats://127.0.0.1:4222,nats://10.1.2.3:4222";
    for args in [
        vec!["ingest", "--cluster", remote, &log],
        vec!["config", "apply", "--cluster", remote, &cfg],
        vec!["serve", "--listen", "127.0.0.1:0", "--cluster", remote],
        // Credentials alone are not enough: they would cross the network in clear.
        vec![
            "ingest",
            "--cluster",
            remote,
            "--cluster-creds",
            &creds_s,
            &log,
        ],
        // Nor TLS alone: anyone could write.
        vec![
            "ingest",
            "--cluster",
            remote,
            "--cluster-tls-ca",
            &creds_s,
            &log,
        ],
    ] {
        let out = t.run(&args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
        for needed in [
            "nats://10.1.2.3:4222",
            "--cluster-creds",
            "--cluster-tls-ca",
            "tls://",
            "--insecure",
        ] {
            assert!(stderr.contains(needed), "{needed}: {stderr}");
        }
    }
    assert!(!t.db().exists(), "nothing was started");

    // With --insecure it goes on (to connect: nothing listens on 0.0.0.0:1, a non-loopback
    // address that fails at once), warning that it does.
    let args = [
        "-v",
        "ingest",
        "--cluster",
        "nats://0.0.0.0:1",
        "--insecure",
        &log,
    ];
    let out = t.run(&args);
    let line = assert_clean_failure(&args, &out);
    assert!(line.contains("cannot connect"), "{line}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--insecure") && stderr.contains("without credentials and TLS"),
        "{stderr}"
    );
}

/// A certificate authority for the test, and certificates it signs.
struct Ca {
    cert: rcgen::Certificate,
    key: rcgen::KeyPair,
}

impl Ca {
    fn new(name: &str) -> Ca {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    /// A server certificate for 127.0.0.1 and localhost: (certificate PEM, key PEM).
    fn server(&self) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params =
            rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }

    fn write(&self, path: &Path) -> String {
        std::fs::write(path, self.cert.pem()).unwrap();
        path.display().to_string()
    }
}

/// The `tls` block of a NATS node whose client port speaks only TLS, with a certificate `ca`
/// signed (written into the cluster's directory).
fn tls_block(ca: &Ca) -> impl Fn(&Path) -> String + '_ {
    |dir: &Path| {
        let (cert, key) = ca.server();
        let cert_file = dir.join("server.pem");
        let key_file = dir.join("server-key.pem");
        std::fs::write(&cert_file, cert).unwrap();
        std::fs::write(&key_file, key).unwrap();
        format!(
            "tls {{\n  cert_file: {:?}\n  key_file: {:?}\n}}\n",
            cert_file.display().to_string(),
            key_file.display().to_string()
        )
    }
}

/// The stream sequence a `serve --cluster` node applied, from its metrics.
fn applied(metrics: std::net::SocketAddr) -> Option<u64> {
    let mut s = TcpStream::connect(metrics).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    text.lines().find_map(|l| {
        l.strip_prefix("ivrstate_stream_applied ")?
            .trim()
            .parse()
            .ok()
    })
}

#[test]
fn a_node_reaches_a_tls_cluster_with_the_right_ca_and_is_refused_with_another() {
    let Some(bin) = nats_server_or_skip("cluster over TLS") else {
        return;
    };
    let ca = Ca::new("nats CA");
    let nats = NatsCluster::start_with(&bin, 1, tls_block(&ca));
    let url = nats.urls();
    let t = ivrstate();
    let right = ca.write(&t.path("ca.pem"));
    let wrong = Ca::new("another CA").write(&t.path("other-ca.pem"));

    // The right CA: published, then applied by a node that connects the same way.
    let summary = t.json(&[
        "ingest",
        "--cluster",
        &url,
        "--cluster-tls-ca",
        &right,
        "--json",
        &example("ts_sip.log"),
    ]);
    let published = summary["appended"].as_u64().unwrap();
    assert!(published > 100, "{summary}");
    let node = ivrstate();
    let mut serve = node.spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--cluster",
        &url,
        "--cluster-tls-ca",
        &right,
    ]);
    let metrics = serve.addr("metrics");
    wait_for("the node to apply the stream over TLS", || {
        applied(metrics).filter(|&seq| seq >= 1)
    });
    assert!(serve.terminate().success());
    // What a single node stores of the same file (the stream holds every event; the log's
    // dedup keeps each once).
    let alone = ivrstate().json(&["ingest", "--json", &example("ts_sip.log")]);
    assert_eq!(
        node.ok(&["export"]).lines().count() as u64,
        alone["appended"].as_u64().unwrap()
    );

    // Another CA, or none (the server requires TLS; the system's roots do not know it): a
    // clear one-line error, nothing published or applied.
    for ca_args in [vec!["--cluster-tls-ca", wrong.as_str()], vec![]] {
        for command in [
            vec!["ingest", &example("ts_sip.log")],
            vec!["serve", "--listen", "127.0.0.1:0"],
        ] {
            let mut args = command.clone();
            args.extend(["--cluster", url.as_str()]);
            args.extend(ca_args.iter().copied());
            let other = ivrstate();
            let out = other.run(&args);
            let line = assert_clean_failure(&args, &out);
            assert!(line.contains("cannot connect"), "{args:?}: {line}");
            assert!(
                line.contains("certificate") || line.contains("UnknownIssuer"),
                "{args:?} does not say why: {line}"
            );
        }
    }
    // A CA file that is not one: named in the error.
    let args = [
        "ingest",
        "--cluster",
        url.as_str(),
        "--cluster-tls-ca",
        "/nonexistent/ca.pem",
        "x.log",
    ];
    let line = assert_clean_failure(&args, &t.run(&args));
    assert!(line.contains("/nonexistent/ca.pem"), "{line}");
}

/// A NATS JWT: `claims` with `iss` and `sub`, signed by `issuer` (ed25519, as nats-server
/// checks it).
fn jwt(issuer: &nkeys::KeyPair, subject: &str, name: &str, nats: serde_json::Value) -> String {
    use base64::Engine as _;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let header = b64(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let claims = serde_json::json!({
        "jti": format!("{:x}", u128::from_le_bytes(*b"ivrstate-test-jt") ^ u128::from(name.len() as u64)),
        "iat": 1_700_000_000u64,
        "iss": issuer.public_key(),
        "name": name,
        "sub": subject,
        "nats": nats,
    });
    let body = format!("{header}.{}", b64(claims.to_string().as_bytes()));
    let signature = issuer.sign(body.as_bytes()).unwrap();
    format!("{body}.{}", b64(&signature))
}

/// An operator and its account (JetStream enabled), as a nats-server configuration block with
/// a memory resolver.
struct Operator {
    account: nkeys::KeyPair,
    config: String,
}

impl Operator {
    fn new() -> Operator {
        let operator = nkeys::KeyPair::new_operator();
        let account = nkeys::KeyPair::new_account();
        let operator_jwt = jwt(
            &operator,
            &operator.public_key(),
            "test operator",
            serde_json::json!({"type": "operator", "version": 2}),
        );
        let unlimited = serde_json::json!({
            "subs": -1, "data": -1, "payload": -1, "imports": -1, "exports": -1,
            "wildcards": true, "conn": -1, "leaf": -1,
            "mem_storage": -1, "disk_storage": -1, "streams": -1, "consumer": -1,
        });
        let account_jwt = jwt(
            &operator,
            &account.public_key(),
            "ivrstate",
            serde_json::json!({"limits": unlimited, "type": "account", "version": 2}),
        );
        // JetStream needs a system account.
        let system = nkeys::KeyPair::new_account();
        let system_jwt = jwt(
            &operator,
            &system.public_key(),
            "SYS",
            serde_json::json!({"type": "account", "version": 2}),
        );
        let config = format!(
            "operator: {operator_jwt}\nsystem_account: {sys}\nresolver: MEMORY\n\
             resolver_preload: {{\n  {sys}: {system_jwt}\n  {}: {account_jwt}\n}}\n",
            account.public_key(),
            sys = system.public_key(),
        );
        Operator { account, config }
    }

    /// A `.creds` file of a new user of `account`.
    fn creds(account: &nkeys::KeyPair, path: &Path) -> String {
        let user = nkeys::KeyPair::new_user();
        let user_jwt = jwt(
            account,
            &user.public_key(),
            "writer",
            serde_json::json!({
                "pub": {}, "sub": {}, "subs": -1, "data": -1, "payload": -1,
                "type": "user", "version": 2,
            }),
        );
        std::fs::write(
            path,
            format!(
                "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
                 -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
                user.seed().unwrap()
            ),
        )
        .unwrap();
        path.display().to_string()
    }
}

#[test]
fn only_a_user_the_operator_knows_reaches_the_cluster() {
    let Some(bin) = nats_server_or_skip("cluster with credentials") else {
        return;
    };
    let ca = Ca::new("nats CA");
    let operator = Operator::new();
    let tls = tls_block(&ca);
    let nats = NatsCluster::start_with(&bin, 1, |dir| format!("{}{}", tls(dir), operator.config));
    let url = nats.urls();
    let t = ivrstate();
    let ca_s = ca.write(&t.path("ca.pem"));
    let creds = Operator::creds(&operator.account, &t.path("writer.creds"));

    // A user of the operator's account: configuration and events go in, a node applies them.
    let out = t.ok(&[
        "config",
        "apply",
        "--cluster",
        &url,
        "--cluster-creds",
        &creds,
        "--cluster-tls-ca",
        &ca_s,
        &example("ivr.toml"),
    ]);
    assert!(out.contains("recorded"), "{out}");
    let summary = t.json(&[
        "ingest",
        "--cluster",
        &url,
        "--cluster-creds",
        &creds,
        "--cluster-tls-ca",
        &ca_s,
        "--json",
        &example("ts_sip.log"),
    ]);
    assert!(summary["appended"].as_u64().unwrap() > 100, "{summary}");
    let node = ivrstate();
    let mut serve = node.spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--cluster",
        &url,
        "--cluster-creds",
        &creds,
        "--cluster-tls-ca",
        &ca_s,
    ]);
    let metrics = serve.addr("metrics");
    wait_for("the node to apply both messages' worth", || {
        applied(metrics).filter(|&seq| seq >= 2)
    });
    assert!(serve.terminate().success());
    assert!(node.ok(&["export"]).lines().count() > 100);

    // A user of an account the operator never signed, or no credentials: refused by the
    // server, said in one line.
    let stranger = Operator::creds(&nkeys::KeyPair::new_account(), &t.path("stranger.creds"));
    for creds_args in [vec!["--cluster-creds", stranger.as_str()], vec![]] {
        let mut args = vec![
            "ingest",
            "--cluster",
            url.as_str(),
            "--cluster-tls-ca",
            &ca_s,
        ];
        args.extend(creds_args.iter().copied());
        args.push("x.log");
        let line = assert_clean_failure(&args, &t.run(&args));
        assert!(line.contains("cannot connect"), "{args:?}: {line}");
        assert!(
            line.to_lowercase().contains("authoriz"),
            "{args:?} does not say why: {line}"
        );
    }
    // A file that is not credentials: named in the error.
    let not_creds = t.path("not.creds");
    std::fs::write(&not_creds, "hello\n").unwrap();
    let not_creds = not_creds.display().to_string();
    let args = [
        "ingest",
        "--cluster",
        url.as_str(),
        "--cluster-creds",
        &not_creds,
        "x.log",
    ];
    let line = assert_clean_failure(&args, &t.run(&args));
    assert!(line.contains(&not_creds), "{line}");
}
