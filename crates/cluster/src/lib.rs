//! Cluster mode on NATS JetStream.
//!
//! In cluster mode the JetStream stream (`IVRSTATE` by default, replicated on three NATS nodes,
//! file storage, every write fsynced) is the source of truth, and each node's sled store is a
//! replica of it:
//!
//! - [`publish`]: every event source publishes batches of envelopes into the stream, one subject
//!   per T-Server or source, each message identified by a `Nats-Msg-Id` computed from its bytes
//!   (so a retry after a timeout is the same id and the same bytes, and JetStream stores it
//!   once). A batch is reported stored only when JetStream acknowledged it (on a quorum).
//! - [`consume`]: every node reads the stream in order, from the sequence after the last one it
//!   applied, checking that each message is exactly the next one.
//! - [`replica`]: the node's checkpoint (last stream sequence applied, and the log's last seq
//!   then) kept in its store, and the recovery after a crash between an append and its
//!   checkpoint.
//!
//! Message bytes are the store's block encoding ([`ivrstate_store::codec::encode_block`]): one
//! codec for the log and the stream.

pub mod consume;
pub mod presence;
pub mod publish;
pub mod replica;

use async_nats::jetstream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How many PEM certificates `pem` holds.
fn pem_certificates(pem: &[u8]) -> usize {
    String::from_utf8_lossy(pem)
        .matches("-----BEGIN CERTIFICATE-----")
        .count()
}

/// A connection error in words, with its cause (async-nats's own message often leaves out the
/// TLS or authorization reason).
fn connect_reason(e: &async_nats::ConnectError) -> String {
    let mut reason = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !reason.contains(&cause_text) {
            reason.push_str(": ");
            reason.push_str(&cause_text);
        }
        source = cause.source();
    }
    reason
}

/// The stream's name when `--stream` is not given.
pub const DEFAULT_STREAM: &str = "IVRSTATE";

/// How long a JetStream request (a publish's ack, a stream lookup) may take before it is
/// retried. A stream leader killed stalls publishing for 5-7 s while a new one is elected.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the stream may take to be created or found at start (a cluster just started has
/// no meta leader for a moment).
pub const STREAM_READY_WITHIN: Duration = Duration::from_secs(60);

/// Replicas of the stream: a quorum of 2 out of 3 survives any one node.
pub const REPLICAS: usize = 3;

/// How long JetStream remembers a `Nats-Msg-Id` (its default is 2 minutes); a publish retried
/// later than this after its first attempt may be stored twice, which the log's dedup still
/// catches for T-Server events.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(10 * 60);

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("--cluster: {0}")]
    Config(String),
    #[error("cannot connect to the NATS cluster {urls}: {reason}")]
    Connect { urls: String, reason: String },
    #[error("stream {stream}: {reason}")]
    Stream { stream: String, reason: String },
    #[error("a message of {what} cannot be encoded: {reason}")]
    Encode { what: String, reason: String },
    #[error(transparent)]
    Store(#[from] ivrstate_store::StoreError),
    #[error("{0}")]
    Replica(String),
}

/// Where the cluster is, which stream holds the events, and how to prove who we are to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `nats://host:port` (or `tls://host:port`) of the NATS nodes (any number; the client
    /// finds the others).
    pub urls: Vec<String>,
    pub stream: String,
    /// A NATS credentials file (a user JWT and its NKey seed, as `nsc` writes them).
    pub creds: Option<PathBuf>,
    /// PEM CA certificates the NATS servers' certificates must chain to; TLS is then required.
    pub tls_ca: Option<PathBuf>,
}

impl ClusterConfig {
    /// Parses `--cluster nats://h1:p1,nats://h2:p2` and `--stream NAME`.
    pub fn parse(urls: &str, stream: &str) -> Result<ClusterConfig, ClusterError> {
        let urls: Vec<String> = urls
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .map(str::to_owned)
            .collect();
        if urls.is_empty() {
            return Err(ClusterError::Config(
                "no NATS URL given (expected nats://host:port,...)".into(),
            ));
        }
        for url in &urls {
            if !(url.starts_with("nats://") || url.starts_with("tls://")) {
                return Err(ClusterError::Config(format!(
                    "{url:?} is not a NATS URL (expected nats://host:port)"
                )));
            }
        }
        let valid = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        if stream.is_empty() || !stream.chars().all(valid) {
            return Err(ClusterError::Config(format!(
                "--stream {stream:?}: a stream name is letters, digits, '_' and '-'"
            )));
        }
        Ok(ClusterConfig {
            urls,
            stream: stream.to_owned(),
            creds: None,
            tls_ca: None,
        })
    }

    /// The first URL that reaches past this machine without protection, if any: protected
    /// means credentials (`creds`) and TLS (`tls_ca`, or a `tls://` URL), so that neither
    /// who writes nor what is written is left to the network. A host is this machine when it
    /// is `localhost` or a loopback address (names are not resolved).
    pub fn unprotected_remote(&self) -> Option<&str> {
        let protected = |url: &str| {
            self.creds.is_some() && (self.tls_ca.is_some() || url.starts_with("tls://"))
        };
        self.urls
            .iter()
            .find(|url| !protected(url) && !is_loopback_url(url))
            .map(String::as_str)
    }
}

/// Whether a NATS URL names this machine (`localhost` or a loopback address).
fn is_loopback_url(url: &str) -> bool {
    let Ok(addr) = url.parse::<async_nats::ServerAddr>() else {
        return false;
    };
    let host = addr.host().trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A connection to the cluster and its stream.
#[derive(Clone)]
pub struct Cluster {
    pub config: ClusterConfig,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
}

impl Cluster {
    /// Connects (the client then reconnects by itself, to any node, forever), and creates the
    /// stream if it does not exist, retrying until the meta leader accepts it.
    pub async fn connect(config: ClusterConfig) -> Result<Cluster, ClusterError> {
        let urls = config.urls.join(",");
        let addrs: Vec<async_nats::ServerAddr> = config
            .urls
            .iter()
            .map(|u| {
                u.parse()
                    .map_err(|e| ClusterError::Config(format!("{u:?}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        let mut options = async_nats::ConnectOptions::new()
            .connection_timeout(REQUEST_TIMEOUT)
            .max_reconnects(None);
        if let Some(creds) = &config.creds {
            options = options.credentials_file(creds).await.map_err(|e| {
                ClusterError::Config(format!(
                    "--cluster-creds {}: not a NATS credentials file: {e}",
                    creds.display()
                ))
            })?;
        }
        if let Some(ca) = &config.tls_ca {
            // Read here, so that a missing or foreign file is its own clear error rather than a
            // failed handshake.
            let pem = std::fs::read(ca).map_err(|e| {
                ClusterError::Config(format!("--cluster-tls-ca {}: {e}", ca.display()))
            })?;
            let certs = pem_certificates(&pem);
            if certs == 0 {
                return Err(ClusterError::Config(format!(
                    "--cluster-tls-ca {}: no PEM certificate in it",
                    ca.display()
                )));
            }
            options = options.add_root_certificates(ca.clone()).require_tls(true);
        }
        let client = options
            .connect(addrs)
            .await
            .map_err(|e| ClusterError::Connect {
                urls: urls.clone(),
                reason: connect_reason(&e),
            })?;
        let js = jetstream::ContextBuilder::new()
            .timeout(REQUEST_TIMEOUT)
            .max_ack_inflight(publish::WINDOW * 2)
            .backpressure_on_inflight(true)
            .build(client.clone());
        let cluster = Cluster { config, client, js };
        cluster.ensure_stream().await?;
        Ok(cluster)
    }

    /// Subjects are `<stream>.<source>`.
    pub fn subjects(&self) -> String {
        format!("{}.>", self.config.stream)
    }

    async fn ensure_stream(&self) -> Result<(), ClusterError> {
        let replicas = REPLICAS.min(self.config.urls.len()).max(1);
        let wanted = jetstream::stream::Config {
            name: self.config.stream.clone(),
            subjects: vec![self.subjects()],
            storage: jetstream::stream::StorageType::File,
            num_replicas: replicas,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        };
        let started = Instant::now();
        loop {
            match self.js.get_or_create_stream(wanted.clone()).await {
                Ok(_) => return Ok(()),
                Err(e) if started.elapsed() < STREAM_READY_WITHIN => {
                    tracing::info!(stream = %self.config.stream, "stream not ready yet: {e}");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
                Err(e) => {
                    return Err(ClusterError::Stream {
                        stream: self.config.stream.clone(),
                        reason: format!("not created or found within {STREAM_READY_WITHIN:?}: {e}"),
                    })
                }
            }
        }
    }

    /// The stream's last sequence now (0 when empty), retried until the cluster answers.
    pub async fn last_sequence(&self) -> u64 {
        loop {
            if let Some(last) = self.try_last_sequence().await {
                return last;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// The stream's last sequence, if the cluster answers now.
    pub async fn try_last_sequence(&self) -> Option<u64> {
        match self.js.get_stream(&self.config.stream).await {
            Ok(mut stream) => match stream.info().await {
                Ok(info) => Some(info.state.last_sequence),
                Err(e) => {
                    tracing::warn!("stream info: {e}");
                    None
                }
            },
            Err(e) => {
                tracing::warn!("stream lookup: {e}");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_flags_are_checked() {
        let c = ClusterConfig::parse("nats://a:1, nats://b:2", "IVRSTATE").unwrap();
        assert_eq!(c.urls, vec!["nats://a:1", "nats://b:2"]);
        assert!(ClusterConfig::parse("", "S").is_err());
        assert!(ClusterConfig::parse("http://a:1", "S").is_err());
        assert!(ClusterConfig::parse("nats://a:1", "A.B").is_err());
        assert!(ClusterConfig::parse("nats://a:1", "").is_err());
    }

    #[test]
    fn a_url_past_this_machine_needs_credentials_and_tls() {
        let config = |urls: &str, creds: bool, ca: bool| ClusterConfig {
            creds: creds.then(|| PathBuf::from("user.creds")),
            tls_ca: ca.then(|| PathBuf::from("ca.pem")),
            ..ClusterConfig::parse(urls, "S").unwrap()
        };
        let local = "nats://127.0.0.1:4222,nats://localhost:4223,nats://[::1]:4224";
        assert_eq!(config(local, false, false).unprotected_remote(), None);
        let remote = "nats://127.0.0.1:4222,nats://nats.example.com:4222";
        assert_eq!(
            config(remote, false, false).unprotected_remote(),
            Some("nats://nats.example.com:4222")
        );
        // Credentials without TLS, or TLS without credentials, are not enough.
        assert!(config(remote, true, false).unprotected_remote().is_some());
        assert!(config(remote, false, true).unprotected_remote().is_some());
        assert_eq!(config(remote, true, true).unprotected_remote(), None);
        // A tls:// URL is TLS.
        let tls = "tls://10.0.0.5:4222";
        assert_eq!(config(tls, true, false).unprotected_remote(), None);
        assert_eq!(config(tls, false, false).unprotected_remote(), Some(tls));
    }
}
