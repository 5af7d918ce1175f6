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
use std::time::{Duration, Instant};

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

/// Where the cluster is and which stream holds the events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterConfig {
    /// `nats://host:port` of the NATS nodes (any number; the client finds the others).
    pub urls: Vec<String>,
    pub stream: String,
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
        })
    }
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
        let client = async_nats::ConnectOptions::new()
            .connection_timeout(REQUEST_TIMEOUT)
            .max_reconnects(None)
            .connect(addrs)
            .await
            .map_err(|e| ClusterError::Connect {
                urls: urls.clone(),
                reason: e.to_string(),
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
}
