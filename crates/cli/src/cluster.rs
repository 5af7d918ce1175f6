//! The `--cluster`/`--stream` flags shared by `serve`, `ingest` and `config apply`, and what
//! those commands do in cluster mode that is not serving: publishing a file's events or a
//! configuration change into the stream.

use anyhow::{Context, Result};
use clap::Args;
use ivrstate_cluster::publish::{publish_after, Guarded, Pipeline, Published, MAX_MESSAGE_RECORDS};
use ivrstate_cluster::{Cluster, ClusterConfig};
use ivrstate_engine::bulk::IngestSummary;
use ivrstate_ingest::parse::Parsed;
use ivrstate_model::Envelope;
use std::path::PathBuf;
use tokio::sync::oneshot;

#[derive(Args, Clone, Debug, Default)]
pub struct ClusterArgs {
    /// Cluster mode: the NATS JetStream cluster (`nats://h1:p1,nats://h2:p2,...`) whose stream
    /// is the source of truth; events are published there, and `serve` applies the stream
    /// into this node's store.
    #[arg(long, env = "IVRSTATE_CLUSTER", value_name = "URLS")]
    pub cluster: Option<String>,
    /// The JetStream stream of the cluster (created, replicated on 3 nodes, if missing).
    #[arg(long, default_value = ivrstate_cluster::DEFAULT_STREAM, value_name = "NAME")]
    pub stream: String,
    /// Connect to the cluster with this NATS credentials file (user JWT and NKey seed, as
    /// `nsc` writes it).
    #[arg(long, value_name = "FILE", requires = "cluster")]
    pub cluster_creds: Option<PathBuf>,
    /// Require TLS to the cluster, and verify its servers against the PEM CA certificates in
    /// FILE.
    #[arg(long, value_name = "FILE", requires = "cluster")]
    pub cluster_tls_ca: Option<PathBuf>,
    /// Allow what reaches the network unprotected: a `--cluster` URL that is not loopback
    /// without `--cluster-creds` and TLS, and for `serve`, `--http` on a non-loopback address
    /// without `--http-token`. Warned about in the log.
    #[arg(long)]
    pub insecure: bool,
}

impl ClusterArgs {
    /// The cluster's configuration, or None when not in cluster mode. A URL past this machine
    /// without credentials and TLS is refused (exit status 2) unless `--insecure`.
    pub fn config(&self) -> Result<Option<ClusterConfig>> {
        let Some(urls) = &self.cluster else {
            return Ok(None);
        };
        let config = ClusterConfig {
            creds: self.cluster_creds.clone(),
            tls_ca: self.cluster_tls_ca.clone(),
            ..ClusterConfig::parse(urls, &self.stream)?
        };
        if let Some(url) = config.unprotected_remote() {
            if !self.insecure {
                return Err(crate::usage(format!(
                    "--cluster {url} is reachable from other machines, and anyone on the way \
                     could read or write the log: add --cluster-creds FILE and TLS \
                     (--cluster-tls-ca FILE, or a tls:// URL), or --insecure to allow it"
                )));
            }
            tracing::warn!(
                "--insecure: the cluster at {url} is reached without credentials and TLS"
            );
        }
        Ok(Some(config))
    }
}

/// A multi-threaded runtime for the NATS client (its connection task runs beside the caller).
pub fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// Publishes parsed input in messages of up to [`MAX_MESSAGE_RECORDS`] events, many in flight,
/// and counts each batch into `summary` once JetStream acknowledged it.
pub struct BulkPublisher {
    cluster: Cluster,
    pipeline: Pipeline,
    batch: Vec<Envelope>,
    /// The line of each envelope of `batch` in `source`.
    lines: Vec<u64>,
    source: String,
    waiting: Vec<oneshot::Receiver<Published>>,
}

impl BulkPublisher {
    pub async fn connect(config: ClusterConfig) -> Result<BulkPublisher> {
        let cluster = Cluster::connect(config).await?;
        let pipeline = Pipeline::start(&cluster);
        Ok(BulkPublisher {
            cluster,
            pipeline,
            batch: Vec::with_capacity(MAX_MESSAGE_RECORDS),
            lines: Vec::with_capacity(MAX_MESSAGE_RECORDS),
            source: String::new(),
            waiting: Vec::new(),
        })
    }

    /// Publishes the events of one input, which the stream's messages say came from `source`
    /// (and the line of each in it).
    pub async fn add(
        &mut self,
        parsed: impl Iterator<Item = Parsed>,
        source: &str,
        summary: &mut IngestSummary,
    ) -> Result<()> {
        source.clone_into(&mut self.source);
        for item in parsed {
            if let Some((envelope, line)) = summary.count(item) {
                self.batch.push(envelope);
                self.lines.push(line);
                if self.batch.len() == MAX_MESSAGE_RECORDS {
                    self.send().await?;
                }
            }
        }
        // A message holds the events of one source.
        self.send().await
    }

    async fn send(&mut self) -> Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let rx = self
            .pipeline
            .publish(
                &self.cluster.config.stream,
                &self.batch,
                &self.source,
                &self.lines,
            )
            .await?;
        self.waiting.push(rx);
        self.batch.clear();
        self.lines.clear();
        Ok(())
    }

    /// Sends what is left and waits until JetStream acknowledged everything.
    pub async fn finish(mut self, summary: &mut IngestSummary) -> Result<()> {
        self.send().await?;
        for rx in self.waiting.drain(..) {
            let published = rx
                .await
                .context("the publishing task stopped before JetStream acknowledged a batch")?;
            summary.appended += published.new;
            summary.duplicates += published.duplicates;
        }
        Ok(())
    }
}

/// `config apply --cluster`: the difference between `target` and the configuration the
/// stream's configuration events give, published as configuration events (once JetStream
/// acknowledged them, every node applies them from the stream) from `source`.
pub fn publish_config(
    config: ClusterConfig,
    target: &ivrstate_engine::Config,
    effective: Option<ivrstate_model::Micros>,
    source: &str,
) -> Result<Vec<ivrstate_model::ConfigEvent>> {
    runtime()?.block_on(async {
        let cluster = Cluster::connect(config).await?;
        apply_config(
            &cluster,
            target,
            effective.unwrap_or_else(crate::now),
            source,
        )
        .await
    })
}

/// Makes the stream's configuration `target`: the configuration events that turn what the
/// stream's `.config` subject holds into `target`, recorded at `at`, published only if nobody
/// published configuration since it was read (compare-and-set on the subject's last sequence).
/// When someone did, the subject is read and the difference computed again, so two
/// `config apply` at once never land both of their differences from the same old state:
/// the later one's target is what the stream ends with. The events say they came from
/// `source`. Returns the events published.
pub async fn apply_config(
    cluster: &Cluster,
    target: &ivrstate_engine::Config,
    at: ivrstate_model::Micros,
    source: &str,
) -> Result<Vec<ivrstate_model::ConfigEvent>> {
    let subject = format!("{}.config", cluster.config.stream);
    loop {
        let stored = ivrstate_cluster::consume::read_subject(cluster, &subject).await?;
        let mut state = ivrstate_projection::State::default();
        let mut applied = ivrstate_projection::Applied::state_only();
        for (i, envelope) in stored.envelopes.into_iter().enumerate() {
            applied.clear();
            let record = ivrstate_model::Record {
                seq: i as u64 + 1,
                envelope,
            };
            state.apply(&record, &mut applied);
        }
        let events = ivrstate_engine::config::diff(state.config(), target);
        if events.is_empty() {
            return Ok(events);
        }
        let envelopes: Vec<Envelope> = events
            .iter()
            .map(|e| Envelope {
                time: at,
                recorded: at,
                event: ivrstate_model::Event::Config(e.clone()),
            })
            .collect();
        match publish_after(cluster, &envelopes, source, stored.last_seq).await? {
            Guarded::Stored(_) => return Ok(events),
            Guarded::Moved => {
                tracing::info!(
                    "the configuration in the stream changed while it was read; reading it again"
                );
            }
        }
    }
}
